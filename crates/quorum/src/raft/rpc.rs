//! How controllers talk (`docs/design/cluster.md` §2.5): Kafka framing with one private API
//! key, so that internal traffic shares the listener machinery (size limits, and later TLS
//! and SASL) with every other connection.
//!
//! A request is a size-prefixed frame with a request header v2 (`api_key` =
//! [`STRATA_INTERNAL`], `api_version` = [`INTERNAL_VERSION`], a correlation id, the client
//! id `strata-controller`, no tagged fields), then a `u16` kind and the message as JSON. The
//! response is a size-prefixed frame with a response header v1 (the correlation id, no tagged
//! fields), then an `i16` error code (0, or [`UNSUPPORTED_VERSION`] for a version or kind
//! this node does not know) and the answer as JSON.
//!
//! Kinds: `Hello` (who the node is and whether its quorum is formed: a pristine voter asks
//! before forming one, so that a wiped disk never starts a second cluster beside a formed
//! one), `Vote`, `Append` and `Snapshot` (openraft's three RPCs, answered by the receiver's
//! Raft node, errors included), `ControllerOp` (a metadata change forwarded to the active
//! controller), `MetadataFetch` (a broker that is not a voter asks for the applied entries
//! after the ones it has, long-polling: `docs/design/cluster.md` §2.7).

use std::io;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::node::QuorumState;
use super::state_machine::{Fetched, MachineHandle};
use super::{ControllerNode, MetadataRaft, TypeConfig};
use crate::controller::ops::{ControllerOp, ControllerReply, OpError};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The private API key of controller-to-controller requests.
pub const STRATA_INTERNAL: i16 = 16000;
/// The internal protocol's version.
pub const INTERNAL_VERSION: i16 = 0;
/// Kafka's UNSUPPORTED_VERSION, for a version or kind this node does not speak.
pub const UNSUPPORTED_VERSION: i16 = 35;
/// Frames larger than this are refused (a snapshot travels in chunks well below it).
const MAX_FRAME: usize = 64 * 1024 * 1024;
const CLIENT_ID: &str = "strata-controller";

/// Who a node is, and whether its quorum is formed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub node_id: u64,
    /// Whether the node's Raft log holds a membership (its quorum was formed).
    pub initialized: bool,
    /// The index of the last entry the node applied (a joining node catches up to the
    /// leader's before it serves).
    #[serde(default)]
    pub applied: u64,
}

/// The longest a `MetadataFetch` waits for a newer entry.
const MAX_FETCH_WAIT: Duration = Duration::from_millis(1000);
/// About how many records one `MetadataFetch` answer carries.
const FETCH_RECORDS: usize = 20_000;

/// A broker that is not a voter asks for what follows the entries it has applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataFetch {
    pub node_id: u64,
    /// The index of the first entry it lacks (0: it has nothing yet, and wants the image).
    pub next: u64,
    /// How long to wait for that entry when it is not applied yet.
    pub max_wait_ms: u64,
}

/// The answer to a [`MetadataFetch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataFetched {
    /// The voter that answered.
    pub node_id: u64,
    /// The quorum's leader as that voter knows it, with its controller endpoint.
    pub leader: Option<(u64, ControllerNode)>,
    /// The quorum as that voter sees it (DescribeQuorum on a broker that is not a voter).
    pub quorum: QuorumState,
    pub fetched: Fetched,
}

/// A request between controllers.
#[derive(Debug, Serialize, Deserialize)]
pub enum InternalRequest {
    Hello(Hello),
    Vote(VoteRequest<u64>),
    Append(AppendEntriesRequest<TypeConfig>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A metadata change forwarded by a broker to the active controller.
    ControllerOp(ControllerOp),
    MetadataFetch(MetadataFetch),
}

/// Why a forwarded operation was not performed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardError {
    /// This node is not the active controller (the leader, if it knows one).
    NotController { leader: Option<u64> },
    /// The operation as a whole was refused.
    Refused(OpError),
    /// It could not be committed, or the controller failed.
    Failed(String),
}

/// The answer to an [`InternalRequest`] of the same kind.
#[derive(Debug, Serialize, Deserialize)]
pub enum InternalResponse {
    Hello(Hello),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// The reply and the metadata offset at which it holds.
    ControllerOp(Result<(ControllerReply, u64), ForwardError>),
    MetadataFetch(MetadataFetched),
}

/// A forwarded operation's outcome, to come.
pub type OpFuture =
    Pin<Box<dyn Future<Output = Result<(ControllerReply, u64), ForwardError>> + Send>>;

/// Performs metadata operations forwarded to this node (its controller).
pub trait OpService: Send + Sync {
    fn perform(&self, op: ControllerOp) -> OpFuture;
}

/// What a node's controller listener serves: its Raft node, and once the broker is up, its
/// controller's operations.
pub struct InternalServices {
    pub raft: MetadataRaft,
    pub node_id: u64,
    /// The image the Raft node applies to, for the brokers that fetch it.
    pub machine: MachineHandle,
    /// Who fetched it.
    pub observers: Arc<super::node::Observers>,
    pub ops: std::sync::OnceLock<Arc<dyn OpService>>,
}

impl InternalRequest {
    fn kind(&self) -> u16 {
        match self {
            InternalRequest::Hello(_) => 1,
            InternalRequest::Vote(_) => 2,
            InternalRequest::Append(_) => 3,
            InternalRequest::Snapshot(_) => 4,
            InternalRequest::ControllerOp(_) => 5,
            InternalRequest::MetadataFetch(_) => 6,
        }
    }
}

fn put_frame(body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// A request frame (size prefix included).
pub fn encode_request(correlation_id: i32, request: &InternalRequest) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    body.extend_from_slice(&STRATA_INTERNAL.to_be_bytes());
    body.extend_from_slice(&INTERNAL_VERSION.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    body.extend_from_slice(CLIENT_ID.as_bytes());
    body.push(0); // no tagged fields
    body.extend_from_slice(&request.kind().to_be_bytes());
    serde_json::to_writer(&mut body, request)?;
    Ok(put_frame(&body))
}

/// A response frame (size prefix included): the error code and, when it is 0, the answer.
fn encode_response(
    correlation_id: i32,
    error_code: i16,
    answer: Option<&InternalResponse>,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.push(0); // no tagged fields
    body.extend_from_slice(&error_code.to_be_bytes());
    if let Some(answer) = answer {
        serde_json::to_writer(&mut body, answer)?;
    }
    Ok(put_frame(&body))
}

fn bad(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Reads a Kafka unsigned varint at `pos`.
fn uvarint(bytes: &[u8], pos: &mut usize) -> io::Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos).ok_or_else(|| bad("truncated varint"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(bad("varint too long"))
}

fn take<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> io::Result<&'a [u8]> {
    let end = pos
        .checked_add(n)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(|| bad("truncated frame"))?;
    let slice = &bytes[*pos..end];
    *pos = end;
    Ok(slice)
}

/// A request frame's header: api key, version, correlation id, and where the body starts.
pub fn decode_request_header(frame: &[u8]) -> io::Result<(i16, i16, i32, usize)> {
    let mut pos = 0;
    let key = i16::from_be_bytes(take(frame, &mut pos, 2)?.try_into().expect("2 bytes"));
    let version = i16::from_be_bytes(take(frame, &mut pos, 2)?.try_into().expect("2 bytes"));
    let correlation = i32::from_be_bytes(take(frame, &mut pos, 4)?.try_into().expect("4 bytes"));
    let client_len = i16::from_be_bytes(take(frame, &mut pos, 2)?.try_into().expect("2 bytes"));
    if client_len > 0 {
        take(frame, &mut pos, client_len as usize)?;
    }
    for _ in 0..uvarint(frame, &mut pos)? {
        uvarint(frame, &mut pos)?;
        let size = uvarint(frame, &mut pos)?;
        take(
            frame,
            &mut pos,
            usize::try_from(size).map_err(|_| bad("tagged field size"))?,
        )?;
    }
    Ok((key, version, correlation, pos))
}

/// Reads one size-prefixed frame; `None` at a clean end of stream.
pub async fn read_frame(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= MAX_FRAME)
        .ok_or_else(|| bad(format!("frame size {size}")))?;
    let mut frame = vec![0u8; size];
    stream.read_exact(&mut frame).await?;
    Ok(Some(frame))
}

/// Answers one internal request body (after the header) with this node's Raft node.
pub async fn answer(services: &InternalServices, body: &[u8]) -> (i16, Option<InternalResponse>) {
    let (raft, node_id) = (&services.raft, services.node_id);
    let Some((kind, json)) = body.split_first_chunk::<2>() else {
        return (UNSUPPORTED_VERSION, None);
    };
    let kind = u16::from_be_bytes(*kind);
    let request: InternalRequest = match serde_json::from_slice(json) {
        Ok(r) => r,
        Err(error) => {
            tracing::warn!(kind, %error, "undecodable internal request");
            return (UNSUPPORTED_VERSION, None);
        }
    };
    if request.kind() != kind {
        return (UNSUPPORTED_VERSION, None);
    }
    let response = match request {
        InternalRequest::Hello(_) => InternalResponse::Hello(Hello {
            node_id,
            initialized: raft.is_initialized().await.unwrap_or(false),
            applied: raft.metrics().borrow().last_applied.map_or(0, |l| l.index),
        }),
        InternalRequest::Vote(rpc) => InternalResponse::Vote(raft.vote(rpc).await),
        InternalRequest::Append(rpc) => InternalResponse::Append(raft.append_entries(rpc).await),
        InternalRequest::Snapshot(rpc) => {
            InternalResponse::Snapshot(raft.install_snapshot(rpc).await)
        }
        InternalRequest::ControllerOp(op) => {
            InternalResponse::ControllerOp(match services.ops.get() {
                Some(ops) => ops.perform(op).await,
                None => Err(ForwardError::NotController {
                    leader: raft.current_leader().await.filter(|l| *l != node_id),
                }),
            })
        }
        InternalRequest::MetadataFetch(f) => {
            services.observers.fetched(f.node_id, f.next);
            if f.next == 0 && raft.current_leader().await == Some(node_id) {
                // The whole image, for a broker starting: everything committed is applied
                // first (a new leader may not have applied the previous term's entries yet).
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), raft.ensure_linearizable()).await;
            }
            let mut applied = services.machine.applied_offsets();
            let wait = Duration::from_millis(f.max_wait_ms).min(MAX_FETCH_WAIT);
            let _ = tokio::time::timeout(wait, applied.wait_for(|o| *o >= f.next)).await;
            InternalResponse::MetadataFetch(MetadataFetched {
                node_id,
                leader: super::node::leader_of(raft),
                quorum: super::node::QuorumState {
                    observers: services.observers.recent(),
                    ..super::node::describe(raft, node_id)
                },
                fetched: services.machine.fetch(f.next, FETCH_RECORDS),
            })
        }
    };
    (0, Some(response))
}

/// Serves one connection of another controller until it closes: internal requests only;
/// anything else closes the connection, as a Kafka controller does with requests it does not
/// serve.
pub async fn serve_connection(mut stream: TcpStream, services: Arc<InternalServices>) {
    let _ = stream.set_nodelay(true);
    loop {
        let frame = match read_frame(&mut stream).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "internal connection closed");
                return;
            }
        };
        let Ok((key, version, correlation, body)) = decode_request_header(&frame) else {
            return;
        };
        if key != STRATA_INTERNAL {
            tracing::info!(
                api_key = key,
                "closing a controller connection that sent a request a controller does not serve"
            );
            return;
        }
        let (code, response) = if version == INTERNAL_VERSION {
            answer(&services, &frame[body..]).await
        } else {
            (UNSUPPORTED_VERSION, None)
        };
        let Ok(bytes) = encode_response(correlation, code, response.as_ref()) else {
            return;
        };
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// One connection to another controller, opened on first use and again after an error.
#[derive(Debug)]
pub struct PeerConnection {
    address: String,
    stream: Option<TcpStream>,
    correlation_id: i32,
}

impl PeerConnection {
    pub fn new(address: String) -> Self {
        PeerConnection {
            address,
            stream: None,
            correlation_id: 0,
        }
    }

    /// Sends `request` and waits for its answer, at most `timeout` in all.
    pub async fn call(
        &mut self,
        request: &InternalRequest,
        timeout: Duration,
    ) -> io::Result<InternalResponse> {
        let result = tokio::time::timeout(timeout, self.call_once(request)).await;
        let result = result.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} did not answer in {timeout:?}", self.address),
            ))
        });
        if result.is_err() {
            // The connection's state is unknown: the next call opens a new one.
            self.stream = None;
        }
        result
    }

    async fn call_once(&mut self, request: &InternalRequest) -> io::Result<InternalResponse> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.address).await?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected");
        self.correlation_id = self.correlation_id.wrapping_add(1);
        stream
            .write_all(&encode_request(self.correlation_id, request)?)
            .await?;
        let frame = read_frame(stream).await?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the controller closed the connection",
            )
        })?;
        let mut pos = 0;
        let correlation =
            i32::from_be_bytes(take(&frame, &mut pos, 4)?.try_into().expect("4 bytes"));
        if correlation != self.correlation_id {
            return Err(bad(format!(
                "answer {correlation} to request {}",
                self.correlation_id
            )));
        }
        for _ in 0..uvarint(&frame, &mut pos)? {
            uvarint(&frame, &mut pos)?;
            let size = uvarint(&frame, &mut pos)?;
            take(
                &frame,
                &mut pos,
                usize::try_from(size).map_err(|_| bad("tagged field size"))?,
            )?;
        }
        let code = i16::from_be_bytes(take(&frame, &mut pos, 2)?.try_into().expect("2 bytes"));
        if code != 0 {
            return Err(bad(format!("the controller answered error {code}")));
        }
        serde_json::from_slice(&frame[pos..]).map_err(|e| bad(format!("undecodable answer: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_headers_are_kafkas() {
        let frame = encode_request(
            7,
            &InternalRequest::Hello(Hello {
                node_id: 3,
                initialized: false,
                applied: 0,
            }),
        )
        .expect("encode");
        let size = i32::from_be_bytes(frame[..4].try_into().expect("4")) as usize;
        assert_eq!(size, frame.len() - 4);
        let (key, version, correlation, body) = decode_request_header(&frame[4..]).expect("header");
        assert_eq!(
            (key, version, correlation),
            (STRATA_INTERNAL, INTERNAL_VERSION, 7)
        );
        assert_eq!(&frame[4 + body..4 + body + 2], &1u16.to_be_bytes());
        let request: InternalRequest =
            serde_json::from_slice(&frame[4 + body + 2..]).expect("json");
        assert!(matches!(
            request,
            InternalRequest::Hello(Hello { node_id: 3, .. })
        ));
        assert!(
            decode_request_header(&frame[4..10]).is_err(),
            "a short header is refused"
        );
    }
}
