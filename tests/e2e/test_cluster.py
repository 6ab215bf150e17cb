"""Three strata processes on loopback ports, each started from a Kafka 4.x style KRaft
server.properties in combined mode (process.roles=broker,controller, the three as
controller.quorum.voters): unmodified clients see one cluster. A topic's partitions (replication
factor 1) are spread over the three brokers; confluent-kafka and kafka-python produce to each
partition's leader and a consumer group reads everything back through its coordinator on one of
the brokers. Replication across brokers is not served yet (RF > 1 is refused)."""

import subprocess
import time
import uuid

from strata_e2e import (
    admin_client,
    assert_delivered,
    confluent_consumer,
    confluent_produce,
    free_port,
    kafka_python_produce,
    strata_binary,
    wait_until,
)


class Cluster:
    def __init__(self, base, size=3):
        self.ids = list(range(1, size + 1))
        self.ports = {i: free_port() for i in self.ids}
        self.controller_ports = {i: free_port() for i in self.ids}
        voters = ",".join(f"{i}@127.0.0.1:{self.controller_ports[i]}" for i in self.ids)
        self.procs, self.logs = {}, {}
        for i in self.ids:
            node = base / f"node{i}"
            node.mkdir()
            properties = node / "server.properties"
            properties.write_text(
                "process.roles=broker,controller\n"
                f"node.id={i}\n"
                f"controller.quorum.voters={voters}\n"
                f"listeners=CLIENT://127.0.0.1:{self.ports[i]},"
                f"CONTROLLER://127.0.0.1:{self.controller_ports[i]}\n"
                f"advertised.listeners=CLIENT://127.0.0.1:{self.ports[i]}\n"
                "controller.listener.names=CONTROLLER\n"
                "inter.broker.listener.name=CLIENT\n"
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,CLIENT:PLAINTEXT\n"
                f"log.dirs={node / 'data'}\n"
                "offsets.topic.replication.factor=1\n"
                "transaction.state.log.replication.factor=1\n"
                "group.initial.rebalance.delay.ms=0\n"
                "console.enable=false\n"
            )
            self.logs[i] = node / "broker.log"
            with open(self.logs[i], "wb") as log:
                self.procs[i] = subprocess.Popen(
                    [str(strata_binary()), "serve", "--config", str(properties)],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
        for i in self.ids:
            wait_until(
                lambda i=i: f"127.0.0.1:{self.ports[i]}" in self.listening_lines(i),
                60,
                f"node {i} serving clients",
            )

    def listening_lines(self, i):
        assert self.procs[i].poll() is None, f"node {i} exited:\n{self.log(i)}"
        return "\n".join(l for l in self.log(i).splitlines() if "listening" in l)

    def log(self, i):
        return self.logs[i].read_text(errors="replace")

    @property
    def bootstrap(self):
        return ",".join(f"127.0.0.1:{self.ports[i]}" for i in self.ids)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def spread_topic(cluster, prefix):
    """Once the three brokers are registered, a new 6-partition topic (replication factor 1);
    the admin client and the topic's name."""
    from confluent_kafka.admin import NewTopic

    admin = admin_client(cluster.bootstrap)
    wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30, "three registered brokers")
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])[topic].result(30)
    wait_until(
        lambda: len(admin.list_topics(topic, timeout=5).topics[topic].partitions) == 6,
        30,
        "the topic's partitions",
    )
    return admin, topic


def test_clients_use_three_brokers_as_one_cluster(tmp_path):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import NewTopic

    cluster = Cluster(tmp_path)
    try:
        admin, topic = spread_topic(cluster, "cluster")
        leaders = {p.id: p.leader for p in admin.list_topics(topic, timeout=5).topics[topic].partitions.values()}
        assert sorted(leaders.values()) == [1, 1, 2, 2, 3, 3], leaders

        # Replication factor 3 is refused with Kafka's error until replication is served.
        refused = admin.create_topics([NewTopic(topic + "-rf3", num_partitions=1, replication_factor=3)])
        try:
            refused[topic + "-rf3"].result(30)
            raise AssertionError("replication factor 3 was accepted")
        except Exception as e:  # noqa: BLE001
            assert "INVALID_REPLICATION_FACTOR" in str(e) or "replication" in str(e).lower(), e

        # An idempotent confluent-kafka producer and kafka-python both write to every partition.
        records = [{"key": b"k%d" % i, "value": b"c%d" % i} for i in range(600)]
        reports = confluent_produce(
            cluster.bootstrap, topic, records, acks="all", **{"enable.idempotence": True}
        )
        assert_delivered(reports)
        assert {r[1] for r in reports} == set(range(6))
        python_records = [{"key": b"p%d" % i, "value": b"p%d" % i} for i in range(300)]
        kafka_python_produce(cluster.bootstrap, topic, python_records)

        # A consumer group reads all of it back and commits, through its coordinator.
        consumer = confluent_consumer(
            cluster.bootstrap,
            **{"group.id": f"g-{topic}", "enable.auto.commit": False, "enable.auto.offset.store": True, "enable.partition.eof": False},
        )
        seen = set()
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 60
            while len(seen) < 900:
                assert time.monotonic() < deadline, f"the group read {len(seen)} of 900"
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                assert msg.error() is None, msg.error()
                seen.add(msg.value())
            consumer.commit(asynchronous=False)
            committed = consumer.committed([TopicPartition(topic, p) for p in range(6)], timeout=10)
            assert sum(tp.offset for tp in committed) == 900, committed
        finally:
            consumer.close()
        assert seen == {r["value"] for r in records} | {r["value"] for r in python_records}
    finally:
        cluster.stop()


def test_transactions_span_partitions_on_every_broker(tmp_path):
    """A transactional producer writes to partitions led by all three brokers; its coordinator
    (on one of them) has each partition's leader write the markers (WriteTxnMarkers between
    brokers): read_committed consumers see the committed transactions whole and nothing of an
    aborted one, and offsets sent to a transaction commit with it."""
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    cluster = Cluster(tmp_path)
    try:
        admin, topic = spread_topic(cluster, "txn")
        producer = Producer(
            {"bootstrap.servers": cluster.bootstrap, "transactional.id": f"tx-{topic}", "linger.ms": 5}
        )
        producer.init_transactions(30)
        for txn, commit in ((0, True), (1, False), (2, True)):
            producer.begin_transaction()
            for p in range(6):
                for i in range(5):
                    producer.produce(topic, value=b"t%d-p%d-%d" % (txn, p, i), partition=p)
            if commit:
                producer.commit_transaction(30)
            else:
                producer.abort_transaction(30)

        consumer = Consumer(
            {
                "bootstrap.servers": cluster.bootstrap,
                "group.id": f"rc-{topic}",
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
                "enable.auto.commit": False,
            }
        )
        seen, at_end = [], set()
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(6)])
            deadline = time.monotonic() + 60
            while len(at_end) < 6:
                assert time.monotonic() < deadline, f"read {len(seen)}, at end {sorted(at_end)}"
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                    at_end.add(msg.partition())
                    continue
                at_end.discard(msg.partition())
                seen.append(msg.value())
        finally:
            consumer.close()
        expected = sorted(b"t%d-p%d-%d" % (t, p, i) for t in (0, 2) for p in range(6) for i in range(5))
        assert sorted(seen) == expected, f"{len(seen)} read, {len(expected)} committed"

        # Offsets sent to a transaction commit with it, at the group's coordinator.
        group = f"eos-{topic}"
        producer.begin_transaction()
        producer.produce(topic, value=b"last", partition=0)
        offsets = [TopicPartition(topic, p, 5) for p in range(6)]
        probe = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group})
        try:
            producer.send_offsets_to_transaction(offsets, probe.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
            committed = wait_until(
                lambda: [tp.offset for tp in probe.committed(offsets, timeout=10)] == [5] * 6,
                30,
                "the transaction's offsets committed",
            )
            assert committed
        finally:
            probe.close()
    finally:
        cluster.stop()
