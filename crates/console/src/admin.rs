//! The REST API's writes. Each builds the Kafka request a client would send and runs it
//! through the broker's handlers, so validation, authorization, metadata commits and acks=all
//! durability are exactly the Kafka path's.

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};
use strata_broker::broker::Broker;
use strata_protocol::ErrorCode;

use crate::api::{
    describe_configs, kafka, no_topic, only, topic, topic_name, ApiAnswer, ApiError, ApiResult,
    Query,
};

/// A JSON request body as an object, or 400.
pub fn json_body(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad(
            "invalid_json",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad(
            "invalid_json",
            format!(
                "the body is not valid JSON (line {}, column {}): {e}",
                e.line(),
                e.column()
            ),
        )),
    }
}

/// Takes the fields a body may have; refuses others.
struct Fields(serde_json::Map<String, Value>);

impl Fields {
    fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name).filter(|v| !v.is_null())
    }

    fn int(&mut self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::bad(
                    "invalid_field",
                    format!("{name} must be an integer from {min} to {max}"),
                )),
            },
        }
    }

    fn string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::bad(
                "invalid_field",
                format!("{name} must be a string"),
            )),
        }
    }

    fn bool(&mut self, name: &str) -> Result<bool, ApiError> {
        match self.take(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(_) => Err(ApiError::bad(
                "invalid_field",
                format!("{name} must be true or false"),
            )),
        }
    }

    fn string_map(&mut self, name: &str) -> Result<Vec<(String, String)>, ApiError> {
        match self.take(name) {
            None => Ok(Vec::new()),
            Some(Value::Object(m)) => m
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    Value::Number(n) => Ok((k, n.to_string())),
                    Value::Bool(b) => Ok((k, b.to_string())),
                    _ => Err(ApiError::bad(
                        "invalid_field",
                        format!("{name}.{k} must be a string"),
                    )),
                })
                .collect(),
            Some(_) => Err(ApiError::bad(
                "invalid_field",
                format!("{name} must be an object of strings"),
            )),
        }
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            let names: Vec<&String> = self.0.keys().collect();
            Err(ApiError::bad(
                "unknown_field",
                format!("unknown fields: {names:?}"),
            ))
        }
    }
}

fn first_error(code: i16, message: Option<&StrBytes>) -> Result<(), ApiError> {
    if code == 0 {
        return Ok(());
    }
    let code = ErrorCode::try_from_code(code).unwrap_or(ErrorCode::UnknownServerError);
    Err(ApiError::kafka(code, message.map(|m| m.to_string())))
}

pub async fn create_topic(broker: &Arc<Broker>, peer: SocketAddr, body: &[u8]) -> ApiResult {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
    let mut f = Fields(json_body(body)?);
    let name = topic_name(
        &f.string("name")?
            .ok_or_else(|| ApiError::bad("invalid_field", "name is required"))?,
    )?;
    let partitions = f.int("partitions", 1, 100_000)?.unwrap_or(-1) as i32;
    let rf = f
        .int("replication_factor", 1, i16::MAX as i64)?
        .unwrap_or(-1) as i16;
    let configs = f.string_map("configs")?;
    let validate_only = f.bool("validate_only")?;
    f.finish()?;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.clone())))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
            .with_configs(
                configs
                    .into_iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k))
                            .with_value(Some(StrBytes::from_string(v)))
                    })
                    .collect(),
            )])
        .with_timeout_ms(30_000)
        .with_validate_only(validate_only);
    let resp = kafka!(broker, peer, CreateTopics, 7, req);
    let result = only(&resp.topics)?;
    first_error(result.error_code, result.error_message.as_ref())?;
    if validate_only {
        return Ok(ApiAnswer::ok(json!({"name": name, "validate_only": true})));
    }
    let mut answer = topic(broker, &name, Query::empty())?;
    answer.status = 201;
    answer.location = Some(format!("/api/v1/topics/{name}"));
    Ok(answer)
}

pub async fn delete_topic(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    raw: &str,
    q: Query,
) -> ApiResult {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::{DeleteTopicsRequest, TopicName};
    let name = topic_name(raw)?;
    q.finish()?;
    if strata_protocol::topic::is_internal(&name) {
        return Err(ApiError::bad(
            "internal_topic",
            format!("{name} is an internal topic and cannot be deleted"),
        ));
    }
    if broker.image().topic_by_name(&name).is_none() {
        return Err(no_topic(&name));
    }
    let req = DeleteTopicsRequest::default()
        .with_topics(vec![
            DeleteTopicState::default().with_name(Some(TopicName(StrBytes::from_string(name))))
        ])
        .with_timeout_ms(30_000);
    let resp = kafka!(broker, peer, DeleteTopics, 6, req);
    let result = only(&resp.responses)?;
    first_error(result.error_code, result.error_message.as_ref())?;
    Ok(ApiAnswer {
        status: 204,
        body: Value::Null,
        location: None,
    })
}

pub async fn alter_topic_configs(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    raw: &str,
    q: Query,
    body: &[u8],
) -> ApiResult {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    let name = topic_name(raw)?;
    q.finish()?;
    let mut f = Fields(json_body(body)?);
    let set = f.string_map("set")?;
    let delete: Vec<String> = match f.take("delete") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad("invalid_field", "delete must be an array of config names")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::bad(
                "invalid_field",
                "delete must be an array of config names",
            ))
        }
    };
    let validate_only = f.bool("validate_only")?;
    f.finish()?;
    if set.is_empty() && delete.is_empty() {
        return Err(ApiError::bad(
            "invalid_field",
            "nothing to change: give set and/or delete",
        ));
    }
    if broker.image().topic_by_name(&name).is_none() {
        return Err(no_topic(&name));
    }
    let mut configs: Vec<AlterableConfig> = set
        .into_iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(v)))
        })
        .collect();
    configs.extend(delete.into_iter().map(|k| {
        AlterableConfig::default()
            .with_name(StrBytes::from_string(k))
            .with_config_operation(1)
    }));
    let req = IncrementalAlterConfigsRequest::default()
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(name.clone()))
            .with_configs(configs)])
        .with_validate_only(validate_only);
    let resp = kafka!(broker, peer, IncrementalAlterConfigs, 1, req);
    let result = only(&resp.responses)?;
    first_error(result.error_code, result.error_message.as_ref())?;
    describe_configs(broker, peer, 2, name, false).await
}

pub async fn add_partitions(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    raw: &str,
    q: Query,
    body: &[u8],
) -> ApiResult {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::{CreatePartitionsRequest, TopicName};
    let name = topic_name(raw)?;
    q.finish()?;
    let mut f = Fields(json_body(body)?);
    let count = f.int("count", 1, 100_000)?.ok_or_else(|| {
        ApiError::bad(
            "invalid_field",
            "count (the new total number of partitions) is required",
        )
    })?;
    f.finish()?;
    if broker.image().topic_by_name(&name).is_none() {
        return Err(no_topic(&name));
    }
    let req = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.clone())))
            .with_count(count as i32)
            .with_assignments(None)])
        .with_timeout_ms(30_000);
    let resp = kafka!(broker, peer, CreatePartitions, 3, req);
    let result = only(&resp.results)?;
    first_error(result.error_code, result.error_message.as_ref())?;
    topic(broker, &name, Query::empty())
}

static ROUND_ROBIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn decode_field(
    name: &str,
    text: Option<String>,
    base64: bool,
) -> Result<Option<bytes::Bytes>, ApiError> {
    use base64::Engine as _;
    match text {
        None => Ok(None),
        Some(t) if base64 => base64::engine::general_purpose::STANDARD
            .decode(t.as_bytes())
            .map(|b| Some(bytes::Bytes::from(b)))
            .map_err(|e| {
                ApiError::bad("invalid_field", format!("{name} is not valid base64: {e}"))
            }),
        Some(t) => Ok(Some(bytes::Bytes::from(t.into_bytes()))),
    }
}

pub async fn produce(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    raw: &str,
    q: Query,
    body: &[u8],
) -> ApiResult {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    let name = topic_name(raw)?;
    q.finish()?;
    let mut f = Fields(json_body(body)?);
    let encoding = f.string("encoding")?.unwrap_or_else(|| "utf8".into());
    let base64 = match encoding.as_str() {
        "utf8" => false,
        "base64" => true,
        other => {
            return Err(ApiError::bad(
                "invalid_field",
                format!("encoding {other:?}: expected utf8 or base64"),
            ))
        }
    };
    let partition = f.int("partition", 0, i32::MAX as i64)?;
    let key_text = f.string("key")?;
    let value_text = f.string("value")?;
    let timestamp = f.int("timestamp", 0, i64::MAX)?;
    let headers_raw = f.take("headers");
    f.finish()?;
    let key = decode_field("key", key_text, base64)?;
    let value = decode_field("value", value_text, base64)?;
    let mut headers: Vec<(String, Option<bytes::Bytes>)> = Vec::new();
    match headers_raw {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                let mut h = match item {
                    Value::Object(m) => Fields(m),
                    _ => {
                        return Err(ApiError::bad(
                            "invalid_field",
                            "each header is {\"key\": ..., \"value\": ...}",
                        ))
                    }
                };
                let k = h
                    .string("key")?
                    .ok_or_else(|| ApiError::bad("invalid_field", "a header needs a key"))?;
                let v = decode_field("header value", h.string("value")?, base64)?;
                h.finish()?;
                headers.push((k, v));
            }
        }
        Some(_) => return Err(ApiError::bad("invalid_field", "headers must be an array")),
    }
    let image = broker.image();
    let t = image.topic_by_name(&name).ok_or_else(|| no_topic(&name))?;
    let count = t.partitions.len() as i32;
    let partition = match (partition, &key) {
        (Some(p), _) if p as i32 >= count => {
            return Err(ApiError::bad(
                "invalid_partition",
                format!("{name} has partitions 0 to {}", count - 1),
            ))
        }
        (Some(p), _) => p as i32,
        (None, Some(k)) => strata_client::partitioner::partition_for_key(k, count),
        (None, None) => {
            (ROUND_ROBIN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % count.max(1) as usize)
                as i32
        }
    };
    let timestamp = timestamp.unwrap_or_else(strata_broker::partition::now_ms);
    let mut batch = strata_client::records::BatchBuilder::new(1024);
    batch.push(&strata_client::records::RecordRef {
        key: key.as_deref(),
        value: value.as_deref(),
        timestamp,
        headers: &headers,
    });
    let records = batch
        .finish(kafka_protocol::records::Compression::None)
        .map_err(|e| ApiError::bad("invalid_record", e.to_string()))?;
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(name.clone())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let resp = kafka!(broker, peer, Produce, 9, req);
    let p = only(&only(&resp.responses)?.partition_responses)?;
    first_error(p.error_code, p.error_message.as_ref())?;
    Ok(ApiAnswer {
        status: 201,
        body: json!({
            "topic": name,
            "partition": partition,
            "offset": p.base_offset,
            "timestamp": if p.log_append_time_ms >= 0 { p.log_append_time_ms } else { timestamp },
        }),
        location: Some(format!(
            "/api/v1/topics/{name}/partitions/{partition}/messages/{}",
            p.base_offset
        )),
    })
}
