"""confluent-kafka (librdkafka) against a real broker: records round-trip field by field, on one
partition and on many, with every acks setting. Consumers use assign() with explicit offsets,
never subscribe() and never commit (consumer groups are not implemented yet)."""

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from strata_e2e import (
    assert_delivered,
    assert_dense_offsets,
    by_partition,
    confluent_consume,
    confluent_consumer,
    confluent_produce,
    create_topic,
    kafka_python_consume,
)

BASE_TS = 1_700_000_000_000


def sample_records():
    """Every field: keys (none, empty, binary), null and empty values, repeated, empty and
    null-valued headers, explicit timestamps (not monotonic), a 200 KB value."""
    return [
        dict(key=b"k0", value=b"plain value", headers=[("trace", b"abc")], timestamp=BASE_TS),
        dict(key=None, value=b"record without a key", timestamp=BASE_TS + 1),
        dict(key=b"tombstone", value=None, timestamp=BASE_TS + 2),
        dict(key=b"", value=b"", headers=[("empty", b""), ("null", None)], timestamp=BASE_TS + 3),
        dict(
            key=bytes(range(256)),
            value=bytes(reversed(range(256))) * 4,
            headers=[("dup", b"1"), ("dup", b"2"), ("utf8-ключ", "значение".encode())],
            timestamp=BASE_TS - 86_400_000,
        ),
        dict(key=b"big", value=b"fedcba9876543210" * 12_500, timestamp=BASE_TS + 5),
    ]


def assert_records_match(sent, received, what):
    assert len(received) == len(sent), f"{what}: expected {len(sent)} records, got {len(received)}"
    for i, (want, got) in enumerate(zip(sent, received)):
        where = f"{what}: record {i} (offset {got.offset})"
        assert got.offset == i, f"{where}: offset {got.offset}, expected {i}"
        assert got.key == want.get("key"), f"{where}: key {got.key!r:.80} != {want.get('key')!r:.80}"
        assert got.value == want.get("value"), f"{where}: value differs (got {got.value!r:.80})"
        want_headers = list(want.get("headers") or [])
        assert got.headers == want_headers, f"{where}: headers {got.headers!r} != {want_headers!r}"
        assert got.timestamp == want["timestamp"], f"{where}: timestamp {got.timestamp} != {want['timestamp']}"
        assert got.timestamp_type == "create", f"{where}: timestamp type {got.timestamp_type}"


def test_single_partition_roundtrip_keys_headers_nulls_timestamps(broker, topic):
    sent = sample_records()
    reports = confluent_produce(broker.bootstrap, topic, sent, **{"acks": "all"})
    assert_delivered(reports)
    assert [r[1:] for r in reports] == [(0, i) for i in range(len(sent))], (
        f"delivery reports (partition, offset): {[r[1:] for r in reports]}"
    )

    received = confluent_consume(broker.bootstrap, topic, [0], min_count=len(sent))
    assert_records_match(sent, received, "confluent-kafka reader")

    # kafka-python decodes a null header value as None too; compare strictly.
    received_by_kafka_python = kafka_python_consume(broker.bootstrap, topic, [0])
    assert_records_match(sent, received_by_kafka_python, "kafka-python reader")


def test_four_partitions_explicit_produce_and_assign(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=4)
    per_partition = 40
    sent = [
        dict(partition=p, key=f"key-{p}-{i}".encode(), value=f"p{p}-v{i}".encode(), timestamp=BASE_TS + i)
        for i in range(per_partition)
        for p in range(4)
    ]
    reports = confluent_produce(broker.bootstrap, topic, sent)
    assert_delivered(reports)
    assert [r[1] for r in reports] == [s["partition"] for s in sent], "records went to other partitions"

    received = by_partition(confluent_consume(broker.bootstrap, topic, range(4), min_count=len(sent)))
    assert sorted(received) == [0, 1, 2, 3], f"records came from partitions {sorted(received)}"
    for p in range(4):
        recs = received[p]
        assert_dense_offsets(recs, what=f"partition {p}: ")
        assert [r.value for r in recs] == [f"p{p}-v{i}".encode() for i in range(per_partition)], (
            f"partition {p} holds {[r.value for r in recs][:5]}..., not its own records in order"
        )
        assert [r.key for r in recs] == [f"key-{p}-{i}".encode() for i in range(per_partition)]

    # The broker reports the same high watermarks the consumer reached.
    consumer = confluent_consumer(broker.bootstrap)
    try:
        for p in range(4):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assert (low, high) == (0, per_partition), f"partition {p} watermarks {(low, high)}"
    finally:
        consumer.close()


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_every_acks_setting_persists_records(broker, topic, acks):
    create_topic(broker.bootstrap, topic, partitions=1)
    sent = [dict(key=f"k{i}".encode(), value=f"acks={acks} #{i}".encode()) for i in range(200)]
    reports = confluent_produce(broker.bootstrap, topic, sent, acks=acks)
    assert_delivered(reports)
    if acks != "0":
        assert [r[2] for r in reports] == list(range(len(sent))), "acked offsets not 0..199"
    received = confluent_consume(broker.bootstrap, topic, [0], min_count=len(sent))
    assert [(r.key, r.value) for r in received] == [(s["key"], s["value"]) for s in sent], (
        f"with acks={acks} the log holds {len(received)} records, not the 200 sent in order"
    )
    assert_dense_offsets(received)


def test_assign_at_an_offset_inside_a_batch(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1)
    # linger lets the 50 records travel (and be stored) as one batch; reading from 17 gets the
    # whole batch back and librdkafka drops the records before 17.
    sent = [dict(value=f"v{i}".encode()) for i in range(50)]
    assert_delivered(confluent_produce(broker.bootstrap, topic, sent, **{"linger.ms": 100}))
    received = confluent_consume(broker.bootstrap, topic, [0], start=17, min_count=33)
    assert [r.offset for r in received] == list(range(17, 50)), (
        f"assign at offset 17 gave offsets {[r.offset for r in received][:5]}..."
    )
    assert [r.value for r in received] == [f"v{i}".encode() for i in range(17, 50)]


def test_consumer_past_the_end_resets_by_policy(broker, topic):
    # Offset 1000 is beyond the log end: the broker answers OFFSET_OUT_OF_RANGE and
    # auto.offset.reset=earliest moves the consumer to offset 0.
    create_topic(broker.bootstrap, topic, partitions=1)
    assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=b"a"), dict(value=b"b")]))
    received = confluent_consume(
        broker.bootstrap, topic, [0], start=1000, min_count=2,
        ignore_errors={KafkaError._AUTO_OFFSET_RESET},
    )
    assert [(r.offset, r.value) for r in received] == [(0, b"a"), (1, b"b")], (
        f"out-of-range fetch did not reset to earliest: {received}"
    )


def test_auto_created_topic_on_produce(broker, topic):
    # Producing to an unknown topic creates it (auto.create.topics.enable=true) with
    # num.partitions=1.
    reports = confluent_produce(broker.bootstrap, topic, [dict(value=b"hello")])
    assert_delivered(reports)
    assert reports[0][1:] == (0, 0), f"first record landed at {reports[0][1:]}"
    received = confluent_consume(broker.bootstrap, topic, [0], start=OFFSET_BEGINNING, min_count=1)
    assert [r.value for r in received] == [b"hello"]
