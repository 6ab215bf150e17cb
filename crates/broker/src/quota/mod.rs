//! Client quotas at the broker: which quota applies to a connection, and how long it must wait
//! once its bytes go over it.
//!
//! - [`throttle`]: the byte-rate windows and Kafka's throttle arithmetic, pure.
//! - [`resolve`]: Kafka's precedence between the quota entities that could apply to a
//!   (user, client id) pair, pure.
//! - [`QuotaManager`]: the broker's quotas (swapped on each metadata publish that changes
//!   them) and the byte-rate windows of the entities that have a quota.
//!
//! Hot path: with no byte-rate quota configured, a Produce or Fetch pays one atomic load. With
//! one, it pays a read of the quota map, a lookup of the entity's window under a map lock held
//! for the lookup alone, and a few additions under that entity's own lock; no lock is held
//! across I/O or across entities.

pub mod throttle;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use strata_quorum::quota::{QuotaEntity, QuotaName, CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE};
use strata_quorum::MetadataImage;

use self::throttle::{RateWindows, WindowConfig};

type Quotas = Arc<BTreeMap<QuotaEntity, BTreeMap<String, f64>>>;

/// Which byte rate a recording counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    Produce,
    Fetch,
}

impl QuotaKind {
    fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => PRODUCER_BYTE_RATE,
            QuotaKind::Fetch => CONSUMER_BYTE_RATE,
        }
    }
}

type WindowKey = (QuotaKind, Option<String>, Option<String>);

/// The broker's client quotas and the windows they are measured in.
pub struct QuotaManager {
    started: Instant,
    windows_config: WindowConfig,
    /// Whether any byte-rate quota exists: the only cost when none does.
    any_byte_rate: AtomicBool,
    quotas: RwLock<Quotas>,
    windows: Mutex<HashMap<WindowKey, Arc<Mutex<RateWindows>>>>,
}

/// Windows kept at most; beyond it, idle ones are dropped (a bound against a client cycling
/// through client ids under a default quota).
const MAX_WINDOWS: usize = 100_000;

impl QuotaManager {
    pub fn new(image: &MetadataImage, windows_config: WindowConfig) -> QuotaManager {
        let manager = QuotaManager {
            started: Instant::now(),
            windows_config,
            any_byte_rate: AtomicBool::new(false),
            quotas: RwLock::new(Quotas::default()),
            windows: Mutex::new(HashMap::new()),
        };
        manager.update(image);
        manager
    }

    /// Takes the image's quotas if they changed (called on every publish).
    pub fn update(&self, image: &MetadataImage) {
        let mut quotas = self.quotas.write().unwrap_or_else(|p| p.into_inner());
        if Arc::ptr_eq(&quotas, image.client_quotas()) {
            return;
        }
        *quotas = image.client_quotas().clone();
        let any = quotas.values().any(|keys| {
            keys.contains_key(PRODUCER_BYTE_RATE) || keys.contains_key(CONSUMER_BYTE_RATE)
        });
        self.any_byte_rate.store(any, Ordering::Release);
    }

    /// Records `bytes` of `kind` for (`user`, `client_id`) and answers the throttle time in ms
    /// they cause (0 without a quota).
    pub fn record(&self, kind: QuotaKind, user: &str, client_id: &str, bytes: usize) -> u64 {
        if !self.any_byte_rate.load(Ordering::Acquire) {
            return 0;
        }
        let resolved = {
            let quotas = self.quotas.read().unwrap_or_else(|p| p.into_inner());
            resolve(&quotas, kind.key(), user, client_id)
        };
        let Some(resolved) = resolved else { return 0 };
        let key = (kind, resolved.window_user, resolved.window_client_id);
        let window = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            if windows.len() >= MAX_WINDOWS && !windows.contains_key(&key) {
                windows.retain(|_, w| Arc::strong_count(w) > 1);
                if windows.len() >= MAX_WINDOWS {
                    windows.clear();
                }
            }
            windows
                .entry(key)
                .or_insert_with(|| Arc::new(Mutex::new(RateWindows::new(self.windows_config))))
                .clone()
        };
        let now_ms = self.started.elapsed().as_millis() as u64;
        let mut window = window.lock().unwrap_or_else(|p| p.into_inner());
        window.record_and_throttle(
            now_ms,
            bytes as f64,
            resolved.bound,
            self.windows_config.span_limit_ms(),
        )
    }
}

/// The quota that applies to a (user, client id) for `key`, with the window it is counted in:
/// the matched entity's components with the connection's actual names (so each user under a
/// default user quota has a window of its own, as in Kafka).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedQuota {
    pub bound: f64,
    pub window_user: Option<String>,
    pub window_client_id: Option<String>,
}

/// Kafka's precedence: user+client-id, user+default client-id, user, default user+client-id,
/// default user+default client-id, default user, client-id, default client-id.
pub fn resolve(
    quotas: &BTreeMap<QuotaEntity, BTreeMap<String, f64>>,
    key: &str,
    user: &str,
    client_id: &str,
) -> Option<ResolvedQuota> {
    let name = |n: &str| Some(QuotaName::Name(n.to_string()));
    let default = || Some(QuotaName::Default);
    let order = [
        (name(user), name(client_id)),
        (name(user), default()),
        (name(user), None),
        (default(), name(client_id)),
        (default(), default()),
        (default(), None),
        (None, name(client_id)),
        (None, default()),
    ];
    order.into_iter().find_map(|(u, c)| {
        let has_user = u.is_some();
        let has_client = c.is_some();
        let entity = QuotaEntity {
            user: u,
            client_id: c,
        };
        let bound = *quotas.get(&entity)?.get(key)?;
        Some(ResolvedQuota {
            bound,
            window_user: has_user.then(|| user.to_string()),
            window_client_id: has_client.then(|| client_id.to_string()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(user: Option<QuotaName>, client_id: Option<QuotaName>) -> QuotaEntity {
        QuotaEntity { user, client_id }
    }

    #[test]
    fn precedence_is_kafkas() {
        let n = |s: &str| Some(QuotaName::Name(s.into()));
        let d = || Some(QuotaName::Default);
        let levels = [
            (entity(None, d()), 8.0),
            (entity(None, n("app")), 7.0),
            (entity(d(), None), 6.0),
            (entity(d(), d()), 5.0),
            (entity(d(), n("app")), 4.0),
            (entity(n("alice"), None), 3.0),
            (entity(n("alice"), d()), 2.0),
            (entity(n("alice"), n("app")), 1.0),
        ];
        let mut quotas = BTreeMap::new();
        let key = "producer_byte_rate";
        assert_eq!(resolve(&quotas, key, "alice", "app"), None);
        // Adding ever more specific entities, the most specific one always wins.
        for (e, bound) in levels {
            quotas.insert(e, [(key.to_string(), bound)].into());
            let r = resolve(&quotas, key, "alice", "app").expect("a quota applies");
            assert_eq!(r.bound, bound);
        }
        assert_eq!(resolve(&quotas, "consumer_byte_rate", "alice", "app"), None);
        let r = resolve(&quotas, key, "bob", "other").expect("defaults");
        assert_eq!(
            (
                r.bound,
                r.window_user.as_deref(),
                r.window_client_id.as_deref()
            ),
            (5.0, Some("bob"), Some("other"))
        );
    }
}
