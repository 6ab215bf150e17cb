"""Order events fanned out to three services, each a consumer group of two instances.

The order service publishes two events per order ("created", then "confirmed") to the topic
`orders`, keyed by order id, so both events of an order land in the same partition and are
read in order by whichever instance owns that partition. The payment, analytics and logistics
services are consumer groups (group id = service name) of two instances each; the instances of
one service split the partitions between them, and each service reads the whole stream.

Every instance handles an event, then commits its offset synchronously, so an event is handled
once per service as long as no instance crashes (a crash would hand the instance's partitions to
its sibling from the last commit: at-least-once).

Run against a broker (Strata, or any Kafka-compatible one):

    python examples/microservices/scenario.py --bootstrap 127.0.0.1:9092 --orders 200

Needs confluent-kafka (`pip install confluent-kafka`). Exits 0 when every service handled every
order exactly once, split between its two instances; prints what went wrong otherwise.
"""

import argparse
import json
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

SERVICES = ("payment", "analytics", "logistics")
INSTANCES_PER_SERVICE = 2
EVENTS = ("created", "confirmed")


class ServiceInstance(threading.Thread):
    """One instance of a service: a member of the service's consumer group."""

    def __init__(self, service, index, bootstrap, topic, group_prefix=""):
        super().__init__(name=f"{service}-{index}", daemon=True)
        self.service = service
        self.instance = f"{service}-{index}"
        self.topic = topic
        self.conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group_prefix + service,
            "client.id": self.instance,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
        self.lock = threading.Lock()
        self.assignment = set()
        self.rebalances = 0
        self.handled = []  # (order_id, event, partition, offset) in handling order
        self.errors = []
        self.stopping = threading.Event()

    # The service's business logic would go here; this one just records what it saw.
    def handle(self, order, partition, offset):
        with self.lock:
            self.handled.append((order["order_id"], order["event"], partition, offset))

    def _assigned(self, consumer, partitions):
        with self.lock:
            self.assignment |= {p.partition for p in partitions}
            self.rebalances += 1

    def _revoked(self, consumer, partitions):
        with self.lock:
            self.assignment -= {p.partition for p in partitions}

    def owned(self):
        with self.lock:
            return set(self.assignment)

    def run(self):
        consumer = Consumer(self.conf)
        try:
            consumer.subscribe([self.topic], on_assign=self._assigned, on_revoke=self._revoked,
                               on_lost=self._revoked)
            while not self.stopping.is_set():
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        self.errors.append(str(msg.error()))
                    continue
                self.handle(json.loads(msg.value()), msg.partition(), msg.offset())
                consumer.commit(message=msg, asynchronous=False)
        except KafkaException as error:
            self.errors.append(str(error))
        finally:
            consumer.close()

    def stop(self):
        self.stopping.set()
        self.join(20)


def ensure_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    try:
        futures[topic].result(30)
    except KafkaException as error:
        if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        meta = admin.list_topics(topic, timeout=5).topics.get(topic)
        if meta is not None and meta.error is None and len(meta.partitions) == partitions:
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {topic} never became available")


def publish_orders(bootstrap, topic, orders):
    """The order service: two events per order, keyed by order id."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    failures = []

    def delivered(err, msg):
        if err is not None:
            failures.append(err)

    for n in range(orders):
        order_id = f"order-{n:05d}"
        for event in EVENTS:
            value = json.dumps({"order_id": order_id, "event": event, "amount_cents": 100 + n})
            producer.produce(topic, key=order_id, value=value, on_delivery=delivered)
            producer.poll(0)
    remaining = producer.flush(30)
    if remaining or failures:
        raise RuntimeError(f"{remaining} events undelivered, {len(failures)} failed: {failures[:3]}")


def run_scenario(bootstrap, orders=200, topic="orders", partitions=6, timeout_s=60, group_prefix=""):
    """Start every instance, wait until each service's group has split the partitions, publish
    the orders, and wait until every service handled every event. Returns
    {service: {instance: [(order_id, event, partition, offset), ...]}} and, per instance, the
    assignments it received after the orders started flowing and its errors, as
    {instance: (rebalances, errors)}."""
    ensure_topic(bootstrap, topic, partitions)
    instances = [
        ServiceInstance(service, i, bootstrap, topic, group_prefix)
        for service in SERVICES
        for i in range(INSTANCES_PER_SERVICE)
    ]
    for instance in instances:
        instance.start()
    before = {}
    try:
        deadline = time.monotonic() + timeout_s
        # Produce only once every group is stable, so no rebalance happens mid-run.
        while True:
            ready = True
            for service in SERVICES:
                owned = [i.owned() for i in instances if i.service == service]
                flat = [p for parts in owned for p in parts]
                if not all(owned) or sorted(flat) != list(range(partitions)):
                    ready = False
            if ready:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "groups not ready: " + str({i.instance: sorted(i.owned()) for i in instances})
                )
            time.sleep(0.05)

        before = {i.instance: i.rebalances for i in instances}
        publish_orders(bootstrap, topic, orders)

        wanted = orders * len(EVENTS)
        while True:
            counts = {s: sum(len(i.handled) for i in instances if i.service == s) for s in SERVICES}
            if all(c >= wanted for c in counts.values()):
                break
            if time.monotonic() > deadline:
                break  # report what arrived; check() says what is missing
            time.sleep(0.05)
        time.sleep(0.3)  # let any duplicate show up before stopping
        # The run ends here: take the results before stopping anything. Stopping instances one
        # by one rebalances their groups (the last instance of a service running is given the
        # partitions of the ones that left), which is shutdown, not a rebalance mid-run.
        snapshot = take_snapshot(instances, before)
    finally:
        for instance in instances:
            instance.stop()
    return snapshot


def take_snapshot(instances, before):
    """({service: {instance: handled}}, {instance: (assignments since `before`, errors)})."""
    results = {s: {} for s in SERVICES}
    health = {}
    for i in instances:
        with i.lock:
            results[i.service][i.instance] = list(i.handled)
            health[i.instance] = (i.rebalances - before.get(i.instance, 0), list(i.errors))
    return results, health


def check(results, orders):
    """What went wrong (an empty list when every service handled every event of every order
    exactly once, each order by one instance, its events in order)."""
    problems = []
    expected = {f"order-{n:05d}" for n in range(orders)}
    for service, by_instance in results.items():
        owner = {}
        events = {}
        for instance, handled in by_instance.items():
            for order_id, event, _, _ in handled:
                events.setdefault(order_id, []).append(event)
                if owner.setdefault(order_id, instance) != instance:
                    problems.append(f"{service}: {order_id} handled by {owner[order_id]} and {instance}")
        missing = expected - set(events)
        if missing:
            problems.append(f"{service}: {len(missing)} orders never arrived, e.g. {sorted(missing)[:3]}")
        for order_id, seen in sorted(events.items()):
            if seen != list(EVENTS):
                problems.append(f"{service}: {order_id} events were {seen}, expected {list(EVENTS)}")
        for instance, handled in by_instance.items():
            if not handled:
                problems.append(f"{service}: instance {instance} handled nothing")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--topic", default="orders")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--group-prefix", default="", help="prefix for the service group ids")
    args = parser.parse_args(argv)

    started = time.monotonic()
    results, health = run_scenario(args.bootstrap, args.orders, args.topic, args.partitions,
                                   group_prefix=args.group_prefix)
    for service, by_instance in results.items():
        split = ", ".join(f"{name}: {len({h[0] for h in handled})} orders"
                          for name, handled in sorted(by_instance.items()))
        print(f"{service:10} {split}")
    problems = check(results, args.orders)
    for instance, (_, errors) in sorted(health.items()):
        problems += [f"{instance}: {e}" for e in errors]
    print(f"{args.orders} orders in {time.monotonic() - started:.1f} s: "
          + ("every service handled every order once" if not problems else f"{len(problems)} problems"))
    for problem in problems[:20]:
        print("  " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
