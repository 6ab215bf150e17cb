"""A checker in the spirit of Jepsen's Kafka workload: transactional producers write unique
values to several partitions while a proxy loses produce responses (so batches are retried)
and the broker is killed with -9 and restarted twice, in the middle of transactions. Each transaction commits or aborts at
random; one whose outcome the client could not learn (the broker died under it) is
"indeterminate". A read_committed consumer then reads every partition and the checker
reports:

- lost writes: a value of a committed transaction that is not there;
- duplicates: a value read twice;
- aborted reads: a value of an aborted transaction;
- torn transactions: an indeterminate transaction partly visible;
- non-monotonic offsets: offsets not increasing within a partition, or a transaction's
  values out of their send order within a partition.

It must find none. The seed is printed on failure."""

import os
import random
import time
import uuid

from confluent_kafka import KafkaException, Producer

from strata_e2e import ResponseDroppingProxy, confluent_consume, create_topic, free_port

PARTITIONS = 3
TRANSACTIONS = 45
KILL_AT = (15, 30)


def new_producer(bootstrap, tid):
    p = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": tid,
        "linger.ms": 2,
        "transaction.timeout.ms": 10000,
        "message.timeout.ms": 10000,
        "retry.backoff.ms": 50,
        "socket.connection.setup.timeout.ms": 3000,
    })
    deadline = time.monotonic() + 60
    while True:
        try:
            p.init_transactions(10)
            return p
        except KafkaException as e:
            if time.monotonic() > deadline or e.args[0].fatal():
                raise
            time.sleep(0.2)


def run_transaction(p, topic, values, commit, crash=None):
    """'committed', 'aborted' or 'indeterminate'. `crash` (if given) runs after the records
    were sent and before the transaction ends."""
    try:
        p.begin_transaction()
        for partition, v in values:
            p.produce(topic, value=v.encode(), partition=partition)
        if crash is not None:
            p.flush(20)
            crash()
        if commit:
            p.commit_transaction(20)
            return "committed"
        p.abort_transaction(20)
        return "aborted"
    except KafkaException:
        return "indeterminate"


def test_jepsen_style_checker_finds_no_anomalies(broker_factory, new_topic):
    seed = int(os.environ.get("STRATA_CHECKER_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    proxy_port = free_port()
    broker = broker_factory(
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{proxy_port}",
        "transaction.state.log.num.partitions=3",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=200",
    )
    proxy = ResponseDroppingProxy(broker.port, port=proxy_port, drops=12, every=3)
    bootstrap = f"127.0.0.1:{proxy.port}"
    topic = new_topic()
    create_topic(bootstrap, topic, partitions=PARTITIONS)
    tids = [f"chk-{uuid.uuid4().hex[:6]}-{i}" for i in range(2)]
    producers = [new_producer(bootstrap, t) for t in tids]
    outcomes = {}  # txn number -> (outcome, [(partition, value)])
    try:
        for n in range(TRANSACTIONS):
            def crash():
                broker.kill9()
                broker.restart()

            who = n % len(producers)
            values = [(rng.randrange(PARTITIONS), f"t{n}-{i}") for i in range(rng.randint(1, 12))]
            outcome = run_transaction(producers[who], topic, values, commit=rng.random() < 0.7,
                                      crash=crash if n in KILL_AT else None)
            if outcome == "indeterminate":
                # Abort if the client still can, else replace it (fencing the old one).
                try:
                    producers[who].abort_transaction(10)
                except KafkaException:
                    producers[who] = new_producer(bootstrap, tids[who])
            outcomes[n] = (outcome, values)
        records = confluent_consume(bootstrap, topic, partitions=range(PARTITIONS), timeout_s=60,
                                    **{"isolation.level": "read_committed"})
    finally:
        del producers
        proxy.close()

    seen = {}
    anomalies = []
    last_offset = {}
    for r in records:
        v = r.value.decode()
        if r.offset <= last_offset.get(r.partition, -1):
            anomalies.append(f"non-monotonic offset {r.offset} in partition {r.partition}")
        last_offset[r.partition] = r.offset
        if v in seen:
            anomalies.append(f"duplicate {v}")
        seen[v] = (r.partition, r.offset)
    for n, (outcome, values) in outcomes.items():
        present = [v for _, v in values if v in seen]
        if outcome == "committed" and len(present) != len(values):
            anomalies.append(f"lost writes of committed txn {n}: {sorted(set(v for _, v in values) - set(present))}")
        if outcome == "aborted" and present:
            anomalies.append(f"aborted reads of txn {n}: {present}")
        if outcome == "indeterminate" and present and len(present) != len(values):
            anomalies.append(f"torn txn {n}: {len(present)} of {len(values)} visible")
        for p in range(PARTITIONS):
            offs = [seen[v][1] for q, v in values if q == p and v in seen]
            if offs != sorted(offs):
                anomalies.append(f"txn {n} out of order in partition {p}")
    kinds = {k: sum(1 for o, _ in outcomes.values() if o == k) for k in ("committed", "aborted", "indeterminate")}
    assert kinds["committed"] >= 10, f"too few committed transactions to judge: {kinds} (seed {seed})"
    assert proxy.dropped >= 1, f"the proxy lost no responses (seed {seed})"
    assert not anomalies, f"seed {seed}, outcomes {kinds}: " + "; ".join(anomalies[:20])
    print(f"checker: seed {seed}, {kinds}, {len(records)} records read, {proxy.dropped} responses lost, no anomalies")
