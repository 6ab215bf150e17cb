"""Idempotent producers whose responses are lost: a proxy on loopback forwards each produce
request to the broker and then drops the connection instead of relaying some responses. The
client retries the same batch on a new connection; the broker must store it once."""

from strata_e2e import (
    ResponseDroppingProxy,
    assert_delivered,
    confluent_consume,
    confluent_produce,
    create_topic,
    free_port,
)

N = 3000


def _run(broker_factory, new_topic, idempotent: bool):
    proxy_port = free_port()
    broker = broker_factory(f"advertised.listeners=PLAINTEXT://127.0.0.1:{proxy_port}")
    proxy = ResponseDroppingProxy(broker.port, port=proxy_port, drops=8, every=2)
    try:
        bootstrap = f"127.0.0.1:{proxy.port}"
        topic = new_topic()
        create_topic(bootstrap, topic, partitions=1)
        reports = confluent_produce(
            bootstrap,
            topic,
            [{"value": str(i).encode()} for i in range(N)],
            timeout_s=90,
            **{
                "enable.idempotence": idempotent,
                "acks": "all",
                "linger.ms": 2,
                "batch.num.messages": 50,
                "retries": 100,
                "retry.backoff.ms": 50,
                "socket.connection.setup.timeout.ms": 5000,
                "max.in.flight.requests.per.connection": 5,
            },
        )
        assert_delivered(reports)
        dropped = proxy.dropped
        records = confluent_consume(bootstrap, topic, min_count=N, timeout_s=60)
    finally:
        proxy.close()
    return dropped, [int(r.value) for r in records], [r.offset for r in records]


def test_lost_produce_responses_do_not_duplicate_with_idempotence(broker_factory, new_topic):
    dropped, values, offsets = _run(broker_factory, new_topic, idempotent=True)
    assert dropped >= 4, f"the proxy dropped only {dropped} produce responses"
    assert values == list(range(N)), (
        f"{len(values)} records read for {N} sent; duplicates: {len(values) - len(set(values))}"
    )
    assert offsets == list(range(N))


def test_the_proxy_really_causes_duplicates_without_idempotence(broker_factory, new_topic):
    # The same run without idempotence stores retried batches twice: proof that the proxy
    # loses responses after the broker appended, so the test above can fail.
    dropped, values, _ = _run(broker_factory, new_topic, idempotent=False)
    assert dropped >= 4
    assert set(values) == set(range(N)), "every record arrives at least once"
    assert len(values) > N, "expected duplicates from retried batches"
