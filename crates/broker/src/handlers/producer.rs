//! InitProducerId for idempotent producers.
//!
//! An idempotent producer (the default of kafka-python 3 and of Java clients) asks for a
//! producer id before its first produce. Ids are unique across restarts (allocated in blocks
//! through a metadata record). A producer that presents its current id and epoch (KIP-360)
//! gets the same id with the next epoch. Transactional ids need the transaction coordinator,
//! which does not exist yet: they get COORDINATOR_NOT_AVAILABLE.
//!
//! Not yet done here: per-partition sequence tracking (duplicate and gap detection).

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use strata_protocol::ErrorCode;

use crate::broker::Broker;

pub async fn init_producer_id(
    broker: &Arc<Broker>,
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
        Some(_) => return base.with_error_code(ErrorCode::CoordinatorNotAvailable.code()),
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
