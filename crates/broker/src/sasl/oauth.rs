//! OAUTHBEARER on a SASL listener: which validator Kafka's keys choose, and the key set of
//! signed tokens, re-read from its file.
//!
//! | Kafka's setting | Strata |
//! |---|---|
//! | no server callback handler (Kafka's default) | unsigned tokens (`alg` `none`) with the `unsecuredValidator*` options of the OAuthBearerLoginModule line; a WARN at start-up says anyone can claim any principal |
//! | `sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler` (or the `...oauthbearer.secured...` name of Kafka 3.x) | tokens signed with a key of the JWKS at `sasl.oauthbearer.jwks.endpoint.url` (a `file:` URL), checked against `sasl.oauthbearer.expected.audience`/`.issuer`, principal from `sasl.oauthbearer.sub.claim.name`, skew `sasl.oauthbearer.clock.skew.seconds` |
//!
//! Every key can be scoped as Kafka scopes it: `listener.name.<l>.oauthbearer.<key>`, then
//! `listener.name.<l>.<key>`, then `<key>`. The key set is read at start-up (a missing or
//! malformed file stops it), again every `sasl.oauthbearer.jwks.endpoint.refresh.ms`, and
//! when a token names a key id the set lacks (a rotation), at most once per
//! `sasl.oauthbearer.jwks.endpoint.retry.backoff.ms`; a re-read that fails keeps the keys
//! it had and logs a WARN.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_sasl::jaas::JaasEntry;
use strata_sasl::oauthbearer::{Jwks, SignedRules, UnsecuredRules, ValidToken, Validator};
use strata_sasl::SaslError;

use crate::config::{broker_config_def, InvalidConfig, LISTENER_PREFIX};

/// The server callback handler classes of Kafka that check signed tokens against a JWKS.
pub const SIGNED_VALIDATORS: &[&str] = &[
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
    "org.apache.kafka.common.security.oauthbearer.secured.OAuthBearerValidatorCallbackHandler",
];

/// Kafka's default handler (unsecured tokens), accepted when named.
pub const UNSECURED_VALIDATOR: &str =
    "org.apache.kafka.common.security.oauthbearer.internals.unsecured.OAuthBearerUnsecuredValidatorCallbackHandler";

/// How one listener checks OAUTHBEARER tokens.
#[derive(Debug)]
pub struct OAuthSettings {
    pub validator: Validator,
    /// Signed tokens: where the key set comes from, and the last one read.
    pub keys: Option<KeySource>,
}

/// A JWKS file and the keys last read from it.
#[derive(Debug)]
pub struct KeySource {
    pub path: PathBuf,
    refresh: Duration,
    backoff: Duration,
    state: Mutex<KeyState>,
}

#[derive(Debug)]
struct KeyState {
    keys: Arc<Jwks>,
    read_at: Instant,
    tried_at: Instant,
}

impl KeySource {
    fn open(path: PathBuf, refresh: Duration, backoff: Duration) -> Result<Self, String> {
        let keys = Arc::new(read_jwks(&path)?);
        let now = Instant::now();
        Ok(KeySource {
            path,
            refresh,
            backoff,
            state: Mutex::new(KeyState {
                keys,
                read_at: now,
                tried_at: now,
            }),
        })
    }

    /// The keys to check a token with `kid` against, re-read when they are due or lack `kid`.
    pub fn keys(&self, kid: Option<&str>) -> Arc<Jwks> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let due = now.duration_since(state.read_at) >= self.refresh;
        let rotated = kid.is_some_and(|k| !state.keys.has_kid(k))
            && now.duration_since(state.tried_at) >= self.backoff;
        if due || rotated {
            state.tried_at = now;
            match read_jwks(&self.path) {
                Ok(keys) => {
                    state.keys = Arc::new(keys);
                    state.read_at = now;
                }
                Err(error) => {
                    // Keep the keys we had; try again after the backoff.
                    state.read_at = now;
                    tracing::warn!(path = %self.path.display(), %error, "cannot re-read the OAUTHBEARER key set (sasl.oauthbearer.jwks.endpoint.url): keeping the keys read before");
                }
            }
        }
        state.keys.clone()
    }

    pub fn key_count(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .len()
    }
}

fn read_jwks(path: &std::path::Path) -> Result<Jwks, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Jwks::parse(&bytes)
        .map_err(|e| format!("{}: not a usable JSON Web Key Set: {e}", path.display()))
}

impl OAuthSettings {
    /// Checks a token now.
    pub fn validate(&self, token: &str) -> Result<ValidToken, SaslError> {
        let keys = self
            .keys
            .as_ref()
            .map(|source| source.keys(strata_sasl::oauthbearer::key_id(token).as_deref()));
        self.validator
            .validate(token, keys.as_deref(), crate::partition::now_ms())
    }

    pub fn is_unsecured(&self) -> bool {
        matches!(self.validator, Validator::Unsecured(_))
    }

    /// Resolves listener `listener`'s settings; `jaas` is its OAuthBearerLoginModule line.
    pub fn resolve(
        set: &BTreeMap<String, String>,
        listener: &str,
        jaas: Option<(String, JaasEntry)>,
    ) -> Result<Self, InvalidConfig> {
        let get = |key: &str| mechanism_setting(set, listener, key);
        let bad =
            |(key, value): (String, String), reason: String| InvalidConfig { key, value, reason };
        let handler = get("sasl.server.callback.handler.class")
            .filter(|(_, v)| !v.trim().is_empty() && v.trim() != UNSECURED_VALIDATOR);
        let Some(handler) = handler else {
            let option = |name: &str| jaas.as_ref().and_then(|(_, e)| e.option(name));
            let mut rules = UnsecuredRules::default();
            if let Some(claim) = option("unsecuredValidatorPrincipalClaimName") {
                rules.principal_claim = claim.to_string();
            }
            if let Some(claim) = option("unsecuredValidatorScopeClaimName") {
                rules.scope_claim = claim.to_string();
            }
            if let Some(scope) = option("unsecuredValidatorRequiredScope") {
                rules.required_scope = scope
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            if let Some(skew) = option("unsecuredValidatorAllowableClockSkewMs") {
                rules.clock_skew_ms = skew.trim().parse::<u32>().map_err(|_| InvalidConfig {
                    key: jaas.as_ref().map_or_else(String::new, |(k, _)| k.clone()),
                    value: "(hidden)".into(),
                    reason: "unsecuredValidatorAllowableClockSkewMs must be a whole number of milliseconds".into(),
                })?
                .into();
            }
            return Ok(OAuthSettings {
                validator: Validator::Unsecured(rules),
                keys: None,
            });
        };
        if !SIGNED_VALIDATORS.contains(&handler.1.trim()) {
            let reason = format!(
                "Strata serves OAUTHBEARER with Kafka's two validators only: none set (unsecured \
                 tokens) or {} (tokens signed with a key of sasl.oauthbearer.jwks.endpoint.url); \
                 custom Java callback handlers cannot be loaded",
                SIGNED_VALIDATORS[0]
            );
            return Err(bad(handler, reason));
        }
        let Some(url) =
            get("sasl.oauthbearer.jwks.endpoint.url").filter(|(_, v)| !v.trim().is_empty())
        else {
            return Err(InvalidConfig {
                key: "sasl.oauthbearer.jwks.endpoint.url".into(),
                value: String::new(),
                reason: format!(
                    "{} checks tokens against a JSON Web Key Set: set sasl.oauthbearer.jwks.endpoint.url to a file: URL",
                    handler.1.trim()
                ),
            });
        };
        let path = jwks_path(url.1.trim()).map_err(|reason| bad(url.clone(), reason))?;
        let millis = |key: &str| -> Result<Duration, InvalidConfig> {
            let (k, v) = get(key).expect("the key has a default");
            v.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| bad((k, v), "expected a whole number of milliseconds".into()))
        };
        let refresh = millis("sasl.oauthbearer.jwks.endpoint.refresh.ms")?;
        let backoff = millis("sasl.oauthbearer.jwks.endpoint.retry.backoff.ms")?;
        let keys = KeySource::open(path, refresh.max(Duration::from_secs(1)), backoff)
            .map_err(|reason| bad(url.clone(), reason))?;
        let text = |key: &str| {
            get(key)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let skew = get("sasl.oauthbearer.clock.skew.seconds").expect("default");
        let clock_skew_s: u32 = skew
            .1
            .trim()
            .parse()
            .map_err(|_| bad(skew.clone(), "expected a whole number of seconds".into()))?;
        let rules = SignedRules {
            expected_audience: text("sasl.oauthbearer.expected.audience")
                .map(|a| {
                    a.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            expected_issuer: text("sasl.oauthbearer.expected.issuer"),
            sub_claim: text("sasl.oauthbearer.sub.claim.name").unwrap_or_else(|| "sub".into()),
            scope_claim: text("sasl.oauthbearer.scope.claim.name")
                .unwrap_or_else(|| "scope".into()),
            clock_skew_ms: i64::from(clock_skew_s) * 1000,
        };
        Ok(OAuthSettings {
            validator: Validator::Signed(rules),
            keys: Some(keys),
        })
    }
}

/// A setting of the OAUTHBEARER mechanism on `listener`, scoped as Kafka scopes it:
/// `listener.name.<l>.oauthbearer.<key>`, `listener.name.<l>.<key>`, `<key>`, then Kafka's
/// default (under the plain key's name).
fn mechanism_setting(
    set: &BTreeMap<String, String>,
    listener: &str,
    key: &str,
) -> Option<(String, String)> {
    let l = listener.to_ascii_lowercase();
    let scoped = [
        format!("{LISTENER_PREFIX}{l}.oauthbearer.{key}"),
        format!("{LISTENER_PREFIX}{l}.{key}"),
        key.to_string(),
    ];
    scoped
        .into_iter()
        .find_map(|k| set.get(&k).map(|v| (k, v.clone())))
        .or_else(|| {
            broker_config_def(key)
                .and_then(|d| d.default)
                .map(|v| (key.to_string(), v.to_string()))
        })
}

/// The file a `file:` URL names (`file:///etc/jwks.json`, `file:/etc/jwks.json`).
fn jwks_path(url: &str) -> Result<PathBuf, String> {
    if let Some(path) = url
        .strip_prefix("file://")
        .or_else(|| url.strip_prefix("file:"))
    {
        let path = path.strip_prefix("localhost").unwrap_or(path);
        if path.starts_with('/') {
            return Ok(PathBuf::from(path));
        }
        return Err("a file: URL needs an absolute path (file:///etc/strata/jwks.json)".into());
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(
            "Strata reads the key set from a file: save the issuer's JWKS (its jwks_uri) to a file \
             and name it with a file:/// URL"
                .into(),
        );
    }
    Err("expected a file:/// URL".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        crate::config::properties(pairs)
    }

    #[test]
    fn unsecured_by_default_with_the_login_module_options() {
        let jaas = strata_sasl::jaas::parse(
            r#"org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="admin" unsecuredValidatorRequiredScope="a b" unsecuredValidatorAllowableClockSkewMs="1500";"#,
        )
        .expect("jaas");
        let s = OAuthSettings::resolve(&set(&[]), "SASL_PLAINTEXT", Some(("k".into(), jaas)))
            .expect("resolves");
        let Validator::Unsecured(rules) = &s.validator else {
            panic!("unsecured expected");
        };
        assert_eq!(rules.required_scope, vec!["a", "b"]);
        assert_eq!(rules.clock_skew_ms, 1500);
        assert!(s.is_unsecured() && s.keys.is_none());
    }

    #[test]
    fn signed_tokens_need_a_readable_key_set() {
        let dir = tempfile::tempdir().expect("dir");
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            r#"{"keys": [{"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB"}]}"#,
        )
        .expect("write");
        let url = format!("file://{}", jwks.display());
        let handler = SIGNED_VALIDATORS[0];
        let s = OAuthSettings::resolve(
            &set(&[
                (
                    "listener.name.client.oauthbearer.sasl.server.callback.handler.class",
                    handler,
                ),
                ("sasl.oauthbearer.jwks.endpoint.url", &url),
                ("sasl.oauthbearer.expected.audience", "kafka, other"),
                (
                    "listener.name.client.sasl.oauthbearer.expected.issuer",
                    "https://idp",
                ),
            ]),
            "CLIENT",
            None,
        )
        .expect("resolves");
        let Validator::Signed(rules) = &s.validator else {
            panic!("signed expected");
        };
        assert_eq!(rules.expected_audience, vec!["kafka", "other"]);
        assert_eq!(rules.expected_issuer.as_deref(), Some("https://idp"));
        assert_eq!(rules.clock_skew_ms, 30_000);
        assert_eq!(s.keys.as_ref().expect("keys").key_count(), 1);
        let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
            (
                vec![("sasl.server.callback.handler.class", handler.into())],
                "jwks.endpoint.url",
            ),
            (
                vec![
                    ("sasl.server.callback.handler.class", handler.into()),
                    (
                        "sasl.oauthbearer.jwks.endpoint.url",
                        "https://idp/jwks".into(),
                    ),
                ],
                "file",
            ),
            (
                vec![
                    ("sasl.server.callback.handler.class", handler.into()),
                    (
                        "sasl.oauthbearer.jwks.endpoint.url",
                        "file:///no/such/jwks.json".into(),
                    ),
                ],
                "cannot read",
            ),
            (
                vec![(
                    "sasl.server.callback.handler.class",
                    "com.example.Custom".into(),
                )],
                "custom Java callback handlers",
            ),
        ];
        for (pairs, expected) in cases {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let err = OAuthSettings::resolve(&set(&pairs), "CLIENT", None).expect_err(expected);
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn the_key_set_is_re_read_for_an_unknown_key_id() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("jwks.json");
        let one = r#"{"keys": [{"kty": "RSA", "kid": "old", "n": "AQAB", "e": "AQAB"}]}"#;
        std::fs::write(&path, one).expect("write");
        let source =
            KeySource::open(path.clone(), Duration::from_secs(3600), Duration::ZERO).expect("open");
        assert!(source.keys(Some("old")).has_kid("old"));
        std::fs::write(&path, one.replace("old", "new")).expect("rotate");
        assert!(
            source.keys(Some("new")).has_kid("new"),
            "re-read for a kid it lacks"
        );
        // A broken file keeps the keys read before.
        std::fs::write(&path, "{").expect("break");
        assert!(source.keys(Some("other")).has_kid("new"));
    }

    #[test]
    fn file_urls() {
        assert_eq!(
            jwks_path("file:///etc/j.json").unwrap(),
            PathBuf::from("/etc/j.json")
        );
        assert_eq!(
            jwks_path("file:/etc/j.json").unwrap(),
            PathBuf::from("/etc/j.json")
        );
        assert_eq!(
            jwks_path("file://localhost/etc/j.json").unwrap(),
            PathBuf::from("/etc/j.json")
        );
        assert!(jwks_path("file:relative.json").is_err());
        assert!(jwks_path("/etc/j.json").is_err());
    }
}
