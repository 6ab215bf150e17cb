"""The console's REST API (the console issue) over HTTP against a real `strata`: every
endpoint, its error paths, and every answer validated against the OpenAPI document the broker
serves (`/api/openapi.json`), whose routes must be exactly the router's."""

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from jsonschema import Draft202012Validator

from strata_e2e import (
    REPO_ROOT,
    confluent_consumer,
    confluent_produce,
    assert_delivered,
    wait_until,
)


class Api:
    """HTTP calls to one broker's console, each answer checked against the OpenAPI document."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")
        status, _, body = self.raw("GET", "/api/openapi.json")
        assert status == 200
        self.doc = json.loads(body)
        self.checked = set()

    def raw(self, method, path, body=None, headers=None):
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        hdrs = dict(headers or {})
        if data is not None and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def call(self, method, path, body=None, expect=200, headers=None):
        status, hdrs, raw = self.raw(method, path, body, headers)
        assert status == expect, f"{method} {path}: {status} {raw[:500]!r}"
        value = json.loads(raw) if raw else None
        self.validate(method, path, status, value)
        assert status < 500, f"{method} {path} answered {status}"
        return value, hdrs

    def template(self, path: str) -> str:
        """The document's path template matching a concrete path."""
        bare = urllib.parse.urlsplit(path).path
        segs = bare.strip("/").split("/")
        for tpl in self.doc["paths"]:
            parts = tpl.strip("/").split("/")
            if len(parts) == len(segs) and all(
                    p == s or (p.startswith("{") and s) for p, s in zip(parts, segs)):
                return tpl
        raise AssertionError(f"no OpenAPI path for {bare}")

    def validate(self, method, path, status, value):
        tpl = self.template(path)
        operation = self.doc["paths"][tpl].get(method.lower())
        assert operation, f"{method} {tpl} is not in the OpenAPI document"
        response = operation["responses"].get(str(status))
        assert response, f"{method} {tpl} answered {status}, which the document does not list"
        if "$ref" in response:
            response = self.doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
        if "content" not in response:
            assert value is None, f"{method} {tpl} {status} should have no body"
            return
        schema = response["content"]["application/json"]["schema"]
        Draft202012Validator({"components": self.doc["components"], **schema}).validate(value)
        self.checked.add((method, tpl, status))

    def error(self, method, path, expect, code, body=None, headers=None):
        value, _ = self.call(method, path, body, expect=expect, headers=headers)
        assert value["error"] == code, value
        return value


@pytest.fixture
def api_broker(broker_factory):
    return broker_factory({"group.initial.rebalance.delay.ms": "0", "num.partitions": "2"})


def test_openapi_document_lists_exactly_the_routes(api_broker):
    api = Api(api_broker.console_url())
    source = (REPO_ROOT / "crates" / "console" / "src" / "routes.rs").read_text()
    table = source[source.index("pub const ROUTES"):source.index("];", source.index("pub const ROUTES"))]
    routed = set()
    for path, methods in re.findall(r'\(\s*"(/[^"]*)",\s*&\[([^\]]*)\]', table):
        for m in re.findall(r"Method::([A-Z]+)", methods):
            routed.add((m, path))
    documented = {(m.upper(), p) for p, ops in api.doc["paths"].items() for m in ops}
    undocumented = {(m, p) for m, p in routed if p.startswith("/api/v1/")} - documented
    assert not undocumented, f"routes missing from openapi.json: {sorted(undocumented)}"
    assert documented <= routed, f"documented but not routed: {sorted(documented - routed)}"
    for tpl, ops in api.doc["paths"].items():
        for m, op in ops.items():
            assert op["responses"], f"{m} {tpl} lists no responses"


def test_rest_endpoints_end_to_end(api_broker):
    api = Api(api_broker.console_url())
    topic = f"rest-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"

    cluster, _ = api.call("GET", "/api/v1/cluster")
    assert cluster["brokers"][0]["id"] == cluster["controller_id"]
    brokers, _ = api.call("GET", "/api/v1/brokers")
    bid = brokers[0]["id"]
    api.call("GET", f"/api/v1/brokers/{bid}")
    configs, _ = api.call("GET", f"/api/v1/brokers/{bid}/configs?synonyms=true")
    assert any(c["name"] == "num.partitions" and c["value"] == "2" for c in configs)

    created, headers = api.call("POST", "/api/v1/topics", {
        "name": topic, "partitions": 3, "configs": {"retention.ms": "86400000"}}, expect=201)
    assert headers["Location"] == f"/api/v1/topics/{topic}"
    assert created["partitions"] == 3 and created["configs"] == {"retention.ms": "86400000"}
    api.call("POST", "/api/v1/topics", {"name": topic + "-v", "validate_only": True})
    api.error("GET", f"/api/v1/topics/{topic}-v", 404, "topic_not_found")

    # Produce through the API: text, a keyed record with headers, and base64.
    first, headers = api.call("POST", f"/api/v1/topics/{topic}/messages", {
        "partition": 0, "value": '{"order": 1, "state": "created"}'}, expect=201)
    assert (first["partition"], first["offset"]) == (0, 0)
    assert headers["Location"] == f"/api/v1/topics/{topic}/partitions/0/messages/0"
    keyed, _ = api.call("POST", f"/api/v1/topics/{topic}/messages", {
        "key": "order-4", "value": "shipped", "headers": [{"key": "trace", "value": "t-77"}]},
        expect=201)
    binary, _ = api.call("POST", f"/api/v1/topics/{topic}/messages", {
        "partition": 0, "encoding": "base64", "value": base64.b64encode(b"\x00\xff\x10").decode()},
        expect=201)
    assert binary["offset"] == 1
    # Kafka clients with the same key land on the same partition (murmur2: order-4 -> 2 of 3).
    assert keyed["partition"] == 2
    reports = confluent_produce(api_broker.bootstrap, topic, [{"key": b"order-4", "value": b"again"}])
    assert_delivered(reports)
    assert reports[0][1] == keyed["partition"]
    confluent_produce(api_broker.bootstrap, topic,
                      [{"partition": 0, "value": f"bulk-{i}".encode()} for i in range(20)])

    page, _ = api.call("GET", f"/api/v1/topics/{topic}/messages?partition=0&from=oldest&limit=2")
    assert [m["offset"] for m in page["messages"]] == [0, 1]
    assert page["messages"][0]["value"]["encoding"] == "json"
    assert json.loads(page["messages"][0]["value"]["data"]) == {"order": 1, "state": "created"}
    assert page["messages"][1]["value"] == {"encoding": "hex", "data": "00ff10", "size": 3,
                                            "truncated": False}
    assert (page["stop"], page["next_offset"]) == ("limit", 2)
    page, _ = api.call("GET", f"/api/v1/topics/{topic}/messages?partition=0&from=offset&offset=2&limit=5")
    assert [m["offset"] for m in page["messages"]] == [2, 3, 4, 5, 6]
    page, _ = api.call("GET", f"/api/v1/topics/{topic}/messages?partition=0&limit=3")
    assert [m["offset"] for m in page["messages"]] == [19, 20, 21] and page["stop"] == "end"
    page, _ = api.call("GET", f"/api/v1/topics/{topic}/messages?partition=0&from=oldest&filter=bulk-17")
    assert [m["value"]["data"] for m in page["messages"]] == ["bulk-17"]
    page, _ = api.call("GET", f"/api/v1/topics/{topic}/messages?partition=all&from=oldest&filter=t-77")
    assert [m["key"]["data"] for m in page["messages"]] == ["order-4"]
    assert page["messages"][0]["headers"] == [
        {"key": "trace", "value": {"encoding": "utf8", "data": "t-77", "size": 4, "truncated": False}}]
    page, _ = api.call("GET", f"/api/v1/topics/{topic}/messages?partition=0&from=timestamp&timestamp=2000-01-01T00:00:00Z&limit=1&encoding=base64")
    assert page["messages"][0]["offset"] == 0 and page["messages"][0]["value"]["encoding"] == "base64"
    one, _ = api.call("GET", f"/api/v1/topics/{topic}/partitions/0/messages/1?encoding=hex")
    assert one["value"]["data"] == "00ff10"

    listed, _ = api.call("GET", f"/api/v1/topics?q={topic}&sort=messages")
    assert [t["name"] for t in listed["topics"]] == [topic]
    assert listed["topics"][0]["messages"] == 24
    internal, _ = api.call("GET", "/api/v1/topics?internal=true&page=1&page_size=1000")
    assert any(t["internal"] for t in internal["topics"]) or internal["total"] >= 1
    detail, _ = api.call("GET", f"/api/v1/topics/{topic}")
    assert sum(p["messages"] for p in detail["partition_details"]) == 24
    parts, _ = api.call("GET", f"/api/v1/topics/{topic}/partitions")
    assert [p["partition"] for p in parts] == [0, 1, 2]
    p0, _ = api.call("GET", f"/api/v1/topics/{topic}/partitions/0")
    assert (p0["log_start_offset"], p0["high_watermark"]) == (0, 22)

    configs, _ = api.call("PATCH", f"/api/v1/topics/{topic}/configs", {
        "set": {"cleanup.policy": "compact"}, "delete": ["retention.ms"]})
    by_name = {c["name"]: c for c in configs}
    assert by_name["cleanup.policy"]["value"] == "compact"
    assert by_name["retention.ms"]["source"] != "DYNAMIC_TOPIC_CONFIG"
    configs, _ = api.call("GET", f"/api/v1/topics/{topic}/configs")
    assert {c["name"]: c["value"] for c in configs}["cleanup.policy"] == "compact"
    grown, _ = api.call("POST", f"/api/v1/topics/{topic}/partitions", {"count": 4})
    assert grown["partitions"] == 4

    # A consumer group reads partition 0 and commits 10 of its 22 records.
    from confluent_kafka import TopicPartition
    consumer = confluent_consumer(api_broker.bootstrap, **{
        "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
    finally:
        consumer.close()
    groups, _ = api.call("GET", f"/api/v1/groups?q={group}")
    assert [g["group"] for g in groups["groups"]] == [group]
    assert groups["groups"][0]["total_lag"] == 12
    g, _ = api.call("GET", f"/api/v1/groups/{group}")
    assert {(o["partition"], o["committed_offset"], o["lag"]) for o in g["offsets"]} >= {(0, 10, 12)}
    lag, _ = api.call("GET", f"/api/v1/groups/{group}/lag")
    assert (lag["status"], lag["totallag"], lag["partition_count"]) == ("OK", 12, 1)
    assert lag["maxlag"]["current_lag"] == 12 and lag["maxlag"]["end"]["offset"] == 10
    problems, _ = api.call("GET", f"/api/v1/groups/{group}/lag?show=problems")
    assert problems["partitions"] == []
    summary, _ = api.call("GET", "/api/v1/lag")
    assert {"group": group, "status": "OK", "complete": 0.0, "partition_count": 1,
            "totallag": 12} in summary
    only_errors, _ = api.call("GET", "/api/v1/lag?status=ERR")
    assert all(s["status"] == "ERR" for s in only_errors)

    status, _, body = api.raw("DELETE", f"/api/v1/topics/{topic}")
    assert (status, body) == (204, b"")
    api.validate("DELETE", f"/api/v1/topics/{topic}", 204, None)
    wait_until(lambda: api.raw("GET", f"/api/v1/topics/{topic}")[0] == 404, 10, "topic gone")


def test_client_errors_are_4xx_with_a_message(api_broker):
    api = Api(api_broker.console_url())
    topic = f"err-{uuid.uuid4().hex[:8]}"
    api.call("POST", "/api/v1/topics", {"name": topic, "partitions": 1}, expect=201)
    api.error("POST", "/api/v1/topics", 409, "kafka_error", {"name": topic})
    api.error("POST", "/api/v1/topics", 400, "invalid_topic", {"name": "bad name!"})
    api.error("POST", "/api/v1/topics", 400, "invalid_field", {"name": "x", "partitions": -3})
    api.error("POST", "/api/v1/topics", 400, "unknown_field", {"name": "x", "partitons": 3})
    api.error("POST", "/api/v1/topics", 400, "invalid_json", b"{not json")
    api.error("POST", "/api/v1/topics", 400, "kafka_error",
              {"name": topic + "-c", "configs": {"cleanup.policy": "sometimes"}})
    api.error("POST", "/api/v1/topics", 415, "unsupported_media_type", b"{}",
              headers={"Content-Type": "text/plain"})
    api.error("POST", "/api/v1/topics", 403, "csrf", {"name": "x"},
              headers={"Origin": "http://evil.example"})
    api.error("POST", f"/api/v1/topics/{topic}/messages", 413, "body_too_large",
              {"value": "x" * (3 << 20)})
    api.error("GET", "/api/v1/topics/bad%20name", 400, "invalid_topic")
    api.error("GET", "/api/v1/topics/nope-" + topic, 404, "topic_not_found")
    api.error("GET", "/api/v1/topics?page_size=100000", 400, "invalid_parameter")
    api.error("GET", "/api/v1/topics?colour=blue", 400, "unknown_parameter")
    api.error("GET", f"/api/v1/topics/{topic}/partitions/7", 404, "partition_not_found")
    api.error("GET", f"/api/v1/topics/{topic}/partitions/-1", 400, "invalid_partition")
    msgs = f"/api/v1/topics/{topic}/messages"
    api.error("GET", msgs + "?from=offset&offset=-5", 400, "invalid_parameter")
    api.error("GET", msgs + "?from=offset&offset=99999999999", 400, "offset_out_of_range")
    api.error("GET", msgs + "?from=offset", 400, "invalid_parameter")
    api.error("GET", msgs + "?limit=100000", 400, "invalid_parameter")
    api.error("GET", msgs + "?from=timestamp&timestamp=yesterday", 400, "invalid_parameter")
    api.error("GET", msgs + "?partition=9", 404, "partition_not_found")
    api.error("GET", f"/api/v1/topics/{topic}/partitions/0/messages/5", 404, "message_not_found")
    api.error("POST", msgs, 400, "invalid_partition", {"partition": 5, "value": "v"})
    api.error("POST", msgs, 400, "invalid_field", {"value": "%%%", "encoding": "base64"})
    api.error("PATCH", f"/api/v1/topics/{topic}/configs", 400, "invalid_field", {})
    api.error("PATCH", f"/api/v1/topics/{topic}/configs", 400, "kafka_error",
              {"set": {"no.such.config": "1"}})
    api.error("POST", f"/api/v1/topics/{topic}/partitions", 400, "kafka_error", {"count": 1})
    api.error("DELETE", "/api/v1/topics/__consumer_offsets", 400, "internal_topic")
    api.error("GET", "/api/v1/groups/no-such-group", 404, "group_not_found")
    api.error("GET", "/api/v1/groups/no-such-group/lag", 404, "group_not_found")
    api.error("GET", "/api/v1/lag?status=BAD", 400, "invalid_parameter")
    api.error("GET", "/api/v1/brokers/77", 404, "broker_not_found")
    api.error("GET", "/api/v1/brokers/x", 400, "invalid_broker")
    status, headers, body = api.raw("PUT", f"/api/v1/topics/{topic}", {})
    assert status == 405 and headers["Allow"] == "GET, DELETE", body
    status, _, body = api.raw("GET", "/api/v1/nothing-here")
    assert status == 404 and json.loads(body)["error"] == "no_such_route"
