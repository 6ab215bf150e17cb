"""Every compression codec, produced by one client and read by another: kafka-python ->
confluent-kafka, confluent-kafka -> kafka-python, confluent-kafka -> kcat, kcat ->
confluent-kafka. The broker stores batches as received, so the segment files must hold
batches with the producer's codec (docs/on-disk-format.md) and the reader must see every
record unchanged.

One known client limit: Debian's kcat links librdkafka 2.0.x, which compresses with gzip,
snappy or lz4 only when the broker's ApiVersions covers Produce v2 and Fetch v2. Strata serves
the Kafka 4.0 protocol floor (Produce v3+, Fetch v4+), exactly like Apache Kafka 4.0, so that
kcat sends those codecs uncompressed (zstd still compresses). The kcat-producer cases check
that behaviour instead of the codec; kcat reading every codec is covered by confluent-to-kcat.
"""

import pytest

from strata_e2e import (
    CODEC_IDS,
    assert_delivered,
    compressible_value,
    confluent_consume,
    confluent_produce,
    create_topic,
    kafka_python_consume,
    kafka_python_produce,
    kcat,
    segment_batch_codecs,
)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
RECORDS = 300


def records():
    return [
        dict(key=f"key-{i}".encode(), value=compressible_value(i), headers=[("i", str(i).encode())])
        for i in range(RECORDS)
    ]


def produce_kafka_python(broker, topic, codec, sent):
    # kafka-python frames snappy the xerial way (as the Java client does).
    kafka_python_produce(
        broker.bootstrap, topic, sent,
        compression_type=None if codec == "none" else codec, linger_ms=20,
    )


def produce_confluent(broker, topic, codec, sent):
    # librdkafka sends raw (unframed) snappy.
    assert_delivered(confluent_produce(
        broker.bootstrap, topic, sent, **{"compression.type": codec, "linger.ms": 20}
    ))


def produce_kcat(broker, topic, codec, sent):
    lines = "".join(f"{r['key'].decode()}:{r['value'].decode()}\n" for r in sent)
    kcat("-b", broker.bootstrap, "-P", "-t", topic, "-K:", "-z", codec,
         "-X", "linger.ms=20", input=lines)


PATHS = {
    "kafka_python-to-confluent": (produce_kafka_python, "confluent", True),
    "confluent-to-kafka_python": (produce_confluent, "kafka_python", True),
    "confluent-to-kcat": (produce_confluent, "kcat", False),
    "kcat-to-confluent": (produce_kcat, "confluent", False),
}

# Codecs that librdkafka 2.0.x (Debian's kcat) leaves uncompressed against a Kafka 4.0-floor
# broker (see the module docstring).
KCAT_UNCOMPRESSED = {"gzip", "snappy", "lz4"}


class _KcatRec:
    def __init__(self, offset, key, value):
        self.offset, self.key, self.value, self.headers = offset, key, value, []


def kcat_consume(broker, topic, count):
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning",
               "-e", "-c", str(count), "-f", "%o %k:%s\\n").stdout
    recs = []
    for line in out.splitlines():
        offset, rest = line.split(" ", 1)
        key, value = rest.split(":", 1)
        recs.append(_KcatRec(int(offset), key.encode(), value.encode()))
    return recs


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("path", list(PATHS))
def test_codec_crosses_clients(broker, topic, codec, path):
    producer, reader, with_headers = PATHS[path]
    create_topic(broker.bootstrap, topic, partitions=1)
    sent = records()
    if not with_headers:
        sent = [dict(key=r["key"], value=r["value"]) for r in sent]

    producer(broker, topic, codec, sent)

    if reader == "confluent":
        received = confluent_consume(broker.bootstrap, topic, [0], min_count=len(sent))
    elif reader == "kcat":
        received = kcat_consume(broker, topic, len(sent))
    else:
        received = kafka_python_consume(broker.bootstrap, topic, [0])
    assert len(received) == len(sent), f"{path}/{codec}: read {len(received)} of {len(sent)} records"
    for i, (want, got) in enumerate(zip(sent, received)):
        assert got.offset == i, f"{path}/{codec}: record {i} at offset {got.offset}"
        assert (got.key, got.value) == (want["key"], want["value"]), (
            f"{path}/{codec}: record {i} is {got.key!r}={got.value!r:.60}, "
            f"expected {want['key']!r}={want['value']!r:.60}"
        )
        assert got.headers == list(want.get("headers") or []), (
            f"{path}/{codec}: record {i} headers {got.headers!r}"
        )

    codecs = segment_batch_codecs(broker.data_dir, topic, 0)
    assert codecs, f"{path}/{codec}: no batches found in the segment files"
    expected = CODEC_IDS[codec]
    if path.startswith("kcat") and codec in KCAT_UNCOMPRESSED:
        expected = CODEC_IDS["none"]
    assert set(codecs) == {expected}, (
        f"{path}/{codec}: stored batches have codecs {sorted(set(codecs))}, expected only "
        f"{expected}: batches must be stored as produced"
    )


@pytest.mark.parametrize("topic_codec,producer_codec", [("zstd", "none"), ("uncompressed", "gzip"), ("lz4", "snappy")])
def test_topic_compression_type_recompresses(broker, topic, topic_codec, producer_codec):
    """A topic's compression.type other than `producer` makes the broker store its own codec,
    whatever the producer sent; readers see the same records."""
    create_topic(broker.bootstrap, topic, partitions=1, config={"compression.type": topic_codec})
    sent = records()
    produce_confluent(broker, topic, producer_codec, sent)
    stored = "none" if topic_codec == "uncompressed" else topic_codec
    codecs = segment_batch_codecs(broker.data_dir, topic, 0)
    assert codecs and set(codecs) == {CODEC_IDS[stored]}, (
        f"compression.type={topic_codec}: stored codecs {sorted(set(codecs))}"
    )
    received = kafka_python_consume(broker.bootstrap, topic, [0])
    assert [(r.key, r.value) for r in received] == [(r["key"], r["value"]) for r in sent]
    assert [r.headers for r in received] == [list(r["headers"]) for r in sent]
