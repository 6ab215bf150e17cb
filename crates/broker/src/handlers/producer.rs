//! InitProducerId.
//!
//! An idempotent producer (the default of kafka-python 3 and of Java clients) asks for a
//! producer id before its first produce. Ids are unique across restarts (allocated in blocks
//! through a metadata record). A producer that presents its current id and epoch (KIP-360)
//! gets the same id with the next epoch. A transactional producer is answered by the
//! transaction coordinator (`handlers::txn::init_transactional`). Sequence checks happen per
//! partition on produce (`strata_log::producer_state`).

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use strata_protocol::ErrorCode;

use crate::auth::ConnectionContext;
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
    match &req.transactional_id {
        Some(id) if id.0.is_empty() => {
            return base.with_error_code(ErrorCode::InvalidRequest.code());
        }
        Some(id) => {
            let id = id.0.to_string();
            return match super::txn::init_transactional(broker, ctx, &id, &req).await {
                Ok((producer_id, epoch)) => base
                    .with_producer_id(ProducerId(producer_id))
                    .with_producer_epoch(epoch),
                Err(code) => base.with_error_code(code.code()),
            };
        }
        None => {}
    }
    // KIP-360: bump the epoch of a known producer instead of handing out a new id.
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return base
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    match broker.allocate_producer_id().await {
        Ok(id) => base.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(error) => {
            tracing::error!(%error, "cannot allocate a producer id");
            base.with_error_code(ErrorCode::UnknownServerError.code())
        }
    }
}
