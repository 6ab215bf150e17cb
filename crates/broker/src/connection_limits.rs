//! How many connections the broker holds: `max.connections` in all, and
//! `max.connections.per.ip` (with `max.connections.per.ip.overrides`) per client address.
//!
//! The accept loop asks for a [`ConnectionPermit`] before serving a connection; a connection
//! over a limit is closed at once (Kafka closes it too, after logging). The permit gives its
//! slot back when the connection ends, whatever the reason. Counting only, no I/O here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::{BrokerConfig, InvalidConfig};

/// Why a new connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefused {
    #[error("the broker already has max.connections={limit} connections")]
    Broker { limit: usize },
    #[error("{ip} already has max.connections.per.ip={limit} connections")]
    PerIp { ip: IpAddr, limit: usize },
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    per_ip_overrides: HashMap<IpAddr, usize>,
    counts: Mutex<Counts>,
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

fn to_limit(n: i64) -> usize {
    usize::try_from(n.max(0)).unwrap_or(usize::MAX)
}

impl ConnectionLimits {
    pub fn new(
        max_total: usize,
        max_per_ip: usize,
        per_ip_overrides: HashMap<IpAddr, usize>,
    ) -> Self {
        ConnectionLimits {
            max_total,
            max_per_ip,
            per_ip_overrides,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// The limits of `config`. `max.connections.per.ip.overrides` is `ip:count,...`; Kafka
    /// also allows host names there, which would need resolving: only addresses are taken.
    pub fn from_config(config: &BrokerConfig) -> Result<Self, InvalidConfig> {
        let overrides_text = config
            .value("max.connections.per.ip.overrides")
            .unwrap_or_default();
        let mut overrides = HashMap::new();
        for item in overrides_text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let parsed = item.rsplit_once(':').and_then(|(host, count)| {
                let host = host.trim().trim_start_matches('[').trim_end_matches(']');
                Some((
                    host.parse::<IpAddr>().ok()?,
                    count.trim().parse::<i64>().ok()?,
                ))
            });
            let (ip, count) = parsed.ok_or_else(|| InvalidConfig {
                key: "max.connections.per.ip.overrides".into(),
                value: overrides_text.clone(),
                reason: format!("expected ip:count entries separated by commas, got {item:?}"),
            })?;
            overrides.insert(ip, to_limit(count));
        }
        Ok(Self::new(
            to_limit(config.parsed("max.connections").unwrap_or(i64::MAX)),
            to_limit(config.parsed("max.connections.per.ip").unwrap_or(i64::MAX)),
            overrides,
        ))
    }

    /// Counts a new connection from `ip`, or says which limit it is over.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, ConnectionRefused> {
        let per_ip_limit = self
            .per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.max_per_ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= per_ip_limit {
            return Err(ConnectionRefused::PerIp {
                ip,
                limit: per_ip_limit,
            });
        }
        if counts.total >= self.max_total {
            return Err(ConnectionRefused::Broker {
                limit: self.max_total,
            });
        }
        counts.total += 1;
        *counts.per_ip.entry(ip).or_insert(0) += 1;
        Ok(ConnectionPermit {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections counted now.
    pub fn open_connections(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Forget addresses without connections, so the map stays bounded by live ones.
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn limits_hold_and_slots_come_back() {
        let limits = Arc::new(ConnectionLimits::new(
            3,
            2,
            HashMap::from([(ip("10.0.0.9"), 0)]),
        ));
        let a1 = limits.acquire(ip("10.0.0.1")).expect("first");
        let _a2 = limits.acquire(ip("10.0.0.1")).expect("second");
        assert_eq!(
            limits.acquire(ip("10.0.0.1")).expect_err("per ip"),
            ConnectionRefused::PerIp {
                ip: ip("10.0.0.1"),
                limit: 2
            }
        );
        assert!(matches!(
            limits.acquire(ip("10.0.0.9")),
            Err(ConnectionRefused::PerIp { limit: 0, .. })
        ));
        let _b = limits.acquire(ip("10.0.0.2")).expect("third");
        assert_eq!(
            limits.acquire(ip("10.0.0.3")).expect_err("total"),
            ConnectionRefused::Broker { limit: 3 }
        );
        drop(a1);
        assert_eq!(limits.open_connections(), 2);
        limits.acquire(ip("10.0.0.3")).expect("a slot came back");
    }
}
