//! How the client secures its connections: Kafka's client keys (`security.protocol`,
//! `sasl.mechanism`, `sasl.username`/`sasl.password` or `sasl.jaas.config`,
//! `ssl.ca.location`), TLS through rustls, and the SASL exchange (PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512) a connection runs after ApiVersions and before any other request.
//!
//! Sessions are not re-authenticated (KIP-368): a broker with `connections.max.reauth.ms`
//! closes a connection of this client at its first request after the session ended, and the
//! client reconnects (its requests are retried as after any closed connection).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use strata_sasl::scram::{ScramClient, ScramMechanism};

use crate::error::{Error, Result};

/// `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name (`security.protocol`, a listener's protocol), in any case.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// A SASL mechanism this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(ScramMechanism),
}

impl SaslMechanism {
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, in any case.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(SaslMechanism::Plain),
            other => ScramMechanism::from_name(other).map(SaslMechanism::Scram),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => strata_sasl::PLAIN,
            SaslMechanism::Scram(m) => m.name(),
        }
    }
}

/// The SASL login.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Everything that secures a connection.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub protocol: SecurityProtocol,
    /// Needed with SASL_PLAINTEXT and SASL_SSL.
    pub sasl: Option<SaslConfig>,
    /// PEM file of the CAs the broker's certificate must chain to (SSL and SASL_SSL).
    pub ca_location: Option<PathBuf>,
    /// A TLS configuration built by the caller, used instead of `ca_location` (a broker
    /// connecting to another broker brings its own truststore and keystore).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

fn invalid(message: String) -> Error {
    Error::Invalid(message)
}

impl Security {
    /// From Kafka client properties: `security.protocol`, `sasl.mechanism` (or librdkafka's
    /// `sasl.mechanisms`), `sasl.username`/`sasl.password` or `sasl.jaas.config` (a
    /// PlainLoginModule or ScramLoginModule line with `username` and `password`), and
    /// `ssl.ca.location` (or `ssl.truststore.location` of a PEM truststore). Unknown keys
    /// are ignored, as clients ignore other clients' keys.
    pub fn from_properties(props: &BTreeMap<String, String>) -> Result<Self> {
        let get = |k: &str| props.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let name = get("security.protocol").unwrap_or("PLAINTEXT");
        let protocol = SecurityProtocol::from_name(name).ok_or_else(|| {
            invalid(format!(
                "security.protocol={}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
                name.to_ascii_uppercase()
            ))
        })?;
        let sasl = if protocol.sasl() {
            let name = get("sasl.mechanism")
                .or_else(|| get("sasl.mechanisms"))
                .unwrap_or("GSSAPI")
                .to_ascii_uppercase();
            let mechanism = SaslMechanism::from_name(&name).ok_or_else(|| {
                invalid(format!(
                    "sasl.mechanism={name}: this client speaks PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (set sasl.mechanism)"
                ))
            })?;
            let (mut username, mut password) = (
                get("sasl.username").map(str::to_string),
                get("sasl.password").map(str::to_string),
            );
            if let Some(jaas) = props.get("sasl.jaas.config") {
                let entry = strata_sasl::jaas::parse(jaas)
                    .map_err(|e| invalid(format!("sasl.jaas.config: {e}")))?;
                username = username.or(entry.option("username").map(str::to_string));
                password = password.or(entry.option("password").map(str::to_string));
            }
            let (Some(username), Some(password)) = (username, password) else {
                return Err(invalid(format!(
                    "security.protocol={protocol:?} needs sasl.username and sasl.password (or sasl.jaas.config with username and password)"
                )));
            };
            Some(SaslConfig {
                mechanism,
                username,
                password,
            })
        } else {
            None
        };
        let ca_location = get("ssl.ca.location")
            .or_else(|| {
                get("ssl.truststore.type")
                    .filter(|t| t.eq_ignore_ascii_case("PEM"))
                    .and(get("ssl.truststore.location"))
            })
            .map(PathBuf::from);
        if protocol.tls() && ca_location.is_none() {
            return Err(invalid(
                "TLS needs the CA that signed the broker's certificate: set ssl.ca.location to a PEM file".into(),
            ));
        }
        Ok(Security {
            protocol,
            sasl,
            ca_location,
            tls: None,
        })
    }

    /// The rustls configuration for TLS connections (`None` without TLS).
    pub fn tls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        if !self.protocol.tls() {
            return Ok(None);
        }
        if let Some(config) = &self.tls {
            return Ok(Some(config.clone()));
        }
        let path = self.ca_location.as_ref().ok_or_else(|| {
            invalid("TLS needs ssl.ca.location (the CA's PEM certificate)".into())
        })?;
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| invalid(format!("ssl.ca.location {}: {e}", path.display())))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| invalid(format!("ssl.ca.location {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("ssl.ca.location {}: {e}", path.display())))?;
        }
        if roots.is_empty() {
            return Err(invalid(format!(
                "ssl.ca.location {}: no certificate in the file",
                path.display()
            )));
        }
        // ring, as the broker's listeners (aws-lc-rs needs cmake and clang to build); its
        // provider is deprecated only for lacking post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Arc::new(config)))
    }
}

/// The tokens of one SASL exchange, from the client's side.
pub(crate) enum Exchange {
    Plain(Option<Vec<u8>>),
    Scram { client: ScramClient, step: u8 },
}

impl Exchange {
    pub(crate) fn new(sasl: &SaslConfig) -> Self {
        match sasl.mechanism {
            SaslMechanism::Plain => Exchange::Plain(Some(strata_sasl::plain::client_message(
                &sasl.username,
                &sasl.password,
            ))),
            SaslMechanism::Scram(m) => Exchange::Scram {
                client: ScramClient::new(m, &sasl.username, &sasl.password),
                step: 0,
            },
        }
    }

    /// The next token to send, given the server's last one (`None` before the first);
    /// `Ok(None)` when the exchange is complete.
    pub(crate) fn next(&mut self, server: Option<&[u8]>) -> Result<Option<Vec<u8>>> {
        let failed = |e: strata_sasl::SaslError| invalid(format!("SASL: {e}"));
        match self {
            Exchange::Plain(token) => Ok(token.take()),
            Exchange::Scram { client, step } => {
                *step += 1;
                match (*step, server) {
                    (1, _) => Ok(Some(client.first())),
                    (2, Some(first)) => client.final_message(first).map(Some).map_err(failed),
                    (3, Some(last)) => client
                        .verify_server_final(last)
                        .map(|()| None)
                        .map_err(failed),
                    _ => Err(invalid("SASL: the exchange went on past its end".into())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kafkas_client_keys() {
        let s = Security::from_properties(&props(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "alice"),
            ("sasl.password", "alice-secret"),
        ]))
        .expect("valid");
        assert_eq!(s.protocol, SecurityProtocol::SaslPlaintext);
        let sasl = s.sasl.expect("sasl");
        assert_eq!(sasl.mechanism, SaslMechanism::Scram(ScramMechanism::Sha512));
        assert!(!format!("{sasl:?}").contains("secret"));
        let s = Security::from_properties(&props(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.jaas.config", r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="bob" password="b";"#),
            ("ssl.ca.location", "/tmp/ca.pem"),
        ]))
        .expect("valid");
        assert_eq!(s.sasl.map(|s| s.username), Some("bob".into()));
        assert_eq!(
            Security::from_properties(&props(&[]))
                .map(|s| s.protocol)
                .ok(),
            Some(SecurityProtocol::Plaintext)
        );
    }

    #[test]
    fn refusals_say_which_key() {
        for (pairs, key) in [
            (&[("security.protocol", "TLS")][..], "security.protocol"),
            (
                &[
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", "GSSAPI"),
                ][..],
                "sasl.mechanism",
            ),
            (
                &[
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", "PLAIN"),
                ][..],
                "sasl.username",
            ),
            (&[("security.protocol", "SSL")][..], "ssl.ca.location"),
            (
                &[
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", "PLAIN"),
                    ("sasl.jaas.config", "x"),
                ][..],
                "sasl.jaas.config",
            ),
        ] {
            let err = Security::from_properties(&props(pairs))
                .expect_err(key)
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn plain_exchange_is_one_token() {
        let mut e = Exchange::new(&SaslConfig {
            mechanism: SaslMechanism::Plain,
            username: "a".into(),
            password: "b".into(),
        });
        assert_eq!(e.next(None).expect("first"), Some(b"\0a\0b".to_vec()));
        assert_eq!(e.next(Some(b"")).expect("done"), None);
    }
}
