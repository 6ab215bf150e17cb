//! DescribeConfigs, AlterConfigs (legacy, whole-set) and IncrementalAlterConfigs, for topic and
//! broker resources.
//!
//! DescribeConfigs returns every known config of the resource, with value, source, read-only
//! flag, type, synonyms and documentation, as Kafka does: tools validate keys against it.

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
use strata_protocol::ErrorCode;
use strata_quorum::{ConfigResource, MetadataImage, MetadataRecord};

use super::admin::{validate_topic_configs, ApiError};
use super::str_bytes;
use crate::auth::{authorize, ConnectionContext, Operation, Resource};
use crate::broker::Broker;
use crate::config::{
    broker_config_def, resolve_topic_config, validate_value, ConfigLayers, ConfigSource,
    ConfigType, BROKER_CONFIGS, TOPIC_CONFIGS,
};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
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
                other => Err((
                    ErrorCode::InvalidRequest,
                    format!("Unsupported resource type {other}"),
                )),
            };
            match rows {
                Err((code, message)) => base
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message))),
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
) -> Result<Vec<Row>, ApiError> {
    let topic = image.topic_by_name(name).ok_or((
        ErrorCode::UnknownTopicOrPartition,
        format!("The topic '{name}' does not exist."),
    ))?;
    if !authorize(ctx, Operation::DescribeConfigs, Resource::Topic(name)) {
        return Err((
            ErrorCode::TopicAuthorizationFailed,
            "Not authorized.".into(),
        ));
    }
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

/// The broker entity a resource name means: `""` the cluster-wide default, else a node id.
fn broker_entity(broker: &Broker, name: &str) -> Result<Option<i32>, ApiError> {
    if name.is_empty() {
        return Ok(None);
    }
    match name.parse::<i32>() {
        Ok(id) if id == broker.node_id() => Ok(Some(id)),
        _ => Err((
            ErrorCode::InvalidRequest,
            format!(
                "Unexpected broker id, expected {} or empty string, but received {name}",
                broker.node_id()
            ),
        )),
    }
}

fn broker_rows(
    broker: &Broker,
    image: &MetadataImage,
    ctx: &ConnectionContext,
    name: &str,
) -> Result<Vec<Row>, ApiError> {
    let entity = broker_entity(broker, name)?;
    if !authorize(ctx, Operation::DescribeConfigs, Resource::Cluster) {
        return Err((
            ErrorCode::ClusterAuthorizationFailed,
            "Not authorized.".into(),
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

/// A validated change to one resource: the records to commit.
fn plan_topic_change(
    image: &MetadataImage,
    ctx: &ConnectionContext,
    name: &str,
    new_configs: BTreeMap<String, String>,
) -> Result<Vec<MetadataRecord>, ApiError> {
    let topic = image.topic_by_name(name).ok_or((
        ErrorCode::UnknownTopicOrPartition,
        format!("The topic '{name}' does not exist."),
    ))?;
    if !authorize(ctx, Operation::AlterConfigs, Resource::Topic(name)) {
        return Err((
            ErrorCode::TopicAuthorizationFailed,
            "Not authorized.".into(),
        ));
    }
    validate_topic_configs(&new_configs)?;
    Ok(diff_records(
        ConfigResource::Topic(name.to_string()),
        &topic.configs,
        &new_configs,
    ))
}

fn plan_broker_change(
    broker: &Broker,
    image: &MetadataImage,
    ctx: &ConnectionContext,
    name: &str,
    new_configs: BTreeMap<String, String>,
) -> Result<Vec<MetadataRecord>, ApiError> {
    let entity = broker_entity(broker, name)?;
    if !authorize(ctx, Operation::AlterConfigs, Resource::Cluster) {
        return Err((
            ErrorCode::ClusterAuthorizationFailed,
            "Not authorized.".into(),
        ));
    }
    for (k, v) in &new_configs {
        let def = broker_config_def(k).ok_or_else(|| {
            (
                ErrorCode::InvalidConfig,
                format!("Unknown broker config name: {k}"),
            )
        })?;
        if !def.dynamic {
            return Err((
                ErrorCode::InvalidConfig,
                format!("Cannot update these configs dynamically: {k}"),
            ));
        }
        validate_value(def, v).map_err(|e| (ErrorCode::InvalidConfig, e.to_string()))?;
    }
    let empty = BTreeMap::new();
    let current = image.broker_configs.get(&entity).unwrap_or(&empty);
    Ok(diff_records(
        ConfigResource::Broker(entity),
        current,
        &new_configs,
    ))
}

fn diff_records(
    resource: ConfigResource,
    current: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for k in current.keys().filter(|k| !wanted.contains_key(*k)) {
        records.push(MetadataRecord::Config {
            resource: resource.clone(),
            name: k.clone(),
            value: None,
        });
    }
    for (k, v) in wanted {
        if current.get(k) != Some(v) {
            records.push(MetadataRecord::Config {
                resource: resource.clone(),
                name: k.clone(),
                value: Some(v.clone()),
            });
        }
    }
    records
}

/// The current overrides of a resource.
fn current_overrides(
    broker: &Broker,
    image: &MetadataImage,
    resource_type: i8,
    name: &str,
) -> BTreeMap<String, String> {
    match resource_type {
        RESOURCE_TOPIC => image
            .topic_by_name(name)
            .map(|t| t.configs.clone())
            .unwrap_or_default(),
        RESOURCE_BROKER => broker_entity(broker, name)
            .ok()
            .and_then(|e| image.broker_configs.get(&e).cloned())
            .unwrap_or_default(),
        _ => BTreeMap::new(),
    }
}

type Change = (i8, String, Result<BTreeMap<String, String>, ApiError>);

/// Validates and commits whole new config sets; returns per-resource results.
async fn apply_changes(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    changes: Vec<Change>,
    validate_only: bool,
) -> Vec<(i8, String, Option<ApiError>)> {
    let b = broker.clone();
    let ctx = ctx.clone();
    let outcome = broker
        .commit(move |image| {
            let mut records = Vec::new();
            let mut results = Vec::new();
            for (resource_type, name, wanted) in changes {
                let planned = wanted.and_then(|wanted| match resource_type {
                    RESOURCE_TOPIC => plan_topic_change(image, &ctx, &name, wanted),
                    RESOURCE_BROKER => plan_broker_change(&b, image, &ctx, &name, wanted),
                    other => Err((
                        ErrorCode::InvalidRequest,
                        format!("Unsupported resource type {other}"),
                    )),
                });
                match planned {
                    Ok(plan) => {
                        if !validate_only {
                            records.extend(plan);
                        }
                        results.push((resource_type, name, None));
                    }
                    Err(e) => results.push((resource_type, name, Some(e))),
                }
            }
            (records, results)
        })
        .await;
    outcome.unwrap_or_else(|error| {
        tracing::error!(%error, "altering configs failed");
        Vec::new()
    })
}

pub async fn alter_configs(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let changes = req
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
            (r.resource_type, r.resource_name.to_string(), Ok(wanted))
        })
        .collect();
    let results = apply_changes(broker, ctx, changes, req.validate_only).await;
    AlterConfigsResponse::default().with_responses(
        results
            .into_iter()
            .map(|(t, name, err)| {
                let r = AlterConfigsResourceResponse::default()
                    .with_resource_type(t)
                    .with_resource_name(str_bytes(name));
                match err {
                    None => r,
                    Some((code, msg)) => r
                        .with_error_code(code.code())
                        .with_error_message(Some(str_bytes(msg))),
                }
            })
            .collect(),
    )
}

/// What `key` of a resource is when the resource does not set it.
fn inherited_value(
    broker: &Broker,
    image: &MetadataImage,
    resource_type: i8,
    key: &str,
) -> Option<String> {
    match resource_type {
        RESOURCE_TOPIC => {
            let def = crate::config::topic_config_def(key)?;
            let empty = BTreeMap::new();
            let layers = ConfigLayers {
                topic: &empty,
                dynamic_broker: image.broker_configs.get(&Some(broker.node_id())),
                dynamic_default: image.broker_configs.get(&None),
                static_broker: &broker.config.set,
            };
            resolve_topic_config(def, &layers).value
        }
        RESOURCE_BROKER => broker.config.value(key),
        _ => None,
    }
}

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn is_list(resource_type: i8, name: &str) -> bool {
    let kind = match resource_type {
        RESOURCE_TOPIC => crate::config::topic_config_def(name).map(|d| d.def.kind),
        _ => broker_config_def(name).map(|d| d.kind),
    };
    kind == Some(ConfigType::List)
}

pub async fn incremental_alter_configs(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let image = broker.image();
    let changes = req
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let mut wanted = current_overrides(broker, &image, r.resource_type, &name);
            let mut result = Ok(());
            for c in &r.configs {
                let key = c.name.to_string();
                let value = c.value.as_ref().map(|v| v.to_string());
                match c.config_operation {
                    OP_SET => {
                        wanted.insert(key, value.unwrap_or_default());
                    }
                    OP_DELETE => {
                        wanted.remove(&key);
                    }
                    OP_APPEND | OP_SUBTRACT => {
                        if !is_list(r.resource_type, &key) {
                            result = Err((ErrorCode::InvalidConfig, format!("Config value append/subtract is not allowed for config key {key}, which is not a list")));
                            break;
                        }
                        // APPEND and SUBTRACT start from the value in effect: the resource's
                        // own setting, else what it inherits (broker setting or default).
                        let current = wanted
                            .get(&key)
                            .cloned()
                            .or_else(|| inherited_value(broker, &image, r.resource_type, &key));
                        let mut items: Vec<String> = current
                            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                            .unwrap_or_default();
                        for item in value.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                            if c.config_operation == OP_APPEND {
                                if !items.iter().any(|i| i == item) {
                                    items.push(item.to_string());
                                }
                            } else {
                                items.retain(|i| i != item);
                            }
                        }
                        wanted.insert(key, items.join(","));
                    }
                    other => {
                        result = Err((ErrorCode::InvalidRequest, format!("Unknown config operation {other}")));
                        break;
                    }
                }
            }
            (r.resource_type, name, result.map(|()| wanted))
        })
        .collect();
    let results = apply_changes(broker, ctx, changes, req.validate_only).await;
    IncrementalAlterConfigsResponse::default().with_responses(
        results
            .into_iter()
            .map(|(t, name, err)| {
                let r = IncResponse::default()
                    .with_resource_type(t)
                    .with_resource_name(str_bytes(name));
                match err {
                    None => r,
                    Some((code, msg)) => r
                        .with_error_code(code.code())
                        .with_error_message(Some(str_bytes(msg))),
                }
            })
            .collect(),
    )
}
