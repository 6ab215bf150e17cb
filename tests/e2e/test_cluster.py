"""Three strata processes on loopback ports, each started from a Kafka 4.x style KRaft
server.properties in combined mode (process.roles=broker,controller, the three as
controller.quorum.voters): unmodified clients see one cluster. A topic's partitions (replication
factor 1) are spread over the three brokers; confluent-kafka and kafka-python produce to each
partition's leader and a consumer group reads everything back through its coordinator on one of
the brokers. With replication factor 3 every follower fetches from its partition's leader and
holds the same log byte for byte, also after being down while the leader took writes."""

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from strata_e2e import (
    TestPki,
    admin_client,
    assert_delivered,
    confluent_consumer,
    confluent_produce,
    free_port,
    kafka_python_consume,
    kafka_python_produce,
    strata_binary,
    wait_until,
)


@pytest.fixture(autouse=True)
def node_logs_on_failure(request, tmp_path):
    """When a test fails, prints each node's warnings and errors and its last lines (the
    nodes log into `tmp_path/node<id>/broker.log`), so that a failure in CI can be read."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return
    for log in sorted(tmp_path.glob("node*/broker.log")):
        lines = log.read_text(errors="replace").splitlines()
        notable = [line for line in lines if " WARN " in line or " ERROR " in line]
        print(f"\n----- {log}: {len(notable)} warnings and errors (last 60) -----")
        print("\n".join(line[:400] for line in notable[-60:]))
        print(f"----- {log}: last 30 lines -----")
        print("\n".join(line[:400] for line in lines[-30:]))


class Cluster:
    """`size` brokers (ids 1..size). With `controllers` = 0 they are combined nodes
    (process.roles=broker,controller), all voters; otherwise the voters are that many
    controller-only nodes (ids 101, 102, ...) and the brokers are broker-only nodes."""

    def __init__(self, base, size=3, extra="", controllers=0, node_extra=lambda i: "", client_conf=None):
        self.ids = list(range(1, size + 1))
        self.controller_ids = [100 + c for c in range(1, controllers + 1)]
        voter_ids = self.controller_ids or self.ids
        self.ports = {i: free_port() for i in self.ids}
        self.controller_ports = {i: free_port() for i in voter_ids}
        voters = ",".join(f"{i}@127.0.0.1:{self.controller_ports[i]}" for i in voter_ids)
        self.procs, self.logs, self.properties, self.data = {}, {}, {}, {}
        # What clients need to reach the CLIENT listener (security settings).
        self.client_conf = dict(client_conf or {})
        common = (
            f"controller.quorum.voters={voters}\n"
            "controller.listener.names=CONTROLLER\n"
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,CLIENT:PLAINTEXT\n"
            "group.initial.rebalance.delay.ms=0\n"
            "console.enable=false\n" + extra
        )
        for i in self.controller_ids:
            self.write_node(
                base, i,
                "process.roles=controller\n"
                f"listeners=CONTROLLER://127.0.0.1:{self.controller_ports[i]}\n" + common,
            )
        for i in self.ids:
            if controllers:
                roles, listeners = "broker", f"CLIENT://127.0.0.1:{self.ports[i]}"
            else:
                roles = "broker,controller"
                listeners = (
                    f"CLIENT://127.0.0.1:{self.ports[i]},"
                    f"CONTROLLER://127.0.0.1:{self.controller_ports[i]}"
                )
            self.write_node(
                base, i,
                f"process.roles={roles}\n"
                f"listeners={listeners}\n"
                f"advertised.listeners=CLIENT://127.0.0.1:{self.ports[i]}\n"
                "inter.broker.listener.name=CLIENT\n" + common + node_extra(i),
            )
        self.base, self.common = base, common
        for i in self.controller_ids + self.ids:
            self.start(i)
        for i in self.controller_ids + self.ids:
            self.wait_serving(i)

    def add_broker(self, i, before_start=lambda data: None):
        """A broker-only node (process.roles=broker) joining the running cluster;
        `before_start` gets its data directory first."""
        self.ports[i] = free_port()
        self.write_node(
            self.base, i,
            "process.roles=broker\n"
            f"listeners=CLIENT://127.0.0.1:{self.ports[i]}\n"
            f"advertised.listeners=CLIENT://127.0.0.1:{self.ports[i]}\n"
            "inter.broker.listener.name=CLIENT\n" + self.common,
        )
        self.data[i].mkdir(parents=True)
        before_start(self.data[i])
        self.ids.append(i)
        self.start(i)
        self.wait_serving(i)

    def write_node(self, base, i, properties_text):
        node = base / f"node{i}"
        node.mkdir()
        properties = node / "server.properties"
        properties.write_text(f"node.id={i}\nlog.dirs={node / 'data'}\n" + properties_text)
        self.properties[i] = properties
        self.data[i] = node / "data"
        self.logs[i] = node / "broker.log"

    def start(self, i):
        with open(self.logs[i], "ab") as log:
            self.procs[i] = subprocess.Popen(
                [str(strata_binary()), "serve", "--config", str(self.properties[i])],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def wait_serving(self, i):
        port = self.ports.get(i) or self.controller_ports[i]
        wait_until(
            lambda: f"127.0.0.1:{port}" in self.listening_lines(i)
            and (i in self.ports or "strata started" in self.log(i)),
            60,
            f"node {i} serving",
        )

    def kill(self, i):
        """SIGKILL: no shutdown, no final fsync or checkpoint."""
        os.kill(self.procs[i].pid, signal.SIGKILL)
        self.procs[i].wait(timeout=20)

    def restart(self, i):
        # Only this start's lines count as "listening".
        self.logs[i].write_bytes(b"")
        self.start(i)
        self.wait_serving(i)

    def admin(self):
        """An admin client, once the three brokers are registered."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, **self.client_conf})
        wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30, "three registered brokers")
        return admin

    def same_bytes(self, topic, partitions):
        """Whether every replica of each partition holds the same log, byte for byte."""
        for p in range(partitions):
            logs = [self.segment_bytes(i, topic, p) for i in self.ids]
            if not logs[0] or any(log != logs[0] for log in logs):
                return False
        return True

    def segment_bytes(self, i, topic, partition):
        """The partition's log on node i: its segment files, concatenated in offset order."""
        directory = Path(self.data[i]) / f"{topic}-{partition}"
        return b"".join(f.read_bytes() for f in sorted(directory.glob("*.log")))

    def listening_lines(self, i):
        assert self.procs[i].poll() is None, f"node {i} exited:\n{self.log(i)}"
        return "\n".join(l for l in self.log(i).splitlines() if "listening" in l)

    def bootstrap_of(self, nodes):
        return ",".join(f"127.0.0.1:{self.ports[i]}" for i in nodes)

    def log(self, i):
        return self.logs[i].read_text(errors="replace")

    @property
    def bootstrap(self):
        return ",".join(f"127.0.0.1:{self.ports[i]}" for i in self.ids)

    def stop(self):
        # Brokers first: their controlled shutdown needs the controllers.
        for group in (self.ids, self.controller_ids):
            procs = [self.procs[i] for i in group if i in self.procs]
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def spread_topic(cluster, prefix):
    """Once the three brokers are registered, a new 6-partition topic (replication factor 1);
    the admin client and the topic's name."""
    from confluent_kafka.admin import NewTopic

    admin = cluster.admin()
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])[topic].result(30)
    wait_until(
        lambda: len(admin.list_topics(topic, timeout=5).topics[topic].partitions) == 6,
        30,
        "the topic's partitions",
    )
    return admin, topic


def one_partition_rf3(cluster, prefix, min_insync):
    """Once the three brokers are registered, a new topic of one partition on three replicas
    with `min_insync` as its min.insync.replicas, its ISR whole; the admin client and the
    topic's name."""
    from confluent_kafka.admin import NewTopic

    admin = cluster.admin()
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=3, config={"min.insync.replicas": str(min_insync)})]
    )[topic].result(30)
    wait_until(
        lambda: partition_zero(admin, topic) is not None and len(partition_zero(admin, topic).isrs) == 3,
        30,
        "the partition with its ISR",
    )
    return admin, topic


def partition_zero(admin, topic):
    """Partition 0 of `topic` as the metadata describes it (None while unknown, or while the
    broker the client asked does not answer: a stopped one, say)."""
    from confluent_kafka import KafkaException

    try:
        return admin.list_topics(topic, timeout=5).topics[topic].partitions.get(0)
    except KafkaException:
        return None


class BackgroundProducer:
    """An idempotent acks=all confluent-kafka producer writing numbered records (`prefix` +
    number) to `topic` in a thread until stopped: the acknowledged values in order, the
    delivery errors, and the longest wait between two acknowledgements."""

    def __init__(self, bootstrap, topic, prefix, delivery_timeout_ms):
        import threading

        self.acked, self.failed, self.longest_gap = [], [], 0.0
        self.unflushed = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(bootstrap, topic, prefix.encode(), delivery_timeout_ms)
        )
        self._thread.start()

    def _run(self, bootstrap, topic, prefix, delivery_timeout_ms):
        from confluent_kafka import Producer

        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": delivery_timeout_ms,
            }
        )
        last = [time.monotonic()]

        def report(err, msg):
            if err:
                self.failed.append(err)
                return
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last[0])
            last[0] = now
            self.acked.append(msg.value())

        i = 0
        while not self._stop.is_set():
            try:
                producer.produce(topic, value=prefix + b"%d" % i, on_delivery=report)
                i += 1
            except BufferError:
                pass
            producer.poll(0.002)
        self.unflushed = producer.flush(delivery_timeout_ms / 1000 + 10)

    def stop(self):
        """Stops writing, waits for every delivery report, checks none failed."""
        self._stop.set()
        self._thread.join()
        assert self.unflushed == 0, f"{self.unflushed} records without a delivery report"
        assert not self.failed, self.failed[:3]


def read_all(bootstrap, topic, partitions, expected, timeout_s=60, **conf):
    """Every record of `topic` from the start (confluent-kafka, assigned partitions, from the
    leaders, with `conf`), until at least `expected` records were read and every partition is
    at its end."""
    from confluent_kafka import KafkaError, TopicPartition

    consumer = confluent_consumer(bootstrap, **conf)
    values, at_end = [], set()
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + timeout_s
        while len(values) < expected or len(at_end) < partitions:
            assert time.monotonic() < deadline, f"read {len(values)} of {expected}, at end {sorted(at_end)}"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                at_end.add(msg.partition())
                continue
            at_end.discard(msg.partition())
            values.append(msg.value())
    finally:
        consumer.close()
    return values


def test_clients_use_three_brokers_as_one_cluster(tmp_path):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import NewTopic

    cluster = Cluster(tmp_path)
    try:
        admin, topic = spread_topic(cluster, "cluster")
        leaders = {p.id: p.leader for p in admin.list_topics(topic, timeout=5).topics[topic].partitions.values()}
        assert sorted(leaders.values()) == [1, 1, 2, 2, 3, 3], leaders

        # More replicas than brokers is refused with Kafka's error.
        refused = admin.create_topics([NewTopic(topic + "-rf4", num_partitions=1, replication_factor=4)])
        try:
            refused[topic + "-rf4"].result(30)
            raise AssertionError("replication factor 4 was accepted on three brokers")
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
    from confluent_kafka import Consumer, Producer, TopicPartition

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

        seen = read_all(cluster.bootstrap, topic, 6, 0, **{"isolation.level": "read_committed"})
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


def test_followers_hold_the_leaders_log_byte_for_byte(tmp_path):
    """Replication factor 3: followers fetch from each partition's leader, and every replica's
    log is the leader's byte for byte. A follower killed with SIGKILL while the leader takes
    more writes comes back, catches up and again holds the same bytes; a consumer reads every
    record exactly once from the leaders."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import NewTopic

    cluster = Cluster(tmp_path)
    try:
        admin = cluster.admin()
        topic = f"rf3-{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=3)])[topic].result(30)
        partitions = wait_until(
            lambda: (lambda t: t.partitions if len(t.partitions) == 2 else None)(
                admin.list_topics(topic, timeout=5).topics[topic]
            ),
            30,
            "the topic's partitions",
        )
        for p in partitions.values():
            assert sorted(p.replicas) == [1, 2, 3], p.replicas
            assert sorted(p.isrs) == [1, 2, 3], p.isrs

        def same_bytes():
            return cluster.same_bytes(topic, 2)

        # acks=all: answered once the whole ISR has each batch.
        first = [{"key": b"k%d" % i, "value": b"a%d" % i} for i in range(2000)]
        assert_delivered(
            confluent_produce(cluster.bootstrap, topic, first, acks="all", **{"enable.idempotence": True})
        )
        wait_until(same_bytes, 30, "every replica holding the leader's log")

        # A follower of partition 0 is killed; the leader takes more writes (acks=1) meanwhile.
        leader = partitions[0].leader
        follower = next(i for i in cluster.ids if i != leader)
        cluster.kill(follower)
        second = [{"key": b"k%d" % i, "value": b"b%d" % i} for i in range(1000)]
        assert_delivered(confluent_produce(cluster.bootstrap, topic, second, acks="1"))
        cluster.restart(follower)
        wait_until(same_bytes, 60, "the returning follower caught up byte for byte")

        consumer = Consumer(
            {
                "bootstrap.servers": cluster.bootstrap,
                "group.id": f"g-{topic}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        seen = []
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(2)])
            deadline = time.monotonic() + 60
            while len(seen) < 3000:
                assert time.monotonic() < deadline, f"read {len(seen)} of 3000"
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                assert msg.error() is None, msg.error()
                seen.append(msg.value())
        finally:
            consumer.close()
        assert sorted(seen) == sorted(r["value"] for r in first + second)
    finally:
        cluster.stop()


def test_the_isr_shrinks_and_grows_back_and_min_insync_replicas_holds(tmp_path):
    """RF 3 with min.insync.replicas=3: a follower that stops fetching (SIGSTOP) leaves the ISR
    (replica.lag.time.max.ms, or fencing once its heartbeats stop); acks=all then fails with
    NOT_ENOUGH_REPLICAS while acks=1 still works. Resumed, it catches up, the leader proposes it
    back (AlterPartition), the ISR is whole again, acks=all succeeds and every replica holds the
    same bytes."""
    from confluent_kafka import KafkaError

    cluster = Cluster(tmp_path, extra="replica.lag.time.max.ms=3000\n")
    stopped = None
    try:
        admin, topic = one_partition_rf3(cluster, "isr", min_insync=3)

        def state():
            return partition_zero(admin, topic)

        records = [{"value": b"a%d" % i} for i in range(200)]
        assert_delivered(confluent_produce(cluster.bootstrap, topic, records, acks="all"))

        # A follower that is not the active controller stops answering.
        controller = admin.describe_cluster().result(10).controller.id
        leader = state().leader
        stopped = next(i for i in cluster.ids if i not in (leader, controller))
        os.kill(cluster.procs[stopped].pid, signal.SIGSTOP)
        wait_until(
            lambda: stopped not in getattr(state(), "isrs", [stopped]), 30, f"node {stopped} out of the ISR"
        )

        reports = confluent_produce(
            cluster.bootstrap, topic, [{"value": b"refused"}], acks="all", retries=0
        )
        assert reports[0][0] is not None and reports[0][0].code() == KafkaError.NOT_ENOUGH_REPLICAS, reports
        assert_delivered(confluent_produce(cluster.bootstrap, topic, [{"value": b"b%d" % i} for i in range(100)], acks="1"))

        os.kill(cluster.procs[stopped].pid, signal.SIGCONT)
        stopped = None
        wait_until(lambda: sorted(state().isrs) == [1, 2, 3], 60, "the follower back in the ISR")
        assert_delivered(confluent_produce(cluster.bootstrap, topic, [{"value": b"c%d" % i} for i in range(100)], acks="all"))

        def same_bytes():
            return cluster.same_bytes(topic, 1)

        wait_until(same_bytes, 30, "every replica holding the leader's log")
    finally:
        if stopped is not None:
            os.kill(cluster.procs[stopped].pid, signal.SIGCONT)
        cluster.stop()


def test_an_idempotent_producer_loses_nothing_when_a_leader_and_the_controller_die(tmp_path):
    """RF 3, min.insync.replicas=2: an idempotent acks=all producer writes continuously while
    the node that is both the active controller and the leader of some partitions is killed
    with SIGKILL. Its partitions move to other ISR members (it is fenced), the producer carries
    on, a consumer keeps receiving, topics can still be created; no acknowledged record is lost
    or written twice, and once the node is back every replica holds the same bytes."""
    from confluent_kafka.admin import NewTopic

    cluster = Cluster(tmp_path)
    try:
        admin = cluster.admin()
        topic = f"fail-{uuid.uuid4().hex[:8]}"
        admin.create_topics(
            [NewTopic(topic, num_partitions=6, replication_factor=3, config={"min.insync.replicas": "2"})]
        )[topic].result(30)
        wait_until(
            lambda: len(admin.list_topics(topic, timeout=5).topics[topic].partitions) == 6, 30, "the partitions"
        )

        writer = BackgroundProducer(cluster.bootstrap, topic, "v", 120000)
        acked = writer.acked
        try:
            wait_until(lambda: len(acked) >= 1000, 60, "the first 1000 records acknowledged")
            victim = admin.describe_cluster().result(10).controller.id
            leaders = {p.id: p.leader for p in admin.list_topics(topic, timeout=5).topics[topic].partitions.values()}
            assert victim in leaders.values(), leaders
            cluster.kill(victim)
            before = len(acked)
            # The victim's partitions move to another ISR member and the producer goes on.
            survivors = ",".join(f"127.0.0.1:{cluster.ports[i]}" for i in cluster.ids if i != victim)
            admin = admin_client(survivors)
            wait_until(
                lambda: all(
                    p.leader not in (victim, -1)
                    for p in admin.list_topics(topic, timeout=5).topics[topic].partitions.values()
                ),
                60,
                "every partition led by a survivor",
            )
            wait_until(lambda: len(acked) >= before + 2000, 90, "2000 more records acknowledged")
            created = f"{topic}-after"
            admin.create_topics([NewTopic(created, num_partitions=1, replication_factor=2)])[created].result(30)
        finally:
            writer.stop()

        values = read_all(survivors, topic, 6, len(acked))
        assert len(values) == len(set(values)), "a record was written twice"
        missing = set(acked) - set(values)
        assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:3]}"

        cluster.restart(victim)
        wait_until(
            lambda: all(
                sorted(p.isrs) == [1, 2, 3]
                for p in admin_client(cluster.bootstrap).list_topics(topic, timeout=5).topics[topic].partitions.values()
            ),
            60,
            "the returning node back in every ISR",
        )

        def same_bytes():
            return cluster.same_bytes(topic, 6)

        wait_until(same_bytes, 30, "every replica holding its leader's log")
    finally:
        cluster.stop()


def kafka_partition(key, partitions):
    """The internal-topic partition Kafka (and Strata) gives a group or transactional id:
    Java's String.hashCode, Utils.abs, modulo the partition count."""
    h = 0
    for unit in key.encode("utf-16-be").hex(" ", 2).split():
        h = (h * 31 + int(unit, 16)) & 0xFFFFFFFF
    if h >= 2**31:
        h -= 2**32
    return (0 if h == -(2**31) else abs(h)) % partitions


def test_groups_and_transactions_survive_the_loss_of_their_coordinator(tmp_path):
    """The internal topics are replicated (RF 3 by default on three nodes), so coordinators
    fail over with the leadership of their partitions. A group's committed offsets survive the
    SIGKILL of its coordinator's node: the next member resumes exactly where the group was.
    A transaction open when its coordinator's node is killed commits through the new
    coordinator, and read_committed consumers see every committed record once."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import NewTopic

    internal = 6
    cluster = Cluster(
        tmp_path,
        extra=f"offsets.topic.num.partitions={internal}\ntransaction.state.log.num.partitions={internal}\n",
    )
    try:
        admin = cluster.admin()
        topic = f"coord-{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])[topic].result(30)
        wait_until(
            lambda: len(admin.list_topics(topic, timeout=5).topics[topic].partitions) == 3, 30, "the partitions"
        )
        first = [{"value": b"a%d" % i} for i in range(300)]
        assert_delivered(confluent_produce(cluster.bootstrap, topic, first, acks="all"))

        group = f"g-{topic}"

        def member():
            consumer = Consumer(
                {
                    "bootstrap.servers": cluster.bootstrap,
                    "group.id": group,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                }
            )
            consumer.subscribe([topic])
            return consumer

        def consume(consumer, count, timeout_s=90):
            values, deadline = [], time.monotonic() + timeout_s
            while len(values) < count:
                assert time.monotonic() < deadline, f"read {len(values)} of {count}"
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                assert msg.error() is None, msg.error()
                values.append(msg.value())
            return values

        consumer = member()
        try:
            assert sorted(consume(consumer, 300)) == sorted(r["value"] for r in first)
            consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        offsets_topic = admin.list_topics("__consumer_offsets", timeout=5).topics["__consumer_offsets"]
        assert all(len(p.replicas) == 3 for p in offsets_topic.partitions.values())
        coordinator = offsets_topic.partitions[kafka_partition(group, internal)].leader
        assert admin.describe_consumer_groups([group])[group].result(10).coordinator.id == coordinator

        cluster.kill(coordinator)
        survivors = ",".join(f"127.0.0.1:{cluster.ports[i]}" for i in cluster.ids if i != coordinator)
        second = [{"value": b"b%d" % i} for i in range(100)]
        assert_delivered(confluent_produce(survivors, topic, second, acks="all", **{"message.timeout.ms": 90000}))
        consumer = member()
        try:
            # Exactly the records after the committed offsets.
            assert sorted(consume(consumer, 100)) == sorted(r["value"] for r in second)
            assert consumer.poll(2) is None
            consumer.commit(asynchronous=False)
            committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=30)
            assert sum(tp.offset for tp in committed) == 400, committed
        finally:
            consumer.close()

        cluster.restart(coordinator)
        wait_until(lambda: len(admin_client(cluster.bootstrap).list_topics(timeout=5).brokers) == 3, 60, "node back")

        # A transactional id whose coordinator is on a node other than the active controller
        # (so the quorum keeps its leader), with its transaction log partition in full sync.
        admin = admin_client(cluster.bootstrap)
        probe = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": f"probe-{topic}"})
        probe.init_transactions(60)
        controller = admin.describe_cluster().result(10).controller.id

        def txn_partitions():
            t = admin.list_topics("__transaction_state", timeout=5).topics["__transaction_state"]
            return t.partitions if len(t.partitions) == internal else None

        parts = wait_until(
            lambda: (lambda ps: ps if ps and all(sorted(p.isrs) == [1, 2, 3] for p in ps.values()) else None)(
                txn_partitions()
            ),
            60,
            "the transaction log in sync",
        )
        txn_id = next(
            f"tx-{topic}-{n}"
            for n in range(1000)
            if parts[kafka_partition(f"tx-{topic}-{n}", internal)].leader != controller
        )
        victim = parts[kafka_partition(txn_id, internal)].leader
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": txn_id, "linger.ms": 5})
        producer.init_transactions(60)
        producer.begin_transaction()
        for i in range(30):
            producer.produce(topic, value=b"t1-%d" % i, partition=i % 3)
        producer.commit_transaction(60)
        producer.begin_transaction()
        for i in range(30):
            producer.produce(topic, value=b"t2-%d" % i, partition=i % 3)
        producer.flush(30)
        cluster.kill(victim)
        producer.commit_transaction(120)

        survivors = ",".join(f"127.0.0.1:{cluster.ports[i]}" for i in cluster.ids if i != victim)
        reader = Consumer(
            {
                "bootstrap.servers": survivors,
                "group.id": f"rc-{topic}",
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        try:
            reader.assign([TopicPartition(topic, p, 0) for p in range(3)])
            values = [v for v in consume(reader, 460, 120) if v.startswith(b"t")]
        finally:
            reader.close()
        expected = sorted(b"t%d-%d" % (t, i) for t in (1, 2) for i in range(30))
        assert sorted(values) == expected
    finally:
        cluster.stop()


def test_a_rolling_restart_with_sigterm_loses_nothing(tmp_path):
    """RF 3, min.insync.replicas=2, an idempotent acks=all producer writing throughout: each
    node in turn gets SIGTERM (a controlled shutdown: it asks the controller to move its
    leaderships to other in-sync replicas before it exits), is started again and rejoins every
    ISR. No record is lost or written twice, and every record is acknowledged within the
    producer's delivery timeout (30 s here): a restart costs seconds, not timeouts. Afterwards
    the controller moves every leadership back to its preferred replica
    (auto.leader.rebalance.enable, checked every 2 s here, with no imbalance tolerated: by
    Kafka's 10 % a broker whose share of misplaced leaderships is small keeps them)."""
    from confluent_kafka.admin import NewTopic

    cluster = Cluster(
        tmp_path,
        extra="leader.imbalance.check.interval.seconds=2\nleader.imbalance.per.broker.percentage=0\n",
    )
    try:
        admin = cluster.admin()
        topic = f"roll-{uuid.uuid4().hex[:8]}"
        admin.create_topics(
            [NewTopic(topic, num_partitions=3, replication_factor=3, config={"min.insync.replicas": "2"})]
        )[topic].result(30)

        def partitions():
            return admin_client(cluster.bootstrap).list_topics(topic, timeout=5).topics[topic].partitions

        wait_until(lambda: len(partitions()) == 3, 30, "the partitions")
        writer = BackgroundProducer(cluster.bootstrap, topic, "r", 30000)
        acked = writer.acked
        try:
            wait_until(lambda: len(acked) >= 500, 60, "the first records acknowledged")
            for node in cluster.ids:
                before = len(acked)
                cluster.procs[node].send_signal(signal.SIGTERM)
                cluster.procs[node].wait(timeout=60)
                assert "controlled shutdown" in cluster.log(node), cluster.log(node)[-2000:]
                wait_until(lambda: len(acked) >= before + 200, 60, f"records acknowledged with node {node} down")
                cluster.restart(node)
                wait_until(
                    lambda: all(sorted(p.isrs) == [1, 2, 3] for p in partitions().values()),
                    60,
                    f"node {node} back in every ISR",
                )
            wait_until(lambda: len(acked) >= before + 400, 60, "records acknowledged after the last restart")
        finally:
            writer.stop()
        print(f"longest wait between acknowledgements: {writer.longest_gap:.2f} s over {len(acked)} records")
        values = read_all(cluster.bootstrap, topic, 3, len(acked))
        assert len(values) == len(set(values)), "a record was written twice"
        missing = set(acked) - set(values)
        assert not missing, f"{len(missing)} acknowledged records lost"
        wait_until(
            lambda: all(p.leader == p.replicas[0] for p in partitions().values()),
            30,
            lambda: f"every partition led by its preferred replica: {[(p.leader, p.replicas) for p in partitions().values()]}",
        )
    finally:
        cluster.stop()


def test_a_returning_leader_cuts_the_records_no_one_else_got(tmp_path):
    """A leader takes acks=1 writes its followers never fetch (a test knob holds their
    fetchers), then dies (SIGKILL). A follower takes over in a new leader epoch and takes other
    writes. The old leader comes back as a follower: the new leader tells it its log diverged,
    it cuts the records only it had, and every replica ends with the same bytes: one value for
    every offset below the high watermark."""
    from confluent_kafka.admin import NewTopic

    cluster = Cluster(tmp_path, extra="strata.test.replica.fetch.gate.file=fetch-gate\n")
    try:
        admin = cluster.admin()
        topic = f"cut-{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)])[topic].result(30)

        def state(bootstrap=cluster.bootstrap):
            t = admin_client(bootstrap).list_topics(topic, timeout=5).topics[topic]
            return t.partitions.get(0)

        wait_until(lambda: state() is not None and len(state().isrs) == 3, 30, "the partition")
        first = [{"value": b"a%d" % i} for i in range(100)]
        assert_delivered(confluent_produce(cluster.bootstrap, topic, first, acks="all"))

        def same_bytes():
            return cluster.same_bytes(topic, 1)

        wait_until(same_bytes, 30, "every replica holding the leader's log")
        old = state()
        followers = [i for i in cluster.ids if i != old.leader]
        for i in followers:
            (cluster.data[i] / "fetch-gate").write_bytes(b"")
        for i in followers:
            # A fetch already waiting at the leader ends first (replica.fetch.wait.max.ms).
            wait_until(lambda i=i: "fetch gate closed" in cluster.log(i), 30, f"node {i}'s fetcher held")
        lost = [{"value": b"lost%d" % i} for i in range(50)]
        assert_delivered(confluent_produce(cluster.bootstrap, topic, lost, acks="1"))
        cluster.kill(old.leader)
        for i in followers:
            (cluster.data[i] / "fetch-gate").unlink()

        survivors = ",".join(f"127.0.0.1:{cluster.ports[i]}" for i in followers)
        wait_until(lambda: state(survivors).leader in followers, 60, "a follower leading")
        second = [{"value": b"b%d" % i} for i in range(30)]
        assert_delivered(confluent_produce(survivors, topic, second, acks="all", **{"message.timeout.ms": 60000}))

        cluster.restart(old.leader)
        wait_until(same_bytes, 60, "the old leader cut back and caught up")
        assert "diverged" in cluster.log(old.leader), cluster.log(old.leader)[-3000:]
        values = read_all(cluster.bootstrap, topic, 1, 130)
        assert sorted(values) == sorted(r["value"] for r in first + second)
    finally:
        cluster.stop()


def test_with_two_of_three_brokers_down_acks_all_waits_for_one_to_return(tmp_path):
    """A controller-only node (process.roles=controller) and three broker-only nodes
    (process.roles=broker, following the metadata from the controller): RF 3 with
    min.insync.replicas=2. Two brokers SIGKILLed, among them the leader: the controller fences
    them, the survivor leads with an ISR of one, and acks=all fails with NOT_ENOUGH_REPLICAS
    while acks=1 still works. One returns, catches up and rejoins the ISR, and acks=all works
    again; kafka-python reads every acknowledged record once."""
    from confluent_kafka import KafkaError

    cluster = Cluster(
        tmp_path,
        controllers=1,
        extra="broker.session.timeout.ms=3000\nbroker.heartbeat.interval.ms=500\n"
        "replica.lag.time.max.ms=3000\n",
    )
    try:
        admin, topic = one_partition_rf3(cluster, "two-down", min_insync=2)

        def state(admin=admin):
            return partition_zero(admin, topic)

        # The controller-only node is no broker: clients see the three brokers only, and a
        # live broker as the controller (they cannot reach the quorum's leader).
        described = admin.describe_cluster().result(10)
        assert sorted(n.id for n in described.nodes) == [1, 2, 3], described.nodes
        assert described.controller.id in (1, 2, 3), described.controller
        # DescribeQuorum (strata cluster describe): the controller leads, the brokers observe.
        quorum = subprocess.run(
            [str(strata_binary()), "cluster", "describe", "--bootstrap-server", cluster.bootstrap],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        roles = {tuple(line.split()[:2]) for line in quorum.splitlines() if line.split()[1:2] in (["leader"], ["observer"])}
        assert roles == {("101", "leader"), ("1", "observer"), ("2", "observer"), ("3", "observer")}, quorum
        assert_delivered(confluent_produce(cluster.bootstrap, topic, [{"value": b"a%d" % i} for i in range(200)], acks="all"))

        leader = state().leader
        survivor = next(i for i in cluster.ids if i != leader)
        down = [i for i in cluster.ids if i != survivor]
        for i in down:
            cluster.kill(i)
        survivors = cluster.bootstrap_of([survivor])
        admin = admin_client(survivors)
        wait_until(
            lambda: state(admin) is not None and state(admin).leader == survivor and state(admin).isrs == [survivor],
            30,
            f"node {survivor} leading alone",
        )
        reports = confluent_produce(survivors, topic, [{"value": b"refused"}], acks="all", retries=0)
        assert reports[0][0] is not None and reports[0][0].code() == KafkaError.NOT_ENOUGH_REPLICAS, reports
        assert_delivered(confluent_produce(survivors, topic, [{"value": b"b%d" % i} for i in range(100)], acks="1"))

        back = down[0]
        cluster.restart(back)
        wait_until(lambda: sorted(state(admin).isrs) == sorted([survivor, back]), 60, f"node {back} back in the ISR")
        assert_delivered(confluent_produce(survivors, topic, [{"value": b"c%d" % i} for i in range(100)], acks="all"))

        values = [r.value for r in kafka_python_consume(cluster.bootstrap_of([survivor, back]), topic, timeout_s=60)]
        expected = [b"a%d" % i for i in range(200)] + [b"b%d" % i for i in range(100)] + [b"c%d" % i for i in range(100)]
        assert values == expected, (len(values), values[:3], values[-3:])
    finally:
        cluster.stop()


def test_a_fourth_broker_joins_and_a_reassignment_moves_a_partition_to_it(tmp_path):
    """Three combined nodes, RF 3, an idempotent acks=all producer writing throughout. A
    fourth, broker-only node joins; kafka-python's AlterPartitionReassignments moves the
    partition from its leader to the new broker. While the new replica is held back (test
    knob: its fetcher waits), ListPartitionReassignments shows the move in progress with
    the adding and removing replicas; released, it catches up, joins the ISR, the move
    completes (replicas = the target, a new leader), the old leader deletes its copy, the
    producer never fails, and every acknowledged record is read once, from a log that the
    three new replicas hold byte for byte."""
    from kafka.admin import KafkaAdminClient
    from kafka.protocol.admin import (
        AlterPartitionReassignmentsRequest_v0,
        ListPartitionReassignmentsRequest_v0,
    )

    cluster = Cluster(tmp_path, extra="strata.test.replica.fetch.gate.file=fetch-gate\n")
    writer = None
    try:
        admin, topic = one_partition_rf3(cluster, "moved", min_insync=2)
        writer = BackgroundProducer(cluster.bootstrap, topic, "m", 60000)
        acked = writer.acked
        wait_until(lambda: len(acked) >= 300, 60, "records acknowledged before the move")

        cluster.add_broker(4, before_start=lambda data: (data / "fetch-gate").write_bytes(b""))
        wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 4, 30, "four brokers")
        leader = partition_zero(admin, topic).leader
        target = [4] + [i for i in (1, 2, 3) if i != leader]

        kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, client_id="strata-e2e")
        try:
            def send(request):
                return kp.send_request(request, node_id=kp._controller_id)

            answer = send(AlterPartitionReassignmentsRequest_v0(
                timeout_ms=30000, topics=[(topic, [(0, target, {})], {})], tags={}
            ))
            assert answer.error_code == 0, answer
            assert [(p[0], p[1]) for t in answer.responses for p in t[1]] == [(0, 0)], answer

            def ongoing():
                listed = send(ListPartitionReassignmentsRequest_v0(timeout_ms=30000, topics=None, tags={}))
                assert listed.error_code == 0, listed
                return {(t[0], p[0]): (p[1], p[2], p[3]) for t in listed.topics for p in t[1]}

            # Held back, the move stays in progress: the target, then the leaving replica.
            assert ongoing() == {(topic, 0): (target + [leader], [4], [leader])}, ongoing()
            assert sorted(partition_zero(admin, topic).replicas) == [1, 2, 3, 4]
            wait_until(lambda: "fetch gate closed" in cluster.log(4), 30, "the new replica held back")
            before = len(acked)
            (cluster.data[4] / "fetch-gate").unlink()

            wait_until(lambda: partition_zero(admin, topic).replicas == target, 60, "the move completed")
            assert ongoing() == {}, ongoing()
        finally:
            kp.close()
        moved = partition_zero(admin, topic)
        assert moved.leader in target and sorted(moved.isrs) == sorted(target), moved
        wait_until(
            lambda: not (cluster.data[leader] / f"{topic}-0").exists(), 30, "the old leader's copy deleted"
        )
        wait_until(lambda: len(acked) >= before + 500, 60, "500 more records acknowledged after the move")
        writer, stopping = None, writer
        stopping.stop()

        values = read_all(cluster.bootstrap_of(target), topic, 1, len(acked))
        assert values == acked, (len(values), len(acked))

        def same_bytes():
            logs = [cluster.segment_bytes(i, topic, 0) for i in target]
            return bool(logs[0]) and all(log == logs[0] for log in logs)

        wait_until(same_bytes, 30, "the three new replicas holding the same log")
    finally:
        if writer is not None:
            # Failing already: stop writing without checking the deliveries.
            writer._stop.set()
            writer._thread.join()
        cluster.stop()


def test_unclean_leader_election_only_where_enabled(tmp_path):
    """Two topics on the same two replicas (brokers 2 and 3, a controller-only node and broker
    1 beside them), one with unclean.leader.election.enable=true. Broker 3 dies (SIGKILL) and
    leaves both ISRs; records are written to broker 2 alone; broker 2 dies too: both
    partitions go offline, their ISR holding only broker 2. Broker 3 starts again: the topic that
    allows it elects broker 3 (the records only broker 2 had are lost, as Kafka's unclean
    election loses them) and takes writes; the other stays offline until the setting is turned
    on for it with IncrementalAlterConfigs, which elects broker 3 there too."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    cluster = Cluster(
        tmp_path,
        controllers=1,
        extra="broker.session.timeout.ms=3000\nbroker.heartbeat.interval.ms=500\n"
        "replica.lag.time.max.ms=3000\n",
    )
    try:
        admin = cluster.admin()
        suffix = uuid.uuid4().hex[:8]
        unclean, clean = f"unclean-{suffix}", f"clean-{suffix}"
        # kafka-python sends the manual assignment (confluent-kafka's librdkafka refuses a
        # replica assignment without a partition count in this version).
        from kafka.admin import KafkaAdminClient, NewTopic as KafkaNewTopic

        kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, client_id="strata-e2e")
        try:
            kp.create_topics([
                KafkaNewTopic(unclean, -1, -1, replica_assignments={0: [2, 3]},
                              topic_configs={"unclean.leader.election.enable": "true"}),
                KafkaNewTopic(clean, -1, -1, replica_assignments={0: [2, 3]}),
            ])
        finally:
            kp.close()

        def state(topic, admin=admin):
            return partition_zero(admin, topic)

        for topic in (unclean, clean):
            wait_until(lambda t=topic: state(t) is not None and sorted(state(t).isrs) == [2, 3], 30, f"{topic}'s ISR")
            assert_delivered(confluent_produce(cluster.bootstrap, topic, [{"value": b"both"}], acks="all"))

        cluster.kill(3)
        for topic in (unclean, clean):
            wait_until(
                lambda t=topic: getattr(state(t), "isrs", None) == [2], 30, f"{topic}'s ISR without broker 3"
            )
            assert_delivered(confluent_produce(cluster.bootstrap, topic, [{"value": b"only-2"}], acks="all"))
        cluster.kill(2)
        survivors = cluster.bootstrap_of([1])
        admin = admin_client(survivors)
        for topic in (unclean, clean):
            wait_until(lambda t=topic: state(t, admin).leader == -1, 30, f"{topic} offline")

        cluster.restart(3)
        wait_until(lambda: state(unclean, admin).leader == 3, 30, "broker 3 elected uncleanly")
        assert state(clean, admin).leader == -1, "no unclean election where it is not enabled"
        reports = confluent_produce(survivors, clean, [{"value": b"x"}], acks="all", retries=0)
        assert reports[0][0] is not None and reports[0][0].code() in (
            KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError._MSG_TIMED_OUT,
        ), reports
        assert_delivered(confluent_produce(cluster.bootstrap_of([1, 3]), unclean, [{"value": b"after"}], acks="all"))
        values = [r.value for r in kafka_python_consume(cluster.bootstrap_of([1, 3]), unclean, timeout_s=60)]
        assert values == [b"both", b"after"], values

        resource = ConfigResource(
            ConfigResource.Type.TOPIC, clean,
            incremental_configs=[ConfigEntry("unclean.leader.election.enable", "true",
                                             incremental_operation=AlterConfigOpType.SET)],
        )
        admin.incremental_alter_configs([resource])[resource].result(30)
        wait_until(lambda: state(clean, admin).leader == 3, 30, "broker 3 elected once it is allowed")
        assert_delivered(confluent_produce(cluster.bootstrap_of([1, 3]), clean, [{"value": b"after"}], acks="all"))
    finally:
        cluster.stop()


def test_a_consumer_fetches_from_the_replica_in_its_rack(tmp_path):
    """KIP-392: three brokers in racks r1, r2, r3 with Kafka's RackAwareReplicaSelector; a
    partition on all three. A confluent-kafka consumer with client.rack set to a follower's
    rack is told by the leader to fetch from that follower, and reads every record from it
    (librdkafka's own statistics count its Fetch requests per broker); a consumer without
    client.rack fetches from the leader only. Records written after the first read arrive
    through the follower too."""
    import json

    from confluent_kafka import Consumer, TopicPartition

    cluster = Cluster(
        tmp_path,
        extra="replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector\n",
        node_extra=lambda i: f"broker.rack=r{i}\n",
    )
    try:
        admin, topic = one_partition_rf3(cluster, "racks", min_insync=2)
        leader = partition_zero(admin, topic).leader
        follower = next(i for i in cluster.ids if i != leader)
        assert_delivered(confluent_produce(cluster.bootstrap, topic, [{"value": b"a%d" % i} for i in range(200)], acks="all"))

        def read(rack, count, then=None):
            """Reads `count` records from the start; returns them and the Fetch requests
            librdkafka sent to each broker (by node id)."""
            stats = []
            conf = {
                "bootstrap.servers": cluster.bootstrap,
                "group.id": f"g-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "statistics.interval.ms": 200,
                "stats_cb": stats.append,
            }
            if rack:
                conf["client.rack"] = rack
            consumer = Consumer(conf)
            values = []
            try:
                consumer.assign([TopicPartition(topic, 0, 0)])
                deadline = time.monotonic() + 60
                while len(values) < count:
                    assert time.monotonic() < deadline, f"read {len(values)} of {count}"
                    msg = consumer.poll(0.5)
                    if msg is not None and not msg.error():
                        values.append(msg.value())
                        if len(values) == 200 and then:
                            then()
                # One more statistics report after the last read (reports come with poll).
                seen = len(stats)

                def reported():
                    consumer.poll(0.1)
                    return len(stats) > seen

                wait_until(reported, 10, "a statistics report")
            finally:
                consumer.close()
            fetches = {}
            for b in json.loads(stats[-1])["brokers"].values():
                if b["nodeid"] >= 0:
                    fetches[b["nodeid"]] = b["req"].get("Fetch", 0)
            return values, fetches

        values, fetches = read(f"r{follower}", 300, then=lambda: assert_delivered(
            confluent_produce(cluster.bootstrap, topic, [{"value": b"b%d" % i} for i in range(100)], acks="all")
        ))
        assert values == [b"a%d" % i for i in range(200)] + [b"b%d" % i for i in range(100)]
        assert fetches.get(follower, 0) > 0, f"no fetch reached the follower {follower}: {fetches}"
        # The leader answered once or twice (to name the follower); the follower served the rest.
        assert fetches.get(follower, 0) > fetches.get(leader, 0), fetches

        values, fetches = read(None, 300)
        assert len(values) == 300
        assert fetches.get(follower, 0) == 0 and fetches.get(leader, 0) > 0, fetches
    finally:
        cluster.stop()


@pytest.mark.parametrize("security", ["sasl_ssl", "mutual_tls"])
def test_brokers_replicate_and_write_markers_over_a_secured_listener(tmp_path, security):
    """The only client listener, also the inter-broker one, is SASL_SSL with PLAIN (the
    brokers log in as `admin`; certificates name 127.0.0.1 and are checked against it) or SSL
    with client certificates required (the brokers present their own certificates, which name
    no host: ssl.endpoint.identification.algorithm is empty), and the StandardAuthorizer lets
    only the super users act for the cluster: followers fetch over it (acks=all answered, the
    three logs byte for byte), and a transaction over partitions led by all three brokers has
    its markers written over it."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import NewTopic

    pki = TestPki(tmp_path / "pki")
    names = security == "sasl_ssl"
    certs = {i: pki.issue(f"broker{i}", f"/CN=broker{i}", server=True, client=True, names=names) for i in (1, 2, 3)}
    extra = (
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,"
        + ("CLIENT:SASL_SSL\n" if security == "sasl_ssl" else "CLIENT:SSL\n")
        + "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n"
        + f"ssl.truststore.type=PEM\nssl.truststore.location={pki.ca}\nssl.keystore.type=PEM\n"
    )
    if security == "sasl_ssl":
        extra += (
            "sasl.enabled.mechanisms=PLAIN\nsasl.mechanism.inter.broker.protocol=PLAIN\n"
            "listener.name.client.plain.sasl.jaas.config=org.apache.kafka.common.security.plain."
            'PlainLoginModule required username="admin" password="admin-secret" '
            'user_admin="admin-secret";\n'
            "super.users=User:admin\n"
        )
        client_conf = {"security.protocol": "sasl_ssl", "sasl.mechanism": "PLAIN", "sasl.username": "admin",
                       "sasl.password": "admin-secret", "ssl.ca.location": str(pki.ca)}
    else:
        admin_cert = pki.issue("admin", "/CN=admin")
        extra += (
            "ssl.client.auth=required\nssl.endpoint.identification.algorithm=\n"
            "super.users=User:CN=admin;User:CN=broker1;User:CN=broker2;User:CN=broker3\n"
        )
        client_conf = {"security.protocol": "ssl", "ssl.ca.location": str(pki.ca),
                       "ssl.endpoint.identification.algorithm": "none",
                       "ssl.certificate.location": str(admin_cert.cert), "ssl.key.location": str(admin_cert.key)}
    cluster = Cluster(
        tmp_path, extra=extra, client_conf=client_conf,
        node_extra=lambda i: f"ssl.keystore.location={certs[i].keystore}\n",
    )
    try:
        admin = cluster.admin()
        topic = f"secure-{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])[topic].result(30)
        wait_until(
            lambda: (lambda t: len(t.partitions) == 3 and all(len(p.isrs) == 3 for p in t.partitions.values()))(
                admin.list_topics(topic, timeout=5).topics[topic]
            ),
            30,
            "the topic's partitions with their ISRs",
        )
        leaders = {p.leader for p in admin.list_topics(topic, timeout=5).topics[topic].partitions.values()}

        # acks=all: answered once the followers fetched each batch over the secured listener.
        records = [{"value": b"r%d" % i, "partition": i % 3} for i in range(300)]
        assert_delivered(
            confluent_produce(cluster.bootstrap, topic, records, acks="all",
                              **{"enable.idempotence": True}, **client_conf)
        )
        wait_until(lambda: cluster.same_bytes(topic, 3), 30, "every replica holding the leader's log")

        # Markers to the partitions' leaders go over the secured listener too.
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": f"tx-{topic}",
                             "linger.ms": 5, **client_conf})
        producer.init_transactions(30)
        producer.begin_transaction()
        for p in range(3):
            for i in range(5):
                producer.produce(topic, value=b"t-p%d-%d" % (p, i), partition=p)
        producer.commit_transaction(30)
        seen = read_all(cluster.bootstrap, topic, 3, 315, **{"isolation.level": "read_committed"}, **client_conf)
        assert sorted(seen) == sorted([r["value"] for r in records] + [b"t-p%d-%d" % (p, i) for p in range(3) for i in range(5)])
        assert len(leaders) >= 2, f"the partitions' leaders: {leaders}"
        wait_until(lambda: cluster.same_bytes(topic, 3), 30, "every replica holding the markers")
    finally:
        cluster.stop()
