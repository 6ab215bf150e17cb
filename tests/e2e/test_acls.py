"""ACL authorization with real clients over mutual TLS.

The broker starts from a Kafka-style server.properties with the StandardAuthorizer on, an SSL
listener that requires client certificates, and `super.users=User:admin`. Principals come from
the certificates (CN=admin, CN=alice, CN=bob mapped to their CN). The ACLs are created, listed
and deleted with confluent-kafka's and kafka-python's AdminClients as admin; then:

- alice may produce and not consume, bob may consume and not produce;
- a DENY overrides an ALLOW;
- a consumer group bob may not READ is refused (GROUP_AUTHORIZATION_FAILED);
- a topic alice may not DESCRIBE is hidden from list_topics, and asking for it (or for a topic
  that does not exist) answers TOPIC_AUTHORIZATION_FAILED;
- prefixed ACLs cover the names they start;
- a denial writes one audit line (principal, host, operation, resource, API);
- a transactional producer without WRITE on its transactional id is refused;
- non-super users may not manage ACLs; ACLs survive a restart; without an authorizer the ACL
  APIs answer SECURITY_DISABLED.
"""

import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from strata_e2e import (
    GROUP_OVERRIDES,
    TestPki,
    assert_delivered,
    confluent_consume,
    confluent_consumer,
    confluent_produce,
    confluent_producer,
    kafka_python_produce,
    wait_until,
)

LISTENERS = {"SSL": "SSL"}
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pki = TestPki(tmp_path_factory.mktemp("pki"))
    pki.server = pki.issue("server", "/CN=localhost", server=True, rsa=True)
    for name in ("admin", "alice", "bob"):
        setattr(pki, name, pki.issue(name, f"/CN={name}"))
    return pki


def properties(pki, authorizer=True, **extra):
    props = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.server.keystore),
        "ssl.client.auth": "required",
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pki.ca),
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
    }
    if authorizer:
        props["authorizer.class.name"] = STANDARD_AUTHORIZER
        props["super.users"] = "User:admin"
    props.update(extra)
    return props


@pytest.fixture
def secure_broker(broker_factory, pki):
    broker = broker_factory(GROUP_OVERRIDES, listeners=LISTENERS, properties=properties(pki))
    broker.tls = broker.bootstrap_for("SSL")
    return broker


def ssl_conf(pki, who) -> dict:
    issued = getattr(pki, who)
    return {
        "security.protocol": "SSL",
        "ssl.ca.location": str(pki.ca),
        "ssl.certificate.location": str(issued.cert),
        "ssl.key.location": str(issued.key),
    }


def kafka_python_conf(pki, who) -> dict:
    # TLS 1.3 with a client certificate: this works only because the broker sends no session
    # tickets (kafka-python drops a connection that turns readable before its first request).
    issued = getattr(pki, who)
    return {
        "security_protocol": "SSL",
        "ssl_cafile": str(pki.ca),
        "ssl_certfile": str(issued.cert),
        "ssl_keyfile": str(issued.key),
    }


def admin(broker, pki, who="admin") -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.tls, **ssl_conf(pki, who)})


def create_topics(broker, pki, *names):
    client = admin(broker, pki)
    futures = client.create_topics([NewTopic(n, num_partitions=1, replication_factor=1) for n in names])
    for f in futures.values():
        f.result(timeout=30)


def acl(name, principal, operation, permission="ALLOW", restype="TOPIC", pattern="LITERAL"):
    return AclBinding(
        ResourceType[restype], name, ResourcePatternType[pattern], principal, "*",
        AclOperation[operation], AclPermissionType[permission],
    )


def create_acls(broker, pki, *bindings, who="admin"):
    client = admin(broker, pki, who)
    futures = client.create_acls(list(bindings), request_timeout=30)
    for f in futures.values():
        f.result(timeout=30)


def describe_acls(broker, pki, acl_filter, who="admin") -> list:
    client = admin(broker, pki, who)  # must outlive its futures (_DESTROY otherwise)
    return client.describe_acls(acl_filter, request_timeout=30).result(timeout=30)


def everything_for(principal=None) -> AclBindingFilter:
    return AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal, None,
                            AclOperation.ANY, AclPermissionType.ANY)


def produce_error(broker, pki, who, topic, **conf):
    """Produce one record as `who`; the delivery error code, or None when delivered."""
    reports = confluent_produce(broker.tls, topic, [dict(value=b"x")],
                                **{"message.timeout.ms": 15000, **ssl_conf(pki, who), **conf})
    err = reports[0][0]
    return None if err is None else err.code()


# librdkafka looks up the coordinator of its (unused) group.id even with assign(); the test
# principals may not DESCRIBE those groups, which it reports as an error event.
NO_GROUP = (KafkaError.GROUP_AUTHORIZATION_FAILED,)


def consume_error(broker, pki, who, topic, timeout_s=20):
    """Read `topic` from the beginning as `who` (assign, no group): the first error code
    (other than the unused group's), or None once a record arrived."""
    consumer = confluent_consumer(broker.tls, **ssl_conf(pki, who), **{"enable.partition.eof": False})
    deadline = time.monotonic() + timeout_s
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or (msg.error() and msg.error().code() in NO_GROUP):
                continue
            return msg.error().code() if msg.error() else None
    finally:
        consumer.close()
    raise AssertionError(f"{who} got neither a record nor an error from {topic}")


def audit_lines(broker) -> list:
    return [l for l in broker.log_text().splitlines() if "strata::audit" in l]


def test_alice_produces_bob_consumes(secure_broker, pki, topic):
    broker = secure_broker
    create_topics(broker, pki, topic)
    create_acls(broker, pki, acl(topic, "User:alice", "WRITE"), acl(topic, "User:bob", "READ"))

    assert produce_error(broker, pki, "alice", topic) is None
    assert produce_error(broker, pki, "bob", topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    got = confluent_consume(broker.tls, topic, [0], min_count=1, ignore_errors=NO_GROUP,
                            **ssl_conf(pki, "bob"))
    assert [r.value for r in got] == [b"x"]
    assert consume_error(broker, pki, "alice", topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # The ACLs as both clients list them.
    listed = describe_acls(broker, pki, everything_for())
    assert sorted((b.principal, b.operation.name) for b in listed) == [
        ("User:alice", "WRITE"), ("User:bob", "READ")]
    assert [b.name for b in describe_acls(broker, pki, everything_for("User:bob"))] == [topic]

    # One audit line for bob's refused produce: who, from where, what, on what, through what.
    line = wait_until(
        lambda: next((l for l in audit_lines(broker) if "principal=User:bob" in l
                      and "operation=WRITE" in l), None),
        10, lambda: f"an audit line for bob's write; audit lines: {audit_lines(broker)}")
    for part in ("host=127.0.0.1", "resource_type=TOPIC", f"resource_name={topic}", "api=Produce",
                 "denied"):
        assert part in line, line

    # Only super users (here) manage ACLs.
    with pytest.raises(KafkaException) as refused:
        create_acls(broker, pki, acl(topic, "User:alice", "READ"), who="alice")
    assert refused.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED

    # Deleting alice's ACL takes her access away at once.
    client = admin(broker, pki)
    deleted = client.delete_acls([everything_for("User:alice")], request_timeout=30)
    assert [b.principal for f in deleted.values() for b in f.result(timeout=30)] == ["User:alice"]
    assert produce_error(broker, pki, "alice", topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert [b.principal for b in describe_acls(broker, pki, everything_for())] == ["User:bob"]


def test_deny_overrides_allow(secure_broker, pki, topic):
    broker = secure_broker
    create_topics(broker, pki, topic)
    create_acls(broker, pki, acl(topic, "User:*", "WRITE"), acl(topic, "User:*", "READ"),
                acl(topic, "User:alice", "READ", permission="DENY"))
    assert produce_error(broker, pki, "alice", topic) is None
    assert consume_error(broker, pki, "bob", topic) is None
    assert consume_error(broker, pki, "alice", topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_group_read_refused(secure_broker, pki, topic):
    broker = secure_broker
    create_topics(broker, pki, topic)
    create_acls(broker, pki, acl(topic, "User:bob", "READ"), acl(topic, "User:alice", "WRITE"))
    assert produce_error(broker, pki, "alice", topic) is None

    def first_event(group):
        consumer = confluent_consumer(broker.tls, **ssl_conf(pki, "bob"), **{
            "group.id": group, "enable.partition.eof": False, "session.timeout.ms": 6000})
        deadline = time.monotonic() + 30
        try:
            consumer.subscribe([topic])
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None:
                    return msg.error().code() if msg.error() else msg.value()
        finally:
            consumer.close()
        raise AssertionError(f"no record and no error for group {group}")

    assert first_event(f"g-{uuid.uuid4().hex[:6]}") == KafkaError.GROUP_AUTHORIZATION_FAILED
    # READ on the groups starting "bob-" lets the same consumer in.
    create_acls(broker, pki, acl("bob-", "User:bob", "READ", restype="GROUP", pattern="PREFIXED"))
    assert first_event(f"bob-{uuid.uuid4().hex[:6]}") == b"x"


def test_topics_hidden_from_metadata(secure_broker, pki, topic):
    broker = secure_broker
    visible, hidden = f"{topic}-visible", f"{topic}-hidden"
    create_topics(broker, pki, visible, hidden)
    create_acls(broker, pki, acl(visible, "User:alice", "READ"))

    listed = admin(broker, pki, "alice").list_topics(timeout=10).topics
    assert visible in listed and hidden not in listed, sorted(listed)
    assert hidden in admin(broker, pki).list_topics(timeout=10).topics

    # Asked by name, a topic alice may not describe is refused whether it exists or not.
    for name in (hidden, f"{topic}-missing"):
        answer = admin(broker, pki, "alice").list_topics(topic=name, timeout=10).topics[name]
        assert answer.error is not None and answer.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, answer
    # ...and asking did not create the missing one (alice may not CREATE).
    assert f"{topic}-missing" not in admin(broker, pki).list_topics(timeout=10).topics

    # DescribeCluster is open to everyone (as Metadata); the cluster's operations are reported
    # only to a principal that may DESCRIBE it.
    for who, expected in (("alice", set()), ("admin", {AclOperation.ALTER, AclOperation.DESCRIBE})):
        client = admin(broker, pki, who)
        described = client.describe_cluster(include_authorized_operations=True,
                                            request_timeout=10).result(timeout=10)
        assert described.cluster_id and described.nodes, described
        assert expected <= set(described.authorized_operations or []), (who, described)
        if not expected:
            assert not described.authorized_operations, described

    from kafka.admin import KafkaAdminClient

    client = KafkaAdminClient(bootstrap_servers=broker.tls, **kafka_python_conf(pki, "alice"))
    try:
        names = client.list_topics()
    finally:
        client.close()
    assert visible in names and hidden not in names, names


def test_prefixed_acls(secure_broker, pki, topic):
    broker = secure_broker
    mine, other = f"{topic}-mine", f"{topic}x"
    create_topics(broker, pki, mine, other)
    create_acls(broker, pki, acl(f"{topic}-", "User:alice", "WRITE", pattern="PREFIXED"))
    assert produce_error(broker, pki, "alice", mine) is None
    assert produce_error(broker, pki, "alice", other) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # A MATCH filter finds the prefixed binding that applies to a name.
    match = AclBindingFilter(ResourceType.TOPIC, mine, ResourcePatternType.MATCH, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    found = describe_acls(broker, pki, match)
    assert [(b.name, b.resource_pattern_type) for b in found] == [
        (f"{topic}-", ResourcePatternType.PREFIXED)]


def test_transactional_producer_needs_its_transactional_id(secure_broker, pki, topic):
    broker = secure_broker
    create_topics(broker, pki, topic)
    create_acls(broker, pki, acl(topic, "User:alice", "WRITE"))
    txn_id = f"tx-{uuid.uuid4().hex[:6]}"

    producer = confluent_producer(broker.tls, **ssl_conf(pki, "alice"),
                                  **{"transactional.id": txn_id})
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(20)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    line = wait_until(
        lambda: next((l for l in audit_lines(broker) if "resource_type=TRANSACTIONAL_ID" in l), None),
        10, "an audit line for the transactional id")
    assert "principal=User:alice" in line and f"resource_name={txn_id}" in line, line

    create_acls(broker, pki, acl(txn_id, "User:alice", "WRITE", restype="TRANSACTIONAL_ID"))
    producer = confluent_producer(broker.tls, **ssl_conf(pki, "alice"),
                                  **{"transactional.id": txn_id})
    producer.init_transactions(20)
    producer.begin_transaction()
    producer.produce(topic, value=b"in a transaction")
    producer.commit_transaction(20)
    got = confluent_consume(broker.tls, topic, [0], min_count=1, **ssl_conf(pki, "admin"),
                            **{"isolation.level": "read_committed"})
    assert [r.value for r in got] == [b"in a transaction"]


def test_kafka_python_admin_manages_acls(secure_broker, pki, topic):
    from kafka.admin import (
        ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
        KafkaAdminClient, ResourcePattern, ResourcePatternFilter,
    )
    from kafka.admin import ResourceType as KpResourceType

    broker = secure_broker
    create_topics(broker, pki, topic)
    client = KafkaAdminClient(bootstrap_servers=broker.tls, **kafka_python_conf(pki, "admin"))
    try:
        binding = ACL(principal="User:alice", host="*", operation=ACLOperation.WRITE,
                      permission_type=ACLPermissionType.ALLOW,
                      resource_pattern=ResourcePattern(KpResourceType.TOPIC, topic))
        result = client.create_acls([binding])
        assert result["failed"] == [] and len(result["succeeded"]) == 1, result
        kafka_python_produce(broker.tls, topic, [dict(value=b"kp")], **kafka_python_conf(pki, "alice"))

        every = ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                          permission_type=ACLPermissionType.ANY,
                          resource_pattern=ResourcePatternFilter(
                              KpResourceType.TOPIC, topic, ACLResourcePatternType.LITERAL))
        acls, error = client.describe_acls(every)
        assert error.errno == 0 and [a.principal for a in acls] == ["User:alice"], (acls, error)
        deleted = client.delete_acls([every])
        assert [a.principal for _, matches, _ in deleted for a, _ in matches] == ["User:alice"], deleted
        acls, _ = client.describe_acls(every)
        assert acls == []
    finally:
        client.close()
    assert produce_error(broker, pki, "alice", topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_acls_survive_a_restart(secure_broker, pki, topic):
    broker = secure_broker
    create_topics(broker, pki, topic)
    create_acls(broker, pki, acl(topic, "User:alice", "WRITE"))
    broker.stop()
    broker.restart()
    assert produce_error(broker, pki, "alice", topic) is None
    assert produce_error(broker, pki, "bob", topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_acl_apis_without_an_authorizer(broker_factory, pki):
    from kafka.admin import (
        ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, KafkaAdminClient,
        ResourcePatternFilter,
    )
    from kafka.admin import ResourceType as KpResourceType
    from kafka.errors import SecurityDisabledError

    broker = broker_factory(listeners=LISTENERS, properties=properties(pki, authorizer=False))
    broker.tls = broker.bootstrap_for("SSL")
    # (confluent-kafka's describe_acls does not raise a top-level error: kafka-python's does.)
    client = KafkaAdminClient(bootstrap_servers=broker.tls, **kafka_python_conf(pki, "bob"))
    try:
        with pytest.raises(SecurityDisabledError):
            client.describe_acls(ACLFilter(
                principal=None, host="*", operation=ACLOperation.ANY,
                permission_type=ACLPermissionType.ANY,
                resource_pattern=ResourcePatternFilter(KpResourceType.ANY, None,
                                                       ACLResourcePatternType.ANY)))
    finally:
        client.close()
    with pytest.raises(KafkaException) as refused:
        create_acls(broker, pki, acl("t", "User:alice", "READ"), who="bob")
    assert refused.value.args[0].code() == KafkaError.SECURITY_DISABLED
    # Everything else is allowed, as before.
    assert produce_error(broker, pki, "bob", "anything") is None


def test_a_zookeeper_authorizer_is_refused(broker_factory, pki):
    broker = broker_factory(listeners=LISTENERS, wait=False, properties=properties(
        pki, **{"authorizer.class.name": "kafka.security.authorizer.AclAuthorizer"}))
    assert broker.wait_exit(20) != 0
    assert "ZooKeeper" in broker.log_text() and STANDARD_AUTHORIZER in broker.log_text()
