//! One TCP connection to one broker, with several requests in flight at once.
//!
//! Requests are written under a lock in the order they are sent; a reader task matches each
//! response frame to its request by correlation id. When the connection opens it runs the
//! TLS handshake (SSL, SASL_SSL), reads the API versions the broker serves (ApiVersions),
//! then authenticates (SASL_PLAINTEXT, SASL_SSL: SaslHandshake and SaslAuthenticate) before
//! anything else is sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::security::{Exchange, Security};

type Writer = Box<dyn AsyncWrite + Send + Unpin>;
type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// Largest response frame accepted.
const MAX_FRAME: usize = 512 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    waiting: HashMap<i32, oneshot::Sender<Bytes>>,
    closed: Option<String>,
}

/// A connection to one broker.
pub struct Connection {
    addr: String,
    client_id: StrBytes,
    request_timeout: Duration,
    writer: tokio::sync::Mutex<Writer>,
    pending: Arc<Mutex<Pending>>,
    next_correlation: AtomicI32,
    versions: HashMap<i16, (i16, i16)>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// Connects (TLS when `security` says so), reads the broker's API versions and
    /// authenticates (SASL when `security` says so).
    pub async fn open(
        addr: &str,
        client_id: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
        security: &Security,
    ) -> Result<Connection> {
        let failed = |reason: String| Error::Connection {
            addr: addr.to_string(),
            reason,
        };
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                failed(format!(
                    "no answer within {} ms",
                    connect_timeout.as_millis()
                ))
            })?
            .map_err(|e| failed(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (read, write): (Reader, Writer) = match security.tls_config()? {
            None => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            Some(config) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| failed(format!("TLS server name {host}: {e}")))?;
                let tls = tokio::time::timeout(
                    connect_timeout,
                    tokio_rustls::TlsConnector::from(config).connect(name, stream),
                )
                .await
                .map_err(|_| failed("TLS handshake did not finish in time".into()))?
                .map_err(|e| failed(format!("TLS handshake failed: {e}")))?;
                let (read, write) = tokio::io::split(tls);
                (Box::new(read), Box::new(write))
            }
        };
        // Small answers come in few reads; large ones are read past the buffer.
        let mut read = tokio::io::BufReader::with_capacity(64 * 1024, read);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let reader_pending = pending.clone();
        let reader = tokio::spawn(async move {
            let reason = loop {
                let mut len = [0u8; 4];
                if let Err(e) = read.read_exact(&mut len).await {
                    break format!("connection closed ({e})");
                }
                let len = i32::from_be_bytes(len);
                if len < 4 || len as usize > MAX_FRAME {
                    break format!("bad response frame length {len}");
                }
                // Read into spare capacity: a large fetch answer is not zeroed first.
                let mut frame = BytesMut::with_capacity(len as usize);
                let mut body = (&mut read).take(len as u64);
                let mut failed = None;
                while frame.len() < len as usize {
                    match body.read_buf(&mut frame).await {
                        Ok(0) => {
                            failed = Some("connection closed mid-frame".to_string());
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            failed = Some(format!("connection closed ({e})"));
                            break;
                        }
                    }
                }
                if let Some(reason) = failed {
                    break reason;
                }
                let frame = frame.freeze();
                let correlation = (&frame[..4]).get_i32();
                let waiter = reader_pending
                    .lock()
                    .expect("pending lock")
                    .waiting
                    .remove(&correlation);
                if let Some(tx) = waiter {
                    let _ = tx.send(frame);
                }
            };
            let mut p = reader_pending.lock().expect("pending lock");
            p.closed = Some(reason);
            p.waiting.clear();
        });
        let mut conn = Connection {
            addr: addr.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            request_timeout,
            writer: tokio::sync::Mutex::new(write),
            pending,
            next_correlation: AtomicI32::new(1),
            versions: HashMap::new(),
            reader,
        };
        conn.versions = conn.read_versions().await?;
        if let Some(sasl) = &security.sasl {
            conn.authenticate(sasl).await?;
        }
        Ok(conn)
    }

    /// The SASL exchange: SaslHandshake v1, then the mechanism's tokens in SaslAuthenticate.
    async fn authenticate(&self, sasl: &crate::security::SaslConfig) -> Result<()> {
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let mechanism = sasl.mechanism.name();
        let handshake =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        let answer = self.send_at(1, &handshake).await?;
        if answer.error_code != 0 {
            let offered: Vec<String> = answer.mechanisms.iter().map(|m| m.to_string()).collect();
            return Err(Error::kafka(
                format!("SASL handshake for {mechanism}"),
                answer.error_code,
                Some(format!("the broker offers {}", offered.join(", "))),
            ));
        }
        let version = self.version::<SaslAuthenticateRequest>(2)?;
        let mut exchange = Exchange::new(sasl);
        let mut server: Option<Bytes> = None;
        while let Some(token) = exchange.next(server.as_deref())? {
            let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
            let answer = self.send_at(version, &request).await?;
            if answer.error_code != 0 {
                return Err(Error::kafka(
                    format!("SASL {mechanism} authentication as {}", sasl.username),
                    answer.error_code,
                    answer.error_message.map(|m| m.to_string()),
                ));
            }
            server = Some(answer.auth_bytes);
        }
        Ok(())
    }

    async fn read_versions(&self) -> Result<HashMap<i16, (i16, i16)>> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("strata-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response = self.send_at(3, &request).await?;
        if response.error_code == kafka_protocol::ResponseError::UnsupportedVersion.code() {
            // An older broker: it answered in v0 with what it supports.
            response = self.send_at(0, &ApiVersionsRequest::default()).await?;
        }
        crate::error::check(|| "ApiVersions".into(), response.error_code, None)?;
        Ok(response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect())
    }

    /// The broker address this connection is to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.pending.lock().expect("pending lock").closed.is_some()
    }

    /// The highest version of `R` both sides speak, at most `cap`.
    pub fn version<R: Request>(&self, cap: i16) -> Result<i16> {
        let key = api_name(R::KEY);
        let (min, max) = self
            .versions
            .get(&R::KEY)
            .copied()
            .ok_or_else(|| Error::Unsupported(key.clone()))?;
        let ours = R::VERSIONS;
        let ours_resp = <R::Response as Message>::VERSIONS;
        let high = max.min(cap).min(ours.max).min(ours_resp.max);
        let low = min.max(ours.min).max(ours_resp.min);
        if high < low {
            return Err(Error::Unsupported(format!(
                "{key} at a version this client speaks (broker: {min}-{max})"
            )));
        }
        Ok(high)
    }

    /// Sends `request` at the best version up to `cap`, built for that version by `build`.
    pub async fn send<R: Request>(
        &self,
        cap: i16,
        build: impl FnOnce(i16) -> R,
    ) -> Result<(i16, R::Response)> {
        let version = self.version::<R>(cap)?;
        let request = build(version);
        Ok((version, self.send_at(version, &request).await?))
    }

    fn frame<R: Request>(&self, version: i16, request: &R) -> Result<(i32, Bytes)> {
        let correlation = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let encode_err =
            |e: String| Error::Protocol(format!("cannot encode {}: {e}", api_name(R::KEY)));
        // Sized up front: a Produce frame of a megabyte is not grown by doubling.
        let body = request
            .compute_size(version)
            .map_err(|e| encode_err(e.to_string()))?;
        let mut buf = BytesMut::with_capacity(64 + self.client_id.len() + body);
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(self.client_id.clone()))
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| encode_err(e.to_string()))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| encode_err(e.to_string()))?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok((correlation, buf.freeze()))
    }

    async fn write(&self, frame: &[u8]) -> Result<()> {
        let mut writer = self.writer.lock().await;
        writer
            .write_all(frame)
            .await
            .map_err(|e| Error::Connection {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub async fn send_no_response<R: Request>(&self, version: i16, request: &R) -> Result<()> {
        let (_, frame) = self.frame(version, request)?;
        self.write(&frame).await
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn send_at<R: Request>(&self, version: i16, request: &R) -> Result<R::Response> {
        self.send_at_within(version, request, self.request_timeout)
            .await
    }

    /// Like [`Connection::send`], waiting up to `timeout` for the answer (JoinGroup waits
    /// for a whole rebalance, longer than other requests).
    pub async fn send_within<R: Request>(
        &self,
        cap: i16,
        timeout: Duration,
        build: impl FnOnce(i16) -> R,
    ) -> Result<R::Response> {
        let version = self.version::<R>(cap)?;
        let request = build(version);
        self.send_at_within(version, &request, timeout).await
    }

    async fn send_at_within<R: Request>(
        &self,
        version: i16,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response> {
        self.start(version, request)
            .await?
            .wait_within(timeout)
            .await
    }

    /// Writes `request` at `version` and returns at once, without waiting for the answer:
    /// several requests can be in flight on one connection, and the broker answers them in
    /// the order they were written. Callers that need an order between requests (the
    /// producer, per partition) write them from one task, one `start` after the other.
    pub async fn start<R: Request>(&self, version: i16, request: &R) -> Result<Reply<R>> {
        let (correlation, frame) = self.frame(version, request)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().expect("pending lock");
            if let Some(reason) = &p.closed {
                return Err(Error::Connection {
                    addr: self.addr.clone(),
                    reason: reason.clone(),
                });
            }
            p.waiting.insert(correlation, tx);
        }
        if let Err(e) = self.write(&frame).await {
            self.pending
                .lock()
                .expect("pending lock")
                .waiting
                .remove(&correlation);
            return Err(e);
        }
        Ok(Reply {
            addr: self.addr.clone(),
            pending: self.pending.clone(),
            correlation,
            version,
            timeout: self.request_timeout,
            rx,
            request: std::marker::PhantomData,
        })
    }
}

/// The answer to a request written by [`Connection::start`].
pub struct Reply<R> {
    addr: String,
    pending: Arc<Mutex<Pending>>,
    correlation: i32,
    version: i16,
    timeout: Duration,
    rx: oneshot::Receiver<Bytes>,
    request: std::marker::PhantomData<fn() -> R>,
}

impl<R: Request> Reply<R> {
    /// Waits for the answer up to the connection's request timeout.
    pub async fn wait(self) -> Result<R::Response> {
        let timeout = self.timeout;
        self.wait_within(timeout).await
    }

    /// Waits for the answer up to `timeout`.
    pub async fn wait_within(self, timeout: Duration) -> Result<R::Response> {
        let Reply {
            addr,
            pending,
            correlation,
            version,
            rx,
            ..
        } = self;
        let mut body = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(body)) => body,
            Ok(Err(_)) => {
                let reason = pending.lock().expect("pending lock").closed.clone();
                return Err(Error::Connection {
                    addr,
                    reason: reason.unwrap_or_else(|| "connection closed".into()),
                });
            }
            Err(_) => {
                pending
                    .lock()
                    .expect("pending lock")
                    .waiting
                    .remove(&correlation);
                return Err(Error::Timeout {
                    api: api_name(R::KEY),
                    addr,
                    ms: timeout.as_millis(),
                });
            }
        };
        let decode_err = |e: String| {
            Error::Protocol(format!(
                "cannot decode {} v{version} response: {e}",
                api_name(R::KEY)
            ))
        };
        ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| decode_err(e.to_string()))?;
        R::Response::decode(&mut body, version).map_err(|e| decode_err(e.to_string()))
    }
}

/// The API's name, for messages.
pub fn api_name(key: i16) -> String {
    ApiKey::try_from(key)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| format!("API {key}"))
}
