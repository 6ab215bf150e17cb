//! DescribeConfigs, AlterConfigs (legacy, whole-set) and IncrementalAlterConfigs, for topic and
//! broker resources.
//!
//! DescribeConfigs returns every known config of the resource, with value, source, read-only
//! flag, type, synonyms and documentation, as Kafka does: tools validate keys against it.
//!
//! The two alter APIs are authorized here, then submitted to the controller as
//! `AlterConfigs` / `IncrementalAlterConfigs` operations, which it validates and plans
//! (`crate::controller::plan`) against its image.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use strata_protocol::ErrorCode;
use strata_quorum::controller::ops::{
    AlterConfigs, AlterConfigsReply, ConfigOperation, ConfigTarget, IncrementalAlterConfigs,
    ItemResult, Op, OpError,
};
use strata_quorum::MetadataImage;

use super::{merge_answers, str_bytes};
use crate::auth::{authorize, ConnectionContext, Operation, Resource};
use crate::broker::Broker;
use crate::config::{
    resolve_topic_config, ConfigLayers, ConfigSource, ConfigType, BROKER_CONFIGS, TOPIC_CONFIGS,
};
use crate::controller::plan::{broker_entity, known_topic, refuse};

const RESOURCE_TOPIC: i8 = ConfigTarget::TOPIC;
const RESOURCE_BROKER: i8 = ConfigTarget::BROKER;
const RESOURCE_BROKER_LOGGER: i8 = 8;

/// One row of a DescribeConfigs answer before encoding.
struct Row {
    name: String,
    value: Option<String>,
    source: ConfigSource,
    read_only: bool,
    kind: ConfigType,
    doc: &'static str,
    synonyms: Vec<(String, Option<String>, ConfigSource)>,
}

pub fn describe_configs(
    broker: &Broker,
    ctx: &ConnectionContext,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let image = broker.image();
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let rows = match res.resource_type {
                RESOURCE_TOPIC => topic_rows(broker, &image, ctx, res.resource_name.as_str()),
                RESOURCE_BROKER => broker_rows(broker, &image, ctx, res.resource_name.as_str()),
                RESOURCE_BROKER_LOGGER => Ok(Vec::new()),
                other => Err(refuse(
                    ErrorCode::InvalidRequest,
                    format!("Unsupported resource type {other}"),
                )),
            };
            match rows {
                Err(e) => base
                    .with_error_code(e.code)
                    .with_error_message(Some(str_bytes(e.message))),
                Ok(rows) => {
                    // Null (or an empty list) asks for every config.
                    let keys: Option<Vec<String>> = res
                        .configuration_keys
                        .filter(|k| !k.is_empty())
                        .map(|k| k.iter().map(|s| s.to_string()).collect());
                    let configs = rows
                        .into_iter()
                        .filter(|r| keys.as_ref().is_none_or(|k| k.contains(&r.name)))
                        .map(|r| {
                            encode_row(r, req.include_synonyms, req.include_documentation, version)
                        })
                        .collect();
                    base.with_error_message(None).with_configs(configs)
                }
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn encode_row(r: Row, synonyms: bool, docs: bool, version: i16) -> DescribeConfigsResourceResult {
    // Passwords (and inline private keys) are never sent, as Kafka never sends them: the
    // value and its synonyms' values are null, and is_sensitive says why.
    let sensitive = r.kind == ConfigType::Password;
    let shown = |v: Option<String>| if sensitive { None } else { v };
    // v0 has no source field; its "is_default" is carried in the same slot by the crate.
    let source = if version == 0 {
        i8::from(r.source == ConfigSource::DefaultConfig)
    } else {
        r.source as i8
    };
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(r.name))
        .with_value(shown(r.value).map(str_bytes))
        .with_read_only(r.read_only)
        .with_config_source(source)
        .with_is_sensitive(sensitive)
        .with_config_type(r.kind.wire())
        .with_documentation(docs.then(|| str_bytes(r.doc)))
        .with_synonyms(if synonyms {
            r.synonyms
                .into_iter()
                .map(|(n, v, s)| {
                    DescribeConfigsSynonym::default()
                        .with_name(str_bytes(n))
                        .with_value(shown(v).map(str_bytes))
                        .with_source(s as i8)
                })
                .collect()
        } else {
            Vec::new()
        })
}

fn topic_rows(
    broker: &Broker,
    image: &MetadataImage,
    ctx: &ConnectionContext,
    name: &str,
) -> Result<Vec<Row>, OpError> {
    // Authorized before existence: an unauthorized topic's existence is not disclosed.
    if !authorize(ctx, Operation::DescribeConfigs, Resource::Topic(name)) {
        return Err(refuse(
            ErrorCode::TopicAuthorizationFailed,
            "Not authorized.",
        ));
    }
    let topic = known_topic(image, name)?;
    let layers = ConfigLayers {
        topic: &topic.configs,
        dynamic_broker: image.broker_configs.get(&Some(broker.node_id())),
        dynamic_default: image.broker_configs.get(&None),
        static_broker: &broker.config.set,
    };
    Ok(TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let r = resolve_topic_config(def, &layers);
            Row {
                name: r.name.to_string(),
                value: r.value,
                source: r.source,
                read_only: false,
                kind: def.def.kind,
                doc: def.def.doc,
                synonyms: r.synonyms,
            }
        })
        .collect())
}

fn broker_rows(
    broker: &Broker,
    image: &MetadataImage,
    ctx: &ConnectionContext,
    name: &str,
) -> Result<Vec<Row>, OpError> {
    let entity = broker_entity(broker.node_id(), name)?;
    if !authorize(ctx, Operation::DescribeConfigs, Resource::Cluster) {
        return Err(refuse(
            ErrorCode::ClusterAuthorizationFailed,
            "Not authorized.",
        ));
    }
    let empty = BTreeMap::new();
    let per_broker = image
        .broker_configs
        .get(&Some(broker.node_id()))
        .unwrap_or(&empty);
    let default = image.broker_configs.get(&None).unwrap_or(&empty);
    Ok(BROKER_CONFIGS
        .iter()
        .map(|def| {
            let mut synonyms = Vec::new();
            if entity.is_some() {
                if let Some(v) = per_broker.get(def.name) {
                    synonyms.push((
                        def.name.to_string(),
                        Some(v.clone()),
                        ConfigSource::DynamicBrokerConfig,
                    ));
                }
            }
            if let Some(v) = default.get(def.name) {
                synonyms.push((
                    def.name.to_string(),
                    Some(v.clone()),
                    ConfigSource::DynamicDefaultBrokerConfig,
                ));
            }
            if let Some(v) = broker.config.set.get(def.name) {
                synonyms.push((
                    def.name.to_string(),
                    Some(v.clone()),
                    ConfigSource::StaticBrokerConfig,
                ));
            }
            synonyms.push((
                def.name.to_string(),
                def.default.map(str::to_string),
                ConfigSource::DefaultConfig,
            ));
            let (value, source) = synonyms
                .first()
                .map(|(_, v, s)| (v.clone(), *s))
                .expect("the default is always there");
            Row {
                name: def.name.to_string(),
                value,
                source,
                read_only: !def.dynamic,
                kind: def.kind,
                doc: def.doc,
                synonyms,
            }
        })
        .collect())
}

/// Refuses here the resources the connection may not alter (`None`: sent to the
/// controller, which plans the change and refuses unknown resources and types).
fn screen(ctx: &ConnectionContext, target: &ConfigTarget) -> Option<ItemResult<()>> {
    let (resource, code) = match target.resource_type {
        RESOURCE_TOPIC => (
            Resource::Topic(&target.name),
            ErrorCode::TopicAuthorizationFailed,
        ),
        RESOURCE_BROKER => (Resource::Cluster, ErrorCode::ClusterAuthorizationFailed),
        _ => return None,
    };
    (!authorize(ctx, Operation::AlterConfigs, resource))
        .then(|| Err(refuse(code, "Not authorized.")))
}

/// Screens each requested resource, submits the operation `make_op` builds from the ones
/// that pass, and returns each resource with its result, in request order (no results if the
/// change could not be committed).
async fn submit_changes<T, O>(
    broker: &Broker,
    ctx: &ConnectionContext,
    requested: Vec<(ConfigTarget, T)>,
    make_op: impl FnOnce(Vec<(ConfigTarget, T)>) -> O,
) -> Vec<(ConfigTarget, ItemResult<()>)>
where
    O: Op<Reply = AlterConfigsReply>,
{
    let mut screened = Vec::with_capacity(requested.len());
    let mut targets = Vec::with_capacity(requested.len());
    let mut passed = Vec::new();
    for (target, change) in requested {
        let own = screen(ctx, &target);
        if own.is_none() {
            passed.push((target.clone(), change));
        }
        screened.push(own);
        targets.push(target);
    }
    match broker.submit(make_op(passed)).await {
        Ok(reply) => targets
            .into_iter()
            .zip(merge_answers(screened, reply.resources))
            .collect(),
        Err(error) => {
            tracing::error!(%error, "altering configs failed");
            Vec::new()
        }
    }
}

/// A resource's error code and message (0 and none on success).
fn error_fields(result: ItemResult<()>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (0, None),
        Err(e) => (e.code, Some(str_bytes(e.message))),
    }
}

fn target(resource_type: i8, name: &StrBytes) -> ConfigTarget {
    ConfigTarget {
        resource_type,
        name: name.to_string(),
    }
}

pub async fn alter_configs(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let requested = req
        .resources
        .iter()
        .map(|r| {
            let wanted: BTreeMap<String, String> = r
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            (target(r.resource_type, &r.resource_name), wanted)
        })
        .collect();
    let validate_only = req.validate_only;
    let results = submit_changes(broker, ctx, requested, |resources| AlterConfigs {
        resources,
        validate_only,
    })
    .await;
    AlterConfigsResponse::default().with_responses(
        results
            .into_iter()
            .map(|(target, result)| {
                let (code, message) = error_fields(result);
                AlterConfigsResourceResponse::default()
                    .with_resource_type(target.resource_type)
                    .with_resource_name(str_bytes(target.name))
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect(),
    )
}

pub async fn incremental_alter_configs(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let requested = req
        .resources
        .iter()
        .map(|r| {
            let operations: Vec<ConfigOperation> = r
                .configs
                .iter()
                .map(|c| ConfigOperation {
                    name: c.name.to_string(),
                    op: c.config_operation,
                    value: c.value.as_ref().map(|v| v.to_string()),
                })
                .collect();
            (target(r.resource_type, &r.resource_name), operations)
        })
        .collect();
    let validate_only = req.validate_only;
    let results = submit_changes(broker, ctx, requested, |resources| {
        IncrementalAlterConfigs {
            resources,
            validate_only,
        }
    })
    .await;
    IncrementalAlterConfigsResponse::default().with_responses(
        results
            .into_iter()
            .map(|(target, result)| {
                let (code, message) = error_fields(result);
                IncResponse::default()
                    .with_resource_type(target.resource_type)
                    .with_resource_name(str_bytes(target.name))
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect(),
    )
}
