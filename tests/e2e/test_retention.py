"""Retention by time and by size with real clients: old segments go, the log start offset
advances, and a consumer from `earliest` starts at the new log start (a fetch below it gets
OFFSET_OUT_OF_RANGE and resets by the client's policy)."""

import time

from strata_e2e import (
    assert_delivered,
    confluent_consume,
    confluent_consumer,
    confluent_produce,
    create_topic,
    kafka_python_consume,
    wait_until,
)

# The broker checks retention every 300 ms in these tests.
FAST = "log.retention.check.interval.ms=300"


def watermarks(bootstrap, topic, partition=0):
    from confluent_kafka import TopicPartition

    c = confluent_consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        c.close()


def test_retention_by_time_empties_an_idle_topic(broker_factory, topic):
    broker = broker_factory(FAST)
    create_topic(broker.bootstrap, topic, config={"retention.ms": "1500", "segment.ms": "200"})
    now_ms = int(time.time() * 1000)
    assert_delivered(confluent_produce(
        broker.bootstrap, topic,
        [dict(key=b"k%d" % i, value=b"v%d" % i, timestamp=now_ms) for i in range(20)],
    ))
    assert watermarks(broker.bootstrap, topic) == (0, 20)
    # Once every record is older than retention.ms, the segments (the idle active one too)
    # are deleted and the log start offset reaches the end.
    wait_until(lambda: watermarks(broker.bootstrap, topic) == (20, 20), timeout_s=15,
               what="retention to delete the expired records")
    # A consumer positioned at 0 is out of range and resets to the new log start; with
    # nothing left it reads nothing, and new records are read from offset 20.
    assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=b"fresh")]))
    got = kafka_python_consume(broker.bootstrap, topic, [0], start=0, auto_offset_reset="earliest")
    assert [(r.offset, r.value) for r in got] == [(20, b"fresh")]


def test_retention_by_size_keeps_the_newest_segments(broker_factory, topic):
    broker = broker_factory(FAST)
    create_topic(broker.bootstrap, topic,
                 config={"retention.bytes": "3000", "segment.bytes": "1024"})
    values = [b"%04d-" % i + b"x" * 150 for i in range(60)]
    # One record per batch (no linger), so segments fill one batch at a time.
    for v in values:
        assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=v)], **{"linger.ms": 0}))
    wait_until(lambda: watermarks(broker.bootstrap, topic)[0] > 0, timeout_s=15,
               what="size retention to advance the log start")
    low, high = watermarks(broker.bootstrap, topic)
    assert high == 60
    # What is left fits the limit plus at most the active segment.
    assert (high - low) * 220 < 3000 + 1024 + 2 * 220, (low, high)
    got = confluent_consume(broker.bootstrap, topic, [0], start=None)
    assert [r.offset for r in got] == list(range(low, high)), "reading from earliest starts at the log start"
    assert [r.value for r in got] == values[low:]
