"""Client quotas end to end: a producer_byte_rate quota set for a client id with
AlterClientQuotas and read back with DescribeClientQuotas (kafka-python's protocol framing;
neither client library here has an admin call for them), then enforced by throttling: a
confluent-kafka producer with that client id producing as fast as it can is held to about the
quota and is told its throttle time, one with another client id is not, and removing the quota
(value null) stops the throttling. The same for a consumer_byte_rate quota on a confluent-kafka
consumer's fetches. A tiny request_percentage quota on one client id: its responses carry
throttle times (at most one window), another client id's do not."""

import socket
import struct
import time

from confluent_kafka import Producer
from kafka.admin import KafkaAdminClient
from kafka.protocol.admin import DescribeClientQuotasRequest_v0
from kafka.protocol.api import Request, Response
from kafka.protocol.types import Array, Boolean, Float64, Int16, Int32, Schema, String

from strata_e2e import confluent_consume, confluent_produce, create_topic

QUOTA_BPS = 200_000
PAYLOAD = b"x" * 10_000
MESSAGES = 400  # 4 MB
# Kafka's quota windows: 11 of 1 s; a fresh entity's first burst is measured over 10 s.
WINDOW_S = 11


class AlterClientQuotasResponse_v0(Response):
    API_KEY = 49
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("entries", Array(
            ("error_code", Int16),
            ("error_message", String("utf-8")),
            ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))),
        )),
    )


class AlterClientQuotasRequest_v0(Request):
    API_KEY = 49
    API_VERSION = 0
    RESPONSE_TYPE = AlterClientQuotasResponse_v0
    SCHEMA = Schema(
        ("entries", Array(
            ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))),
            ("ops", Array(("key", String("utf-8")), ("value", Float64), ("remove", Boolean))),
        )),
        ("validate_only", Boolean),
    )


def call(admin, request):
    node = admin._client.least_loaded_node()
    future = admin._send_request_to_node(node, request)
    admin._wait_for_futures([future])
    return future.value


def alter(admin, entity, ops, validate_only=False):
    response = call(admin, AlterClientQuotasRequest_v0(entries=[(entity, ops)], validate_only=validate_only))
    return [(code, msg) for code, msg, _ in response.entries]


def describe(admin, components, strict=False):
    response = call(admin, DescribeClientQuotasRequest_v0(components=components, strict=strict))
    assert response.error_code == 0, response
    return {
        tuple(tuple(c) for c in entity): dict(values) for entity, values in response.entries
    }


def produce_all(bootstrap, topic, client_id):
    """Produces MESSAGES as fast as the producer takes them; answers the time taken and the
    throttle times reported."""
    throttles = []
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "linger.ms": 5,
        "throttle_cb": lambda event: throttles.append(event.throttle_time),
    })
    errors = []
    start = time.monotonic()
    for _ in range(MESSAGES):
        while True:
            try:
                producer.produce(topic, PAYLOAD, on_delivery=lambda e, m: e and errors.append(e))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0, "every message delivered"
    elapsed = time.monotonic() - start
    producer.poll(0.5)  # let pending throttle events through
    assert not errors, errors
    return elapsed, throttles


def test_producer_byte_rate_quota_throttles_its_client_only(broker, topic):
    create_topic(broker.bootstrap, topic)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        entity = [("client-id", "slow-app")]
        # Kafka's validation: unknown keys and negative values are INVALID_REQUEST (42).
        assert alter(admin, entity, [("bogus_rate", 1.0, False)])[0][0] == 42
        assert alter(admin, entity, [("producer_byte_rate", -5.0, False)])[0][0] == 42
        assert alter(admin, entity, [("producer_byte_rate", 1.0, False)], validate_only=True) == [(0, None)]
        assert describe(admin, [("client-id", 0, "slow-app")]) == {}
        assert alter(admin, entity, [("producer_byte_rate", float(QUOTA_BPS), False)]) == [(0, None)]
        assert describe(admin, [("client-id", 0, "slow-app")]) == {
            (("client-id", "slow-app"),): {"producer_byte_rate": float(QUOTA_BPS)}
        }
        assert describe(admin, [("user", 2, None)]) == {}

        fast_elapsed, fast_throttles = produce_all(broker.bootstrap, topic, "fast-app")
        assert not [t for t in fast_throttles if t > 0], fast_throttles

        slow_elapsed, slow_throttles = produce_all(broker.bootstrap, topic, "slow-app")
        size = len(PAYLOAD) * MESSAGES
        # The first WINDOW_S windows' worth passes before the rate is over the quota; the rest
        # is held to it. Half of that is the check: throttling, not speed.
        expected_s = size / QUOTA_BPS - WINDOW_S
        assert slow_elapsed >= 0.5 * expected_s, (slow_elapsed, expected_s, slow_throttles)
        assert [t for t in slow_throttles if t > 0], "the producer was told of its throttle"
        assert slow_elapsed > fast_elapsed

        assert alter(admin, entity, [("producer_byte_rate", 0.0, True)]) == [(0, None)]
        assert describe(admin, [("client-id", 2, None)]) == {}
        _, after = produce_all(broker.bootstrap, topic, "slow-app")
        assert not [t for t in after if t > 0], after
    finally:
        admin.close()


CONSUMER_QUOTA_BPS = 100_000
# 16 windows' worth: the first 10 pass before the rate is over the quota (a fresh entity is
# measured over at least 10 s), the remaining 6 take about 6 s under the quota.
CONSUMED_MESSAGES = 160


def consume_all(bootstrap, topic, client_id):
    """Reads the topic from the beginning with a confluent-kafka consumer; answers the time
    taken and the throttle times reported."""
    throttles = []
    start = time.monotonic()
    records = confluent_consume(
        bootstrap,
        topic,
        min_count=CONSUMED_MESSAGES,
        timeout_s=60,
        **{
            "client.id": client_id,
            # Small fetches, so that the quota is charged in small steps.
            "max.partition.fetch.bytes": 100_000,
            "throttle_cb": lambda event: throttles.append(event.throttle_time),
        },
    )
    elapsed = time.monotonic() - start
    assert len(records) == CONSUMED_MESSAGES
    return elapsed, throttles


def test_consumer_byte_rate_quota_throttles_its_client_only(broker, topic):
    create_topic(broker.bootstrap, topic)
    reports = confluent_produce(broker.bootstrap, topic, [{"value": PAYLOAD}] * CONSUMED_MESSAGES)
    assert all(err is None for err, _, _ in reports)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        entity = [("client-id", "slow-reader")]
        assert alter(admin, entity, [("consumer_byte_rate", float(CONSUMER_QUOTA_BPS), False)]) == [(0, None)]

        fast_elapsed, fast_throttles = consume_all(broker.bootstrap, topic, "fast-reader")
        assert not [t for t in fast_throttles if t > 0], fast_throttles

        slow_elapsed, slow_throttles = consume_all(broker.bootstrap, topic, "slow-reader")
        size = len(PAYLOAD) * CONSUMED_MESSAGES
        expected_s = size / CONSUMER_QUOTA_BPS - (WINDOW_S - 1)
        # Half of it is the check: throttling, not speed.
        assert slow_elapsed >= 0.5 * expected_s, (slow_elapsed, expected_s, slow_throttles)
        assert [t for t in slow_throttles if t > 0], "the consumer was told of its throttle"
        assert slow_elapsed > fast_elapsed
    finally:
        admin.close()


class RawClient:
    """One connection speaking Metadata v5 (no topics) with its own client id, ignoring
    throttles (kafka-python's client would wait them out itself): the broker's answer shows
    in each response, and its mute in how long the next answer takes."""

    def __init__(self, bootstrap, client_id):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.client_id = client_id.encode()
        self.correlation = 0

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the broker closed the connection"
            data += chunk
        return data

    def metadata_throttle_ms(self):
        self.correlation += 1
        header = struct.pack(">hhih", 3, 5, self.correlation, len(self.client_id)) + self.client_id
        frame = header + struct.pack(">i?", 0, False)  # topics: empty, no auto-creation
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        (size,) = struct.unpack(">i", self._read(4))
        correlation, throttle_ms = struct.unpack(">ii", self._read(size)[:8])
        assert correlation == self.correlation
        return throttle_ms

    def close(self):
        self.sock.close()


def test_request_percentage_quota_throttles_its_client_only(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="quota-admin")
    busy = RawClient(broker.bootstrap, "busy-app")
    idle = RawClient(broker.bootstrap, "idle-app")
    try:
        entity = [("client-id", "busy-app")]
        # 0.0001% of one thread: 10 us of handler time in a fresh entity's 10 s, which a few
        # requests exceed by far, so their throttle is the bound.
        assert alter(admin, entity, [("request_percentage", 0.0001, False)]) == [(0, None)]
        throttles = []
        deadline = time.monotonic() + 30
        while not any(t > 0 for t in throttles):
            assert time.monotonic() < deadline, f"no throttle after {len(throttles)} requests"
            throttles.append(busy.metadata_throttle_ms())
        # A request-time throttle is at most one window (quota.window.size.seconds).
        while throttles[-1] < 1000:
            assert time.monotonic() < deadline, throttles
            throttles.append(busy.metadata_throttle_ms())
        assert max(throttles) == 1000, throttles
        # The connection is muted: the next request is answered once the throttle ended.
        start = time.monotonic()
        assert busy.metadata_throttle_ms() > 0
        assert time.monotonic() - start >= 0.5, "the next request waited for the throttle"
        assert [idle.metadata_throttle_ms() for _ in range(50)] == [0] * 50

        # Without a request quota nothing is throttled any more.
        assert alter(admin, entity, [("request_percentage", 0.0, True)]) == [(0, None)]
        busy.metadata_throttle_ms()  # may still wait out the last mute
        assert [busy.metadata_throttle_ms() for _ in range(20)] == [0] * 20
    finally:
        admin.close()
        busy.close()
        idle.close()
