#!/usr/bin/env python3
"""Produce and consume over TLS next to plaintext, on the same broker, in one run.

One broker with a PLAINTEXT and an SSL listener (a PEM keystore made with openssl by the
test helpers, RSA 2048 server key, TLS 1.3 as clients negotiate it). confluent-kafka
(librdkafka, OpenSSL) produces N 1 KiB records with acks=1 to a 1-partition topic through
each listener, then consumes them through the same listener; plaintext and TLS alternate for
ROUNDS rounds, each round on a fresh topic deleted after it. Reports the median MiB/s of each, TLS/plaintext
ratios, and the broker's CPU seconds per GiB moved (from /proc), and writes
`bench/results/tls-<date>.md` / `.json`.

The client is the same for both rows and shares the 2 cores with the broker, so the ratio,
not the absolute figure, is the measurement.

Usage: bench/tls.py [--records 300000] [--rounds 3] [--fsync false] [--binary PATH]
Needs `.venv` (confluent-kafka) and openssl.
"""

import argparse
import datetime
import json
import os
import shutil
import socket
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

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from strata_e2e import TestPki, free_port, wait_for_port  # noqa: E402

RECORD_BYTES = 1024


def broker_cpu_seconds(pid: int) -> float:
    """utime + stime of the broker process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def produce(conf, topic, records):
    producer = Producer({**conf, "acks": "1", "linger.ms": 5, "batch.size": 1_000_000,
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
    assert producer.flush(120) == 0, "undelivered records"
    elapsed = time.perf_counter() - started
    del producer  # disconnects now, not when the broker is gone
    return elapsed


def consume(conf, topic, records):
    consumer = Consumer({**conf, "group.id": f"bench-{topic}", "enable.auto.commit": False,
                         "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 8388608})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got, started = 0, time.perf_counter()
    while got < records:
        for msg in consumer.consume(10_000, timeout=1.0):
            if msg.error():
                raise RuntimeError(msg.error())
            got += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fsync", default="false")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "strata"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strata-tls-bench-"))
    pki = TestPki(work / "pki")
    server = pki.issue("server", "/CN=localhost", server=True, rsa=True)
    ports = {"PLAINTEXT": free_port(), "SSL": free_port()}
    props = work / "server.properties"
    props.write_text("\n".join([
        f"listeners=PLAINTEXT://127.0.0.1:{ports['PLAINTEXT']},SSL://127.0.0.1:{ports['SSL']}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL",
        f"log.dirs={work / 'data'}",
        f"strata.fsync.before.ack={args.fsync}",
        "console.enable=false",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={server.keystore}",
    ]) + "\n")
    log = open(work / "broker.log", "wb")
    proc = subprocess.Popen([args.binary, "serve", "--config", str(props)], stdout=log,
                            stderr=subprocess.STDOUT)
    clients = {
        "plaintext": {"bootstrap.servers": f"127.0.0.1:{ports['PLAINTEXT']}"},
        "TLS": {"bootstrap.servers": f"127.0.0.1:{ports['SSL']}", "security.protocol": "SSL",
                "ssl.ca.location": str(pki.ca)},
    }
    samples = {k: {"produce": [], "consume": [], "cpu_per_gib": []} for k in clients}
    gib = args.records * RECORD_BYTES / (1024 * MB)
    try:
        assert wait_for_port(ports["SSL"], 30, alive=lambda: proc.poll() is None), "no broker"
        admin = AdminClient(clients["plaintext"])
        for r in range(args.rounds):
            for kind, conf in clients.items():
                topic = f"bench-{kind.lower()}-{r}"
                admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
                cpu = broker_cpu_seconds(proc.pid)
                produced = produce(conf, topic, args.records)
                consumed = consume(conf, topic, args.records)
                cpu = broker_cpu_seconds(proc.pid) - cpu
                # Each round starts from the same disk and page-cache state.
                admin.delete_topics([topic])[topic].result(30)
                mib = args.records * RECORD_BYTES / MB
                samples[kind]["produce"].append(mib / produced)
                samples[kind]["consume"].append(mib / consumed)
                samples[kind]["cpu_per_gib"].append(cpu / (2 * gib))
                print(f"round {r} {kind}: produce {mib / produced:.0f} MiB/s, consume "
                      f"{mib / consumed:.0f} MiB/s, broker CPU {cpu / (2 * gib):.2f} s/GiB",
                      flush=True)
    finally:
        admin = None
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)

    med = {k: {m: statistics.median(v) for m, v in s.items()} for k, s in samples.items()}
    rows = "\n".join(
        f"| {label} | {med['plaintext'][m]:.{p}f} | {med['TLS'][m]:.{p}f} | "
        f"{med['TLS'][m] / med['plaintext'][m]:.2f} |"
        for label, m, p in (("produce MiB/s (acks=1)", "produce", 0),
                            ("consume MiB/s", "consume", 0),
                            ("broker CPU s per GiB (produce + consume)", "cpu_per_gib", 2)))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M")
    md = f"""# TLS next to plaintext, {stamp} UTC

`bench/tls.py`, one run on this 2-core shared VM: one broker with a PLAINTEXT and an SSL
listener (RSA 2048 certificate, TLS 1.3), confluent-kafka {args.records} x 1 KiB records
acks=1 to a 1-partition topic, then consumed, through each listener; plaintext and TLS
alternating, medians of {args.rounds} rounds; `strata.fsync.before.ack={args.fsync}`.

| | plaintext | TLS | TLS/plaintext |
| --- | --- | --- | --- |
{rows}
"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"tls-{stamp}.md").write_text(md)
    (RESULTS / f"tls-{stamp}.json").write_text(json.dumps(
        {"samples": samples, "median": med, "records": args.records,
         "fsync_before_ack": args.fsync}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
