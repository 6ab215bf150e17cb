//! Request handlers, one module per API family, and the dispatch between them.
//!
//! A handler does its work in request order (so appends from one connection keep their
//! order) and returns a [`Reply`]: a response now, a response that will be ready later (an
//! acks=all produce waiting for durability, a fetch waiting for data), or none (acks=0).
//! Whatever a request changes is changed before its handler returns, never in the later
//! part: a client may pipeline a request behind it on the same connection and expects it to
//! see the change, as Kafka serves a connection's requests one at a time.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use strata_protocol::request::Request;
use strata_protocol::versioned::fit_response;
use strata_protocol::ErrorCode;
use strata_quorum::controller::ops::ItemResult;

use crate::auth::ConnectionContext;
use crate::broker::Broker;
use crate::controller::plan::refuse;

mod acls;
mod admin;
mod cluster;
mod configs;
mod fetch;
pub mod groups;
mod metadata;
mod offsets;
mod produce;
mod producer;
mod quotas;
mod txn;
mod users;

pub enum Reply {
    Now(Box<ResponseKind>),
    Later(BoxFuture<'static, ResponseKind>),
    /// No response is sent (acks=0 produce).
    None,
}

impl Reply {
    pub fn now(body: ResponseKind) -> Reply {
        Reply::Now(Box::new(body))
    }
}

/// Runs the handler of `request` and fits its answer to the request's version
/// (`strata_protocol::versioned`): handlers answer in the newest terms, this is where older
/// versions get the error codes and nulls they know.
pub async fn handle(broker: &Arc<Broker>, ctx: &ConnectionContext, request: Request) -> Reply {
    let version = request.version();
    ctx.api.set(request.api_key);
    match dispatch(broker, ctx, request).await {
        Reply::Now(mut body) => {
            fit_response(&mut body, version);
            Reply::Now(body)
        }
        Reply::Later(answer) => Reply::Later(
            answer
                .map(move |mut body| {
                    fit_response(&mut body, version);
                    body
                })
                .boxed(),
        ),
        Reply::None => Reply::None,
    }
}

async fn dispatch(broker: &Arc<Broker>, ctx: &ConnectionContext, request: Request) -> Reply {
    let version = request.version();
    let client_id = request.client_id();
    match request.body {
        RequestKind::ApiVersions(_) => Reply::now(ResponseKind::ApiVersions(
            strata_protocol::request::api_versions_response(0),
        )),
        RequestKind::Metadata(req) => Reply::now(ResponseKind::Metadata(
            metadata::metadata(broker, ctx, req, version).await,
        )),
        RequestKind::Produce(req) => produce::produce(broker, ctx, req, version).await,
        RequestKind::Fetch(req) => fetch::fetch(broker, ctx, req, version),
        RequestKind::ListOffsets(req) => Reply::now(ResponseKind::ListOffsets(
            offsets::list_offsets(broker, ctx, req, version),
        )),
        RequestKind::InitProducerId(req) => Reply::now(ResponseKind::InitProducerId(
            producer::init_producer_id(broker, ctx, req).await,
        )),
        RequestKind::AddPartitionsToTxn(req) => Reply::now(ResponseKind::AddPartitionsToTxn(
            txn::add_partitions_to_txn(broker, ctx, req, version).await,
        )),
        RequestKind::AddOffsetsToTxn(req) => Reply::now(ResponseKind::AddOffsetsToTxn(
            txn::add_offsets_to_txn(broker, ctx, req).await,
        )),
        RequestKind::TxnOffsetCommit(req) => Reply::now(ResponseKind::TxnOffsetCommit(
            txn::txn_offset_commit(broker, ctx, req).await,
        )),
        RequestKind::EndTxn(req) => Reply::now(ResponseKind::EndTxn(
            txn::end_txn(broker, ctx, req, version).await,
        )),
        RequestKind::WriteTxnMarkers(req) => Reply::now(ResponseKind::WriteTxnMarkers(
            txn::write_txn_markers(broker, ctx, req).await,
        )),
        RequestKind::DescribeTransactions(req) => Reply::now(ResponseKind::DescribeTransactions(
            txn::describe_transactions(broker, ctx, req),
        )),
        RequestKind::ListTransactions(req) => Reply::now(ResponseKind::ListTransactions(
            txn::list_transactions(broker, ctx, req),
        )),
        RequestKind::DescribeProducers(req) => Reply::now(ResponseKind::DescribeProducers(
            txn::describe_producers(broker, ctx, req),
        )),
        RequestKind::DeleteRecords(req) => {
            // Checkpoints (fsync) and file deletions: on the blocking pool, not a worker.
            // Awaited here, not in a later reply, so that the connection's next request
            // (a ListOffsets sent right behind it) sees the new log start, as Kafka answers
            // a connection's requests one at a time.
            let (broker, ctx) = (broker.clone(), ctx.clone());
            let response =
                tokio::task::spawn_blocking(move || offsets::delete_records(&broker, &ctx, req))
                    .await
                    .unwrap_or_else(|error| {
                        tracing::error!(%error, "DeleteRecords task failed");
                        Default::default()
                    });
            Reply::now(ResponseKind::DeleteRecords(response))
        }
        RequestKind::OffsetForLeaderEpoch(req) => Reply::now(ResponseKind::OffsetForLeaderEpoch(
            offsets::offset_for_leader_epoch(broker, ctx, req),
        )),
        RequestKind::FindCoordinator(req) => Reply::now(ResponseKind::FindCoordinator(
            metadata::find_coordinator(broker, ctx, req, version).await,
        )),
        RequestKind::JoinGroup(req) => {
            groups::join_group(broker, ctx, &client_id, req, version).await
        }
        RequestKind::SyncGroup(req) => groups::sync_group(broker, ctx, req, version),
        RequestKind::Heartbeat(req) => Reply::now(ResponseKind::Heartbeat(groups::heartbeat(
            broker, ctx, req, version,
        ))),
        RequestKind::LeaveGroup(req) => Reply::now(ResponseKind::LeaveGroup(groups::leave_group(
            broker, ctx, req, version,
        ))),
        RequestKind::OffsetCommit(req) => Reply::now(ResponseKind::OffsetCommit(
            groups::offset_commit(broker, ctx, req, version).await,
        )),
        RequestKind::OffsetFetch(req) => Reply::now(ResponseKind::OffsetFetch(
            groups::offset_fetch(broker, ctx, req, version),
        )),
        RequestKind::OffsetDelete(req) => Reply::now(ResponseKind::OffsetDelete(
            groups::offset_delete(broker, ctx, req).await,
        )),
        RequestKind::ListGroups(req) => Reply::now(ResponseKind::ListGroups(groups::list_groups(
            broker, ctx, req, version,
        ))),
        RequestKind::DescribeGroups(req) => Reply::now(ResponseKind::DescribeGroups(
            groups::describe_groups(broker, ctx, req, version),
        )),
        RequestKind::ConsumerGroupHeartbeat(req) => {
            Reply::now(ResponseKind::ConsumerGroupHeartbeat(
                groups::consumer_group_heartbeat(broker, ctx, &client_id, req).await,
            ))
        }
        RequestKind::ConsumerGroupDescribe(req) => Reply::now(ResponseKind::ConsumerGroupDescribe(
            groups::consumer_group_describe(broker, ctx, req),
        )),
        RequestKind::DescribeLogDirs(req) => Reply::now(ResponseKind::DescribeLogDirs(
            cluster::describe_log_dirs(broker, ctx, req),
        )),
        RequestKind::DescribeQuorum(req) => Reply::now(ResponseKind::DescribeQuorum(
            cluster::describe_quorum(broker, ctx, req, version),
        )),
        RequestKind::AlterReplicaLogDirs(req) => Reply::now(ResponseKind::AlterReplicaLogDirs(
            cluster::alter_replica_log_dirs(broker, ctx, req),
        )),
        RequestKind::ElectLeaders(req) => Reply::now(ResponseKind::ElectLeaders(
            cluster::elect_leaders(broker, ctx, req, version).await,
        )),
        RequestKind::ListPartitionReassignments(req) => {
            Reply::now(ResponseKind::ListPartitionReassignments(
                cluster::list_partition_reassignments(broker, ctx, req),
            ))
        }
        RequestKind::AlterPartitionReassignments(req) => {
            Reply::now(ResponseKind::AlterPartitionReassignments(
                cluster::alter_partition_reassignments(broker, ctx, req, version).await,
            ))
        }
        RequestKind::ListConfigResources(req) => Reply::now(ResponseKind::ListConfigResources(
            cluster::list_config_resources(broker, ctx, req, version),
        )),
        RequestKind::DeleteGroups(req) => Reply::now(ResponseKind::DeleteGroups(
            groups::delete_groups(broker, ctx, req).await,
        )),
        RequestKind::DescribeCluster(req) => Reply::now(ResponseKind::DescribeCluster(
            metadata::describe_cluster(broker, ctx, req),
        )),
        RequestKind::DescribeTopicPartitions(req) => {
            Reply::now(ResponseKind::DescribeTopicPartitions(
                metadata::describe_topic_partitions(broker, ctx, req),
            ))
        }
        RequestKind::CreateTopics(req) => Reply::now(ResponseKind::CreateTopics(
            admin::create_topics(broker, ctx, req, version).await,
        )),
        RequestKind::DeleteTopics(req) => Reply::now(ResponseKind::DeleteTopics(
            admin::delete_topics(broker, ctx, req, version).await,
        )),
        RequestKind::CreatePartitions(req) => Reply::now(ResponseKind::CreatePartitions(
            admin::create_partitions(broker, ctx, req).await,
        )),
        RequestKind::DescribeConfigs(req) => Reply::now(ResponseKind::DescribeConfigs(
            configs::describe_configs(broker, ctx, req, version),
        )),
        RequestKind::AlterConfigs(req) => Reply::now(ResponseKind::AlterConfigs(
            configs::alter_configs(broker, ctx, req).await,
        )),
        RequestKind::IncrementalAlterConfigs(req) => {
            Reply::now(ResponseKind::IncrementalAlterConfigs(
                configs::incremental_alter_configs(broker, ctx, req).await,
            ))
        }
        // A SASL listener's stage (`crate::sasl`) takes these before dispatch; here they come
        // from a listener without SASL, or after authentication: Kafka answers
        // ILLEGAL_SASL_STATE.
        RequestKind::SaslHandshake(_) => Reply::now(ResponseKind::SaslHandshake(
            kafka_protocol::messages::SaslHandshakeResponse::default()
                .with_error_code(ErrorCode::IllegalSaslState.code()),
        )),
        RequestKind::SaslAuthenticate(_) => Reply::now(ResponseKind::SaslAuthenticate(
            kafka_protocol::messages::SaslAuthenticateResponse::default()
                .with_error_code(ErrorCode::IllegalSaslState.code())
                .with_error_message(Some(str_bytes(
                    "SaslAuthenticate request received after successful authentication, or on a listener without SASL",
                ))),
        )),
        RequestKind::DescribeUserScramCredentials(req) => {
            Reply::now(ResponseKind::DescribeUserScramCredentials(
                users::describe_user_scram_credentials(broker, ctx, req),
            ))
        }
        RequestKind::AlterUserScramCredentials(req) => {
            Reply::now(ResponseKind::AlterUserScramCredentials(
                users::alter_user_scram_credentials(broker, ctx, req).await,
            ))
        }
        RequestKind::DescribeAcls(req) => Reply::now(ResponseKind::DescribeAcls(
            acls::describe_acls(broker, ctx, req),
        )),
        RequestKind::CreateAcls(req) => Reply::now(ResponseKind::CreateAcls(
            acls::create_acls(broker, ctx, req).await,
        )),
        RequestKind::DeleteAcls(req) => Reply::now(ResponseKind::DeleteAcls(
            acls::delete_acls(broker, ctx, req).await,
        )),
        RequestKind::DescribeClientQuotas(req) => Reply::now(ResponseKind::DescribeClientQuotas(
            quotas::describe_client_quotas(broker, ctx, req),
        )),
        RequestKind::AlterClientQuotas(req) => Reply::now(ResponseKind::AlterClientQuotas(
            quotas::alter_client_quotas(broker, ctx, req).await,
        )),
        other => {
            // decode_request only lets through the APIs in strata_protocol::api, and each
            // has an arm above; reaching this is a bug in the table.
            unreachable!("no handler for an advertised API: {other:?}")
        }
    }
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The answers to a request's items in request order, from `screened` (per item: `Some` if
/// this broker answered it itself, e.g. refused it for authorization, `None` if it was sent
/// to the controller) and the controller's `answers` to the items it was sent, in order.
pub(crate) fn merge_answers<T>(
    screened: Vec<Option<ItemResult<T>>>,
    answers: Vec<ItemResult<T>>,
) -> Vec<ItemResult<T>> {
    let mut answers = answers.into_iter();
    screened
        .into_iter()
        .map(|own| {
            own.or_else(|| answers.next()).unwrap_or_else(|| {
                Err(refuse(
                    ErrorCode::UnknownServerError,
                    "The controller did not answer for this item.",
                ))
            })
        })
        .collect()
}
