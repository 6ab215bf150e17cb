"""Storage faults under a real broker: acknowledged means durable even when the disk fails.

- fsync fails with EIO (an LD_PRELOAD shim compiled here makes fsync/fdatasync fail while a
  flag file exists): the log directory goes offline, nothing written before the failure is
  ever acknowledged (not even after fsync works again), the error is logged once, and a
  restart on what is really on disk (the failed pages lost: zeroed) keeps every acknowledged
  record and only those.
- the disk fills up (a small tmpfs): producers get an error promptly, CreateTopics on the
  full disk leaves the metadata log usable, and once space is freed the broker serves again
  (after a restart at most) with every acknowledged record and every created topic intact.
- the process is frozen (SIGSTOP) longer than the request timeout, or killed with `kill -9`
  three times, under an idempotent producer: every record acknowledged, each in the log once.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from strata_e2e import (
    admin_client,
    assert_delivered,
    confluent_consume,
    confluent_produce,
    create_topic,
    wait_until,
)

SHIM_SOURCE = Path(__file__).resolve().parent / "faults" / "fsync_fault.c"


def build_shim(tmp_path: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.fail("the fault tests need a C compiler (gcc) to build their LD_PRELOAD shim")
    out = tmp_path / "fsync_fault.so"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-o", str(out), str(SHIM_SOURCE), "-ldl"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def values(records):
    return [r.value for r in records]


def first_segment(data_dir: Path, topic: str) -> Path:
    return data_dir / f"{topic}-0" / ("0" * 20 + ".log")


@pytest.mark.timeout(180)
def test_fsync_error_takes_the_log_directory_offline_and_never_acknowledges(
    broker_factory, topic, tmp_path
):
    shim = build_shim(tmp_path)
    flag = tmp_path / "fail-fsync"
    env = {"LD_PRELOAD": str(shim), "STRATA_FAULT_FSYNC_FILE": str(flag)}
    broker = broker_factory(env=env)
    create_topic(broker.bootstrap, topic)

    before = [{"value": f"acked-{i}".encode()} for i in range(100)]
    assert_delivered(confluent_produce(broker.bootstrap, topic, before, acks="all"))
    segment = first_segment(broker.data_dir, topic)
    acked_bytes = segment.stat().st_size

    # fsync now fails: every record written from here on stays unacknowledged.
    flag.touch()
    during = [{"value": f"during-{i}".encode()} for i in range(30)]
    reports = confluent_produce(
        broker.bootstrap, topic, during, acks="all", **{"message.timeout.ms": 4000}
    )
    acked_during = [i for i, r in enumerate(reports) if r[0] is None]
    assert acked_during == [], f"records acknowledged while fsync failed: {acked_during}"
    wait_until(
        lambda: "log directory is offline" in broker.log_tail(200),
        10,
        "the broker to log that the log directory is offline",
    )

    # fsync works again, but the failed writeback may have lost pages: still nothing more is
    # acknowledged (Linux reports a writeback error once, so a later good fsync proves nothing).
    flag.unlink()
    after = [{"value": f"after-{i}".encode()} for i in range(10)]
    reports = confluent_produce(
        broker.bootstrap, topic, after, acks="all", **{"message.timeout.ms": 4000}
    )
    acked_after = [i for i, r in enumerate(reports) if r[0] is None]
    assert acked_after == [], f"records acknowledged after the fsync error: {acked_after}"
    log = broker.log_tail(100_000)
    assert log.count("log directory is offline") == 1, "the failure is logged exactly once"
    assert str(broker.data_dir) in log, "the log line names the directory"

    # The failed pages are really lost (zeroed), then the broker restarts without the shim.
    broker.kill9()
    with open(segment, "r+b") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(acked_bytes)
        f.write(b"\0" * (size - acked_bytes))
    restarted = broker_factory(data_dir=broker.data_dir)
    got = confluent_consume(restarted.bootstrap, topic, min_count=100)
    assert values(got) == [r["value"] for r in before], "exactly the acknowledged records"
    assert [r.offset for r in got] == list(range(100))
    more = [{"value": f"later-{i}".encode()} for i in range(5)]
    reports = confluent_produce(restarted.bootstrap, topic, more, acks="all")
    assert_delivered(reports)
    assert [r[2] for r in reports] == list(range(100, 105))


def assert_each_acknowledged_record_once(broker, topic, acked, total):
    """Every one of `total` values (sent in increasing order, over partitions 0 and 1) is in
    the log exactly once, in order per partition, at the offset it was acknowledged with."""
    got = confluent_consume(broker.bootstrap, topic, partitions=(0, 1), min_count=total, timeout_s=60)
    values = [int(r.value) for r in got]
    assert len(values) == len(set(values)) == total, (
        f"{len(values)} records in the log for {total} sent, {len(set(values))} distinct"
    )
    for p in (0, 1):
        in_log = [(r.offset, int(r.value)) for r in got if r.partition == p]
        assert [v for _, v in in_log] == sorted(v for _, v in in_log), "per-partition order kept"
        acked_here = sorted((o, v) for q, o, v in acked if q == p)
        assert acked_here == in_log, "every acknowledged offset holds its record"


def mount_tmpfs(path: Path, size_mib: int):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.mark.timeout(240)
def test_full_disk_refuses_promptly_and_serves_again_once_space_is_freed(
    broker_factory, new_topic, tmp_path
):
    mount_point = tmp_path / "small-disk"
    mount_tmpfs(mount_point, 24)
    try:
        _full_disk_scenario(broker_factory, new_topic, mount_point)
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


def fill_up(path: Path):
    """Writes `path` until the disk is full (ENOSPC)."""
    chunk = b"\1" * (64 << 10)
    # Unbuffered, so closing the file has nothing left to write to the full disk.
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass


def try_create(bootstrap, name, partitions) -> bool:
    """CreateTopics; whether the broker reported the topic created."""
    from confluent_kafka.admin import NewTopic

    admin = admin_client(bootstrap)
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    try:
        futures[name].result(15)
        return True
    except Exception:  # noqa: BLE001 - a refusal is a fine answer on a full disk
        return False


def _full_disk_scenario(broker_factory, new_topic, mount_point: Path):
    overrides = ("log.segment.bytes=1048576", "log.retention.check.interval.ms=500")
    data_dir = mount_point / "data"
    broker = broker_factory(*overrides, data_dir=data_dir)
    topic = new_topic()
    create_topic(broker.bootstrap, topic)

    acked = []
    value = b"x" * 1000
    refused = False
    for round_ in range(40):
        batch = [{"value": b"%d-%d-" % (round_, i) + value} for i in range(1000)]
        started = time.monotonic()
        reports = confluent_produce(
            broker.bootstrap, topic, batch, acks="all", **{"message.timeout.ms": 5000}
        )
        took = time.monotonic() - started
        acked += [(r[2], batch[i]["value"]) for i, r in enumerate(reports) if r[0] is None]
        if any(r[0] is not None for r in reports):
            refused = True
            assert took < 20, f"producers waited {took:.1f} s for the full-disk error"
            break
    assert refused, "the disk never filled up"

    # Not a byte left. Metadata changes on the full disk: one too large for the slack of the
    # metadata log's last page (100 partition records) fails part-way through its write; one
    # small topic may or may not be created (its partition directory cannot be written). No
    # later change may be lost because of them.
    filler = mount_point / "filler"
    fill_up(filler)
    created = [topic]
    for name, partitions in ((new_topic("-big"), 100), (new_topic("-small"), 1)):
        if try_create(broker.bootstrap, name, partitions):
            created.append(name)

    # Space comes back.
    filler.unlink()
    later = new_topic("-later")
    create_topic(broker.bootstrap, later)
    created.append(later)
    tail = [{"value": b"tail-%d" % i} for i in range(50)]
    reports = confluent_produce(
        broker.bootstrap, topic, tail, acks="all", **{"message.timeout.ms": 8000}
    )
    if any(r[0] is not None for r in reports):
        # Allowed: serving again needs a restart at most.
        broker.stop()
        broker = broker_factory(*overrides, data_dir=data_dir)
        reports = confluent_produce(broker.bootstrap, topic, tail, acks="all")
    assert_delivered(reports)
    acked += [(r[2], tail[i]["value"]) for i, r in enumerate(reports)]
    # Every topic reported created serves (a partition that could not be opened on the full
    # disk is opened by the maintenance task's retry).
    for name in created[1:]:
        reports = confluent_produce(
            broker.bootstrap, name, [{"value": name.encode(), "partition": 0}], acks="all"
        )
        assert_delivered(reports)

    # After a restart, every acknowledged record is there once, at its offset, and every
    # topic reported created is still there with its data.
    broker.stop()
    broker = broker_factory(*overrides, data_dir=data_dir)
    got = confluent_consume(broker.bootstrap, topic, min_count=len(acked), timeout_s=60)
    by_offset = {r.offset: r.value for r in got}
    missing = [o for o, v in acked if by_offset.get(o) != v]
    assert not missing, f"{len(missing)} acknowledged records lost or changed, first at {missing[:5]}"
    assert len(got) == len(set(r.offset for r in got)), "no offset read twice"
    for name in created[1:]:
        got = confluent_consume(broker.bootstrap, name, min_count=1)
        assert [r.value for r in got] == [name.encode()], f"topic {name} lost its record"
    broker.stop()


@pytest.mark.timeout(180)
def test_sigstop_while_an_idempotent_producer_writes_loses_and_duplicates_nothing(
    broker_factory, topic
):
    """The broker is frozen (SIGSTOP) for longer than the producer's request timeout while an
    idempotent acks=all producer writes: requests time out and are retried, some of them
    already appended. After SIGCONT every acknowledged record is in the log exactly once, in
    order, and nothing was reported failed."""
    import signal
    import threading

    from strata_e2e import confluent_producer

    broker = broker_factory()
    create_topic(broker.bootstrap, topic, partitions=2)
    total = 6000
    acked, failed = [], []
    lock = threading.Lock()
    stopped = threading.Event()

    def on_delivery(err, msg):
        with lock:
            if err is None:
                acked.append((msg.partition(), msg.offset(), int(msg.value())))
            else:
                failed.append(err)
            if len(acked) == 1500 and not stopped.is_set():
                stopped.set()

    producer = confluent_producer(
        broker.bootstrap,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "request.timeout.ms": 1500,
            "message.timeout.ms": 60000,
        },
    )
    froze = False
    for i in range(total):
        producer.produce(topic, str(i).encode(), key=str(i % 7).encode(), on_delivery=on_delivery)
        producer.poll(0)
        if i % 100 == 99 and not froze:
            # Pace the first records so the freeze lands while the producer is busy.
            deadline = time.monotonic() + 10
            while len(acked) < i - 300 and time.monotonic() < deadline:
                producer.poll(0.01)
        if stopped.is_set() and not froze:
            froze = True
            broker.proc.send_signal(signal.SIGSTOP)
            try:
                # The fault lasts twice the request timeout: the client gives up on in-flight
                # requests and retries them once the broker runs again.
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline:
                    producer.poll(0.1)
            finally:
                broker.proc.send_signal(signal.SIGCONT)
    assert producer.flush(90) == 0, "records still undelivered"
    assert froze, "the broker was never frozen"
    assert not failed, f"{len(failed)} records failed, first: {failed[0]}"
    assert len(acked) == total

    assert_each_acknowledged_record_once(broker, topic, acked, total)


@pytest.mark.timeout(240)
def test_repeated_kill9_under_an_idempotent_producer_loses_and_duplicates_nothing(
    broker_factory, topic
):
    """`kill -9` three times while an idempotent acks=all producer writes, restarting the
    broker each time on the same port. The producer rides through (retries to the new
    process); at the end every record was acknowledged and is in the log exactly once, in
    order per partition (the restarted broker rebuilds the producer state, so a retried batch
    that survived the crash is recognised)."""
    from strata_e2e import confluent_producer

    broker = broker_factory()
    create_topic(broker.bootstrap, topic, partitions=2)
    total, kills = 9000, 3
    acked, failed = [], []

    def on_delivery(err, msg):
        if err is None:
            acked.append((msg.partition(), msg.offset(), int(msg.value())))
        else:
            failed.append(err)

    producer = confluent_producer(
        broker.bootstrap,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "request.timeout.ms": 3000,
            "message.timeout.ms": 120000,
            "reconnect.backoff.max.ms": 200,
        },
    )
    killed = 0
    for i in range(total):
        producer.produce(topic, str(i).encode(), key=str(i % 11).encode(), on_delivery=on_delivery)
        producer.poll(0)
        if i % 100 == 99:
            deadline = time.monotonic() + 30
            while len(acked) < i - 500 and time.monotonic() < deadline:
                producer.poll(0.01)
        if killed < kills and len(acked) >= (killed + 1) * 2000:
            broker.kill9()
            killed += 1
            broker.restart()
    assert producer.flush(120) == 0, "records still undelivered"
    assert killed == kills
    assert not failed, f"{len(failed)} records failed, first: {failed[0]}"
    assert len(acked) == total

    assert_each_acknowledged_record_once(broker, topic, acked, total)
