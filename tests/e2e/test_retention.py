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
    """retention.bytes deletes the oldest segments, and only while the rest is still at least
    retention.bytes large. The records are all written before the limit is set, so that one
    retention pass does all the deleting at once (the log start offset moves in one step) and
    nothing moves while the test reads: a pass between appends would let the test see an
    intermediate log start."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    from strata_e2e import admin_client

    broker = broker_factory(FAST)
    create_topic(broker.bootstrap, topic, config={"segment.bytes": "1024"})
    values = [b"%04d-" % i + b"x" * 150 for i in range(60)]
    # One record per batch (no linger), so segments fill one batch at a time.
    for v in values:
        assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=v)], **{"linger.ms": 0}))
    segments = sorted((broker.data_dir / f"{topic}-0").glob("*.log"))
    sizes = [s.stat().st_size for s in segments]
    assert len(sizes) > 5 and sum(sizes) > 3000 + 1024, sizes
    assert watermarks(broker.bootstrap, topic) == (0, 60), "no limit yet, nothing deleted"

    admin = admin_client(broker.bootstrap)
    resource = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("retention.bytes", "3000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource], request_timeout=15)[resource].result(timeout=15)
    wait_until(lambda: watermarks(broker.bootstrap, topic)[0] > 0, timeout_s=15,
               what="size retention to advance the log start")
    low, high = watermarks(broker.bootstrap, topic)
    assert high == 60
    # Exactly the oldest segments went: the log start is a segment boundary, what is left is
    # at least retention.bytes, and without its oldest closed segment it would be less.
    bases = [int(s.name.split(".")[0]) for s in segments]
    assert low in bases, (low, bases)
    kept = sizes[bases.index(low):]
    assert sum(kept) >= 3000, (low, sizes)
    assert sum(kept) - kept[0] < 3000, (low, sizes)
    assert sorted(int(s.name.split(".")[0]) for s in (broker.data_dir / f"{topic}-0").glob("*.log")) == bases[bases.index(low):]
    got = confluent_consume(broker.bootstrap, topic, [0], start=None)
    assert [r.offset for r in got] == list(range(low, high)), "reading from earliest starts at the log start"
    assert [r.value for r in got] == values[low:]
    time.sleep(1)
    assert watermarks(broker.bootstrap, topic) == (low, high), "one pass did all the deleting"
