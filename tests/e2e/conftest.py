"""Fixtures for the end-to-end tests: real `strata` processes on loopback ports.

`broker` is a running broker with the test defaults; `broker_factory(...)` starts more (with
`--set` overrides, on a given data directory or port). Each broker runs in its own temporary
directory, writes its stderr to `strata-<n>.log` there, and is stopped with SIGTERM at teardown,
where a non-zero exit fails the test (clean shutdown is checked by every test). When a test
fails, the last 50 lines of every broker's log are printed with the failure.
"""

import re
import uuid
from pathlib import Path

import pytest

from strata_e2e import Broker, strata_binary

# Overrides every test broker gets unless the test says otherwise.
DEFAULT_OVERRIDES = {
    "num.partitions": "1",
    "auto.create.topics.enable": "true",
    # The HTTP console on a free port: parallel brokers must not meet on 8080
    # (`Broker.console_url` reads the address from the start-up line).
    "console.listener": "127.0.0.1:0",
}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the item so fixtures can tell at teardown whether the
    # test failed (pytest's documented recipe).
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report


def _test_failed(node) -> bool:
    for phase in ("rep_setup", "rep_call"):
        report = getattr(node, phase, None)
        if report is not None and report.failed:
            return True
    return False


def _merge_overrides(overrides) -> dict:
    merged = dict(DEFAULT_OVERRIDES)
    for item in overrides:
        if isinstance(item, dict):
            merged.update({str(k): str(v) for k, v in item.items()})
            continue
        key, sep, value = str(item).partition("=")
        assert sep, f"broker override must be KEY=VALUE, got {item!r}"
        merged[key.strip()] = value.strip()
    return merged


@pytest.fixture
def broker_factory(request, tmp_path):
    """Start a `strata serve` process: `broker_factory("key=value", ..., port=None,
    data_dir=None, listener="127.0.0.1", wait=True)`.

    - overrides: `KEY=VALUE` strings (or dicts) passed as `--set`, over DEFAULT_OVERRIDES.
    - port: fixed port (default: a free ephemeral loopback port).
    - data_dir: reuse a data directory (default: a fresh one under tmp_path).
    - listener: "127.0.0.1" sets `listeners=PLAINTEXT://127.0.0.1:PORT`; None keeps the
      broker's default listener (`PLAINTEXT://localhost:9092`, used by the snippet test).
    - wait: wait until the port accepts TCP (bounded); False returns at once (for brokers
      that are expected to refuse to start).
    - env: extra environment variables for the process (e.g. LD_PRELOAD for fault tests).
    - kraft: start from the Kafka KRaft server.properties (tests/e2e/data); None follows
      STRATA_E2E_KRAFT_PROPERTIES.
    - listeners: named listeners {NAME: PROTOCOL} (e.g. {"PLAINTEXT": "PLAINTEXT", "SSL":
      "SSL"}), each on a free port on `listener`'s host: the broker starts from a Kafka-style
      server.properties (`listeners`, `listener.security.protocol.map`, `log.dirs` and the
      `properties` lines); `broker.port` is the first one's, `broker.bootstrap_for(NAME)`
      each one's address.
    - properties: {key: value} lines of that server.properties (with `listeners` only).
    """
    binary = strata_binary()
    started = []

    def start(*overrides, port=None, data_dir=None, listener="127.0.0.1", wait=True, env=None,
              kraft=None, listeners=None, properties=None):
        index = len(started)
        if data_dir is None:
            data_dir = tmp_path / f"data-{index}"
        broker = Broker(
            binary=binary,
            port=port,
            data_dir=Path(data_dir),
            log_path=tmp_path / f"strata-{index}.log",
            cwd=tmp_path,
            overrides=_merge_overrides(overrides),
            listener_host=listener,
            env=env,
            kraft=kraft,
            listeners=listeners,
            properties=properties,
        )
        started.append(broker)
        broker.start(wait=wait)
        return broker

    yield start

    failed = _test_failed(request.node)
    shutdown_errors = []
    for broker in started:
        if broker.running:
            try:
                broker.stop(check=not failed)
            except AssertionError as error:
                shutdown_errors.append(str(error))
    if failed or shutdown_errors:
        for broker in started:
            print(f"\n----- last 50 lines of {broker.log_path} -----")
            print(broker.log_tail(50))
    if shutdown_errors and not failed:
        pytest.fail("broker did not shut down cleanly:\n" + "\n".join(shutdown_errors))


@pytest.fixture
def broker(broker_factory):
    """A running broker with the test defaults on 127.0.0.1:<free port>."""
    return broker_factory()


@pytest.fixture
def new_topic(request):
    """`new_topic(suffix="")` returns a topic name unique to this test and call."""
    base = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name).strip("-")[:80]

    def make(suffix: str = "") -> str:
        return f"{base}-{uuid.uuid4().hex[:8]}{suffix}"

    return make


@pytest.fixture
def topic(new_topic):
    """One unique topic name for this test."""
    return new_topic()


@pytest.fixture
def port_9092_free():
    """Skip unless 9092 is free on the loopback addresses (only the snippet test uses it)."""
    reason = Broker.port_busy_reason(9092)
    if reason:
        pytest.skip(f"port 9092 is busy ({reason}); the snippet test needs it")
    return 9092


def pytest_collection_modifyitems(config, items):
    # Guard against tests that would use the snippet's fixed port without saying so.
    for item in items:
        uses_9092 = "port_9092_free" in getattr(item, "fixturenames", ())
        marked = item.get_closest_marker("port9092") is not None
        if uses_9092 != marked:
            raise pytest.UsageError(
                f"{item.nodeid}: tests using port 9092 must be marked @pytest.mark.port9092 "
                "and request the port_9092_free fixture (and only those)"
            )

