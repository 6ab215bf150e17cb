"""TLS listeners with real clients: confluent-kafka, kafka-python and kcat over SSL against a
broker started from a Kafka-style server.properties (a PLAINTEXT and an SSL listener, PEM
keystore and truststore), with a CA and certificates this module makes with openssl.

- round trip over TLS 1.3 and 1.2, each client producing and consuming;
- mutual TLS: no certificate is refused, a certificate is accepted and the broker derives the
  principal from its subject through ssl.principal.mapping.rules (read from the DEBUG line it
  logs for each TLS connection);
- a plaintext client on the TLS port, a TLS client on the plaintext port and a client that
  never finishes its handshake are closed with an INFO line, while a TLS client goes on;
- rotating the keystore file: new connections get the new certificate without a restart,
  existing ones keep working, a broken file keeps the previous certificate; SIGHUP reloads at
  once.
"""

import signal
import socket
import ssl
import threading
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from strata_e2e import (
    TestPki,
    assert_delivered,
    certificate_der,
    confluent_consume,
    confluent_produce,
    confluent_producer,
    kafka_python_consume,
    kafka_python_produce,
    kcat,
    peer_certificate,
    wait_until,
)

# The DEBUG line per TLS connection (principal and subject) comes from this target.
TLS_LOG = {"STRATA_LOG": "info,strata_broker::connection=debug"}
LISTENERS = {"PLAINTEXT": "PLAINTEXT", "SSL": "SSL"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pki = TestPki(tmp_path_factory.mktemp("pki"))
    pki.server = pki.issue("server", "/CN=localhost", server=True, rsa=True)
    pki.alice = pki.issue("alice", "/C=US/O=acme/OU=eng/CN=Alice")
    pki.bob = pki.issue("bob", "/C=US/O=acme, inc./OU=ops/CN=bob")
    return pki


def ssl_properties(pki, keystore=None, **extra):
    props = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore or pki.server.keystore),
    }
    props.update(extra)
    return props


def confluent_ssl(pki, client=None) -> dict:
    conf = {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca)}
    if client is not None:
        conf["ssl.certificate.location"] = str(client.cert)
        conf["ssl.key.location"] = str(client.key)
    return conf


def kafka_python_ssl(pki, client=None, context=None) -> dict:
    conf = {"security_protocol": "SSL", "ssl_cafile": str(pki.ca)}
    if client is not None:
        conf["ssl_certfile"] = str(client.cert)
        conf["ssl_keyfile"] = str(client.key)
    if context is not None:
        conf["ssl_context"] = context
    return conf


def kcat_ssl(pki, client=None) -> list:
    args = ["-X", "security.protocol=ssl", "-X", f"ssl.ca.location={pki.ca}"]
    if client is not None:
        args += ["-X", f"ssl.certificate.location={client.cert}",
                 "-X", f"ssl.key.location={client.key}"]
    return args


def principals_logged(broker) -> list:
    """The principals of the TLS connections the broker logged, in order."""
    out = []
    for line in broker.log_text().splitlines():
        if "TLS connection established" in line and "principal=" in line:
            out.append(line.split("principal=", 1)[1].split(" subject=", 1)[0])
    return out


def closed_unanswered(sock) -> bool:
    """Whether the peer closes `sock` without sending anything (a reset counts: the broker
    closes with the client's bytes unread)."""
    try:
        return sock.recv(4) == b""
    except ConnectionResetError:
        return True


def log_lines_at(broker, *levels) -> list:
    return [l for l in broker.log_text().splitlines() if any(f" {lv} " in l for lv in levels)]


def test_round_trip_over_tls_with_every_client(broker_factory, pki, topic):
    broker = broker_factory(listeners=LISTENERS, properties=ssl_properties(pki), env=TLS_LOG)
    tls = broker.bootstrap_for("SSL")

    records = [dict(key=f"k{i}".encode(), value=f"tls record {i}".encode()) for i in range(50)]
    assert_delivered(confluent_produce(tls, topic, records, acks="all", **confluent_ssl(pki)))
    kafka_python_produce(tls, topic, [dict(value=b"from kafka-python")], **kafka_python_ssl(pki))
    # TLS 1.2 as well: kafka-python with a context capped at 1.2.
    tls12 = ssl.create_default_context(cafile=str(pki.ca))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    kafka_python_produce(tls, topic, [dict(value=b"over TLS 1.2")],
                         **kafka_python_ssl(pki, context=tls12))
    kcat("-b", tls, *kcat_ssl(pki), "-P", "-t", topic, input="from kcat\n")
    expected = [r["value"] for r in records] + [b"from kafka-python", b"over TLS 1.2", b"from kcat"]

    got = confluent_consume(tls, topic, [0], min_count=len(expected), **confluent_ssl(pki))
    assert [r.value for r in got] == expected
    got = kafka_python_consume(tls, topic, [0], **kafka_python_ssl(pki))
    assert [r.value for r in got] == expected
    out = kcat("-b", tls, *kcat_ssl(pki), "-C", "-t", topic, "-e", "-q", "-o", "beginning",
               "-f", "%s\n").stdout
    assert out.splitlines() == [v.decode() for v in expected]

    # Metadata over the SSL listener advertises the SSL listener (clients stay on TLS), and
    # the PLAINTEXT listener of the same broker serves the same data.
    listing = kcat("-b", tls, *kcat_ssl(pki), "-L", "-t", topic).stdout
    assert f"127.0.0.1:{broker.ports['SSL']}" in listing, listing
    got = confluent_consume(broker.bootstrap_for("PLAINTEXT"), topic, [0], min_count=len(expected))
    assert len(got) == len(expected)

    # Without client certificates every TLS client is User:ANONYMOUS.
    principals = principals_logged(broker)
    assert principals and set(principals) == {"User:ANONYMOUS"}, principals
    assert "TLS ready" in broker.log_text()


def test_mutual_tls_principal_from_the_certificate(broker_factory, pki, topic):
    broker = broker_factory(
        listeners=LISTENERS,
        properties=ssl_properties(
            pki,
            **{
                "ssl.client.auth": "required",
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(pki.ca),
                # eng's certificates map to their lowercased CN; everyone else keeps the
                # whole RFC 2253 name (Kafka's DEFAULT).
                "ssl.principal.mapping.rules": "RULE:^CN=([^,]+),OU=eng,.*$/$1/L,DEFAULT",
            },
        ),
        env=TLS_LOG,
    )
    tls = broker.bootstrap_for("SSL")

    # No client certificate: refused.
    admin = AdminClient({"bootstrap.servers": tls, **confluent_ssl(pki)})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    wait_until(
        lambda: any("closing connection" in l and "SSL" in l for l in broker.log_text().splitlines()),
        10, "the INFO line for the refused client",
    )
    assert principals_logged(broker) == []

    # Alice's certificate: accepted, principal User:alice (her rule), with every client.
    records = [dict(value=f"mtls {i}".encode()) for i in range(10)]
    assert_delivered(confluent_produce(tls, topic, records, **confluent_ssl(pki, pki.alice)))
    got = confluent_consume(tls, topic, [0], min_count=10, **confluent_ssl(pki, pki.alice))
    assert [r.value for r in got] == [r["value"] for r in records]
    kafka_python_produce(tls, topic, [dict(value=b"kp")], **kafka_python_ssl(pki, pki.alice))
    out = kcat("-b", tls, *kcat_ssl(pki, pki.alice), "-C", "-t", topic, "-e", "-q",
               "-o", "beginning", "-f", "%s\n").stdout
    assert out.splitlines()[-1] == "kp"
    principals = principals_logged(broker)
    assert principals and set(principals) == {"User:alice"}, principals
    # The subject as Kafka forms it: RFC 2253, last RDN first.
    assert 'subject="CN=Alice,OU=eng,O=acme,C=US"' in broker.log_text()

    # Bob (another OU) falls through to DEFAULT: the whole name, the comma escaped.
    kcat("-b", tls, *kcat_ssl(pki, pki.bob), "-L")
    wait_until(lambda: "User:CN=bob,OU=ops,O=acme\\, inc.,C=US" in principals_logged(broker),
               10, lambda: f"bob's principal; logged: {principals_logged(broker)}")


def test_kafka_python_admin_over_mutual_tls_13(broker_factory, pki):
    """kafka-python's admin client fails at once when its connection turns readable before
    its first request; TLS 1.3 session tickets sent after a client-certificate handshake did
    that (8 of 10 connections failed). The broker sends none."""
    from kafka.admin import KafkaAdminClient

    broker = broker_factory(
        listeners=LISTENERS,
        properties=ssl_properties(pki, **{"ssl.client.auth": "required",
                                          "ssl.truststore.type": "PEM",
                                          "ssl.truststore.location": str(pki.ca)}),
    )
    for _ in range(10):
        client = KafkaAdminClient(bootstrap_servers=broker.bootstrap_for("SSL"),
                                  **kafka_python_ssl(pki, pki.alice))
        try:
            assert isinstance(client.list_topics(), list)
        finally:
            client.close()


def test_wrong_clients_fail_cleanly_beside_a_working_one(broker_factory, pki, topic):
    broker = broker_factory(
        listeners=LISTENERS,
        properties=ssl_properties(pki, **{"strata.ssl.handshake.timeout.ms": "1000"}),
    )
    tls = broker.bootstrap_for("SSL")
    plain_port, tls_port = broker.ports["PLAINTEXT"], broker.ports["SSL"]

    # A TLS producer keeps producing over one connection while the wrong clients come and go.
    producer = confluent_producer(tls, **confluent_ssl(pki))
    reports, stop = [], threading.Event()

    def produce():
        i = 0
        while not stop.is_set() or i < 200:
            producer.produce(topic, value=f"steady {i}".encode(),
                             on_delivery=lambda err, msg: reports.append(err))
            producer.poll(0.01)
            i += 1
        producer.flush(30)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    wait_until(lambda: len(reports) >= 20, 30, "the TLS producer's first deliveries")

    api_versions_v0 = bytes.fromhex("0000000e" "00120000" "00000001" "0004" "74657374")
    # A plaintext Kafka request on the TLS port: closed unanswered.
    with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as sock:
        sock.sendall(api_versions_v0)
        assert closed_unanswered(sock), "a plaintext request on the TLS port must get no answer"
    # Real plaintext clients on the TLS port fail.
    admin = AdminClient({"bootstrap.servers": tls})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    # A TLS client on the plaintext port fails too.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_for("PLAINTEXT"), **confluent_ssl(pki)})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    context = ssl.create_default_context(cafile=str(pki.ca))
    with socket.create_connection(("127.0.0.1", plain_port), timeout=10) as sock:
        with pytest.raises((ssl.SSLError, OSError)):
            context.wrap_socket(sock, server_hostname="localhost")
    # A client that connects and never completes a handshake is closed after the timeout
    # (1 s here), silent or with half a ClientHello.
    for first_bytes in (b"", b"\x16\x03\x01"):
        with socket.create_connection(("127.0.0.1", tls_port), timeout=15) as sock:
            sock.sendall(first_bytes)
            assert closed_unanswered(sock), "the broker must close a stalled handshake"

    stop.set()
    worker.join(60)
    assert not worker.is_alive()
    assert len(reports) >= 200 and all(err is None for err in reports), \
        f"{sum(e is not None for e in reports)} delivery errors: {[e for e in reports if e][:3]}"
    got = confluent_consume(tls, topic, [0], min_count=len(reports), **confluent_ssl(pki))
    assert len(got) == len(reports)

    log = broker.log_text()
    assert "did not start a TLS handshake" in log
    assert "started a TLS handshake on a listener without TLS" in log
    assert "TLS handshake not finished within" in log
    assert log_lines_at(broker, "WARN", "ERROR") == []


def kafka_continued(pem_path) -> str:
    """A PEM file as a server.properties value written Kafka's way: its lines joined by
    continuation backslashes."""
    return " \\\n    ".join(Path(pem_path).read_text().strip().splitlines())


def test_inline_pem_and_requested_client_certificates(broker_factory, pki, topic):
    broker = broker_factory(
        listeners=LISTENERS,
        properties={
            "ssl.keystore.type": "PEM",
            "ssl.keystore.key": kafka_continued(pki.server.key),
            "ssl.keystore.certificate.chain": kafka_continued(pki.server.cert),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.certificates": kafka_continued(pki.ca),
            "ssl.client.auth": "requested",
        },
        env=TLS_LOG,
    )
    tls = broker.bootstrap_for("SSL")
    # Without a certificate: served, as User:ANONYMOUS.
    assert_delivered(confluent_produce(tls, topic, [dict(value=b"anonymous")], **confluent_ssl(pki)))
    # With one: verified, and the principal is the whole subject (DEFAULT rule).
    out = kcat("-b", tls, *kcat_ssl(pki, pki.alice), "-C", "-t", topic, "-e", "-q",
               "-o", "beginning", "-f", "%s\n").stdout
    assert out.splitlines() == ["anonymous"]
    principals = principals_logged(broker)
    assert "User:ANONYMOUS" in principals, principals
    assert "User:CN=Alice,OU=eng,O=acme,C=US" in principals, principals
    # The inline key is never shown by DescribeConfigs.
    from confluent_kafka.admin import ConfigResource

    admin = AdminClient({"bootstrap.servers": broker.bootstrap_for("PLAINTEXT")})
    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    configs = admin.describe_configs([resource])[resource].result(30)
    key = configs["ssl.keystore.key"]
    assert key.is_sensitive and key.value is None, key


def start_with_own_keystore(broker_factory, pki, tmp_path, name, reload_interval_ms):
    """A broker whose keystore file (tmp_path/keystore.pem) the test may rewrite, first
    holding certificate `<name>-1`; returns (broker, keystore path, that certificate, a
    function giving the DER certificate a new connection to the SSL listener gets)."""
    keystore = tmp_path / "keystore.pem"
    first = pki.issue(f"{name}-1", "/O=first/CN=localhost", server=True)
    keystore.write_text(first.keystore.read_text())
    broker = broker_factory(
        listeners=LISTENERS,
        properties=ssl_properties(
            pki, keystore, **{"strata.ssl.reload.interval.ms": str(reload_interval_ms)}
        ),
    )

    def presented() -> bytes:
        return peer_certificate("127.0.0.1", broker.ports["SSL"], pki.ca)

    assert presented() == certificate_der(first.cert)
    return broker, keystore, first, presented


def test_certificate_rotation_without_restart(broker_factory, pki, topic, tmp_path):
    broker, keystore, first, presented = start_with_own_keystore(
        broker_factory, pki, tmp_path, "rotate", reload_interval_ms=200
    )

    # A connection opened before the rotation.
    producer = confluent_producer(broker.bootstrap_for("SSL"), **confluent_ssl(pki))
    reports = []
    producer.produce(topic, value=b"before", on_delivery=lambda err, msg: reports.append(err))
    assert producer.flush(30) == 0

    def replace(content: str):
        staged = tmp_path / "keystore.pem.new"
        staged.write_text(content)
        staged.replace(keystore)

    second = pki.issue("rotate-2", "/O=second/CN=localhost", server=True)
    replace(second.keystore.read_text())
    wait_until(
        lambda: presented() == certificate_der(second.cert),
        15, "new connections to get the rotated certificate",
    )
    assert "TLS certificates reloaded" in broker.log_text()
    # The earlier connection goes on.
    producer.produce(topic, value=b"after", on_delivery=lambda err, msg: reports.append(err))
    assert producer.flush(30) == 0
    assert reports == [None, None]

    # A broken file is reported and the current certificate stays.
    replace("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    wait_until(lambda: "cannot reload the TLS certificates" in broker.log_text(), 15,
               "the ERROR line for the broken keystore")
    assert presented() == certificate_der(second.cert)
    got = confluent_consume(broker.bootstrap_for("SSL"), topic, [0], min_count=2,
                            **confluent_ssl(pki))
    assert [r.value for r in got] == [b"before", b"after"]

    # Fixed again: picked up.
    third = pki.issue("rotate-3", "/O=third/CN=localhost", server=True)
    replace(third.keystore.read_text())
    wait_until(
        lambda: presented() == certificate_der(third.cert),
        15, "the certificate after the broken file was fixed",
    )


def test_sighup_reloads_the_certificates(broker_factory, pki, tmp_path):
    # No polling: only SIGHUP reloads.
    broker, keystore, first, presented = start_with_own_keystore(
        broker_factory, pki, tmp_path, "hup", reload_interval_ms=0
    )
    second = pki.issue("hup-2", "/O=second/CN=localhost", server=True)
    keystore.write_text(second.keystore.read_text())
    assert presented() == certificate_der(first.cert)
    broker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: presented() == certificate_der(second.cert), 15,
               "the certificate after SIGHUP")
    assert broker.running


def test_java_keystores_are_refused_with_the_conversion(broker_factory, pki):
    broker = broker_factory(
        listeners=LISTENERS,
        properties={"ssl.keystore.type": "PKCS12", "ssl.keystore.location": str(pki.server.keystore)},
        wait=False,
    )
    assert broker.wait_exit(20) != 0
    log = broker.log_text()
    assert "ssl.keystore.type" in log and "openssl pkcs12" in log, log[-2000:]


