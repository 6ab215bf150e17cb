//! Reading messages for the console, bounded in records, bytes, scanned bytes and time, so a
//! filter over a million-message topic answers within its budget and says where to go on.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};
use strata_broker::partition::Partition;
use strata_protocol::batch::iter_batches;

/// Values longer than this are cut in pages (the single-message endpoint sends them whole).
pub const PAGE_VALUE_BYTES: usize = 64 * 1024;
/// How long one page may scan.
const TIME_BUDGET: Duration = Duration::from_secs(2);
/// Bytes read from the log per step.
const STEP_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Newest,
    Oldest,
    Offset(i64),
    Timestamp(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Auto,
    Utf8,
    Base64,
    Hex,
}

impl Encoding {
    pub fn parse(s: &str) -> Option<Encoding> {
        Some(match s {
            "auto" => Encoding::Auto,
            "utf8" => Encoding::Utf8,
            "base64" => Encoding::Base64,
            "hex" => Encoding::Hex,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ReadParams {
    pub limit: usize,
    pub max_bytes: usize,
    pub filter: Option<Vec<u8>>,
    pub encoding: Encoding,
    pub scan_max_bytes: usize,
}

/// Why a page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Limit,
    MaxBytes,
    ScanBudget,
    TimeBudget,
    End,
}

impl Stop {
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::Limit => "limit",
            Stop::MaxBytes => "max_bytes",
            Stop::ScanBudget => "scan_budget",
            Stop::TimeBudget => "time_budget",
            Stop::End => "end",
        }
    }
}

/// A record as the console shows it.
#[derive(Debug, Clone)]
pub struct Message {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub timestamp_type: &'static str,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl Message {
    fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
    }

    fn matches(&self, needle: &[u8]) -> bool {
        let has = |b: &Option<Bytes>| b.as_ref().is_some_and(|b| contains(b, needle));
        has(&self.key)
            || has(&self.value)
            || self
                .headers
                .iter()
                .any(|(k, v)| contains(k.as_bytes(), needle) || has(v))
    }

    /// The JSON shape of a message; values cut at `cut` bytes.
    pub fn to_json(&self, encoding: Encoding, cut: Option<usize>) -> Value {
        json!({
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "timestamp_type": self.timestamp_type,
            "key": render(self.key.as_deref(), encoding, cut),
            "value": render(self.value.as_deref(), encoding, cut),
            "headers": self.headers.iter().map(|(k, v)| json!({
                "key": k,
                "value": render(v.as_deref(), encoding, cut),
            })).collect::<Vec<_>>(),
        })
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// `{encoding, data, size, truncated}`, or null for an absent key or value. `auto` shows
/// JSON as `json` (pretty-printed), other UTF-8 text as `utf8`, and anything else as `hex`.
pub fn render(bytes: Option<&[u8]>, encoding: Encoding, cut: Option<usize>) -> Value {
    let Some(bytes) = bytes else {
        return Value::Null;
    };
    let size = bytes.len();
    let limit = cut.unwrap_or(usize::MAX);
    let truncated = size > limit;
    let shown = &bytes[..size.min(limit)];
    let (name, data) = match encoding {
        Encoding::Base64 => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(shown),
        ),
        Encoding::Hex => ("hex", hex(shown)),
        Encoding::Utf8 => ("utf8", String::from_utf8_lossy(shown).into_owned()),
        Encoding::Auto => match std::str::from_utf8(shown) {
            Ok(text) if !truncated => match serde_json::from_str::<Value>(text) {
                Ok(v) if v.is_object() || v.is_array() => (
                    "json",
                    serde_json::to_string_pretty(&v).unwrap_or_else(|_| text.to_string()),
                ),
                _ => ("utf8", text.to_string()),
            },
            Ok(text) => ("utf8", text.to_string()),
            // A cut may split a character: text up to the last whole one.
            Err(e) if truncated && e.error_len().is_none() => (
                "utf8",
                String::from_utf8_lossy(&shown[..e.valid_up_to()]).into_owned(),
            ),
            Err(_) => ("hex", hex(shown)),
        },
    };
    json!({ "encoding": name, "data": data, "size": size, "truncated": truncated })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One partition's page.
#[derive(Debug)]
pub struct Page {
    pub messages: Vec<Message>,
    pub next_offset: i64,
    pub scanned_bytes: usize,
    pub stop: Stop,
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

/// Where a read of `start` begins, or the bounds it missed (`Err((start, hw))`).
pub fn first_offset(partition: &Partition, start: Start, limit: usize) -> Result<i64, (i64, i64)> {
    let log_start = partition.log_start_offset();
    let hw = partition.high_watermark();
    match start {
        Start::Newest => Ok((hw - limit as i64).max(log_start)),
        Start::Oldest => Ok(log_start),
        Start::Offset(o) if o < log_start || o > hw => Err((log_start, hw)),
        Start::Offset(o) => Ok(o),
        Start::Timestamp(ts) => Ok(match partition.offset_for_timestamp(ts) {
            Ok(Some((offset, _))) => offset.max(log_start),
            _ => hw,
        }),
    }
}

/// Reads a page of `partition` from `from` (blocking: call it on the blocking pool).
pub fn read_page(partition: &Partition, from: i64, params: &ReadParams) -> Page {
    let started = Instant::now();
    let log_start = partition.log_start_offset();
    let hw = partition.high_watermark();
    let mut messages = Vec::new();
    let mut bytes_out = 0usize;
    let mut scanned = 0usize;
    let mut next = from.max(log_start);
    let stop = loop {
        if next >= hw {
            break Stop::End;
        }
        if scanned >= params.scan_max_bytes {
            break Stop::ScanBudget;
        }
        if started.elapsed() > TIME_BUDGET {
            break Stop::TimeBudget;
        }
        let Ok(read) = partition.read(next, STEP_BYTES) else {
            break Stop::End;
        };
        if read.records.is_empty() {
            break Stop::End;
        }
        scanned += read.records.len();
        let mut full = None;
        let mut progressed = false;
        for (header, range) in iter_batches(&read.records).map_while(Result::ok) {
            let batch = read.records.slice(range);
            let ts_type = if header.timestamp_type_log_append() {
                "LogAppendTime"
            } else {
                "CreateTime"
            };
            let mut batch_messages = Vec::new();
            let decoded = strata_client::records::read_batch(&batch, next, |r| {
                batch_messages.push(Message {
                    partition: partition.index,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    timestamp_type: ts_type,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                })
            });
            if decoded.is_err() {
                tracing::warn!(topic = %partition.topic, partition = partition.index, offset = header.base_offset, "the console cannot decode a batch; skipping it");
            }
            for m in batch_messages {
                if m.offset < next || m.offset >= hw {
                    continue;
                }
                next = m.offset + 1;
                if params
                    .filter
                    .as_deref()
                    .is_some_and(|needle| !m.matches(needle))
                {
                    continue;
                }
                let size = m.size().min(PAGE_VALUE_BYTES * (2 + m.headers.len()));
                if !messages.is_empty() && bytes_out + size > params.max_bytes {
                    // This record starts the next page.
                    next = m.offset;
                    full = Some(Stop::MaxBytes);
                    break;
                }
                bytes_out += size;
                messages.push(m);
                if messages.len() >= params.limit {
                    full = Some(Stop::Limit);
                    break;
                }
            }
            progressed = true;
            next = next.max(header.next_offset().min(hw));
            if full.is_some() {
                break;
            }
        }
        if let Some(stop) = full {
            break stop;
        }
        if !progressed {
            break Stop::End;
        }
    };
    // A page that happens to fill up at the high watermark has nothing after it.
    let stop = if stop == Stop::Limit && next >= hw {
        Stop::End
    } else {
        stop
    };
    Page {
        messages,
        next_offset: next,
        scanned_bytes: scanned,
        stop,
        log_start_offset: log_start,
        high_watermark: hw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_as_what_fits() {
        let v = render(Some(br#"{"a":1}"#), Encoding::Auto, None);
        assert_eq!(v["encoding"], "json");
        assert_eq!(v["data"], "{\n  \"a\": 1\n}");
        let v = render(Some(b"plain text"), Encoding::Auto, None);
        assert_eq!(
            (v["encoding"].as_str(), v["data"].as_str()),
            (Some("utf8"), Some("plain text"))
        );
        let v = render(Some(&[0xff, 0x00, 0x10]), Encoding::Auto, None);
        assert_eq!(
            (v["encoding"].as_str(), v["data"].as_str()),
            (Some("hex"), Some("ff0010"))
        );
        let v = render(Some(b"abc"), Encoding::Base64, None);
        assert_eq!(v["data"], "YWJj");
        assert_eq!(render(None, Encoding::Auto, None), Value::Null);
        // Cut values say so; a cut inside a character keeps the whole ones.
        let v = render(Some("héllo".as_bytes()), Encoding::Auto, Some(2));
        assert_eq!(
            (
                v["data"].as_str(),
                v["truncated"].as_bool(),
                v["size"].as_u64()
            ),
            (Some("h"), Some(true), Some(6))
        );
        // A number is valid JSON but shown as text.
        assert_eq!(
            render(Some(b"42"), Encoding::Auto, None)["encoding"],
            "utf8"
        );
    }

    #[test]
    fn filters_look_at_keys_values_and_headers() {
        let m = Message {
            partition: 0,
            offset: 0,
            timestamp: 0,
            timestamp_type: "CreateTime",
            key: Some(Bytes::from_static(b"order-17")),
            value: Some(Bytes::from_static(b"shipped")),
            headers: vec![("trace".into(), Some(Bytes::from_static(b"abc123")))],
        };
        assert!(m.matches(b"der-1"));
        assert!(m.matches(b"ship"));
        assert!(m.matches(b"c12"));
        assert!(m.matches(b"trace"));
        assert!(!m.matches(b"cancelled"));
    }
}
