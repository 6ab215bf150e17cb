"""kafka-python against a real broker: records round-trip field by field (keys, headers, null
values, explicit timestamps), on one partition and on many. Consumers use manual assignment or
a group-less subscription and never commit (consumer groups are not implemented yet)."""

import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from strata_e2e import (
    assert_dense_offsets,
    by_partition,
    confluent_consume,
    kafka_python_consume,
    kafka_python_produce,
    wait_for_topic,
)

BASE_TS = 1_700_000_000_000  # 2023-11-14, milliseconds


def sample_records():
    """Records that exercise every field; kafka-python header values must be bytes."""
    return [
        dict(key=b"k0", value=b"plain value", headers=[("trace", b"abc")], timestamp=BASE_TS),
        dict(key=None, value=b"record without a key", timestamp=BASE_TS + 1),
        dict(key=b"tombstone", value=None, timestamp=BASE_TS + 2),
        dict(key=b"", value=b"", headers=[("empty", b"")], timestamp=BASE_TS + 3),
        dict(
            key=b"binary",
            value=bytes(range(256)) * 4,
            headers=[("dup", b"1"), ("dup", b"2"), ("utf8-ключ", "значение".encode())],
            timestamp=BASE_TS - 86_400_000,  # older than the previous record: allowed
        ),
        dict(key=b"big", value=b"0123456789abcdef" * 12_500, timestamp=BASE_TS + 5),  # 200 KB
    ]


def assert_records_match(sent, received, what):
    assert len(received) == len(sent), f"{what}: expected {len(sent)} records, got {len(received)}"
    for i, (want, got) in enumerate(zip(sent, received)):
        where = f"{what}: record {i} (offset {got.offset})"
        assert got.offset == i, f"{where}: offset {got.offset}, expected {i}"
        assert got.key == want.get("key"), f"{where}: key {got.key!r} != {want.get('key')!r}"
        assert got.value == want.get("value"), f"{where}: value differs (got {got.value!r:.80})"
        assert got.headers == list(want.get("headers") or []), (
            f"{where}: headers {got.headers!r} != {want.get('headers')!r}"
        )
        assert got.timestamp == want["timestamp"], (
            f"{where}: timestamp {got.timestamp} != {want['timestamp']}"
        )
        assert got.timestamp_type == "create", f"{where}: timestamp type {got.timestamp_type}"


def test_single_partition_roundtrip_keys_headers_nulls_timestamps(broker, topic):
    sent = sample_records()
    metadata = kafka_python_produce(broker.bootstrap, topic, sent)

    assert [m.partition for m in metadata] == [0] * len(sent), "auto-created topic has 1 partition"
    assert [m.offset for m in metadata] == list(range(len(sent))), (
        f"produce offsets {[m.offset for m in metadata]} are not 0..{len(sent) - 1}"
    )
    assert [m.timestamp for m in metadata] == [r["timestamp"] for r in sent], (
        "RecordMetadata timestamps must be the CreateTime timestamps we sent"
    )

    received = kafka_python_consume(broker.bootstrap, topic, [0])
    assert_records_match(sent, received, "kafka-python reader")

    # The same bytes, read by a different client implementation.
    received_by_librdkafka = confluent_consume(broker.bootstrap, topic, [0], min_count=len(sent))
    assert_records_match(sent, received_by_librdkafka, "confluent-kafka reader")


def test_auto_created_topic_has_num_partitions(broker, topic):
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
    try:
        producer.send(topic, b"first").get(timeout=30)
        assert producer.partitions_for(topic) == {0}, (
            f"auto-created topic should have num.partitions=1, got {producer.partitions_for(topic)}"
        )
    finally:
        producer.close(timeout=10)


def test_four_partitions_explicit_produce_and_assign(broker, topic):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="strata-e2e")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)], timeout_ms=30_000)
    finally:
        admin.close()
    wait_for_topic(broker.bootstrap, topic, 4)

    per_partition = 25
    sent = [
        dict(partition=p, key=f"key-{p}-{i}".encode(), value=f"p{p}-v{i}".encode(), timestamp=BASE_TS + i)
        for i in range(per_partition)
        for p in range(4)
    ]
    metadata = kafka_python_produce(broker.bootstrap, topic, sent)
    for record, meta in zip(sent, metadata):
        assert meta.partition == record["partition"], (
            f"{record['value']!r} went to partition {meta.partition}, asked for {record['partition']}"
        )

    received = by_partition(kafka_python_consume(broker.bootstrap, topic, range(4)))
    assert sorted(received) == [0, 1, 2, 3], f"records came from partitions {sorted(received)}"
    for p in range(4):
        recs = received[p]
        assert_dense_offsets(recs, what=f"partition {p}: ")
        assert [r.value for r in recs] == [f"p{p}-v{i}".encode() for i in range(per_partition)], (
            f"partition {p} holds {[r.value for r in recs][:5]}..., not its own records in order"
        )
        assert [r.key for r in recs] == [f"key-{p}-{i}".encode() for i in range(per_partition)]
        assert [r.timestamp for r in recs] == [BASE_TS + i for i in range(per_partition)]


def test_subscribe_without_group_reads_every_partition(broker, topic):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="strata-e2e")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)], timeout_ms=30_000)
    finally:
        admin.close()
    wait_for_topic(broker.bootstrap, topic, 3)
    sent = [dict(partition=i % 3, value=f"value-{i}".encode()) for i in range(30)]
    kafka_python_produce(broker.bootstrap, topic, sent)

    # group_id=None + subscribe: kafka-python assigns every partition itself (as the README
    # snippet does), with no coordinator and no commits.
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    seen = []
    deadline = time.monotonic() + 30
    try:
        while len(seen) < len(sent) and time.monotonic() < deadline:
            seen.extend(consumer)  # iteration stops after 1 s without records
    finally:
        consumer.close()
    assert sorted(m.value for m in seen) == sorted(r["value"] for r in sent), (
        f"group-less subscription read {len(seen)} records, expected all {len(sent)}"
    )
    assert {m.partition for m in seen} == {0, 1, 2}


def test_seek_into_the_middle_of_a_batch(broker, topic):
    # One flush, so the 50 records travel (and are stored) as one batch: fetching from offset 17
    # returns the whole batch and the client drops the records before 17.
    sent = [dict(value=f"v{i}".encode()) for i in range(50)]
    kafka_python_produce(broker.bootstrap, topic, sent, linger_ms=50)
    received = kafka_python_consume(broker.bootstrap, topic, [0], start=17)
    assert [r.offset for r in received] == list(range(17, 50)), (
        f"reading from offset 17 gave offsets {[r.offset for r in received][:5]}..."
    )
    assert [r.value for r in received] == [f"v{i}".encode() for i in range(17, 50)]


def test_offsets_lookup(broker, topic):
    sent = [dict(value=f"t{i}".encode(), timestamp=1000 * (i + 1)) for i in range(5)]
    kafka_python_produce(broker.bootstrap, topic, sent)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    try:
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: 5}
        found = consumer.offsets_for_times({tp: 2500})[tp]
        assert found is not None and (found.offset, found.timestamp) == (2, 3000), (
            f"offsets_for_times(2500) gave {found}, expected offset 2 (timestamp 3000)"
        )
        after_last = consumer.offsets_for_times({tp: 999_999})[tp]
        assert after_last is None, (
            f"a timestamp after the last record must find nothing (offset -1), got {after_last}"
        )
    finally:
        consumer.close()
