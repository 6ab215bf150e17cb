//! Record-level reads, for the few paths that need them (ListOffsets by timestamp). Never on
//! the produce or fetch path, which work on batch headers only.

use crate::batch::{check_batch, BatchError};

/// Offsets and timestamps of every record in one whole batch, decompressing it if needed.
/// Under LogAppendTime every record carries the batch's max timestamp.
pub fn record_timestamps(batch: &[u8]) -> Result<Vec<(i64, i64)>, BatchError> {
    let header = check_batch(batch, 0)?;
    let mut buf = bytes::Bytes::copy_from_slice(&batch[..header.total_len()]);
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).map_err(|_| {
        BatchError::CorruptCrc {
            position: 0,
            stored: header.crc,
            computed: header.crc,
        }
    })?;
    let log_append = header.timestamp_type_log_append();
    Ok(set
        .records
        .iter()
        .map(|r| {
            let ts = if log_append {
                header.max_timestamp
            } else {
                r.timestamp
            };
            (r.offset, ts)
        })
        .collect())
}
