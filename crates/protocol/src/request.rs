//! Request frames in, response frames out.
//!
//! A frame on the wire is a big-endian i32 length followed by that many bytes. The connection
//! layer reads the length and enforces `socket.request.max.bytes`; this module decodes what
//! follows (request header, then body at the header's API version) and encodes responses with
//! their length prefix.
//!
//! Decoding never panics: every failure is a [`DecodeError`] that says whether the broker can
//! still answer (the ApiVersions version fallback) or must close the connection, as Kafka does.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::api::{is_supported, supported_versions, SUPPORTED_APIS};
use crate::ErrorCode;

/// A decoded request: its header and body.
#[derive(Debug)]
pub struct Request {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub body: RequestKind,
}

impl Request {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }

    /// The header's client id ("" when null).
    pub fn client_id(&self) -> String {
        self.header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default()
    }
}

/// Why a frame could not be turned into a request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown API key {api_key}")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("unsupported version {version} of {api_key:?}")]
    UnsupportedVersion {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        reason: String,
    },
}

impl DecodeError {
    /// The response to send before closing, if Kafka sends one: only an ApiVersions request at
    /// a version the broker does not know gets an answer (UNSUPPORTED_VERSION in the v0
    /// format, listing what is supported, so newer clients can downgrade).
    pub fn fallback_response(&self) -> Option<Bytes> {
        match self {
            DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            } => {
                let body = api_versions_response(ErrorCode::UnsupportedVersion.code());
                encode_response(
                    *correlation_id,
                    ApiKey::ApiVersions,
                    0,
                    &ResponseKind::ApiVersions(body),
                )
                .ok()
            }
            _ => None,
        }
    }
}

/// The ApiVersions body listing every served API with `error_code`.
pub fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .filter_map(|key| {
            supported_versions(*key).map(|range| {
                ApiVersion::default()
                    .with_api_key(*key as i16)
                    .with_min_version(range.min)
                    .with_max_version(range.max)
            })
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

/// Decodes one frame (without its length prefix).
pub fn decode_request(frame: Bytes) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let mut peek = &frame[..8];
    let raw_key = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let api_key = ApiKey::try_from(raw_key).map_err(|()| DecodeError::UnknownApiKey {
        api_key: raw_key,
        correlation_id,
    })?;
    if !is_supported(api_key, version) {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    }
    let malformed = |reason: String| DecodeError::Malformed {
        api_key,
        version,
        correlation_id,
        reason,
    };
    let mut buf = frame;
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut buf, header_version)
        .map_err(|e| malformed(format!("header: {e}")))?;
    let body =
        RequestKind::decode(api_key, &mut buf, version).map_err(|e| malformed(e.to_string()))?;
    // Trailing bytes are tolerated, as Kafka does: some clients pad requests (librdkafka 2.16
    // sends three extra bytes after a Metadata v13 body), and every field was already read.
    Ok(Request {
        header,
        api_key,
        body,
    })
}

/// Encodes a response frame, length prefix included.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    let header_version = api_key.response_header_version(version);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .map_err(|e| EncodeError(e.to_string()))?;
    body.encode(&mut buf, version)
        .map_err(|e| EncodeError(e.to_string()))?;
    let len = i32::try_from(buf.len() - 4)
        .map_err(|_| EncodeError(format!("response of {} bytes is too large", buf.len())))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// A response that cannot be encoded (a bug in a handler, or a value the version cannot carry).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode response: {0}")]
pub struct EncodeError(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;
    use kafka_protocol::protocol::StrBytes;

    fn frame(key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("t")))
            .encode(&mut buf, key.request_header_version(version))
            .expect("header encodes");
        body.encode(&mut buf, version).expect("body encodes");
        buf.freeze()
    }

    #[test]
    fn decodes_api_versions_v3() {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("x"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        let decoded = decode_request(frame(ApiKey::ApiVersions, 3, &req)).expect("decodes");
        assert_eq!(decoded.correlation_id(), 7);
        assert!(matches!(decoded.body, RequestKind::ApiVersions(_)));
    }

    #[test]
    fn unknown_api_versions_version_gets_v0_answer() {
        let mut raw = BytesMut::new();
        raw.put_i16(ApiKey::ApiVersions as i16);
        raw.put_i16(127);
        raw.put_i32(99);
        raw.put_i16(-1);
        let err = decode_request(raw.freeze()).expect_err("v127 is unknown");
        let resp = err.fallback_response().expect("ApiVersions gets an answer");
        let mut body = resp.slice(4..);
        assert_eq!(body.get_i32(), 99, "correlation id");
        let decoded = ApiVersionsResponse::decode(&mut body, 0).expect("v0 decodes");
        assert_eq!(decoded.error_code, 35);
        assert!(!decoded.api_keys.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode_request(Bytes::from(bytes));
        }
    }

    #[test]
    fn unknown_key_is_an_error() {
        let mut raw = BytesMut::new();
        raw.put_i16(999);
        raw.put_i16(0);
        raw.put_i32(1);
        assert!(matches!(
            decode_request(raw.freeze()),
            Err(DecodeError::UnknownApiKey { api_key: 999, .. })
        ));
    }
}
