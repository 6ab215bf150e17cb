"""Durability and lifecycle of the broker process: `kill -9` during an acks=all load loses no
acknowledged record and duplicates none; topics, ids and configs survive a clean restart;
SIGTERM exits 0 promptly; a second broker on the same data directory is refused."""

import time

import pytest
from confluent_kafka import TopicCollection
from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType
from kafka import KafkaConsumer

from strata_e2e import (
    admin_client,
    assert_delivered,
    assert_dense_offsets,
    by_partition,
    confluent_consume,
    confluent_producer,
    confluent_produce,
    create_topic,
    kafka_python_consume,
    wait_for_topic,
)

TOTAL = 20_000
KILL_AFTER_ACKS = 6_000
PARTITIONS = 2


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fsync", ["true", "false"])
def test_kill9_during_acks_all_load_keeps_every_acknowledged_record(broker_factory, topic, fsync):
    """The producer sends sequence numbers round-robin over 2 partitions with acks=all; after
    KILL_AFTER_ACKS delivery reports the broker is SIGKILLed. The producer is then purged and
    closed *before* the restart, so no retry can reach the new process: every value in the
    log comes from the first process, so none may appear twice. A process crash (not a power
    loss) keeps everything the broker wrote, whatever the fsync policy, so both settings must
    keep every acknowledged record."""
    broker = broker_factory(f"strata.fsync.before.ack={fsync}")
    create_topic(broker.bootstrap, topic, partitions=PARTITIONS)

    acked = {p: [] for p in range(PARTITIONS)}  # partition -> [(offset, seq)] as acknowledged
    errors_before_kill = []
    state = {"killed": False, "acks": 0}

    def on_delivery(err, msg):
        if err is None:
            acked[msg.partition()].append((msg.offset(), int(msg.value())))
            state["acks"] += 1
            if state["acks"] == KILL_AFTER_ACKS and not state["killed"]:
                broker.kill9()
                state["killed"] = True
        elif not state["killed"]:
            errors_before_kill.append(err)

    producer = confluent_producer(
        broker.bootstrap,
        **{
            "acks": "all",
            "linger.ms": 2,
            "batch.num.messages": 200,  # many small batches, so the kill lands mid-stream
            "message.timeout.ms": 60000,
            "enable.idempotence": False,
        },
    )
    sent = {p: [] for p in range(PARTITIONS)}
    deadline = time.monotonic() + 120
    for seq in range(TOTAL):
        partition = seq % PARTITIONS
        sent[partition].append(seq)
        while True:
            try:
                producer.produce(topic, value=f"{seq:08d}".encode(), partition=partition, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    while not state["killed"] and state["acks"] < TOTAL:
        assert time.monotonic() < deadline, f"only {state['acks']} acks after 120 s"
        producer.poll(0.05)

    assert not errors_before_kill, f"delivery errors before the kill: {errors_before_kill[:3]}"
    if not state["killed"]:
        pytest.fail(f"all {TOTAL} records were acknowledged before the kill point: raise TOTAL")

    # Drop everything still queued or in flight; no retry may reach the restarted broker.
    producer.purge(in_queue=True, in_flight=True, blocking=True)
    producer.flush(10)
    del producer  # destroys the librdkafka handle: it stops reconnecting
    acked_total = sum(len(v) for v in acked.values())
    assert acked_total >= KILL_AFTER_ACKS

    broker.restart()
    wait_for_topic(broker.bootstrap, topic, PARTITIONS)
    log = by_partition(confluent_consume(broker.bootstrap, topic, range(PARTITIONS), timeout_s=90))

    for p in range(PARTITIONS):
        records = log.get(p, [])
        assert_dense_offsets(records, what=f"partition {p} after kill -9 and restart: ")
        values = [int(r.value) for r in records]
        assert len(values) == len(set(values)), (
            f"partition {p}: {len(values) - len(set(values))} duplicated values after restart"
        )
        acked_values = [seq for _, seq in acked[p]]
        missing = sorted(set(acked_values) - set(values))
        assert not missing, (
            f"partition {p}: {len(missing)} acknowledged records lost (fsync.before.ack={fsync}), "
            f"first {missing[:10]}"
        )
        # Acknowledged at the offset the broker reported, and the log is exactly a prefix of
        # what was sent to this partition, in send order.
        by_offset = {r.offset: int(r.value) for r in records}
        wrong = [(o, s, by_offset.get(o)) for o, s in acked[p] if by_offset.get(o) != s]
        assert not wrong, f"partition {p}: acked (offset, value) pairs moved: {wrong[:5]}"
        assert values == sent[p][: len(values)], (
            f"partition {p}: log is not a prefix of the sent sequence (first difference at "
            f"{next((i for i, (a, b) in enumerate(zip(values, sent[p])) if a != b), len(sent[p]))})"
        )

    # The restarted broker keeps appending after the recovered log end.
    ends = {p: len(log.get(p, [])) for p in range(PARTITIONS)}
    reports = confluent_produce(
        broker.bootstrap, topic, [dict(value=b"after-restart", partition=p) for p in range(PARTITIONS)], acks="all"
    )
    assert_delivered(reports)
    assert {r[1]: r[2] for r in reports} == ends, f"new records should land at the log ends {ends}: {reports}"


def test_topics_ids_configs_and_records_survive_clean_restart(broker, topic):
    admin = admin_client(broker.bootstrap)
    create_topic(broker.bootstrap, topic, partitions=3, config={"retention.ms": "123456789", "max.message.bytes": "50000"})
    sent = [dict(partition=i % 3, key=f"k{i}".encode(), value=f"v{i}".encode(), timestamp=1_000 + i) for i in range(60)]
    assert_delivered(confluent_produce(broker.bootstrap, topic, sent, acks="all"))
    topic_id = admin.describe_topics(TopicCollection([topic]), request_timeout=30)[topic].result(timeout=30).topic_id
    assert topic_id is not None and str(topic_id) != "AAAAAAAAAAAAAAAAAAAAAA", f"topic id {topic_id}"

    broker.stop()  # asserts exit code 0
    broker.restart()

    admin = admin_client(broker.bootstrap)
    wait_for_topic(broker.bootstrap, topic, 3)
    after = admin.describe_topics(TopicCollection([topic]), request_timeout=30)[topic].result(timeout=30)
    assert str(after.topic_id) == str(topic_id), f"topic id changed across restart: {topic_id} -> {after.topic_id}"

    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource], request_timeout=30)[resource].result(timeout=30)
    for name, value in (("retention.ms", "123456789"), ("max.message.bytes", "50000")):
        assert configs[name].value == value, f"{name} after restart: {configs[name].value}, expected {value}"
        assert ConfigSource(configs[name].source) == ConfigSource.DYNAMIC_TOPIC_CONFIG

    received = by_partition(kafka_python_consume(broker.bootstrap, topic, range(3)))
    for p in range(3):
        want = [s for s in sent if s["partition"] == p]
        got = received.get(p, [])
        assert_dense_offsets(got, what=f"partition {p} after restart: ")
        assert [(r.key, r.value, r.timestamp) for r in got] == [(s["key"], s["value"], s["timestamp"]) for s in want], (
            f"partition {p} content changed across a clean restart"
        )


def test_sigterm_exits_zero_promptly_with_clients_connected(broker, topic):
    assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=b"before shutdown")]))
    # An idle but connected client must not hold the shutdown up.
    idle = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        assert idle.topics(), "the idle client should be connected and see the topic"
        started = time.monotonic()
        code = broker.stop(check=False)
        elapsed = time.monotonic() - started
    finally:
        idle.close()
    assert code == 0, f"SIGTERM must give exit code 0, got {code}:\n{broker.log_tail(30)}"
    assert elapsed < 10, f"shutdown took {elapsed:.1f} s"

    broker.restart()
    received = confluent_consume(broker.bootstrap, topic, [0], min_count=1)
    assert [r.value for r in received] == [b"before shutdown"], "the record survives a SIGTERM restart"


def test_second_broker_on_the_same_data_dir_is_refused(broker, broker_factory, topic):
    assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=b"first broker")]))
    intruder = broker_factory(data_dir=broker.data_dir, wait=False)
    code = intruder.wait_exit(15)
    assert code != 0, "a second broker on a locked data directory must exit with an error"
    log = intruder.log_text().lower()
    assert "lock" in log or str(broker.data_dir).lower() in log, (
        f"the refusal should name the lock or the data directory:\n{intruder.log_tail(20)}"
    )

    # The first broker is untouched and keeps serving.
    assert broker.running, "the first broker must keep running"
    assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=b"still here")]))
    received = confluent_consume(broker.bootstrap, topic, [0], min_count=2)
    assert [r.value for r in received] == [b"first broker", b"still here"]
