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
//!
//! The request loop is generic over the byte stream ([`Transport`]): a PLAINTEXT listener
//! serves the `TcpStream` itself (split without a lock, as before TLS existed), an SSL
//! listener the rustls stream its handshake produced (`crate::tls`), with the principal taken
//! from the client certificate. On a SASL listener every frame passes the SASL stage
//! (`crate::sasl`) before it is served: SaslHandshake and SaslAuthenticate (or a v0 client's
//! raw tokens) before any other request, re-authentication later; it works over either
//! stream unchanged and replaces `ConnectionContext::principal` with the SASL user.
//!
//! Client quotas (`crate::quota`): a Produce's request bytes and a Fetch's record bytes are
//! counted against the byte-rate quota of the connection's (user, client id), and, when a
//! request quota exists, every request's handler time against its request-time quota
//! (`quota::request_time`: the time of the handler call, plus blocking-pool work done later
//! for a response completed later). When either pushes its rate over the quota, the response
//! carries the larger throttle in `throttle_time_ms` (every response with the field) and the
//! reader stops reading this connection's next request until the throttle ends, as Kafka
//! mutes a throttled channel (KIP-219: the response is not delayed, the connection is).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::FutureExt;
use strata_protocol::request::{decode_request, encode_response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::auth::{ConnectionContext, Principal};
use crate::broker::Broker;
use crate::connection_limits::ConnectionPermit;
use crate::handlers::{self, Reply};
use crate::log_throttle::LogThrottle;
use crate::quota::{request_time, set_throttle_time, QuotaKind};
use crate::sasl::{Outcome as SaslOutcome, SaslStage};
use crate::tls::{HandshakeError, ListenerTls};
use kafka_protocol::messages::{RequestKind, ResponseKind};
use strata_protocol::request::Request;

/// A connection's byte stream, split into the reader (this task) and the writer (its writer
/// task).
pub trait Transport: Send + 'static {
    type Reader: AsyncRead + Unpin + Send + 'static;
    type Writer: AsyncWrite + Unpin + Send + 'static;
    fn split(self) -> (Self::Reader, Self::Writer);
}

/// Plain TCP: two halves of one socket, no lock between them.
impl Transport for TcpStream {
    type Reader = tokio::net::tcp::OwnedReadHalf;
    type Writer = tokio::net::tcp::OwnedWriteHalf;
    fn split(self) -> (Self::Reader, Self::Writer) {
        self.into_split()
    }
}

/// TLS: one rustls session shared by both halves (a lock held only while a half is polled).
impl Transport for crate::tls::TlsStream {
    type Reader = tokio::io::ReadHalf<Self>;
    type Writer = tokio::io::WriteHalf<Self>;
    fn split(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self)
    }
}

/// Requests whose responses may be pending at once on one connection (lowered to
/// `queued.max.requests` when that is smaller).
pub const MAX_IN_FLIGHT: usize = 64;

type Pending = BoxFuture<'static, Option<Bytes>>;

/// When the connection last did something (a request read or a response written), in ms
/// since it opened, and how many responses are still owed: `connections.max.idle.ms` closes
/// a connection only when it owes nothing and nothing happened for that long (a long-polling
/// fetch is not idleness).
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
    owed: AtomicUsize,
    /// Until when (ms since opened) a quota throttle mutes the connection's reads.
    muted_until_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Mutes reads for `throttle_ms` from now (never shortening a longer mute).
    fn mute_for(&self, throttle_ms: u64) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.muted_until_ms
            .fetch_max(now.saturating_add(throttle_ms), Ordering::Relaxed);
    }

    /// When the current mute ends, if the connection is muted.
    fn muted_until(&self) -> Option<Instant> {
        let until =
            self.opened + Duration::from_millis(self.muted_until_ms.load(Ordering::Relaxed));
        (until > Instant::now()).then_some(until)
    }

    /// Resolves once the connection has been idle for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let due = last + idle;
            let now = Instant::now();
            if now < due {
                tokio::time::sleep_until(due).await;
            } else if self.owed.load(Ordering::Relaxed) == 0 {
                return;
            } else {
                // Responses are owed (a long poll): look again a little later.
                tokio::time::sleep_until(now + idle.min(Duration::from_secs(1))).await;
            }
        }
    }
}

/// Why the reader stopped.
enum FrameRead {
    Frame(BytesMut),
    Closed,
    TooLarge(i32),
}

async fn read_frame(reader: &mut (impl AsyncRead + Unpin), max_frame: usize) -> FrameRead {
    let mut len_buf = [0u8; 4];
    if reader.read_exact(&mut len_buf).await.is_err() {
        return FrameRead::Closed;
    }
    let len = i32::from_be_bytes(len_buf);
    if len < 0 || len as usize > max_frame {
        return FrameRead::TooLarge(len);
    }
    let mut frame = BytesMut::zeroed(len as usize);
    if reader.read_exact(&mut frame).await.is_err() {
        return FrameRead::Closed;
    }
    FrameRead::Frame(frame)
}

/// Serves one accepted connection: the TLS handshake first on an SSL listener (`tls`), then
/// requests until the client closes, the connection idles out, or the broker shuts down.
/// The permit (a connection counted against `max.connections`) is held throughout.
pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: String,
    tls: Option<Arc<ListenerTls>>,
    mut shutdown: watch::Receiver<bool>,
    _permit: ConnectionPermit,
) {
    let _ = stream.set_nodelay(true);
    crate::server::apply_socket_buffers(&stream, &broker.config);
    let mut ctx = ConnectionContext {
        peer,
        listener,
        principal: Principal::anonymous(),
        connection_id: broker.new_connection_id(),
        authorizer: broker.authorizer.clone(),
        api: Default::default(),
    };
    let sasl = broker
        .config
        .sasl
        .get(&ctx.listener)
        .map(|settings| SaslStage::new(settings.clone()));
    let Some(tls) = tls else {
        return serve_requests(broker, stream, ctx, sasl, shutdown).await;
    };
    let established = tokio::select! {
        established = tls.handshake(stream) => established,
        _ = shutdown.changed() => return,
    };
    match established {
        Ok(established) => {
            ctx.principal = established.principal;
            tracing::debug!(
                %peer,
                listener = %ctx.listener,
                principal = %ctx.principal,
                subject = established.subject.as_deref().unwrap_or("(no client certificate)"),
                "TLS connection established"
            );
            serve_requests(broker, established.stream, ctx, sasl, shutdown).await
        }
        // INFO at most (Kafka logs failed authentications at INFO), and a client retrying
        // with the wrong settings must not flood the log: one INFO line per kind per 10 s.
        Err(error) => {
            static THROTTLES: [LogThrottle; HandshakeError::KINDS] =
                [const { LogThrottle::new() }; HandshakeError::KINDS];
            match THROTTLES[error.kind()].admit() {
                Some(suppressed) => {
                    tracing::info!(%peer, listener = %ctx.listener, %error, similar_since_last = suppressed, "closing connection")
                }
                None => {
                    tracing::debug!(%peer, listener = %ctx.listener, %error, "closing connection")
                }
            }
        }
    }
}

/// The request loop of one connection, over a plain or a TLS stream; on a SASL listener
/// every frame passes the SASL stage first (`sasl`).
async fn serve_requests<T: Transport>(
    broker: Arc<Broker>,
    stream: T,
    mut ctx: ConnectionContext,
    mut sasl: Option<SaslStage>,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = ctx.peer;
    let (mut reader, mut writer) = stream.split();
    let in_flight = MAX_IN_FLIGHT.min(broker.config.queued_max_requests).max(1);
    let (tx, mut rx) = mpsc::channel::<Pending>(in_flight);
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        last_ms: AtomicU64::new(0),
        owed: AtomicUsize::new(0),
        muted_until_ms: AtomicU64::new(0),
    });
    let writer_activity = activity.clone();
    let writer_task = tokio::spawn(async move {
        while let Some(pending) = rx.recv().await {
            let answer = pending.await;
            if let Some(bytes) = answer {
                // The flush is free on TCP; TLS may hold encrypted bytes the socket did not
                // take yet.
                if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
            writer_activity.touch();
            writer_activity.owed.fetch_sub(1, Ordering::Relaxed);
        }
        let _ = writer.shutdown().await;
    });
    let max_frame = broker.config.socket_request_max_bytes;
    let idle = broker.config.connections_max_idle;
    loop {
        if let Some(until) = activity.muted_until() {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = shutdown.changed() => break,
            }
        }
        let read = tokio::select! {
            r = read_frame(&mut reader, max_frame) => r,
            _ = shutdown.changed() => break,
            _ = activity.idle_for(idle) => {
                tracing::debug!(%peer, idle_ms = idle.as_millis() as u64, "closing connection idle longer than connections.max.idle.ms");
                break;
            }
        };
        let frame = match read {
            FrameRead::Frame(frame) => frame,
            FrameRead::Closed => break,
            FrameRead::TooLarge(len) if looks_like_tls(len) => {
                static THROTTLE: LogThrottle = LogThrottle::new();
                let why = "closing connection: the client started a TLS handshake on a listener without TLS (set security.protocol=PLAINTEXT in the client, or connect to an SSL listener)";
                match THROTTLE.admit() {
                    Some(suppressed) => {
                        tracing::info!(%peer, listener = %ctx.listener, similar_since_last = suppressed, "{why}")
                    }
                    None => tracing::debug!(%peer, listener = %ctx.listener, "{why}"),
                }
                break;
            }
            FrameRead::TooLarge(len) => {
                tracing::warn!(%peer, frame_bytes = len, limit = max_frame, "closing connection: request frame larger than socket.request.max.bytes");
                break;
            }
        };
        // A throttle that began while this read was waiting (a Fetch is charged when its
        // records are known, after the reader went on to the next read) holds the request
        // until it ends, as if the muted connection had not been read.
        if let Some(until) = activity.muted_until() {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = shutdown.changed() => break,
            }
        }
        activity.touch();
        let frame_bytes = frame.len();
        let read_at = std::time::Instant::now();
        // queued.max.requests: at most that many requests are being decoded and handled at
        // once, broker-wide; a connection that finds none free stops reading (one request
        // read ahead), as Kafka's network threads stop reading when the request queue is full.
        let slot = tokio::select! {
            s = broker.request_slots.clone().acquire_owned() => s,
            _ = shutdown.changed() => break,
        };
        let Ok(slot) = slot else { break };
        // The SASL stage: raw tokens after a v0 handshake, then every decoded request.
        let mut outcome = None;
        if let Some(stage) = sasl.as_mut().filter(|s| s.expects_raw_token()) {
            outcome = Some(stage.on_raw_token(&broker, &mut ctx, &frame));
        }
        let decoded = match outcome {
            Some(outcome) => Err(outcome),
            None => match decode_request(frame.freeze()) {
                Ok(request) => match sasl.as_mut() {
                    Some(stage) => stage.on_request(&broker, &mut ctx, request).map(Ok),
                    None => Ok(Ok(request)),
                },
                Err(error) => Ok(Err(error)),
            },
        };
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err(SaslOutcome::Close) => break,
            Err(SaslOutcome::Answer(answer)) => {
                drop(slot);
                activity.owed.fetch_add(1, Ordering::Relaxed);
                if tx.send(async move { Some(answer) }.boxed()).await.is_err() {
                    break;
                }
                continue;
            }
            Err(SaslOutcome::AnswerAndClose { answer, delay }) => {
                // connection.failed.authentication.delay.ms: the writer holds the answer back,
                // then the connection closes once it is written.
                drop(slot);
                activity.owed.fetch_add(1, Ordering::Relaxed);
                let answer = async move {
                    tokio::time::sleep(delay).await;
                    (!answer.is_empty()).then_some(answer)
                };
                let _ = tx.send(answer.boxed()).await;
                break;
            }
        };
        let pending: Pending = match decoded {
            Ok(request) => {
                let correlation_id = request.correlation_id();
                let api_key = request.api_key;
                let version = request.version();
                let timer = broker.metrics.request_timer(api_key, version, read_at);
                let quota = QuotaCharge::of(&request, &ctx, frame_bytes);
                let authenticating = sasl.as_ref().is_some_and(|s| !s.authenticated());
                let request_time = RequestTimeCharge::of(&broker, &request, &ctx, authenticating);
                let reply = handlers::handle(&broker, &ctx, request).await;
                let handled = request_time.as_ref().map(|r| r.started.elapsed());
                // A Produce is charged as soon as it is handled, so that the mute holds back
                // the requests behind it; a Fetch once its records are known.
                let produce_throttle_ms = quota
                    .as_ref()
                    .filter(|q| q.kind == QuotaKind::Produce)
                    .map(|q| q.record(&broker, q.request_bytes));
                if let Some(t) = produce_throttle_ms {
                    activity.mute_for(t);
                }
                // Only requests under a quota pay for the bookkeeping below: the response
                // carries the larger of the byte-rate and request-time throttles, and the
                // connection is muted for it.
                let measure_later = request_time.is_some();
                let settle = (quota.is_some() || request_time.is_some()).then(|| {
                    let (broker, activity) = (broker.clone(), activity.clone());
                    move |body: &mut ResponseKind, blocking: Duration| {
                        let bytes_ms = match &quota {
                            Some(q) => produce_throttle_ms
                                .unwrap_or_else(|| q.record(&broker, fetched_bytes(body))),
                            None => 0,
                        };
                        let request_ms = match (&request_time, handled) {
                            (Some(r), Some(handled)) => r.record(&broker, handled + blocking),
                            _ => 0,
                        };
                        let t = bytes_ms.max(request_ms);
                        activity.mute_for(t);
                        set_throttle_time(body, t);
                    }
                });
                match reply {
                    Reply::None => {
                        timer.finish();
                        continue;
                    }
                    Reply::Now(mut body) => {
                        if let Some(settle) = settle {
                            settle(&mut body, Duration::ZERO);
                        }
                        let encoded = encode_response(correlation_id, api_key, version, &body);
                        timer.finish();
                        async move { log_encode(encoded) }.boxed()
                    }
                    Reply::Later(fut) => async move {
                        // Blocking-pool work done for the response meanwhile counts as its
                        // handler time; waiting does not.
                        let (mut body, blocking) = if measure_later {
                            request_time::measured(fut).await
                        } else {
                            (fut.await, Duration::ZERO)
                        };
                        if let Some(settle) = settle {
                            settle(&mut body, blocking);
                        }
                        let encoded = encode_response(correlation_id, api_key, version, &body);
                        timer.finish();
                        log_encode(encoded)
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
        // The slot covers handling only: waiting for room in this connection's own queue
        // (a client not reading, a long poll ahead) must not hold up other connections.
        drop(slot);
        activity.owed.fetch_add(1, Ordering::Relaxed);
        if tx.send(pending).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer_task.await;
    // Sessions are tied to this connection; nobody else may use them now.
    broker
        .fetch_sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .release_connection(ctx.connection_id);
}

/// The (user, client id) a request is charged to: the principal's name and the header's
/// client id.
fn quota_subject(request: &Request, ctx: &ConnectionContext) -> (String, String) {
    (ctx.principal.name.clone(), request.client_id())
}

/// Whether a Fetch is a replica's (exempt from client quotas).
fn is_follower_fetch(request: &Request) -> bool {
    matches!(&request.body, RequestKind::Fetch(f) if f.replica_id.0 >= 0 || f.replica_state.replica_id.0 >= 0)
}

/// What a Produce or Fetch is charged against its client's byte-rate quota.
struct QuotaCharge {
    kind: QuotaKind,
    user: String,
    client_id: String,
    /// A Produce's request size; a Fetch is charged its response's record bytes.
    request_bytes: usize,
}

impl QuotaCharge {
    /// The charge of `request`, if it is one quotas count (not a follower's fetch).
    fn of(request: &Request, ctx: &ConnectionContext, frame_bytes: usize) -> Option<QuotaCharge> {
        let kind = match &request.body {
            RequestKind::Produce(_) => QuotaKind::Produce,
            RequestKind::Fetch(_) if !is_follower_fetch(request) => QuotaKind::Fetch,
            _ => return None,
        };
        let (user, client_id) = quota_subject(request, ctx);
        Some(QuotaCharge {
            kind,
            user,
            client_id,
            request_bytes: frame_bytes,
        })
    }

    /// Records `bytes` against the quota and answers the throttle time, in ms.
    fn record(&self, broker: &Broker, bytes: usize) -> u64 {
        broker
            .quotas
            .record(self.kind, &self.user, &self.client_id, bytes)
    }
}

/// A request measured for request-time quotas (`request_time`): only while some request
/// quota exists (one atomic load otherwise) and the request is not exempt.
struct RequestTimeCharge {
    user: String,
    client_id: String,
    started: std::time::Instant,
}

impl RequestTimeCharge {
    fn of(
        broker: &Broker,
        request: &Request,
        ctx: &ConnectionContext,
        authenticating: bool,
    ) -> Option<RequestTimeCharge> {
        if !broker.quotas.request_quotas_active() {
            return None;
        }
        if request_time::is_exempt(request.api_key, is_follower_fetch(request), authenticating) {
            return None;
        }
        let (user, client_id) = quota_subject(request, ctx);
        Some(RequestTimeCharge {
            user,
            client_id,
            started: std::time::Instant::now(),
        })
    }

    /// Records `handled` against the request quota and answers the throttle time, in ms.
    fn record(&self, broker: &Broker, handled: Duration) -> u64 {
        broker
            .quotas
            .record_request_time(&self.user, &self.client_id, handled)
    }
}

/// The record bytes of a Fetch response (0 for any other).
fn fetched_bytes(body: &ResponseKind) -> usize {
    match body {
        ResponseKind::Fetch(f) => f
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
            .sum(),
        _ => 0,
    }
}

/// Whether a request size is really the start of a TLS record: a handshake record (0x16)
/// of TLS 1.0-1.3 (0x03 0x01..0x04), as a ClientHello begins.
fn looks_like_tls(size: i32) -> bool {
    let [record, major, minor, _] = size.to_be_bytes();
    record == 0x16 && major == 0x03 && (0x01..=0x04).contains(&minor)
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
