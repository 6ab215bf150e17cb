"""Kafka's own single-node KRaft configuration, unchanged: a `server.properties` of a one-node
Apache Kafka 4.x in combined mode (tests/e2e/data/kraft-server.properties, ports and log.dirs
substituted) starts Strata, real clients round-trip records through its client listener, and
metadata advertises that listener, never the controller's.

(STRATA_E2E_KRAFT_PROPERTIES=1 runs the whole suite this way; these tests run always.)"""

import socket

from strata_e2e import (
    assert_delivered,
    confluent_consume,
    confluent_produce,
    kafka_python_consume,
    kafka_python_produce,
    kcat,
    list_topic_names,
    wait_until,
)


def test_kafka_kraft_server_properties_start_strata(broker_factory, topic):
    broker = broker_factory(kraft=True)
    assert broker.properties_path.is_file()
    # confluent-kafka (librdkafka) and kafka-python round-trip through the client listener.
    records = [dict(key=f"k{i}".encode(), value=f"v{i}".encode()) for i in range(20)]
    assert_delivered(confluent_produce(broker.bootstrap, topic, records, acks="all"))
    kafka_python_produce(broker.bootstrap, topic, [dict(value=b"from kafka-python")])
    got = confluent_consume(broker.bootstrap, topic, [0], min_count=21)
    assert [r.value for r in got] == [r["value"] for r in records] + [b"from kafka-python"]
    assert [r.offset for r in got] == list(range(21))
    got = kafka_python_consume(broker.bootstrap, topic, [0])
    assert len(got) == 21

    # Metadata (kcat -L) advertises the client listener only.
    listing = kcat("-b", broker.bootstrap, "-L", "-m", "10").stdout
    assert f"127.0.0.1:{broker.port}" in listing, listing
    assert str(broker.controller_port) not in listing, listing
    assert topic in list_topic_names(broker.bootstrap)

    # The controller listener is bound (the port is the quorum's) but serves no client: a
    # connection there is closed without an answer.
    with socket.create_connection(("127.0.0.1", broker.controller_port), timeout=10) as sock:
        sock.settimeout(10)
        api_versions_v0 = bytes.fromhex("0000000e" "00120000" "00000001" "0004" "74657374")
        try:
            sock.sendall(api_versions_v0)
            answer = sock.recv(4)
        except (ConnectionResetError, BrokenPipeError):
            answer = b""
        assert answer == b"", "the controller listener must not answer clients"

    # The lines of Kafka's file that have no effect in Strata are named once at start-up.
    wait_until(
        lambda: "accepted but not in effect" in broker.log_text(), 10,
        "the WARN line naming the keys without effect",
    )
    warn = next(l for l in broker.log_text().splitlines() if "accepted but not in effect" in l)
    for key in ("num.network.threads", "share.coordinator.state.topic.min.isr"):
        assert key in warn, warn


def test_a_broker_only_node_named_as_a_voter_is_explained(broker_factory):
    # Kafka's single-node file with the controller role taken away: the node is still one
    # of controller.quorum.voters and still listens on the controller listener.
    broker = broker_factory("process.roles=broker", kraft=True, wait=False)
    code = broker.wait_exit(20)
    assert code != 0
    log = broker.log_text()
    assert "controller.quorum.voters" in log and "process.roles" in log, log[-2000:]


def assert_refused(broker_factory, protocol_map: str, *explanation):
    """A KRaft file with this listener.security.protocol.map stops start-up, and the log
    explains why with every string of `explanation`."""
    broker = broker_factory(f"listener.security.protocol.map={protocol_map}", kraft=True, wait=False)
    assert broker.wait_exit(20) != 0
    log = broker.log_text()
    assert all(s in log for s in explanation), log[-2000:]


def test_sasl_listener_without_a_served_mechanism_is_refused_clearly(broker_factory):
    # Kafka's default sasl.enabled.mechanisms is GSSAPI, which Strata does not offer.
    assert_refused(broker_factory, "CONTROLLER:PLAINTEXT,CLIENT:SASL_PLAINTEXT",
                   "GSSAPI", "sasl.enabled.mechanisms")


def test_ssl_listener_without_a_keystore_is_explained(broker_factory):
    assert_refused(broker_factory, "CONTROLLER:PLAINTEXT,CLIENT:SSL",
                   "ssl.keystore.location", "listener.name.client.")
