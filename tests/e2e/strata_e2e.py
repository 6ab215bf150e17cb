"""Helpers for the end-to-end tests: the broker process and thin wrappers around real clients.

`Broker` runs one `strata serve` process. The client helpers produce and consume with
kafka-python, confluent-kafka (librdkafka) and kcat, always bounded in time, and return
records as `Rec` tuples so tests can compare what one client wrote with what another read.
Consumers in the produce/consume helpers use manual assignment and never commit; group members
are built with GroupMember (end of this file).
"""

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import namedtuple
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# STRATA_E2E_KRAFT_PROPERTIES=1 starts every broker from a Kafka 4.x single-node KRaft
# server.properties (tests/e2e/data/kraft-server.properties) instead of `--set listeners=...`:
# its ports and log.dirs are substituted, every other line is used as it is, and a test's
# overrides still go on top as `--set` (PLAINTEXT listener names become the file's CLIENT).
KRAFT_PROPERTIES_ENV = "STRATA_E2E_KRAFT_PROPERTIES"
KRAFT_PROPERTIES_FILE = Path(__file__).resolve().parent / "data" / "kraft-server.properties"


def kraft_mode() -> bool:
    """Whether brokers start from the KRaft server.properties (STRATA_E2E_KRAFT_PROPERTIES)."""
    return os.environ.get(KRAFT_PROPERTIES_ENV, "").strip() not in ("", "0", "false", "no")


def kraft_properties(client_host: str, client_port: int, controller_port: int, log_dirs) -> str:
    """The KRaft server.properties with this broker's addresses and data directory: the client
    listener on client_host:client_port, the controller listener on 127.0.0.1:controller_port."""
    out = []
    for line in KRAFT_PROPERTIES_FILE.read_text().splitlines():
        if line.startswith("log.dirs="):
            line = f"log.dirs={log_dirs}"
        else:
            line = line.replace("CLIENT://127.0.0.1:9092", f"CLIENT://{client_host}:{client_port}")
            line = line.replace("127.0.0.1:9093", f"127.0.0.1:{controller_port}")
        out.append(line)
    return "\n".join(out) + "\n"


# Topic configs whose broker synonyms the KRaft server.properties sets (log.retention.hours,
# log.segment.bytes): there, as in Kafka, their source is STATIC_BROKER_CONFIG.
KRAFT_STATIC_TOPIC_CONFIGS = frozenset({"retention.ms", "segment.bytes"})


def unset_topic_config_source(name: str):
    """The DescribeConfigs source of topic config `name` when no test set it: DEFAULT_CONFIG,
    or STATIC_BROKER_CONFIG for the ones the KRaft file sets (in KRaft mode)."""
    from confluent_kafka.admin import ConfigSource

    if kraft_mode() and name in KRAFT_STATIC_TOPIC_CONFIGS:
        return ConfigSource.STATIC_BROKER_CONFIG
    return ConfigSource.DEFAULT_CONFIG


START_TIMEOUT_S = 20
STOP_TIMEOUT_S = 15

# Record codec ids (bits 0-2 of a record batch's attributes).
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

Rec = namedtuple(
    "Rec", "topic partition offset key value headers timestamp timestamp_type"
)


def strata_binary() -> Path:
    """The broker binary: $STRATA_BIN, else target/release/strata. Fails the test if absent."""
    path = Path(os.environ.get("STRATA_BIN") or REPO_ROOT / "target" / "release" / "strata")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"strata binary not found at {path}: run `cargo build --release --bin strata` "
            "or set STRATA_BIN (scripts/test.sh does both)"
        )
    return path.resolve()


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1, never 9092 (reserved for the snippet test)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != 9092:
            return port


def wait_for_port(port: int, timeout_s: float, host: str = "127.0.0.1", alive=lambda: True):
    """Wait until host:port accepts TCP connections; False on timeout or if `alive()` fails."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class BrokerStartError(AssertionError):
    pass


class Broker:
    """One `strata serve` process with its own data directory and log file."""

    def __init__(self, binary, port, data_dir, log_path, cwd, overrides, listener_host, env=None,
                 kraft=None, listeners=None, properties=None):
        self.binary = Path(binary)
        self.fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.cwd = Path(cwd)
        self.overrides = dict(overrides)
        self.listener_host = listener_host
        self.env = dict(env or {})
        # Named listeners ({NAME: PROTOCOL}, first one is `port`) and Kafka server.properties
        # lines ({key: value}): the broker starts from a properties file (`--config`).
        self.listeners = dict(listeners or {})
        self.properties = dict(properties or {})
        self.ports = {}
        if self.listeners:
            assert not kraft, "named listeners and the KRaft file do not mix"
            kraft = False
            self._pick_listener_ports()
        self.kraft = kraft_mode() if kraft is None else kraft
        self.controller_port = free_port() if self.kraft else None
        self.proc = None
        self.starts = 0

    # ---- addresses -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.listener_host or "127.0.0.1"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def bootstrap_for(self, listener: str) -> str:
        """The address of a named listener (a broker started with `listeners`)."""
        return f"{self.host}:{self.ports[listener]}"

    def console_url(self, timeout_s: float = 10.0) -> str:
        """The HTTP console's base URL (`http://127.0.0.1:PORT/`), from the latest start-up
        line; waits for that line (it follows the Kafka listeners' bind)."""
        deadline = time.monotonic() + timeout_s
        marker = f"===== start #{self.starts}:"
        while True:
            text = self.log_path.read_text(errors="replace")
            latest = text[text.rfind(marker):] if marker in text else ""
            found = re.findall(r"strata started .*console=(http://\S+)", latest)
            if found:
                return found[-1]
            if time.monotonic() > deadline or not self.running:
                raise AssertionError(
                    f"no console URL in the start-up line; last log lines:\n{self.log_tail(20)}")
            time.sleep(0.05)

    def metric_values(self, *names) -> dict:
        """Unlabelled samples of `/metrics` by name (the console's HTTP listener)."""
        import urllib.request

        with urllib.request.urlopen(self.console_url() + "metrics", timeout=10) as r:
            text = r.read().decode()
        found = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in names:
                found[name] = float(value)
        assert set(found) == set(names), f"missing from /metrics: {set(names) - set(found)}"
        return found

    def _pick_listener_ports(self):
        """The first named listener on `port`, the others on free ports."""
        for i, name in enumerate(self.listeners):
            self.ports[name] = free_port() if i else self.port

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def properties_path(self) -> Path:
        """Where a KRaft-mode (or named-listener) broker's server.properties is written."""
        return self.data_dir.parent / f"{self.data_dir.name}-server.properties"

    def command(self) -> list:
        if self.kraft:
            return self._kraft_command()
        if self.listeners:
            return self._properties_command()
        args = [str(self.binary), "serve", "--set", f"log.dirs={self.data_dir}"]
        if self.listener_host is not None:
            args += ["--set", f"listeners=PLAINTEXT://{self.listener_host}:{self.port}"]
        for key, value in self.overrides.items():
            args += ["--set", f"{key}={value}"]
        return args

    def _kraft_command(self) -> list:
        host = self.listener_host or "localhost"
        self.properties_path.write_text(
            kraft_properties(host, self.port, self.controller_port, self.data_dir)
        )
        args = [str(self.binary), "serve", "--config", str(self.properties_path)]
        for key, value in self.overrides.items():
            if key in ("listeners", "advertised.listeners"):
                # The file names its client listener CLIENT.
                value = value.replace("PLAINTEXT://", "CLIENT://")
                if key == "listeners" and "CONTROLLER://" not in value:
                    value += f",CONTROLLER://127.0.0.1:{self.controller_port}"
            args += ["--set", f"{key}={value}"]
        return args

    def _properties_command(self) -> list:
        """A Kafka-style server.properties with the named listeners on free ports."""
        host = self.host
        lines = [
            "listeners=" + ",".join(f"{n}://{host}:{self.ports[n]}" for n in self.listeners),
            "listener.security.protocol.map="
            + ",".join(f"{n}:{p}" for n, p in self.listeners.items()),
            f"log.dirs={self.data_dir}",
        ]
        lines += [f"{k}={v}" for k, v in self.properties.items()]
        self.properties_path.write_text("\n".join(lines) + "\n")
        args = [str(self.binary), "serve", "--config", str(self.properties_path)]
        for key, value in self.overrides.items():
            args += ["--set", f"{key}={value}"]
        return args

    def _spawn(self):
        self.starts += 1
        env = dict(os.environ)
        env.setdefault("STRATA_LOG", "info")
        env.update(self.env)
        args = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                args,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start(self, wait: bool = True):
        """Start the process; with `wait`, block (<= 20 s) until the port accepts TCP."""
        assert not self.running, "broker already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(4):
            self._spawn()
            if not wait:
                return self
            if wait_for_port(self.port, START_TIMEOUT_S, alive=lambda: self.proc.poll() is None):
                return self
            if self.proc.poll() is None:
                self.kill9()
                raise BrokerStartError(
                    f"strata did not accept connections on {self.bootstrap} within "
                    f"{START_TIMEOUT_S} s; last log lines:\n{self.log_tail(30)}"
                )
            tail = self.log_tail(30)
            if "in use" in tail.lower() and attempt < 3:
                # Lost a race for the port (ephemeral pick) or TIME_WAIT after a kill: retry.
                if not self.fixed_port:
                    self.port = free_port()
                if self.listeners:
                    self._pick_listener_ports()
                if self.kraft:
                    self.controller_port = free_port()
                time.sleep(0.5)
                continue
            raise BrokerStartError(
                f"strata exited with code {self.proc.returncode} during start-up "
                f"({self.bootstrap}); last log lines:\n{tail}"
            )
        raise BrokerStartError(f"could not start strata on {self.bootstrap}:\n{self.log_tail(30)}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S, check: bool = True) -> int:
        """SIGTERM, wait up to `timeout_s`; with `check`, assert a clean exit (code 0)."""
        if not self.running:
            return self.proc.returncode if self.proc else 0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(
                f"strata did not exit within {timeout_s} s of SIGTERM (killed it); "
                f"last log lines:\n{self.log_tail(30)}"
            )
        if check:
            assert code == 0, (
                f"strata exited with code {code} after SIGTERM (expected 0, a clean shutdown) "
                f"after {time.monotonic() - started:.1f} s; last log lines:\n{self.log_tail(30)}"
            )
        return code

    def kill9(self):
        """SIGKILL, no chance to flush anything, and wait for the process to be gone."""
        if self.running:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def restart(self):
        """Start again on the same port and data directory (after stop() or kill9())."""
        assert not self.running, "restart() needs a stopped broker: call stop() or kill9() first"
        self.fixed_port = True
        return self.start(wait=True)

    def wait_exit(self, timeout_s: float) -> int:
        """Wait for the process to exit by itself; its exit code."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"strata still running after {timeout_s} s; last log lines:\n{self.log_tail(30)}"
            )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 50) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    @staticmethod
    def port_busy_reason(port: int):
        """Why `port` cannot be used on loopback, or None when it is free."""
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError:
                continue
            with sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, port))
                except OSError as error:
                    if error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                        continue  # no IPv6 loopback here: nothing can be listening on it
                    return f"cannot bind {host}:{port}: {error.strerror}"
        return None


# ---- records ---------------------------------------------------------------------------------


def compressible_value(i: int) -> bytes:
    """A value that every codec shrinks, so producers really send compressed batches."""
    return (f"{i:06d}|" + "strata keeps every byte of this record " * 6).encode()


def by_partition(records):
    out = {}
    for rec in records:
        out.setdefault(rec.partition, []).append(rec)
    for recs in out.values():
        recs.sort(key=lambda r: r.offset)
    return out


def assert_dense_offsets(records, start: int = 0, what: str = ""):
    offsets = [r.offset for r in records]
    expected = list(range(start, start + len(records)))
    assert offsets == expected, (
        f"{what}offsets are not dense from {start}: got {offsets[:20]}"
        f"{'...' if len(offsets) > 20 else ''} (expected {expected[:20]}...)"
    )


def segment_batches(data_dir, topic: str, partition: int) -> list:
    """The header fields of every record batch stored in a partition's segment files, in
    offset order: dicts with base_offset, last_offset, codec, records_count, producer_id,
    base_sequence.

    Reads the on-disk layout of docs/on-disk-format.md: `<log.dirs>/<topic>-<partition>/*.log`
    holding magic-2 batches back to back.
    """
    partition_dir = Path(data_dir) / f"{topic}-{partition}"
    assert partition_dir.is_dir(), (
        f"no partition directory {partition_dir} (docs/on-disk-format.md); data dir has "
        f"{sorted(p.name for p in Path(data_dir).iterdir())}"
    )

    def field(data, at, size):
        return int.from_bytes(data[at : at + size], "big", signed=True)

    batches = []
    for segment in sorted(partition_dir.glob("*.log")):
        data = segment.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            batch_length = field(data, pos + 8, 4)
            if batch_length <= 0:
                break  # zero padding (preallocated segment) ends the batches
            magic = data[pos + 16]
            assert magic == 2, f"{segment}: batch at byte {pos} has magic {magic}, expected 2"
            base_offset = field(data, pos, 8)
            batches.append(dict(
                base_offset=base_offset,
                last_offset=base_offset + field(data, pos + 23, 4),
                codec=field(data, pos + 21, 2) & 0x7,
                producer_id=field(data, pos + 43, 8),
                base_sequence=field(data, pos + 53, 4),
                records_count=field(data, pos + 57, 4),
            ))
            pos += 12 + batch_length
    return batches


def segment_batch_codecs(data_dir, topic: str, partition: int) -> list:
    """The codec of every record batch stored in a partition's segment files."""
    return [b["codec"] for b in segment_batches(data_dir, topic, partition)]


# ---- confluent-kafka (librdkafka) ------------------------------------------------------------


def _rec_from_confluent(msg) -> Rec:
    ts_type, ts = msg.timestamp()
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

    kind = {TIMESTAMP_CREATE_TIME: "create", TIMESTAMP_LOG_APPEND_TIME: "log_append"}.get(
        ts_type, "none"
    )
    headers = [(k, None if v is None else bytes(v)) for k, v in (msg.headers() or [])]
    return Rec(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), headers, ts, kind)


def confluent_producer(bootstrap: str, **conf):
    from confluent_kafka import Producer

    config = {"bootstrap.servers": bootstrap, "linger.ms": 5, "message.timeout.ms": 30000}
    config.update(conf)
    return Producer(config)


def confluent_produce(bootstrap: str, topic: str, records, timeout_s: float = 30, **conf):
    """Produce `records` (dicts: value, and optional key, partition, headers, timestamp) and
    flush. Returns one delivery report per record: (error or None, partition, offset)."""
    producer = confluent_producer(bootstrap, **conf)
    records = list(records)
    reports = [None] * len(records)

    def reporter(i):
        def on_delivery(err, msg):
            reports[i] = (err, msg.partition(), msg.offset())

        return on_delivery

    for i, record in enumerate(records):
        kwargs = {k: record[k] for k in ("key", "partition", "timestamp") if record.get(k) is not None}
        if record.get("headers"):
            kwargs["headers"] = record["headers"]
        producer.produce(topic, value=record.get("value"), on_delivery=reporter(i), **kwargs)
        producer.poll(0)
    remaining = producer.flush(timeout_s)
    assert remaining == 0, f"{remaining} records still undelivered after {timeout_s} s"
    assert all(r is not None for r in reports), "a delivery report is missing"
    return reports


def assert_delivered(reports):
    errors = [(i, r[0]) for i, r in enumerate(reports) if r[0] is not None]
    assert not errors, f"{len(errors)} delivery errors, first: record {errors[0][0]}: {errors[0][1]}"


def confluent_consumer(bootstrap: str, **conf):
    from confluent_kafka import Consumer

    # librdkafka wants a group.id even for assign(); no group is joined, nothing is committed.
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": f"strata-e2e-unused-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    }
    config.update(conf)
    return Consumer(config)


def confluent_consume(
    bootstrap, topic, partitions=(0,), start=None, min_count=0, timeout_s=30, ignore_errors=(), **conf
):
    """Read `partitions` of `topic` with assign() from `start` (None = beginning, or an offset,
    or {partition: offset}) until every partition reports end-of-partition and at least
    `min_count` records arrived. Any consumer error fails, except the codes in `ignore_errors`.
    Returns Recs in arrival order."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    partitions = list(partitions)

    def offset_for(p):
        if start is None:
            return OFFSET_BEGINNING
        return start[p] if isinstance(start, dict) else start

    consumer = confluent_consumer(bootstrap, **conf)
    out, at_end = [], set()
    deadline = time.monotonic() + timeout_s
    try:
        consumer.assign([TopicPartition(topic, p, offset_for(p)) for p in partitions])
        while not (at_end >= set(partitions) and len(out) >= min_count):
            assert time.monotonic() < deadline, (
                f"confluent consumer timed out after {timeout_s} s on {topic}: {len(out)} records "
                f"(wanted >= {min_count}), partitions at end: {sorted(at_end)} of {partitions}"
            )
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                if msg.error().code() in ignore_errors:
                    continue
                raise AssertionError(f"confluent consumer error on {topic}: {msg.error()}")
            at_end.discard(msg.partition())
            out.append(_rec_from_confluent(msg))
    finally:
        consumer.close()
    return out


def admin_client(bootstrap: str):
    """A confluent-kafka AdminClient. Keep a reference while waiting on its futures: a
    collected client destroys its handle and fails them with _DESTROY."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap})


def list_topic_names(bootstrap: str, timeout_s: float = 10) -> dict:
    """{topic: partition count} from a metadata request for all topics (which, unlike a
    request naming a topic, never auto-creates anything)."""
    metadata = admin_client(bootstrap).list_topics(timeout=timeout_s)
    return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}


def wait_for_topic(bootstrap: str, topic: str, partitions: int, timeout_s: float = 15):
    """Wait until metadata shows `topic` with `partitions` partitions, each with a leader."""
    admin = admin_client(bootstrap)
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=5)
        last = metadata.topics.get(topic)
        if (
            last is not None
            and last.error is None
            and len(last.partitions) == partitions
            and all(p.leader >= 0 for p in last.partitions.values())
        ):
            return last
        time.sleep(0.1)
    raise AssertionError(f"topic {topic} with {partitions} partitions never appeared: {last}")


def create_topic(bootstrap: str, topic: str, partitions: int = 1, config=None, timeout_s: float = 30):
    """Create a topic through confluent-kafka's AdminClient and wait until it is usable."""
    from confluent_kafka.admin import NewTopic

    admin = admin_client(bootstrap)  # must outlive the futures: dropping it fails them (_DESTROY)
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        request_timeout=timeout_s,
    )
    futures[topic].result(timeout=timeout_s)
    return wait_for_topic(bootstrap, topic, partitions)


# ---- kafka-python ----------------------------------------------------------------------------


def _rec_from_kafka_python(record) -> Rec:
    kind = {0: "create", 1: "log_append"}.get(record.timestamp_type, "none")
    headers = [(k, v) for k, v in (record.headers or [])]
    return Rec(
        record.topic, record.partition, record.offset, record.key, record.value, headers,
        record.timestamp, kind,
    )


def kafka_python_produce(bootstrap, topic, records, timeout_s: float = 30, **conf):
    """Produce with kafka-python's KafkaProducer and flush; returns RecordMetadata per record."""
    from kafka import KafkaProducer

    config = {"bootstrap_servers": bootstrap, "linger_ms": 5, "client_id": "strata-e2e"}
    config.update(conf)
    producer = KafkaProducer(**config)
    try:
        futures = [
            producer.send(
                topic,
                value=r.get("value"),
                key=r.get("key"),
                headers=r.get("headers"),
                partition=r.get("partition"),
                timestamp_ms=r.get("timestamp"),
            )
            for r in records
        ]
        producer.flush(timeout=timeout_s)
        return [f.get(timeout=timeout_s) for f in futures]
    finally:
        producer.close(timeout=10)


def kafka_python_consume(bootstrap, topic, partitions=(0,), start=None, timeout_s: float = 30, **conf):
    """Read `partitions` of `topic` with kafka-python, manual assignment and no group, from
    `start` (None = beginning, an offset, or {partition: offset}) up to the end offsets
    current when reading began. Returns Recs in arrival order."""
    from kafka import KafkaConsumer, TopicPartition

    config = {
        "bootstrap_servers": bootstrap,
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "client_id": "strata-e2e",
    }
    config.update(conf)
    consumer = KafkaConsumer(**config)
    out = []
    deadline = time.monotonic() + timeout_s
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        if start is None:
            consumer.seek_to_beginning(*tps)
        else:
            for tp in tps:
                consumer.seek(tp, start[tp.partition] if isinstance(start, dict) else start)
        end = consumer.end_offsets(tps)
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, (
                f"kafka-python consumer timed out after {timeout_s} s on {topic}: {len(out)} "
                f"records, positions {[consumer.position(tp) for tp in tps]}, ends {end}"
            )
            for tp_records in consumer.poll(timeout_ms=500).values():
                out.extend(_rec_from_kafka_python(r) for r in tp_records)
    finally:
        consumer.close()
    return out


# ---- kcat ------------------------------------------------------------------------------------


def kcat(*args, input=None, timeout_s: float = 30, check: bool = True):
    """Run kcat with `args`; returns the CompletedProcess (text mode)."""
    binary = shutil.which("kcat")
    assert binary, "kcat is not installed (scripts/test.sh installs it with apt-get)"
    result = subprocess.run(
        [binary, *args], input=input, capture_output=True, text=True, timeout=timeout_s
    )
    if check:
        assert result.returncode == 0, (
            f"kcat {' '.join(args)} exited {result.returncode}\nstdout:\n{result.stdout[-2000:]}"
            f"\nstderr:\n{result.stderr[-2000:]}"
        )
    return result


# ---- consumer groups (appended with the consumer-group tests) --------------------------------

# Broker overrides every consumer-group test uses: no initial rebalance delay (a first member
# is assigned at once) and a low minimum session timeout (tests use 1-6 s sessions).
GROUP_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
}


def wait_until(predicate, timeout_s: float, what, interval_s: float = 0.05):
    """Poll `predicate()` until it returns something truthy (returned); on timeout fail with
    `what` (a string, or a callable giving one, evaluated at failure time)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s} s waiting for {what() if callable(what) else what}"
            )
        time.sleep(interval_s)


class GroupMember:
    """A confluent-kafka consumer in a group, polled by its own thread.

    It processes each record by appending `(partition, offset)` to `consumed` and then commits
    that record's offset synchronously (`commit(message=..., asynchronous=False)`), so every
    record it processed is committed before it polls again (and so before any revoke callback
    runs). Assign/revoke/lost callbacks update `assignment` and are appended, in order, to the
    shared `events` list as `(seq, name, kind, frozenset(partitions))` under `events_lock`.
    `stop()` closes the consumer from its thread (a clean LeaveGroup for a dynamic member).
    """

    def __init__(self, name, bootstrap, group, topics, events=None, events_lock=None,
                 commit=True, **conf):
        import threading

        self.name = name
        self.topics = list(topics)
        self.commit = commit
        self.conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
        self.conf.update(conf)
        if self.conf.get("group.protocol") == "consumer":
            # KIP-848: the session and heartbeat timing are the broker's, not the client's.
            for key in ("session.timeout.ms", "heartbeat.interval.ms"):
                self.conf.pop(key, None)
        self.events = events if events is not None else []
        self.events_lock = events_lock or threading.Lock()
        self.lock = threading.Lock()
        self.consumed = []  # (partition, offset) in processing order
        self.values = []  # (partition, offset, key, value)
        self.assignment = set()
        self.assigns = 0
        self.revokes = 0
        self.errors = []  # consumer errors (KafkaError) seen by poll()
        self.commit_errors = []
        self.closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"member-{name}", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _log(self, kind, partitions):
        with self.events_lock:
            self.events.append((len(self.events), self.name, kind, frozenset(partitions)))

    def _on_assign(self, consumer, partitions):
        parts = {p.partition for p in partitions}
        with self.lock:
            self.assignment |= parts
            self.assigns += 1
        self._log("assign", parts)

    def _on_revoke(self, consumer, partitions):
        parts = {p.partition for p in partitions}
        with self.lock:
            self.assignment -= parts
            self.revokes += 1
        self._log("revoke", parts)

    def _on_lost(self, consumer, partitions):
        parts = {p.partition for p in partitions}
        with self.lock:
            self.assignment -= parts
            self.revokes += 1
        self._log("lost", parts)

    def _run(self):
        from confluent_kafka import Consumer, KafkaError, KafkaException

        consumer = Consumer(self.conf)
        try:
            consumer.subscribe(
                self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            while not self._stop.is_set():
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        with self.lock:
                            self.errors.append(msg.error())
                    continue
                with self.lock:
                    self.consumed.append((msg.partition(), msg.offset()))
                    self.values.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
                if self.commit:
                    try:
                        consumer.commit(message=msg, asynchronous=False)
                    except KafkaException as error:
                        with self.lock:
                            self.commit_errors.append((msg.partition(), msg.offset(), error))
        except Exception as error:  # surfaced by stop()/check()
            with self.lock:
                self.errors.append(error)
        finally:
            consumer.close()
            self.closed = True

    def owned(self) -> set:
        with self.lock:
            return set(self.assignment)

    def consumed_set(self) -> set:
        with self.lock:
            return set(self.consumed)

    def stop(self, timeout_s: float = 20):
        """Close the consumer (LeaveGroup for a dynamic member) and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"member {self.name} did not close within {timeout_s} s"


# ---- a loopback proxy that loses responses ---------------------------------------------------


class ResponseDroppingProxy:
    """A TCP proxy on 127.0.0.1 in front of a broker that forwards every request, and for
    the first `drops` responses to requests with API key `api_key` (0 = Produce) whose
    correlation id is a multiple of `every`, closes the client connection instead of
    relaying the response: the request took effect but the client never hears of it.

    Start the broker with `advertised.listeners` pointing at `proxy.port` so clients come
    back through the proxy. `dropped` counts the responses lost."""

    def __init__(self, target_port: int, port: int = None, api_key: int = 0, drops: int = 10, every: int = 3):
        import socket
        import threading

        self.target_port = target_port
        self.api_key = api_key
        self.drops_left = drops
        self.every = every
        self.dropped = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", port or 0))
        self._server.listen(64)
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        import socket
        import threading

        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            pending = {}
            threading.Thread(target=self._requests, args=(client, upstream, pending), daemon=True).start()
            threading.Thread(target=self._responses, args=(client, upstream, pending), daemon=True).start()

    @staticmethod
    def _read_frame(sock):
        def exact(n):
            buf = b""
            while len(buf) < n:
                chunk = sock.recv(n - len(buf))
                if not chunk:
                    return None
                buf += chunk
            return buf

        head = exact(4)
        if head is None:
            return None
        body = exact(int.from_bytes(head, "big", signed=True))
        return None if body is None else head + body

    def _requests(self, client, upstream, pending):
        try:
            while True:
                frame = self._read_frame(client)
                if frame is None:
                    break
                api_key = int.from_bytes(frame[4:6], "big", signed=True)
                correlation = int.from_bytes(frame[8:12], "big", signed=True)
                pending[correlation] = api_key
                upstream.sendall(frame)
        except OSError:
            pass
        self._close(client, upstream)

    def _responses(self, client, upstream, pending):
        try:
            while True:
                frame = self._read_frame(upstream)
                if frame is None:
                    break
                correlation = int.from_bytes(frame[4:8], "big", signed=True)
                api_key = pending.pop(correlation, None)
                with self._lock:
                    drop = (
                        api_key == self.api_key
                        and self.drops_left > 0
                        and correlation % self.every == 0
                    )
                    if drop:
                        self.drops_left -= 1
                        self.dropped += 1
                if drop:
                    break
                client.sendall(frame)
        except OSError:
            pass
        self._close(client, upstream)

    @staticmethod
    def _close(*socks):
        import socket

        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def close(self):
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=5)


# ---- TLS: a test certificate authority made with the openssl CLI ----------------------------


Issued = namedtuple("Issued", "key cert keystore serial subject")


class TestPki:
    """A throw-away certificate authority in `directory`, made with the `openssl` CLI:
    `ca` (its certificate, PEM) and `issue()`d certificates signed by it. Each issued
    certificate has its key, its certificate, and a keystore file holding both (the key, then
    the certificate: the PEM `ssl.keystore.location` Kafka and Strata read). Keys are EC P-256
    unless `rsa` (fast to make); certificates are valid for two days."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = self.dir / "ca.key"
        self.ca = self.dir / "ca.pem"
        self._serial = int.from_bytes(os.urandom(6), "big")
        self._openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "2",
            "-subj", "/CN=Strata test CA",
        )

    @staticmethod
    def _openssl(*args):
        binary = shutil.which("openssl")
        assert binary, "openssl is not installed (scripts/test.sh installs it with apt-get)"
        result = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"openssl {' '.join(map(str, args))}:\n{result.stderr}"
        return result.stdout

    def issue(self, name: str, subject: str, server: bool = False, rsa: bool = False,
              client: bool = False, names: bool = True) -> Issued:
        """A certificate for `subject` (openssl's /C=US/O=acme/CN=alice form, encoded in that
        order); `server` adds serverAuth and the loopback names (DNS:localhost,
        IP:127.0.0.1; not with `names` false), otherwise clientAuth; `server` and `client`
        both (a broker's certificate that it also presents to other brokers)."""
        key, csr, cert = (self.dir / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        keystore = self.dir / f"{name}-keystore.pem"
        newkey = ["rsa:2048"] if rsa else ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        self._openssl("req", "-new", "-newkey", *newkey, "-nodes", "-keyout", key, "-out", csr,
                      "-subj", subject)
        extensions = self.dir / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE"]
        if server:
            usage = "serverAuth,clientAuth" if client else "serverAuth"
            lines += [f"extendedKeyUsage={usage}"]
            if names:
                lines += ["subjectAltName=DNS:localhost,IP:127.0.0.1"]
        else:
            lines += ["extendedKeyUsage=clientAuth"]
        extensions.write_text("\n".join(lines) + "\n")
        self._serial += 1
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                      "-set_serial", str(self._serial), "-days", "2", "-extfile", extensions,
                      "-out", cert)
        keystore.write_text(key.read_text() + cert.read_text())
        return Issued(key, cert, keystore, self._serial, subject)


def peer_certificate(host: str, port: int, ca, timeout_s: float = 10) -> bytes:
    """The DER certificate a TLS server on host:port presents (verified against `ca`)."""
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        with context.wrap_socket(sock) as tls:
            return tls.getpeercert(binary_form=True)


def certificate_der(cert_path) -> bytes:
    import ssl

    return ssl.PEM_cert_to_DER_cert(Path(cert_path).read_text())
