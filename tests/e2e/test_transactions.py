"""Transactions with confluent-kafka (librdkafka): commit and abort visibility under
read_committed and read_uncommitted, a consume-transform-produce loop with
send_offsets_to_transaction, zombie fencing, and kill -9 in the middle of transactions."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from strata_e2e import confluent_consume, confluent_produce, assert_delivered, create_topic, wait_until

TXN_BROKER = (
    "transaction.state.log.num.partitions=4",
    "offsets.topic.num.partitions=4",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms=200",
    "group.initial.rebalance.delay.ms=0",
)


def txn_producer(bootstrap, tid, **conf):
    config = {
        "bootstrap.servers": bootstrap,
        "transactional.id": tid,
        "linger.ms": 5,
        "transaction.timeout.ms": 10000,
    }
    config.update(conf)
    p = Producer(config)
    p.init_transactions(30)
    return p


def values(records):
    return [r.value.decode() for r in records]


def test_aborted_records_are_invisible_to_read_committed(broker_factory, new_topic):
    broker = broker_factory(*TXN_BROKER)
    topic = new_topic()
    create_topic(broker.bootstrap, topic, partitions=2)
    p = txn_producer(broker.bootstrap, f"tx-{uuid.uuid4().hex[:6]}")
    for name, n, commit in (("a", 10, True), ("b", 10, False), ("c", 5, True)):
        p.begin_transaction()
        for i in range(n):
            p.produce(topic, value=f"{name}{i}".encode(), partition=i % 2)
        p.flush(30)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    committed = confluent_consume(broker.bootstrap, topic, partitions=(0, 1), min_count=15,
                                  **{"isolation.level": "read_committed"})
    assert sorted(values(committed)) == sorted([f"a{i}" for i in range(10)] + [f"c{i}" for i in range(5)])
    everything = confluent_consume(broker.bootstrap, topic, partitions=(0, 1), min_count=25,
                                   **{"isolation.level": "read_uncommitted"})
    assert len(everything) == 25
    assert {f"b{i}" for i in range(10)} <= set(values(everything))


def test_open_transaction_holds_read_committed_back(broker_factory, new_topic):
    broker = broker_factory(*TXN_BROKER)
    topic = new_topic()
    create_topic(broker.bootstrap, topic, partitions=1)
    confluent_produce(broker.bootstrap, topic, [{"value": b"before"}])
    p = txn_producer(broker.bootstrap, f"tx-{uuid.uuid4().hex[:6]}")
    p.begin_transaction()
    p.produce(topic, value=b"pending")
    p.flush(30)
    confluent_produce(broker.bootstrap, topic, [{"value": b"after"}])
    # The open transaction's first offset (1) is the last stable offset.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-" + uuid.uuid4().hex[:6],
                  "isolation.level": "read_committed"})
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.close()
    assert (lo, hi) == (0, 1)
    seen = confluent_consume(broker.bootstrap, topic, min_count=1, **{"isolation.level": "read_committed"})
    assert values(seen) == ["before"]
    p.commit_transaction(30)
    seen = confluent_consume(broker.bootstrap, topic, min_count=3, **{"isolation.level": "read_committed"})
    assert values(seen) == ["before", "pending", "after"]


def test_consume_transform_produce_exactly_once(broker_factory, new_topic):
    broker = broker_factory(*TXN_BROKER)
    src, dst = new_topic("-in"), new_topic("-out")
    create_topic(broker.bootstrap, src, partitions=2)
    create_topic(broker.bootstrap, dst, partitions=2)
    n = 200
    assert_delivered(confluent_produce(broker.bootstrap, src, [{"value": str(i).encode(), "partition": i % 2} for i in range(n)]))
    group = "eos-" + uuid.uuid4().hex[:6]
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})
    consumer.subscribe([src])
    producer = txn_producer(broker.bootstrap, "eos-" + uuid.uuid4().hex[:6])
    done, rounds, deadline = 0, 0, time.monotonic() + 60
    while done < n:
        assert time.monotonic() < deadline, f"only {done} of {n} processed"
        msgs = [m for m in consumer.consume(50, timeout=1.0) if not m.error()]
        if not msgs:
            continue
        producer.begin_transaction()
        for m in msgs:
            producer.produce(dst, value=b"x" + m.value(), partition=m.partition())
        producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                             consumer.consumer_group_metadata(), 30)
        rounds += 1
        if rounds == 2:
            # One round is aborted: its output vanishes and its input is read again.
            producer.abort_transaction(30)
            for tp in consumer.committed(consumer.assignment(), timeout=10):
                consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))
            continue
        producer.commit_transaction(30)
        done += len(msgs)
    consumer.close()
    out = confluent_consume(broker.bootstrap, dst, partitions=(0, 1), min_count=n,
                            **{"isolation.level": "read_committed"})
    assert sorted(values(out)) == sorted(f"x{i}" for i in range(n))
    # The group's offsets were committed by the transactions: at the end of both partitions.
    check = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    committed = check.committed([TopicPartition(src, 0), TopicPartition(src, 1)], timeout=10)
    check.close()
    assert sorted(tp.offset for tp in committed) == [n // 2, n // 2]


def test_zombie_producer_is_fenced(broker_factory, new_topic):
    broker = broker_factory(*TXN_BROKER)
    topic = new_topic()
    create_topic(broker.bootstrap, topic, partitions=1)
    tid = "zombie-" + uuid.uuid4().hex[:6]
    old = txn_producer(broker.bootstrap, tid)
    old.begin_transaction()
    old.produce(topic, value=b"zombie")
    old.flush(30)
    new = txn_producer(broker.bootstrap, tid)  # fences `old`, aborting its transaction
    new.begin_transaction()
    new.produce(topic, value=b"fresh")
    new.commit_transaction(30)
    with pytest.raises(KafkaException) as err:
        old.produce(topic, value=b"late")
        old.commit_transaction(10)
    assert err.value.args[0].fatal() or "fenced" in str(err.value).lower()
    seen = confluent_consume(broker.bootstrap, topic, min_count=1, **{"isolation.level": "read_committed"})
    assert values(seen) == ["fresh"]


def test_kill_9_mid_transaction_resolves_every_transaction(broker_factory, new_topic):
    broker = broker_factory(*TXN_BROKER)
    topic = new_topic()
    create_topic(broker.bootstrap, topic, partitions=2)
    committed = txn_producer(broker.bootstrap, "c-" + uuid.uuid4().hex[:6])
    committed.begin_transaction()
    for i in range(20):
        committed.produce(topic, value=f"ok{i}".encode(), partition=i % 2)
    committed.commit_transaction(30)
    # An open transaction with a short timeout, then the broker dies.
    torn = txn_producer(broker.bootstrap, "t-" + uuid.uuid4().hex[:6], **{"transaction.timeout.ms": 2000})
    torn.begin_transaction()
    for i in range(20):
        torn.produce(topic, value=f"torn{i}".encode(), partition=i % 2)
    torn.flush(30)
    broker.kill9()
    del torn  # the crashed producer's instance is gone too
    broker.restart()
    # After the restart the open transaction is aborted by its timeout: its abort markers
    # move the last stable offset up to the high watermark on both partitions.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "w-" + uuid.uuid4().hex[:6],
                  "isolation.level": "read_committed"})
    u = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "w-" + uuid.uuid4().hex[:6],
                  "isolation.level": "read_uncommitted"})
    try:
        def stable(p):
            lso = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)[1]
            hw = u.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)[1]
            return lso == hw and hw >= 21  # 10 committed + marker + 10 aborted + marker
        wait_until(lambda: stable(0) and stable(1), 30, "the torn transaction to be aborted")
    finally:
        c.close()
        u.close()
    committed.begin_transaction()
    committed.produce(topic, value=b"later", partition=0)
    committed.commit_transaction(30)
    seen = confluent_consume(broker.bootstrap, topic, partitions=(0, 1), min_count=21,
                             **{"isolation.level": "read_committed"})
    assert sorted(values(seen)) == sorted([f"ok{i}" for i in range(20)] + ["later"])
    everything = confluent_consume(broker.bootstrap, topic, partitions=(0, 1), min_count=41,
                                   **{"isolation.level": "read_uncommitted"})
    assert len(everything) == 41
