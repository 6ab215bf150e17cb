//! SASL for Strata, without I/O: what the broker's connection stage and the client both need.
//!
//! - [`plain`]: the PLAIN message (RFC 4616), parsed for the server and built for the client.
//! - [`scram`]: SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677): the credential
//!   derivation ([`scram::ScramCredential`]: salt, StoredKey, ServerKey, iterations; never the
//!   password), the server's and the client's state machines, and the message parsers.
//! - [`oauthbearer`]: OAUTHBEARER (RFC 7628) messages and Kafka's two JWT validators
//!   (unsecured tokens, and tokens signed with a key of a JSON Web Key Set).
//! - [`jaas`]: Kafka's `sasl.jaas.config` lines (one JAAS login module with its options).
//!
//! Everything here takes bytes from an unauthenticated peer: parsers return
//! [`SaslError`]s, never panic, and their messages never echo a password. Secrets are compared
//! in constant time (`subtle`).

pub mod jaas;
pub mod oauthbearer;
pub mod plain;
pub mod scram;

/// Why an exchange failed. Every variant is answered with SASL_AUTHENTICATION_FAILED; the
/// text goes to the client, so it says what was wrong with the message, never whether the
/// user exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// A message that does not follow the mechanism's grammar.
    #[error("malformed {mechanism} message: {reason}")]
    Malformed {
        mechanism: &'static str,
        reason: String,
    },
    /// Wrong password or unknown user: one answer for both.
    #[error("Authentication failed: invalid username or password")]
    BadCredentials,
    /// Something the mechanism allows but Strata does not offer (channel binding,
    /// delegation tokens, an authorization id other than the user).
    #[error("{0}")]
    Unsupported(String),
    /// An OAUTHBEARER token that is not valid (expired, badly signed, lacking a scope...).
    #[error("Authentication failed: invalid token: {0}")]
    InvalidToken(String),
    /// The server's answer did not prove that it knows the credential (client side).
    #[error(
        "the server's SCRAM signature does not match: it does not know this user's credential"
    )]
    BadServerSignature,
}

/// The name of the mechanisms Strata serves, as clients ask for them.
pub const PLAIN: &str = "PLAIN";
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
pub const SCRAM_SHA_512: &str = "SCRAM-SHA-512";
pub const OAUTHBEARER: &str = "OAUTHBEARER";
