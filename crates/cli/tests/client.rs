//! The strata-client library against a real broker: producer acknowledgements and
//! partitioning, consumer seeks, and two group members sharing and handing over partitions.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use strata_client::{
    Client, ClientConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, OffsetSpec, Producer,
    ProducerConfig, ProducerRecord, Seek,
};
use support::TestBroker;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn connect(b: &TestBroker) -> Client {
    let mut config = ClientConfig::new(&format!("127.0.0.1:{}", b.port));
    config.request_timeout = Duration::from_secs(10);
    Client::connect(config).await.expect("connect")
}

async fn create(client: &Client, topic: &str, partitions: i32) {
    let results = client
        .create_topics(
            &[NewTopic {
                name: topic.into(),
                partitions,
                replication_factor: -1,
                configs: vec![],
            }],
            false,
        )
        .await
        .expect("create");
    results[0].1.as_ref().expect("created");
}

/// A client of `b`, with `topic` created.
async fn connect_with_topic(b: &TestBroker, topic: &str, partitions: i32) -> Client {
    let client = connect(b).await;
    create(&client, topic, partitions).await;
    client
}

/// Polls until `n` records arrived (or 20 s pass).
async fn read(consumer: &mut Consumer, n: usize) -> Vec<strata_client::ConsumerRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(
            consumer
                .poll(Duration::from_millis(200))
                .await
                .expect("poll"),
        );
    }
    out
}

#[test]
fn producer_acknowledges_in_order_and_consumer_seeks() {
    let b = TestBroker::start(&[]);
    runtime().block_on(async {
        let client = connect_with_topic(&b, "orders", 3).await;
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                linger: Duration::from_millis(20),
                compression: strata_client::Compression::Gzip,
                ..Default::default()
            },
        );
        let mut deliveries = Vec::new();
        for i in 0..30i64 {
            let mut r = ProducerRecord::new(
                "orders",
                Some(b"same-key"),
                Some(format!("v{i}").as_bytes()),
            );
            r.timestamp = Some(1_700_000_000_000 + i * 1000);
            r.headers = vec![("n".into(), Some(i.to_string().into()))];
            deliveries.push(producer.send(r).await.expect("queued"));
        }
        producer.flush().await;
        let mut offsets = Vec::new();
        let mut partitions = BTreeSet::new();
        for d in deliveries {
            let m = d.await.expect("acknowledged");
            partitions.insert(m.partition);
            offsets.push(m.offset);
        }
        assert_eq!(partitions.len(), 1, "one key, one partition");
        let partition = *partitions.first().expect("partition");
        assert_eq!(
            partition,
            strata_client::partitioner::partition_for_key(b"same-key", 3)
        );
        assert_eq!(offsets, (0..30).collect::<Vec<i64>>());

        let tp = ("orders".to_string(), partition);
        let ends = client
            .list_offsets(std::slice::from_ref(&tp), OffsetSpec::Latest)
            .await
            .expect("ends");
        assert_eq!(ends[&tp], 30);
        let by_time = client
            .list_offsets(
                std::slice::from_ref(&tp),
                OffsetSpec::Timestamp(1_700_000_010_000),
            )
            .await
            .expect("by time");
        assert_eq!(by_time[&tp], 10);

        let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
        consumer.assign(std::slice::from_ref(&tp));
        consumer.seek(tp.clone(), Seek::Timestamp(1_700_000_025_000));
        let records = read(&mut consumer, 5).await;
        let values: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
            .collect();
        assert_eq!(values, ["v25", "v26", "v27", "v28", "v29"]);
        assert_eq!(
            records[0].headers,
            vec![("n".to_string(), Some("25".into()))]
        );
        assert_eq!(records[0].timestamp, 1_700_000_025_000);
        consumer.seek(tp.clone(), Seek::Offset(3));
        let again = read(&mut consumer, 27).await;
        assert_eq!(again.first().map(|r| r.offset), Some(3));
        assert_eq!(again.len(), 27);
        // Nothing more: a poll waits and returns empty.
        assert!(consumer
            .poll(Duration::from_millis(300))
            .await
            .expect("poll")
            .is_empty());

        let unknown = producer
            .send(ProducerRecord::new("nope", None, Some(b"x")))
            .await;
        assert!(unknown.is_err());
    });
}

#[test]
fn two_members_share_a_group_and_hand_over_on_leave() {
    let b = TestBroker::start(&["group.initial.rebalance.delay.ms=0"]);
    runtime().block_on(async {
        let client = connect(&b).await;
        create(&client, "jobs", 4).await;
        let config = ConsumerConfig {
            group_id: Some("workers".into()),
            auto_offset_reset: OffsetReset::Earliest,
            heartbeat_interval: Duration::from_millis(300),
            auto_commit_interval: Duration::from_millis(200),
            ..Default::default()
        };
        let mut first = Consumer::new(client.clone(), config.clone());
        first.subscribe(&["jobs".into()]).expect("subscribe");
        first.poll(Duration::from_millis(100)).await.expect("join");
        assert_eq!(first.assignment().len(), 4);
        let second_client = connect(&b).await;
        let mut second = Consumer::new(second_client, config);
        second.subscribe(&["jobs".into()]).expect("subscribe");
        // The second join waits for the first member to rejoin (its next poll).
        let joining = tokio::spawn(async move {
            second.poll(Duration::from_millis(100)).await.expect("join");
            second
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while first.assignment().len() != 2 && Instant::now() < deadline {
            first.poll(Duration::from_millis(100)).await.expect("poll");
        }
        let mut second = joining.await.expect("joined");
        let mut all: Vec<(String, i32)> = first.assignment();
        all.extend(second.assignment());
        all.sort();
        assert_eq!(
            all,
            (0..4).map(|p| ("jobs".to_string(), p)).collect::<Vec<_>>()
        );

        let producer = Producer::new(client.clone(), ProducerConfig::default());
        for i in 0..40 {
            let key = format!("k{i}");
            producer
                .send(ProducerRecord::new(
                    "jobs",
                    Some(key.as_bytes()),
                    Some(b"x"),
                ))
                .await
                .expect("queued");
        }
        producer.flush().await;
        let a = read(&mut first, 1).await.len();
        let b2 = read(&mut second, 1).await.len();
        let (mut got_a, mut got_b) = (a, b2);
        let deadline = Instant::now() + Duration::from_secs(20);
        while got_a + got_b < 40 && Instant::now() < deadline {
            got_a += first
                .poll(Duration::from_millis(100))
                .await
                .expect("poll")
                .len();
            got_b += second
                .poll(Duration::from_millis(100))
                .await
                .expect("poll")
                .len();
        }
        assert_eq!(got_a + got_b, 40);
        assert!(
            got_a > 0 && got_b > 0,
            "both members read ({got_a}, {got_b})"
        );

        // The second member leaves (committing); the first takes over every partition.
        second.close().await.expect("close");
        let deadline = Instant::now() + Duration::from_secs(20);
        while first.assignment().len() != 4 && Instant::now() < deadline {
            first.poll(Duration::from_millis(100)).await.expect("poll");
        }
        assert_eq!(first.assignment().len(), 4);
        first.commit().await.expect("commit");
        let committed = client
            .committed_offsets("workers", None)
            .await
            .expect("offsets");
        assert_eq!(committed.values().sum::<i64>(), 40, "{committed:?}");
        first.close().await.expect("close");
        let group = client.describe_group("workers").await.expect("describe");
        assert_eq!(group.state, "Empty");
    });
}

/// Many small batches with several requests in flight at once: every record is acknowledged
/// exactly once, at consecutive offsets in send order within its partition, and the consumer
/// reads them back in that order.
#[test]
fn pipelined_requests_keep_every_partition_in_order() {
    // Tiny batches and requests: hundreds of requests, five at a time.
    let config = ProducerConfig {
        batch_size: 512,
        max_request_size: 1024,
        linger: Duration::ZERO,
        max_in_flight: 5,
        ..Default::default()
    };
    let b = TestBroker::start(&[]);
    runtime().block_on(async {
        let client = connect_with_topic(&b, "pipelined", 3).await;
        let producer = Producer::new(client.clone(), config);
        const N: usize = 6_000;
        let mut deliveries = Vec::with_capacity(N);
        for i in 0..N {
            let mut r = ProducerRecord::new("pipelined", None, Some(format!("{i:08}").as_bytes()));
            r.partition = Some((i % 3) as i32);
            deliveries.push((i, producer.send(r).await.expect("queued")));
        }
        producer.flush().await;
        let mut next = [0i64; 3];
        for (i, d) in deliveries {
            let m = d.await.expect("acknowledged");
            assert_eq!(m.partition, (i % 3) as i32);
            assert_eq!(m.offset, next[i % 3], "record {i}");
            next[i % 3] += 1;
        }
        let tps: Vec<(String, i32)> = (0..3).map(|p| ("pipelined".to_string(), p)).collect();
        let ends = client
            .list_offsets(&tps, OffsetSpec::Latest)
            .await
            .expect("ends");
        for tp in &tps {
            assert_eq!(ends[tp], (N / 3) as i64, "nothing written twice to {tp:?}");
        }
        let mut consumer = Consumer::new(
            client.clone(),
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                ..Default::default()
            },
        );
        consumer.assign(&tps);
        let got = read(&mut consumer, N).await;
        assert_eq!(got.len(), N);
        let mut seen = [0usize; 3];
        for r in got {
            let p = r.partition as usize;
            let want = format!("{:08}", seen[p] * 3 + p);
            assert_eq!(r.value.as_deref(), Some(want.as_bytes()), "partition {p}");
            assert_eq!(r.offset, seen[p] as i64);
            seen[p] += 1;
        }
    });
}

/// A producer held to a low rate sends linger-sized batches that never fill; its keyless
/// records must still spread over every partition (KIP-794: the sticky partition changes
/// after `batch_size` bytes, whether or not a batch filled).
#[test]
fn keyless_records_at_a_low_rate_spread_over_every_partition() {
    let b = TestBroker::start(&[]);
    runtime().block_on(async {
        let client = connect_with_topic(&b, "spread", 8).await;
        let batch_size = 1024;
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                linger: Duration::from_millis(5),
                batch_size,
                ..Default::default()
            },
        );
        // About 1000 records/s of 100 bytes: some 5 records (~600 bytes) per linger, so no
        // batch fills; the partition moves on every 2 * batch_size bytes, ~100 times in all.
        let value = [b'x'; 100];
        let mut pace = tokio::time::interval(Duration::from_millis(1));
        let mut deliveries = Vec::new();
        for _ in 0..2000 {
            pace.tick().await;
            let r = ProducerRecord::new("spread", None, Some(&value));
            deliveries.push(producer.send(r).await.expect("queued"));
        }
        producer.flush().await;
        let mut per_partition = [0u32; 8];
        for d in deliveries {
            let m = d.await.expect("acknowledged");
            per_partition[m.partition as usize] += 1;
        }
        assert!(
            per_partition.iter().all(|n| *n > 0),
            "every partition gets keyless records: {per_partition:?}"
        );
        // The switch is by bytes, not by a full batch: no partition takes the bulk.
        assert!(
            per_partition.iter().all(|n| *n < 1000),
            "no partition takes half: {per_partition:?}"
        );
    });
}
