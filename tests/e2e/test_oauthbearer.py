"""SASL OAUTHBEARER with real clients (confluent-kafka, kafka-python) against a broker started
from a Kafka-style server.properties, with both of Kafka's validators:

- unsigned tokens (Kafka's default handler): librdkafka's built-in unsecured JWT and a
  kafka-python token provider; the required scope is enforced; the token's `sub` is the
  principal the ACLs see (alice may write, bob may not);
- signed tokens (`OAuthBearerValidatorCallbackHandler` with a JWKS file): RS256 tokens made
  here with the openssl CLI pass; an expired token, a wrong audience or issuer, another key's
  signature and an unsigned token are refused with SASL_AUTHENTICATION_FAILED; a key added to
  the file (rotation) is used without a restart; the session lifetime (KIP-368) ends with the
  token.
"""

import base64
import json
import shutil
import subprocess
import time

import pytest

from strata_e2e import (
    TestPki,
    assert_delivered,
    confluent_consume,
    confluent_produce,
    confluent_producer,
    create_topic,
    kafka_python_produce,
    wait_until,
)
from test_sasl import Raw

LISTENERS = {"PLAINTEXT": "PLAINTEXT", "SASL_PLAINTEXT": "SASL_PLAINTEXT", "SASL_SSL": "SASL_SSL"}
LOGIN_MODULE = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
SIGNED = "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
AUDIENCE, ISSUER = "strata", "https://idp.test"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl(*args, stdin=None) -> bytes:
    binary = shutil.which("openssl")
    assert binary, "openssl is not installed (scripts/test.sh installs it with apt-get)"
    result = subprocess.run([binary, *map(str, args)], input=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


class Idp:
    """An identity provider made here: RSA keys (openssl), their JWKS file, RS256 tokens."""

    def __init__(self, directory):
        self.dir = directory
        self.keys = {}
        self.jwks = directory / "jwks.json"

    def add_key(self, kid: str, publish: bool = True):
        key = self.dir / f"{kid}.pem"
        openssl("genrsa", "-out", key, "2048")
        self.keys[kid] = key
        if publish:
            self.publish()
        return key

    def publish(self, kids=None):
        entries = []
        for kid in kids or self.keys:
            modulus = openssl("rsa", "-in", self.keys[kid], "-noout", "-modulus").decode()
            n = bytes.fromhex(modulus.strip().split("=", 1)[1])
            entries.append({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                            "n": b64url(n), "e": b64url((65537).to_bytes(3, "big"))})
        self.jwks.write_text(json.dumps({"keys": entries}))

    def token(self, kid: str, sub="alice", lifetime_s=300, **claims) -> str:
        now = int(time.time())
        body = {"sub": sub, "iat": now, "exp": now + lifetime_s, "iss": ISSUER, "aud": AUDIENCE}
        body.update(claims)
        header = {"alg": "RS256", "typ": "JWT", "kid": kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(body).encode())}"
        signature = openssl("dgst", "-sha256", "-sign", self.keys[kid], stdin=signing_input.encode())
        return f"{signing_input}.{b64url(signature)}"


def unsigned_token(sub: str, scope, lifetime_s=300) -> str:
    now = int(time.time())
    header = b64url(json.dumps({"alg": "none"}).encode())
    body = b64url(json.dumps({"sub": sub, "iat": now, "exp": now + lifetime_s, "scope": scope}).encode())
    return f"{header}.{body}."


def client_message(token: str) -> bytes:
    return f"n,,\x01auth=Bearer {token}\x01\x01".encode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pki = TestPki(tmp_path_factory.mktemp("pki"))
    pki.server = pki.issue("server", "/CN=localhost", server=True)
    return pki


def with_token(token_fn) -> dict:
    """confluent-kafka settings that log in with the tokens `token_fn()` returns."""
    def oauth_cb(_config):
        # librdkafka refuses a token it thinks has expired: its expiry is the client's view,
        # a few minutes ahead whatever the token says (the broker checks the token's exp).
        return token_fn(), time.time() + 300
    return {"sasl.mechanism": "OAUTHBEARER", "oauth_cb": oauth_cb}


def refused(bootstrap, conf) -> str:
    """Produces one record with `conf` and returns the authentication error librdkafka
    reports (the record is not delivered)."""
    errors = []
    producer = confluent_producer(bootstrap, error_cb=errors.append, **{"message.timeout.ms": 4000}, **conf)
    producer.produce("oauth-refused", value=b"x")
    wait_until(lambda: producer.poll(0.1) is not None and any("uthentication" in str(e) for e in errors),
               20, "an authentication error")
    producer.purge()
    del producer
    return " ".join(str(e) for e in errors)


def test_unsigned_tokens_scope_and_principal(broker_factory, pki, topic):
    jaas = (f'{LOGIN_MODULE} required unsecuredLoginStringClaim_sub="admin" '
            'unsecuredValidatorRequiredScope="requiredScope";')
    broker = broker_factory(listeners=LISTENERS, properties={
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.server.keystore),
        "sasl.enabled.mechanisms": "OAUTHBEARER",
        "listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config": jaas,
        "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config": jaas,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:ANONYMOUS",
        "connection.failed.authentication.delay.ms": "10",
    })
    assert "OAUTHBEARER takes unsigned tokens" in broker.log_text()
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, AdminClient, \
        ResourcePatternType, ResourceType
    create_topic(broker.bootstrap_for("PLAINTEXT"), topic)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_for("PLAINTEXT")})
    bindings = [AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:alice", "*",
                           op, AclPermissionType.ALLOW)
                for op in (AclOperation.WRITE, AclOperation.READ, AclOperation.DESCRIBE)]
    # The consumers' (unused) group ids: FindCoordinator needs DESCRIBE on the group.
    bindings.append(AclBinding(ResourceType.GROUP, "*", ResourcePatternType.LITERAL, "User:alice",
                               "*", AclOperation.READ, AclPermissionType.ALLOW))
    for f in admin.create_acls(bindings).values():
        assert f.result(timeout=30) is None

    sasl = broker.bootstrap_for("SASL_PLAINTEXT")
    # librdkafka's own unsecured tokens, on both SASL listeners.
    for listener in ("SASL_PLAINTEXT", "SASL_SSL"):
        conf = {"security.protocol": listener.lower(), "sasl.mechanism": "OAUTHBEARER",
                "enable.sasl.oauthbearer.unsecure.jwt": True,
                "sasl.oauthbearer.config": "principal=alice scope=requiredScope,other"}
        if listener == "SASL_SSL":
            conf["ssl.ca.location"] = str(pki.ca)
        assert_delivered(confluent_produce(broker.bootstrap_for(listener), topic,
                                           [dict(value=listener.encode())], **conf))
    alice = {"security.protocol": "sasl_plaintext", "sasl.mechanism": "OAUTHBEARER",
             "enable.sasl.oauthbearer.unsecure.jwt": True,
             "sasl.oauthbearer.config": "principal=alice scope=requiredScope"}
    got = confluent_consume(sasl, topic, [0], min_count=2, **alice)
    assert sorted(r.value for r in got) == [b"SASL_PLAINTEXT", b"SASL_SSL"]

    # kafka-python with a token provider.
    from kafka.sasl.oauth import AbstractTokenProvider

    class Provider(AbstractTokenProvider):
        def token(self):
            return unsigned_token("alice", "requiredScope")

    kafka_python_produce(sasl, topic, [dict(value=b"kafka-python")], security_protocol="SASL_PLAINTEXT",
                         sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=Provider())

    # The token's sub is the principal: bob's token is valid but bob may not write.
    bob = dict(alice, **{"sasl.oauthbearer.config": "principal=bob scope=requiredScope"})
    reports = confluent_produce(sasl, topic, [dict(value=b"bob")], timeout_s=15,
                                **{"message.timeout.ms": 5000}, **bob)
    assert reports[0][0] is not None and "TOPIC_AUTHORIZATION_FAILED" in str(reports[0][0]), reports
    wait_until(lambda: "principal=User:bob" in broker.log_text(), 10, "the audit line for bob")

    # The required scope is enforced.
    text = refused(sasl, dict(alice, **{"sasl.oauthbearer.config": "principal=alice scope=wrongScope"}))
    assert "invalid token" in text and "requiredScope" in text, text
    # Raw protocol: a signed-looking token and garbage are refused, and the connection closes.
    for token in (unsigned_token("alice", "requiredScope").replace(
                      b64url(b'{"alg": "none"}'), b64url(b'{"alg": "RS256"}')) + "c2ln",
                  "not-a-jwt"):
        raw = Raw(broker.ports["SASL_PLAINTEXT"])
        assert raw.handshake("OAUTHBEARER")[0] == 0
        error, message, _, _ = raw.authenticate(client_message(token))
        assert error == 58 and "invalid token" in message, (error, message)
        assert raw.closed()
    got = confluent_consume(sasl, topic, [0], min_count=3, **alice)
    assert b"kafka-python" in [r.value for r in got] and b"bob" not in [r.value for r in got]


def test_signed_tokens_against_a_key_set(broker_factory, pki, topic, tmp_path):
    idp = Idp(tmp_path)
    idp.add_key("k1")
    broker = broker_factory(listeners=LISTENERS, properties={
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.server.keystore),
        "sasl.enabled.mechanisms": "OAUTHBEARER,PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config":
            'org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="admin-secret";',
        "listener.name.sasl_plaintext.plain.sasl.jaas.config":
            'org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="admin-secret";',
        "listener.name.sasl_ssl.oauthbearer.sasl.server.callback.handler.class": SIGNED,
        "listener.name.sasl_plaintext.oauthbearer.sasl.server.callback.handler.class": SIGNED,
        "sasl.oauthbearer.jwks.endpoint.url": f"file://{idp.jwks}",
        "sasl.oauthbearer.expected.audience": AUDIENCE,
        "sasl.oauthbearer.expected.issuer": ISSUER,
        "connections.max.reauth.ms": "600000",
        "connection.failed.authentication.delay.ms": "10",
    })
    assert "OAUTHBEARER checks signed tokens against the key set" in broker.log_text()
    tls = {"security.protocol": "sasl_ssl", "ssl.ca.location": str(pki.ca)}
    ssl_bootstrap = broker.bootstrap_for("SASL_SSL")
    good = dict(tls, **with_token(lambda: idp.token("k1")))
    assert_delivered(confluent_produce(ssl_bootstrap, topic, [dict(value=b"signed")], **good))
    got = confluent_consume(ssl_bootstrap, topic, [0], min_count=1, **good)
    assert [r.value for r in got] == [b"signed"]

    # kafka-python's token provider with a signed token.
    from kafka.sasl.oauth import AbstractTokenProvider

    class Provider(AbstractTokenProvider):
        def token(self):
            return idp.token("k1")

    kafka_python_produce(ssl_bootstrap, topic, [dict(value=b"kp")], security_protocol="SASL_SSL",
                         ssl_cafile=str(pki.ca), sasl_mechanism="OAUTHBEARER",
                         sasl_oauth_token_provider=Provider())

    # Refusals: expired, wrong audience, wrong issuer, a key not in the set, unsigned.
    idp.add_key("stranger", publish=False)
    bad = {
        "expired": lambda: idp.token("k1", iat=int(time.time()) - 600, exp=int(time.time()) - 120),
        "audience": lambda: idp.token("k1", aud="someone-else"),
        "issuer": lambda: idp.token("k1", iss="https://evil.test"),
        "stranger": lambda: idp.token("stranger"),
        "unsigned": lambda: unsigned_token("alice", "x"),
    }
    for name, token_fn in bad.items():
        text = refused(ssl_bootstrap, dict(tls, **with_token(token_fn)))
        assert "invalid token" in text, (name, text)
    sasl = broker.bootstrap_for("SASL_PLAINTEXT")
    raw = Raw(broker.ports["SASL_PLAINTEXT"])
    assert raw.handshake("OAUTHBEARER")[0] == 0
    error, message, _, _ = raw.authenticate(client_message(bad["stranger"]()))
    assert error == 58 and "no key of the key set" in message, message

    # Rotation: a new key published to the file is used at once (the token names its kid).
    idp.add_key("k2")
    rotated = dict(tls, **with_token(lambda: idp.token("k2")))
    assert_delivered(confluent_produce(ssl_bootstrap, topic, [dict(value=b"rotated")], **rotated))

    # KIP-368: the session ends with the token, before connections.max.reauth.ms.
    raw = Raw(broker.ports["SASL_PLAINTEXT"])
    assert raw.handshake("OAUTHBEARER")[0] == 0
    error, message, auth, lifetime = raw.authenticate(client_message(idp.token("k2", lifetime_s=20)))
    assert (error, message, auth) == (0, None, b"")
    assert 0 < lifetime <= 20_000, lifetime
    assert raw.metadata() is not None
    # PLAIN on the same listener is unaffected.
    assert_delivered(confluent_produce(sasl, topic, [dict(value=b"plain")], **{
        "security.protocol": "sasl_plaintext", "sasl.mechanism": "PLAIN",
        "sasl.username": "admin", "sasl.password": "admin-secret"}))
    got = confluent_consume(ssl_bootstrap, topic, [0], min_count=4, **good)
    assert [r.value for r in got] == [b"signed", b"kp", b"rotated", b"plain"]


def test_custom_handlers_and_remote_key_sets_stop_start_up(broker_factory):
    for key, value, expected in (
        ("listener.name.sasl_plaintext.oauthbearer.sasl.server.callback.handler.class",
         "com.example.MyHandler", "custom Java callback handlers"),
        ("sasl.oauthbearer.jwks.endpoint.url", "https://idp.test/jwks", "file"),
    ):
        properties = {"sasl.enabled.mechanisms": "OAUTHBEARER",
                      "sasl.server.callback.handler.class": SIGNED, key: value}
        broker = broker_factory(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
                                properties=properties, wait=False)
        assert broker.wait_exit(30) != 0
        assert expected in broker.log_text(), broker.log_text()[-2000:]
