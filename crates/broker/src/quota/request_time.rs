//! Request-time quotas (`request_percentage`, Kafka's KIP-124): the share of one
//! request-handling thread's time a client's requests may take.
//!
//! What is measured: a request's handler time, from the call of its handler until it returns,
//! including the blocking-pool work it awaits (a Produce's append); for a response completed
//! later, also the blocking-pool work done for it meanwhile (a Fetch's log reads, counted by
//! [`add_blocking`] inside [`measured`]), but not the time it only waited (a long poll, an
//! acks=all durability wait: Kafka's purgatory). The time is recorded per quota entity as a
//! percentage of one second (Kafka: `nanos * 100 / 1e9`), so the rate over the windows is the
//! percentage of one thread's time: `request_percentage=100` is one thread. Over the quota,
//! the throttle is Kafka's arithmetic bounded by one window (`quota.window.size.seconds`).
//!
//! Exempt, as Kafka's request handlers exempt them: SaslHandshake and SaslAuthenticate,
//! ApiVersions while a SASL connection is still authenticating (Kafka answers those in its
//! authenticator, before any quota), cluster actions (DescribeQuorum here) and follower
//! fetches. Everything else is recorded, ApiVersions after authentication included, and
//! super users are not exempt: Kafka's quota managers know nothing of `super.users`.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

tokio::task_local! {
    /// Blocking-pool time, in ns, spent for the request whose response future runs in this
    /// task (set only while a request-time quota is measured).
    static BLOCKING_NS: Cell<u64>;
}

/// Kafka's conversion of handler time into the unit a request quota is recorded in.
pub fn nanos_to_percentage(nanos: u64) -> f64 {
    nanos as f64 * 100.0 / 1e9
}

/// Whether a request is left out of request-time quotas: `follower` for a replica's fetch,
/// `authenticating` while a SASL connection has not authenticated yet.
pub fn is_exempt(api: ApiKey, follower: bool, authenticating: bool) -> bool {
    match api {
        ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => true,
        ApiKey::ApiVersions => authenticating,
        // Kafka's cluster actions among the served APIs.
        ApiKey::DescribeQuorum => true,
        ApiKey::Fetch => follower,
        _ => false,
    }
}

/// Runs a response future, answering its output and the blocking-pool time recorded for it
/// with [`add_blocking`].
pub async fn measured<F: Future>(future: F) -> (F::Output, Duration) {
    BLOCKING_NS
        .scope(Cell::new(0), async move {
            let output = future.await;
            let ns = BLOCKING_NS.with(Cell::get);
            (output, Duration::from_nanos(ns))
        })
        .await
}

/// Whether blocking work now is measured (inside [`measured`]); a thread-local check, so
/// unmeasured requests do not even read the clock.
pub fn is_measured() -> bool {
    BLOCKING_NS.try_with(|_| ()).is_ok()
}

/// Adds blocking-pool work done for the measured request of this task.
pub fn add_blocking(elapsed: Duration) {
    let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    let _ = BLOCKING_NS.try_with(|c| c.set(c.get().saturating_add(ns)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_exemptions() {
        assert!(is_exempt(ApiKey::SaslHandshake, false, false));
        assert!(is_exempt(ApiKey::SaslAuthenticate, false, true));
        assert!(is_exempt(ApiKey::ApiVersions, false, true));
        assert!(!is_exempt(ApiKey::ApiVersions, false, false));
        assert!(is_exempt(ApiKey::DescribeQuorum, false, false));
        assert!(is_exempt(ApiKey::Fetch, true, false));
        assert!(!is_exempt(ApiKey::Fetch, false, false));
        for api in [ApiKey::Produce, ApiKey::Metadata, ApiKey::CreateTopics] {
            assert!(!is_exempt(api, false, false), "{api:?}");
        }
    }

    #[test]
    fn one_thread_busy_for_a_second_is_one_hundred_percent() {
        assert_eq!(nanos_to_percentage(1_000_000_000), 100.0);
        assert_eq!(nanos_to_percentage(10_000_000), 1.0);
    }

    #[tokio::test]
    async fn blocking_time_is_counted_only_inside_a_measured_future() {
        assert!(!is_measured());
        add_blocking(Duration::from_millis(5)); // nowhere to count it: ignored
        let ((), blocking) = measured(async {
            assert!(is_measured());
            add_blocking(Duration::from_millis(3));
            tokio::task::yield_now().await;
            add_blocking(Duration::from_millis(4));
        })
        .await;
        assert_eq!(blocking, Duration::from_millis(7));
        assert!(!is_measured());
    }
}
