//! The coordinators never hold one operation behind another's durable write, against a real
//! broker: a transaction whose markers cannot become durable (their partition's fsync is
//! held back by the hidden test knob `strata.test.fsync.gate.*`) does not stall other
//! transactions, in its own `__transaction_state` shard or another; and a committed offset
//! is not visible to OffsetFetch until its record is durable.
//!
//! The gate makes these deterministic: while its file exists, the gated topic's fsyncs do
//! not complete (with `strata.fsync.before.ack`, its high watermark stays put), so the held
//! operation cannot finish before the test opens the gate.

mod support;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use support::txn::{self, s, topic};
use support::{Client, TestBroker};

const CONCURRENT_TRANSACTIONS: i16 = 51;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const DEADLINE: Duration = Duration::from_secs(20);

/// Kafka's partition of an internal topic for a key (Java String.hashCode, Utils.abs).
fn java_partition(key: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in key.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions
}

/// Serializes broker start-ups of this file's tests: a port is chosen free and then bound
/// by the broker, so two tests starting at once could pick the same port and one would
/// talk to the other's broker.
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A broker whose fsyncs of `gated_topic` wait while the returned file exists.
fn start(gated_topic: &str) -> (TestBroker, tempfile::TempDir, PathBuf) {
    let gate_dir = tempfile::tempdir().expect("tempdir");
    let gate = gate_dir.path().join("gate");
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    let broker = TestBroker::start(&[
        "strata.fsync.before.ack=true",
        &format!("strata.test.fsync.gate.topic={gated_topic}"),
        &format!("strata.test.fsync.gate.file={}", gate.display()),
    ]);
    (broker, gate_dir, gate)
}

fn close(gate: &Path) {
    std::fs::write(gate, b"").expect("create the gate file");
}

fn open(gate: &Path) {
    std::fs::remove_file(gate).expect("remove the gate file");
}

/// Waits until `f` holds, or panics at the deadline.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn init(c: &mut Client, tid: &str) -> (i64, i16) {
    txn::init(c, tid, 60_000).unwrap_or_else(|code| panic!("InitProducerId of {tid}: {code}"))
}

fn add(c: &mut Client, tid: &str, pid: i64, epoch: i16, name: &str) -> i16 {
    txn::add(c, tid, pid, epoch, &[(name, 0)])[0]
}

fn produce(c: &mut Client, tid: &str, name: &str, pid: i64, epoch: i16) -> i16 {
    txn::produce(c, tid, name, pid, epoch, 0).0
}

fn end(c: &mut Client, tid: &str, pid: i64, epoch: i16) -> i16 {
    txn::end(c, tid, pid, epoch, true)
}

fn state(c: &mut Client, tid: &str) -> String {
    let req = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(s(tid))]);
    let r: DescribeTransactionsResponse = c
        .call(ApiKey::DescribeTransactions, 0, &req)
        .expect("answer");
    r.transaction_states[0].transaction_state.to_string()
}

/// A whole transaction of `tid` on `name`: init, add, produce, commit.
fn transaction(c: &mut Client, tid: &str, name: &str) {
    let (pid, epoch) = init(c, tid);
    assert_eq!(add(c, tid, pid, epoch, name), 0, "{tid}");
    assert_eq!(produce(c, tid, name, pid, epoch), 0, "{tid}");
    assert_eq!(end(c, tid, pid, epoch), 0, "{tid}");
    assert_eq!(state(c, tid), "CompleteCommit", "{tid}");
}

#[test]
fn a_transaction_held_on_its_markers_does_not_stall_the_others() {
    let (broker, _gate_dir, gate) = start("slow");
    let mut c = broker.client();
    topic(&mut c, "slow");
    topic(&mut c, "fast");
    // Transaction A writes to the gated topic (before the gate closes, so its data is
    // acknowledged); B1 shares A's __transaction_state shard, B2 is in another one.
    let a = "txn-a";
    let home = java_partition(a, 50);
    let b1 = (0..10_000)
        .map(|i| format!("txn-b1-{i}"))
        .find(|id| java_partition(id, 50) == home)
        .expect("an id in A's shard");
    let b2 = (0..10_000)
        .map(|i| format!("txn-b2-{i}"))
        .find(|id| java_partition(id, 50) != home)
        .expect("an id in another shard");
    let (pid, epoch) = init(&mut c, a);
    assert_eq!(add(&mut c, a, pid, epoch, "slow"), 0);
    assert_eq!(produce(&mut c, a, "slow", pid, epoch), 0);

    close(&gate);
    let (tx, ended) = mpsc::channel();
    let port = broker.port;
    let a_owned = a.to_string();
    let holder = std::thread::spawn(move || {
        let mut c = Client::connect(port);
        let _ = tx.send(end(&mut c, &a_owned, pid, epoch));
    });
    // A is ending: its commit marker is written to "slow" and cannot become durable.
    wait_until("A is PrepareCommit", || state(&mut c, a) == "PrepareCommit");
    // Meanwhile whole transactions of other ids go through, in A's shard and in another.
    transaction(&mut c, &b1, "fast");
    transaction(&mut c, &b2, "fast");
    // A itself is still held (the gate is closed, so this is not a race), and its own
    // operations are refused as concurrent rather than queued behind it.
    assert!(
        ended.try_recv().is_err(),
        "A ended while its markers were not durable"
    );
    assert_eq!(state(&mut c, a), "PrepareCommit");
    assert_eq!(add(&mut c, a, pid, epoch, "fast"), CONCURRENT_TRANSACTIONS);

    open(&gate);
    let code = ended.recv_timeout(DEADLINE).expect("A's EndTxn answers");
    assert_eq!(code, 0);
    holder.join().expect("holder thread");
    assert_eq!(state(&mut c, a), "CompleteCommit");
    // And the next transaction of A proceeds as usual.
    assert_eq!(add(&mut c, a, pid, epoch, "fast"), 0);
}

fn commit(c: &mut Client, group: &str, offset: i64) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1)])]);
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &req).expect("answer");
    r.topics[0].partitions[0].error_code
}

/// OffsetFetch v7 of partition t-0: (offset, error).
fn fetch(c: &mut Client, group: &str, require_stable: bool) -> (i64, i16) {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_require_stable(require_stable)
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partition_indexes(vec![0])]));
    let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 7, &req).expect("answer");
    let p = &r.topics[0].partitions[0];
    (p.committed_offset, p.error_code)
}

/// Bytes in the log segments of the group's `__consumer_offsets` partition.
fn offsets_log_bytes(broker: &TestBroker, group: &str) -> u64 {
    let dir = broker
        .data_dir()
        .join(format!("__consumer_offsets-{}", java_partition(group, 50)));
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_committed_offset_is_invisible_until_durable() {
    let (broker, _gate_dir, gate) = start("__consumer_offsets");
    let mut c = broker.client();
    topic(&mut c, "t");
    let group = "g";
    assert_eq!(commit(&mut c, group, 1), 0);
    assert_eq!(fetch(&mut c, group, false), (1, 0));

    close(&gate);
    let before = offsets_log_bytes(&broker, group);
    let (tx, committed) = mpsc::channel();
    let port = broker.port;
    let holder = std::thread::spawn(move || {
        let mut c = Client::connect(port);
        let _ = tx.send(commit(&mut c, group, 5));
    });
    // The commit's record is in the log (the segment grew) but not durable: OffsetFetch
    // still answers the previous offset, and with require_stable refuses to answer.
    let deadline = Instant::now() + DEADLINE;
    while offsets_log_bytes(&broker, group) <= before {
        if let Ok(code) = committed.try_recv() {
            panic!("the commit answered {code} before it was durable");
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until the commit is appended ({} bytes); broker log:\n{}",
            offsets_log_bytes(&broker, group),
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..5 {
        assert_eq!(fetch(&mut c, group, false), (1, 0));
        assert_eq!(fetch(&mut c, group, true).1, UNSTABLE_OFFSET_COMMIT);
    }
    assert!(committed.try_recv().is_err(), "acknowledged before durable");

    open(&gate);
    let code = committed
        .recv_timeout(DEADLINE)
        .expect("the commit answers");
    assert_eq!(code, 0);
    holder.join().expect("holder thread");
    // Acknowledged means visible.
    assert_eq!(fetch(&mut c, group, false), (5, 0));
    assert_eq!(fetch(&mut c, group, true), (5, 0));
}
