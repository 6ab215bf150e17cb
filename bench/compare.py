#!/usr/bin/env python3
"""Before/after throughput of two `strata` binaries, in one run, as ratios.

For each binary in turn (alternating, ROUNDS rounds, a fresh broker each time, the broker's
default `strata.fsync.before.ack=true` unless --fsync false): `strata perf produce` of N 1 KiB
records to a 1-partition topic with acks=1 and with acks=all, then `strata perf consume` of
each topic; then both brokers at once, one topic written once each, consumed alternately
2 x ROUNDS times each (less noisy). Reports the median MiB/s of each and after/before ratios, and writes
`bench/results/compare-<date>.md` / `.json`.

Usage: bench/compare.py BEFORE_BIN AFTER_BIN [--records 200000] [--rounds 3] [--fsync true]
"""

import argparse
import contextlib
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def broker(binary, work, fsync="true"):
    """A fresh `binary serve` on a free loopback port with its data in `work`; yields the
    bootstrap address, stops the broker and removes its data on exit."""
    port = free_port()
    data = Path(work) / f"data-{port}"
    logf = open(Path(work) / f"broker-{port}.log", "wb")
    proc = subprocess.Popen(
        [binary, "serve", "--set", f"listeners=PLAINTEXT://127.0.0.1:{port}",
         "--set", f"log.dirs={data}", "--set", f"strata.fsync.before.ack={fsync}",
         "--set", "console.enable=false"],
        stdout=logf, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("broker did not start")
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        logf.close()
        shutil.rmtree(data, ignore_errors=True)


def run(binary, work, records, fsync):
    with broker(binary, work, fsync) as boot:

        def strata(*args):
            out = subprocess.run([binary, "--bootstrap-server", boot, *args],
                                 capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                raise RuntimeError(out.stderr)
            return out.stdout

        out = {}
        for acks in ("1", "all"):
            topic = f"c-{acks}"
            strata("topics", "create", topic, "--partitions", "1")
            p = json.loads(strata("perf", "produce", "--topic", topic, "--num-records",
                                  str(records), "--record-size", "1024", "--acks", acks,
                                  "--json"))
            out[f"produce acks={acks}"] = p["mb_per_sec"]
            c = json.loads(strata("perf", "consume", "--topic", topic, "--num-records",
                                  str(records), "--json"))
            out[f"consume (after acks={acks})"] = c["mb_per_sec"]
        return out


def consume_repeat(before, after, work, records, rounds, fsync):
    """Both brokers up at once, each with the same topic written once; then alternating
    `strata perf consume` of it, `rounds` times each (less noise than one consume per broker).
    """
    procs, boots = [], {}
    try:
        for which, binary in (("before", before), ("after", after)):
            port = free_port()
            logf = open(Path(work) / f"repeat-{which}.log", "wb")
            procs.append((subprocess.Popen(
                [binary, "serve", "--set", f"listeners=PLAINTEXT://127.0.0.1:{port}",
                 "--set", f"log.dirs={Path(work) / ('repeat-' + which)}",
                 "--set", f"strata.fsync.before.ack={fsync}",
                 "--set", "console.enable=false"],
                stdout=logf, stderr=subprocess.STDOUT), logf))
            boots[which] = (binary, f"127.0.0.1:{port}", port)
        for which, (binary, boot, port) in boots.items():
            deadline = time.time() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("broker did not start")
                    time.sleep(0.05)
            subprocess.run([binary, "--bootstrap-server", boot, "topics", "create", "r",
                            "--partitions", "1"], check=True, capture_output=True, timeout=60)
            subprocess.run([binary, "--bootstrap-server", boot, "perf", "produce", "--topic", "r",
                            "--num-records", str(records), "--record-size", "1024", "--acks",
                            "1", "--json"], check=True, capture_output=True, timeout=600)
        out = {"before": [], "after": []}
        for _ in range(rounds):
            for which, (binary, boot, _) in boots.items():
                r = subprocess.run([binary, "--bootstrap-server", boot, "perf", "consume",
                                    "--topic", "r", "--num-records", str(records), "--json"],
                                   check=True, capture_output=True, text=True, timeout=600)
                out[which].append(json.loads(r.stdout)["mb_per_sec"])
        return out
    finally:
        for proc, logf in procs:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            logf.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fsync", default="true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="strata-compare-")
    samples = {"before": [], "after": []}
    try:
        for r in range(args.rounds):
            for which in ("before", "after"):
                res = run(getattr(args, which), work, args.records, args.fsync)
                samples[which].append(res)
                print(f"round {r} {which}: {json.dumps({k: round(v, 1) for k, v in res.items()})}",
                      flush=True)
        repeat = consume_repeat(args.before, args.after, work, args.records, args.rounds * 2,
                                args.fsync)
        print(f"consume repeat: {json.dumps(repeat)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    keys = list(samples["before"][0].keys())
    med = {w: {k: statistics.median(s[k] for s in samples[w]) for k in keys} for w in samples}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M")
    for w in ("before", "after"):
        med[w]["consume, both brokers up, repeated"] = statistics.median(repeat[w])
    keys.append("consume, both brokers up, repeated")
    rows = "\n".join(
        f"| {k} | {med['before'][k]:.1f} | {med['after'][k]:.1f} | "
        f"{med['after'][k] / med['before'][k]:.2f} |" for k in keys)
    md = f"""# Before/after throughput, {stamp} UTC

`bench/compare.py`, one run on this 2-core shared VM: 1 partition, {args.records} x 1 KiB
records, `strata perf` defaults, a fresh broker per round, `strata.fsync.before.ack={args.fsync}`;
medians of {args.rounds} alternating rounds (MiB/s).

before: `{args.before}`
after: `{args.after}`

| run | before MiB/s | after MiB/s | after/before |
| --- | --- | --- | --- |
{rows}
"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"compare-{stamp}.md").write_text(md)
    (RESULTS / f"compare-{stamp}.json").write_text(
        json.dumps({"samples": samples, "consume_repeat": repeat, "median": med, "fsync_before_ack": args.fsync,
                    "records": args.records}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
