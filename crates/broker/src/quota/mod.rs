//! Client quotas at the broker: which quota applies to a connection, and how long it must wait
//! once its bytes go over it.
//!
//! - [`throttle`]: the rate windows and Kafka's throttle arithmetic, pure.
//! - [`resolve`]: Kafka's precedence between the quota entities that could apply to a
//!   (user, client id) pair, pure.
//! - [`request_time`]: what a request-time quota (`request_percentage`) measures and exempts.
//! - [`QuotaManager`]: the broker's quotas (swapped on each metadata publish that changes
//!   them) and the windows of the entities that have a quota, one per kind (produce bytes,
//!   fetch bytes, request time).
//!
//! Hot path: with no byte-rate quota configured, a Produce or Fetch pays one atomic load; with
//! no request quota, every request pays one atomic load. With one, a recording pays a read of
//! the quota map, a lookup of the entity's window under a map lock held for the lookup alone,
//! and a few additions under that entity's own lock; no lock is held across I/O or across
//! entities.

pub mod request_time;
pub mod throttle;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::messages::ResponseKind;
use strata_quorum::quota::{
    QuotaEntity, QuotaName, CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE, REQUEST_PERCENTAGE,
};
use strata_quorum::MetadataImage;

use self::throttle::{RateWindows, WindowConfig};

type Quotas = Arc<BTreeMap<QuotaEntity, BTreeMap<String, f64>>>;

/// Which rate a recording counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Produce request bytes (`producer_byte_rate`).
    Produce,
    /// Fetch record bytes (`consumer_byte_rate`).
    Fetch,
    /// Handler time in percent of one second (`request_percentage`).
    Request,
}

impl QuotaKind {
    fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => PRODUCER_BYTE_RATE,
            QuotaKind::Fetch => CONSUMER_BYTE_RATE,
            QuotaKind::Request => REQUEST_PERCENTAGE,
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
    /// Whether any request-time quota exists: the only cost per request when none does.
    any_request: AtomicBool,
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
            any_request: AtomicBool::new(false),
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
        let any = quotas
            .values()
            .any(|keys| keys.contains_key(REQUEST_PERCENTAGE));
        self.any_request.store(any, Ordering::Release);
    }

    /// Whether request time is measured at all (a request quota exists): one atomic load.
    pub fn request_quotas_active(&self) -> bool {
        self.any_request.load(Ordering::Acquire)
    }

    /// Records `bytes` of `kind` for (`user`, `client_id`) and answers the throttle time in ms
    /// they cause (0 without a quota).
    pub fn record(&self, kind: QuotaKind, user: &str, client_id: &str, bytes: usize) -> u64 {
        if !self.any_byte_rate.load(Ordering::Acquire) {
            return 0;
        }
        self.record_amount(kind, user, client_id, bytes as f64)
    }

    /// Records a request's handler time for (`user`, `client_id`) and answers the throttle
    /// time in ms it causes (0 without a request quota), at most one window.
    pub fn record_request_time(&self, user: &str, client_id: &str, handled: Duration) -> u64 {
        if !self.request_quotas_active() {
            return 0;
        }
        let nanos = u64::try_from(handled.as_nanos()).unwrap_or(u64::MAX);
        let percent = request_time::nanos_to_percentage(nanos);
        self.record_amount(QuotaKind::Request, user, client_id, percent)
    }

    fn record_amount(&self, kind: QuotaKind, user: &str, client_id: &str, amount: f64) -> u64 {
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
        // Kafka bounds a byte-rate throttle by the whole measured time, a request-time one by
        // one window.
        let max_ms = match kind {
            QuotaKind::Request => self.windows_config.size_ms,
            QuotaKind::Produce | QuotaKind::Fetch => self.windows_config.span_limit_ms(),
        };
        window.record_and_throttle(now_ms, amount, resolved.bound, max_ms)
    }
}

/// Writes a quota throttle into any response that has `throttle_time_ms` (never lowering
/// one it holds); responses without the field (SaslHandshake, DescribeQuorum...) are left
/// alone. A version older than the field's leaves it out when encoded.
pub fn set_throttle_time(body: &mut ResponseKind, throttle_ms: u64) {
    let wire = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    macro_rules! with_throttle_field {
        ($($kind:ident),* $(,)?) => {
            match body {
                $(ResponseKind::$kind(r) => r.throttle_time_ms = r.throttle_time_ms.max(wire),)*
                _ => {}
            }
        };
    }
    with_throttle_field!(
        AddOffsetsToTxn,
        AddPartitionsToTxn,
        AddRaftVoter,
        AllocateProducerIds,
        AlterClientQuotas,
        AlterConfigs,
        AlterPartitionReassignments,
        AlterPartition,
        AlterReplicaLogDirs,
        AlterShareGroupOffsets,
        AlterUserScramCredentials,
        ApiVersions,
        AssignReplicasToDirs,
        BrokerHeartbeat,
        BrokerRegistration,
        ConsumerGroupDescribe,
        ConsumerGroupHeartbeat,
        ControllerRegistration,
        CreateAcls,
        CreateDelegationToken,
        CreatePartitions,
        CreateTopics,
        DeleteAcls,
        DeleteGroups,
        DeleteRecords,
        DeleteShareGroupOffsets,
        DeleteTopics,
        DescribeAcls,
        DescribeClientQuotas,
        DescribeCluster,
        DescribeConfigs,
        DescribeDelegationToken,
        DescribeGroups,
        DescribeLogDirs,
        DescribeProducers,
        DescribeShareGroupOffsets,
        DescribeTopicPartitions,
        DescribeTransactions,
        DescribeUserScramCredentials,
        ElectLeaders,
        EndTxn,
        ExpireDelegationToken,
        Fetch,
        FetchSnapshot,
        FindCoordinator,
        GetTelemetrySubscriptions,
        Heartbeat,
        IncrementalAlterConfigs,
        InitProducerId,
        JoinGroup,
        LeaveGroup,
        ListConfigResources,
        ListGroups,
        ListOffsets,
        ListPartitionReassignments,
        ListTransactions,
        Metadata,
        OffsetCommit,
        OffsetDelete,
        OffsetFetch,
        OffsetForLeaderEpoch,
        Produce,
        PushTelemetry,
        RemoveRaftVoter,
        RenewDelegationToken,
        ShareAcknowledge,
        ShareFetch,
        ShareGroupDescribe,
        ShareGroupHeartbeat,
        SyncGroup,
        TxnOffsetCommit,
        UnregisterBroker,
        UpdateFeatures,
        UpdateRaftVoter,
    );
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
    use kafka_protocol::messages::ApiKey;
    use strata_quorum::quota::QuotaValue;
    use strata_quorum::MetadataRecord;

    fn image_with(entity: QuotaEntity, key: &str, value: f64) -> MetadataImage {
        let mut image = MetadataImage::default();
        image.apply(&MetadataRecord::ClientQuota {
            entity,
            key: key.into(),
            value: Some(QuotaValue(value)),
        });
        image
    }

    #[test]
    fn request_time_is_a_percentage_of_one_thread_bounded_by_one_window() {
        let app = QuotaEntity {
            user: None,
            client_id: Some(QuotaName::Name("app".into())),
        };
        let quotas = QuotaManager::new(&MetadataImage::default(), WindowConfig::default());
        assert!(!quotas.request_quotas_active());
        assert_eq!(
            quotas.record_request_time("u", "app", Duration::from_secs(5)),
            0
        );
        quotas.update(&image_with(app.clone(), REQUEST_PERCENTAGE, 10.0));
        assert!(quotas.request_quotas_active());
        // 500 ms of handler time over a fresh entity's 10 s: 5% of a thread, under 10%.
        assert_eq!(
            quotas.record_request_time("u", "app", Duration::from_millis(500)),
            0
        );
        // 1.5 s in all: 15% against 10%: (15-10)/10 * 10 s = 5 s, bounded by one window.
        assert_eq!(
            quotas.record_request_time("u", "app", Duration::from_secs(1)),
            1000
        );
        // Another client id has no request quota; byte rates are not affected.
        assert_eq!(
            quotas.record_request_time("u", "other", Duration::from_secs(60)),
            0
        );
        assert_eq!(quotas.record(QuotaKind::Produce, "u", "app", 1 << 30), 0);
        // With smaller windows the bound is one of them.
        let small = WindowConfig {
            num: 2,
            size_ms: 200,
        };
        let quotas = QuotaManager::new(&image_with(app, REQUEST_PERCENTAGE, 1.0), small);
        assert_eq!(
            quotas.record_request_time("u", "app", Duration::from_secs(1)),
            200
        );
    }

    fn entity(user: Option<QuotaName>, client_id: Option<QuotaName>) -> QuotaEntity {
        QuotaEntity { user, client_id }
    }

    /// Every served API whose response has `throttle_time_ms` gets the throttle: each
    /// response is decoded from zeros (empty arrays and strings) at each served version that
    /// allows it, and its debug text names the field only with the value written.
    #[test]
    fn every_response_with_the_field_carries_the_throttle() {
        use strata_protocol::api::{supported_versions, SUPPORTED_APIS};
        let mut with_field = std::collections::BTreeSet::new();
        for &api in SUPPORTED_APIS {
            let range = supported_versions(api).expect("served");
            for version in range.min..=range.max {
                let mut zeros = bytes::Bytes::from(vec![0u8; 4096]);
                let Ok(mut body) = ResponseKind::decode(api, &mut zeros, version) else {
                    continue;
                };
                set_throttle_time(&mut body, 7);
                let text = format!("{body:?}");
                if text.contains("throttle_time_ms") {
                    assert!(text.contains("throttle_time_ms: 7"), "{api:?} v{version}");
                    with_field.insert(api as i16);
                }
            }
        }
        // The client-facing APIs certainly among them.
        for api in [
            ApiKey::Produce,
            ApiKey::Fetch,
            ApiKey::Metadata,
            ApiKey::ApiVersions,
        ] {
            assert!(with_field.contains(&(api as i16)), "{api:?}");
        }
        assert!(with_field.len() >= 35, "{with_field:?}");
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
