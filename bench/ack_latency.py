#!/usr/bin/env python3
"""acks=all latency with 1, 100 and 1,000 partitions written at once, fsync-before-ack on.

For each partition count and each flusher setting (`strata.fsync.parallelism=1`: the
partitions of a group commit fsynced one after another, as before parallel fsyncs;
`16`: the default, side by side), a fresh broker is started, a topic with that many
partitions is created, and confluent-kafka (librdkafka) produces 1 KiB records round-robin
over every partition with acks=all for BENCH_SECONDS (default 10), twice: at full load (as
fast as it can, at most 10,000 records queued in the client) and at a fixed BENCH_RATE
(default 20,000 records/s). Each record's latency is delivery report time minus produce()
time (client queueing included). Prints a Markdown table and
writes bench/results/ack-latency-<date>.md and .json.

    .venv/bin/python bench/ack_latency.py [path/to/strata]
"""

import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
PARTITION_COUNTS = [int(x) for x in os.environ.get("BENCH_PARTITIONS", "1,100,1000").split(",")]
PARALLELISM = [int(x) for x in os.environ.get("BENCH_PARALLELISM", "1,16").split(",")]
RECORD = b"x" * 1024
RATE = float(os.environ.get("BENCH_RATE", "20000"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("broker exited during start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("broker did not start")


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def measure(producer, partitions, rate):
    """Produces for SECONDS (at `rate` records/s, or as fast as possible if None); returns
    (records acknowledged per second, sorted latencies in seconds)."""
    latencies = []

    def make_cb(sent):
        def cb(err, _msg):
            if err is None:
                latencies.append(time.monotonic() - sent)
        return cb

    start = time.monotonic()
    sent = 0
    while True:
        now = time.monotonic()
        if now - start >= SECONDS:
            break
        if rate is not None and sent >= (now - start) * rate:
            producer.poll(0.0005)
            continue
        try:
            producer.produce("lat", RECORD, partition=sent % partitions, on_delivery=make_cb(now))
            sent += 1
        except BufferError:
            producer.poll(0.001)
            continue
        if sent % 500 == 0:
            producer.poll(0)
    producer.flush(120)
    elapsed = time.monotonic() - start
    latencies.sort()
    return len(latencies) / elapsed, latencies


def run_one(binary, partitions, parallelism, workdir):
    port = free_port()
    data = Path(workdir) / f"data-{partitions}-{parallelism}"
    proc = subprocess.Popen(
        [
            str(binary), "serve",
            "--set", f"log.dirs={data}",
            "--set", f"listeners=PLAINTEXT://127.0.0.1:{port}",
            "--set", "strata.fsync.before.ack=true",
            "--set", "console.enable=false",
            "--set", f"strata.fsync.parallelism={parallelism}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        bootstrap = f"127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("lat", num_partitions=partitions, replication_factor=1)])["lat"].result(120)
        producer = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 10000,
        })
        # Warm-up: metadata for every partition, connections up.
        for p in range(partitions):
            producer.produce("lat", RECORD, partition=p)
        producer.flush(60)
        rows = []
        for load, rate in (("full", None), (f"{RATE:,.0f}/s", RATE)):
            per_s, latencies = measure(producer, partitions, rate)
            rows.append({
                "partitions": partitions,
                "fsync_parallelism": parallelism,
                "load": load,
                "records": len(latencies),
                "records_per_s": per_s,
                "p50_ms": percentile(latencies, 0.50) * 1000,
                "p99_ms": percentile(latencies, 0.99) * 1000,
                "max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
            })
        return rows
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


def main():
    binary = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "release" / "strata"
    rows = []
    with tempfile.TemporaryDirectory(prefix="strata-ack-latency-", dir=ROOT / "target") as work:
        for partitions in PARTITION_COUNTS:
            for parallelism in PARALLELISM:
                for row in run_one(binary, partitions, parallelism, work):
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    lines = [
        "| load | partitions | fsync parallelism | records/s | p50 ms | p99 ms | max ms | p99 vs parallelism 1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {(r["load"], r["partitions"]): r["p99_ms"] for r in rows if r["fsync_parallelism"] == 1}
    for r in sorted(rows, key=lambda r: (r["load"] != "full", r["partitions"], r["fsync_parallelism"])):
        b = base.get((r["load"], r["partitions"]))
        ratio = r["p99_ms"] / b if b else float("nan")
        lines.append(
            f"| {r['load']} | {r['partitions']} | {r['fsync_parallelism']} | {r['records_per_s']:,.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {ratio:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    header = (
        f"# acks=all latency by partitions written at once ({stamp})\n\n"
        f"confluent-kafka, 1 KiB records round-robin over every partition for {SECONDS:.0f} s at full "
        f"load (at most 10,000 queued in the client) and at {RATE:,.0f} records/s, acks=all, "
        f"strata.fsync.before.ack=true (fsync before every ack). Latency includes client queueing. "
        f"`strata.fsync.parallelism=1` fsyncs a group commit's partitions one after another "
        f"(the flusher before parallel fsyncs); 16 is the default.\n\n"
    )
    (out / f"ack-latency-{stamp}.md").write_text(header + table + "\n")
    (out / f"ack-latency-{stamp}.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
