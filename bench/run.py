#!/usr/bin/env python3
"""Strata's performance suite: one run measures this machine's ceilings, then Strata.

Run it through `bench/run.sh` (builds the release binary, sets up the Python environment).
In one run, on this machine:

1. ceilings: loopback TCP bandwidth with one stream, sequential write with fdatasync, and
   memory copy;
2. `strata perf produce` for 1 KiB and 100 B records, 1 and 16 partitions, acks=1 and
   acks=all, with `strata.fsync.before.ack` on and off (a fresh broker per fsync policy);
3. the same produce with a third-party client (confluent-kafka, i.e. librdkafka) for 1 KiB,
   1 partition;
4. consume only (`strata perf consume`, from the page cache) for each record size;
5. end-to-end latency at half of the peak produce rate (fsync off): a rate-capped producer and
   a consumer that measures now minus the record timestamp;
6. broker memory: resident set size when idle with 1,000 partitions.

It writes `bench/results/<date>.md` and `.json` (each figure with its ratio to the matching
ceiling) and `bench/results/<date>.svg` (throughput and latency bars). Speed is never asserted:
this only reports. Environment: STRATA_BIN, BENCH_QUICK=1 (smaller runs, for a smoke test).
"""

import datetime
import shutil
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
QUICK = os.environ.get("BENCH_QUICK") == "1"
MB = 1024 * 1024


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- ceilings --------------------------------------------------------------------------------


def ceiling_loopback(total=(1 << 30) if not QUICK else (128 << 20), chunk=1 << 20):
    """Bytes/s through one loopback TCP stream (1 MiB writes and reads)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    received = [0]

    def sink():
        conn, _ = server.accept()
        buf = bytearray(chunk)
        view = memoryview(buf)
        while True:
            n = conn.recv_into(view)
            if n == 0:
                break
            received[0] += n
        conn.close()

    t = threading.Thread(target=sink)
    t.start()
    client = socket.create_connection(("127.0.0.1", port))
    data = memoryview(bytes(chunk))
    start = time.perf_counter()
    sent = 0
    while sent < total:
        client.sendall(data)
        sent += chunk
    client.shutdown(socket.SHUT_WR)
    t.join()
    elapsed = time.perf_counter() - start
    client.close()
    server.close()
    return received[0] / elapsed


def ceiling_fsync_write(directory, total=(1 << 30) if not QUICK else (128 << 20), chunk=1 << 20):
    """Bytes/s of sequential 1 MiB writes followed by one fdatasync (dd conv=fdatasync)."""
    path = Path(directory) / "ceiling.tmp"
    data = bytes(chunk)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        start = time.perf_counter()
        written = 0
        while written < total:
            written += os.write(fd, data)
        os.fdatasync(fd)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return written / elapsed


def ceiling_memcpy(size=256 << 20, rounds=8 if not QUICK else 2):
    """Bytes/s of copying a 256 MiB buffer."""
    src = bytearray(os.urandom(1 << 20)) * (size >> 20)
    dst = bytearray(size)
    start = time.perf_counter()
    for _ in range(rounds):
        dst[:] = src
    return size * rounds / (time.perf_counter() - start)


# ---- broker ----------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, binary, workdir, fsync):
        self.port = free_port()
        self.dir = Path(workdir) / f"data-{self.port}"
        self.log = open(Path(workdir) / f"broker-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [str(binary), "serve",
             "--set", f"listeners=PLAINTEXT://127.0.0.1:{self.port}",
             "--set", f"log.dirs={self.dir}",
             "--set", f"strata.fsync.before.ack={'true' if fsync else 'false'}",
             "--set", "console.enable=false",
             "--set", "group.initial.rebalance.delay.ms=0"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("broker did not start")

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        # The runs write gigabytes: give the space back at once.
        shutil.rmtree(self.dir, ignore_errors=True)


def strata(binary, bootstrap, *args, timeout=600):
    out = subprocess.run([str(binary), "--bootstrap-server", bootstrap, *args],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"strata {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def create_topic(binary, bootstrap, name, partitions):
    strata(binary, bootstrap, "topics", "create", name, "--partitions", str(partitions))


def perf(binary, bootstrap, kind, *args):
    return json.loads(strata(binary, bootstrap, "perf", kind, *args, "--json"))


# ---- runs ------------------------------------------------------------------------------------


def records_for(size):
    if QUICK:
        return 20_000 if size >= 1024 else 100_000
    return 500_000 if size >= 1024 else 2_000_000


def third_party_produce(bootstrap, topic, size, n, acks):
    """confluent-kafka (librdkafka) producer: MB/s (MiB/s)."""
    code = f"""
import time
from confluent_kafka import Producer
p = Producer({{'bootstrap.servers': '{bootstrap}', 'acks': '{acks}', 'linger.ms': 5,
               'batch.size': 1000000, 'queue.buffering.max.messages': 2000000}})
v = b'x' * {size}
t = time.perf_counter()
for i in range({n}):
    while True:
        try:
            p.produce('{topic}', v); break
        except BufferError:
            p.poll(0.005)
p.flush(120)
print(time.perf_counter() - t)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    elapsed = float(out.stdout.strip().splitlines()[-1])
    return {"records_per_sec": n / elapsed, "mb_per_sec": n * size / MB / elapsed}


def main():
    binary = Path(os.environ.get("STRATA_BIN", ROOT / "target" / "release" / "strata"))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M")
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="strata-bench-", dir=os.environ.get("BENCH_DIR")))
    results = {"date": stamp, "quick": QUICK, "machine": {"cpus": os.cpu_count()}, "runs": []}

    log("ceilings")
    ceilings = {
        "loopback_tcp": ceiling_loopback(),
        "fsync_write": ceiling_fsync_write(work),
        "memcpy": ceiling_memcpy(),
    }
    results["ceilings_mb_per_sec"] = {k: v / MB for k, v in ceilings.items()}
    log("ceilings (MiB/s): " + ", ".join(f"{k} {v / MB:.0f}" for k, v in ceilings.items()))

    def add(run, ceiling):
        run["ceiling"] = ceiling
        if ceiling and "mb_per_sec" in run:
            run["ratio"] = run["mb_per_sec"] / (ceilings[ceiling] / MB)
        results["runs"].append(run)
        log(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in run.items()
                        if k != "latency_ms"}))

    peak_rate = {}
    for fsync in (True, False):
        broker = Broker(binary, work, fsync)
        try:
            for size in (1024, 100):
                for partitions in (1, 16):
                    for acks in ("1", "all"):
                        topic = f"p-{size}-{partitions}-{acks}"
                        create_topic(binary, broker.bootstrap, topic, partitions)
                        r = perf(binary, broker.bootstrap, "produce", "--topic", topic,
                                 "--num-records", str(records_for(size)), "--record-size", str(size),
                                 "--acks", acks, "--producers", "2" if partitions > 1 else "1")
                        ceiling = "fsync_write" if (fsync and acks == "all") else "loopback_tcp"
                        add({"kind": "produce", "client": "strata perf", "record_size": size,
                             "partitions": partitions, "acks": acks, "fsync_before_ack": fsync,
                             **r}, ceiling)
                        if not fsync and acks == "1":
                            peak_rate[(size, partitions)] = r["records_per_sec"]
                        if not fsync and acks == "1":
                            c = perf(binary, broker.bootstrap, "consume", "--topic", topic,
                                     "--num-records", str(records_for(size)))
                            add({"kind": "consume", "client": "strata perf", "record_size": size,
                                 "partitions": partitions, "fsync_before_ack": fsync, **c},
                                "loopback_tcp")
            for acks in ("1", "all"):
                topic = f"third-{acks}"
                create_topic(binary, broker.bootstrap, topic, 1)
                r = third_party_produce(broker.bootstrap, topic, 1024, records_for(1024) // 2, acks)
                ceiling = "fsync_write" if (fsync and acks == "all") else "loopback_tcp"
                add({"kind": "produce", "client": "confluent-kafka (librdkafka)", "record_size": 1024,
                     "partitions": 1, "acks": acks, "fsync_before_ack": fsync, **r}, ceiling)
            if not fsync:
                # End-to-end latency at half of the peak rate (no linger: latency, not batching).
                # Also at a tenth of the peak: on 2 cores the producer, the consumer and the
                # broker share the CPUs, so half of a producer-only peak may not be sustainable.
                for size in (1024, 100):
                    for fraction in (0.5, 0.1):
                        topic = f"e2e-{size}-{int(fraction * 100)}"
                        create_topic(binary, broker.bootstrap, topic, 1)
                        rate = int(peak_rate[(size, 1)] * fraction)
                        seconds = 5 if QUICK else 10
                        c = perf(binary, broker.bootstrap, "e2e", "--topic", topic,
                                 "--num-records", str(rate * seconds), "--record-size", str(size),
                                 "--throughput", str(rate), "--acks", "1", "--linger-ms", "0")
                        add({"kind": f"e2e-latency at {fraction:.0%} of peak", "client": "strata perf",
                             "record_size": size, "partitions": 1, "rate": rate,
                             "fsync_before_ack": fsync, **c}, None)
                # Memory when idle with 1,000 partitions.
                for i in range(10):
                    create_topic(binary, broker.bootstrap, f"idle-{i}", 100)
                time.sleep(3)
                results["idle_rss_mib_1000_partitions"] = broker.rss_kib() / 1024
                log(f"idle RSS with 1,000 more partitions: {results['idle_rss_mib_1000_partitions']:.1f} MiB")
        finally:
            broker.stop()

    shutil.rmtree(work, ignore_errors=True)
    base = RESULTS / f"perf-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(results, indent=2))
    base.with_suffix(".md").write_text(markdown(results))
    base.with_suffix(".svg").write_text(svg(results))
    log(f"wrote {base}.md, .json and .svg")
    print(markdown(results))


def markdown(results):
    c = results["ceilings_mb_per_sec"]
    lines = [
        f"# Strata performance, {results['date']}{' (quick run)' if results['quick'] else ''}",
        "",
        f"Machine: {results['machine']['cpus']} CPUs. Ceilings measured in the same run (MiB/s): "
        f"loopback TCP one stream {c['loopback_tcp']:.0f}, sequential write + fdatasync "
        f"{c['fsync_write']:.0f}, memory copy {c['memcpy']:.0f}.",
        "",
        "| kind | client | record | partitions | acks | fsync before ack | records/s | MiB/s | ratio to ceiling | latency p50 / p99 / max (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lat = r.get("latency_ms")
        latency = f"{lat['p50']:.2f} / {lat['p99']:.2f} / {lat['max']:.2f}" if lat else ""
        ratio = f"{r['ratio']:.2f} of {r['ceiling'].replace('_', ' ')}" if "ratio" in r else ""
        lines.append(
            f"| {r['kind']} | {r['client']} | {r['record_size']} B | {r['partitions']} | "
            f"{r.get('acks', '')} | {'on' if r['fsync_before_ack'] else 'off'} | "
            f"{r.get('records_per_sec', 0):,.0f} | {r.get('mb_per_sec', 0):.1f} | {ratio} | {latency} |")
    if "idle_rss_mib_1000_partitions" in results:
        lines += ["", f"Broker resident memory, idle, with 1,000 more partitions: "
                      f"{results['idle_rss_mib_1000_partitions']:.1f} MiB."]
    return "\n".join(lines) + "\n"


def svg(results):
    """Horizontal bars: throughput (MiB/s) of each run, and p99 latency of latency runs."""
    runs = [r for r in results["runs"] if "mb_per_sec" in r and not r["kind"].startswith("e2e")]
    lat = [r for r in results["runs"] if r["kind"].startswith("e2e")]
    width, row, left = 900, 18, 360
    height = 60 + row * (len(runs) + len(lat) + 4)
    top = max([r["mb_per_sec"] for r in runs] + [1])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<text x="10" y="20" font-size="14">Strata {results["date"]}: throughput (MiB/s) and end-to-end p99 latency (ms)</text>']
    y = 40
    for r in runs:
        label = (f'{r["kind"]} {r["client"]} {r["record_size"]}B p{r["partitions"]} '
                 f'acks={r.get("acks", "-")} fsync={"on" if r["fsync_before_ack"] else "off"}')
        w = (width - left - 80) * r["mb_per_sec"] / top
        out.append(f'<text x="10" y="{y + 12}">{label}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{row - 4}" fill="#4a7bd0"/>')
        out.append(f'<text x="{left + w + 4:.1f}" y="{y + 12}">{r["mb_per_sec"]:.0f}</text>')
        y += row
    y += row
    top_l = max([r["latency_ms"]["p99"] for r in lat] + [1])
    for r in lat:
        p99 = r["latency_ms"]["p99"]
        w = (width - left - 80) * p99 / top_l
        out.append(f'<text x="10" y="{y + 12}">e2e p99 {r["record_size"]}B at {r["rate"]:,} rec/s (received {r["records_per_sec"]:,.0f}/s)</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{row - 4}" fill="#d07b4a"/>')
        out.append(f'<text x="{left + w + 4:.1f}" y="{y + 12}">{p99:.2f} ms</text>')
        y += row
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
