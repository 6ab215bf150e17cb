//! What the coordinator persists in `__consumer_offsets`, and its encoding.
//!
//! Each record's key and value are JSON (see `docs/internal-topics.md`); the topic is
//! compacted by key, so the latest value per key wins and a null value (tombstone) deletes:
//!
//! ```text
//! key   {"v":1,"offset":{"group":G,"topic":T,"partition":P}}   value {"v":1,"offset":O,"leader_epoch":E,"metadata":M,"commit_ms":C,"end_offset":H}
//! key   {"v":1,"group":G}                                      value {"v":1,"protocol_type":..,"generation":..,"protocol":..,"leader":..,"members":[..]}
//! ```

use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
    /// The partition's high watermark when the commit was accepted (the lag at that moment is
    /// this minus `offset`), kept for lag evaluation after a reload. Absent in records written
    /// before it existed, and when the partition was not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_offset: Option<i64>,
}

/// A member as persisted with its group (enough to resume a Stable group after a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// base64 of the subscription metadata of the chosen protocol.
    pub subscription: String,
    /// base64 of the assignment.
    pub assignment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedGroup {
    pub protocol_type: Option<String>,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<PersistedMember>,
}

/// One record of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        /// `None` deletes the committed offset.
        value: Option<CommittedOffset>,
    },
    Group {
        group: String,
        /// `None` deletes the group.
        value: Option<PersistedGroup>,
    },
}

#[derive(Serialize, Deserialize)]
struct OffsetKey {
    group: String,
    topic: String,
    partition: i32,
}

#[derive(Serialize, Deserialize)]
struct Key {
    v: i16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<OffsetKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    v: i16,
    #[serde(flatten)]
    body: T,
}

/// Why a record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl GroupRecord {
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Offset { group, .. } | GroupRecord::Group { group, .. } => group,
        }
    }

    /// Whether this is a committed offset (or its tombstone) of `group` for `topic`'s
    /// `partition`.
    pub fn is_offset_of(&self, group: &str, topic: &str, partition: i32) -> bool {
        matches!(self, GroupRecord::Offset { group: g, topic: t, partition: p, .. }
            if g == group && t == topic && *p == partition)
    }

    /// The record's key and value bytes (`None` value: a tombstone).
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let json = |v: &dyn erased::Ser| Bytes::from(v.to_json());
        match self {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                let key = Key {
                    v: 1,
                    offset: Some(OffsetKey {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    }),
                    group: None,
                };
                (
                    json(&key),
                    value.as_ref().map(|v| {
                        json(&Versioned {
                            v: 1,
                            body: v.clone(),
                        })
                    }),
                )
            }
            GroupRecord::Group { group, value } => {
                let key = Key {
                    v: 1,
                    offset: None,
                    group: Some(group.clone()),
                };
                (
                    json(&key),
                    value.as_ref().map(|v| {
                        json(&Versioned {
                            v: 1,
                            body: v.clone(),
                        })
                    }),
                )
            }
        }
    }

    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<GroupRecord, DecodeError> {
        let bad = |e: serde_json::Error| DecodeError(e.to_string());
        let key: Key = serde_json::from_slice(key).map_err(bad)?;
        match (key.offset, key.group) {
            (Some(k), _) => Ok(GroupRecord::Offset {
                group: k.group,
                topic: k.topic,
                partition: k.partition,
                value: value
                    .map(|v| {
                        serde_json::from_slice::<Versioned<CommittedOffset>>(v).map(|x| x.body)
                    })
                    .transpose()
                    .map_err(bad)?,
            }),
            (None, Some(group)) => Ok(GroupRecord::Group {
                group,
                value: value
                    .map(|v| serde_json::from_slice::<Versioned<PersistedGroup>>(v).map(|x| x.body))
                    .transpose()
                    .map_err(bad)?,
            }),
            (None, None) => Err(DecodeError(
                "key names neither an offset nor a group".into(),
            )),
        }
    }
}

mod erased {
    /// Serialize to JSON bytes without generics at the call site.
    pub trait Ser {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("records serialize: plain data, string keys")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_without_an_end_offset_still_decode() {
        let key = br#"{"v":1,"offset":{"group":"g","topic":"t","partition":0}}"#;
        let value = br#"{"v":1,"offset":7,"leader_epoch":-1,"metadata":"","commit_ms":3}"#;
        let GroupRecord::Offset { value: Some(v), .. } =
            GroupRecord::decode(key, Some(value)).expect("decodes")
        else {
            panic!("an offset record");
        };
        assert_eq!((v.offset, v.end_offset), (7, None));
        // And an unknown end offset is not written at all.
        let (_, bytes) = GroupRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            value: Some(v),
        }
        .encode();
        assert!(!String::from_utf8_lossy(&bytes.expect("value")).contains("end_offset"));
    }

    #[test]
    fn round_trip() {
        let records = vec![
            GroupRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: Some(CommittedOffset {
                    offset: 42,
                    leader_epoch: 1,
                    metadata: "m".into(),
                    commit_ms: 5,
                    end_offset: Some(50),
                }),
            },
            GroupRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: None,
            },
            GroupRecord::Group {
                group: "g".into(),
                value: Some(PersistedGroup {
                    protocol_type: Some("consumer".into()),
                    generation: 4,
                    protocol: Some("range".into()),
                    leader: Some("m1".into()),
                    members: vec![],
                }),
            },
            GroupRecord::Group {
                group: "g".into(),
                value: None,
            },
        ];
        for r in records {
            let (k, v) = r.encode();
            assert_eq!(GroupRecord::decode(&k, v.as_deref()).expect("decodes"), r);
        }
        assert!(GroupRecord::decode(b"{}", None).is_err());
        assert!(GroupRecord::decode(b"garbage", None).is_err());
    }
}
