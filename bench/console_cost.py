#!/usr/bin/env python3
"""What the console costs the broker, measured in one run as ratios.

One broker (the default `strata.fsync.before.ack=true`, or --fsync false) with its console on a
free port. Alternating ROUNDS times: `strata perf produce` of N 1 KiB records (acks=1) into a
fresh 4-partition topic, then `strata perf consume` of them, once quiet and once while a
watcher scrapes `/metrics` every second and reloads the busy topic's console page (newest
messages) and the topic list every second, as a Prometheus server and an open browser tab
would. Reports the median MB/s of each and watched/quiet ratios, and writes
`bench/results/console-cost-<date>.md` / `.json`.

Usage: bench/console_cost.py [--binary target/release/strata] [--records 2000000] [--rounds 3]
"""

import argparse
import datetime
import json
import re
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Watcher(threading.Thread):
    """Scrapes /metrics and loads two console pages once a second until stopped."""

    def __init__(self, base, topic):
        super().__init__(daemon=True)
        self.base, self.topic = base, topic
        self.stop = threading.Event()
        self.requests = 0
        self.bytes = 0

    def run(self):
        urls = [f"{self.base}metrics", f"{self.base}ui/topics/{self.topic}?partition=all",
                f"{self.base}ui/topics"]
        while not self.stop.is_set():
            started = time.monotonic()
            for url in urls:
                try:
                    with urllib.request.urlopen(url, timeout=10) as r:
                        self.bytes += len(r.read())
                        self.requests += 1
                except OSError:
                    pass
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "strata"))
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fsync", default="true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="console-cost-"))
    port = free_port()
    log = open(work / "broker.log", "wb")
    proc = subprocess.Popen(
        [args.binary, "serve", "--set", f"listeners=PLAINTEXT://127.0.0.1:{port}",
         "--set", f"log.dirs={work / 'data'}", "--set", f"strata.fsync.before.ack={args.fsync}",
         "--set", "console.listener=127.0.0.1:0"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        base = None
        while base is None:
            found = re.findall(r"console=(http://\S+)", (work / "broker.log").read_text(errors="replace"))
            if found:
                base = found[-1]
            elif time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("broker did not start")
            else:
                time.sleep(0.05)
        boot = f"127.0.0.1:{port}"

        def strata(*a):
            out = subprocess.run([args.binary, "--bootstrap-server", boot, *a],
                                 capture_output=True, text=True, timeout=900)
            if out.returncode != 0:
                raise RuntimeError(out.stderr)
            return out.stdout

        results = {"quiet": {"produce": [], "consume": []}, "watched": {"produce": [], "consume": []}}
        watched_requests = 0
        for r in range(args.rounds):
            for mode in (("quiet", "watched") if r % 2 == 0 else ("watched", "quiet")):
                topic = f"cost-{mode}-{r}"
                strata("topics", "create", topic, "--partitions", "4")
                watcher = Watcher(base, topic) if mode == "watched" else None
                if watcher:
                    watcher.start()
                p = json.loads(strata("perf", "produce", "--topic", topic, "--num-records",
                                      str(args.records), "--record-size", "1024", "--acks", "1", "--json"))
                c = json.loads(strata("perf", "consume", "--topic", topic, "--num-records",
                                      str(args.records), "--json"))
                if watcher:
                    watcher.stop.set()
                    watcher.join()
                    watched_requests += watcher.requests
                # Keep the disk from filling over the rounds.
                strata("topics", "delete", topic)
                results[mode]["produce"].append(p["mb_per_sec"])
                results[mode]["consume"].append(c["mb_per_sec"])
                print(f"round {r} {mode}: produce {p['mb_per_sec']:.1f} MB/s, consume {c['mb_per_sec']:.1f} MB/s", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in results.items()}
    ratios = {k: med["watched"][k] / med["quiet"][k] for k in ("produce", "consume")}
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    RESULTS.mkdir(parents=True, exist_ok=True)
    md = [f"# Console cost, {stamp}", "",
          f"Binary {args.binary}; fsync before ack: {args.fsync}; {args.records} x 1 KiB records, acks=1, "
          f"4 partitions; {args.rounds} alternating rounds; watched = /metrics, the busy topic's page and "
          f"the topic list each loaded once a second ({watched_requests} HTTP requests in all).", "",
          "| | quiet MB/s (median) | watched MB/s (median) | watched / quiet |", "|---|---|---|---|"]
    for k in ("produce", "consume"):
        md.append(f"| {k} | {med['quiet'][k]:.1f} | {med['watched'][k]:.1f} | {ratios[k]:.2f} |")
    (RESULTS / f"console-cost-{stamp}.md").write_text("\n".join(md) + "\n")
    (RESULTS / f"console-cost-{stamp}.json").write_text(json.dumps(
        {"results": results, "medians": med, "ratios": ratios, "fsync": args.fsync,
         "records": args.records, "watched_requests": watched_requests}, indent=2))
    print("\n".join(md))


if __name__ == "__main__":
    main()
