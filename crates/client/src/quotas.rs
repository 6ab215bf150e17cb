//! Client quotas: DescribeClientQuotas and AlterClientQuotas, as Kafka's admin clients call
//! them.
//!
//! An entity is a user and/or a client id, each a name or the default (null on the wire). A
//! describe filter names, per entity type, one name, the default, or any name; `strict` leaves
//! out entities with components the filter does not name (Kafka's `containsOnly`, what
//! `kafka-configs.sh --describe` sends).

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};

use crate::client::{sb, Client};
use crate::error::{check, Error, Result};

/// Kafka's entity type names.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";

/// A quota entity: per entity type (`user`, `client-id`), a name or `None` for the default.
pub type QuotaEntity = BTreeMap<String, Option<String>>;

/// What a describe filter component matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaMatch {
    /// This name.
    Exact(String),
    /// The default entity of the type.
    Default,
    /// Any name, the default included.
    Any,
}

/// One entity's changes: a new value per key, or `None` to remove the key.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaAlteration {
    pub entity: QuotaEntity,
    pub ops: Vec<(String, Option<f64>)>,
}

impl Client {
    /// The quotas of the entities `components` selects (all of them with no component), per
    /// entity, as keys and values.
    pub async fn describe_client_quotas(
        &self,
        components: &[(String, QuotaMatch)],
        strict: bool,
    ) -> Result<Vec<(QuotaEntity, BTreeMap<String, f64>)>> {
        let components: Vec<ComponentData> = components
            .iter()
            .map(|(t, m)| {
                let (match_type, name) = match m {
                    QuotaMatch::Exact(n) => (0, Some(sb(n))),
                    QuotaMatch::Default => (1, None),
                    QuotaMatch::Any => (2, None),
                };
                ComponentData::default()
                    .with_entity_type(sb(t))
                    .with_match_type(match_type)
                    .with_match(name)
            })
            .collect();
        let response = self
            .send_any(1, |_| {
                DescribeClientQuotasRequest::default()
                    .with_components(components.clone())
                    .with_strict(strict)
            })
            .await?;
        check(
            || "describing client quotas".to_string(),
            response.error_code,
            response.error_message.map(|m| m.to_string()),
        )?;
        let mut out: Vec<(QuotaEntity, BTreeMap<String, f64>)> = response
            .entries
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                let entity = e
                    .entity
                    .into_iter()
                    .map(|c| {
                        (
                            c.entity_type.to_string(),
                            c.entity_name.map(|n| n.to_string()),
                        )
                    })
                    .collect();
                let values = e
                    .values
                    .into_iter()
                    .map(|v| (v.key.to_string(), v.value))
                    .collect();
                (entity, values)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Applies `alterations` in one request (`validate_only`: checked, not applied); the result
    /// per alteration, in order.
    pub async fn alter_client_quotas(
        &self,
        alterations: &[QuotaAlteration],
        validate_only: bool,
    ) -> Result<Vec<Result<()>>> {
        let entries: Vec<EntryData> = alterations
            .iter()
            .map(|a| {
                EntryData::default()
                    .with_entity(
                        a.entity
                            .iter()
                            .map(|(t, n)| {
                                EntityData::default()
                                    .with_entity_type(sb(t))
                                    .with_entity_name(n.as_deref().map(sb))
                            })
                            .collect(),
                    )
                    .with_ops(
                        a.ops
                            .iter()
                            .map(|(k, v)| {
                                OpData::default()
                                    .with_key(sb(k))
                                    .with_value(v.unwrap_or(0.0))
                                    .with_remove(v.is_none())
                            })
                            .collect(),
                    )
            })
            .collect();
        let response = self
            .send_any(1, |_| {
                AlterClientQuotasRequest::default()
                    .with_entries(entries.clone())
                    .with_validate_only(validate_only)
            })
            .await?;
        if response.entries.len() != alterations.len() {
            return Err(Error::Protocol(format!(
                "AlterClientQuotas answered {} results for {} entities",
                response.entries.len(),
                alterations.len()
            )));
        }
        Ok(response
            .entries
            .into_iter()
            .map(|r| {
                check(
                    || "altering client quotas".to_string(),
                    r.error_code,
                    r.error_message.map(|m| m.to_string()),
                )
            })
            .collect())
    }
}
