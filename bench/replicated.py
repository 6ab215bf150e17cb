#!/usr/bin/env python3
"""Replication factor 3 on three local processes next to a single node, in one run.

Two setups on this machine: one `strata` node, and a cluster of three (combined
broker+controller nodes from Kafka-style server.properties, as the end-to-end tests start
them). confluent-kafka (librdkafka) produces N 1 KiB records with acks=all to a fresh
1-partition topic: replication factor 1 on the single node, replication factor 3 with
`min.insync.replicas=2` on the cluster (every record on all three replicas before it is
acknowledged; with fsync before ack, fsynced on each). Then a consumer reads them back from
the leader. The setups alternate for ROUNDS rounds, each round on a fresh topic deleted after
it. Reports median MiB/s of each and the RF 3 / single-node ratio, and writes
`bench/results/replicated-<date>.md` / `.json`.

The three processes and the client share the machine's 2 cores: the ratio, not the absolute
figure, is the measurement, and it includes the cost of three brokers on one machine.

Usage: bench/replicated.py [--records 100000] [--rounds 3] [--fsync true|false]
Needs `.venv` (confluent-kafka) and a release build (`cargo build --release`).
"""

import argparse
import datetime
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MB = 1024 * 1024
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from strata_e2e import free_port, strata_binary, wait_for_port, wait_until  # noqa: E402
from test_cluster import Cluster  # noqa: E402
from tls import RECORD_BYTES, consume  # noqa: E402


def produce_all(bootstrap, topic, records):
    """Seconds to produce `records` 1 KiB records with acks=all (idempotent)."""
    import os

    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5, "batch.size": 1_000_000,
                         "queue.buffering.max.kbytes": 65536})
    value = os.urandom(RECORD_BYTES)
    started = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                producer.produce(topic, value=value)
                break
            except BufferError:
                producer.poll(0.005)
    assert producer.flush(300) == 0, "undelivered records"
    elapsed = time.perf_counter() - started
    del producer
    return elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fsync", default="true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strata-replicated-bench-"))
    fsync = f"strata.fsync.before.ack={args.fsync}\n"
    single_port = free_port()
    (work / "single").mkdir()
    props = work / "single" / "server.properties"
    props.write_text(f"listeners=PLAINTEXT://127.0.0.1:{single_port}\nlog.dirs={work / 'single' / 'data'}\n"
                     f"console.enable=false\n{fsync}")
    log = open(work / "single" / "broker.log", "wb")
    single = subprocess.Popen([str(strata_binary()), "serve", "--config", str(props)], stdout=log,
                              stderr=subprocess.STDOUT)
    (work / "cluster").mkdir()
    cluster = Cluster(work / "cluster", extra=fsync)
    setups = {
        "single node, RF 1": (f"127.0.0.1:{single_port}", 1, {}),
        "three nodes, RF 3": (cluster.bootstrap, 3, {"min.insync.replicas": "2"}),
    }
    samples = {k: {"produce": [], "consume": []} for k in setups}
    try:
        assert wait_for_port(single_port, 30, alive=lambda: single.poll() is None), "no broker"
        admin3 = AdminClient({"bootstrap.servers": cluster.bootstrap})
        wait_until(lambda: len(admin3.list_topics(timeout=5).brokers) == 3, 60, "three brokers")
        for r in range(args.rounds):
            for kind, (bootstrap, rf, config) in setups.items():
                admin = AdminClient({"bootstrap.servers": bootstrap})
                topic = f"bench-rf{rf}-{r}"
                admin.create_topics([NewTopic(topic, 1, rf, config=config)])[topic].result(30)
                wait_until(lambda: len(admin.list_topics(topic, timeout=5).topics[topic].partitions) == 1,
                           30, "the topic")
                produced = produce_all(bootstrap, topic, args.records)
                consumed = consume({"bootstrap.servers": bootstrap}, topic, args.records)
                admin.delete_topics([topic])[topic].result(30)
                mib = args.records * RECORD_BYTES / MB
                samples[kind]["produce"].append(mib / produced)
                samples[kind]["consume"].append(mib / consumed)
                print(f"round {r} {kind}: produce {mib / produced:.1f} MiB/s, consume "
                      f"{mib / consumed:.1f} MiB/s", flush=True)
    finally:
        single.terminate()
        single.wait(30)
        log.close()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    med = {k: {m: statistics.median(v) for m, v in s.items()} for k, s in samples.items()}
    one, three = med["single node, RF 1"], med["three nodes, RF 3"]
    rows = "\n".join(
        f"| {label} | {one[m]:.1f} | {three[m]:.1f} | {three[m] / one[m]:.2f} |"
        for label, m in (("produce MiB/s (acks=all, idempotent)", "produce"),
                         ("consume MiB/s (from the leader)", "consume")))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M")
    md = f"""# Replication factor 3 next to a single node, {stamp} UTC

`bench/replicated.py`, one run on this 2-core shared VM: confluent-kafka produces
{args.records} x 1 KiB records with acks=all (idempotent) to a 1-partition topic, then reads
them back; a single node (RF 1) and three local processes (RF 3, min.insync.replicas=2)
alternating, medians of {args.rounds} rounds; `strata.fsync.before.ack={args.fsync}` on every
node. The three brokers and the client share the two cores.

| | single node | RF 3, three nodes | RF 3 / single |
| --- | --- | --- | --- |
{rows}
"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"replicated-{stamp}.md").write_text(md)
    (RESULTS / f"replicated-{stamp}.json").write_text(json.dumps(
        {"samples": samples, "median": med, "records": args.records,
         "fsync_before_ack": args.fsync}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
