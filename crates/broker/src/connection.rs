//! One client connection: frames in, responses out in request order.
//!
//! ```text
//!  socket ──read frame──▶ decode ──▶ handler (runs in order: appends keep arrival order)
//!                                        │ returns a pending response (may wait: acks=all
//!                                        ▼ durability, long-poll fetch)
//!                           bounded queue of pending responses (MAX_IN_FLIGHT)
//!                                        │
//!  socket ◀──write── writer task awaits each pending response in order
//! ```
//!
//! The queue bounds the requests in flight per connection: when a client stops reading its
//! responses, the writer blocks, the queue fills, and the reader stops reading requests. A
//! frame larger than `socket.request.max.bytes`, an unknown API key, an unsupported version
//! (other than ApiVersions, which gets the v0 fallback answer) or a malformed request closes
//! the connection after one log line, as Kafka does.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::FutureExt;
use strata_protocol::request::{decode_request, encode_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::auth::{ConnectionContext, Principal};
use crate::broker::Broker;
use crate::handlers::{self, Reply};

/// Requests whose responses may be pending at once on one connection.
pub const MAX_IN_FLIGHT: usize = 64;

type Pending = BoxFuture<'static, Option<Bytes>>;

pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    let writer_task = tokio::spawn(async move {
        while let Some(pending) = rx.recv().await {
            if let Some(bytes) = pending.await {
                if writer.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
        let _ = writer.shutdown().await;
    });
    let ctx = ConnectionContext {
        peer,
        listener,
        principal: Principal::anonymous(),
    };
    let max_frame = broker.config.socket_request_max_bytes;
    loop {
        let mut len_buf = [0u8; 4];
        let read = tokio::select! {
            r = reader.read_exact(&mut len_buf) => r,
            _ = shutdown.changed() => break,
        };
        if read.is_err() {
            break;
        }
        let len = i32::from_be_bytes(len_buf);
        if len < 0 || len as usize > max_frame {
            tracing::warn!(%peer, frame_bytes = len, limit = max_frame, "closing connection: request frame larger than socket.request.max.bytes");
            break;
        }
        let mut frame = BytesMut::zeroed(len as usize);
        if reader.read_exact(&mut frame).await.is_err() {
            break;
        }
        let pending: Pending = match decode_request(frame.freeze()) {
            Ok(request) => {
                let correlation_id = request.correlation_id();
                let api_key = request.api_key;
                let version = request.version();
                match handlers::handle(&broker, &ctx, request).await {
                    Reply::None => continue,
                    Reply::Now(body) => {
                        let encoded = encode_response(correlation_id, api_key, version, &body);
                        async move { log_encode(encoded) }.boxed()
                    }
                    Reply::Later(fut) => async move {
                        let body = fut.await;
                        log_encode(encode_response(correlation_id, api_key, version, &body))
                    }
                    .boxed(),
                }
            }
            Err(error) => match error.fallback_response() {
                Some(answer) => {
                    tracing::info!(%peer, %error, "answering with the supported ApiVersions");
                    async move { Some(answer) }.boxed()
                }
                None => {
                    tracing::warn!(%peer, %error, "closing connection");
                    break;
                }
            },
        };
        if tx.send(pending).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer_task.await;
}

fn log_encode(encoded: Result<Bytes, strata_protocol::request::EncodeError>) -> Option<Bytes> {
    match encoded {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::error!(%error, "dropping a response that cannot be encoded");
            None
        }
    }
}
