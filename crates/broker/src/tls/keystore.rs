//! Reads an SSL listener's PEM keystore and truststore and builds its rustls `ServerConfig`.
//! Every failure names the file (or the inline key) and says what to do.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::settings::{ClientAuth, KeySource, TlsSettings, TrustSource};

/// Keystores and truststores are a few kilobytes; anything this large is not one.
const MAX_STORE_BYTES: u64 = 4 << 20;

/// Why a listener's certificates cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsLoadError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {origin} is larger than {MAX_STORE_BYTES} bytes; is it the right file?")]
    TooLarge { what: &'static str, origin: String },
    #[error("{what} {origin} is not PEM text (a JKS or PKCS12 file?); convert it to PEM as docs/security.md shows")]
    NotPem { what: &'static str, origin: String },
    #[error("{what} {origin} is not valid PEM: {reason}")]
    Pem {
        what: &'static str,
        origin: String,
        reason: String,
    },
    #[error(
        "{what} {origin} holds no certificate (expected -----BEGIN CERTIFICATE----- sections)"
    )]
    NoCertificate { what: &'static str, origin: String },
    #[error("keystore {origin} holds no private key (expected a -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY section)")]
    NoKey { origin: String },
    #[error("the private key in {origin} is encrypted{password}; Strata reads unencrypted PEM keys only: decrypt it with `openssl pkey -in {origin} -out key.pem` (keep the file readable by the broker's user alone) and remove ssl.key.password")]
    EncryptedKey { origin: String, password: String },
    #[error("keystore {origin}: {source}")]
    Key {
        origin: String,
        source: rustls::Error,
    },
    #[error("truststore {origin}: certificate {index} is not usable as a CA: {source}")]
    Trust {
        origin: String,
        index: usize,
        source: rustls::Error,
    },
    #[error("listener {listener}: {reason}")]
    Config { listener: String, reason: String },
}

/// The text of a store and where it came from, for messages.
struct Pem {
    what: &'static str,
    origin: String,
    bytes: Vec<u8>,
}

fn read_file(what: &'static str, path: &Path) -> Result<Pem, TlsLoadError> {
    let origin = path.display().to_string();
    let read = |source| TlsLoadError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_STORE_BYTES {
        return Err(TlsLoadError::TooLarge { what, origin });
    }
    let bytes = std::fs::read(path).map_err(read)?;
    Ok(Pem {
        what,
        origin,
        bytes,
    })
}

fn inline(what: &'static str, key: &'static str, text: &str) -> Pem {
    Pem {
        what,
        origin: key.to_string(),
        bytes: pem_lines(text).into_bytes(),
    }
}

/// PEM given inline in a properties file usually arrives as one line (continuation lines
/// joined by blanks: `-----BEGIN PRIVATE KEY----- MIIE... -----END PRIVATE KEY-----`), which
/// Kafka reads; this puts each section back on lines of its own. Text outside sections is
/// dropped (PEM parsers ignore it anyway).
fn pem_lines(text: &str) -> String {
    let section =
        regex::Regex::new(r"(?s)-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END ([A-Z0-9 ]+)-----")
            .expect("a valid regex");
    let mut out = String::with_capacity(text.len() + 64);
    for caps in section.captures_iter(text) {
        out.push_str(&format!("-----BEGIN {}-----\n", &caps[1]));
        for chunk in caps[2].split_whitespace() {
            out.push_str(chunk);
            out.push('\n');
        }
        out.push_str(&format!("-----END {}-----\n", &caps[3]));
    }
    out
}

impl Pem {
    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
        self.check_text()?;
        let certs = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.pem_error(e))?;
        if certs.is_empty() {
            return Err(TlsLoadError::NoCertificate {
                what: self.what,
                origin: self.origin.clone(),
            });
        }
        Ok(certs)
    }

    fn private_key(&self, key_password_set: bool) -> Result<PrivateKeyDer<'static>, TlsLoadError> {
        self.check_text()?;
        let text = String::from_utf8_lossy(&self.bytes);
        if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || text.contains("4,ENCRYPTED") {
            return Err(TlsLoadError::EncryptedKey {
                origin: self.origin.clone(),
                password: if key_password_set {
                    " (ssl.key.password)".into()
                } else {
                    String::new()
                },
            });
        }
        match PrivateKeyDer::from_pem_slice(&self.bytes) {
            Ok(key) => Ok(key),
            Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(TlsLoadError::NoKey {
                origin: self.origin.clone(),
            }),
            Err(e) => Err(self.pem_error(e)),
        }
    }

    fn check_text(&self) -> Result<(), TlsLoadError> {
        let text = std::str::from_utf8(&self.bytes).unwrap_or_default();
        if !text.contains("-----BEGIN ") {
            return Err(TlsLoadError::NotPem {
                what: self.what,
                origin: self.origin.clone(),
            });
        }
        Ok(())
    }

    fn pem_error(&self, e: rustls::pki_types::pem::Error) -> TlsLoadError {
        TlsLoadError::Pem {
            what: self.what,
            origin: self.origin.clone(),
            reason: e.to_string(),
        }
    }
}

/// The certificate chain (leaf first) and private key of a listener.
pub fn load_identity(
    settings: &TlsSettings,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsLoadError> {
    let (key_pem, chain_pem) = match &settings.keystore {
        KeySource::File(path) => {
            let pem = read_file("keystore", path)?;
            (pem, None)
        }
        KeySource::Inline { key, chain } => (
            inline("keystore", "ssl.keystore.key", key),
            Some(inline("keystore", "ssl.keystore.certificate.chain", chain)),
        ),
    };
    let key = key_pem.private_key(settings.key_password_set)?;
    let chain = chain_pem.as_ref().unwrap_or(&key_pem).certificates()?;
    Ok((chain, key))
}

/// The CA certificates client certificates must chain to.
fn load_roots(source: &TrustSource) -> Result<(RootCertStore, String), TlsLoadError> {
    let pem = match source {
        TrustSource::File(path) => read_file("truststore", path)?,
        TrustSource::Inline(text) => inline("truststore", "ssl.truststore.certificates", text),
    };
    let mut roots = RootCertStore::empty();
    for (index, cert) in pem.certificates()?.into_iter().enumerate() {
        roots.add(cert).map_err(|source| TlsLoadError::Trust {
            origin: pem.origin.clone(),
            index,
            source,
        })?;
    }
    Ok((roots, pem.origin))
}

/// What a listener accepts new connections with, and its certificate (for the logs).
pub struct Loaded {
    pub config: Arc<ServerConfig>,
    pub leaf: CertificateDer<'static>,
}

/// The listener's crypto: ring, not aws-lc-rs (which needs cmake and clang to build), with
/// `ssl.cipher.suites` when set. rustls deprecated ring's provider only because it lacks
/// post-quantum key exchange, which Kafka clients (OpenSSL, Java) do not offer to brokers by
/// default either.
fn provider(settings: &TlsSettings) -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    if !settings.cipher_suites.is_empty() {
        provider.cipher_suites = settings.cipher_suites.clone();
    }
    Arc::new(provider)
}

/// `ssl.enabled.protocols`.
fn versions(settings: &TlsSettings) -> Vec<&'static rustls::SupportedProtocolVersion> {
    settings.versions.iter().map(|v| v.rustls()).collect()
}

fn nothing_to_negotiate(settings: &TlsSettings, e: rustls::Error) -> TlsLoadError {
    TlsLoadError::Config {
        listener: settings.listener.clone(),
        reason: format!(
            "ssl.cipher.suites and ssl.enabled.protocols leave nothing to negotiate: {e}"
        ),
    }
}

/// Where the listener's key comes from, for messages.
fn keystore_origin(settings: &TlsSettings) -> String {
    match &settings.keystore {
        KeySource::File(path) => path.display().to_string(),
        KeySource::Inline { .. } => "ssl.keystore.key".into(),
    }
}

/// Reads the listener's files and builds the configuration new connections are accepted with.
pub fn server_config(settings: &TlsSettings) -> Result<Loaded, TlsLoadError> {
    let provider = provider(settings);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(settings))
        .map_err(|e| nothing_to_negotiate(settings, e))?;
    let builder = match (settings.client_auth, &settings.truststore) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(source)) => {
            let verifier = client_verifier(source, auth, provider)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let (chain, key) = load_identity(settings)?;
    let leaf = chain[0].clone();
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsLoadError::Key {
            origin: keystore_origin(settings),
            source,
        })?;
    // No TLS 1.3 session tickets. With a client certificate they follow the client's last
    // handshake message, and kafka-python, finding the socket readable with no request in
    // flight, drops the connection (its admin client gives up at once: 8 of 10 connections
    // failed before). Kafka clients reconnect rarely, so resumption saves little.
    config.send_tls13_tickets = 0;
    Ok(Loaded {
        config: Arc::new(config),
        leaf,
    })
}

/// What this broker connects to another broker's listener with, as a Kafka broker does with
/// the inter-broker listener's `ssl.*` keys: the truststore verifies the other broker's
/// certificate, and its name against the host of the endpoint it registered; when the listener
/// asks clients for a certificate (`ssl.client.auth`), this broker presents its keystore.
/// With `check_names` false (`ssl.endpoint.identification.algorithm` set empty, as Kafka
/// allows) the certificate must still chain to the truststore, but its names are not compared
/// with the host.
pub fn client_config(
    settings: &TlsSettings,
    check_names: bool,
) -> Result<Arc<ClientConfig>, TlsLoadError> {
    let Some(source) = &settings.truststore else {
        return Err(TlsLoadError::Config {
            listener: settings.listener.clone(),
            reason: "brokers connect to each other on this listener (inter.broker.listener.name) \
                     and check each other's certificates: set ssl.truststore.type=PEM and \
                     ssl.truststore.location (or ssl.truststore.certificates) to the CA that \
                     signed them"
                .into(),
        });
    };
    let (roots, origin) = load_roots(source)?;
    let provider = provider(settings);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(settings))
        .map_err(|e| nothing_to_negotiate(settings, e))?;
    let builder = if check_names {
        builder.with_root_certificates(roots)
    } else {
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsLoadError::Pem {
                    what: "truststore",
                    origin,
                    reason: e.to_string(),
                })?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
    };
    let config = if settings.client_auth == ClientAuth::None {
        builder.with_no_client_auth()
    } else {
        let (chain, key) = load_identity(settings)?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|source| TlsLoadError::Key {
                origin: keystore_origin(settings),
                source,
            })?
    };
    Ok(Arc::new(config))
}

/// Verifies a server's certificate as `.0` does, except that a name not matching the host is
/// accepted (`ssl.endpoint.identification.algorithm` empty).
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn client_verifier(
    source: &TrustSource,
    auth: ClientAuth,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsLoadError> {
    let (roots, origin) = load_roots(source)?;
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if auth == ClientAuth::Requested {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder.build().map_err(|e| TlsLoadError::Pem {
        what: "truststore",
        origin,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_pem_on_one_line_gets_its_lines_back() {
        let one_line = "-----BEGIN CERTIFICATE----- QUJD REVG -----END CERTIFICATE----- \
                        -----BEGIN PRIVATE KEY-----\nR0hJ\n-----END PRIVATE KEY-----";
        assert_eq!(
            pem_lines(one_line),
            "-----BEGIN CERTIFICATE-----\nQUJD\nREVG\n-----END CERTIFICATE-----\n\
             -----BEGIN PRIVATE KEY-----\nR0hJ\n-----END PRIVATE KEY-----\n"
        );
        let pem = inline("keystore", "ssl.keystore.certificate.chain", one_line);
        let certs = pem.certificates().expect("parses");
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].as_ref(), b"ABCDEF");
    }

    #[test]
    fn encrypted_keys_and_binary_stores_are_explained() {
        let encrypted = inline(
            "keystore",
            "ssl.keystore.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nQUJD\n-----END ENCRYPTED PRIVATE KEY-----",
        );
        let err = encrypted.private_key(true).expect_err("encrypted");
        assert!(matches!(err, TlsLoadError::EncryptedKey { .. }), "{err}");
        assert!(err.to_string().contains("openssl pkey"), "{err}");
        assert!(err.to_string().contains("ssl.key.password"), "{err}");
        // A PKCS12 file given as PEM: binary, no PEM section.
        let binary = Pem {
            what: "keystore",
            origin: "/etc/strata/keystore.p12".into(),
            bytes: vec![0x30, 0x82, 0x0a, 0x01, 0x02, 0x01, 0x03],
        };
        let err = binary.certificates().expect_err("not PEM");
        assert!(matches!(err, TlsLoadError::NotPem { .. }), "{err}");
        let no_key = inline(
            "keystore",
            "ssl.keystore.key",
            "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----",
        );
        assert!(matches!(
            no_key.private_key(false),
            Err(TlsLoadError::NoKey { .. })
        ));
    }
}
