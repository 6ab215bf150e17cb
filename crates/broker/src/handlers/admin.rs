//! CreateTopics, DeleteTopics, CreatePartitions: checked here for what needs the connection
//! (authorization, duplicates, free descriptors), then submitted to the controller as typed
//! operations (`crate::controller`), which validates them against the image and commits.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use strata_protocol::ErrorCode;
use strata_quorum::controller::ops::{
    CreatePartitions, CreatePartitionsReply, CreateTopics, CreateTopicsReply, CreatedTopic,
    DeleteTopics, ItemResult, NewPartitions, NewTopic, Op, OpError, ReplicaAssignment, TopicRef,
};
use strata_quorum::MetadataImage;
use uuid::Uuid;

use super::{merge_answers, str_bytes};
use crate::auth::{authorize, authorize_quiet, ConnectionContext, Operation, Resource};
use crate::broker::Broker;
use crate::config::{resolve_topic_config, ConfigLayers, TOPIC_CONFIGS};
use crate::controller::plan::refuse;
use crate::controller::ControllerError;

/// An operation that creates partitions.
trait Creation: Op {
    type Created;
    /// Whether it asks to create anything.
    fn creates_any(&self) -> bool;
    /// The same operation, only validating.
    fn validating(self) -> Self;
    /// The per-item answers of its reply.
    fn answers(reply: Self::Reply) -> Vec<ItemResult<Self::Created>>;
}

impl Creation for CreateTopics {
    type Created = CreatedTopic;
    fn creates_any(&self) -> bool {
        !self.topics.is_empty()
    }
    fn validating(self) -> Self {
        CreateTopics {
            validate_only: true,
            ..self
        }
    }
    fn answers(reply: CreateTopicsReply) -> Vec<ItemResult<CreatedTopic>> {
        reply.topics
    }
}

impl Creation for CreatePartitions {
    type Created = ();
    fn creates_any(&self) -> bool {
        !self.topics.is_empty()
    }
    fn validating(self) -> Self {
        CreatePartitions {
            validate_only: true,
            ..self
        }
    }
    fn answers(reply: CreatePartitionsReply) -> Vec<ItemResult<()>> {
        reply.topics
    }
}

/// Submits an operation that creates partitions and returns its per-item answers. When
/// creating partitions cannot be served now for lack of descriptors (see
/// `fd_limit::create_headroom_error`), the operation only validates and every item that would
/// have been created is refused with POLICY_VIOLATION instead: a topic is created with all
/// its partitions or not at all.
async fn submit_creation<O: Creation>(
    broker: &Broker,
    op: O,
) -> Result<Vec<ItemResult<O::Created>>, ControllerError> {
    let headroom = if op.creates_any() {
        crate::fd_limit::create_headroom_error()
    } else {
        None
    };
    let Some(message) = headroom else {
        return Ok(O::answers(broker.submit(op).await?));
    };
    let answers = O::answers(broker.submit(op.validating()).await?);
    Ok(answers
        .into_iter()
        .map(|a| a.and_then(|_| Err(refuse(ErrorCode::PolicyViolation, message.clone()))))
        .collect())
}

pub async fn create_topics(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut seen = std::collections::HashMap::new();
    for t in &req.topics {
        *seen.entry(t.name.0.to_string()).or_insert(0) += 1;
    }
    // CREATE on the cluster allows every topic; otherwise CREATE on each topic is needed.
    let may_create_any = authorize_quiet(ctx, Operation::Create, Resource::Cluster);
    let mut screened = Vec::with_capacity(req.topics.len());
    let mut topics = Vec::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        if seen.get(name.as_str()).copied().unwrap_or(0) > 1 {
            screened.push(Some(Err(refuse(
                ErrorCode::InvalidRequest,
                format!("Topic '{name}' appears more than once in the request."),
            ))));
        } else if !may_create_any && !authorize(ctx, Operation::Create, Resource::Topic(&name)) {
            screened.push(Some(Err(refuse(
                ErrorCode::TopicAuthorizationFailed,
                "Not authorized to create the topic.",
            ))));
        } else {
            screened.push(None);
            topics.push(NewTopic {
                name,
                num_partitions: t.num_partitions,
                replication_factor: t.replication_factor,
                assignments: t
                    .assignments
                    .iter()
                    .map(|a| ReplicaAssignment {
                        partition: a.partition_index,
                        replicas: a.broker_ids.iter().map(|b| b.0).collect(),
                    })
                    .collect(),
                configs: t
                    .configs
                    .iter()
                    .filter_map(|c| {
                        c.value
                            .as_ref()
                            .map(|v| (c.name.to_string(), v.to_string()))
                    })
                    .collect(),
            });
        }
    }
    let op = CreateTopics {
        topics,
        validate_only: req.validate_only,
    };
    let answers = match submit_creation(broker, op).await {
        Ok(answers) => answers,
        Err(error) => {
            tracing::error!(%error, "create topics failed");
            let topics = req
                .topics
                .iter()
                .map(|t| {
                    CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(ErrorCode::UnknownServerError.code())
                        .with_error_message(Some(str_bytes(error.to_string())))
                })
                .collect();
            return CreateTopicsResponse::default().with_topics(topics);
        }
    };
    let image = broker.image();
    let topics = req
        .topics
        .iter()
        .zip(merge_answers(screened, answers))
        .map(|(t, result)| {
            let base = CreatableTopicResult::default().with_name(t.name.clone());
            match result {
                // topic_config_error_code, num_partitions, replication_factor and configs
                // exist from v5, topic_id from v7.
                Err(OpError { code, message }) => base
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(message)))
                    .with_topic_config_error_code(
                        if code == ErrorCode::InvalidConfig.code() && version >= 5 {
                            code
                        } else {
                            0
                        },
                    ),
                Ok(created) => {
                    let mut result = base;
                    if version >= 7 {
                        result = result.with_topic_id(created.topic_id);
                    }
                    // The created topic's configs and sizes only to a principal that may
                    // DESCRIBE_CONFIGS it (Kafka's rule; a filter, not audited).
                    let describable = || {
                        authorize_quiet(
                            ctx,
                            Operation::DescribeConfigs,
                            Resource::Topic(t.name.0.as_str()),
                        )
                    };
                    if version >= 5 && describable() {
                        result = result
                            .with_num_partitions(created.num_partitions)
                            .with_replication_factor(created.replication_factor)
                            .with_configs(Some(created_configs(broker, &image, &created.configs)));
                    } else if version >= 5 {
                        result = result.with_topic_config_error_code(
                            ErrorCode::TopicAuthorizationFailed.code(),
                        );
                    }
                    result
                }
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

fn created_configs(
    broker: &Broker,
    image: &MetadataImage,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    let layers = ConfigLayers {
        topic: overrides,
        dynamic_broker: image.broker_configs.get(&Some(broker.node_id())),
        dynamic_default: image.broker_configs.get(&None),
        static_broker: &broker.config.set,
    };
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let r = resolve_topic_config(def, &layers);
            CreatableTopicConfigs::default()
                .with_name(str_bytes(r.name))
                .with_value(r.value.map(str_bytes))
                .with_config_source(r.source as i8)
        })
        .collect()
}

pub async fn delete_topics(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // v6+ names topics by name or id; older versions by name only.
    let wanted: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    // A topic named is authorized by that name whether it exists or not (its existence is not
    // disclosed); one named by id is authorized by the name of the topic it is, and an
    // unknown id goes to the controller, which answers that it is unknown (ids are not
    // secret).
    let image = broker.image();
    let mut screened = Vec::with_capacity(wanted.len());
    let mut topics = Vec::new();
    for (name, id) in &wanted {
        let denied = match name {
            Some(n) => !authorize(ctx, Operation::Delete, Resource::Topic(n)),
            None => image
                .topic_by_id(id)
                .is_some_and(|t| !authorize(ctx, Operation::Delete, Resource::Topic(&t.name))),
        };
        if denied {
            let code = ErrorCode::TopicAuthorizationFailed;
            screened.push(Some(Err(refuse(code, code.to_string()))));
        } else {
            screened.push(None);
            topics.push(match name {
                Some(n) => TopicRef::Name(n.clone()),
                None => TopicRef::Id(*id),
            });
        }
    }
    let answers = match broker.submit(DeleteTopics { topics }).await {
        Ok(reply) => reply.topics,
        Err(error) => {
            tracing::error!(%error, "delete topics failed");
            return DeleteTopicsResponse::default();
        }
    };
    let responses = wanted
        .into_iter()
        .zip(merge_answers(screened, answers))
        // topic_id exists from v6, error_message from v5.
        .map(|((name, id), result)| match result {
            Ok(deleted) => DeletableTopicResult::default()
                .with_name(Some(TopicName(str_bytes(deleted.name))))
                .with_topic_id(if version >= 6 {
                    deleted.topic_id
                } else {
                    Uuid::nil()
                }),
            Err(e) => DeletableTopicResult::default()
                .with_name(name.map(|n| TopicName(str_bytes(n))))
                .with_topic_id(if version >= 6 { id } else { Uuid::nil() })
                .with_error_code(e.code)
                .with_error_message((version >= 5).then(|| str_bytes(e.message))),
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut screened = Vec::with_capacity(req.topics.len());
    let mut topics = Vec::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        if !authorize(ctx, Operation::Alter, Resource::Topic(&name)) {
            screened.push(Some(Err(refuse(
                ErrorCode::TopicAuthorizationFailed,
                "Not authorized.",
            ))));
        } else {
            screened.push(None);
            topics.push(NewPartitions {
                name,
                count: t.count,
                assignments: t.assignments.as_ref().map(|a| {
                    a.iter()
                        .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                        .collect()
                }),
            });
        }
    }
    let op = CreatePartitions {
        topics,
        validate_only: req.validate_only,
    };
    let answers = match submit_creation(broker, op).await {
        Ok(answers) => answers,
        Err(error) => {
            tracing::error!(%error, "create partitions failed");
            return CreatePartitionsResponse::default();
        }
    };
    CreatePartitionsResponse::default().with_results(
        req.topics
            .iter()
            .zip(merge_answers(screened, answers))
            .map(|(t, result)| {
                let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
                match result {
                    Ok(()) => r,
                    Err(e) => r
                        .with_error_code(e.code)
                        .with_error_message(Some(str_bytes(e.message))),
                }
            })
            .collect(),
    )
}
