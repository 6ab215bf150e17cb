"""Log compaction with real clients: after cleaning, a new consumer from `earliest` sees only
the latest value per key, and, once `delete.retention.ms` has passed since the segment holding a
tombstone was first cleaned, no tombstoned key at all. Offsets
of the kept records are the offsets they were written at."""

import time

from strata_e2e import (
    assert_delivered,
    confluent_consume,
    confluent_produce,
    confluent_producer,
    create_topic,
    kafka_python_consume,
    kcat,
    segment_batches,
    wait_until,
)

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
    # The cleaner's activity shows in /metrics.
    cleaner = broker.metric_values("strata_cleaner_passes_total", "strata_cleaner_bytes_written_total",
                                   "strata_cleaner_pass_duration_seconds_count")
    assert all(v > 0 for v in cleaner.values()), cleaner


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


def test_batches_of_idempotent_producers_are_compacted(broker_factory, topic):
    """Idempotent producers (confluent-kafka with enable.idempotence, kafka-python with
    enable_idempotence) write many overwrites of a few keys: the cleaner compacts their batches.
    The first producer's last batch, entirely superseded by the second producer, stays as an
    empty batch (its producer id and sequence range, no records); confluent-kafka, kafka-python
    and kcat all read only the latest value per key past it. After a restart that rebuilds the
    producer state from the log alone, both producers go on producing without errors."""
    from kafka import KafkaProducer

    broker = broker_factory(*FAST)
    create_topic(broker.bootstrap, topic, config={
        "cleanup.policy": "compact",
        "segment.ms": "100",
        "segment.bytes": "4096",
        "min.compaction.lag.ms": "0",
        "min.cleanable.dirty.ratio": "0.01",
    })
    keys = [b"k%d" % k for k in range(5)]
    rounds = 8

    def confluent_round(producer, values):
        reports = []
        for key, value in values:
            producer.produce(topic, key=key, value=value,
                             on_delivery=lambda err, msg: reports.append((err, msg.partition(), msg.offset())))
        assert producer.flush(30) == 0, "undelivered records"
        assert_delivered(reports)
        return [offset for _, _, offset in reports]

    def kafka_python_round(producer, values):
        futures = [producer.send(topic, key=key, value=value) for key, value in values]
        producer.flush(timeout=30)
        return [f.get(timeout=30).offset for f in futures]

    written = {}  # offset -> (key, value)
    confluent = confluent_producer(broker.bootstrap, **{"enable.idempotence": True, "linger.ms": 0})
    python = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True, linger_ms=0,
                           client_id="strata-e2e")
    try:
        assert python.config["enable_idempotence"]
        # A batch or a few per round; the pause lets the next append roll the segment.
        for writer, produce in ((confluent, confluent_round), (python, kafka_python_round)):
            for round_ in range(rounds):
                values = [(k, b"%s-%d" % (k, round_)) for k in keys]
                for offset, (k, v) in zip(produce(writer, values), values):
                    written[offset] = (k, v)
                time.sleep(0.15)
        # A plain record closes the segment holding the last round.
        roll = confluent_produce(broker.bootstrap, topic, [dict(key=b"roll", value=b"r")])
        assert_delivered(roll)
        written[roll[0][2]] = (b"roll", b"r")

        latest_offset = {}
        for offset, (k, _) in sorted(written.items()):
            latest_offset[k] = offset
        want = sorted((o, k, written[o][1]) for k, o in latest_offset.items())
        assert len(written) == 2 * rounds * len(keys) + 1
        wait_until(lambda: latest(broker, topic) == want, timeout_s=30,
                   what=lambda: f"compaction of the idempotent batches; read {len(latest(broker, topic))} records")

        # On disk: the first producer's batches are gone but its last one, kept empty with its
        # sequence range; no other batch is empty, every batch carries a producer id but the
        # plain one.
        def empty_batches():
            return [b for b in segment_batches(broker.data_dir, topic, 0) if b["records_count"] == 0]

        first_batch = [b for b in segment_batches(broker.data_dir, topic, 0) if b["base_offset"] == 0]
        wait_until(lambda: len(empty_batches()) == 1, timeout_s=15,
                   what=lambda: f"one empty batch; batches {segment_batches(broker.data_dir, topic, 0)}")
        [empty] = empty_batches()
        # The first producer wrote offsets 0 to rounds * len(keys) - 1 with sequences equal to
        # the offsets (librdkafka may split a round into several batches).
        assert empty["last_offset"] == rounds * len(keys) - 1, empty
        assert empty["base_offset"] >= (rounds - 1) * len(keys), empty
        assert empty["base_sequence"] == empty["base_offset"], empty
        assert empty["codec"] == 0 and empty["producer_id"] >= 0, empty
        assert first_batch == [], "the first batch of the first producer went"
        stored = sum(b["records_count"] for b in segment_batches(broker.data_dir, topic, 0))
        assert stored == len(want), stored

        # Every client reads past the empty batch: the latest values, in offset order, from
        # earliest, without errors.
        for name, got in (
            ("confluent-kafka", latest(broker, topic)),
            ("kafka-python", [(r.offset, r.key, r.value) for r in kafka_python_consume(broker.bootstrap, topic)]),
        ):
            assert got == want, f"{name}: {got}"
        out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-e", "-q", "-o", "beginning",
                   "-f", "%o %k %s\n").stdout
        assert out.splitlines() == [f"{o} {k.decode()} {v.decode()}" for o, k, v in want], out
        # Reading from an offset inside the empty batch starts at the next record.
        inside = confluent_consume(broker.bootstrap, topic, [0], start=empty["base_offset"] + 1)
        assert [r.offset for r in inside] == [o for o, _, _ in want if o > empty["base_offset"]]

        # Restart with the producer state rebuilt from the log (no snapshot): both producers
        # continue their sequences. A wrong sequence range in the kept batch header would fail
        # the first producer with OUT_OF_ORDER_SEQUENCE.
        broker.stop()
        for snapshot in (broker.data_dir / f"{topic}-0").glob("producer-state.snapshot*"):
            snapshot.unlink()
        broker.restart()
        more = [(k, b"%s-after" % k) for k in keys[:2]]
        for offset, (k, v) in zip(confluent_round(confluent, more), more):
            written[offset] = (k, v)
        more = [(k, b"%s-after" % k) for k in keys[2:]]
        for offset, (k, v) in zip(kafka_python_round(python, more), more):
            written[offset] = (k, v)
        got = latest(broker, topic)
        assert [(k, v) for _, k, v in got if v.endswith(b"-after")] == [(k, b"%s-after" % k) for k in keys]
        offsets = [o for o, _, _ in got]
        assert offsets == sorted(set(offsets)), offsets
        assert all(written[o] == (k, v) for o, k, v in got)
    finally:
        python.close(timeout=10)
        confluent.flush(10)
