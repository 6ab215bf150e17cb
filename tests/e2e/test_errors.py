"""Errors real clients must see from the broker, with the error code a Kafka broker sends:
a missing topic with auto-creation off, and records over max.message.bytes (topic) or
message.max.bytes (broker default)."""

import pytest
from confluent_kafka import KafkaError
from kafka.errors import MessageSizeTooLargeError

from strata_e2e import (
    assert_delivered,
    confluent_consume,
    confluent_produce,
    create_topic,
    kafka_python_consume,
    kafka_python_produce,
    list_topic_names,
)


def test_produce_to_missing_topic_without_auto_create(broker_factory, topic):
    broker = broker_factory("auto.create.topics.enable=false")
    reports = confluent_produce(
        broker.bootstrap, topic, [dict(value=b"nowhere")],
        **{"topic.metadata.propagation.max.ms": 3000, "message.timeout.ms": 20000},
    )
    err = reports[0][0]
    assert err is not None, "producing to a missing topic with auto-creation off must fail"
    # librdkafka reports the broker's UNKNOWN_TOPIC_OR_PARTITION, or its local equivalent once
    # the topic has been declared non-existent; a timeout would mean the broker said nothing.
    assert err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), (
        f"expected UNKNOWN_TOPIC_OR_PARTITION, got {err.name()}: {err.str()}"
    )
    assert topic not in list_topic_names(broker.bootstrap), "the topic must not have been created"

    # Explicitly created topics still work on this broker.
    create_topic(broker.bootstrap, topic, partitions=1)
    assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=b"now it exists")]))
    assert [r.value for r in confluent_consume(broker.bootstrap, topic, [0], min_count=1)] == [b"now it exists"]


def test_record_over_topic_max_message_bytes(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1, config={"max.message.bytes": "10000"})
    reports = confluent_produce(
        broker.bootstrap, topic,
        [dict(key=b"big", value=b"x" * 20_000)],
        **{"compression.type": "none", "linger.ms": 0},
    )
    err = reports[0][0]
    assert err is not None, "a 20 kB record on a topic with max.message.bytes=10000 must be refused"
    assert err.code() == KafkaError.MSG_SIZE_TOO_LARGE, f"expected MSG_SIZE_TOO_LARGE, got {err.name()}"

    # kafka-python gets the same broker error.
    with pytest.raises(MessageSizeTooLargeError):
        kafka_python_produce(broker.bootstrap, topic, [dict(value=b"y" * 20_000)], retries=0)

    # The partition is still healthy, and the refused records left no trace.
    assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(key=b"small", value=b"fits")]))
    received = kafka_python_consume(broker.bootstrap, topic, [0])
    assert [(r.offset, r.key, r.value) for r in received] == [(0, b"small", b"fits")], (
        f"log after refused records: {[(r.offset, r.key, r.value[:10]) for r in received]}"
    )


def test_broker_message_max_bytes_is_the_topic_default(broker_factory, topic):
    broker = broker_factory("message.max.bytes=20000")
    create_topic(broker.bootstrap, topic, partitions=1)
    reports = confluent_produce(
        broker.bootstrap, topic,
        [dict(value=b"z" * 50_000)],
        **{"compression.type": "none", "linger.ms": 0},
    )
    err = reports[0][0]
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, (
        f"a 50 kB record with message.max.bytes=20000 must get MSG_SIZE_TOO_LARGE, got {err}"
    )
    assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=b"z" * 1000)]))


def test_timestamps_outside_the_topic_limits_are_refused(broker, topic):
    """message.timestamp.after.max.ms / before.max.ms: INVALID_TIMESTAMP for records too far
    in the future or past; LogAppendTime topics stamp the append time instead."""
    import time as _time

    from strata_e2e import confluent_produce, create_topic, kafka_python_consume

    create_topic(broker.bootstrap, topic, config={
        "message.timestamp.after.max.ms": "60000",
        "message.timestamp.before.max.ms": "60000",
    })
    now = int(_time.time() * 1000)
    reports = confluent_produce(broker.bootstrap, topic, [
        dict(value=b"future", timestamp=now + 3_600_000),
        dict(value=b"past", timestamp=now - 3_600_000),
    ], **{"linger.ms": 0, "retries": 0})
    errors = [str(err) for err, _, _ in reports]
    assert all("INVALID_TIMESTAMP" in e or "timestamp" in e.lower() for e in errors), errors
    ok = confluent_produce(broker.bootstrap, topic, [dict(value=b"now", timestamp=now)])
    assert ok[0][0] is None, ok

    stamped = topic + "-lat"
    create_topic(broker.bootstrap, stamped, config={"message.timestamp.type": "LogAppendTime"})
    before = int(_time.time() * 1000)
    confluent_produce(broker.bootstrap, stamped, [dict(value=b"x", timestamp=1234)])
    got = kafka_python_consume(broker.bootstrap, stamped, [0])
    assert got and got[0].timestamp >= before, f"LogAppendTime stamps the append time: {got}"


def test_acks_all_refused_below_min_insync_replicas(broker, topic):
    # Replication factor 1 (a single node) and min.insync.replicas=2: Kafka refuses acks=all
    # writes with NOT_ENOUGH_REPLICAS and accepts acks=1 and acks=0.
    create_topic(broker.bootstrap, topic, partitions=1, config={"min.insync.replicas": "2"})
    reports = confluent_produce(
        broker.bootstrap, topic, [dict(value=b"needs two replicas")],
        **{"acks": "all", "retries": 0, "linger.ms": 0, "message.timeout.ms": 20000},
    )
    err = reports[0][0]
    assert err is not None, "acks=all below min.insync.replicas must be refused"
    assert err.code() == KafkaError.NOT_ENOUGH_REPLICAS, (
        f"expected NOT_ENOUGH_REPLICAS, got {err.name()}: {err.str()}"
    )
    assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=b"one")], acks="1"))
    assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=b"zero")], acks="0"))
    received = confluent_consume(broker.bootstrap, topic, [0], min_count=2)
    assert [r.value for r in received] == [b"one", b"zero"]
