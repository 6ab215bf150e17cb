//! `strata_protocol::request::decode_request` on arbitrary frames (the bytes after the 4-byte
//! length prefix, exactly what a connection hands it).
//!
//! Checks: it never panics (nor aborts on a huge allocation); an `Ok` request carries the API
//! key, version and correlation id of the frame's first 8 bytes at a supported version; every
//! error can be displayed, and `fallback_response()` never panics and answers only an
//! ApiVersions request at an unsupported version, with a well-formed v0 frame that echoes the
//! correlation id.
#![no_main]

/// The broker binary's allocator: a hostile element count makes a reservation (released when
/// decoding fails) instead of aborting, so the fuzzer sees what the broker would.
#[global_allocator]
static ALLOCATOR: strata_protocol::alloc::ReservingAllocator =
    strata_protocol::alloc::ReservingAllocator;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;
use strata_protocol::api::is_supported;
use strata_protocol::request::{decode_request, DecodeError};

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    match decode_request(frame) {
        Ok(req) => {
            assert!(data.len() >= 8);
            let raw_key = i16::from_be_bytes([data[0], data[1]]);
            let version = i16::from_be_bytes([data[2], data[3]]);
            let correlation_id = i32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            assert_eq!(req.api_key as i16, raw_key);
            assert_eq!(req.header.request_api_key, raw_key);
            assert_eq!(req.version(), version);
            assert_eq!(req.correlation_id(), correlation_id);
            assert!(
                is_supported(req.api_key, version),
                "decoded an unsupported {:?} v{version}",
                req.api_key
            );
        }
        Err(err) => {
            let _ = err.to_string();
            let fallback = err.fallback_response();
            match &err {
                DecodeError::UnsupportedVersion {
                    api_key: ApiKey::ApiVersions,
                    correlation_id,
                    ..
                } => {
                    let resp = fallback.expect("ApiVersions at an unknown version gets an answer");
                    let mut body = resp.clone();
                    let len = body.get_i32();
                    assert_eq!(len as usize, resp.len() - 4, "length prefix");
                    assert_eq!(body.get_i32(), *correlation_id, "correlation id");
                    let decoded = ApiVersionsResponse::decode(&mut body, 0).expect("v0 decodes");
                    assert_eq!(decoded.error_code, 35, "UNSUPPORTED_VERSION");
                }
                _ => assert!(fallback.is_none(), "unexpected fallback for {err}"),
            }
        }
    }
});
