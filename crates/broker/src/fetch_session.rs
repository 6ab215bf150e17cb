//! Incremental fetch sessions (KIP-227).
//!
//! A consumer that fetches many partitions can open a session: the broker remembers the
//! partitions and their fetch positions, the client then sends only what changed (new fetch
//! offsets, forgotten partitions), and the broker answers only for partitions with news (data,
//! a moved high watermark, log start offset or an error).
//!
//! Request `(session_id, epoch)`: `(0, -1)` sessionless full fetch; `(0, 0)` full fetch that
//! opens a session; `(id, -1)` closes `id`, sessionless; `(id, 0)` closes `id` and opens a new
//! one; `(id, n>0)` incremental fetch, `n` must be the session's next epoch. The cache is
//! bounded; the least recently used session is evicted when it is full (its client gets
//! FETCH_SESSION_ID_NOT_FOUND and starts over with a full fetch).

use std::collections::HashMap;
use std::time::Instant;

use strata_protocol::ErrorCode;
use uuid::Uuid;

/// A partition as the fetch request names it: topic id (v13+) or name (older), and index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FetchKey {
    pub topic_id: Uuid,
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionPartition {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    pub current_leader_epoch: i32,
    /// What the last response said, to decide whether there is news.
    pub last_high_watermark: i64,
    pub last_log_start_offset: i64,
}

pub struct FetchSession {
    pub id: i32,
    /// The epoch the next incremental request must carry.
    pub next_epoch: i32,
    pub partitions: Vec<(FetchKey, SessionPartition)>,
    last_used: Instant,
}

pub struct FetchSessionCache {
    sessions: HashMap<i32, FetchSession>,
    capacity: usize,
    next_id: i32,
}

/// What a fetch request asks of the session layer.
pub enum SessionAction {
    /// Serve exactly the request's partitions; answer with session id 0.
    Sessionless,
    /// Serve the request's partitions, remember them under this new session id.
    Full { session_id: i32 },
    /// Serve the session's partitions (already updated from the request); answer only news.
    Incremental { session_id: i32 },
}

impl FetchSessionCache {
    pub fn new(capacity: usize) -> Self {
        FetchSessionCache {
            sessions: HashMap::new(),
            capacity: capacity.max(1),
            next_id: 1,
        }
    }

    /// Interprets the request's session fields. `requested` are the request's partitions,
    /// `forgotten` the ones to drop from an incremental session.
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        requested: &[(FetchKey, SessionPartition)],
        forgotten: &[FetchKey],
    ) -> Result<SessionAction, ErrorCode> {
        match (session_id, epoch) {
            (0, -1) => Ok(SessionAction::Sessionless),
            (0, 0) => Ok(self.open(requested)),
            (0, _) => Err(ErrorCode::InvalidFetchSessionEpoch),
            (id, -1) => {
                self.sessions.remove(&id);
                Ok(SessionAction::Sessionless)
            }
            (id, 0) => {
                self.sessions.remove(&id);
                Ok(self.open(requested))
            }
            (id, epoch) => {
                let session = self
                    .sessions
                    .get_mut(&id)
                    .ok_or(ErrorCode::FetchSessionIdNotFound)?;
                if session.next_epoch != epoch {
                    return Err(ErrorCode::InvalidFetchSessionEpoch);
                }
                session.next_epoch = next_epoch(epoch);
                session.last_used = Instant::now();
                session.partitions.retain(|(k, _)| !forgotten.contains(k));
                for (key, update) in requested {
                    match session.partitions.iter_mut().find(|(k, _)| k == key) {
                        Some((_, existing)) => {
                            existing.fetch_offset = update.fetch_offset;
                            existing.max_bytes = update.max_bytes;
                            existing.current_leader_epoch = update.current_leader_epoch;
                        }
                        None => session.partitions.push((key.clone(), *update)),
                    }
                }
                Ok(SessionAction::Incremental { session_id: id })
            }
        }
    }

    fn open(&mut self, requested: &[(FetchKey, SessionPartition)]) -> SessionAction {
        if self.sessions.len() >= self.capacity {
            if let Some(oldest) = self
                .sessions
                .values()
                .min_by_key(|s| s.last_used)
                .map(|s| s.id)
            {
                self.sessions.remove(&oldest);
            }
        }
        let mut id = self.next_id;
        while id == 0 || self.sessions.contains_key(&id) {
            id = id.wrapping_add(1).max(1);
        }
        self.next_id = id.wrapping_add(1).max(1);
        self.sessions.insert(
            id,
            FetchSession {
                id,
                next_epoch: 1,
                partitions: requested.to_vec(),
                last_used: Instant::now(),
            },
        );
        SessionAction::Full { session_id: id }
    }

    /// The partitions of a session, in the order they were added.
    pub fn partitions(&self, session_id: i32) -> Vec<(FetchKey, SessionPartition)> {
        self.sessions
            .get(&session_id)
            .map(|s| s.partitions.clone())
            .unwrap_or_default()
    }

    /// Records what was sent for a partition of a session.
    pub fn record_sent(&mut self, session_id: i32, key: &FetchKey, hw: i64, log_start: i64) {
        if let Some(session) = self.sessions.get_mut(&session_id) {
            if let Some((_, p)) = session.partitions.iter_mut().find(|(k, _)| k == key) {
                p.last_high_watermark = hw;
                p.last_log_start_offset = log_start;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> FetchKey {
        FetchKey {
            topic_id: Uuid::nil(),
            topic: "t".into(),
            partition: p,
        }
    }

    fn part(offset: i64) -> SessionPartition {
        SessionPartition {
            fetch_offset: offset,
            max_bytes: 100,
            current_leader_epoch: -1,
            last_high_watermark: -1,
            last_log_start_offset: -1,
        }
    }

    #[test]
    fn open_then_incremental() {
        let mut cache = FetchSessionCache::new(2);
        let SessionAction::Full { session_id } = cache
            .begin(0, 0, &[(key(0), part(0)), (key(1), part(0))], &[])
            .expect("opens")
        else {
            panic!("expected a full fetch")
        };
        assert!(matches!(
            cache.begin(session_id, 2, &[], &[]),
            Err(ErrorCode::InvalidFetchSessionEpoch)
        ));
        assert!(matches!(
            cache.begin(session_id, 1, &[(key(0), part(5))], &[key(1)]),
            Ok(SessionAction::Incremental { .. })
        ));
        let parts = cache.partitions(session_id);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].1.fetch_offset, 5);
        assert!(matches!(
            cache.begin(session_id, 2, &[], &[]),
            Ok(SessionAction::Incremental { .. })
        ));
        assert!(matches!(
            cache.begin(999, 1, &[], &[]),
            Err(ErrorCode::FetchSessionIdNotFound)
        ));
        assert!(matches!(
            cache.begin(session_id, -1, &[], &[]),
            Ok(SessionAction::Sessionless)
        ));
        assert!(cache.is_empty());
    }

    #[test]
    fn capacity_evicts_least_recently_used() {
        let mut cache = FetchSessionCache::new(2);
        for _ in 0..5 {
            cache.begin(0, 0, &[], &[]).expect("opens");
        }
        assert_eq!(cache.len(), 2);
    }
}
