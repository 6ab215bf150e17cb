"""`/metrics` on the broker's HTTP listener (the console issue), scraped over HTTP from a real
`strata` and parsed with the Prometheus client library's own text-format parser.

Checks the exposition itself (HELP and TYPE per family, no duplicate series, cumulative
buckets ending in +Inf equal to _count), that the values move with real traffic
(confluent-kafka produces and a consumer group reads), and that the kafka_exporter-named lag
series equal what `strata groups describe` reports once nothing moves.
"""

import gzip
import json
import re
import subprocess
import urllib.error
import urllib.request
import uuid

from prometheus_client.parser import text_string_to_metric_families

from strata_e2e import (
    REPO_ROOT,
    assert_delivered,
    confluent_consumer,
    confluent_produce,
    create_topic,
    strata_binary,
    wait_until,
)


def fetch(url: str, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def scrape(broker) -> dict:
    """{(sample name, sorted labels): value}, after checking the exposition."""
    status, headers, body = fetch(broker.console_url() + "metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    families = list(text_string_to_metric_families(text))
    check_exposition(text, families)
    samples = {}
    for family in families:
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return samples


def check_exposition(text: str, families):
    """What the parser lets through: one HELP and one TYPE per family; each histogram
    series' buckets non-decreasing and ending in +Inf, which equals its _count."""
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(helps) == len(set(helps)) and sorted(helps) == sorted(types), "HELP/TYPE once"
    for family in families:
        if family.type != "histogram":
            continue
        series = {}
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            entry = series.setdefault(labels, {"buckets": [], "count": None})
            if s.name.endswith("_bucket"):
                entry["buckets"].append((s.labels["le"], s.value))
            elif s.name.endswith("_count"):
                entry["count"] = s.value
        for labels, entry in series.items():
            values = [v for _, v in entry["buckets"]]
            assert values == sorted(values), f"{family.name}{labels}: buckets decrease"
            assert entry["buckets"][-1][0] == "+Inf", f"{family.name}{labels}: no +Inf"
            assert entry["buckets"][-1][1] == entry["count"], f"{family.name}{labels}: +Inf != _count"


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, name, **labels) -> float:
    """Sum of `name` over series whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_metrics_move_with_traffic_and_lag_matches_groups_describe(broker_factory):
    broker = broker_factory({"group.initial.rebalance.delay.ms": "0"})
    topic = f"metrics-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, partitions=3)
    before = scrape(broker)
    assert [v for (n, _), v in before.items() if n == "strata_build_info"] == [1]

    n, size = 60, 100
    reports = confluent_produce(
        broker.bootstrap, topic,
        [{"partition": i % 3, "value": bytes([65 + i % 26]) * size} for i in range(n)])
    assert_delivered(reports)
    after = scrape(broker)
    assert value(after, "strata_topic_records_in_total", topic=topic) == n
    assert value(after, "strata_topic_bytes_in_total", topic=topic) >= n * size
    assert total(after, "kafka_topic_partition_current_offset", topic=topic) == n
    assert total(after, "strata_partition_high_watermark", topic=topic) == n
    assert total(after, "kafka_topic_partition_oldest_offset", topic=topic) == 0
    assert total(after, "strata_partition_log_size_bytes", topic=topic) >= n * size
    assert value(after, "kafka_topic_partitions", topic=topic) == 3
    produced = total(after, "strata_request_duration_seconds_count", api="Produce")
    assert produced > total(before, "strata_request_duration_seconds_count", api="Produce")
    assert total(after, "strata_connections_accepted_total") > 0
    # acks=all with fsync before the acknowledgement (the default): fsyncs and the durable
    # wait were measured.
    assert value(after, "strata_log_fsync_duration_seconds_count") > value(
        before, "strata_log_fsync_duration_seconds_count")
    assert value(after, "strata_produce_durable_wait_seconds_count") > value(
        before, "strata_produce_durable_wait_seconds_count")
    assert value(after, "strata_log_flush_round_partitions_count") >= 1
    assert [v for (n, _), v in after.items() if n == "strata_log_dir_online"] == [1]
    assert value(after, "strata_partitions_offline") == 0
    assert value(after, "strata_partitions_under_replicated") == 0

    # A group reads 40 of the 60 records (partitions 0 and 1 whole) and commits.
    consumer = confluent_consumer(
        broker.bootstrap, **{"group.id": group, "enable.auto.commit": False,
                              "auto.offset.reset": "earliest"})
    try:
        from confluent_kafka import TopicPartition

        consumer.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
        got = []
        wait_until(lambda: got.extend(m for m in [consumer.poll(0.2)] if m and not m.error())
                   or len(got) >= 40, 30, lambda: f"consumed {len(got)} of 40")
        read = {p: max(m.offset() for m in got if m.partition() == p) + 1 for p in (0, 1)}
        assert read == {0: 20, 1: 20}
        # Partitions 0 and 1 as read; partition 2 at offset 5 without reading it.
        consumer.commit(offsets=[TopicPartition(topic, 0, 20), TopicPartition(topic, 1, 20),
                                 TopicPartition(topic, 2, 5)], asynchronous=False)
    finally:
        consumer.close()

    scraped = scrape(broker)
    assert value(scraped, "strata_topic_records_out_total", topic=topic) >= 40
    assert value(scraped, "strata_topic_bytes_out_total", topic=topic) >= 40 * size

    described = json.loads(subprocess.run(
        [str(strata_binary()), "groups", "describe", group, "-b", broker.bootstrap, "-o", "json"],
        check=True, capture_output=True, timeout=60).stdout)
    rows = described["partitions"] if isinstance(described, dict) else described[0]["partitions"]
    assert len(rows) == 3
    for row in rows:
        labels = {"consumergroup": group, "topic": row["topic"], "partition": str(row["partition"])}
        assert value(scraped, "kafka_consumergroup_current_offset", **labels) == row["current_offset"]
        assert value(scraped, "kafka_consumergroup_lag", **labels) == row["lag"]
    assert value(scraped, "kafka_consumergroup_lag_sum", consumergroup=group, topic=topic) == sum(
        r["lag"] for r in rows) == 15
    assert value(scraped, "kafka_consumergroup_current_offset_sum", consumergroup=group,
                 topic=topic) == 45
    assert value(scraped, "kafka_consumergroup_members", consumergroup=group) == 0
    # One commit per partition: the evaluator has no motion to judge yet, and says OK.
    assert value(scraped, "strata_consumergroup_status", consumergroup=group) == 1


def test_http_hygiene(broker_factory):
    broker = broker_factory()
    url = broker.console_url()
    status, headers, body = fetch(url + "healthz")
    assert (status, body) == (200, b"ok\n")
    # DNS rebinding: a name the console does not serve is refused.
    status, _, body = fetch(url + "metrics", {"Host": "attacker.example:8080"})
    assert status == 403 and json.loads(body)["error"] == "host_not_allowed"
    status, _, body = fetch(url + "nope")
    assert status == 404 and json.loads(body)["error"] == "no_such_route"
    request = urllib.request.Request(url + "metrics", method="POST", data=b"")
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("POST /metrics succeeded")
    except urllib.error.HTTPError as e:
        assert e.code == 405 and e.headers["Allow"] == "GET"
    # Large scrapes are gzipped for scrapers that accept it.
    create_topic(broker.bootstrap, f"many-{uuid.uuid4().hex[:6]}", partitions=60)
    status, headers, body = fetch(url + "metrics", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("Content-Encoding") == "gzip"
    assert b"# TYPE strata_build_info gauge" in gzip.decompress(body)


def test_console_can_be_switched_off(broker_factory):
    broker = broker_factory({"console.enable": "false"})
    wait_until(lambda: "strata started" in broker.log_path.read_text(errors="replace"), 10,
               "start-up line")
    assert "console=off" in broker.log_path.read_text(errors="replace")


def test_docs_name_the_families_a_scrape_has(broker_factory):
    broker = broker_factory()
    status, _, body = fetch(broker.console_url() + "metrics")
    assert status == 200
    scraped = {line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE ")}
    table = (REPO_ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.MULTILINE))
    assert scraped == documented, (
        f"scraped but not in docs/metrics.md: {sorted(scraped - documented)}; "
        f"documented but not scraped: {sorted(documented - scraped)}")


def test_grafana_dashboard_queries_documented_series():
    """dashboards/strata-grafana.json: well-formed panels, and every series a query names is
    one docs/metrics.md documents (so a renamed metric cannot silently empty a panel)."""
    dashboard = json.loads((REPO_ROOT / "dashboards" / "strata-grafana.json").read_text())
    table = (REPO_ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.MULTILINE))
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    used = set()
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            for name in re.findall(r"\b((?:strata|kafka|process)_[a-z_]+)\b", target["expr"]):
                family = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in documented or family in documented, (
                    f"{panel['title']}: {name} is not in docs/metrics.md")
                used.add(name in documented and name or family)
    # The lag panels use the kafka_exporter names.
    assert "kafka_consumergroup_lag_sum" in used and "strata_consumergroup_status" in used


def test_time_lag_is_reported_next_to_offset_lag(broker_factory):
    """Time lag: the newest record's timestamp minus the first unconsumed one's, in the REST
    lag answer and as strata_consumergroup_lag_seconds."""
    broker = broker_factory({"console.history.interval.ms": "200"})
    topic = f"timelag-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, partitions=1)
    import time as _time
    t0 = int(_time.time() * 1000) - 120_000
    for ts in (t0, t0 + 60_000):  # two batches: one record 60 s after the other
        assert_delivered(confluent_produce(broker.bootstrap, topic,
                                           [{"partition": 0, "value": b"x", "timestamp": ts}]))
    from confluent_kafka import TopicPartition
    consumer = confluent_consumer(broker.bootstrap, **{"group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        consumer.close()
    url = broker.console_url()

    def lag_answer():
        status, _, body = fetch(url + f"api/v1/groups/{group}/lag")
        answer = json.loads(body) if status == 200 else {}
        parts = answer.get("partitions") or [{}]
        return answer if parts[0].get("lag_seconds") is not None else None

    answer = wait_until(lag_answer, 10, "a sampled time lag")
    assert answer["partitions"][0]["lag_seconds"] == 60.0, answer
    assert answer["partitions"][0]["current_lag"] == 2
    assert answer["max_lag_seconds"] == 60.0
    scraped = scrape(broker)
    assert value(scraped, "strata_consumergroup_lag_seconds", consumergroup=group, topic=topic,
                 partition="0") == 60.0
    assert value(scraped, "strata_consumergroup_max_lag_seconds", consumergroup=group) == 60.0
