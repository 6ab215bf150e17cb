"""Consumer groups with the classic protocol (issue 4), proven with real clients against a real
`strata` process: confluent-kafka (librdkafka) members polled by their own threads, a member in
a subprocess killed with SIGKILL, kafka-python's KafkaConsumer and low-level client, the
confluent AdminClient and `kcat -G`.

Every broker runs with GROUP_OVERRIDES (no initial rebalance delay, 1 s minimum session
timeout). Members use a 6 s session and 500 ms heartbeats, so a rebalance caused by a join or a
leave settles within about a second and one caused by a crash within about 7 s.

Members process a record by noting its (partition, offset) and then committing it synchronously
before polling again, so with the eager assignors librdkafka uses by default (range,
roundrobin) every record a member processed is committed before its partitions are revoked:
any (partition, offset) processed twice is a broker bug, except records a crashed member
processed after its last commit.
"""

import json
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from strata_e2e import (
    GROUP_OVERRIDES,
    GroupMember,
    admin_client,
    assert_delivered,
    confluent_consumer,
    confluent_produce,
    create_topic,
    kcat,
    wait_until,
)

SESSION_MS = 6000


@pytest.fixture
def gbroker(broker_factory):
    """A broker with the consumer-group test overrides."""
    return broker_factory(GROUP_OVERRIDES)


def group_name(prefix="g"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def produce_to_partitions(bootstrap, topic, partitions, per_partition, tag):
    """Produce `per_partition` records to each partition; returns the set of (partition, offset)."""
    records = [
        {"partition": p, "key": f"k{p}".encode(), "value": f"{tag}-p{p}-{i}".encode()}
        for i in range(per_partition)
        for p in partitions
    ]
    reports = confluent_produce(bootstrap, topic, records)
    assert_delivered(reports)
    return {(partition, offset) for _, partition, offset in reports}


def owned_by(members):
    return {m.name: m.owned() for m in members}


def assert_partitioned(members, partitions):
    """The members' current assignments are pairwise disjoint and cover `partitions`."""
    owned = owned_by(members)
    seen = {}
    for name, parts in owned.items():
        for p in parts:
            assert p not in seen, f"partition {p} owned by both {seen[p]} and {name}: {owned}"
            seen[p] = name
    assert set(seen) == set(partitions), f"assignments {owned} do not cover {sorted(partitions)}"


def wait_partitioned(members, partitions, timeout_s=20, each_nonempty=True):
    """Wait until the members' assignments are disjoint, cover `partitions` and (by default)
    give every member at least one partition (i.e. the group is stable with all of them)."""

    def ok():
        owned = owned_by(members)
        flat = [p for parts in owned.values() for p in parts]
        if len(flat) != len(set(flat)) or set(flat) != set(partitions):
            return False
        return not each_nonempty or all(owned.values())

    wait_until(ok, timeout_s, lambda: f"a stable assignment of {sorted(partitions)}: {owned_by(members)}")
    assert_partitioned(members, partitions)


def wait_consumed(members, expected, timeout_s=20, extra=()):
    """Wait until the union of what `members` (and the sets in `extra`) consumed includes
    every (partition, offset) in `expected`."""

    def missing():
        got = set().union(*(m.consumed_set() for m in members), *extra)
        return expected - got

    wait_until(lambda: not missing(), timeout_s,
               lambda: f"{len(missing())} records, e.g. {sorted(missing())[:10]}")


def assert_ownership_log_disjoint(events, names):
    """Replay the assign/revoke callbacks of the in-process members in the order they ran:
    at no point did two of `names` own the same partition (eager rebalancing revokes before
    rejoining, so a partition is only assigned once its previous owner gave it up)."""
    owned = {name: set() for name in names}
    for seq, name, kind, parts in sorted(events):
        if name not in owned:
            continue
        if kind == "assign":
            for other, other_parts in owned.items():
                overlap = other_parts & parts if other != name else set()
                assert not overlap, (
                    f"event {seq}: {name} was assigned {sorted(parts)} while {other} still "
                    f"owned {sorted(overlap)}; log: {sorted(events)}"
                )
            owned[name] |= parts
        else:
            owned[name] -= parts


def assert_member_health(*members):
    for m in members:
        assert not m.errors, f"{m.name} saw consumer errors: {m.errors}"
        assert not m.commit_errors, f"{m.name} had failed synchronous commits: {m.commit_errors[:5]}"


# ---- three members share six partitions ------------------------------------------------------


def test_three_members_share_six_partitions_exactly_once(gbroker, topic):
    partitions = range(6)
    create_topic(gbroker.bootstrap, topic, partitions=6)
    group = group_name()
    events, lock = [], threading.Lock()
    members = [
        GroupMember(f"m{i}", gbroker.bootstrap, group, [topic], events, lock).start()
        for i in range(3)
    ]
    try:
        wait_partitioned(members, partitions)
        assert sorted(len(m.owned()) for m in members) == [2, 2, 2], owned_by(members)

        produced = produce_to_partitions(gbroker.bootstrap, topic, partitions, 50, "a")
        wait_consumed(members, produced)
        time.sleep(0.5)  # anything read twice would arrive now

        all_consumed = [po for m in members for po in m.consumed]
        assert len(all_consumed) == len(set(all_consumed)) == len(produced) == 300, (
            f"{len(all_consumed)} records consumed, {len(set(all_consumed))} distinct, "
            f"{len(produced)} produced"
        )
        assert set(all_consumed) == produced
        for m in members:
            read_from = {p for p, _ in m.consumed}
            assert read_from <= m.owned(), f"{m.name} read {read_from} but owns {m.owned()}"
        assert_partitioned(members, partitions)
        assert_ownership_log_disjoint(events, [m.name for m in members])
        assert_member_health(*members)
    finally:
        for m in members:
            m.stop()


# ---- join, clean leave and crash -------------------------------------------------------------

# A group member in its own process (so it can be SIGKILLed). It prints one JSON object per
# line: its assignments, each record it processes ("consumed", then "committed" once the
# synchronous commit returned), and after `limit` committed records it reads one more record
# WITHOUT committing it ("uncommitted"), prints "paused" and stops polling (librdkafka keeps
# heartbeating from its own thread, so the group still counts it as alive until it is killed).
CRASH_MEMBER = r"""
import json, sys, time
from confluent_kafka import Consumer, KafkaError

bootstrap, group, topic, limit, session_ms = sys.argv[1:6]
limit = int(limit)

def out(**kw):
    print(json.dumps(kw), flush=True)

consumer = Consumer({
    "bootstrap.servers": bootstrap, "group.id": group, "client.id": "crasher",
    "enable.auto.commit": False, "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest", "session.timeout.ms": int(session_ms),
    "heartbeat.interval.ms": 500,
})
consumer.subscribe(
    [topic],
    on_assign=lambda c, ps: out(assigned=sorted(p.partition for p in ps)),
    on_revoke=lambda c, ps: out(revoked=sorted(p.partition for p in ps)),
)
processed = 0
while True:
    msg = consumer.poll(0.1)
    if msg is None:
        continue
    if msg.error():
        if msg.error().code() != KafkaError._PARTITION_EOF:
            out(error=str(msg.error()))
        continue
    p, o = msg.partition(), msg.offset()
    if processed < limit:
        out(consumed=[p, o])
        consumer.commit(message=msg, asynchronous=False)
        out(committed=[p, o + 1])
        processed += 1
    else:
        out(uncommitted=[p, o])
        out(paused=True)
        break
while True:
    time.sleep(1)
"""


class CrashMember:
    def __init__(self, bootstrap, group, topic, limit):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_MEMBER, bootstrap, group, topic, str(limit), str(SESSION_MS)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines = []
        self.raw = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.raw.append(line.rstrip())
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass  # librdkafka log lines

    def items(self, key):
        return [tuple(x[key]) if isinstance(x[key], list) else x[key] for x in list(self.lines) if key in x]

    def assignment(self):
        current = set()
        for x in list(self.lines):
            if "assigned" in x:
                current |= set(x["assigned"])
            if "revoked" in x:
                current -= set(x["revoked"])
        return current

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(5)

    def output(self):
        return "\n".join(self.raw[-40:])


@pytest.mark.timeout(90)
def test_join_leave_and_crash_each_rebalance(gbroker, topic):
    partitions = set(range(6))
    create_topic(gbroker.bootstrap, topic, partitions=6)
    group = group_name()
    events, lock = [], threading.Lock()
    a = GroupMember("a", gbroker.bootstrap, group, [topic], events, lock).start()
    b = c = None
    produced = set()
    try:
        # 1. One member owns everything.
        wait_partitioned([a], partitions)
        produced |= produce_to_partitions(gbroker.bootstrap, topic, partitions, 10, "one")
        wait_consumed([a], produced)

        # 2. A member joins: the two split the partitions and read only what is new.
        b = GroupMember("b", gbroker.bootstrap, group, [topic], events, lock).start()
        wait_partitioned([a, b], partitions)
        produced |= produce_to_partitions(gbroker.bootstrap, topic, partitions, 10, "two")
        wait_consumed([a, b], produced)

        # 3. A third member in a subprocess joins, processes and commits 5 records, reads one
        #    more without committing it, then stops polling; it is killed with SIGKILL.
        c = CrashMember(gbroker.bootstrap, group, topic, limit=5)
        wait_until(
            lambda: c.assignment() and (a.owned() | b.owned()) == partitions - c.assignment()
            and a.owned() and b.owned() and not (a.owned() & b.owned()),
            20, lambda: f"a 3-way split: a={a.owned()} b={b.owned()} crasher={c.assignment()}\n{c.output()}",
        )
        c_parts = c.assignment()
        assert len(c_parts) == 2, f"crasher owns {c_parts}\n{c.output()}"
        produced |= produce_to_partitions(gbroker.bootstrap, topic, partitions, 10, "three")
        wait_until(lambda: c.items("paused"), 20, lambda: f"the crasher to pause:\n{c.output()}")
        c_consumed = set(c.items("consumed"))
        c_uncommitted = set(c.items("uncommitted"))
        assert len(c_consumed) == 5 and len(c_uncommitted) == 1, c.output()
        c_committed = {}
        for p, next_offset in c.items("committed"):
            c_committed[p] = max(c_committed.get(p, 0), next_offset)
        # a and b read everything on their own partitions (the crasher's are not theirs yet).
        theirs = {(p, o) for p, o in produced if p not in c_parts}
        wait_consumed([a, b], theirs)
        a_before, b_before = a.consumed_set(), b.consumed_set()

        killed_at = time.monotonic()
        c.kill()
        # The session expires (6 s) and a and b take over the crasher's partitions ...
        wait_until(lambda: (a.owned() | b.owned()) == partitions and not (a.owned() & b.owned())
                   and bool((a.owned() | b.owned()) & c_parts),
                   SESSION_MS / 1000 + 15,
                   lambda: f"a and b to own all partitions: a={a.owned()} b={b.owned()}")
        noticed_after = time.monotonic() - killed_at
        # The last heartbeat was at most 0.5 s before the kill: the session ends >= 5.5 s later.
        assert noticed_after > 4, f"the crash was noticed after only {noticed_after:.1f} s"
        assert_partitioned([a, b], partitions)
        # ... and read them from the crasher's committed offsets: its committed records are
        # not read again, its one uncommitted record is.
        wait_consumed([a, b], produced, extra=[c_consumed])
        taken_over = {(p, o) for m in (a, b) for p, o in m.consumed_set()
                      - (a_before if m is a else b_before) if p in c_parts}
        (up, uo), = c_uncommitted
        for p in c_parts:
            # Each partition held 20 records before the third batch, all committed by a or b.
            first = min(o for q, o in taken_over if q == p)
            assert first == c_committed.get(p, 20), (
                f"partition {p}: survivors resumed at {first}, the crasher's committed offset "
                f"is {c_committed.get(p, 20)}"
            )
            if p == up:
                assert first == uo, f"partition {p}: survivors resumed at {first}, not at {uo}"
        assert not (taken_over & c_consumed), (
            f"records the crasher committed were read again: {sorted(taken_over & c_consumed)}"
        )

        # 4. b leaves cleanly: a owns everything at once (no session timeout to wait for).
        left_at = time.monotonic()
        b.stop()
        wait_partitioned([a], partitions, timeout_s=10)
        assert time.monotonic() - left_at < SESSION_MS / 1000, "a clean leave waited for the session timeout"
        produced |= produce_to_partitions(gbroker.bootstrap, topic, partitions, 10, "four")
        wait_consumed([a], produced, extra=[c_consumed, b.consumed_set()])
        time.sleep(0.5)

        # Across the whole test: every record read at least once; the only record read twice
        # is the one the crasher processed but never committed.
        counts = {}
        for po in a.consumed + b.consumed + sorted(c_consumed | c_uncommitted):
            counts[po] = counts.get(po, 0) + 1
        assert set(counts) == produced, f"read {len(counts)} distinct records of {len(produced)}"
        twice = {po for po, n in counts.items() if n > 1}
        assert twice == c_uncommitted, (
            f"read more than once: {sorted(twice)}; only the crasher's uncommitted "
            f"{sorted(c_uncommitted)} may be (and must be, by a survivor)"
        )
        assert max(counts.values()) == 2
        assert_ownership_log_disjoint(events, ["a", "b"])
        assert_member_health(a, b)
    finally:
        if c is not None:
            c.kill()
        for m in (a, b):
            if m is not None:
                m.stop()


# ---- committed offsets survive client and broker restarts ------------------------------------


def test_offsets_resume_after_client_restart_kafka_python(gbroker, topic):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    create_topic(gbroker.bootstrap, topic, partitions=2)
    produced = produce_to_partitions(gbroker.bootstrap, topic, [0, 1], 20, "r")
    group = group_name()
    conf = dict(
        bootstrap_servers=gbroker.bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=SESSION_MS, heartbeat_interval_ms=500,
        client_id="kp-restart",
    )
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]

    def read(consumer, until, timeout_s=20):
        got = []
        deadline = time.monotonic() + timeout_s
        while not until(got):
            assert time.monotonic() < deadline, f"kafka-python read only {len(got)} records"
            for recs in consumer.poll(timeout_ms=200).values():
                got.extend((r.partition, r.offset) for r in recs)
        return got

    first = KafkaConsumer(topic, **conf)
    try:
        got = read(first, lambda g: len(g) >= 40)
        assert set(got) == produced
        # Process only offsets < 7 of partition 0 and < 12 of partition 1: commit those
        # positions (with metadata strings, round-tripped below) and stop.
        first.commit({
            tps[0]: OffsetAndMetadata(7, "p0-meta", -1),
            tps[1]: OffsetAndMetadata(12, "p1-meta", -1),
        })
        assert first.committed(tps[0]) == 7 and first.committed(tps[1]) == 12
    finally:
        first.close(autocommit=False)

    second = KafkaConsumer(topic, **conf)
    try:
        got = read(second, lambda g: len(g) >= (20 - 7) + (20 - 12))
        time.sleep(0.5)
        got += [(r.partition, r.offset) for recs in second.poll(timeout_ms=300).values() for r in recs]
        assert sorted(got) == sorted([(0, o) for o in range(7, 20)] + [(1, o) for o in range(12, 20)]), (
            f"the restarted consumer read {sorted(got)}"
        )
        meta0 = second.committed(tps[0], metadata=True)
        assert (meta0.offset, meta0.metadata) == (7, "p0-meta"), meta0
        meta1 = second.committed(tps[1], metadata=True)
        assert (meta1.offset, meta1.metadata) == (12, "p1-meta"), meta1
    finally:
        second.close(autocommit=False)


def test_offsets_survive_broker_kill9_confluent(gbroker, topic):
    from confluent_kafka import KafkaError, TopicPartition

    create_topic(gbroker.bootstrap, topic, partitions=3)
    produced = produce_to_partitions(gbroker.bootstrap, topic, range(3), 10, "k")
    group = group_name()
    events, lock = [], threading.Lock()
    m = GroupMember("before-kill", gbroker.bootstrap, group, [topic], events, lock, commit=False).start()
    try:
        wait_consumed([m], produced)
    finally:
        m.stop()

    # Commit explicit positions (the "processed" prefix of each partition) with a consumer that
    # uses the group id but manual assignment (generation -1 commits).
    committed = {0: 4, 1: 10, 2: 0}
    committer = confluent_consumer(gbroker.bootstrap, **{"group.id": group})
    try:
        result = committer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in committed.items()], asynchronous=False
        )
        assert all(tp.error is None for tp in result), result
    finally:
        committer.close()

    gbroker.kill9()
    gbroker.restart()

    consumer = confluent_consumer(gbroker.bootstrap, **{
        "group.id": group, "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 500,
        "enable.partition.eof": True,
    })
    got, at_eof = [], set()
    try:
        deadline = time.monotonic() + 30
        seen = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=20)
        assert {tp.partition: tp.offset for tp in seen} == committed
        consumer.subscribe([topic])
        while at_eof != {0, 1, 2}:
            assert time.monotonic() < deadline, f"read {got}, at end: {at_eof}"
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                at_eof.add(msg.partition())
                continue
            got.append((msg.partition(), msg.offset()))
    finally:
        consumer.close()
    expected = sorted((p, o) for p, start in committed.items() for o in range(start, 10))
    assert sorted(got) == expected, f"after kill -9 the group resumed with {sorted(got)}"


# ---- two groups ------------------------------------------------------------------------------


def test_two_groups_each_read_every_record(gbroker, topic):
    from kafka import KafkaConsumer

    create_topic(gbroker.bootstrap, topic, partitions=3)
    produced = produce_to_partitions(gbroker.bootstrap, topic, range(3), 20, "two")
    g1, g2 = group_name("first"), group_name("second")
    events, lock = [], threading.Lock()
    members = [GroupMember(f"g1-{i}", gbroker.bootstrap, g1, [topic], events, lock).start() for i in range(2)]
    kp = KafkaConsumer(
        topic, bootstrap_servers=gbroker.bootstrap, group_id=g2, enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=SESSION_MS, heartbeat_interval_ms=500,
    )
    try:
        kp_got = []
        deadline = time.monotonic() + 20
        while len(kp_got) < len(produced):
            assert time.monotonic() < deadline, f"group 2 read {len(kp_got)} of {len(produced)}"
            for recs in kp.poll(timeout_ms=200).values():
                kp_got.extend((r.partition, r.offset) for r in recs)
        kp.commit()
        wait_consumed(members, produced)
        time.sleep(0.3)
        g1_got = [po for m in members for po in m.consumed]
        assert sorted(g1_got) == sorted(produced), "group 1 did not read every record exactly once"
        assert sorted(kp_got) == sorted(produced), "group 2 did not read every record exactly once"
        assert_member_health(*members)

        # Each group's committed offsets are its own, at the end of every partition.
        from confluent_kafka import ConsumerGroupTopicPartitions

        admin = admin_client(gbroker.bootstrap)
        for g in (g1, g2):
            res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)])[g].result(10)
            assert {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == topic} == {
                0: 20, 1: 20, 2: 20
            }, f"group {g} committed {res.topic_partitions}"
    finally:
        kp.close(autocommit=False)
        for m in members:
            m.stop()


# ---- static membership -----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_static_member_restart_without_rebalance(gbroker, topic):
    partitions = set(range(4))
    create_topic(gbroker.bootstrap, topic, partitions=4)
    group = group_name("static")
    events, lock = [], threading.Lock()

    def member(name, instance):
        return GroupMember(name, gbroker.bootstrap, group, [topic], events, lock,
                           **{"group.instance.id": instance}).start()

    s1, s2 = member("s1", "instance-1"), member("s2", "instance-2")
    s1b = None
    try:
        wait_partitioned([s1, s2], partitions)
        s1_parts, s2_parts = s1.owned(), s2.owned()
        produced = produce_to_partitions(gbroker.bootstrap, topic, partitions, 5, "before")
        wait_consumed([s1, s2], produced)
        # (s2 may have seen one rebalance already, when the second of the two joined.)
        s2_callbacks = (s2.assigns, s2.revokes)

        # s1 closes (a static member does not send LeaveGroup) and a new process with the same
        # group.instance.id joins well within the 6 s session timeout.
        closed_at = time.monotonic()
        s1.stop()
        s1b = member("s1-restarted", "instance-1")
        wait_until(lambda: s1b.owned(), 10, "the restarted static member to get an assignment")
        assert time.monotonic() - closed_at < SESSION_MS / 1000, "the restart took longer than the session"
        assert s1b.owned() == s1_parts, f"restarted s1 got {s1b.owned()}, had {s1_parts}"

        # Keep both busy past the old instance's session timeout: had the restart (or a later
        # expiry of the replaced member id) caused a rebalance, s2 would have had its
        # partitions revoked (eager protocol: every rebalance revokes everything) - its heartbeat
        # would see REBALANCE_IN_PROGRESS within 500 ms.
        more = produce_to_partitions(gbroker.bootstrap, topic, partitions, 5, "after")
        wait_consumed([s1b, s2], more)
        remaining = SESSION_MS / 1000 + 2 - (time.monotonic() - closed_at)
        if remaining > 0:
            time.sleep(remaining)
        assert (s2.assigns, s2.revokes) == s2_callbacks, (
            f"s2's partitions were revoked/reassigned: a rebalance happened; events {events}"
        )
        assert s2.owned() == s2_parts and s1b.owned() == s1_parts
        assert (s1b.assigns, s1b.revokes) == (1, 0), "the restarted member went through a rebalance"
        # Nothing committed was read again.
        all_consumed = s1.consumed + s1b.consumed + s2.consumed
        assert sorted(all_consumed) == sorted(produced | more)

        from confluent_kafka import ConsumerGroupState

        admin = admin_client(gbroker.bootstrap)
        desc = admin.describe_consumer_groups([group])[group].result(10)
        assert desc.state == ConsumerGroupState.STABLE, desc
        assert sorted(m.group_instance_id for m in desc.members) == ["instance-1", "instance-2"], desc.members
        assert sorted(m.client_id for m in desc.members) == ["s1-restarted", "s2"], desc.members
        assert_member_health(s1, s1b, s2)
    finally:
        for m in (s1, s2, s1b):
            if m is not None:
                m.stop()


# ---- admin: list, describe, delete, offsets, lag ---------------------------------------------


def test_list_describe_and_delete_groups(gbroker, topic):
    from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, KafkaException

    create_topic(gbroker.bootstrap, topic, partitions=3)
    group = group_name("admin")
    events, lock = [], threading.Lock()
    members = [GroupMember(f"admin-m{i}", gbroker.bootstrap, group, [topic], events, lock).start() for i in range(2)]
    admin = admin_client(gbroker.bootstrap)
    try:
        wait_partitioned(members, range(3))
        produced = produce_to_partitions(gbroker.bootstrap, topic, range(3), 4, "adm")
        wait_consumed(members, produced)

        listing = admin.list_consumer_groups(request_timeout=10).result(10)
        assert not listing.errors, listing.errors
        by_id = {g.group_id: g for g in listing.valid}
        assert group in by_id, f"{group} not listed: {sorted(by_id)}"
        assert by_id[group].state == ConsumerGroupState.STABLE, by_id[group]
        assert not by_id[group].is_simple_consumer_group
        # The state filter (ListGroups v4).
        stable = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}).result(10)
        assert group in {g.group_id for g in stable.valid}
        empty = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}).result(10)
        assert group not in {g.group_id for g in empty.valid}

        desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result(10)
        assert desc.group_id == group and desc.state == ConsumerGroupState.STABLE, desc
        assert desc.partition_assignor in ("range", "roundrobin"), desc.partition_assignor
        assert sorted(m.client_id for m in desc.members) == ["admin-m0", "admin-m1"], desc.members
        for m in desc.members:
            assert "127.0.0.1" in m.host, f"member host {m.host!r}"
            assert m.member_id.startswith(m.client_id), f"member id {m.member_id!r}"
        described = {m.client_id: {tp.partition for tp in m.assignment.topic_partitions
                                   if tp.topic == topic} for m in desc.members}
        assert described == owned_by(members), f"described {described}, members own {owned_by(members)}"

        offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(10)
        assert {(tp.topic, tp.partition): tp.offset for tp in offsets.topic_partitions} == {
            (topic, 0): 4, (topic, 1): 4, (topic, 2): 4
        }

        with pytest.raises(KafkaException) as raised:
            admin.delete_consumer_groups([group], request_timeout=10)[group].result(10)
        assert raised.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, raised.value

        for m in members:
            m.stop()
        wait_until(
            lambda: admin.describe_consumer_groups([group])[group].result(10).state == ConsumerGroupState.EMPTY,
            10, "the group to become Empty after its members left",
        )
        admin.delete_consumer_groups([group], request_timeout=10)[group].result(10)
        listing = admin.list_consumer_groups(request_timeout=10).result(10)
        assert group not in {g.group_id for g in listing.valid}, "deleted group still listed"
        gone = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(10)
        assert not [tp for tp in gone.topic_partitions if tp.offset >= 0], gone.topic_partitions

        with pytest.raises(KafkaException) as raised:
            admin.delete_consumer_groups([group], request_timeout=10)[group].result(10)
        assert raised.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, raised.value
        never = group_name("never")
        futures = admin.delete_consumer_groups([never], request_timeout=10)
        with pytest.raises(KafkaException) as raised:
            futures[never].result(10)
        assert raised.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, raised.value
        assert_member_health(*members)
    finally:
        for m in members:
            m.stop()


def test_consumer_lag_after_producing_more(gbroker, topic):
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    create_topic(gbroker.bootstrap, topic, partitions=3)
    group = group_name("lag")
    produced = produce_to_partitions(gbroker.bootstrap, topic, range(3), 10, "lag")
    m = GroupMember("lagger", gbroker.bootstrap, group, [topic]).start()
    admin = admin_client(gbroker.bootstrap)

    def committed():
        res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(10)
        return {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == topic}

    try:
        wait_consumed([m], produced)
        wait_until(lambda: committed() == {0: 10, 1: 10, 2: 10}, 10, lambda: f"commits: {committed()}")
    finally:
        m.stop()
    assert_member_health(m)

    more = {0: 7, 1: 3, 2: 0}
    for p, n in more.items():
        if n:
            produce_to_partitions(gbroker.bootstrap, topic, [p], n, "more")

    probe = confluent_consumer(gbroker.bootstrap)
    try:
        ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3)}
    finally:
        probe.close()
    offsets = committed()
    lag = {p: ends[p] - offsets[p] for p in range(3)}
    assert lag == more, f"lag {lag} (log ends {ends}, committed {offsets}), expected {more}"

    # The lag is exactly what a member resuming in the group reads.
    again = GroupMember("resumer", gbroker.bootstrap, group, [topic]).start()
    try:
        expected = {(p, o) for p in range(3) for o in range(10, 10 + more[p])}
        wait_consumed([again], expected)
        time.sleep(0.5)
        assert sorted(again.consumed) == sorted(expected)
    finally:
        again.stop()


# ---- kcat -G ---------------------------------------------------------------------------------


def test_kcat_balanced_consumer_resumes(gbroker, topic):
    create_topic(gbroker.bootstrap, topic, partitions=3)
    produced = produce_to_partitions(gbroker.bootstrap, topic, range(3), 5, "kcat")
    group = group_name("kcat")

    def run():
        out = kcat("-b", gbroker.bootstrap, "-G", group, topic, "-e", "-q", "-f", "%p|%o|%s\n",
                   "-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=6000",
                   "-X", "heartbeat.interval.ms=500", timeout_s=40).stdout
        return [tuple(line.split("|", 2)) for line in out.splitlines() if line]

    first = run()
    assert sorted((int(p), int(o)) for p, o, _ in first) == sorted(produced), first
    second = run()
    assert second == [], f"a second kcat -G run read again: {second}"
    more = produce_to_partitions(gbroker.bootstrap, topic, [1], 3, "later")
    third = run()
    assert sorted((int(p), int(o)) for p, o, _ in third) == sorted(more), third
    assert [v for _, _, v in third] == ["later-p1-0", "later-p1-1", "later-p1-2"]


# ---- bad input -------------------------------------------------------------------------------


def test_session_timeout_below_minimum_is_rejected(gbroker, topic):
    from kafka import KafkaConsumer
    from kafka.errors import InvalidSessionTimeoutError

    create_topic(gbroker.bootstrap, topic, partitions=1)
    consumer = KafkaConsumer(
        topic, bootstrap_servers=gbroker.bootstrap, group_id=group_name("short"),
        session_timeout_ms=500, heartbeat_interval_ms=100, request_timeout_ms=5000,
    )
    try:
        with pytest.raises(InvalidSessionTimeoutError):
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                consumer.poll(timeout_ms=200)
    finally:
        consumer.close(autocommit=False)


def test_heartbeat_errors_with_raw_requests(gbroker):
    """JoinGroup/SyncGroup/Heartbeat at v0 through kafka-python's low-level client: a member
    with a stale generation, an unknown member id and a join with another protocol type get
    Kafka's error codes, and the group keeps working."""
    from kafka import KafkaClient
    from kafka.protocol.group import HeartbeatRequest, JoinGroupRequest, SyncGroupRequest

    client = KafkaClient(bootstrap_servers=gbroker.bootstrap, client_id="raw-groups")
    try:
        node = client.least_loaded_node()
        assert client.await_ready(node, timeout_ms=10000)

        def call(request):
            future = client.send(node, request)
            client.poll(future=future, timeout_ms=10000)
            assert future.is_done and future.succeeded(), future.exception
            return future.value

        group = group_name("raw")
        join = call(JoinGroupRequest[0](group, SESSION_MS, "", "consumer", [("range", b"")]))
        assert join.error_code == 0, join
        member, generation = join.member_id, join.generation_id
        assert member and generation >= 1 and join.leader_id == member
        sync = call(SyncGroupRequest[0](group, generation, member, [(member, b"")]))
        assert sync.error_code == 0, sync

        assert call(HeartbeatRequest[0](group, generation, member)).error_code == 0
        assert call(HeartbeatRequest[0](group, generation - 1, member)).error_code == 22  # ILLEGAL_GENERATION
        assert call(HeartbeatRequest[0](group, generation, "nobody")).error_code == 25  # UNKNOWN_MEMBER_ID
        other = call(JoinGroupRequest[0](group, SESSION_MS, "", "connect", [("range", b"")]))
        assert other.error_code == 23, other  # INCONSISTENT_GROUP_PROTOCOL
        # The member is unaffected.
        assert call(HeartbeatRequest[0](group, generation, member)).error_code == 0
    finally:
        client.close()
