"""SASL listeners with real clients: confluent-kafka, kafka-python and kcat over SASL_PLAINTEXT
and SASL_SSL, with PLAIN (users from the JAAS line) and SCRAM-SHA-256/512 (users created with
AdminClient.alter_user_scram_credentials), against a broker started from a Kafka-style
server.properties.

- a good password round trip with every mechanism on both listeners;
- a bad password and an unknown user are refused alike (SASL_AUTHENTICATION_FAILED), a
  disabled mechanism gets UNSUPPORTED_SASL_MECHANISM with the enabled list, a request before
  authentication closes the connection while other clients go on;
- SCRAM users described and deleted through the admin API (the next login fails);
- an old client's v0 handshake with raw tokens;
- re-authentication (KIP-368): a producer keeps working across several session lifetimes, a
  raw client that does not re-authenticate is closed;
- failed attempts over strata.sasl.max.failed.attempts are refused unchecked.
"""

import socket
import ssl
import struct
import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ScramMechanism, UserScramCredentialAlteration, \
    UserScramCredentialDeletion, UserScramCredentialUpsertion, ScramCredentialInfo

from strata_e2e import (
    TestPki,
    assert_delivered,
    confluent_consume,
    confluent_produce,
    kafka_python_consume,
    kafka_python_produce,
    kcat,
    wait_until,
)

LISTENERS = {"PLAINTEXT": "PLAINTEXT", "SASL_PLAINTEXT": "SASL_PLAINTEXT", "SASL_SSL": "SASL_SSL"}
PLAIN_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              'username="admin" password="admin-secret" user_admin="admin-secret" '
              'user_alice="alice-secret";')
SCRAM_JAAS = ('org.apache.kafka.common.security.scram.ScramLoginModule required '
              'username="admin" password="admin-secret";')
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pki = TestPki(tmp_path_factory.mktemp("pki"))
    pki.server = pki.issue("server", "/CN=localhost", server=True, rsa=True)
    return pki


def sasl_properties(pki, **extra):
    props = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.server.keystore),
        # Kafka's default is GSSAPI: listed, accepted, not served.
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,GSSAPI",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": PLAIN_JAAS,
        "listener.name.sasl_ssl.plain.sasl.jaas.config": PLAIN_JAAS,
        "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config": SCRAM_JAAS,
        "connection.failed.authentication.delay.ms": "50",
    }
    props.update(extra)
    return props


def start(broker_factory, pki, **extra):
    return broker_factory(listeners=LISTENERS, properties=sasl_properties(pki, **extra))


def confluent_sasl(pki, listener, mechanism, user, password) -> dict:
    conf = {"security.protocol": listener.lower(), "sasl.mechanism": mechanism,
            "sasl.username": user, "sasl.password": password}
    if listener == "SASL_SSL":
        conf["ssl.ca.location"] = str(pki.ca)
    return conf


def kafka_python_sasl(pki, listener, mechanism, user, password) -> dict:
    conf = {"security_protocol": listener, "sasl_mechanism": mechanism,
            "sasl_plain_username": user, "sasl_plain_password": password}
    if listener == "SASL_SSL":
        conf["ssl_cafile"] = str(pki.ca)
    return conf


def kcat_sasl(pki, listener, mechanism, user, password) -> list:
    args = ["-X", f"security.protocol={listener.lower()}", "-X", f"sasl.mechanisms={mechanism}",
            "-X", f"sasl.username={user}", "-X", f"sasl.password={password}"]
    if listener == "SASL_SSL":
        args += ["-X", f"ssl.ca.location={pki.ca}"]
    return args


def alter_scram(bootstrap, alterations):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.alter_user_scram_credentials(alterations)
    return {user: f.exception(timeout=30) for user, f in futures.items()}


def add_scram_user(bootstrap, user, password, mechanism, iterations=4096):
    info = ScramCredentialInfo(mechanism, iterations)
    errors = alter_scram(bootstrap, [UserScramCredentialUpsertion(user, info, password.encode())])
    assert errors == {user: None}, errors


def login_fails(bootstrap, conf) -> str:
    """Whether a client with `conf` is refused: the admin call fails with an authentication
    error (returned as text)."""
    errors = []
    admin = AdminClient({"bootstrap.servers": bootstrap, "error_cb": errors.append, **conf})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    wait_until(lambda: admin.poll(0.1) is not None and errors, 10,
               "the authentication error callback")
    del admin  # stops its reconnection attempts
    return " ".join(str(e) for e in errors)


def log_lines(broker, text):
    return [l for l in broker.log_text().splitlines() if text in l]


# ---- a raw Kafka client, for what the libraries hide ------------------------------------------


def _str(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class Raw:
    def __init__(self, port, ca=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if ca is not None:
            context = ssl.create_default_context(cafile=str(ca))
            self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        self.correlation = 0

    def send(self, api_key, version, body):
        self.correlation += 1
        header = struct.pack(">hhi", api_key, version, self.correlation) + _str("raw-e2e")
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)

    def read_frame(self):
        size = self._exactly(4)
        if size is None:
            return None
        return self._exactly(struct.unpack(">i", size)[0])

    def _exactly(self, n):
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except (ConnectionResetError, ssl.SSLError):
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def response(self):
        frame = self.read_frame()
        assert frame is not None, "the broker closed the connection"
        (correlation,) = struct.unpack(">i", frame[:4])
        assert correlation == self.correlation
        return frame[4:]

    def handshake(self, mechanism, version=1):
        self.send(17, version, _str(mechanism))
        body = self.response()
        (error, count) = struct.unpack(">hi", body[:6])
        mechanisms, at = [], 6
        for _ in range(count):
            (n,) = struct.unpack(">h", body[at:at + 2])
            mechanisms.append(body[at + 2:at + 2 + n].decode())
            at += 2 + n
        return error, mechanisms

    def authenticate(self, token):
        """SaslAuthenticate v1: (error code, message, auth bytes, session lifetime ms)."""
        self.send(36, 1, struct.pack(">i", len(token)) + token)
        body = self.response()
        (error, n) = struct.unpack(">hh", body[:4])
        at = 4
        message = None
        if n >= 0:
            message, at = body[at:at + n].decode(), at + n
        (size,) = struct.unpack(">i", body[at:at + 4])
        auth = body[at + 4:at + 4 + size]
        (lifetime,) = struct.unpack(">q", body[at + 4 + size:at + 12 + size])
        return error, message, auth, lifetime

    def metadata(self):
        """Metadata v0 for no topics; the response body, or None when the broker closed."""
        self.send(3, 0, struct.pack(">i", 0))
        frame = self.read_frame()
        return frame

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self):
        self.sock.close()


def plain_token(user, password):
    return f"\0{user}\0{password}".encode()


# ---- tests ------------------------------------------------------------------------------------


def test_round_trip_with_every_mechanism_listener_and_client(broker_factory, pki, new_topic):
    broker = start(broker_factory, pki)
    plaintext = broker.bootstrap_for("PLAINTEXT")
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        add_scram_user(plaintext, "carol", "carol-secret", getattr(ScramMechanism, mechanism.replace("-", "_")))
    users = {"PLAIN": ("alice", "alice-secret"), "SCRAM-SHA-256": ("carol", "carol-secret"),
             "SCRAM-SHA-512": ("carol", "carol-secret")}
    for listener in ("SASL_PLAINTEXT", "SASL_SSL"):
        bootstrap = broker.bootstrap_for(listener)
        for mechanism in MECHANISMS:
            user, password = users[mechanism]
            topic = new_topic()
            conf = confluent_sasl(pki, listener, mechanism, user, password)
            records = [dict(value=f"{listener} {mechanism} {i}".encode()) for i in range(20)]
            assert_delivered(confluent_produce(bootstrap, topic, records, acks="all", **conf))
            kafka_python_produce(bootstrap, topic, [dict(value=b"kafka-python")],
                                 **kafka_python_sasl(pki, listener, mechanism, user, password))
            kcat("-b", bootstrap, *kcat_sasl(pki, listener, mechanism, user, password),
                 "-P", "-t", topic, input="kcat\n")
            expected = [r["value"] for r in records] + [b"kafka-python", b"kcat"]
            got = confluent_consume(bootstrap, topic, [0], min_count=len(expected), **conf)
            assert [r.value for r in got] == expected, (listener, mechanism)
            got = kafka_python_consume(bootstrap, topic, [0],
                                       **kafka_python_sasl(pki, listener, mechanism, user, password))
            assert [r.value for r in got] == expected, (listener, mechanism)
            out = kcat("-b", bootstrap, *kcat_sasl(pki, listener, mechanism, user, password),
                       "-C", "-t", topic, "-e", "-q", "-o", "beginning", "-f", "%s\n").stdout
            assert out.splitlines() == [v.decode() for v in expected]
    # DescribeConfigs hides the JAAS line (a password-typed key) and its synonyms.
    from confluent_kafka.admin import ConfigResource, ResourceType
    admin = AdminClient({"bootstrap.servers": plaintext})
    resource = ConfigResource(ResourceType.BROKER, "1")
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["sasl.enabled.mechanisms"].value == "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,GSSAPI"
    assert configs["sasl.jaas.config"].is_sensitive and configs["sasl.jaas.config"].value is None
    assert all("secret" not in str(c.value) for c in configs.values())
    # SaslHandshake on a listener without SASL: ILLEGAL_SASL_STATE, the connection stays.
    raw = Raw(broker.ports["PLAINTEXT"])
    assert raw.handshake("PLAIN") == (34, [])
    assert raw.metadata() is not None
    raw.close()
    # One WARN for GSSAPI, listed but not served; the JAAS lines never reach the log.
    assert any("GSSAPI" in l and " WARN " in l for l in broker.log_text().splitlines())
    assert "alice-secret" not in broker.log_text()


def test_refusals_close_only_the_refused_connection(broker_factory, pki, topic):
    broker = start(broker_factory, pki, **{
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "PLAIN",
    })
    sasl = broker.bootstrap_for("SASL_PLAINTEXT")
    add_scram_user(broker.bootstrap_for("PLAINTEXT"), "dave", "dave-secret", ScramMechanism.SCRAM_SHA_256)
    good = confluent_sasl(pki, "SASL_PLAINTEXT", "PLAIN", "alice", "alice-secret")
    assert_delivered(confluent_produce(sasl, topic, [dict(value=b"before")], **good))

    # A wrong password and an unknown user: the same refusal, for PLAIN and SCRAM.
    for mechanism, user in (("PLAIN", "alice"), ("SCRAM-SHA-256", "dave")):
        wrong = login_fails(sasl, confluent_sasl(pki, "SASL_PLAINTEXT", mechanism, user, "nope"))
        unknown = login_fails(sasl, confluent_sasl(pki, "SASL_PLAINTEXT", mechanism, "mallory", "nope"))
        assert "invalid username or password" in wrong, wrong
        assert "invalid username or password" in unknown, unknown
    wait_until(lambda: len(log_lines(broker, "SASL authentication failed")) >= 4, 10,
               "one line per refusal")
    line = next(l for l in log_lines(broker, "SASL authentication failed") if "mallory" in l)
    for field in ("peer=", "listener=SASL_PLAINTEXT", "mechanism=", "user=mallory"):
        assert field in line, line

    # The raw protocol: GSSAPI (listed, not served) and a mechanism not enabled on the
    # listener get UNSUPPORTED_SASL_MECHANISM with the enabled list, then the close.
    raw = Raw(broker.ports["SASL_PLAINTEXT"])
    assert raw.handshake("GSSAPI") == (33, MECHANISMS)
    assert raw.closed()
    raw = Raw(broker.ports["SASL_SSL"], ca=pki.ca)
    assert raw.handshake("SCRAM-SHA-512") == (33, ["PLAIN"])
    assert raw.closed()
    wait_until(lambda: len(log_lines(broker, "UNSUPPORTED_SASL_MECHANISM")) >= 2, 10, "the lines")
    # librdkafka reports it as such.
    text = login_fails(broker.bootstrap_for("SASL_SSL"),
                       confluent_sasl(pki, "SASL_SSL", "SCRAM-SHA-512", "dave", "dave-secret"))
    assert "SCRAM-SHA-512" in text, text

    # A second handshake in the middle of an exchange: ILLEGAL_SASL_STATE, closed.
    raw = Raw(broker.ports["SASL_PLAINTEXT"])
    assert raw.handshake("PLAIN") == (0, MECHANISMS)
    error, _ = raw.handshake("PLAIN")
    assert error == 34
    assert raw.closed()

    # Metadata before authenticating: closed unanswered; the good client keeps working.
    raw = Raw(broker.ports["SASL_PLAINTEXT"])
    assert raw.metadata() is None
    wait_until(lambda: log_lines(broker, "request before SASL authentication"), 10, "the log line")
    assert_delivered(confluent_produce(sasl, topic, [dict(value=b"after")], **good))
    got = confluent_consume(sasl, topic, [0], min_count=2, **good)
    assert [r.value for r in got] == [b"before", b"after"]


def test_scram_users_through_the_admin_api(broker_factory, pki, topic):
    broker = start(broker_factory, pki)
    plaintext = broker.bootstrap_for("PLAINTEXT")
    sasl = broker.bootstrap_for("SASL_SSL")
    add_scram_user(plaintext, "erin", "erin-secret", ScramMechanism.SCRAM_SHA_256, iterations=8192)
    add_scram_user(plaintext, "erin", "erin-512", ScramMechanism.SCRAM_SHA_512)
    admin = AdminClient({"bootstrap.servers": plaintext})
    described = admin.describe_user_scram_credentials(["erin"])["erin"].result(timeout=30)
    infos = sorted((str(c.mechanism), c.iterations) for c in described.scram_credential_infos)
    assert infos == [("ScramMechanism.SCRAM_SHA_256", 8192), ("ScramMechanism.SCRAM_SHA_512", 4096)], infos
    # Every user, and an unknown one (RESOURCE_NOT_FOUND).
    everyone = admin.describe_user_scram_credentials().result(timeout=30)
    assert set(everyone) == {"erin"}
    with pytest.raises(KafkaException, match="does not exist"):
        admin.describe_user_scram_credentials(["nobody"])["nobody"].result(timeout=30)
    # Kafka's refusals: too few iterations, deleting what does not exist.
    errors = alter_scram(plaintext, [
        UserScramCredentialUpsertion("frank", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 1000), b"x"),
        UserScramCredentialDeletion("ghost", ScramMechanism.SCRAM_SHA_512),
    ])
    assert "iterations" in str(errors["frank"]), errors
    assert "does not exist" in str(errors["ghost"]), errors

    conf = confluent_sasl(pki, "SASL_SSL", "SCRAM-SHA-256", "erin", "erin-secret")
    assert_delivered(confluent_produce(sasl, topic, [dict(value=b"erin")], **conf))
    assert [r.value for r in confluent_consume(sasl, topic, [0], min_count=1, **conf)] == [b"erin"]
    # Over SASL as well: the admin API works for an authenticated user.
    errors = alter_scram(plaintext, [UserScramCredentialDeletion("erin", ScramMechanism.SCRAM_SHA_256)])
    assert errors == {"erin": None}, errors
    login_fails(sasl, conf)
    # The other mechanism's credential is still there.
    conf512 = confluent_sasl(pki, "SASL_SSL", "SCRAM-SHA-512", "erin", "erin-512")
    assert [r.value for r in confluent_consume(sasl, topic, [0], min_count=1, **conf512)] == [b"erin"]
    # Credentials are metadata: they survive a restart.
    broker.stop()
    broker.start()
    assert [r.value for r in confluent_consume(sasl, topic, [0], min_count=1, **conf512)] == [b"erin"]


def test_old_clients_v0_handshake_with_raw_tokens(broker_factory, pki):
    broker = start(broker_factory, pki)
    raw = Raw(broker.ports["SASL_PLAINTEXT"])
    assert raw.handshake("PLAIN", version=0) == (0, MECHANISMS)
    token = plain_token("alice", "alice-secret")
    raw.sock.sendall(struct.pack(">i", len(token)) + token)
    assert raw.read_frame() == b"", "PLAIN's empty answer token, as a bare frame"
    assert raw.metadata() is not None
    raw.close()
    # A wrong password over v0: closed (v0 carries no error).
    raw = Raw(broker.ports["SASL_PLAINTEXT"])
    raw.handshake("PLAIN", version=0)
    token = plain_token("alice", "wrong")
    raw.sock.sendall(struct.pack(">i", len(token)) + token)
    assert raw.read_frame() is None


def test_reauthentication(broker_factory, pki, topic):
    lifetime_ms = 1500
    broker = start(broker_factory, pki, **{"connections.max.reauth.ms": str(lifetime_ms)})
    sasl = broker.bootstrap_for("SASL_PLAINTEXT")

    # A raw client gets the session lifetime and is closed on its first request after it.
    raw = Raw(broker.ports["SASL_PLAINTEXT"])
    assert raw.handshake("PLAIN") == (0, MECHANISMS)
    error, message, _, lifetime = raw.authenticate(plain_token("alice", "alice-secret"))
    assert (error, message) == (0, None)
    assert 0 < lifetime <= lifetime_ms
    ended = time.monotonic() + lifetime / 1000
    assert raw.metadata() is not None
    # Re-authenticating on the same connection as the same user renews the session.
    assert raw.handshake("PLAIN") == (0, MECHANISMS)
    assert raw.authenticate(plain_token("alice", "alice-secret"))[0] == 0
    ended = time.monotonic() + lifetime_ms / 1000
    # As another user: refused and closed.
    other = Raw(broker.ports["SASL_PLAINTEXT"])
    other.handshake("PLAIN")
    other.authenticate(plain_token("alice", "alice-secret"))
    other.handshake("PLAIN")
    error, message, _, _ = other.authenticate(plain_token("admin", "admin-secret"))
    assert error == 58 and "principal" in message, (error, message)
    assert other.closed()
    # The session of `raw` ends; its next request closes it.
    wait_until(lambda: time.monotonic() > ended + 0.1, lifetime_ms / 1000 + 5, "the session end")
    assert raw.metadata() is None
    wait_until(lambda: log_lines(broker, "did not re-authenticate"), 10, "the log line")

    # librdkafka re-authenticates before each lifetime ends: a producer goes on across
    # several lifetimes on its connection.
    from strata_e2e import confluent_producer
    producer = confluent_producer(sasl, **confluent_sasl(pki, "SASL_PLAINTEXT", "PLAIN", "alice", "alice-secret"))
    reports = []
    deadline = time.monotonic() + 4 * lifetime_ms / 1000
    sent = 0
    while time.monotonic() < deadline:
        producer.produce(topic, value=f"r{sent}".encode(), on_delivery=lambda e, m: reports.append(e))
        sent += 1
        producer.flush(10)
        time.sleep(0.1)
    assert producer.flush(10) == 0
    assert len(reports) == sent and all(e is None for e in reports), reports[:3]
    # Only the raw client was closed for an ended session; the producer re-authenticated.
    closed_for_session = [l for l in log_lines(broker, "did not re-authenticate") if "peer=" in l]
    assert len(closed_for_session) == 1, closed_for_session


def test_failed_attempts_are_limited(broker_factory, pki):
    broker = start(broker_factory, pki, **{
        "strata.sasl.max.failed.attempts": "3",  # off by default
        "strata.sasl.failed.attempts.window.ms": "600000",
    })
    port = broker.ports["SASL_PLAINTEXT"]

    def attempt(user, password):
        raw = Raw(port)
        raw.handshake("PLAIN")
        error, message, _, _ = raw.authenticate(plain_token(user, password))
        raw.close()
        return error, message

    for _ in range(3):
        assert attempt("alice", "wrong")[1].endswith("invalid username or password")
    # Over the limit: the right password is refused unchecked too.
    error, message = attempt("alice", "alice-secret")
    assert error == 58 and "too many failed attempts" in message, message
    assert attempt("alice", "alice-secret")[0] == 58
    wait_until(lambda: log_lines(broker, "too many failed SASL authentications"), 10, "the WARN")
    assert len(log_lines(broker, "too many failed SASL authentications")) == 1, "once per window"


def test_strata_cli_over_sasl_ssl(broker_factory, pki, topic, tmp_path):
    """The strata CLI with Kafka's client properties: SCRAM over SASL_SSL (TLS with the CA
    from ssl.ca.location), users managed with `strata users`."""
    import subprocess

    from strata_e2e import strata_binary

    broker = start(broker_factory, pki)
    admin = tmp_path / "admin.properties"
    admin.write_text("security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n"
                     "sasl.username=admin\nsasl.password=admin-secret\n"
                     f"ssl.ca.location={pki.ca}\n")
    client = tmp_path / "client.properties"
    client.write_text("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
                      f"sasl.jaas.config={SCRAM_JAAS.replace('admin', 'gina')}\n"
                      f"ssl.ca.location={pki.ca}\n")

    def strata(config, *args, input=None):
        return subprocess.run(
            [str(strata_binary()), "--command-config", str(config),
             "-b", broker.bootstrap_for("SASL_SSL"), *args],
            input=input, capture_output=True, text=True, timeout=60,
        )

    made = strata(admin, "users", "create", "gina", "--mechanism", "SCRAM-SHA-512",
                  "--password", "gina-secret")
    assert made.returncode == 0, made.stderr
    # The JAAS line's password is "gina-secret" (the line above with admin -> gina).
    produced = strata(client, "produce", topic, input="one\ntwo\n")
    assert produced.returncode == 0, produced.stderr
    consumed = strata(client, "consume", topic, "--from-beginning", "--max-messages", "2")
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == ["one", "two"]
    # confluent-kafka sees the same records as gina.
    conf = confluent_sasl(pki, "SASL_SSL", "SCRAM-SHA-512", "gina", "gina-secret")
    assert [r.value for r in confluent_consume(broker.bootstrap_for("SASL_SSL"), topic, [0],
                                               min_count=2, **conf)] == [b"one", b"two"]
    # A CA that did not sign the broker's certificate: refused by the client's TLS.
    other = TestPki(tmp_path / "other")
    wrong = tmp_path / "wrong.properties"
    wrong.write_text(client.read_text().replace(str(pki.ca), str(other.ca)))
    failed = strata(wrong, "topics", "list")
    assert failed.returncode == 1 and "TLS" in failed.stderr, failed.stderr
