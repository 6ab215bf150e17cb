//! Client quotas as Kafka models them: an entity (a user, a client id, or both; each a name or
//! the default `<default>`) with numeric settings (`producer_byte_rate`, `consumer_byte_rate`,
//! `request_percentage`). The image holds them; the broker resolves a connection's quota from
//! them with Kafka's precedence (`strata_broker::quota`).

use serde::{Deserialize, Serialize};

/// Kafka's entity type names on the wire.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";

/// The quota keys Kafka accepts for user and client-id entities.
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";

/// One component of an entity: a specific name, or the default that applies to every name
/// without a quota of its own (`entity_name` null on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaName {
    Name(String),
    Default,
}

impl QuotaName {
    /// From the wire's nullable name (null: the default).
    pub fn from_wire(name: Option<&str>) -> QuotaName {
        name.map_or(QuotaName::Default, |n| QuotaName::Name(n.to_string()))
    }

    /// The wire's nullable name.
    pub fn as_wire(&self) -> Option<&str> {
        match self {
            QuotaName::Name(n) => Some(n),
            QuotaName::Default => None,
        }
    }
}

/// What a quota applies to; at least one component is present.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QuotaEntity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<QuotaName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<QuotaName>,
}

impl QuotaEntity {
    /// The entity's components as the wire lists them: (entity type, nullable name).
    pub fn components(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut out = Vec::with_capacity(2);
        if let Some(u) = &self.user {
            out.push((USER, u.as_wire()));
        }
        if let Some(c) = &self.client_id {
            out.push((CLIENT_ID, c.as_wire()));
        }
        out
    }
}

impl std::fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .components()
            .into_iter()
            .map(|(t, n)| format!("{t}={}", n.unwrap_or("<default>")))
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// A quota value. Compared by bits so that operations holding one stay `Eq`; the controller
/// refuses NaN and infinities before one is recorded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for QuotaValue {}
