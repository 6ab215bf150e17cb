#!/usr/bin/env python3
"""Usage: bench/ab_base.py BASE_BIN NOW_BIN. The two binaries alternate on fresh brokers (bench/run.py helpers): confluent-kafka 1 KiB to 1 partition and strata perf 100 B to 16 partitions, acks=1/all, fsync on and off; prints the medians of 4 rounds and now/base as a Markdown table. bench/compare.py is the strata-perf-only, 1-partition counterpart."""
import sys, statistics, tempfile, json
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import run as R
bins = {"base": sys.argv[1], "now": sys.argv[2]}
res = {}
with tempfile.TemporaryDirectory() as work:
    for rnd in range(4):
        for name, b in bins.items():
            for fsync in (True, False):
                br = R.Broker(b, work, fsync)
                try:
                    for acks in ("1", "all"):
                        t = f"c{acks}"
                        R.create_topic(b, br.bootstrap, t, 1)
                        r = R.third_party_produce(br.bootstrap, t, 1024, 300000, acks)
                        res.setdefault((name, "librdkafka 1KiB 1p", fsync, acks), []).append(r["mb_per_sec"])
                        t = f"p{acks}"
                        R.create_topic(b, br.bootstrap, t, 16)
                        r = R.perf(b, br.bootstrap, "produce", "--topic", t, "--num-records", "2000000",
                                   "--record-size", "100", "--acks", acks, "--producers", "2")
                        res.setdefault((name, "strata perf 100B 16p", fsync, acks), []).append(r["mb_per_sec"])
                finally:
                    br.stop()
print("| run | fsync before ack | acks | base MiB/s | now MiB/s | now/base |")
print("|---|---|---|---|---|---|")
for k in sorted(set(k[1:] for k in res)):
    b = statistics.median(res[("base",) + k]); a = statistics.median(res[("now",) + k])
    print(f"| {k[0]} | {'on' if k[1] else 'off'} | {k[2]} | {b:.0f} | {a:.0f} | {a/b:.2f} |")
