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


def test_clients_use_three_brokers_as_one_cluster(tmp_path):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import NewTopic

    cluster = Cluster(tmp_path)
    try:
        admin = admin_client(cluster.bootstrap)
        wait_until(
            lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30, "three registered brokers"
        )
        topic = f"cluster-{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])[topic].result(30)
        wait_until(
            lambda: len(admin.list_topics(topic, timeout=5).topics[topic].partitions) == 6,
            30,
            "the topic's partitions",
        )
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
