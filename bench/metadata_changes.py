#!/usr/bin/env python3
"""How long a metadata change takes on a broker that already holds many partitions.

For each binary in turn (a fresh broker each): create BIG partitions as topics of 1000
partitions (timed), then create SMALL one-partition topics one after another with `strata topics create` and
report the median and p90 time of one creation. Before the metadata publisher every change
re-checked every hosted partition and copied every partition's image; since, a change costs
what it touched. The client is the AFTER binary for both brokers, so only the broker differs.

Usage: bench/metadata_changes.py BEFORE_BIN AFTER_BIN [--big 10000] [--small 40]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import broker  # noqa: E402  (the same fresh broker as the throughput bench)


def measure(binary, client, work, big, small):
    with broker(binary, work) as boot:

        def create(name, partitions):
            started = time.perf_counter()
            out = subprocess.run([client, "--bootstrap-server", boot, "topics", "create", name,
                                  "--partitions", str(partitions)],
                                 capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                raise RuntimeError(out.stderr)
            return time.perf_counter() - started

        big_s = sum(create(f"big-{i}", min(1000, big - i * 1000))
                    for i in range((big + 999) // 1000))
        times = sorted(create(f"small-{i}", 1) * 1000 for i in range(small))
        return {"big_s": big_s, "median_ms": statistics.median(times),
                "p90_ms": times[int(len(times) * 0.9) - 1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--big", type=int, default=10_000)
    ap.add_argument("--small", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for label, binary in (("before", args.before), ("after", args.after)):
            r = measure(binary, args.after, work, args.big, args.small)
            print(f"{label}: {args.big} partitions created in {r['big_s']:.1f} s; then one "
                  f"1-partition topic: median {r['median_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms")


if __name__ == "__main__":
    main()
