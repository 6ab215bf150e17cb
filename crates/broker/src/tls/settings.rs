//! The TLS settings of one SSL listener, resolved from Kafka's `ssl.*` keys (listener-scoped
//! `listener.name.<name>.ssl.*` first) and checked without touching a file: what can be wrong
//! in the configuration alone stops start-up here, with the key in the message.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rustls::crypto::ring as provider;
use rustls::SupportedCipherSuite;

use super::principal_mapping::PrincipalMapper;
use crate::config::{listener_setting, InvalidConfig, SSL_HANDSHAKE_TIMEOUT_MS};

/// Where the listener's private key and certificate chain come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `ssl.keystore.location`: one PEM file with the key and the chain.
    File(PathBuf),
    /// `ssl.keystore.key` and `ssl.keystore.certificate.chain`, PEM text in the config.
    Inline { key: String, chain: String },
}

/// Where the CA certificates that client certificates must chain to come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustSource {
    /// `ssl.truststore.location`.
    File(PathBuf),
    /// `ssl.truststore.certificates`.
    Inline(String),
}

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for; every client is `User:ANONYMOUS`.
    None,
    /// A client certificate is asked for and verified when presented; a client without one
    /// is `User:ANONYMOUS`.
    Requested,
    /// Mutual TLS: a client without a valid certificate is refused.
    Required,
}

/// A TLS version rustls serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn rustls(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }
}

/// Everything an SSL listener needs, before any file is read.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub listener: String,
    pub keystore: KeySource,
    /// Needed when `client_auth` is not `None`; ignored otherwise.
    pub truststore: Option<TrustSource>,
    pub client_auth: ClientAuth,
    /// `ssl.key.password` was set: an encrypted key is explained rather than misread.
    pub key_password_set: bool,
    pub versions: Vec<TlsVersion>,
    /// `ssl.cipher.suites`; empty means every suite of the provider.
    pub cipher_suites: Vec<SupportedCipherSuite>,
    pub principal_mapper: PrincipalMapper,
    /// `strata.ssl.handshake.timeout.ms`.
    pub handshake_timeout: Duration,
}

const CONVERT_KEYSTORE: &str = "Strata reads PEM only: convert the keystore with \
    `openssl pkcs12 -in keystore.p12 -nodes -out keystore.pem` (a JKS keystore first with \
    `keytool -importkeystore -srckeystore keystore.jks -destkeystore keystore.p12 -deststoretype PKCS12`), \
    then set ssl.keystore.type=PEM and ssl.keystore.location to the PEM file (docs/security.md)";

const CONVERT_TRUSTSTORE: &str = "Strata reads PEM only: convert the truststore with \
    `openssl pkcs12 -in truststore.p12 -nokeys -out truststore.pem` (a JKS truststore first with \
    `keytool -importkeystore -srckeystore truststore.jks -destkeystore truststore.p12 -deststoretype PKCS12`), \
    then set ssl.truststore.type=PEM and ssl.truststore.location to the PEM file (docs/security.md)";

impl TlsSettings {
    /// Resolves the settings of SSL listener `listener` from the keys that were set.
    pub fn resolve(set: &BTreeMap<String, String>, listener: &str) -> Result<Self, InvalidConfig> {
        let get = |key: &str| listener_setting(set, listener, key);
        let given = |key: &str| get(key).filter(|(_, v)| !v.trim().is_empty());
        let bad =
            |(key, value): (String, String), reason: String| InvalidConfig { key, value, reason };
        let scoped = format!(
            "{}{}.",
            crate::config::LISTENER_PREFIX,
            listener.to_ascii_lowercase()
        );

        let keystore_type = get("ssl.keystore.type").expect("ssl.keystore.type has a default");
        let location = given("ssl.keystore.location");
        let inline_key = given("ssl.keystore.key");
        let inline_chain = given("ssl.keystore.certificate.chain");
        if location.is_none() && inline_key.is_none() && inline_chain.is_none() {
            return Err(bad(
                ("ssl.keystore.location".into(), String::new()),
                format!(
                    "listener {listener} uses SSL and needs a private key and certificate: set \
                     ssl.keystore.type=PEM and ssl.keystore.location to a PEM file holding both \
                     (or {scoped}ssl.keystore.location for this listener alone)"
                ),
            ));
        }
        check_pem_type(&keystore_type, CONVERT_KEYSTORE)?;
        if let Some(password) = given("ssl.keystore.password") {
            return Err(bad(
                (password.0, "(hidden)".into()),
                "a PEM keystore has no password (Kafka refuses it too); for an encrypted key see ssl.key.password".into(),
            ));
        }
        let keystore = match (location, inline_key, inline_chain) {
            (Some(location), None, None) => KeySource::File(PathBuf::from(location.1.trim())),
            (None, Some((_, key)), Some((_, chain))) => KeySource::Inline { key, chain },
            (Some(location), _, _) => {
                return Err(bad(
                    location,
                    "set either ssl.keystore.location or ssl.keystore.key with \
                     ssl.keystore.certificate.chain, not both"
                        .into(),
                ))
            }
            (None, key, _) => {
                let missing = if key.is_none() {
                    "ssl.keystore.key"
                } else {
                    "ssl.keystore.certificate.chain"
                };
                return Err(bad(
                    (missing.into(), String::new()),
                    "an inline PEM keystore needs both ssl.keystore.key and \
                     ssl.keystore.certificate.chain"
                        .into(),
                ));
            }
        };

        let client_auth = match get("ssl.client.auth")
            .expect("ssl.client.auth has a default")
            .1
            .trim()
        {
            "required" => ClientAuth::Required,
            "requested" => ClientAuth::Requested,
            _ => ClientAuth::None,
        };
        let truststore_type =
            get("ssl.truststore.type").expect("ssl.truststore.type has a default");
        let trust_location = given("ssl.truststore.location");
        let trust_inline = given("ssl.truststore.certificates");
        let truststore =
            match (trust_location, trust_inline) {
                (None, None) => None,
                (Some(location), Some(_)) => return Err(bad(
                    location,
                    "set either ssl.truststore.location or ssl.truststore.certificates, not both"
                        .into(),
                )),
                (location, inline) => {
                    check_pem_type(&truststore_type, CONVERT_TRUSTSTORE)?;
                    if let Some(password) = given("ssl.truststore.password") {
                        return Err(bad(
                            (password.0, "(hidden)".into()),
                            "a PEM truststore has no password (Kafka refuses it too)".into(),
                        ));
                    }
                    Some(match (location, inline) {
                        (Some((_, path)), _) => TrustSource::File(PathBuf::from(path.trim())),
                        (_, Some((_, pem))) => TrustSource::Inline(pem),
                        (None, None) => unreachable!("matched above"),
                    })
                }
            };
        if client_auth != ClientAuth::None && truststore.is_none() {
            return Err(bad(
                get("ssl.client.auth").expect("has a default"),
                format!(
                    "listener {listener} verifies client certificates and needs the CA \
                     certificates they chain to: set ssl.truststore.type=PEM and \
                     ssl.truststore.location (or {scoped}ssl.truststore.location)"
                ),
            ));
        }

        let protocols = get("ssl.enabled.protocols").expect("has a default");
        let versions = parse_versions(&protocols.1).map_err(|reason| bad(protocols, reason))?;
        let suites = get("ssl.cipher.suites").expect("has a default");
        let cipher_suites = parse_cipher_suites(&suites.1).map_err(|reason| bad(suites, reason))?;
        let rules = get("ssl.principal.mapping.rules").expect("has a default");
        let principal_mapper =
            PrincipalMapper::parse(&rules.1).map_err(|e| bad(rules, e.to_string()))?;
        Ok(TlsSettings {
            listener: listener.to_string(),
            keystore,
            truststore,
            client_auth,
            key_password_set: given("ssl.key.password").is_some(),
            versions,
            cipher_suites,
            principal_mapper,
            handshake_timeout: Duration::from_millis(
                listener_setting(set, listener, SSL_HANDSHAKE_TIMEOUT_MS)
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(10_000),
            ),
        })
    }

    /// The files the settings read, which certificate reloading watches.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let KeySource::File(path) = &self.keystore {
            files.push(path.clone());
        }
        if self.client_auth != ClientAuth::None {
            if let Some(TrustSource::File(path)) = &self.truststore {
                files.push(path.clone());
            }
        }
        files
    }
}

/// Refuses keystore and truststore types other than PEM, saying how to convert them.
fn check_pem_type((key, value): &(String, String), convert: &str) -> Result<(), InvalidConfig> {
    let kind = value.trim();
    if kind.eq_ignore_ascii_case("PEM") {
        return Ok(());
    }
    let reason = if kind.eq_ignore_ascii_case("JKS") || kind.eq_ignore_ascii_case("PKCS12") {
        let unset = if kind == "JKS" {
            " (Kafka's default when the type is not set)"
        } else {
            ""
        };
        format!("{kind}{unset} is a binary Java format. {convert}")
    } else {
        format!("unknown store type. {convert}")
    };
    Err(InvalidConfig {
        key: key.clone(),
        value: value.clone(),
        reason,
    })
}

/// `ssl.enabled.protocols`: TLSv1.2 and TLSv1.3 are served; older versions, which rustls does
/// not implement, are left out; at least one must remain.
fn parse_versions(value: &str) -> Result<Vec<TlsVersion>, String> {
    let mut versions = Vec::new();
    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let version = match name {
            "TLSv1.3" => TlsVersion::Tls13,
            "TLSv1.2" => TlsVersion::Tls12,
            "TLSv1.1" | "TLSv1" | "SSLv3" | "SSLv2Hello" => continue,
            other => {
                return Err(format!(
                    "unknown protocol {other:?} (expected TLSv1.2, TLSv1.3)"
                ))
            }
        };
        if !versions.contains(&version) {
            versions.push(version);
        }
    }
    if versions.is_empty() {
        return Err("no protocol Strata serves: list TLSv1.2 and/or TLSv1.3".into());
    }
    Ok(versions)
}

/// `ssl.cipher.suites` by IANA name; TLS 1.3 suites also by Java's names
/// (`TLS_AES_128_GCM_SHA256` for rustls's `TLS13_AES_128_GCM_SHA256`).
fn parse_cipher_suites(value: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    let available = provider::ALL_CIPHER_SUITES;
    let names = |s: &SupportedCipherSuite| {
        let name = s.suite().as_str().unwrap_or_default();
        let java = name.replacen("TLS13_", "TLS_", 1);
        (name, java)
    };
    let mut suites = Vec::new();
    for wanted in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let found = available.iter().find(|s| {
            let (name, java) = names(s);
            wanted == name || wanted == java
        });
        match found {
            Some(suite) => suites.push(*suite),
            None => {
                let known: Vec<String> = available.iter().map(|s| names(s).1).collect();
                return Err(format!(
                    "unknown cipher suite {wanted:?}; the suites available are {}",
                    known.join(",")
                ));
            }
        }
    }
    Ok(suites)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        crate::config::properties(pairs)
    }

    const PEM_FILE: &[(&str, &str)] = &[
        ("ssl.keystore.type", "PEM"),
        ("ssl.keystore.location", "/etc/strata/server.pem"),
    ];

    #[test]
    fn pem_keystore_file() {
        let s = TlsSettings::resolve(&set(PEM_FILE), "SSL").expect("valid");
        assert_eq!(s.keystore, KeySource::File("/etc/strata/server.pem".into()));
        assert_eq!(s.client_auth, ClientAuth::None);
        assert_eq!(s.versions, vec![TlsVersion::Tls12, TlsVersion::Tls13]);
        assert!(s.cipher_suites.is_empty());
        assert_eq!(s.files(), vec![PathBuf::from("/etc/strata/server.pem")]);
    }

    #[test]
    fn listener_scoped_keys_win() {
        let mut m = set(PEM_FILE);
        m.insert(
            "listener.name.secure.ssl.keystore.location".into(),
            "/etc/strata/secure.pem".into(),
        );
        m.insert(
            "listener.name.secure.ssl.client.auth".into(),
            "required".into(),
        );
        m.insert("ssl.truststore.type".into(), "PEM".into());
        m.insert(
            "ssl.truststore.location".into(),
            "/etc/strata/ca.pem".into(),
        );
        let s = TlsSettings::resolve(&m, "SECURE").expect("valid");
        assert_eq!(s.keystore, KeySource::File("/etc/strata/secure.pem".into()));
        assert_eq!(s.client_auth, ClientAuth::Required);
        assert_eq!(
            s.truststore,
            Some(TrustSource::File("/etc/strata/ca.pem".into()))
        );
        let other = TlsSettings::resolve(&m, "SSL").expect("valid");
        assert_eq!(
            other.keystore,
            KeySource::File("/etc/strata/server.pem".into())
        );
        assert_eq!(other.client_auth, ClientAuth::None);
    }

    #[test]
    fn inline_pem() {
        let m = set(&[
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.key", "-----BEGIN PRIVATE KEY-----..."),
            (
                "ssl.keystore.certificate.chain",
                "-----BEGIN CERTIFICATE-----...",
            ),
        ]);
        let s = TlsSettings::resolve(&m, "SSL").expect("valid");
        assert!(matches!(s.keystore, KeySource::Inline { .. }));
        assert!(s.files().is_empty());
        let m = set(&[
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.key", "-----BEGIN PRIVATE KEY-----..."),
        ]);
        let err = TlsSettings::resolve(&m, "SSL").expect_err("no chain");
        assert_eq!(err.key, "ssl.keystore.certificate.chain");
    }

    #[test]
    fn java_stores_are_refused_with_the_conversion() {
        for (kind, key) in [
            (None, "ssl.keystore.type"),
            (Some("JKS"), "ssl.keystore.type"),
            (Some("PKCS12"), "ssl.keystore.type"),
        ] {
            let mut m = set(&[("ssl.keystore.location", "/etc/strata/server.jks")]);
            if let Some(kind) = kind {
                m.insert("ssl.keystore.type".into(), kind.into());
            }
            let err = TlsSettings::resolve(&m, "SSL").expect_err("not PEM");
            assert_eq!(err.key, key);
            assert!(err.reason.contains("openssl pkcs12"), "{err}");
            assert!(err.reason.contains("ssl.keystore.type=PEM"), "{err}");
        }
        let mut m = set(PEM_FILE);
        m.insert(
            "ssl.truststore.location".into(),
            "/etc/strata/trust.p12".into(),
        );
        m.insert("ssl.truststore.type".into(), "PKCS12".into());
        let err = TlsSettings::resolve(&m, "SSL").expect_err("not PEM");
        assert_eq!(err.key, "ssl.truststore.type");
        assert!(err.reason.contains("-nokeys"), "{err}");
    }

    #[test]
    fn what_the_configuration_alone_gets_wrong() {
        let err = TlsSettings::resolve(&set(&[]), "SSL").expect_err("no keystore");
        assert_eq!(err.key, "ssl.keystore.location");
        assert!(
            err.reason
                .contains("listener.name.ssl.ssl.keystore.location"),
            "{err}"
        );

        let mut m = set(PEM_FILE);
        m.insert("ssl.keystore.password".into(), "secret".into());
        let err = TlsSettings::resolve(&m, "SSL").expect_err("PEM has no password");
        assert!(!err.to_string().contains("secret"), "{err}");

        let mut m = set(PEM_FILE);
        m.insert("ssl.client.auth".into(), "required".into());
        let err = TlsSettings::resolve(&m, "SSL").expect_err("no truststore");
        assert_eq!(err.key, "ssl.client.auth");
        assert!(err.reason.contains("ssl.truststore.location"), "{err}");

        let mut m = set(PEM_FILE);
        m.insert("ssl.enabled.protocols".into(), "TLSv1.1".into());
        let err = TlsSettings::resolve(&m, "SSL").expect_err("nothing left");
        assert_eq!(err.key, "ssl.enabled.protocols");

        let mut m = set(PEM_FILE);
        m.insert("ssl.principal.mapping.rules".into(), "RULE:x".into());
        let err = TlsSettings::resolve(&m, "SSL").expect_err("bad rule");
        assert_eq!(err.key, "ssl.principal.mapping.rules");
    }

    #[test]
    fn versions_and_suites() {
        let mut m = set(PEM_FILE);
        m.insert("ssl.enabled.protocols".into(), "TLSv1.1, TLSv1.3".into());
        m.insert(
            "ssl.cipher.suites".into(),
            "TLS_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
        );
        let s = TlsSettings::resolve(&m, "SSL").expect("valid");
        assert_eq!(s.versions, vec![TlsVersion::Tls13]);
        assert_eq!(s.cipher_suites.len(), 2);
        m.insert(
            "ssl.cipher.suites".into(),
            "TLS_RSA_WITH_RC4_128_MD5".into(),
        );
        let err = TlsSettings::resolve(&m, "SSL").expect_err("unknown suite");
        assert!(err.reason.contains("TLS_AES_128_GCM_SHA256"), "{err}");
    }
}
