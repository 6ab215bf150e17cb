//! DescribeClientQuotas (48) and AlterClientQuotas (49), as Kafka's broker answers them.
//!
//! Describe needs DESCRIBE_CONFIGS on the cluster, alter ALTER_CONFIGS
//! (CLUSTER_AUTHORIZATION_FAILED otherwise, for the whole request). Entities name `user` and/or
//! `client-id`, each once; `ip` entities (connection-rate quotas) are not served and, like
//! unknown entity types, answer INVALID_REQUEST. Alterations are a controller operation
//! (`AlterClientQuotas`) answered once committed; the describe filter follows Kafka's match
//! types (EXACT a name, DEFAULT the default entity, SPECIFIED any) and `strict`.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_client_quotas_request::EntityData as AlterEntity;
use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as AlteredEntity, EntryData as AlterResult,
};
use kafka_protocol::messages::describe_client_quotas_response::{
    EntityData as DescribedEntity, EntryData as DescribedEntry, ValueData,
};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use strata_protocol::ErrorCode;
use strata_quorum::controller::ops::{AlterClientQuotas, ItemResult, OpError, QuotaAlteration};
use strata_quorum::quota::{QuotaEntity, QuotaName, QuotaValue, CLIENT_ID, USER};

use super::{merge_answers, str_bytes};
use crate::auth::{authorize, ConnectionContext, Operation, Resource};
use crate::broker::Broker;
use crate::controller::plan::refuse;

/// Kafka's match types in a describe filter component.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

fn invalid(message: impl Into<String>) -> OpError {
    refuse(ErrorCode::InvalidRequest, message)
}

/// The entity of an alteration from its wire components.
fn entity(components: &[AlterEntity]) -> Result<QuotaEntity, OpError> {
    let mut entity = QuotaEntity {
        user: None,
        client_id: None,
    };
    for c in components {
        let slot = match c.entity_type.as_str() {
            USER => &mut entity.user,
            CLIENT_ID => &mut entity.client_id,
            "ip" => return Err(invalid("IP quotas are not supported by this broker")),
            other => {
                return Err(invalid(format!(
                    "Unhandled client quota entity type: {other}"
                )))
            }
        };
        if slot.is_some() {
            return Err(invalid(format!(
                "Duplicate {} entity type in the client quota entity",
                c.entity_type.as_str()
            )));
        }
        *slot = Some(QuotaName::from_wire(c.entity_name.as_deref()));
    }
    Ok(entity)
}

fn wire_entity(entity: &QuotaEntity) -> Vec<(String, Option<String>)> {
    entity
        .components()
        .into_iter()
        .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
        .collect()
}

pub async fn alter_client_quotas(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let echo = |components: &[AlterEntity]| -> Vec<AlteredEntity> {
        components
            .iter()
            .map(|c| {
                AlteredEntity::default()
                    .with_entity_type(c.entity_type.clone())
                    .with_entity_name(c.entity_name.clone())
            })
            .collect()
    };
    let respond = |results: Vec<ItemResult<()>>| {
        let entries = req
            .entries
            .iter()
            .zip(results)
            .map(|(e, result)| {
                let r = AlterResult::default().with_entity(echo(&e.entity));
                match result {
                    Ok(()) => r.with_error_message(None),
                    Err(OpError { code, message }) => r
                        .with_error_code(code)
                        .with_error_message(Some(str_bytes(message))),
                }
            })
            .collect();
        AlterClientQuotasResponse::default().with_entries(entries)
    };
    if !authorize(ctx, Operation::AlterConfigs, Resource::Cluster) {
        let refused = refuse(
            ErrorCode::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        );
        return respond(req.entries.iter().map(|_| Err(refused.clone())).collect());
    }
    let mut screened: Vec<Option<ItemResult<()>>> = Vec::with_capacity(req.entries.len());
    let mut entries = Vec::new();
    for e in &req.entries {
        match entity(&e.entity) {
            Ok(entity) => {
                screened.push(None);
                entries.push(QuotaAlteration {
                    entity,
                    ops: e
                        .ops
                        .iter()
                        .map(|o| {
                            let value = (!o.remove).then_some(QuotaValue(o.value));
                            (o.key.to_string(), value)
                        })
                        .collect(),
                });
            }
            Err(error) => screened.push(Some(Err(error))),
        }
    }
    let op = AlterClientQuotas {
        entries,
        validate_only: req.validate_only,
    };
    let answers = match broker.submit(op).await {
        Ok(reply) => reply.results,
        Err(error) => {
            tracing::error!(%error, "alter client quotas failed");
            let failed = refuse(ErrorCode::UnknownServerError, error.to_string());
            return respond(req.entries.iter().map(|_| Err(failed.clone())).collect());
        }
    };
    respond(merge_answers(screened, answers))
}

/// A describe filter: per entity type, an exact name (`Some(name)`, `Some(Default)`) or any
/// name (`None`, SPECIFIED).
type Filter = BTreeMap<String, Option<QuotaName>>;

fn filter(req: &DescribeClientQuotasRequest) -> Result<Filter, String> {
    let mut filter = Filter::new();
    for c in &req.components {
        let t = c.entity_type.as_str();
        if t.is_empty() {
            return Err("Invalid empty entity type.".into());
        }
        if filter.contains_key(t) {
            return Err(format!(
                "Entity type {t} cannot appear more than once in the filter."
            ));
        }
        if t != USER && t != CLIENT_ID && t != "ip" {
            return Err(format!("Unsupported entity type {t}"));
        }
        let wanted = match (c.match_type, &c._match) {
            (MATCH_EXACT, Some(name)) => Some(QuotaName::Name(name.to_string())),
            (MATCH_EXACT, None) => {
                return Err(
                    "Request specified MATCH_TYPE_EXACT, but set match string to null.".into(),
                )
            }
            (MATCH_DEFAULT, None) => Some(QuotaName::Default),
            (MATCH_SPECIFIED, None) => None,
            (MATCH_DEFAULT | MATCH_SPECIFIED, Some(_)) => {
                return Err(format!(
                    "Request specified match type {}, but also specified a match string.",
                    c.match_type
                ))
            }
            (other, _) => return Err(format!("Unknown match type {other}")),
        };
        filter.insert(t.to_string(), wanted);
    }
    if filter.contains_key("ip") && filter.len() > 1 {
        return Err("Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component.".into());
    }
    Ok(filter)
}

/// Whether `entity` passes `filter`: every component of the filter matches one of the entity,
/// and with `strict` the entity has no other component.
fn matches(entity: &QuotaEntity, filter: &Filter, strict: bool) -> bool {
    let component = |t: &str| match t {
        USER => entity.user.as_ref(),
        CLIENT_ID => entity.client_id.as_ref(),
        _ => None,
    };
    if strict && entity.components().len() != filter.len() {
        return false;
    }
    filter
        .iter()
        .all(|(t, wanted)| match (component(t), wanted) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(have), Some(want)) => have == want,
        })
}

pub fn describe_client_quotas(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let error = |code: ErrorCode, message: String| {
        DescribeClientQuotasResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(message)))
            .with_entries(None)
    };
    if !authorize(ctx, Operation::DescribeConfigs, Resource::Cluster) {
        return error(
            ErrorCode::ClusterAuthorizationFailed,
            "Cluster authorization failed.".into(),
        );
    }
    let filter = match filter(&req) {
        Ok(f) => f,
        Err(message) => return error(ErrorCode::InvalidRequest, message),
    };
    let image = broker.image();
    let entries = image
        .client_quotas()
        .iter()
        .filter(|(entity, _)| matches(entity, &filter, req.strict))
        .map(|(entity, keys)| {
            DescribedEntry::default()
                .with_entity(
                    wire_entity(entity)
                        .into_iter()
                        .map(|(t, n)| {
                            DescribedEntity::default()
                                .with_entity_type(str_bytes(t))
                                .with_entity_name(n.map(str_bytes))
                        })
                        .collect(),
                )
                .with_values(
                    keys.iter()
                        .map(|(k, v)| {
                            ValueData::default()
                                .with_key(str_bytes(k.clone()))
                                .with_value(*v)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default()
        .with_error_message(None)
        .with_entries(Some(entries))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::describe_client_quotas_request::ComponentData;

    use super::*;

    fn component(t: &str, match_type: i8, name: Option<&str>) -> ComponentData {
        ComponentData::default()
            .with_entity_type(str_bytes(t))
            .with_match_type(match_type)
            .with_match(name.map(str_bytes))
    }

    fn request(components: Vec<ComponentData>, strict: bool) -> DescribeClientQuotasRequest {
        DescribeClientQuotasRequest::default()
            .with_components(components)
            .with_strict(strict)
    }

    #[test]
    fn filters_follow_kafkas_match_types() {
        let name = |n: &str| Some(QuotaName::Name(n.into()));
        let user_client = QuotaEntity {
            user: name("alice"),
            client_id: Some(QuotaName::Default),
        };
        let user = QuotaEntity {
            user: name("alice"),
            client_id: None,
        };
        let client = QuotaEntity {
            user: None,
            client_id: name("app"),
        };
        let cases = [
            (
                vec![component(USER, MATCH_EXACT, Some("alice"))],
                false,
                [true, true, false],
            ),
            (
                vec![component(USER, MATCH_EXACT, Some("alice"))],
                true,
                [false, true, false],
            ),
            (
                vec![component(CLIENT_ID, MATCH_DEFAULT, None)],
                false,
                [true, false, false],
            ),
            (
                vec![component(CLIENT_ID, MATCH_SPECIFIED, None)],
                false,
                [true, false, true],
            ),
            (
                vec![component(CLIENT_ID, MATCH_SPECIFIED, None)],
                true,
                [false, false, true],
            ),
            (vec![], false, [true, true, true]),
        ];
        for (components, strict, expected) in cases {
            let req = request(components, strict);
            let f = filter(&req).expect("valid");
            let got = [&user_client, &user, &client].map(|e| matches(e, &f, strict));
            assert_eq!(got, expected, "{req:?}");
        }
    }

    #[test]
    fn malformed_filters_are_refused() {
        for components in [
            vec![component(USER, MATCH_EXACT, None)],
            vec![component(USER, MATCH_DEFAULT, Some("a"))],
            vec![component(USER, MATCH_SPECIFIED, Some("a"))],
            vec![component(USER, 7, None)],
            vec![component("", MATCH_SPECIFIED, None)],
            vec![component("group", MATCH_SPECIFIED, None)],
            vec![
                component(USER, MATCH_SPECIFIED, None),
                component(USER, MATCH_DEFAULT, None),
            ],
            vec![
                component("ip", MATCH_SPECIFIED, None),
                component(USER, MATCH_DEFAULT, None),
            ],
        ] {
            assert!(
                filter(&request(components.clone(), false)).is_err(),
                "{components:?}"
            );
        }
    }

    #[test]
    fn alteration_entities_are_checked() {
        let c = |t: &str, n: Option<&str>| {
            AlterEntity::default()
                .with_entity_type(str_bytes(t))
                .with_entity_name(n.map(str_bytes))
        };
        let e = entity(&[c(USER, Some("alice")), c(CLIENT_ID, None)]).expect("valid");
        assert_eq!(e.client_id, Some(QuotaName::Default));
        assert!(entity(&[c(USER, None), c(USER, Some("b"))]).is_err());
        assert!(entity(&[c("ip", Some("1.2.3.4"))]).is_err());
        assert!(entity(&[c("topic", Some("t"))]).is_err());
    }
}
