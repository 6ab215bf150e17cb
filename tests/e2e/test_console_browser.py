"""The web console in a real browser (the console issue): headless Chromium (Debian's
`chromium`) driven by Playwright (`playwright-core` from npm, tests/e2e/browser/) against a
real `strata`. It creates a topic and produces a message from the console's forms, finds the
message by offset and by substring, and, once a confluent-kafka consumer group has read part
of the topic, sees the group's lag and status in the console. Screenshots are saved under
target/e2e-artifacts/console/."""

import json
import shutil
import subprocess
import uuid

import pytest

from strata_e2e import (
    REPO_ROOT,
    assert_delivered,
    confluent_produce,
    wait_until,
)

BROWSER_DIR = REPO_ROOT / "tests" / "e2e" / "browser"
SHOTS = REPO_ROOT / "target" / "e2e-artifacts" / "console"


def run_flow(*args) -> dict:
    node = shutil.which("node")
    if node is None or not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("node and tests/e2e/browser/node_modules are needed: run scripts/test.sh, "
                    "which installs chromium, Node and playwright-core")
    done = subprocess.run([node, str(BROWSER_DIR / "console_flow.mjs"), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"browser flow failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_console_in_a_browser(broker_factory):
    broker = broker_factory({"group.initial.rebalance.delay.ms": "0",
                             "console.history.interval.ms": "500"})
    base = broker.console_url().rstrip("/")
    topic = f"browser-{uuid.uuid4().hex[:8]}"
    group = f"console-readers-{uuid.uuid4().hex[:6]}"
    value = f"hello from the console {uuid.uuid4().hex[:8]}"
    SHOTS.mkdir(parents=True, exist_ok=True)

    seen = run_flow("topic", base, topic, value, str(SHOTS))
    assert seen["created"] == "Topic created."
    assert seen["offset"] == 0 and "offset 0" in seen["notice"]
    assert seen["by_offset"] == value, seen
    assert (seen["by_substring_rows"], seen["by_substring"]) == (1, value), seen
    assert seen["by_substring_headers"] == "source=console"

    # 30 more records; a real consumer group reads 10 of the 31 and commits.
    assert_delivered(confluent_produce(
        broker.bootstrap, topic, [{"value": f"r{i}".encode()} for i in range(30)]))
    from confluent_kafka import Consumer
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000})
    try:
        consumer.subscribe([topic])
        read = []
        wait_until(lambda: read.extend(m for m in [consumer.poll(0.2)] if m and not m.error())
                   or len(read) >= 10, 30, lambda: f"read {len(read)} of 10")
        consumer.commit(message=read[9], asynchronous=False)
    finally:
        consumer.close()

    group_seen = run_flow("group", base, group, str(SHOTS))
    assert group_seen["status"] == "OK", group_seen
    assert group_seen["total_lag"] == 21, group_seen
    assert group_seen["state"] == "Empty"
    topic_row = group_seen["partitions"][0]
    assert topic_row[:5] == [topic, "0", "10", "31", "21"], group_seen
    assert group_seen["chart"] >= 1
    for shot in ["01-topic-created.png", "02-produced.png", "03-found-by-offset.png",
                 "04-found-by-substring.png", "05-group-lag.png"]:
        assert (SHOTS / shot).stat().st_size > 10_000, shot
