"""Log compaction with real clients: after cleaning, a new consumer from `earliest` sees only
the latest value per key, and, once `delete.retention.ms` has passed since the segment holding a
tombstone was first cleaned, no tombstoned key at all. Offsets
of the kept records are the offsets they were written at."""

import time

from strata_e2e import assert_delivered, confluent_consume, confluent_produce, create_topic, wait_until

# Two cleaner workers, so the end-to-end tests also run the multi-worker scheduling.
FAST = ("log.cleaner.backoff.ms=200", "log.retention.check.interval.ms=200", "log.cleaner.threads=2")


def produce_round(broker, topic, records):
    # One produce call per round, then a pause longer than segment.ms so that the next
    # append rolls the segment: the rounds end up in different (closed) segments.
    assert_delivered(confluent_produce(broker.bootstrap, topic, records, **{"linger.ms": 0}))
    time.sleep(0.25)


def latest(broker, topic):
    got = confluent_consume(broker.bootstrap, topic, [0], start=None)
    return [(r.offset, r.key, r.value) for r in got]


def test_compaction_keeps_the_latest_value_per_key_and_drops_tombstones(broker_factory, topic):
    """delete.retention.ms counts from the first cleaning of the tombstone's segment, not from
    its timestamp: a tombstone stamped an hour ago is still read after the pass that removes
    the older values of its key, and goes by itself (no new writes) once delete.retention.ms
    has passed since then."""
    retention_s = 3.0
    broker = broker_factory(*FAST)
    create_topic(broker.bootstrap, topic, config={
        "cleanup.policy": "compact",
        "segment.ms": "100",
        "delete.retention.ms": str(int(retention_s * 1000)),
        "min.compaction.lag.ms": "0",
        "min.cleanable.dirty.ratio": "0.01",
    })
    written = {}
    offset = 0
    for round_ in range(5):
        recs = [dict(key=b"k%d" % k, value=b"v%d-%d" % (k, round_)) for k in range(8)]
        produce_round(broker, topic, recs)
        for r in recs:
            written[offset] = (r["key"], r["value"])
            offset += 1
    # A tombstone for k0 with an ancient timestamp (a timestamp rule would drop it in the very
    # first pass), then one more round so every record above is in a closed segment.
    ancient_ms = int(time.time() * 1000) - 3_600_000
    tombstone_written = time.monotonic()
    produce_round(broker, topic, [dict(key=b"k0", value=None, timestamp=ancient_ms)])
    tombstone_offset = offset
    offset += 1
    produce_round(broker, topic, [dict(key=b"tail", value=b"t")])
    offset += 1

    # After cleaning: the round-4 values of k1..k7 at their original offsets, the tombstone
    # (k0's older values are gone, so it was cleaned), and the tail record.
    want_kept = [(o, k, v) for o, (k, v) in written.items() if v.endswith(b"-4") and k != b"k0"]
    want = sorted(want_kept + [(tombstone_offset, b"k0", None), (offset - 1, b"tail", b"t")])
    wait_until(lambda: latest(broker, topic) == want, timeout_s=20,
               what=lambda: f"compaction to leave only the latest values; read {latest(broker, topic)}")
    tombstone = [r for r in confluent_consume(broker.bootstrap, topic, [0]) if r.key == b"k0"]
    assert [(r.value, r.timestamp) for r in tombstone] == [(None, ancient_ms)], tombstone

    # Without any new write, a pass after the horizon removes it; not before
    # delete.retention.ms has passed since the first cleaning (which followed its write).
    want_final = sorted(want_kept + [(offset - 1, b"tail", b"t")])
    wait_until(lambda: latest(broker, topic) == want_final, timeout_s=20,
               what=lambda: f"the tombstoned key to disappear; read {latest(broker, topic)}")
    gone = time.monotonic()
    assert gone - tombstone_written >= retention_s, f"tombstone gone after {gone - tombstone_written:.2f} s"


def test_kill9_during_cleaning_loses_nothing(broker_factory, topic):
    """kill -9 at seeded random moments while the cleaner works on fresh dirty segments:
    after each restart the log reads back as a subset of what was written (each record at its
    own offset, in order) that still holds the latest value of every key."""
    import random

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    broker = broker_factory("log.cleaner.backoff.ms=10", "log.retention.check.interval.ms=50")
    create_topic(broker.bootstrap, topic, config={
        "cleanup.policy": "compact", "segment.ms": "30", "min.compaction.lag.ms": "0",
    })
    written = {}
    latest_offset = {}
    offset = 0
    for round_ in range(8):
        # A new round of values makes the previous segments dirty again; the pause lets the
        # next append roll the segment, so the cleaner has closed segments to rewrite.
        recs = [dict(key=b"k%02d" % k, value=b"v%02d-%d" % (k, round_)) for k in range(30)]
        assert_delivered(confluent_produce(broker.bootstrap, topic, recs, **{"linger.ms": 0}))
        for r in recs:
            written[offset] = (r["key"], r["value"])
            latest_offset[r["key"]] = offset
            offset += 1
        time.sleep(0.04)
        assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(key=b"roll", value=b"%d" % round_)]))
        written[offset] = (b"roll", b"%d" % round_)
        latest_offset[b"roll"] = offset
        offset += 1
        time.sleep(rng.uniform(0.0, 0.03))
        broker.kill9()
        broker.restart()
        got = latest(broker, topic)
        where = f"(seed {seed}, round {round_})"
        offsets = [o for o, _, _ in got]
        assert offsets == sorted(set(offsets)), f"offsets in order, no duplicates {where}"
        for o, k, v in got:
            assert written.get(o) == (k, v), f"offset {o} reads {k!r}={v!r}, wrote {written.get(o)} {where}"
        present = set(offsets)
        missing = [k for k, o in latest_offset.items() if o not in present]
        assert not missing, f"latest values lost for {missing} {where}"
    # The cleaner did run through all of this: in the end only the latest values remain.
    wait_until(lambda: len(latest(broker, topic)) <= len(latest_offset) + 31, timeout_s=15,
               what=lambda: f"compaction to catch up (seed {seed}); read {len(latest(broker, topic))} records")


def test_dirty_ratio_defers_cleaning_until_max_compaction_lag(broker_factory, topic):
    """min.cleanable.dirty.ratio: a little new dirty data is not worth a pass; once a record
    has waited max.compaction.lag.ms the log is cleaned anyway."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    from strata_e2e import admin_client

    broker = broker_factory(*FAST)
    create_topic(broker.bootstrap, topic, config={
        "cleanup.policy": "compact", "segment.ms": "100", "min.compaction.lag.ms": "0",
        "min.cleanable.dirty.ratio": "0.01",
    })
    admin = admin_client(broker.bootstrap)

    def set_config(name, value):
        resource = ConfigResource("topic", topic, incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([resource], request_timeout=15)[resource].result(timeout=15)

    keys = 10
    for round_ in range(4):
        produce_round(broker, topic, [dict(key=b"k%d" % k, value=b"v%d-%d" % (k, round_)) for k in range(keys)])
    produce_round(broker, topic, [dict(key=b"roll", value=b"0")])
    wait_until(lambda: len(latest(broker, topic)) == keys + 1, timeout_s=15,
               what=lambda: f"the first cleaning; read {len(latest(broker, topic))}")
    # Now ask for 90% dirty. One more round of overwrites is about half of the cleanable log.
    set_config("min.cleanable.dirty.ratio", "0.9")
    produce_round(broker, topic, [dict(key=b"k%d" % k, value=b"v%d-new" % k) for k in range(keys)])
    produce_round(broker, topic, [dict(key=b"roll", value=b"1")])
    time.sleep(1.5)
    assert len(latest(broker, topic)) > keys + 1, "below the dirty ratio nothing is cleaned"
    # max.compaction.lag.ms overrides the ratio.
    set_config("max.compaction.lag.ms", "200")
    wait_until(lambda: len(latest(broker, topic)) == keys + 1, timeout_s=15,
               what=lambda: f"cleaning forced by max.compaction.lag.ms; read {len(latest(broker, topic))}")
    values = {k: v for _, k, v in latest(broker, topic)}
    assert all(values[b"k%d" % k] == b"v%d-new" % k for k in range(keys))
