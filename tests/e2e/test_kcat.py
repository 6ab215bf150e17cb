"""kcat (Debian's build, librdkafka 2.0.x: an older client than confluent-kafka's) against a
real broker: keyed produce from stdin, consume with a format string, headers, explicit
partitions, NULL values, and the metadata listing."""

import json

from strata_e2e import assert_delivered, confluent_consume, confluent_produce, create_topic, kcat


def test_produce_keys_and_consume_with_format(broker, topic):
    lines = ["alpha:first value", "beta:second value", "gamma:value:with:colons", "delta:"]
    kcat("-b", broker.bootstrap, "-P", "-t", topic, "-K:", input="\n".join(lines) + "\n")

    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-e", "-q", "-o", "beginning",
               "-f", "%k=%s\n").stdout
    # kcat splits each line at the first delimiter: the rest (colons included) is the value.
    assert out.splitlines() == [
        "alpha=first value", "beta=second value", "gamma=value:with:colons", "delta=",
    ], f"kcat read back:\n{out}"

    # The same records seen by librdkafka's Python binding, byte for byte.
    received = confluent_consume(broker.bootstrap, topic, [0], min_count=4)
    assert [(r.offset, r.key, r.value) for r in received] == [
        (0, b"alpha", b"first value"),
        (1, b"beta", b"second value"),
        (2, b"gamma", b"value:with:colons"),
        (3, b"delta", b""),
    ], f"confluent-kafka read {received}"


def test_headers_partitions_and_offsets(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=3)
    for partition in (0, 2):
        kcat("-b", broker.bootstrap, "-P", "-t", topic, "-p", str(partition), "-K:",
             "-H", "origin=kcat", "-H", f"part={partition}",
             input=f"k{partition}a:v{partition}a\nk{partition}b:v{partition}b\n")

    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-e", "-q", "-o", "beginning",
               "-f", "%p|%o|%k|%s|%h\n").stdout
    got = sorted(out.splitlines())
    assert got == [
        "0|0|k0a|v0a|origin=kcat,part=0",
        "0|1|k0b|v0b|origin=kcat,part=0",
        "2|0|k2a|v2a|origin=kcat,part=2",
        "2|1|k2b|v2b|origin=kcat,part=2",
    ], f"kcat read back:\n{out}"

    received = confluent_consume(broker.bootstrap, topic, [0, 1, 2], min_count=4)
    assert sorted((r.partition, r.offset, r.headers) for r in received) == [
        (0, 0, [("origin", b"kcat"), ("part", b"0")]),
        (0, 1, [("origin", b"kcat"), ("part", b"0")]),
        (2, 0, [("origin", b"kcat"), ("part", b"2")]),
        (2, 1, [("origin", b"kcat"), ("part", b"2")]),
    ], f"confluent-kafka read {received}"


def test_null_values_with_Z(broker, topic):
    # -Z: an empty value is sent as NULL (a tombstone), and printed back as NULL.
    kcat("-b", broker.bootstrap, "-P", "-t", topic, "-K:", "-Z", input="gone:\nkept:here\n")
    received = confluent_consume(broker.bootstrap, topic, [0], min_count=2)
    assert [(r.key, r.value) for r in received] == [(b"gone", None), (b"kept", b"here")], (
        f"confluent-kafka read {received}"
    )
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-e", "-q", "-Z", "-f", "%k=%s\n").stdout
    assert out.splitlines() == ["gone=NULL", "kept=here"], f"kcat -Z read back:\n{out}"


def test_metadata_listing(broker, topic):
    create_topic(broker.bootstrap, topic, partitions=4)
    assert_delivered(confluent_produce(broker.bootstrap, topic, [dict(value=b"x", partition=3)]))

    text = kcat("-b", broker.bootstrap, "-L").stdout
    assert " 1 brokers:" in text, f"kcat -L should list exactly one broker:\n{text}"
    assert f"at {broker.bootstrap}" in text, f"broker must be advertised as {broker.bootstrap}:\n{text}"
    assert f'topic "{topic}" with 4 partitions:' in text, f"topic missing from kcat -L:\n{text}"

    listing = json.loads(kcat("-b", broker.bootstrap, "-L", "-J").stdout)
    assert [b["name"] for b in listing["brokers"]] == [broker.bootstrap], listing["brokers"]
    broker_id = listing["brokers"][0]["id"]
    topics = {t["topic"]: t for t in listing["topics"]}
    assert topic in topics, f"{topic} not in {sorted(topics)}"
    partitions = sorted(topics[topic]["partitions"], key=lambda p: p["partition"])
    assert [p["partition"] for p in partitions] == [0, 1, 2, 3]
    for p in partitions:
        assert p["leader"] == broker_id, f"partition {p['partition']} leader {p['leader']}"
        assert [r["id"] for r in p["replicas"]] == [broker_id], f"replicas {p['replicas']}"
        assert [r["id"] for r in p["isrs"]] == [broker_id], f"isr {p['isrs']}"
