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
//!
//! Hostile clients: session ids are random (a client cannot guess another's), and a session
//! belongs to the connection that opened it: any other connection presenting its id is told
//! FETCH_SESSION_ID_NOT_FOUND and cannot close it either. An update costs time linear in the
//! partitions the request names (a map keyed by partition, in insertion order), and the caller
//! stores only partitions that exist, so a session cannot be grown with made-up partitions.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use indexmap::IndexMap;
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
    /// The epoch of the last batch the fetcher holds (v12+; -1: not given): a follower's
    /// fetch is checked for divergence with it.
    pub last_fetched_epoch: i32,
    /// What the last response said, to decide whether there is news.
    pub last_high_watermark: i64,
    pub last_log_start_offset: i64,
}

/// The connection a session belongs to (see `auth::ConnectionContext::connection_id`).
pub type ConnectionId = u64;

pub struct FetchSession {
    pub id: i32,
    owner: ConnectionId,
    /// The epoch the next incremental request must carry.
    pub next_epoch: i32,
    /// In the order the partitions were added; O(1) lookup by key.
    partitions: IndexMap<FetchKey, SessionPartition>,
    last_used: Instant,
}

/// Sessions one connection may hold at once (clients use one per connection).
pub const MAX_SESSIONS_PER_CONNECTION: usize = 4;

pub struct FetchSessionCache {
    sessions: HashMap<i32, FetchSession>,
    capacity: usize,
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
        }
    }

    /// Interprets the request's session fields for connection `owner`. `requested` are the
    /// request's partitions that exist (only those are stored), `forgotten` the ones to drop
    /// from an incremental session.
    pub fn begin(
        &mut self,
        owner: ConnectionId,
        session_id: i32,
        epoch: i32,
        requested: &[(FetchKey, SessionPartition)],
        forgotten: &[FetchKey],
    ) -> Result<SessionAction, ErrorCode> {
        match (session_id, epoch) {
            (0, -1) => Ok(SessionAction::Sessionless),
            (0, 0) => Ok(self.open(owner, requested)),
            (0, _) => Err(ErrorCode::InvalidFetchSessionEpoch),
            (id, -1) => {
                self.close(owner, id);
                Ok(SessionAction::Sessionless)
            }
            (id, 0) => {
                self.close(owner, id);
                Ok(self.open(owner, requested))
            }
            (id, epoch) => {
                let session = self
                    .sessions
                    .get_mut(&id)
                    .filter(|s| s.owner == owner)
                    .ok_or(ErrorCode::FetchSessionIdNotFound)?;
                if session.next_epoch != epoch {
                    return Err(ErrorCode::InvalidFetchSessionEpoch);
                }
                session.next_epoch = next_epoch(epoch);
                session.last_used = Instant::now();
                for (key, update) in requested {
                    match session.partitions.get_mut(key) {
                        Some(existing) => {
                            existing.fetch_offset = update.fetch_offset;
                            existing.max_bytes = update.max_bytes;
                            existing.current_leader_epoch = update.current_leader_epoch;
                            existing.last_fetched_epoch = update.last_fetched_epoch;
                        }
                        None => {
                            session.partitions.insert(key.clone(), *update);
                        }
                    }
                }
                // As Kafka: updates first, then the forgotten partitions go (a partition named
                // in both ends up forgotten).
                if !forgotten.is_empty() {
                    let forgotten: HashSet<&FetchKey> = forgotten.iter().collect();
                    session.partitions.retain(|k, _| !forgotten.contains(k));
                }
                Ok(SessionAction::Incremental { session_id: id })
            }
        }
    }

    /// Removes `id` if `owner` opened it; another connection's session is left alone.
    fn close(&mut self, owner: ConnectionId, id: i32) {
        if self.sessions.get(&id).is_some_and(|s| s.owner == owner) {
            self.sessions.remove(&id);
        }
    }

    fn open(
        &mut self,
        owner: ConnectionId,
        requested: &[(FetchKey, SessionPartition)],
    ) -> SessionAction {
        // A client needs one session per connection; a connection that keeps opening sessions
        // without closing them recycles its own, and cannot flush everyone else's out of the
        // cache.
        let own: Vec<(Instant, i32)> = self
            .sessions
            .values()
            .filter(|s| s.owner == owner)
            .map(|s| (s.last_used, s.id))
            .collect();
        if own.len() >= MAX_SESSIONS_PER_CONNECTION {
            if let Some((_, oldest)) = own.iter().min() {
                self.sessions.remove(oldest);
            }
        }
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
        // Random, so that a client cannot guess the id of another's session (and ids say
        // nothing about how many sessions exist). 0 means "no session"; negatives are not used.
        let id = loop {
            let candidate = rand::random::<i32>() & i32::MAX;
            if candidate != 0 && !self.sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        self.sessions.insert(
            id,
            FetchSession {
                id,
                owner,
                next_epoch: 1,
                partitions: requested.iter().cloned().collect(),
                last_used: Instant::now(),
            },
        );
        SessionAction::Full { session_id: id }
    }

    /// The partitions of a session, in the order they were added.
    pub fn partitions(&self, session_id: i32) -> Vec<(FetchKey, SessionPartition)> {
        self.sessions
            .get(&session_id)
            .map(|s| s.partitions.iter().map(|(k, p)| (k.clone(), *p)).collect())
            .unwrap_or_default()
    }

    /// Records what was sent for a partition of a session.
    pub fn record_sent(&mut self, session_id: i32, key: &FetchKey, hw: i64, log_start: i64) {
        if let Some(p) = self
            .sessions
            .get_mut(&session_id)
            .and_then(|s| s.partitions.get_mut(key))
        {
            p.last_high_watermark = hw;
            p.last_log_start_offset = log_start;
        }
    }

    /// Drops partitions that no longer exist (their topic was deleted) from a session.
    pub fn forget(&mut self, session_id: i32, gone: &[FetchKey]) {
        if gone.is_empty() {
            return;
        }
        if let Some(session) = self.sessions.get_mut(&session_id) {
            // One pass, keeping the order (removing one by one would be quadratic).
            let gone: HashSet<&FetchKey> = gone.iter().collect();
            session.partitions.retain(|k, _| !gone.contains(k));
        }
    }

    /// Drops every session of a closed connection: no other connection may use them.
    pub fn release_connection(&mut self, owner: ConnectionId) {
        self.sessions.retain(|_, s| s.owner != owner);
    }

    /// How many partitions a session holds (0 if there is no such session).
    pub fn session_len(&self, session_id: i32) -> usize {
        self.sessions
            .get(&session_id)
            .map_or(0, |s| s.partitions.len())
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

    const OWNER: ConnectionId = 7;

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
            last_fetched_epoch: -1,
            last_high_watermark: -1,
            last_log_start_offset: -1,
        }
    }

    #[test]
    fn open_then_incremental() {
        let mut cache = FetchSessionCache::new(2);
        let SessionAction::Full { session_id } = cache
            .begin(OWNER, 0, 0, &[(key(0), part(0)), (key(1), part(0))], &[])
            .expect("opens")
        else {
            panic!("expected a full fetch")
        };
        assert!(matches!(
            cache.begin(OWNER, session_id, 2, &[], &[]),
            Err(ErrorCode::InvalidFetchSessionEpoch)
        ));
        assert!(matches!(
            cache.begin(OWNER, session_id, 1, &[(key(0), part(5))], &[key(1)]),
            Ok(SessionAction::Incremental { .. })
        ));
        let parts = cache.partitions(session_id);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].1.fetch_offset, 5);
        assert!(matches!(
            cache.begin(OWNER, session_id, 2, &[], &[]),
            Ok(SessionAction::Incremental { .. })
        ));
        assert!(matches!(
            cache.begin(OWNER, 999, 1, &[], &[]),
            Err(ErrorCode::FetchSessionIdNotFound)
        ));
        assert!(matches!(
            cache.begin(OWNER, session_id, -1, &[], &[]),
            Ok(SessionAction::Sessionless)
        ));
        assert!(cache.is_empty());
    }

    #[test]
    fn capacity_evicts_least_recently_used() {
        let mut cache = FetchSessionCache::new(2);
        for owner in 0..5 {
            cache.begin(owner, 0, 0, &[], &[]).expect("opens");
        }
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn one_connection_cannot_flush_the_cache() {
        let mut cache = FetchSessionCache::new(10);
        cache.begin(OWNER + 1, 0, 0, &[], &[]).expect("opens");
        for _ in 0..100 {
            cache.begin(OWNER, 0, 0, &[], &[]).expect("opens");
        }
        assert_eq!(cache.len(), MAX_SESSIONS_PER_CONNECTION + 1);
    }

    #[test]
    fn another_connection_cannot_use_or_close_a_session() {
        let mut cache = FetchSessionCache::new(10);
        let SessionAction::Full { session_id } = cache
            .begin(OWNER, 0, 0, &[(key(0), part(0))], &[])
            .expect("opens")
        else {
            panic!("expected a full fetch")
        };
        assert!(session_id > 0);
        assert!(matches!(
            cache.begin(OWNER + 1, session_id, 1, &[], &[]),
            Err(ErrorCode::FetchSessionIdNotFound)
        ));
        // Closing (or closing and reopening) someone else's session leaves it in place.
        cache
            .begin(OWNER + 1, session_id, -1, &[], &[])
            .expect("sessionless");
        cache
            .begin(OWNER + 1, session_id, 0, &[], &[])
            .expect("opens its own");
        assert_eq!(cache.session_len(session_id), 1);
        assert!(matches!(
            cache.begin(OWNER, session_id, 1, &[], &[]),
            Ok(SessionAction::Incremental { .. })
        ));
        cache.release_connection(OWNER);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn ids_are_random() {
        let mut cache = FetchSessionCache::new(100);
        let ids: Vec<i32> = (0..50)
            .map(|i| match cache.begin(i, 0, 0, &[], &[]) {
                Ok(SessionAction::Full { session_id }) => session_id,
                _ => panic!("opens"),
            })
            .collect();
        assert!(ids.iter().all(|id| *id > 0));
        let sequential = ids.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(sequential < 3, "ids look sequential: {ids:?}");
    }

    #[test]
    fn updates_are_linear_in_the_request() {
        // 50 000 partitions: a quadratic update would take minutes, this takes milliseconds.
        let n = 50_000;
        let all: Vec<_> = (0..n).map(|p| (key(p), part(0))).collect();
        let mut cache = FetchSessionCache::new(2);
        let SessionAction::Full { session_id } =
            cache.begin(OWNER, 0, 0, &all, &[]).expect("opens")
        else {
            panic!("expected a full fetch")
        };
        let moved: Vec<_> = (0..n).map(|p| (key(p), part(1))).collect();
        let forgotten: Vec<_> = (0..n / 2).map(key).collect();
        let started = Instant::now();
        cache
            .begin(OWNER, session_id, 1, &moved, &forgotten)
            .expect("incremental");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Updated, then the forgotten half dropped (Kafka's order).
        assert_eq!(cache.session_len(session_id), (n - n / 2) as usize);
        cache.forget(session_id, &[key(n - 1)]);
        assert_eq!(cache.session_len(session_id), (n - n / 2) as usize - 1);
    }
}
