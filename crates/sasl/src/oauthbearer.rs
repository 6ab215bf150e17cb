//! OAUTHBEARER (RFC 7628) with JSON Web Tokens (RFC 7519), checked as Kafka's brokers check
//! them.
//!
//! The client sends one message, `gs2-header kvsep *kvpair kvsep`:
//!
//! ```text
//! n,[a=<authzid>],  ^A  auth=Bearer <token>  ^A  [<extension>=<value> ^A ...]  ^A
//! ```
//!
//! and the server answers an empty token on success. The token is a JWT validated by one of
//! two [`Validator`]s, as Kafka's two server callback handlers do:
//!
//! - [`Validator::Unsecured`] (Kafka's default, meant for development): an unsigned token
//!   (`alg` `none`, empty signature). Its principal is the `sub` claim (or the configured
//!   claim), its `exp` must lie ahead, an `iat` must not lie ahead, and it must carry every
//!   required scope. Anyone can make such a token: the broker says so at start-up.
//! - [`Validator::Signed`] (`OAuthBearerValidatorCallbackHandler`): a JWS signed with a key
//!   of a JSON Web Key Set ([`Jwks`]: RSA keys for RS256/384/512 and PS256/384/512, EC P-256
//!   and P-384 keys for ES256/ES384); `exp` and `iat` are required (within the allowed clock
//!   skew), the issuer and audience are checked when configured, the principal is the `sub`
//!   claim (or the configured one). `none` and HMAC algorithms are refused.
//!
//! Extensions (RFC 7628 `key=value` pairs) are parsed and ignored, as Kafka's default
//! handlers ignore them. Like the other mechanisms, nothing here does I/O or panics on input,
//! and refusals never echo the token.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

use crate::SaslError;

const KVSEP: char = '\u{1}';

fn malformed(reason: impl Into<String>) -> SaslError {
    SaslError::Malformed {
        mechanism: crate::OAUTHBEARER,
        reason: reason.into(),
    }
}

/// A refused token: answered SASL_AUTHENTICATION_FAILED with this reason.
fn invalid(reason: impl std::fmt::Display) -> SaslError {
    SaslError::InvalidToken(reason.to_string())
}

/// The client's message.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientMessage {
    /// The `a=` of the GS2 header: must be empty or the token's principal.
    pub authzid: Option<String>,
    pub token: String,
    pub extensions: BTreeMap<String, String>,
}

impl std::fmt::Debug for ClientMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientMessage")
            .field("authzid", &self.authzid)
            .field("extensions", &self.extensions.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Parses the client's initial response.
pub fn parse(message: &[u8]) -> Result<ClientMessage, SaslError> {
    let text = std::str::from_utf8(message).map_err(|_| malformed("not UTF-8"))?;
    let (header, rest) = text
        .split_once(KVSEP)
        .ok_or_else(|| malformed("no key-value separator after the GS2 header"))?;
    let mut gs2 = header.splitn(3, ',');
    let (Some(binding), Some(authz), Some("")) = (gs2.next(), gs2.next(), gs2.next()) else {
        return Err(malformed("the GS2 header must be n,[a=authzid],"));
    };
    match binding {
        "n" => {}
        "y" | "p" => {
            return Err(SaslError::Unsupported(
                "Authentication failed: channel binding is not supported".into(),
            ))
        }
        _ => return Err(malformed("the GS2 header must start with n,")),
    }
    let authzid = match authz {
        "" => None,
        a => Some(
            a.strip_prefix("a=")
                .filter(|a| !a.is_empty())
                .ok_or_else(|| malformed("the authorization id must be a=<name>"))?
                .to_string(),
        ),
    };
    let pairs = rest
        .strip_suffix(KVSEP)
        .and_then(|r| r.strip_suffix(KVSEP).or(r.is_empty().then_some(r)))
        .ok_or_else(|| malformed("the message must end with two key-value separators"))?;
    let mut token = None;
    let mut extensions = BTreeMap::new();
    for pair in pairs.split(KVSEP) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| malformed("a key-value pair without ="))?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(malformed("a key must be letters only"));
        }
        if key == "auth" {
            if token.is_some() {
                return Err(malformed("auth given twice"));
            }
            let (scheme, bearer) = value
                .split_once(' ')
                .ok_or_else(|| malformed("auth must be Bearer <token>"))?;
            if !scheme.eq_ignore_ascii_case("bearer") || bearer.trim().is_empty() {
                return Err(malformed("auth must be Bearer <token>"));
            }
            token = Some(bearer.trim().to_string());
        } else if extensions
            .insert(key.to_string(), value.to_string())
            .is_some()
        {
            return Err(malformed(format!("extension {key} given twice")));
        }
    }
    Ok(ClientMessage {
        authzid,
        token: token.ok_or_else(|| malformed("no auth=Bearer <token>"))?,
        extensions,
    })
}

/// Builds a client's initial response (for the client crate and tests).
pub fn client_message(token: &str, extensions: &[(&str, &str)]) -> Vec<u8> {
    let mut m = format!("n,,{KVSEP}auth=Bearer {token}{KVSEP}");
    for (k, v) in extensions {
        m.push_str(&format!("{k}={v}{KVSEP}"));
    }
    m.push(KVSEP);
    m.into_bytes()
}

/// The `kid` of a token's header, read before any check (to pick the key set's version).
pub fn key_id(token: &str) -> Option<String> {
    let header = decode_json(token.split('.').next()?, "header").ok()?;
    header.get("kid")?.as_str().map(str::to_string)
}

/// A validated token.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidToken {
    pub principal: String,
    pub scope: Vec<String>,
    /// `exp`, in milliseconds since the epoch: the session cannot outlive it (KIP-368).
    pub expires_at_ms: i64,
}

/// What the unsecured validator checks (the `unsecuredValidator*` options of Kafka's
/// OAuthBearerLoginModule line).
#[derive(Debug, Clone)]
pub struct UnsecuredRules {
    pub principal_claim: String,
    pub scope_claim: String,
    pub required_scope: Vec<String>,
    pub clock_skew_ms: i64,
}

impl Default for UnsecuredRules {
    fn default() -> Self {
        UnsecuredRules {
            principal_claim: "sub".into(),
            scope_claim: "scope".into(),
            required_scope: Vec::new(),
            clock_skew_ms: 0,
        }
    }
}

/// What the signed-token validator checks (Kafka's `sasl.oauthbearer.*` broker keys).
#[derive(Debug, Clone)]
pub struct SignedRules {
    pub expected_audience: Vec<String>,
    pub expected_issuer: Option<String>,
    pub sub_claim: String,
    pub scope_claim: String,
    pub clock_skew_ms: i64,
}

impl Default for SignedRules {
    fn default() -> Self {
        SignedRules {
            expected_audience: Vec::new(),
            expected_issuer: None,
            sub_claim: "sub".into(),
            scope_claim: "scope".into(),
            clock_skew_ms: 30_000,
        }
    }
}

/// How tokens are checked.
#[derive(Debug, Clone)]
pub enum Validator {
    Unsecured(UnsecuredRules),
    Signed(SignedRules),
}

/// The three parts of a compact JWS.
struct Parts<'a> {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

fn decode_json(part: &str, what: &str) -> Result<Map<String, Value>, SaslError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| invalid(format!("the {what} is not base64url")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(invalid(format!("the {what} is not a JSON object"))),
    }
}

fn split(token: &str) -> Result<Parts<'_>, SaslError> {
    let mut it = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(invalid("not a compact JWS (header.claims.signature)"));
    };
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| invalid("the signature is not base64url"))?;
    Ok(Parts {
        header: decode_json(h, "header")?,
        claims: decode_json(c, "claims")?,
        signing_input: &token[..h.len() + 1 + c.len()],
        signature,
    })
}

/// A NumericDate claim (seconds, possibly fractional) in milliseconds.
fn date_ms(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, SaslError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|f| Some((f * 1000.0) as i64))
            .ok_or_else(|| invalid(format!("claim {name} is not a number"))),
    }
}

/// A scope claim: a space-separated string or an array of strings.
fn scope(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, SaslError> {
    match claims.get(name) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split_whitespace().map(str::to_string).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("claim {name} holds a non-string")))
            })
            .collect(),
        Some(_) => Err(invalid(format!(
            "claim {name} is neither a string nor a list"
        ))),
    }
}

fn principal(claims: &Map<String, Value>, name: &str) -> Result<String, SaslError> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(_) => Err(invalid(format!("claim {name} is not a non-empty string"))),
        None => Err(invalid(format!("no {name} claim (the principal)"))),
    }
}

/// `exp` ahead of now and `iat` not ahead, both within `skew_ms`.
fn check_times(
    claims: &Map<String, Value>,
    now_ms: i64,
    skew_ms: i64,
    require_iat: bool,
) -> Result<i64, SaslError> {
    let exp = date_ms(claims, "exp")?.ok_or_else(|| invalid("no exp claim"))?;
    if exp.saturating_add(skew_ms) <= now_ms {
        return Err(invalid("the token has expired"));
    }
    match date_ms(claims, "iat")? {
        Some(iat) if iat > now_ms.saturating_add(skew_ms) => {
            Err(invalid("the token was issued in the future (iat)"))
        }
        None if require_iat => Err(invalid("no iat claim")),
        _ => Ok(exp),
    }
}

impl Validator {
    /// Checks `token` at `now_ms` (milliseconds since the epoch); `keys` serve signed tokens.
    pub fn validate(
        &self,
        token: &str,
        keys: Option<&Jwks>,
        now_ms: i64,
    ) -> Result<ValidToken, SaslError> {
        let parts = split(token)?;
        let alg = parts
            .header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or("");
        match self {
            Validator::Unsecured(rules) => {
                if alg != "none" || !parts.signature.is_empty() {
                    return Err(invalid(
                        "this listener takes unsecured tokens only (alg none, no signature)",
                    ));
                }
                let expires_at_ms = check_times(&parts.claims, now_ms, rules.clock_skew_ms, false)?;
                let scope = scope(&parts.claims, &rules.scope_claim)?;
                if let Some(missing) = rules.required_scope.iter().find(|s| !scope.contains(s)) {
                    return Err(invalid(format!("the scope lacks {missing}")));
                }
                Ok(ValidToken {
                    principal: principal(&parts.claims, &rules.principal_claim)?,
                    scope,
                    expires_at_ms,
                })
            }
            Validator::Signed(rules) => {
                let keys = keys.ok_or_else(|| invalid("no keys to check signatures with"))?;
                keys.verify(
                    alg,
                    parts.header.get("kid").and_then(Value::as_str),
                    parts.signing_input.as_bytes(),
                    &parts.signature,
                )?;
                let expires_at_ms = check_times(&parts.claims, now_ms, rules.clock_skew_ms, true)?;
                if let Some(issuer) = &rules.expected_issuer {
                    if parts.claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                        return Err(invalid("unexpected issuer (iss)"));
                    }
                }
                if !rules.expected_audience.is_empty() {
                    let audience = scope(&parts.claims, "aud")?;
                    if !audience.iter().any(|a| rules.expected_audience.contains(a)) {
                        return Err(invalid("unexpected audience (aud)"));
                    }
                }
                Ok(ValidToken {
                    principal: principal(&parts.claims, &rules.sub_claim)?,
                    scope: scope(&parts.claims, &rules.scope_claim)?,
                    expires_at_ms,
                })
            }
        }
    }
}

/// The public part of one JSON Web Key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point, `04 || x || y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Jwk {
    kid: Option<String>,
    alg: Option<String>,
    material: KeyMaterial,
}

/// A JSON Web Key Set (RFC 7517): the signature keys of an issuer. Keys of other types (or
/// `use` other than `sig`) are skipped; a set with no usable key is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

impl Jwks {
    pub fn parse(json: &[u8]) -> Result<Jwks, String> {
        let value: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
        let keys = value
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no \"keys\" array")?;
        let b64 = |k: &Map<String, Value>, name: &str| -> Result<Vec<u8>, String> {
            let s = k
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("a key without {name}"))?;
            URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|_| format!("{name} is not base64url"))
        };
        let mut out = Vec::new();
        for key in keys {
            let Some(k) = key.as_object() else {
                return Err("a key that is not an object".into());
            };
            if k.get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            let material = match k.get("kty").and_then(Value::as_str) {
                Some("RSA") => KeyMaterial::Rsa {
                    n: b64(k, "n")?,
                    e: b64(k, "e")?,
                },
                Some("EC") => {
                    let (curve, len) = match k.get("crv").and_then(Value::as_str) {
                        Some("P-256") => (Curve::P256, 32),
                        Some("P-384") => (Curve::P384, 48),
                        _ => continue,
                    };
                    let (x, y) = (b64(k, "x")?, b64(k, "y")?);
                    if x.len() != len || y.len() != len {
                        return Err("an EC key whose coordinates do not fit its curve".into());
                    }
                    let mut point = vec![4];
                    point.extend(x);
                    point.extend(y);
                    KeyMaterial::Ec { curve, point }
                }
                _ => continue,
            };
            out.push(Jwk {
                kid: k.get("kid").and_then(Value::as_str).map(str::to_string),
                alg: k.get("alg").and_then(Value::as_str).map(str::to_string),
                material,
            });
        }
        if out.is_empty() {
            return Err("no RSA or EC (P-256, P-384) signature key".into());
        }
        Ok(Jwks { keys: out })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key has this id (an unknown `kid` may mean the set was rotated).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Checks `signature` over `input` with the key `kid` names (or, without a `kid`, any key
    /// that fits `alg`).
    fn verify(
        &self,
        alg: &str,
        kid: Option<&str>,
        input: &[u8],
        signature: &[u8],
    ) -> Result<(), SaslError> {
        let rsa: Option<&'static signature::RsaParameters> = match alg {
            "RS256" => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
            "RS384" => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
            "RS512" => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
            "PS256" => Some(&signature::RSA_PSS_2048_8192_SHA256),
            "PS384" => Some(&signature::RSA_PSS_2048_8192_SHA384),
            "PS512" => Some(&signature::RSA_PSS_2048_8192_SHA512),
            _ => None,
        };
        let ec: Option<(Curve, &'static signature::EcdsaVerificationAlgorithm)> = match alg {
            "ES256" => Some((Curve::P256, &signature::ECDSA_P256_SHA256_FIXED)),
            "ES384" => Some((Curve::P384, &signature::ECDSA_P384_SHA384_FIXED)),
            _ => None,
        };
        if rsa.is_none() && ec.is_none() {
            return Err(invalid(format!(
                "signature algorithm {alg:?} is not accepted (RS256/384/512, PS256/384/512, ES256, ES384)"
            )));
        }
        let candidates = self.keys.iter().filter(|k| {
            kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
                && k.alg.as_deref().is_none_or(|a| a == alg)
        });
        let mut any = false;
        for key in candidates {
            let ok = match (&key.material, rsa, ec) {
                (KeyMaterial::Rsa { n, e }, Some(params), _) => {
                    any = true;
                    RsaPublicKeyComponents { n, e }
                        .verify(params, input, signature)
                        .is_ok()
                }
                (KeyMaterial::Ec { curve, point }, _, Some((wanted, algorithm)))
                    if *curve == wanted =>
                {
                    any = true;
                    UnparsedPublicKey::new(algorithm, point)
                        .verify(input, signature)
                        .is_ok()
                }
                _ => false,
            };
            if ok {
                return Ok(());
            }
        }
        Err(invalid(if any {
            "the signature does not verify"
        } else {
            "no key of the key set fits the token's kid and alg"
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn unsecured(claims: Value) -> String {
        format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none"})),
            b64(&claims)
        )
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn client_messages() {
        let m = parse(&client_message("abc.def.", &[("traceId", "1")])).expect("parses");
        assert_eq!(m.token, "abc.def.");
        assert_eq!(m.authzid, None);
        assert_eq!(m.extensions["traceId"], "1");
        let m = parse(b"n,a=alice,\x01auth=Bearer t.t.t\x01\x01").expect("authzid");
        assert_eq!(m.authzid.as_deref(), Some("alice"));
        for bad in [
            &b""[..],
            b"n,,",
            b"n,,\x01auth=Bearer x\x01",
            b"n,,\x01auth=Basic x\x01\x01",
            b"n,,\x01auth=Bearer \x01\x01",
            b"n,,\x01\x01",
            b"n,,\x01auth=Bearer x\x01auth=Bearer y\x01\x01",
            b"n,,\x01auth=Bearer x\x01k-1=v\x01\x01",
            b"n,,\x01auth=Bearer x\x01novalue\x01\x01",
            b"x,,\x01auth=Bearer x\x01\x01",
            b"n,b=c,\x01auth=Bearer x\x01\x01",
            b"y,,\x01auth=Bearer x\x01\x01",
            b"\xff",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn unsecured_tokens() {
        let v = Validator::Unsecured(UnsecuredRules {
            required_scope: vec!["requiredScope".into()],
            ..UnsecuredRules::default()
        });
        let exp = NOW / 1000 + 60;
        let good = unsecured(
            serde_json::json!({"sub": "alice", "exp": exp, "iat": exp - 120,
            "scope": ["requiredScope", "other"]}),
        );
        let t = v.validate(&good, None, NOW).expect("valid");
        assert_eq!(t.principal, "alice");
        assert_eq!(t.expires_at_ms, exp * 1000);
        // Space-separated scope and fractional dates.
        let spaced = unsecured(
            serde_json::json!({"sub": "bob", "exp": exp as f64 + 0.5, "scope": "a requiredScope"}),
        );
        assert_eq!(
            v.validate(&spaced, None, NOW).expect("valid").principal,
            "bob"
        );
        let cases = [
            (
                serde_json::json!({"sub": "a", "exp": NOW / 1000 - 1, "scope": "requiredScope"}),
                "expired",
            ),
            (
                serde_json::json!({"sub": "a", "scope": "requiredScope"}),
                "no exp",
            ),
            (
                serde_json::json!({"sub": "a", "exp": exp, "scope": "wrongScope"}),
                "scope lacks",
            ),
            (
                serde_json::json!({"exp": exp, "scope": "requiredScope"}),
                "no sub",
            ),
            (
                serde_json::json!({"sub": "", "exp": exp, "scope": "requiredScope"}),
                "non-empty",
            ),
            (
                serde_json::json!({"sub": "a", "exp": exp, "iat": exp, "scope": "requiredScope"}),
                "future",
            ),
            (
                serde_json::json!({"sub": "a", "exp": "soon", "scope": "requiredScope"}),
                "not a number",
            ),
        ];
        for (claims, expected) in cases {
            let err = v
                .validate(&unsecured(claims), None, NOW)
                .expect_err(expected);
            assert!(err.to_string().contains(expected), "{err} / {expected}");
        }
        // A signed token (or a signature at all) is not an unsecured token.
        let header = b64(&serde_json::json!({"alg": "RS256"}));
        let claims = b64(&serde_json::json!({"sub": "a", "exp": exp}));
        for token in [
            format!("{header}.{claims}."),
            format!("{}.{claims}.c2ln", b64(&serde_json::json!({"alg": "none"}))),
        ] {
            assert!(v.validate(&token, None, NOW).is_err());
        }
        for garbage in ["", "a.b", "a.b.c.d", "!!.!!.", "e30.e30.e30.e30"] {
            assert!(v.validate(garbage, None, NOW).is_err(), "{garbage}");
        }
    }

    /// An EC P-256 key made here, its JWKS, and ES256 tokens signed with it.
    struct Issuer {
        pair: EcdsaKeyPair,
        rng: SystemRandom,
    }

    impl Issuer {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .expect("pair");
            Issuer { pair, rng }
        }

        fn jwks(&self, kid: &str) -> Jwks {
            let point = self.pair.public_key().as_ref();
            let json = serde_json::json!({"keys": [
                {"kty": "oct", "k": "c2VjcmV0"},
                {"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                 "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])},
            ]});
            Jwks::parse(&serde_json::to_vec(&json).unwrap()).expect("jwks")
        }

        fn token(&self, header: Value, claims: Value) -> String {
            let input = format!("{}.{}", b64(&header), b64(&claims));
            let sig = self.pair.sign(&self.rng, input.as_bytes()).expect("sign");
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        }
    }

    #[test]
    fn signed_tokens() {
        let issuer = Issuer::new();
        let keys = issuer.jwks("k1");
        assert_eq!(keys.len(), 1);
        assert!(keys.has_kid("k1") && !keys.has_kid("k2"));
        let v = Validator::Signed(SignedRules {
            expected_audience: vec!["kafka".into()],
            expected_issuer: Some("https://issuer.example".into()),
            ..SignedRules::default()
        });
        let exp = NOW / 1000 + 300;
        let claims = |extra: Value| {
            let mut c = serde_json::json!({"sub": "alice", "exp": exp, "iat": exp - 600,
                "iss": "https://issuer.example", "aud": ["kafka", "other"]});
            for (k, val) in extra.as_object().unwrap() {
                c[k] = val.clone();
            }
            c
        };
        let header = serde_json::json!({"alg": "ES256", "kid": "k1"});
        let good = issuer.token(header.clone(), claims(serde_json::json!({})));
        let t = v.validate(&good, Some(&keys), NOW).expect("valid");
        assert_eq!(t.principal, "alice");
        // Without a kid, any fitting key is tried.
        let no_kid = issuer.token(
            serde_json::json!({"alg": "ES256"}),
            claims(serde_json::json!({})),
        );
        assert!(v.validate(&no_kid, Some(&keys), NOW).is_ok());
        // A tampered claim breaks the signature.
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        parts[1] = b64(&claims(serde_json::json!({"sub": "admin"})));
        let err = v
            .validate(&parts.join("."), Some(&keys), NOW)
            .expect_err("tampered");
        assert!(err.to_string().contains("does not verify"), "{err}");
        // Another key's signature.
        let other = Issuer::new().token(header.clone(), claims(serde_json::json!({})));
        assert!(v.validate(&other, Some(&keys), NOW).is_err());
        let cases = [
            (
                header.clone(),
                claims(serde_json::json!({"exp": NOW / 1000 - 60})),
                "expired",
            ),
            (
                header.clone(),
                claims(serde_json::json!({"iss": "https://evil.example"})),
                "issuer",
            ),
            (
                header.clone(),
                claims(serde_json::json!({"aud": "other"})),
                "audience",
            ),
            (
                serde_json::json!({"alg": "ES256", "kid": "k2"}),
                claims(serde_json::json!({})),
                "no key",
            ),
            (
                serde_json::json!({"alg": "RS256", "kid": "k1"}),
                claims(serde_json::json!({})),
                "no key",
            ),
            (
                serde_json::json!({"alg": "none"}),
                claims(serde_json::json!({})),
                "not accepted",
            ),
            (
                serde_json::json!({"alg": "HS256", "kid": "k1"}),
                claims(serde_json::json!({})),
                "not accepted",
            ),
        ];
        for (h, c, expected) in cases {
            let err = v
                .validate(&issuer.token(h, c), Some(&keys), NOW)
                .expect_err(expected);
            assert!(err.to_string().contains(expected), "{err} / {expected}");
        }
        // iat is required for signed tokens; the clock skew (30 s) tolerates a little.
        let mut c = claims(serde_json::json!({}));
        c.as_object_mut().unwrap().remove("iat");
        assert!(v
            .validate(&issuer.token(header.clone(), c), Some(&keys), NOW)
            .is_err());
        let skewed = claims(serde_json::json!({"exp": NOW / 1000 - 10}));
        assert!(v
            .validate(&issuer.token(header, skewed), Some(&keys), NOW)
            .is_ok());
        // An alg none token is refused even with its signature part empty.
        let unsigned = unsecured(claims(serde_json::json!({})));
        assert!(v.validate(&unsigned, Some(&keys), NOW).is_err());
    }

    #[test]
    fn key_sets() {
        for bad in [
            &b"{}"[..],
            b"[]",
            b"{\"keys\": []}",
            b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"abc\"}]}",
            b"{\"keys\": [{\"kty\": \"RSA\", \"n\": \"AQAB\"}]}",
            b"{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"AQAB\", \"y\": \"AQAB\"}]}",
            b"{\"keys\": [1]}",
            b"not json",
        ] {
            assert!(Jwks::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let rsa = Jwks::parse(br#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "use": "sig"}, {"kty": "RSA", "n": "AQAB", "e": "AQAB", "use": "enc"}]}"#)
            .expect("rsa");
        assert_eq!(rsa.len(), 1);
    }
}
