//! The "consumer" group protocol's embedded encodings and the range assignor.
//!
//! Subscription and assignment bytes are an i16 version followed by the
//! ConsumerProtocolSubscription / ConsumerProtocolAssignment struct at that version. This
//! client writes version 0 (understood by every client) and reads any version, decoding newer
//! ones at the newest layout it knows (later versions only append fields).

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTp;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::{Decodable, Encodable, Message};

use crate::admin::Tp;
use crate::client::{name, sb};
use crate::error::{Error, Result};

/// The assignor this client offers.
pub const RANGE: &str = "range";

fn versioned<T: Encodable>(value: &T) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    value.encode(&mut buf, 0).expect("v0 encodes");
    buf.freeze()
}

fn read_versioned<T: Decodable + Message>(bytes: &[u8]) -> Result<T> {
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.remaining() < 2 {
        return Err(Error::Protocol("group protocol data too short".into()));
    }
    let version = buf.get_i16().clamp(T::VERSIONS.min, T::VERSIONS.max);
    T::decode(&mut buf, version).map_err(|e| Error::Protocol(format!("group protocol data: {e}")))
}

/// A member's subscription bytes.
pub fn encode_subscription(topics: &[String]) -> Bytes {
    versioned(
        &ConsumerProtocolSubscription::default()
            .with_topics(topics.iter().map(|t| sb(t)).collect()),
    )
}

/// The topics of a subscription.
pub fn decode_subscription(bytes: &[u8]) -> Result<Vec<String>> {
    let s: ConsumerProtocolSubscription = read_versioned(bytes)?;
    Ok(s.topics.iter().map(|t| t.to_string()).collect())
}

/// Assignment bytes for a list of partitions.
pub fn encode_assignment(partitions: &[Tp]) -> Bytes {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    versioned(
        &ConsumerProtocolAssignment::default().with_assigned_partitions(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    AssignedTp::default()
                        .with_topic(name(t))
                        .with_partitions(ps)
                })
                .collect(),
        ),
    )
}

/// The partitions of an assignment (an empty byte string is no partitions).
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<Tp>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let a: ConsumerProtocolAssignment = read_versioned(bytes)?;
    Ok(a.assigned_partitions
        .iter()
        .flat_map(|tp| tp.partitions.iter().map(|p| (tp.topic.0.to_string(), *p)))
        .collect())
}

/// The range assignor: for each topic, its partitions are split into contiguous ranges over
/// the members subscribed to it, sorted by member id; the first members get one extra
/// partition when the count does not divide evenly.
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<Tp>> {
    let mut out: BTreeMap<String, Vec<Tp>> = subscriptions
        .keys()
        .map(|m| (m.clone(), Vec::new()))
        .collect();
    let topics: BTreeSet<&String> = subscriptions.values().flatten().collect();
    for topic in topics {
        let Some(&count) = partition_counts.get(topic) else {
            continue;
        };
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        let n = members.len() as i32;
        let (per, extra) = (count / n, count % n);
        for (i, member) in members.iter().enumerate() {
            let i = i as i32;
            let start = per * i + i.min(extra);
            let len = per + i32::from(i < extra);
            let list = out.get_mut(*member).expect("member listed");
            list.extend((start..start + len).map(|p| (topic.clone(), p)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_splits_like_the_java_assignor() {
        let subs: BTreeMap<String, Vec<String>> = [
            ("a".to_string(), vec!["t".to_string(), "u".to_string()]),
            ("b".to_string(), vec!["t".to_string()]),
        ]
        .into_iter()
        .collect();
        let counts: BTreeMap<String, i32> = [("t".to_string(), 5), ("u".to_string(), 2)]
            .into_iter()
            .collect();
        let a = range_assign(&subs, &counts);
        let tp = |t: &str, p| (t.to_string(), p);
        assert_eq!(
            a["a"],
            vec![tp("t", 0), tp("t", 1), tp("t", 2), tp("u", 0), tp("u", 1)]
        );
        assert_eq!(a["b"], vec![tp("t", 3), tp("t", 4)]);
    }

    #[test]
    fn encodings_round_trip() {
        let s = encode_subscription(&["x".into(), "y".into()]);
        assert_eq!(decode_subscription(&s).unwrap(), vec!["x", "y"]);
        let parts = vec![("x".to_string(), 0), ("x".to_string(), 2)];
        assert_eq!(
            decode_assignment(&encode_assignment(&parts)).unwrap(),
            parts
        );
        assert!(decode_assignment(&[]).unwrap().is_empty());
    }
}
