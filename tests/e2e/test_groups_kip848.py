"""The KIP-848 consumer group protocol (ConsumerGroupHeartbeat, server-side assignors) with
librdkafka's `group.protocol=consumer`: one member, two members sharing the partitions, and a
member leaving. The member threads are the same as the classic tests' (strata_e2e.GroupMember);
with this protocol librdkafka assigns incrementally and takes its session and heartbeat timing
from the broker.
"""

import threading
import time
import uuid

from strata_e2e import GROUP_OVERRIDES, GroupMember, create_topic, confluent_produce, assert_delivered, wait_until

KIP848 = {"group.protocol": "consumer"}


def produce(bootstrap, topic, partitions, per_partition, tag):
    reports = confluent_produce(bootstrap, topic, [
        {"partition": p, "value": f"{tag}-{p}-{i}".encode()} for i in range(per_partition) for p in partitions
    ])
    assert_delivered(reports)
    return {(p, o) for _, p, o in reports}


def owned(members):
    return {m.name: m.owned() for m in members}


def wait_split(members, partitions, timeout_s=20):
    def ok():
        sets = [m.owned() for m in members]
        flat = [p for s in sets for p in s]
        return all(sets) and len(flat) == len(set(flat)) and set(flat) == set(partitions)

    wait_until(ok, timeout_s, lambda: f"members {owned(members)} to split {sorted(partitions)}")


def wait_read(members, expected, timeout_s=20):
    wait_until(lambda: expected <= set().union(*(m.consumed_set() for m in members)), timeout_s,
               lambda: f"{len(expected - set().union(*(m.consumed_set() for m in members)))} unread records")


def healthy(*members):
    for m in members:
        assert not m.errors and not m.commit_errors, (m.name, m.errors, m.commit_errors)


def test_kip848_single_consumer(broker_factory, topic):
    broker = broker_factory(GROUP_OVERRIDES)
    create_topic(broker.bootstrap, topic, partitions=3)
    produced = produce(broker.bootstrap, topic, range(3), 5, "one")
    m = GroupMember("solo", broker.bootstrap, f"kip848-{uuid.uuid4().hex[:8]}", [topic], **KIP848).start()
    try:
        wait_split([m], range(3))
        wait_read([m], produced)
        time.sleep(0.3)
        assert sorted(m.consumed) == sorted(produced)
        healthy(m)
    finally:
        m.stop()


def test_kip848_two_consumers_share_partitions(broker_factory, topic):
    broker = broker_factory(GROUP_OVERRIDES)
    create_topic(broker.bootstrap, topic, partitions=4)
    group = f"kip848-{uuid.uuid4().hex[:8]}"
    events, lock = [], threading.Lock()
    members = [GroupMember(f"m{i}", broker.bootstrap, group, [topic], events, lock, **KIP848).start()
               for i in range(2)]
    try:
        wait_split(members, range(4))
        assert sorted(len(m.owned()) for m in members) == [2, 2], owned(members)
        produced = produce(broker.bootstrap, topic, range(4), 10, "two")
        wait_read(members, produced)
        time.sleep(0.3)
        everything = [po for m in members for po in m.consumed]
        assert sorted(everything) == sorted(produced), "a record was read twice or not at all"
        healthy(*members)
    finally:
        for m in members:
            m.stop()


def test_kip848_member_leaving(broker_factory, topic):
    broker = broker_factory(GROUP_OVERRIDES)
    create_topic(broker.bootstrap, topic, partitions=4)
    group = f"kip848-{uuid.uuid4().hex[:8]}"
    events, lock = [], threading.Lock()
    stays = GroupMember("stays", broker.bootstrap, group, [topic], events, lock, **KIP848).start()
    leaves = GroupMember("leaves", broker.bootstrap, group, [topic], events, lock, **KIP848).start()
    try:
        wait_split([stays, leaves], range(4))
        produced = produce(broker.bootstrap, topic, range(4), 5, "before")
        wait_read([stays, leaves], produced)
        leaves.stop()  # close(): a heartbeat with member epoch -1 leaves the group
        wait_split([stays], range(4))
        more = produce(broker.bootstrap, topic, range(4), 5, "after")
        wait_read([stays], more)
        time.sleep(0.3)
        everything = stays.consumed + leaves.consumed
        assert sorted(everything) == sorted(produced | more), "committed records were read again"
        healthy(stays, leaves)
    finally:
        for m in (stays, leaves):
            m.stop()
