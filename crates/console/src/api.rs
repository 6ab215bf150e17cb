//! The REST API under `/api/v1`, in JSON: topics, partitions, configs, messages, groups, lag,
//! brokers and the cluster. Described by `openapi.json` (served at `/api/openapi.json`).
//!
//! Reads come from the state the broker keeps (the metadata image, the partitions, the group
//! shards through `strata_broker::groupview`). Anything Kafka already defines (configs, and
//! the writes) goes through the Kafka request handlers in process, so validation, errors and
//! durability are the Kafka path's. Client mistakes answer 4xx with
//! `{"error", "message", "kafka_error"}`, never 5xx.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::messages::{DescribeConfigsRequest, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};
use strata_broker::auth::{authorize, authorize_quiet, ConnectionContext, Operation, Resource};
use strata_broker::broker::Broker;
use strata_broker::groupview::{self, GroupView};
use strata_broker::handlers::{self, Reply};
use strata_coordinator::lag::{LagStatus, PartitionLag};
use strata_protocol::request::Request;
use strata_protocol::ErrorCode;

use crate::history::History;
use crate::messages::{self, Encoding, ReadParams, Start};

/// An API answer: status and JSON body.
pub struct ApiAnswer {
    pub status: u16,
    pub body: Value,
    pub location: Option<String>,
}

impl ApiAnswer {
    pub fn ok(body: Value) -> Self {
        ApiAnswer {
            status: 200,
            body,
            location: None,
        }
    }
}

/// A refused request: HTTP status, a stable code, a message saying what to do, and the
/// Kafka error behind it, if any.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub kafka_error: Option<ErrorCode>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            kafka_error: None,
        }
    }

    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(404, code, message)
    }

    /// A Kafka error code as HTTP: the client's mistakes are 4xx, the broker's state 503.
    pub fn kafka(code: ErrorCode, message: Option<String>) -> Self {
        use ErrorCode as E;
        let status = match code {
            E::InvalidTopicException
            | E::InvalidPartitions
            | E::InvalidReplicationFactor
            | E::InvalidConfig
            | E::InvalidRequest
            | E::InvalidRecord
            | E::CorruptMessage
            | E::InvalidTimestamp
            | E::PolicyViolation
            | E::InvalidRequiredAcks
            | E::InvalidReplicaAssignment => 400,
            E::UnknownTopicOrPartition | E::GroupIdNotFound | E::UnknownTopicId => 404,
            E::TopicAlreadyExists | E::NonEmptyGroup => 409,
            E::MessageTooLarge | E::RecordListTooLarge => 413,
            E::TopicAuthorizationFailed
            | E::GroupAuthorizationFailed
            | E::ClusterAuthorizationFailed
            | E::TransactionalIdAuthorizationFailed => 403,
            E::NotEnoughReplicas
            | E::NotEnoughReplicasAfterAppend
            | E::RequestTimedOut
            | E::KafkaStorageError
            | E::NotCoordinator
            | E::CoordinatorLoadInProgress
            | E::NotController
            | E::LeaderNotAvailable
            | E::NotLeaderOrFollower => 503,
            _ => 500,
        };
        if status == 500 {
            tracing::error!(?code, "the console has no HTTP status for this Kafka error");
        }
        ApiError {
            status,
            code: "kafka_error",
            message: message.unwrap_or_else(|| format!("{code:?}")),
            kafka_error: Some(code),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "error": self.code,
            "message": self.message,
            "kafka_error": self.kafka_error.map(kafka_error_name),
        })
    }
}

/// Kafka's name of an error (`UNKNOWN_TOPIC_OR_PARTITION`).
fn kafka_error_name(code: ErrorCode) -> String {
    let camel = format!("{code:?}");
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

pub type ApiResult = Result<ApiAnswer, ApiError>;

/// The query string, checked parameter by parameter; unknown ones are refused so that a typo
/// never silently changes a read.
pub struct Query {
    pairs: Vec<(String, String)>,
    used: Vec<String>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = percent_decode(k, true).ok_or_else(|| {
                ApiError::bad(
                    "invalid_query",
                    "the query string is not valid percent-encoded UTF-8",
                )
            })?;
            let v = percent_decode(v, true).ok_or_else(|| {
                ApiError::bad(
                    "invalid_query",
                    "the query string is not valid percent-encoded UTF-8",
                )
            })?;
            pairs.push((k, v));
        }
        Ok(Query {
            pairs,
            used: Vec::new(),
        })
    }

    /// No parameters (a page calling the API for its defaults).
    pub fn empty() -> Query {
        Query::from_pairs(Vec::new())
    }

    /// A query built by the console's pages from parameters they chose.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Query {
        Query {
            pairs,
            used: Vec::new(),
        }
    }

    pub fn get(&mut self, name: &str) -> Option<String> {
        self.used.push(name.to_string());
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// An integer parameter within `min..=max`, or its default.
    pub fn int(&mut self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad(
                    "invalid_parameter",
                    format!("{name}={v:?}: expected an integer from {min} to {max}"),
                )),
            },
        }
    }

    pub fn one_of(
        &mut self,
        name: &str,
        default: &str,
        allowed: &[&str],
    ) -> Result<String, ApiError> {
        let v = self.get(name).unwrap_or_else(|| default.to_string());
        if allowed.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err(ApiError::bad(
                "invalid_parameter",
                format!("{name}={v:?}: expected one of {}", allowed.join(", ")),
            ))
        }
    }

    /// Refuses parameters no one asked for.
    pub fn finish(self) -> Result<(), ApiError> {
        let unknown: Vec<&str> = self
            .pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !self.used.iter().any(|u| u == k))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(ApiError::bad(
                "unknown_parameter",
                format!("unknown query parameters: {}", unknown.join(", ")),
            ))
        }
    }
}

/// Percent-decoding (and `+` as space in query strings); `None` for bad escapes or UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A request context for Kafka handlers called by the console: the caller's principal
/// (`crate::session`), so ACLs apply to console requests as to a client's.
pub fn context(broker: &Broker, peer: SocketAddr) -> ConnectionContext {
    ConnectionContext {
        peer,
        listener: "CONSOLE".into(),
        principal: crate::session::caller().0,
        connection_id: broker.new_connection_id(),
        authorizer: broker.authorizer.clone(),
        api: Default::default(),
    }
}

/// The context of the request being handled.
fn caller_context(broker: &Broker) -> ConnectionContext {
    context(broker, crate::session::caller().1)
}

/// Refuses `op` on a topic as Kafka does (403 TOPIC_AUTHORIZATION_FAILED), with an audit line.
fn allow_topic(broker: &Broker, op: Operation, topic: &str) -> Result<(), ApiError> {
    if authorize(&caller_context(broker), op, Resource::Topic(topic)) {
        Ok(())
    } else {
        Err(ApiError::kafka(
            ErrorCode::TopicAuthorizationFailed,
            Some(format!("not allowed to {op:?} topic {topic:?}")),
        ))
    }
}

/// Refuses `op` on a group (403 GROUP_AUTHORIZATION_FAILED).
fn allow_group(broker: &Broker, op: Operation, group: &str) -> Result<(), ApiError> {
    if authorize(&caller_context(broker), op, Resource::Group(group)) {
        Ok(())
    } else {
        Err(ApiError::kafka(
            ErrorCode::GroupAuthorizationFailed,
            Some(format!("not allowed to {op:?} group {group:?}")),
        ))
    }
}

/// Runs a Kafka request through the broker's handlers and waits for its response.
pub async fn kafka_call(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    api_key: ApiKey,
    version: i16,
    body: RequestKind,
) -> Result<ResponseKind, ApiError> {
    let request = Request {
        header: RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_client_id(Some(StrBytes::from_static_str("strata-console"))),
        api_key,
        body,
    };
    let ctx = context(broker, peer);
    match handlers::handle(broker, &ctx, request).await {
        Reply::Now(body) => Ok(*body),
        Reply::Later(fut) => {
            match tokio::time::timeout(std::time::Duration::from_secs(30), fut).await {
                Ok(body) => Ok(body),
                Err(_) => Err(ApiError::kafka(
                    ErrorCode::RequestTimedOut,
                    Some("the broker did not answer within 30 s".into()),
                )),
            }
        }
        Reply::None => Err(ApiError::new(
            500,
            "internal",
            "the handler sent no response",
        )),
    }
}

/// Sends `$req` as the Kafka request `$kind` (version `$version`) through the broker's
/// handlers and evaluates to its response body, returning early on an error.
macro_rules! kafka {
    ($broker:expr, $peer:expr, $kind:ident, $version:expr, $req:expr) => {
        match $crate::api::kafka_call(
            $broker,
            $peer,
            kafka_protocol::messages::ApiKey::$kind,
            $version,
            kafka_protocol::messages::RequestKind::$kind($req),
        )
        .await?
        {
            kafka_protocol::messages::ResponseKind::$kind(resp) => resp,
            _ => {
                return Err($crate::api::ApiError::new(
                    500,
                    "internal",
                    "unexpected response kind",
                ))
            }
        }
    };
}
pub(crate) use kafka;

/// The one result a single-resource request answers.
pub fn only<T>(results: &[T]) -> Result<&T, ApiError> {
    results
        .first()
        .ok_or_else(|| ApiError::new(500, "internal", "the broker answered no result"))
}

/// A topic name from the path: Kafka's rules, else 400.
pub fn topic_name(raw: &str) -> Result<String, ApiError> {
    strata_protocol::topic::validate_topic_name(raw)
        .map_err(|e| ApiError::bad("invalid_topic", e.to_string()))?;
    Ok(raw.to_string())
}

fn partition_number(raw: &str) -> Result<i32, ApiError> {
    raw.parse::<i32>().ok().filter(|p| *p >= 0).ok_or_else(|| {
        ApiError::bad(
            "invalid_partition",
            format!("partition {raw:?} is not an integer from 0 to 2147483647"),
        )
    })
}

fn group_name(raw: &str) -> Result<String, ApiError> {
    if raw.is_empty() || raw.len() > 1024 {
        return Err(ApiError::bad(
            "invalid_group",
            "a group id is 1 to 1024 bytes",
        ));
    }
    Ok(raw.to_string())
}

// ---- cluster and brokers ----------------------------------------------------------------

fn broker_json(broker: &Broker) -> Value {
    let advertised: Vec<Value> = broker
        .config
        .advertised_listeners
        .iter()
        .filter(|l| !broker.config.is_controller_listener(&l.name))
        .map(|l| json!({"name": l.name, "host": l.host, "port": l.port}))
        .collect();
    json!({
        "id": broker.node_id(),
        "rack": broker.config.value("broker.rack"),
        "listeners": advertised,
        "is_controller": true,
    })
}

pub fn cluster(broker: &Broker, q: Query) -> ApiResult {
    q.finish()?;
    let image = broker.image();
    let internal = image
        .topics()
        .filter(|t| strata_protocol::topic::is_internal(&t.name))
        .count();
    Ok(ApiAnswer::ok(json!({
        "cluster_id": broker.cluster_id(),
        "controller_id": broker.node_id(),
        "brokers": [broker_json(broker)],
        "topics": image.topic_count() - internal,
        "quorum": Value::Null,
    })))
}

pub fn brokers(broker: &Broker, q: Query) -> ApiResult {
    q.finish()?;
    Ok(ApiAnswer::ok(json!([broker_json(broker)])))
}

fn broker_id(broker: &Broker, raw: &str) -> Result<i32, ApiError> {
    let id = raw.parse::<i32>().ok().filter(|i| *i >= 0).ok_or_else(|| {
        ApiError::bad(
            "invalid_broker",
            format!("broker id {raw:?} is not an integer from 0 to 2147483647"),
        )
    })?;
    if id != broker.node_id() {
        return Err(ApiError::not_found(
            "broker_not_found",
            format!("no broker {id} in this cluster"),
        ));
    }
    Ok(id)
}

pub fn one_broker(broker: &Broker, raw: &str, q: Query) -> ApiResult {
    broker_id(broker, raw)?;
    q.finish()?;
    Ok(ApiAnswer::ok(broker_json(broker)))
}

/// DescribeConfigs of one resource (2 topic, 4 broker).
pub async fn describe_configs(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    resource_type: i8,
    name: String,
    synonyms: bool,
) -> ApiResult {
    let req = DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name))
            .with_configuration_keys(None)])
        .with_include_synonyms(synonyms)
        .with_include_documentation(true);
    let resp = kafka!(broker, peer, DescribeConfigs, 4, req);
    let result = only(&resp.results)?;
    if result.error_code != 0 {
        let code =
            ErrorCode::try_from_code(result.error_code).unwrap_or(ErrorCode::UnknownServerError);
        return Err(ApiError::kafka(
            code,
            result.error_message.as_ref().map(|m| m.to_string()),
        ));
    }
    let entries: Vec<Value> = result
        .configs
        .iter()
        .map(|c| {
            json!({
                "name": c.name.to_string(),
                "value": c.value.as_ref().map(|v| v.to_string()),
                "source": strata_client::admin::config_source_name(c.config_source),
                "read_only": c.read_only,
                "sensitive": c.is_sensitive,
                "documentation": c.documentation.as_ref().map(|d| d.to_string()),
                "synonyms": c.synonyms.iter().map(|s| json!({
                    "name": s.name.to_string(),
                    "value": s.value.as_ref().map(|v| v.to_string()),
                    "source": strata_client::admin::config_source_name(s.source),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(ApiAnswer::ok(Value::Array(entries)))
}

pub async fn broker_configs(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    raw: &str,
    mut q: Query,
) -> ApiResult {
    let id = broker_id(broker, raw)?;
    let synonyms = q.one_of("synonyms", "false", &["true", "false"])? == "true";
    q.finish()?;
    describe_configs(broker, peer, 4, id.to_string(), synonyms).await
}

pub async fn topic_configs(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    raw: &str,
    mut q: Query,
) -> ApiResult {
    let topic = topic_name(raw)?;
    let synonyms = q.one_of("synonyms", "false", &["true", "false"])? == "true";
    q.finish()?;
    if broker.image().topic_by_name(&topic).is_none() {
        return Err(no_topic(&topic));
    }
    describe_configs(broker, peer, 2, topic, synonyms).await
}

// ---- topics and partitions ---------------------------------------------------------------

pub fn no_topic(topic: &str) -> ApiError {
    let mut e = ApiError::not_found("topic_not_found", format!("no topic {topic:?}"));
    e.kafka_error = Some(ErrorCode::UnknownTopicOrPartition);
    e
}

/// A partition's state as the console shows it.
fn partition_json(
    broker: &Broker,
    topic: &strata_quorum::TopicImage,
    p: &strata_quorum::PartitionImage,
) -> Value {
    let live = broker.partitions.get(&topic.topic_id, p.partition);
    let (start, hw, end, size) = match &live {
        Some(l) => (
            Some(l.log_start_offset()),
            Some(l.high_watermark()),
            Some(l.log_end_offset()),
            Some(l.size_bytes()),
        ),
        None => (None, None, None, None),
    };
    json!({
        "partition": p.partition,
        "leader": p.leader,
        "leader_epoch": p.leader_epoch,
        "replicas": p.replicas,
        "isr": p.isr,
        "offline_replicas": Vec::<i32>::new(),
        "log_start_offset": start,
        "high_watermark": hw,
        "log_end_offset": end,
        "size_bytes": size,
        "messages": start.zip(hw).map(|(s, h)| (h - s).max(0)),
    })
}

fn topic_summary(broker: &Broker, t: &strata_quorum::TopicImage) -> Value {
    let mut messages = 0i64;
    let mut size = 0u64;
    for p in t.partitions.keys() {
        if let Some(l) = broker.partitions.get(&t.topic_id, *p) {
            messages += (l.high_watermark() - l.log_start_offset()).max(0);
            size += l.size_bytes();
        }
    }
    let rf = t
        .partitions
        .values()
        .map(|p| p.replicas.len())
        .max()
        .unwrap_or(0);
    json!({
        "name": t.name,
        "topic_id": t.topic_id.to_string(),
        "internal": strata_protocol::topic::is_internal(&t.name),
        "partitions": t.partitions.len(),
        "replication_factor": rf,
        "messages": messages,
        "size_bytes": size,
    })
}

pub fn topics(broker: &Broker, mut q: Query) -> ApiResult {
    let needle = q.get("q").unwrap_or_default();
    if needle.len() > 249 {
        return Err(ApiError::bad(
            "invalid_parameter",
            "q is at most 249 characters",
        ));
    }
    let internal = q.one_of("internal", "false", &["true", "false"])? == "true";
    let sort = q.one_of("sort", "name", &["name", "size", "messages"])?;
    let page = q.int("page", 1, 1, 1_000_000)? as usize;
    let page_size = q.int("page_size", 100, 1, 1000)? as usize;
    q.finish()?;
    let image = broker.image();
    let ctx = caller_context(broker);
    let mut rows: Vec<Value> = image
        .topics()
        .filter(|t| internal || !strata_protocol::topic::is_internal(&t.name))
        .filter(|t| t.name.contains(&needle))
        .filter(|t| authorize_quiet(&ctx, Operation::Describe, Resource::Topic(&t.name)))
        .map(|t| topic_summary(broker, t))
        .collect();
    match sort.as_str() {
        "size" => rows.sort_by_key(|r| std::cmp::Reverse(r["size_bytes"].as_u64())),
        "messages" => rows.sort_by_key(|r| std::cmp::Reverse(r["messages"].as_i64())),
        _ => rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str())),
    }
    let total = rows.len();
    let items: Vec<Value> = rows
        .into_iter()
        .skip((page - 1).saturating_mul(page_size))
        .take(page_size)
        .collect();
    Ok(ApiAnswer::ok(json!({
        "topics": items,
        "total": total,
        "page": page,
        "page_size": page_size,
    })))
}

pub fn topic(broker: &Broker, raw: &str, q: Query) -> ApiResult {
    let name = topic_name(raw)?;
    q.finish()?;
    allow_topic(broker, Operation::Describe, &name)?;
    let image = broker.image();
    let t = image.topic_by_name(&name).ok_or_else(|| no_topic(&name))?;
    let mut detail = topic_summary(broker, t);
    detail["partition_details"] = Value::Array(
        t.partitions
            .values()
            .map(|p| partition_json(broker, t, p))
            .collect(),
    );
    detail["configs"] = json!(t.configs);
    Ok(ApiAnswer::ok(detail))
}

pub fn partitions(broker: &Broker, raw: &str, partition: Option<&str>, q: Query) -> ApiResult {
    let name = topic_name(raw)?;
    let partition = partition.map(partition_number).transpose()?;
    q.finish()?;
    allow_topic(broker, Operation::Describe, &name)?;
    let image = broker.image();
    let t = image.topic_by_name(&name).ok_or_else(|| no_topic(&name))?;
    match partition {
        None => Ok(ApiAnswer::ok(Value::Array(
            t.partitions
                .values()
                .map(|p| partition_json(broker, t, p))
                .collect(),
        ))),
        Some(n) => {
            let p = t.partitions.get(&n).ok_or_else(|| no_partition(&name, n))?;
            Ok(ApiAnswer::ok(partition_json(broker, t, p)))
        }
    }
}

fn no_partition(topic: &str, p: i32) -> ApiError {
    let mut e = ApiError::not_found(
        "partition_not_found",
        format!("topic {topic:?} has no partition {p}"),
    );
    e.kafka_error = Some(ErrorCode::UnknownTopicOrPartition);
    e
}

// ---- messages ----------------------------------------------------------------------------

/// Milliseconds since the epoch, or an RFC 3339 UTC time (`2026-12-05T10:00:00Z`, optional
/// fraction).
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return (ms >= 0).then_some(ms);
    }
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.split('-');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (time, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = time.split(':');
    let (h, mi, se): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&mo)
        || !(1..=31).contains(&da)
        || h > 23
        || mi > 59
        || se > 60
        || y < 1970
    {
        return None;
    }
    let ms: i64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(3).collect();
        if !frac.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32)
    };
    // Days from the civil date (proleptic Gregorian).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let m2 = (mo + 9) % 12;
    let doy = (153 * m2 + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + se * 1000 + ms)
}

pub async fn messages(broker: &Arc<Broker>, raw: &str, mut q: Query) -> ApiResult {
    let name = topic_name(raw)?;
    let partition_raw = q.get("partition").unwrap_or_else(|| "0".into());
    let from = q.one_of(
        "from",
        "newest",
        &["newest", "oldest", "offset", "timestamp"],
    )?;
    let start = match from.as_str() {
        "oldest" => Start::Oldest,
        "offset" => Start::Offset(q.int("offset", -1, 0, i64::MAX)?),
        "timestamp" => {
            let raw = q.get("timestamp").unwrap_or_default();
            Start::Timestamp(parse_time(&raw).ok_or_else(|| {
                ApiError::bad("invalid_parameter", format!("timestamp={raw:?}: expected milliseconds since the epoch or an RFC 3339 UTC time"))
            })?)
        }
        _ => Start::Newest,
    };
    if matches!(start, Start::Offset(-1)) {
        return Err(ApiError::bad(
            "invalid_parameter",
            "from=offset needs offset=N",
        ));
    }
    let limit = q.int("limit", 50, 1, 500)? as usize;
    let max_bytes = q.int("max_bytes", 1 << 20, 1, 8 << 20)? as usize;
    let filter = q.get("filter");
    if filter.as_ref().is_some_and(|f| f.len() > 1024) {
        return Err(ApiError::bad(
            "invalid_parameter",
            "filter is at most 1024 bytes",
        ));
    }
    let encoding =
        Encoding::parse(&q.one_of("encoding", "auto", &["auto", "utf8", "base64", "hex"])?)
            .unwrap_or(Encoding::Auto);
    let scan_max_bytes = q.int("scan_max_bytes", 32 << 20, 1, 256 << 20)? as usize;
    q.finish()?;
    allow_topic(broker, Operation::Read, &name)?;
    let image = broker.image();
    let t = image.topic_by_name(&name).ok_or_else(|| no_topic(&name))?;
    let selected: Vec<i32> = if partition_raw == "all" {
        if t.partitions.len() > 64 {
            return Err(ApiError::bad(
                "too_many_partitions",
                "partition=all reads topics of up to 64 partitions; name one partition",
            ));
        }
        t.partitions.keys().copied().collect()
    } else {
        let p = partition_number(&partition_raw)?;
        if !t.partitions.contains_key(&p) {
            return Err(no_partition(&name, p));
        }
        vec![p]
    };
    let mut live = Vec::new();
    for p in &selected {
        let l = broker.partitions.get(&t.topic_id, *p).ok_or_else(|| {
            ApiError::kafka(
                ErrorCode::NotLeaderOrFollower,
                Some(format!("partition {p} is not served by this broker")),
            )
        })?;
        let first = messages::first_offset(&l, start, limit).map_err(|(log_start, hw)| {
            let mut e = ApiError::bad(
                "offset_out_of_range",
                format!("offset outside partition {p}'s range {log_start}..={hw} (log start offset to high watermark)"),
            );
            e.kafka_error = Some(ErrorCode::OffsetOutOfRange);
            e
        })?;
        live.push((l, first));
    }
    let params = ReadParams {
        limit,
        max_bytes,
        filter: filter.map(String::into_bytes),
        encoding,
        scan_max_bytes: scan_max_bytes / live.len().max(1),
    };
    let newest = start == Start::Newest;
    let page = tokio::task::spawn_blocking(move || {
        let pages: Vec<_> = live
            .iter()
            .map(|(l, first)| (l.index, messages::read_page(l, *first, &params)))
            .collect();
        (pages, params)
    })
    .await
    .map_err(|_| ApiError::new(500, "internal", "the read failed"))?;
    let (pages, params) = page;
    let single = pages.len() == 1;
    let mut all: Vec<messages::Message> = Vec::new();
    let mut partitions_json = Vec::new();
    let mut scanned = 0usize;
    let mut stop = messages::Stop::End;
    for (p, page) in pages {
        scanned += page.scanned_bytes;
        if page.stop != messages::Stop::End {
            stop = page.stop;
        }
        partitions_json.push(json!({
            "partition": p,
            "next_offset": page.next_offset,
            "log_start_offset": page.log_start_offset,
            "high_watermark": page.high_watermark,
            "stop": page.stop.as_str(),
        }));
        all.extend(page.messages);
    }
    if !single {
        all.sort_by_key(|m| (m.timestamp, m.partition, m.offset));
        if all.len() > params.limit {
            if newest {
                all.drain(..all.len() - params.limit);
            } else {
                all.truncate(params.limit);
            }
            stop = messages::Stop::Limit;
        }
    }
    let first = &partitions_json[0];
    Ok(ApiAnswer::ok(json!({
        "topic": name,
        "messages": all.iter().map(|m| m.to_json(params.encoding, Some(messages::PAGE_VALUE_BYTES))).collect::<Vec<_>>(),
        "next_offset": if single { first["next_offset"].clone() } else { Value::Null },
        "log_start_offset": if single { first["log_start_offset"].clone() } else { Value::Null },
        "high_watermark": if single { first["high_watermark"].clone() } else { Value::Null },
        "scanned_bytes": scanned,
        "stop": stop.as_str(),
        "partitions": partitions_json,
    })))
}

pub async fn one_message(
    broker: &Arc<Broker>,
    raw: &str,
    p: &str,
    offset: &str,
    mut q: Query,
) -> ApiResult {
    let name = topic_name(raw)?;
    let p = partition_number(p)?;
    let offset = offset
        .parse::<i64>()
        .ok()
        .filter(|o| *o >= 0)
        .ok_or_else(|| {
            ApiError::bad(
                "invalid_offset",
                format!("offset {offset:?} is not an integer from 0 to 2^63-1"),
            )
        })?;
    let encoding =
        Encoding::parse(&q.one_of("encoding", "auto", &["auto", "utf8", "base64", "hex"])?)
            .unwrap_or(Encoding::Auto);
    q.finish()?;
    allow_topic(broker, Operation::Read, &name)?;
    let image = broker.image();
    let t = image.topic_by_name(&name).ok_or_else(|| no_topic(&name))?;
    if !t.partitions.contains_key(&p) {
        return Err(no_partition(&name, p));
    }
    let l = broker
        .partitions
        .get(&t.topic_id, p)
        .ok_or_else(|| ApiError::kafka(ErrorCode::NotLeaderOrFollower, None))?;
    let params = ReadParams {
        limit: 1,
        max_bytes: usize::MAX,
        filter: None,
        encoding,
        scan_max_bytes: 64 << 20,
    };
    let page = tokio::task::spawn_blocking(move || messages::read_page(&l, offset, &params))
        .await
        .map_err(|_| ApiError::new(500, "internal", "the read failed"))?;
    match page.messages.first() {
        Some(m) if m.offset == offset => Ok(ApiAnswer::ok(m.to_json(encoding, None))),
        _ => Err(ApiError::not_found(
            "message_not_found",
            format!("no message at offset {offset} of {name}-{p} (log start {}, high watermark {}; compaction may have removed it)", page.log_start_offset, page.high_watermark),
        )),
    }
}

// ---- groups and lag ----------------------------------------------------------------------

fn group_summary(g: &GroupView) -> Value {
    json!({
        "group": g.group,
        "state": g.state,
        "protocol": g.protocol,
        "protocol_type": g.protocol_type,
        "members": g.members.len(),
        "status": g.lag.status.as_str(),
        "total_lag": g.offsets.iter().filter_map(|o| o.lag).sum::<i64>(),
    })
}

pub fn groups(broker: &Broker, mut q: Query) -> ApiResult {
    let needle = q.get("q").unwrap_or_default();
    let state = q.get("state");
    let page = q.int("page", 1, 1, 1_000_000)? as usize;
    let page_size = q.int("page_size", 100, 1, 1000)? as usize;
    q.finish()?;
    let ctx = caller_context(broker);
    let rows: Vec<Value> = groupview::all_groups(broker)
        .iter()
        .filter(|g| authorize_quiet(&ctx, Operation::Describe, Resource::Group(&g.group)))
        .filter(|g| g.group.contains(&needle))
        .filter(|g| {
            state
                .as_ref()
                .is_none_or(|s| s.eq_ignore_ascii_case(&g.state))
        })
        .map(group_summary)
        .collect();
    let total = rows.len();
    Ok(ApiAnswer::ok(json!({
        "groups": rows.into_iter().skip((page - 1).saturating_mul(page_size)).take(page_size).collect::<Vec<_>>(),
        "total": total,
        "page": page,
        "page_size": page_size,
    })))
}

fn find_group(broker: &Broker, raw: &str) -> Result<GroupView, ApiError> {
    let name = group_name(raw)?;
    allow_group(broker, Operation::Describe, &name)?;
    groupview::one_group(broker, &name).ok_or_else(|| {
        let mut e = ApiError::not_found("group_not_found", format!("no group {name:?}"));
        e.kafka_error = Some(ErrorCode::GroupIdNotFound);
        e
    })
}

pub fn group(broker: &Broker, raw: &str, q: Query) -> ApiResult {
    q.finish()?;
    let g = find_group(broker, raw)?;
    let owners = g.owners();
    let lags: BTreeMap<&(String, i32), &PartitionLag> =
        g.lag.partitions.iter().map(|(k, v)| (k, v)).collect();
    let mut detail = group_summary(&g);
    detail["generation"] = json!(g.generation);
    detail["assignor"] = json!(g.assignor);
    detail["member_details"] = Value::Array(
        g.members
            .iter()
            .map(|m| json!({
                "member_id": m.member_id,
                "instance_id": m.instance_id,
                "client_id": m.client_id,
                "host": m.host,
                "assignment": m.assignment.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
            }))
            .collect(),
    );
    detail["offsets"] = Value::Array(
        g.offsets
            .iter()
            .map(|o| {
                let key = (o.topic.clone(), o.partition);
                json!({
                    "topic": o.topic,
                    "partition": o.partition,
                    "committed_offset": o.committed,
                    "end_offset": o.end_offset,
                    "lag": o.lag,
                    "status": lags.get(&key).map(|l| l.status.as_str()),
                    "owner": owners.get(&key).map(|m| m.member_id.clone()),
                })
            })
            .collect(),
    );
    Ok(ApiAnswer::ok(detail))
}

fn entry_json(e: &Option<strata_coordinator::lag::CommitEntry>) -> Value {
    match e {
        Some(e) => json!({"offset": e.offset, "timestamp": e.commit_ms, "lag": e.lag}),
        None => Value::Null,
    }
}

/// A group's lag in the shape of Burrow's v3 lag answer.
pub fn group_lag_json(g: &GroupView, problems_only: bool, history: &History) -> Value {
    let owners = g.owners();
    let partition = |(topic, p): &(String, i32), l: &PartitionLag| {
        let owner = owners.get(&(topic.clone(), *p));
        let time_lag = history.time_lag(&g.group, topic, *p);
        json!({
            "lag_seconds": time_lag.map(|(s, _)| s),
            "lag_seconds_at": time_lag.map(|(_, at)| at),
            "topic": topic,
            "partition": p,
            "owner": owner.map(|m| m.host.clone()),
            "client_id": owner.map(|m| m.client_id.clone()),
            "status": l.status.as_str(),
            "complete": l.complete,
            "current_lag": l.current_lag,
            "committed_offset": l.committed_offset,
            "end_offset": l.end_offset,
            "start": entry_json(&l.start),
            "end": entry_json(&l.end),
        })
    };
    let maxlag = g.lag.max_lag.map(|i| {
        let (k, l) = &g.lag.partitions[i];
        partition(k, l)
    });
    let max_lag_seconds = g
        .lag
        .partitions
        .iter()
        .filter_map(|((t, p), _)| history.time_lag(&g.group, t, *p).map(|(s, _)| s))
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
    json!({
        "group": g.group,
        "status": g.lag.status.as_str(),
        "complete": g.lag.complete,
        "partition_count": g.lag.partitions.len(),
        "totallag": g.lag.total_lag,
        "max_lag_seconds": max_lag_seconds,
        "evaluated_at": strata_broker::partition::now_ms(),
        "maxlag": maxlag,
        "partitions": g.lag.partitions.iter()
            .filter(|(_, l)| !problems_only || l.status != LagStatus::Ok)
            .map(|(k, l)| partition(k, l))
            .collect::<Vec<_>>(),
    })
}

pub fn group_lag(broker: &Broker, history: &History, raw: &str, mut q: Query) -> ApiResult {
    let show = q.one_of("show", "all", &["all", "problems"])?;
    q.finish()?;
    let g = find_group(broker, raw).map_err(|mut e| {
        e.message = format!("{} (status NOTFOUND)", e.message);
        e
    })?;
    Ok(ApiAnswer::ok(group_lag_json(
        &g,
        show == "problems",
        history,
    )))
}

pub fn lag(broker: &Broker, mut q: Query) -> ApiResult {
    let min = q.one_of("status", "OK", &["OK", "WARN", "ERR"])?;
    let min = match min.as_str() {
        "WARN" => LagStatus::Warn,
        "ERR" => LagStatus::Err,
        _ => LagStatus::Ok,
    };
    q.finish()?;
    let ctx = caller_context(broker);
    let rows: Vec<Value> = groupview::all_groups(broker)
        .iter()
        .filter(|g| authorize_quiet(&ctx, Operation::Describe, Resource::Group(&g.group)))
        .filter(|g| g.lag.status >= min)
        .map(|g| {
            json!({
                "group": g.group,
                "status": g.lag.status.as_str(),
                "complete": g.lag.complete,
                "partition_count": g.lag.partitions.len(),
                "totallag": g.lag.total_lag,
            })
        })
        .collect();
    Ok(ApiAnswer::ok(Value::Array(rows)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_milliseconds_or_rfc3339() {
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("1767225600123"), Some(1_767_225_600_123));
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Some(1_767_225_600_000));
        assert_eq!(
            parse_time("2026-01-01T00:00:00.5Z"),
            Some(1_767_225_600_500)
        );
        assert_eq!(
            parse_time("2000-02-29T12:30:15.123+00:00"),
            Some(951_827_415_123)
        );
        assert_eq!(parse_time("-1"), None);
        assert_eq!(parse_time("2026-13-01T00:00:00Z"), None);
        assert_eq!(
            parse_time("2026-01-01T00:00:00"),
            None,
            "a zone is required"
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn queries_decode_and_refuse_unknown_parameters() {
        let mut q = Query::parse(Some("q=a%20b&limit=5&x=+y")).expect("parses");
        assert_eq!(q.get("q").as_deref(), Some("a b"));
        assert_eq!(q.int("limit", 1, 1, 10).expect("in range"), 5);
        let e = q.finish().expect_err("x is unknown");
        assert!(e.message.contains('x'));
        let mut q = Query::parse(Some("limit=0")).expect("parses");
        assert_eq!(
            q.int("limit", 1, 1, 10).expect_err("out of range").status,
            400
        );
        assert!(Query::parse(Some("a=%zz")).is_err());
        assert!(Query::parse(Some("a=%ff")).is_err(), "not UTF-8");
    }

    #[test]
    fn kafka_errors_map_to_http() {
        assert_eq!(
            ApiError::kafka(ErrorCode::TopicAlreadyExists, None).status,
            409
        );
        assert_eq!(
            ApiError::kafka(ErrorCode::InvalidPartitions, None).status,
            400
        );
        assert_eq!(
            ApiError::kafka(ErrorCode::UnknownTopicOrPartition, None).status,
            404
        );
        assert_eq!(
            ApiError::kafka(ErrorCode::NotEnoughReplicas, None).status,
            503
        );
        assert_eq!(
            kafka_error_name(ErrorCode::UnknownTopicOrPartition),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
    }
}
