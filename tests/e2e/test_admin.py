"""Admin operations through confluent-kafka's AdminClient against a real broker: topics
(create with configs, validate_only, errors, delete, add partitions), configs (describe with
Kafka's defaults and sources, legacy and incremental alter), the cluster, DeleteRecords and
ListOffsets / offsets_for_times."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from strata_e2e import (
    admin_client,
    assert_delivered,
    confluent_consume,
    confluent_consumer,
    confluent_produce,
    create_topic,
    list_topic_names,
    unset_topic_config_source,
    wait_for_topic,
)

TIMEOUT_S = 30

# Kafka's topic config defaults (a broker with no overrides of the log.* keys).
KAFKA_TOPIC_DEFAULTS = {
    "cleanup.policy": "delete",
    "compression.type": "producer",
    "delete.retention.ms": "86400000",
    "max.message.bytes": "1048588",
    "message.timestamp.type": "CreateTime",
    "min.insync.replicas": "1",
    "retention.bytes": "-1",
    "retention.ms": "604800000",
    "segment.bytes": "1073741824",
    "segment.ms": "604800000",
}


def error_code(future):
    """The KafkaError code a failed admin future carries (fails if it succeeded)."""
    with pytest.raises(KafkaException) as raised:
        future.result(timeout=TIMEOUT_S)
    error = raised.value.args[0]
    return error.code() if isinstance(error, KafkaError) else error


def code_name(code):
    return KafkaError(code).name() if isinstance(code, int) else str(code)


def describe_topic_config(admin, topic) -> dict:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource].result(timeout=TIMEOUT_S)


def source_of(entry):
    return ConfigSource(entry.source)


# ---- topics -------------------------------------------------------------------------------------


def test_create_topic_with_partitions_and_config(broker, topic):
    admin = admin_client(broker.bootstrap)
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=1,
                  config={"retention.ms": "3600000", "max.message.bytes": "200000"})],
        request_timeout=TIMEOUT_S,
    )
    assert futures[topic].result(timeout=TIMEOUT_S) is None
    wait_for_topic(broker.bootstrap, topic, 3)

    configs = describe_topic_config(admin, topic)
    for name, value in (("retention.ms", "3600000"), ("max.message.bytes", "200000")):
        assert configs[name].value == value, f"{name} = {configs[name].value}, created with {value}"
        assert source_of(configs[name]) == ConfigSource.DYNAMIC_TOPIC_CONFIG, (
            f"{name} set at creation must have source DYNAMIC_TOPIC_CONFIG, got {source_of(configs[name])}"
        )
    assert configs["segment.bytes"].value == "1073741824"
    assert source_of(configs["segment.bytes"]) == unset_topic_config_source("segment.bytes")

    # The topic is usable on every partition.
    sent = [dict(partition=p, value=f"p{p}".encode()) for p in range(3)]
    assert_delivered(confluent_produce(broker.bootstrap, topic, sent))
    received = confluent_consume(broker.bootstrap, topic, range(3), min_count=3)
    assert sorted((r.partition, r.offset, r.value) for r in received) == [
        (0, 0, b"p0"), (1, 0, b"p1"), (2, 0, b"p2"),
    ]


def test_create_validate_only_creates_nothing(broker, topic):
    admin = admin_client(broker.bootstrap)
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=2, replication_factor=1)],
        validate_only=True, request_timeout=TIMEOUT_S,
    )
    assert futures[topic].result(timeout=TIMEOUT_S) is None, "validate_only of a valid topic succeeds"
    time.sleep(0.5)
    assert topic not in list_topic_names(broker.bootstrap), "validate_only=True must not create the topic"

    # ... and still reports what would fail.
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=2)], validate_only=True,
        request_timeout=TIMEOUT_S,
    )
    assert error_code(futures[topic]) == KafkaError.INVALID_REPLICATION_FACTOR


@pytest.mark.parametrize(
    "case",
    ["replication_factor_2", "name_with_space_and_bang", "name_too_long", "name_dot", "bad_config_value",
     "unknown_config"],
)
def test_create_topic_errors(broker, topic, case):
    name, partitions, rf, config, expected = {
        "replication_factor_2": (topic, 1, 2, {}, KafkaError.INVALID_REPLICATION_FACTOR),
        "name_with_space_and_bang": ("bad name!", 1, 1, {}, KafkaError.TOPIC_EXCEPTION),
        "name_too_long": ("x" * 250, 1, 1, {}, KafkaError.TOPIC_EXCEPTION),
        "name_dot": ("..", 1, 1, {}, KafkaError.TOPIC_EXCEPTION),
        "bad_config_value": (topic, 1, 1, {"retention.ms": "banana"}, KafkaError.INVALID_CONFIG),
        "unknown_config": (topic, 1, 1, {"no.such.config": "1"}, KafkaError.INVALID_CONFIG),
    }[case]
    admin = admin_client(broker.bootstrap)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config)],
        request_timeout=TIMEOUT_S,
    )
    got = error_code(futures[name])
    assert got == expected, f"{case}: expected {code_name(expected)}, got {code_name(got)}"
    assert name not in list_topic_names(broker.bootstrap), f"{case}: the failed topic must not exist"


def test_create_existing_topic_fails(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1)
    admin = admin_client(broker.bootstrap)
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=1)], request_timeout=TIMEOUT_S
    )
    got = error_code(futures[topic])
    assert got == KafkaError.TOPIC_ALREADY_EXISTS, f"expected TOPIC_ALREADY_EXISTS, got {code_name(got)}"


def test_delete_topics(broker, new_topic):
    doomed, kept = new_topic("-doomed"), new_topic("-kept")
    create_topic(broker.bootstrap, doomed, partitions=2)
    create_topic(broker.bootstrap, kept, partitions=1)
    assert_delivered(confluent_produce(broker.bootstrap, doomed, [dict(value=b"old", partition=0)]))

    admin = admin_client(broker.bootstrap)
    futures = admin.delete_topics([doomed], request_timeout=TIMEOUT_S)
    assert futures[doomed].result(timeout=TIMEOUT_S) is None
    topics = list_topic_names(broker.bootstrap)
    assert doomed not in topics, f"{doomed} still listed after delete_topics"
    assert kept in topics, "deleting one topic must not touch another"

    got = error_code(admin.delete_topics([doomed], request_timeout=TIMEOUT_S)[doomed])
    assert got == KafkaError.UNKNOWN_TOPIC_OR_PART, f"deleting a missing topic gave {code_name(got)}"

    # The name can be reused, and the new topic starts empty.
    deadline = time.monotonic() + 15
    while True:
        future = admin.create_topics([NewTopic(doomed, 1, 1)], request_timeout=TIMEOUT_S)[doomed]
        try:
            future.result(timeout=TIMEOUT_S)
            break
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    wait_for_topic(broker.bootstrap, doomed, 1)
    consumer = confluent_consumer(broker.bootstrap)
    try:
        watermarks = consumer.get_watermark_offsets(TopicPartition(doomed, 0), timeout=10)
    finally:
        consumer.close()
    assert watermarks == (0, 0), f"recreated topic must be empty, watermarks {watermarks}"


def test_create_partitions(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=2)
    admin = admin_client(broker.bootstrap)
    futures = admin.create_partitions([NewPartitions(topic, 5)], request_timeout=TIMEOUT_S)
    assert futures[topic].result(timeout=TIMEOUT_S) is None
    wait_for_topic(broker.bootstrap, topic, 5)

    assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=b"in p4", partition=4)]))
    received = confluent_consume(broker.bootstrap, topic, [4], min_count=1)
    assert [(r.partition, r.offset, r.value) for r in received] == [(4, 0, b"in p4")]

    got = error_code(admin.create_partitions([NewPartitions(topic, 3)], request_timeout=TIMEOUT_S)[topic])
    assert got == KafkaError.INVALID_PARTITIONS, f"shrinking partitions gave {code_name(got)}"


def test_elect_leaders(broker, topic):
    """ElectLeaders is a controller operation decided by the partition change rules: one node
    leads its partitions as their preferred replica, so each says ELECTION_NOT_NEEDED, and a
    partition that does not exist says UNKNOWN_TOPIC_OR_PARTITION."""
    from confluent_kafka import ElectionType

    create_topic(broker.bootstrap, topic, partitions=2)
    admin = admin_client(broker.bootstrap)
    for election in (ElectionType.PREFERRED, ElectionType.UNCLEAN):
        wanted = [TopicPartition(topic, 0), TopicPartition(topic, 1), TopicPartition(topic, 7)]
        result = admin.elect_leaders(election, wanted).result(timeout=TIMEOUT_S)
        codes = {(tp.topic, tp.partition): (e.code() if e is not None else None) for tp, e in result.items()}
        assert codes == {
            (topic, 0): KafkaError.ELECTION_NOT_NEEDED,
            (topic, 1): KafkaError.ELECTION_NOT_NEEDED,
            (topic, 7): KafkaError.UNKNOWN_TOPIC_OR_PART,
        }, (election, codes)


def test_list_topics(broker, new_topic):
    first, second = new_topic("-a"), new_topic("-b")
    create_topic(broker.bootstrap, first, partitions=1)
    create_topic(broker.bootstrap, second, partitions=3)
    metadata = admin_client(broker.bootstrap).list_topics(timeout=10)

    assert len(metadata.brokers) == 1, f"one broker expected: {metadata.brokers}"
    (broker_id, node), = metadata.brokers.items()
    assert (node.host, node.port) == ("127.0.0.1", broker.port), f"advertised as {node.host}:{node.port}"
    assert metadata.controller_id == broker_id
    assert metadata.cluster_id, "metadata must carry a cluster id"
    for name, count in ((first, 1), (second, 3)):
        assert name in metadata.topics, f"{name} missing from {sorted(metadata.topics)}"
        partitions = metadata.topics[name].partitions
        assert sorted(partitions) == list(range(count))
        for p in partitions.values():
            assert (p.leader, list(p.replicas), list(p.isrs)) == (broker_id, [broker_id], [broker_id]), (
                f"{name}/{p.id}: leader {p.leader}, replicas {p.replicas}, isr {p.isrs}"
            )


# ---- configs ------------------------------------------------------------------------------------


def test_describe_topic_configs_lists_every_default(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1)
    configs = describe_topic_config(admin_client(broker.bootstrap), topic)

    missing = sorted(set(KAFKA_TOPIC_DEFAULTS) - set(configs))
    assert not missing, f"DescribeConfigs must return every topic config; missing {missing}"
    for name, value in KAFKA_TOPIC_DEFAULTS.items():
        entry = configs[name]
        assert entry.value == value, f"{name} = {entry.value!r}, Kafka's default is {value!r}"
        assert source_of(entry) == unset_topic_config_source(name), (
            f"{name} is not set by the test: source must be {unset_topic_config_source(name)}, "
            f"got {source_of(entry)}"
        )
        assert not entry.is_sensitive, f"{name} is not sensitive"
    assert len(configs) >= 20, f"Kafka describes ~30 topic configs; got only {sorted(configs)}"


def test_describe_configs_of_missing_topic(broker, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    admin = admin_client(broker.bootstrap)
    future = admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource]
    got = error_code(future)
    assert got == KafkaError.UNKNOWN_TOPIC_OR_PART, f"describing a missing topic gave {code_name(got)}"


def test_describe_broker_configs(broker):
    admin = admin_client(broker.bootstrap)
    broker_id = admin.describe_cluster(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S).nodes[0].id
    resource = ConfigResource(ResourceType.BROKER, str(broker_id))
    configs = admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource].result(timeout=TIMEOUT_S)
    expected = {
        "num.partitions": "1",  # set by the test fixture
        "auto.create.topics.enable": "true",
        "message.max.bytes": "1048588",
        "log.segment.bytes": "1073741824",
    }
    for name, value in expected.items():
        assert name in configs, f"broker config {name} missing from {sorted(configs)[:30]}..."
        assert configs[name].value == value, f"broker {name} = {configs[name].value!r}, expected {value!r}"
        assert source_of(configs[name]) != ConfigSource.DYNAMIC_TOPIC_CONFIG


def test_alter_configs_legacy(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1)
    admin = admin_client(broker.bootstrap)
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "86400000"})
    admin.alter_configs([resource], request_timeout=TIMEOUT_S)[resource].result(timeout=TIMEOUT_S)

    configs = describe_topic_config(admin, topic)
    assert configs["retention.ms"].value == "86400000", f"retention.ms = {configs['retention.ms'].value}"
    assert source_of(configs["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG

    # Legacy AlterConfigs replaces the whole set of overrides: retention.ms reverts to default.
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config={"max.message.bytes": "300000"})
    admin.alter_configs([resource], request_timeout=TIMEOUT_S)[resource].result(timeout=TIMEOUT_S)
    configs = describe_topic_config(admin, topic)
    assert configs["max.message.bytes"].value == "300000"
    assert source_of(configs["max.message.bytes"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert (configs["retention.ms"].value, source_of(configs["retention.ms"])) == (
        "604800000", unset_topic_config_source("retention.ms"),
    ), "AlterConfigs (non-incremental) must drop overrides it does not name"


def test_incremental_alter_configs(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1)
    admin = admin_client(broker.bootstrap)

    def alter(*entries):
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=list(entries))
        return admin.incremental_alter_configs([resource], request_timeout=TIMEOUT_S)[resource]

    alter(
        ConfigEntry("segment.bytes", "10485760", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
    ).result(timeout=TIMEOUT_S)
    configs = describe_topic_config(admin, topic)
    for name, value in (("segment.bytes", "10485760"), ("retention.ms", "3600000")):
        assert (configs[name].value, source_of(configs[name])) == (value, ConfigSource.DYNAMIC_TOPIC_CONFIG), (
            f"{name}: {configs[name].value} from {source_of(configs[name])}"
        )

    alter(ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)).result(timeout=TIMEOUT_S)
    configs = describe_topic_config(admin, topic)
    assert (configs["retention.ms"].value, source_of(configs["retention.ms"])) == (
        "604800000", unset_topic_config_source("retention.ms"),
    ), "DELETE must restore the default"
    assert configs["segment.bytes"].value == "10485760", "DELETE of one key must keep the others"

    got = error_code(alter(ConfigEntry("retention.ms", "banana", incremental_operation=AlterConfigOpType.SET)))
    assert got == KafkaError.INVALID_CONFIG, f"a malformed value gave {code_name(got)}"


# ---- cluster ------------------------------------------------------------------------------------


def test_describe_cluster(broker):
    admin = admin_client(broker.bootstrap)
    cluster = admin.describe_cluster(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
    assert len(cluster.nodes) == 1, f"one node expected: {cluster.nodes}"
    node = cluster.nodes[0]
    assert (node.host, node.port) == ("127.0.0.1", broker.port), f"node at {node.host}:{node.port}"
    assert cluster.controller is not None and cluster.controller.id == node.id, (
        f"the only node must be the controller: {cluster.controller}"
    )
    assert isinstance(cluster.cluster_id, str) and cluster.cluster_id, f"cluster id {cluster.cluster_id!r}"
    assert admin.list_topics(timeout=10).cluster_id == cluster.cluster_id, (
        "Metadata and DescribeCluster must report the same cluster id"
    )


# ---- records and offsets ------------------------------------------------------------------------


def test_delete_records_moves_the_log_start(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1)
    assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=f"v{i}".encode()) for i in range(10)]))
    admin = admin_client(broker.bootstrap)
    tp = TopicPartition(topic, 0, 4)
    result = admin.delete_records([tp], request_timeout=TIMEOUT_S)
    (future,) = result.values()
    deleted = future.result(timeout=TIMEOUT_S)
    assert deleted.low_watermark == 4, f"delete_records up to 4 gave low watermark {deleted.low_watermark}"

    consumer = confluent_consumer(broker.bootstrap)
    try:
        watermarks = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    assert watermarks == (4, 10), f"watermarks after delete_records: {watermarks}, expected (4, 10)"

    earliest = admin.list_offsets({TopicPartition(topic, 0): OffsetSpec.earliest()}, request_timeout=TIMEOUT_S)
    assert next(iter(earliest.values())).result(timeout=TIMEOUT_S).offset == 4

    received = confluent_consume(broker.bootstrap, topic, [0], min_count=6)
    assert [(r.offset, r.value) for r in received] == [(i, f"v{i}".encode()) for i in range(4, 10)], (
        f"reading from earliest after delete_records: {[(r.offset, r.value) for r in received]}"
    )
    # An offset below the log start is out of range: the consumer resets to the new earliest.
    received = confluent_consume(
        broker.bootstrap, topic, [0], start=1, min_count=6, ignore_errors={KafkaError._AUTO_OFFSET_RESET}
    )
    assert [r.offset for r in received] == list(range(4, 10)), f"read {[r.offset for r in received]}"


def test_a_request_pipelined_behind_delete_records_sees_its_result(broker, topic):
    """DeleteRecords and a ListOffsets sent right behind it on the same connection, without
    waiting for the first answer (as confluent-kafka-python's own delete_records test does):
    the ListOffsets must see the new log start, as Kafka serves a connection's requests in
    order."""
    create_topic(broker.bootstrap, topic, partitions=1)
    admin = admin_client(broker.bootstrap)
    earliest = {TopicPartition(topic, 0): OffsetSpec.earliest()}
    for round_ in range(5):
        produced = [dict(value=f"r{round_}-{i}".encode()) for i in range(3)]
        assert_delivered(confluent_produce(broker.bootstrap, topic, produced))
        target = 3 * round_ + 2
        deleted = admin.delete_records([TopicPartition(topic, 0, target)], request_timeout=TIMEOUT_S)
        listed = admin.list_offsets(earliest, request_timeout=TIMEOUT_S)
        low = next(iter(deleted.values())).result(timeout=TIMEOUT_S).low_watermark
        start = next(iter(listed.values())).result(timeout=TIMEOUT_S).offset
        assert (low, start) == (target, target), (
            f"round {round_}: delete_records low watermark {low}, then earliest {start}; expected {target}"
        )


def test_list_offsets_and_offsets_for_times(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=1)
    timestamps = [1000, 2000, 3000, 4000, 5000, 4500]  # the last one is out of order
    sent = [dict(value=f"ts{ts}".encode(), timestamp=ts) for ts in timestamps]
    # One batch (linger), so lookups must find records inside a batch, not just batch starts.
    assert_delivered(confluent_produce(broker.bootstrap, topic, sent, **{"linger.ms": 100}))

    admin = admin_client(broker.bootstrap)
    tp = TopicPartition(topic, 0)

    def lookup(spec):
        futures = admin.list_offsets({tp: spec}, request_timeout=TIMEOUT_S)
        info = next(iter(futures.values())).result(timeout=TIMEOUT_S)
        return info.offset, info.timestamp

    assert lookup(OffsetSpec.earliest())[0] == 0
    assert lookup(OffsetSpec.latest())[0] == 6
    assert lookup(OffsetSpec.for_timestamp(2500)) == (2, 3000), "first record with timestamp >= 2500"
    assert lookup(OffsetSpec.for_timestamp(1000)) == (0, 1000)
    assert lookup(OffsetSpec.for_timestamp(4600)) == (4, 5000), "first record (by offset) with ts >= 4600"
    assert lookup(OffsetSpec.for_timestamp(6000))[0] == -1, "a timestamp after the last record gives -1"
    assert lookup(OffsetSpec.max_timestamp()) == (4, 5000), "max timestamp is at offset 4"

    consumer = confluent_consumer(broker.bootstrap)
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, 0, 2500)], timeout=10)
        assert found[0].offset == 2, f"offsets_for_times(2500) gave {found[0].offset}, expected 2"
        found = consumer.offsets_for_times([TopicPartition(topic, 0, 6000)], timeout=10)
        assert found[0].offset == -1, f"offsets_for_times(6000) gave {found[0].offset}, expected -1"
    finally:
        consumer.close()
