//! Limits on failed SASL authentications, per user and per client address.
//!
//! A fixed window per key: the first failure opens a window of
//! `strata.sasl.failed.attempts.window.ms`; once a key has `strata.sasl.max.failed.attempts`
//! failures in its window, every attempt with that user or from that address is refused
//! without looking at the password until the window ends, and one line says so per key and
//! window. Only authentication attempts touch this (never a request of an authenticated
//! connection), so one mutex is enough. The table is bounded: expired windows are dropped
//! when it fills, and past the bound new user names are not tracked (addresses still are),
//! so a client inventing user names cannot grow it without end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys tracked at once.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    User(String),
    Host(IpAddr),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::User(u) => write!(f, "user {u}"),
            Key::Host(h) => write!(f, "host {h}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
    /// The refusal of this window was logged.
    logged: bool,
}

/// Why an attempt is refused without being checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub key: Key,
    /// Until when (from now).
    pub remaining: Duration,
    /// The first refusal of this window: log it.
    pub log: bool,
}

pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    windows: Mutex<HashMap<Key, Window>>,
}

impl FailureLimiter {
    /// `max_failures` 0 disables the limit.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        FailureLimiter {
            max_failures,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn keys(user: Option<&str>, host: IpAddr) -> impl Iterator<Item = Key> {
        user.map(|u| Key::User(u.to_string()))
            .into_iter()
            .chain(std::iter::once(Key::Host(host)))
    }

    /// Whether an attempt by `user` (when known yet) from `host` is refused unchecked.
    pub fn check(&self, user: Option<&str>, host: IpAddr, now: Instant) -> Option<Blocked> {
        if self.max_failures == 0 {
            return None;
        }
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        for key in Self::keys(user, host) {
            let Some(w) = windows.get_mut(&key) else {
                continue;
            };
            let elapsed = now.saturating_duration_since(w.started);
            if elapsed >= self.window {
                windows.remove(&key);
                continue;
            }
            if w.failures >= self.max_failures {
                let log = !w.logged;
                w.logged = true;
                return Some(Blocked {
                    key,
                    remaining: self.window - elapsed,
                    log,
                });
            }
        }
        None
    }

    /// Counts a failed attempt against `user` (when known) and `host`.
    pub fn record_failure(&self, user: Option<&str>, host: IpAddr, now: Instant) {
        if self.max_failures == 0 {
            return;
        }
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, w| now.saturating_duration_since(w.started) < self.window);
        }
        for key in Self::keys(user, host) {
            let full = windows.len() >= MAX_TRACKED;
            match windows.get_mut(&key) {
                Some(w) if now.saturating_duration_since(w.started) < self.window => {
                    w.failures = w.failures.saturating_add(1);
                }
                Some(w) => {
                    *w = Window {
                        started: now,
                        failures: 1,
                        logged: false,
                    }
                }
                None if full && matches!(key, Key::User(_)) => {}
                None => {
                    windows.insert(
                        key,
                        Window {
                            started: now,
                            failures: 1,
                            logged: false,
                        },
                    );
                }
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.windows.lock().map(|w| w.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn a_user_over_the_limit_is_refused_until_the_window_ends_and_logged_once() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(limiter.check(Some("alice"), A, t0), None, "attempt {i}");
            limiter.record_failure(Some("alice"), A, t0);
        }
        // From another address too: the user is over its limit.
        let blocked = limiter
            .check(Some("alice"), B, t0 + Duration::from_secs(1))
            .expect("blocked");
        assert_eq!(blocked.key, Key::User("alice".into()));
        assert_eq!(blocked.remaining, Duration::from_secs(59));
        assert!(blocked.log);
        let again = limiter.check(Some("alice"), B, t0 + Duration::from_secs(2));
        assert!(again.is_some_and(|b| !b.log), "logged once per window");
        // Another user from address A: A is over its limit as well.
        let host = limiter.check(Some("bob"), A, t0).expect("host blocked");
        assert_eq!(host.key, Key::Host(A));
        assert!(limiter.check(Some("bob"), B, t0).is_none());
        // The window ends.
        let later = t0 + Duration::from_secs(60);
        assert!(limiter.check(Some("alice"), A, later).is_none());
        limiter.record_failure(Some("alice"), A, later);
        assert!(limiter.check(Some("alice"), A, later).is_none());
    }

    #[test]
    fn zero_disables_and_the_table_is_bounded() {
        let off = FailureLimiter::new(0, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..10 {
            off.record_failure(Some("x"), A, t0);
        }
        assert!(off.check(Some("x"), A, t0).is_none());

        let limiter = FailureLimiter::new(1, Duration::from_secs(60));
        for i in 0..MAX_TRACKED + 10 {
            limiter.record_failure(Some(&format!("u{i}")), A, t0);
        }
        assert!(limiter.tracked() <= MAX_TRACKED);
        // Expired windows make room.
        limiter.record_failure(Some("late"), B, t0 + Duration::from_secs(61));
        assert!(limiter
            .check(Some("late"), B, t0 + Duration::from_secs(61))
            .is_some());
    }
}
