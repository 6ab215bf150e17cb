#!/usr/bin/env python3
"""Many partitions on one node under an open-file limit (issue 11, part 4).

One run, on this machine:

1. starts a broker under `prlimit --nofile=N:N` (default 20,000: the broker cannot raise it),
   `strata.fsync.before.ack` as given (default true, the broker's default);
2. creates PARTITIONS partitions (default 10,000): one topic `hot` of 1,000 partitions and
   topics of 100 for the rest, timing the creation;
3. Metadata latency for all topics (confluent-kafka `list_topics()`, median and p99 of 20);
4. `strata perf produce` to `hot` (1 KiB records, acks=all, spread over its 1,000
   partitions) and `strata perf consume` of them;
5. resident memory and open descriptors of the broker, idle;
6. a clean stop and a start again: start-up time (spawn to the listener accepting; the
   broker opens every partition before it listens), then that Metadata lists every
   partition and that a fetch of `hot` reads everything back (perf consume again);
7. writes `bench/results/partitions-<date>.md` and `.json`.

Usage: bench/partitions.py [--partitions 10000] [--nofile 20000] [--records 200000]
[--fsync true|false]. Needs the release binary (STRATA_BIN) and `.venv` (confluent-kafka).
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


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, binary, data_dir, port, nofile, fsync, log_path):
        self.port = port
        self.log = open(log_path, "ab")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            ["prlimit", f"--nofile={nofile}:{nofile}", "--", str(binary), "serve",
             "--set", f"listeners=PLAINTEXT://127.0.0.1:{port}",
             "--set", f"log.dirs={data_dir}",
             "--set", f"strata.fsync.before.ack={fsync}",
             "--set", "console.enable=false",
             "--set", "group.initial.rebalance.delay.ms=0"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                self.startup_s = time.perf_counter() - started
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("broker did not start")

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def rss_mib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def open_fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def strata(binary, bootstrap, *args, timeout=900):
    out = subprocess.run([str(binary), "--bootstrap-server", bootstrap, *args],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"strata {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def metadata_latency(bootstrap, rounds=20):
    """Seconds per full Metadata request (all topics), through librdkafka."""
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.list_topics(timeout=60)  # connect first
    times = []
    partitions = 0
    for _ in range(rounds):
        t = time.perf_counter()
        md = admin.list_topics(timeout=60)
        times.append(time.perf_counter() - t)
        partitions = sum(len(t.partitions) for name, t in md.topics.items()
                         if not name.startswith("__"))
    times.sort()
    return {"p50_ms": statistics.median(times) * 1000,
            "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
            "partitions_listed": partitions}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", type=int, default=10_000)
    ap.add_argument("--nofile", type=int, default=20_000)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--fsync", default="true")
    args = ap.parse_args()
    binary = Path(os.environ.get("STRATA_BIN", ROOT / "target" / "release" / "strata"))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M")
    work = Path(tempfile.mkdtemp(prefix="strata-partitions-", dir=os.environ.get("BENCH_DIR")))
    data = work / "data"
    port = free_port()
    res = {"date": stamp, "partitions": args.partitions, "nofile": args.nofile,
           "fsync_before_ack": args.fsync, "records": args.records, "record_size": 1024,
           "machine": {"cpus": os.cpu_count()}}
    hot = min(1000, args.partitions)
    try:
        broker = Broker(binary, data, port, args.nofile, args.fsync, work / "broker.log")
        res["empty_startup_s"] = broker.startup_s
        log(f"broker up in {broker.startup_s:.2f}s; creating {args.partitions} partitions")
        t = time.perf_counter()
        strata(binary, broker.bootstrap, "topics", "create", "hot", "--partitions", str(hot))
        rest = args.partitions - hot
        i = 0
        while rest > 0:
            n = min(100, rest)
            strata(binary, broker.bootstrap, "topics", "create", f"bulk-{i:03}",
                   "--partitions", str(n))
            rest -= n
            i += 1
        res["create_s"] = time.perf_counter() - t
        res["open_fds_after_create"] = broker.open_fds()
        log(f"created in {res['create_s']:.1f}s; broker holds {res['open_fds_after_create']} fds")
        res["metadata"] = metadata_latency(broker.bootstrap)
        log(f"metadata: {res['metadata']}")
        produce = json.loads(strata(
            binary, broker.bootstrap, "perf", "produce", "--topic", "hot",
            "--num-records", str(args.records), "--record-size", "1024", "--acks", "all",
            "--json"))
        res["produce"] = produce
        log(f"produce: {produce.get('mb_per_sec')} MiB/s")
        consume = json.loads(strata(
            binary, broker.bootstrap, "perf", "consume", "--topic", "hot",
            "--num-records", str(args.records), "--json"))
        res["consume"] = consume
        log(f"consume: {consume.get('mb_per_sec')} MiB/s")
        res["rss_mib_after_load"] = broker.rss_mib()
        res["open_fds_after_load"] = broker.open_fds()
        broker.stop()

        broker = Broker(binary, data, port, args.nofile, args.fsync, work / "broker.log")
        res["restart_startup_s"] = broker.startup_s
        res["rss_mib_after_restart"] = broker.rss_mib()
        res["open_fds_after_restart"] = broker.open_fds()
        log(f"restarted in {broker.startup_s:.2f}s, RSS {res['rss_mib_after_restart']:.0f} MiB")
        res["metadata_after_restart"] = metadata_latency(broker.bootstrap)
        consume = json.loads(strata(
            binary, broker.bootstrap, "perf", "consume", "--topic", "hot",
            "--num-records", str(args.records), "--json"))
        res["consume_after_restart"] = consume
        broker.stop()
        text = (work / "broker.log").read_text(errors="replace")
        res["too_many_open_files_in_log"] = "Too many open files" in text
        res["limit_line"] = next((line for line in text.splitlines()
                                  if "open-file limit" in line), "")[-300:]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"partitions-{stamp}.json").write_text(json.dumps(res, indent=2))
    p, c = res["produce"], res["consume"]
    md = f"""# {args.partitions} partitions on one node, open-file limit {args.nofile}

{stamp} UTC, {os.cpu_count()} cores (shared VM), `strata.fsync.before.ack={args.fsync}`,
broker under `prlimit --nofile={args.nofile}:{args.nofile}`; topic `hot` has {hot} partitions,
the rest are 100-partition topics. `bench/partitions.py`, one run.

| measure | value |
| --- | --- |
| start-up, empty data directory | {res['empty_startup_s']:.2f} s |
| create {args.partitions} partitions | {res['create_s']:.1f} s |
| descriptors held after creating them | {res['open_fds_after_create']} |
| Metadata, all topics (p50 / p99 of 20) | {res['metadata']['p50_ms']:.1f} / {res['metadata']['p99_ms']:.1f} ms ({res['metadata']['partitions_listed']} partitions) |
| produce to `hot`, {args.records} x 1 KiB, acks=all | {p.get('mb_per_sec', 0):.1f} MiB/s, {p.get('records_per_sec', 0):.0f} records/s |
| consume `hot` | {c.get('mb_per_sec', 0):.1f} MiB/s, {c.get('records_per_sec', 0):.0f} records/s |
| RSS after the load | {res['rss_mib_after_load']:.0f} MiB |
| descriptors held after the load | {res['open_fds_after_load']} |
| start-up with {args.partitions} partitions (clean stop before) | {res['restart_startup_s']:.2f} s |
| RSS after that start-up | {res['rss_mib_after_restart']:.0f} MiB |
| descriptors held after that start-up | {res['open_fds_after_restart']} |
| Metadata after restart (p50 / p99) | {res['metadata_after_restart']['p50_ms']:.1f} / {res['metadata_after_restart']['p99_ms']:.1f} ms ({res['metadata_after_restart']['partitions_listed']} partitions) |
| consume `hot` after restart | {res['consume_after_restart'].get('mb_per_sec', 0):.1f} MiB/s |
| "Too many open files" in the broker log | {res['too_many_open_files_in_log']} |

Start-up log line: `{res['limit_line'].strip()}`
"""
    (RESULTS / f"partitions-{stamp}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
