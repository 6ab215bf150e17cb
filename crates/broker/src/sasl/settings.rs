//! The SASL settings of one SASL listener, resolved from Kafka's keys at start-up: the
//! mechanisms it serves, the PLAIN users of its JAAS line, session lifetime and the limits on
//! failed attempts. Everything wrong in the configuration stops start-up here, with the key
//! in the message and never a password in it.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_sasl::jaas::{self, JaasEntry};
use strata_sasl::scram::ScramMechanism;

use crate::config::{
    listener_setting, InvalidConfig, LISTENER_PREFIX, SASL_FAILED_ATTEMPTS_WINDOW_MS,
    SASL_MAX_FAILED_ATTEMPTS,
};

/// Kafka's login modules, as JAAS lines name them.
pub const PLAIN_LOGIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";
pub const SCRAM_LOGIN_MODULE: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";
pub const OAUTHBEARER_LOGIN_MODULE: &str =
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule";

/// A mechanism a SASL listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
    OAuthBearer,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => strata_sasl::PLAIN,
            Mechanism::Scram(m) => m.name(),
            Mechanism::OAuthBearer => strata_sasl::OAUTHBEARER,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        if name == strata_sasl::PLAIN {
            return Some(Mechanism::Plain);
        }
        if name == strata_sasl::OAUTHBEARER {
            return Some(Mechanism::OAuthBearer);
        }
        ScramMechanism::from_name(name).map(Mechanism::Scram)
    }
}

/// Everything a SASL listener needs.
#[derive(Clone)]
pub struct SaslSettings {
    pub listener: String,
    /// Served mechanisms, in the order `sasl.enabled.mechanisms` lists them.
    pub mechanisms: Vec<Mechanism>,
    /// Mechanisms listed but not served (GSSAPI, ...): answered
    /// UNSUPPORTED_SASL_MECHANISM like any other.
    pub not_served: Vec<String>,
    /// PLAIN users and passwords: the `user_<name>` options of the PLAIN JAAS line.
    pub plain_users: BTreeMap<String, String>,
    /// How OAUTHBEARER tokens are checked, when the listener serves it.
    pub oauth: Option<std::sync::Arc<super::oauth::OAuthSettings>>,
    /// `connections.max.reauth.ms`; `None` when 0 (sessions do not expire).
    pub session_lifetime: Option<Duration>,
    /// `connection.failed.authentication.delay.ms`.
    pub failed_authentication_delay: Duration,
    /// `strata.sasl.max.failed.attempts` (0: no limit) within `..window.ms`.
    pub max_failed_attempts: u32,
    pub failed_attempts_window: Duration,
}

impl std::fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSettings")
            .field("listener", &self.listener)
            .field("mechanisms", &self.mechanisms)
            .field("plain_users", &self.plain_users.keys().collect::<Vec<_>>())
            .field("session_lifetime", &self.session_lifetime)
            .finish_non_exhaustive()
    }
}

impl SaslSettings {
    pub fn serves(&self, mechanism: Mechanism) -> bool {
        self.mechanisms.contains(&mechanism)
    }

    /// The served mechanisms' names, as SaslHandshake lists them.
    pub fn mechanism_names(&self) -> Vec<&'static str> {
        self.mechanisms.iter().map(|m| m.name()).collect()
    }

    /// Resolves the settings of SASL listener `listener` from the keys that were set.
    pub fn resolve(set: &BTreeMap<String, String>, listener: &str) -> Result<Self, InvalidConfig> {
        let get = |key: &str| listener_setting(set, listener, key);
        let scoped = format!("{LISTENER_PREFIX}{}.", listener.to_ascii_lowercase());
        let (mech_key, mech_value) =
            get("sasl.enabled.mechanisms").expect("sasl.enabled.mechanisms has a default");
        let mut mechanisms = Vec::new();
        let mut not_served = Vec::new();
        for name in mech_value
            .split(',')
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty())
        {
            match Mechanism::from_name(&name) {
                Some(m) if !mechanisms.contains(&m) => mechanisms.push(m),
                Some(_) => {}
                None => not_served.push(name),
            }
        }
        if mechanisms.is_empty() {
            return Err(InvalidConfig {
                key: mech_key,
                value: mech_value,
                reason: format!(
                    "listener {listener} uses SASL but enables no mechanism Strata serves \
                     (Kafka's default is GSSAPI, which Strata does not offer): set \
                     sasl.enabled.mechanisms (or {scoped}sasl.enabled.mechanisms) to PLAIN, \
                     SCRAM-SHA-256, SCRAM-SHA-512 and/or OAUTHBEARER"
                ),
            });
        }
        let mut plain_users = BTreeMap::new();
        let mut oauth_jaas = None;
        for mechanism in &mechanisms {
            let Some((key, entry)) = jaas_for(set, listener, mechanism.name())? else {
                if *mechanism == Mechanism::Plain {
                    return Err(InvalidConfig {
                        key: format!("{scoped}plain.sasl.jaas.config"),
                        value: String::new(),
                        reason: format!(
                            "listener {listener} enables PLAIN, whose users come from a JAAS line: set \
                             {scoped}plain.sasl.jaas.config (or sasl.jaas.config) to \
                             {PLAIN_LOGIN_MODULE} required username=\"admin\" password=\"...\" user_admin=\"...\" user_alice=\"...\";"
                        ),
                    });
                }
                continue;
            };
            let expected = login_module(*mechanism);
            if entry.login_module != expected {
                return Err(InvalidConfig {
                    key,
                    value: "(hidden)".into(),
                    reason: format!(
                        "the {} mechanism needs the login module {expected}, not {}",
                        mechanism.name(),
                        entry.login_module
                    ),
                });
            }
            match mechanism {
                Mechanism::Plain => {
                    for (name, password) in &entry.options {
                        if let Some(user) = name.strip_prefix("user_") {
                            if user.is_empty() {
                                return Err(InvalidConfig {
                                    key,
                                    value: "(hidden)".into(),
                                    reason: "an option user_ needs a user name after user_".into(),
                                });
                            }
                            plain_users.insert(user.to_string(), password.clone());
                        }
                    }
                }
                // SCRAM users live in the metadata; the line's username is this broker's
                // own login towards the others (`inter_broker::security`).
                Mechanism::Scram(_) => {}
                Mechanism::OAuthBearer => oauth_jaas = Some((key, entry)),
            }
        }
        let oauth = if mechanisms.contains(&Mechanism::OAuthBearer) {
            Some(std::sync::Arc::new(super::oauth::OAuthSettings::resolve(
                set, listener, oauth_jaas,
            )?))
        } else {
            None
        };
        let millis = |key: &str| -> u64 {
            get(key)
                .and_then(|(_, v)| v.trim().parse::<i64>().ok())
                .unwrap_or(0)
                .max(0) as u64
        };
        let reauth_ms = millis("connections.max.reauth.ms");
        Ok(SaslSettings {
            listener: listener.to_string(),
            mechanisms,
            not_served,
            plain_users,
            oauth,
            session_lifetime: (reauth_ms > 0).then(|| Duration::from_millis(reauth_ms)),
            failed_authentication_delay: Duration::from_millis(millis(
                "connection.failed.authentication.delay.ms",
            )),
            max_failed_attempts: u32::try_from(millis(SASL_MAX_FAILED_ATTEMPTS))
                .unwrap_or(u32::MAX),
            failed_attempts_window: Duration::from_millis(
                millis(SASL_FAILED_ATTEMPTS_WINDOW_MS).max(1),
            ),
        })
    }
}

/// The login module a mechanism's JAAS line names.
fn login_module(mechanism: Mechanism) -> &'static str {
    match mechanism {
        Mechanism::Plain => PLAIN_LOGIN_MODULE,
        Mechanism::Scram(_) => SCRAM_LOGIN_MODULE,
        Mechanism::OAuthBearer => OAUTHBEARER_LOGIN_MODULE,
    }
}

/// The JAAS line for `mechanism` on `listener`: `listener.name.<l>.<mechanism>.sasl.jaas.config`
/// wins over `sasl.jaas.config`, as in Kafka. `None` when neither is set.
pub(crate) fn jaas_for(
    set: &BTreeMap<String, String>,
    listener: &str,
    mechanism: &str,
) -> Result<Option<(String, JaasEntry)>, InvalidConfig> {
    let scoped = format!(
        "{LISTENER_PREFIX}{}.{}.sasl.jaas.config",
        listener.to_ascii_lowercase(),
        mechanism.to_ascii_lowercase()
    );
    let parse = |key: &str, text: &str| {
        jaas::parse(text).map_err(|e| InvalidConfig {
            key: key.to_string(),
            value: "(hidden)".into(),
            reason: e.to_string(),
        })
    };
    if let Some(text) = set.get(&scoped) {
        let entry = parse(&scoped, text)?;
        return Ok(Some((scoped, entry)));
    }
    let Some(text) = set.get("sasl.jaas.config") else {
        return Ok(None);
    };
    // The plain key holds one login module, like one entry of a JAAS file's KafkaServer
    // section: it serves the mechanisms of its module only.
    let entry = parse("sasl.jaas.config", text)?;
    let module = Mechanism::from_name(mechanism).map_or(SCRAM_LOGIN_MODULE, login_module);
    let known = [
        PLAIN_LOGIN_MODULE,
        SCRAM_LOGIN_MODULE,
        OAUTHBEARER_LOGIN_MODULE,
    ]
    .contains(&entry.login_module.as_str());
    if known && entry.login_module != module {
        return Ok(None);
    }
    Ok(Some(("sasl.jaas.config".to_string(), entry)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        crate::config::properties(pairs)
    }

    const PLAIN_JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";"#;

    #[test]
    fn kafkas_plain_and_scram_listener() {
        let s = SaslSettings::resolve(
            &set(&[
                ("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-256,GSSAPI"),
                ("listener.name.sasl_plaintext.plain.sasl.jaas.config", PLAIN_JAAS),
                (
                    "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config",
                    r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="b";"#,
                ),
                ("connections.max.reauth.ms", "60000"),
            ]),
            "SASL_PLAINTEXT",
        )
        .expect("resolves");
        assert_eq!(
            s.mechanisms,
            vec![Mechanism::Plain, Mechanism::Scram(ScramMechanism::Sha256)]
        );
        assert_eq!(s.not_served, vec!["GSSAPI".to_string()]);
        assert_eq!(s.plain_users.len(), 2);
        assert_eq!(s.plain_users["alice"], "alice-secret");
        assert_eq!(s.session_lifetime, Some(Duration::from_secs(60)));
        assert_eq!(s.failed_authentication_delay, Duration::from_millis(100));
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn the_listener_key_wins_and_the_plain_key_serves_every_listener() {
        let s = SaslSettings::resolve(
            &set(&[
                ("sasl.enabled.mechanisms", "SCRAM-SHA-512"),
                ("listener.name.client.sasl.enabled.mechanisms", "PLAIN"),
                ("sasl.jaas.config", PLAIN_JAAS),
            ]),
            "CLIENT",
        )
        .expect("resolves");
        assert_eq!(s.mechanisms, vec![Mechanism::Plain]);
        assert_eq!(s.session_lifetime, None);
        // The plain key's PlainLoginModule does not serve SCRAM.
        let settings = set(&[
            ("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-512"),
            ("sasl.jaas.config", PLAIN_JAAS),
        ]);
        let s = SaslSettings::resolve(&settings, "CLIENT").expect("resolves");
        assert_eq!(s.plain_users.len(), 2);
        assert!(jaas_for(&settings, "CLIENT", "SCRAM-SHA-512")
            .expect("parses")
            .is_none());
    }

    #[test]
    fn start_up_errors() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "enables no mechanism"),
            (&[("sasl.enabled.mechanisms", "GSSAPI,OTHER")], "enables no mechanism"),
            (&[("sasl.enabled.mechanisms", "PLAIN")], "plain.sasl.jaas.config"),
            (
                &[
                    ("sasl.enabled.mechanisms", "PLAIN"),
                    ("sasl.jaas.config", "org.apache.kafka.common.security.plain.PlainLoginModule required password=\"hunter2;"),
                ],
                "not closed",
            ),
            (
                &[
                    ("sasl.enabled.mechanisms", "PLAIN"),
                    ("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"a\" password=\"hunter2\";"),
                ],
                "plain.sasl.jaas.config",
            ),
            (
                &[
                    ("sasl.enabled.mechanisms", "PLAIN"),
                    ("listener.name.sasl_plaintext.plain.sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"a\" password=\"hunter2\";"),
                ],
                "needs the login module",
            ),
            (
                &[
                    ("sasl.enabled.mechanisms", "PLAIN"),
                    ("sasl.jaas.config", "com.example.Other required;"),
                ],
                "needs the login module",
            ),
            (
                &[
                    ("sasl.enabled.mechanisms", "PLAIN"),
                    ("sasl.jaas.config", "org.apache.kafka.common.security.plain.PlainLoginModule required user_=\"hunter2\";"),
                ],
                "user name after user_",
            ),
        ];
        for (pairs, expected) in cases {
            let err = SaslSettings::resolve(&set(pairs), "SASL_PLAINTEXT").expect_err(expected);
            let shown = err.to_string();
            assert!(shown.contains(expected), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
