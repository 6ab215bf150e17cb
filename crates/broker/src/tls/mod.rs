//! TLS for SSL listeners: Kafka's `ssl.*` configuration, the handshake, the client's principal
//! from its certificate, and certificate reloading.
//!
//! ```text
//!  BrokerConfig ──settings::TlsSettings::resolve──▶ TlsSettings  (no file read; config errors)
//!        │
//!  ListenerTls::load ──keystore::server_config──▶ rustls ServerConfig (files read; load errors)
//!        │                                          ▲ replaced whole by reload() when the files
//!        │                                          │ change (polled) or on SIGHUP; a broken
//!        │                                          │ file is logged and the old one kept
//!  connection ──ListenerTls::handshake──▶ Established { TLS stream, Principal }
//!                 │ client certificate's subject ──distinguished_name::rfc2253──▶
//!                 │ "CN=alice,OU=eng,O=acme,C=US" ──principal_mapping──▶ User:alice
//! ```
//!
//! A handshake uses the `ServerConfig` current when it starts; established connections keep
//! the session they negotiated. This module never reads a socket outside a handshake, and
//! never logs a handshake failure above INFO: a misconfigured client must not flood the log.

pub mod distinguished_name;
pub mod keystore;
pub mod principal_mapping;
pub mod settings;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;
use tokio::net::TcpStream;

pub use keystore::TlsLoadError;
pub use settings::{ClientAuth, TlsSettings};

use crate::auth::Principal;
use principal_mapping::NoMatchingRule;

/// The first byte of every TLS handshake record (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A TLS connection's stream. (rustls reads the socket 4 KiB at a time; a 32 KiB read buffer
/// under it measured no less broker CPU per GiB, so there is none.)
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// One SSL listener's TLS state: its settings and the configuration new connections get.
pub struct ListenerTls {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
    /// The files' state when they were last read (successfully or not), in
    /// `settings.files()` order.
    seen: Mutex<Vec<Option<FileStamp>>>,
}

/// What tells a file changed: a rewrite changes the modification time or length, a rename
/// over it the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamps(files: &[PathBuf]) -> Vec<Option<FileStamp>> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f).ok().map(|m| FileStamp {
                modified: m.modified().ok(),
                len: m.len(),
                inode: m.ino(),
            })
        })
        .collect()
}

/// An established TLS connection and who is on the other end.
pub struct Established {
    pub stream: TlsStream,
    pub principal: Principal,
    /// The client certificate's subject (RFC 2253), when it presented one.
    pub subject: Option<String>,
}

/// Why a connection on an SSL listener was closed before its first request.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake not finished within {0:?} (strata.ssl.handshake.timeout.ms)")]
    Timeout(Duration),
    #[error("the client did not start a TLS handshake (a plaintext client on an SSL listener? set security.protocol=SSL in the client)")]
    NotTls,
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("client certificate: {0}")]
    Certificate(String),
    #[error("{0}")]
    NoMatchingRule(#[from] NoMatchingRule),
}

impl HandshakeError {
    /// Which kind of failure this is, for throttling its log lines kind by kind.
    pub fn kind(&self) -> usize {
        match self {
            HandshakeError::Timeout(_) => 0,
            HandshakeError::NotTls => 1,
            HandshakeError::Tls(_) => 2,
            HandshakeError::Certificate(_) | HandshakeError::NoMatchingRule(_) => 3,
        }
    }

    pub const KINDS: usize = 4;
}

impl ListenerTls {
    /// Reads the listener's keystore (and truststore) and makes it ready to accept.
    pub fn load(settings: TlsSettings) -> Result<Arc<Self>, TlsLoadError> {
        let seen = stamps(&settings.files());
        let loaded = keystore::server_config(&settings)?;
        tracing::info!(
            listener = %settings.listener,
            certificate = %describe(&loaded.leaf),
            client_auth = ?settings.client_auth,
            "TLS ready"
        );
        Ok(Arc::new(ListenerTls {
            settings,
            current: RwLock::new(loaded.config),
            seen: Mutex::new(seen),
        }))
    }

    pub fn listener(&self) -> &str {
        &self.settings.listener
    }

    /// Re-reads the keystore and truststore when one of them changed since it was last read
    /// (or always, with `force`). `None` when nothing changed. On failure the previous
    /// configuration stays in use; the failed files are tried again only once they change.
    pub fn reload(&self, force: bool) -> Option<Result<(), TlsLoadError>> {
        let now = stamps(&self.settings.files());
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !force && *seen == now {
                return None;
            }
            *seen = now;
        }
        Some(keystore::server_config(&self.settings).map(|loaded| {
            tracing::info!(
                listener = %self.settings.listener,
                certificate = %describe(&loaded.leaf),
                "TLS certificates reloaded; new connections use them"
            );
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded.config;
        }))
    }

    /// The TLS handshake of a new connection, bounded by `strata.ssl.handshake.timeout.ms`,
    /// then the principal from the client certificate (`User:ANONYMOUS` without one).
    pub async fn handshake(&self, tcp: TcpStream) -> Result<Established, HandshakeError> {
        let timeout = self.settings.handshake_timeout;
        tokio::time::timeout(timeout, self.handshake_unbounded(tcp))
            .await
            .map_err(|_| HandshakeError::Timeout(timeout))?
    }

    async fn handshake_unbounded(&self, tcp: TcpStream) -> Result<Established, HandshakeError> {
        // A plaintext Kafka request starts with its size's high byte (0 for any request under
        // 16 MiB), a TLS handshake with 0x16: refuse the first without answering it
        // garbage (a TLS alert the client would read as a response size).
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(1) if first[0] == TLS_HANDSHAKE_RECORD => {}
            Ok(0) => {
                return Err(HandshakeError::Tls(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ))
            }
            Ok(_) => return Err(HandshakeError::NotTls),
            Err(e) => return Err(HandshakeError::Tls(e)),
        }
        let config = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let stream = tokio_rustls::TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .map_err(HandshakeError::Tls)?;
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first());
        let Some(leaf) = leaf else {
            return Ok(Established {
                stream,
                principal: Principal::anonymous(),
                subject: None,
            });
        };
        let subject = subject_of(leaf).map_err(HandshakeError::Certificate)?;
        let name = self.settings.principal_mapper.name_for(&subject)?;
        Ok(Established {
            stream,
            principal: Principal::user(name),
            subject: Some(subject),
        })
    }
}

/// A certificate's subject in RFC 2253 form, as Kafka's principal builder sees it.
pub fn subject_of(cert: &CertificateDer<'_>) -> Result<String, String> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| e.to_string())?;
    distinguished_name::rfc2253(parsed.subject()).map_err(|e| e.to_string())
}

/// `CN=... (serial 0a1b...)`, for the logs.
fn describe(cert: &CertificateDer<'_>) -> String {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(parsed) => {
            let subject =
                distinguished_name::rfc2253(parsed.subject()).unwrap_or_else(|e| format!("({e})"));
            let serial: String = parsed.serial().iter().map(|b| format!("{b:02x}")).collect();
            format!("{subject} (serial {serial})")
        }
        Err(e) => format!("(unparsable certificate: {e})"),
    }
}

/// Loads every SSL listener's certificates, by listener name.
pub fn load_listeners(
    config: &crate::config::BrokerConfig,
) -> Result<BTreeMap<String, Arc<ListenerTls>>, TlsLoadError> {
    config
        .tls
        .iter()
        .map(|(name, settings)| Ok((name.clone(), ListenerTls::load(settings.clone())?)))
        .collect()
}

/// Watches the SSL listeners' certificate files: checks them every `interval` (when given)
/// and re-reads them all on SIGHUP. SIGHUP is caught from this call on (not from the first
/// poll of the returned future), so a signal sent once the listeners accept never kills the
/// broker. The future runs until dropped.
pub fn watch_certificates(
    listeners: Vec<Arc<ListenerTls>>,
    interval: Option<Duration>,
) -> impl std::future::Future<Output = ()> + Send {
    let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot watch for SIGHUP; certificates are reloaded by polling only");
            None
        }
    };
    watch(listeners, interval, hangup)
}

async fn watch(
    listeners: Vec<Arc<ListenerTls>>,
    interval: Option<Duration>,
    mut hangup: Option<tokio::signal::unix::Signal>,
) {
    loop {
        let force = tokio::select! {
            _ = async {
                match interval {
                    Some(interval) => tokio::time::sleep(interval).await,
                    None => std::future::pending().await,
                }
            } => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::info!("SIGHUP: re-reading the TLS certificates");
                true
            }
        };
        for tls in &listeners {
            let tls = tls.clone();
            let outcome = tokio::task::spawn_blocking(move || (tls.reload(force), tls)).await;
            if let Ok((Some(Err(error)), tls)) = outcome {
                tracing::error!(
                    listener = %tls.listener(),
                    %error,
                    "cannot reload the TLS certificates; new connections keep using the previous ones"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    /// Made with `openssl req -x509 -multivalue-rdn -subj "/C=US/ST=CA/O=acme, inc./OU=eng+UID=42/CN=alice/emailAddress=alice@acme.io"`
    /// (OpenSSL 3.0; its own RFC 2253 output reverses the multi-valued RDN, Java's does not).
    const ALICE: &str = "-----BEGIN CERTIFICATE-----\n\
MIICUTCCAfegAwIBAgIUGsqs4eDUEu1lOpYCSSycx6KxQaMwCgYIKoZIzj0EAwIw\n\
fTELMAkGA1UEBhMCVVMxCzAJBgNVBAgMAkNBMRMwEQYDVQQKDAphY21lLCBpbmMu\n\
MR4wCgYDVQQLDANlbmcwEAYKCZImiZPyLGQBAQwCNDIxDjAMBgNVBAMMBWFsaWNl\n\
MRwwGgYJKoZIhvcNAQkBFg1hbGljZUBhY21lLmlvMCAXDTI2MTIwNTA0Mzc1MVoY\n\
DzIxMjYxMTExMDQzNzUxWjB9MQswCQYDVQQGEwJVUzELMAkGA1UECAwCQ0ExEzAR\n\
BgNVBAoMCmFjbWUsIGluYy4xHjAKBgNVBAsMA2VuZzAQBgoJkiaJk/IsZAEBDAI0\n\
MjEOMAwGA1UEAwwFYWxpY2UxHDAaBgkqhkiG9w0BCQEWDWFsaWNlQGFjbWUuaW8w\n\
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQ72Z5BVvEqL3z+W/uxnBFAZEW0M8BV\n\
MqWnLgHUMlBTmaQyO7di8UBI1iORgmp0KvGbU76kmRkl9K5K74Q5GTq+o1MwUTAd\n\
BgNVHQ4EFgQUeYiCzcwRlepTVay1FWvOUtnBNxwwHwYDVR0jBBgwFoAUeYiCzcwR\n\
lepTVay1FWvOUtnBNxwwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBF\n\
AiEAvpK/q28IKin7iasY77alrciRXbrP/Ah5Y4zIAVHH/7oCIAUiCCDbN7fFghSv\n\
PuEFnESN7fDeCRLbKGaCldheAxoe\n\
-----END CERTIFICATE-----";

    #[test]
    fn subject_of_an_openssl_certificate_is_javas_rfc2253_name() {
        let cert = CertificateDer::from_pem_slice(ALICE.as_bytes()).expect("PEM");
        assert_eq!(
            subject_of(&cert).expect("parses"),
            "1.2.840.113549.1.9.1=#160d616c6963654061636d652e696f,CN=alice,OU=eng+UID=42,O=acme\\, inc.,ST=CA,C=US"
        );
        assert_eq!(
            describe(&cert),
            format!(
                "{} (serial 1acaace1e0d412ed653a9602492c9cc7a2b141a3)",
                subject_of(&cert).expect("parses")
            )
        );
    }
}
