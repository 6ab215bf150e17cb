//! InitProducerId.
//!
//! An idempotent producer (the default of kafka-python 3 and of Java clients) asks for a
//! producer id before its first produce. Ids are unique across restarts (allocated in blocks
//! through a metadata record). Without a transactional id, an id and epoch in the request
//! (KIP-360) are ignored and a new id with epoch 0 is answered, as Kafka does: nothing ties an
//! idempotent producer id to a client, so bumping the presented id's epoch would let any client
//! fence any producer. A transactional producer is answered by the transaction coordinator
//! (`handlers::txn::init_transactional`), which checks the presented id and epoch against the
//! transactional id's. Sequence checks happen per partition on produce
//! (`strata_log::producer_state`). Authorization is Kafka's: WRITE on the transactional id for
//! a transactional producer; for an idempotent one IDEMPOTENT_WRITE on the cluster or WRITE on
//! any topic (else CLUSTER_AUTHORIZATION_FAILED).

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use strata_protocol::ErrorCode;

use strata_quorum::acl::ResourceType;

use crate::auth::{authorize, authorize_any, ConnectionContext, Operation, Resource};
use crate::broker::Broker;

pub async fn init_producer_id(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let base = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
        .with_ongoing_txn_producer_id(ProducerId(-1))
        .with_ongoing_txn_producer_epoch(-1);
    // An empty transactional id, or an id without an epoch (or the reverse), is malformed.
    if req
        .transactional_id
        .as_ref()
        .is_some_and(|id| id.0.is_empty())
        || (req.producer_id.0 < 0) != (req.producer_epoch < 0)
    {
        return base.with_error_code(ErrorCode::InvalidRequest.code());
    }
    if let Some(id) = &req.transactional_id {
        let id = id.0.to_string();
        return match super::txn::init_transactional(broker, ctx, &id, &req).await {
            Ok((producer_id, epoch)) => base
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch),
            // PRODUCER_FENCED reaches clients before v4 (KIP-588) as INVALID_PRODUCER_EPOCH
            // through `fit_response`, like every version-dependent code.
            Err(code) => base.with_error_code(code.code()),
        };
    }
    // An idempotent producer needs IDEMPOTENT_WRITE on the cluster, or WRITE on some topic
    // (Kafka's rule since KIP-679 made idempotence the default).
    if !authorize_any(ctx, Operation::Write, ResourceType::Topic)
        && !authorize(ctx, Operation::IdempotentWrite, Resource::Cluster)
    {
        return base.with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    match broker.allocate_producer_id().await {
        Ok(id) => base.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(error) => {
            tracing::error!(%error, "cannot allocate a producer id");
            base.with_error_code(ErrorCode::UnknownServerError.code())
        }
    }
}
