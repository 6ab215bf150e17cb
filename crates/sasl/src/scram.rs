//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802 with RFC 7677's hashes), as Kafka speaks them.
//!
//! ```text
//!  client                                          server (ScramServer)
//!  client-first  n,,n=alice,r=<cnonce>      ──▶    looks up alice's credential
//!                                           ◀──    server-first  r=<cnonce><snonce>,s=<salt>,i=<n>
//!  client-final  c=biws,r=<nonce>,p=<proof> ──▶    H(proof XOR HMAC(StoredKey, AuthMessage)) == StoredKey?
//!                                           ◀──    server-final  v=<HMAC(ServerKey, AuthMessage)>
//! ```
//!
//! The server holds a [`ScramCredential`] per user and mechanism (salt, StoredKey, ServerKey,
//! iterations), never the password. An unknown user is answered with a made-up salt that is
//! the same on every attempt and fails at the last step, exactly like a wrong password, so
//! the exchange does not tell which users exist. Channel binding (`p=`) and Kafka's
//! delegation-token extension (`tokenauth`) are refused: Strata offers neither.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::SaslError;

/// Kafka's bounds on a credential's iterations (ScramMechanism's minimum, the controller's
/// maximum).
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

/// Longest SCRAM message read; real ones are well under 1 KiB.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// A SCRAM hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name (`SCRAM-SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => crate::SCRAM_SHA_256,
            ScramMechanism::Sha512 => crate::SCRAM_SHA_512,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's wire number (DescribeUserScramCredentials, AlterUserScramCredentials).
    pub fn wire(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_wire(code: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.wire() == code)
    }

    /// HMAC(key, data).
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .expect("HMAC takes keys of any length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(key)
                    .expect("HMAC takes keys of any length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    /// H(data).
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// SaltedPassword = Hi(password, salt, iterations): PBKDF2 with this HMAC. (Kafka does
    /// not apply SASLprep to the password, and neither does this.)
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            ScramMechanism::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

impl std::fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the server keeps of a SCRAM user: enough to verify a proof, not to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// From the salted password, as AlterUserScramCredentials carries it.
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salted_password: &[u8],
        salt: &[u8],
        iterations: i32,
    ) -> Self {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
            iterations,
        }
    }

    /// From a password, with a new random salt.
    pub fn from_password(mechanism: ScramMechanism, password: &str, iterations: i32) -> Self {
        let salt = random_salt();
        let salted =
            mechanism.salted_password(password.as_bytes(), &salt, iterations.max(1).unsigned_abs());
        Self::from_salted_password(mechanism, &salted, &salt, iterations)
    }
}

/// 32 random bytes, as Kafka's salts.
pub fn random_salt() -> Vec<u8> {
    let mut salt = vec![0u8; 32];
    rand::thread_rng().fill(&mut salt[..]);
    salt
}

/// A nonce of printable characters (base64 of 24 random bytes, no `,`).
pub fn random_nonce() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill(&mut bytes[..]);
    B64.encode(bytes)
}

fn malformed(mechanism: ScramMechanism, reason: impl Into<String>) -> SaslError {
    SaslError::Malformed {
        mechanism: mechanism.name(),
        reason: reason.into(),
    }
}

/// `saslname` decoding: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn decode_saslname(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3)?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// `saslname` encoding of a user name.
pub fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// The client's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// `n,,` or `y,,` (with an authorization id: `n,a=...,`), as sent: the client-final
    /// message must echo it in `c=`.
    pub gs2_header: String,
    pub user: String,
    pub nonce: String,
    /// The message after the gs2 header (part of the AuthMessage).
    pub bare: String,
    /// Extensions after the nonce (`name=value`), Kafka's SCRAM extensions.
    pub extensions: Vec<(String, String)>,
}

/// A client message as text, bounded.
fn message_text(mechanism: ScramMechanism, message: &[u8]) -> Result<&str, SaslError> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(malformed(mechanism, "message too long"));
    }
    std::str::from_utf8(message).map_err(|_| malformed(mechanism, "not UTF-8"))
}

/// Parses a client-first message.
pub fn parse_client_first(
    mechanism: ScramMechanism,
    message: &[u8],
) -> Result<ClientFirst, SaslError> {
    let bad = |reason: &str| malformed(mechanism, reason);
    let text = message_text(mechanism, message)?;
    let (flag, rest) = text
        .split_once(',')
        .ok_or_else(|| bad("expected a gs2 header (n,,)"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => {
            return Err(SaslError::Unsupported(
                "channel binding is not supported: use the gs2 header n,,".into(),
            ))
        }
        _ => return Err(bad("the gs2 header must start with n, y or p=")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or_else(|| bad("expected a gs2 header (n,,)"))?;
    let authzid = match authzid {
        "" => None,
        a => Some(
            a.strip_prefix("a=")
                .and_then(decode_saslname)
                .ok_or_else(|| bad("the authorization id must be a=<name>"))?,
        ),
    };
    let gs2_header = text[..text.len() - bare.len()].to_string();
    let mut fields = bare.split(',');
    let mut field = fields.next().unwrap_or_default();
    if field.starts_with("m=") {
        return Err(SaslError::Unsupported(
            "mandatory SCRAM extensions (m=) are not supported".into(),
        ));
    }
    let user = field
        .strip_prefix("n=")
        .and_then(decode_saslname)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad("expected n=<username>"))?;
    field = fields.next().unwrap_or_default();
    let nonce = field
        .strip_prefix("r=")
        .filter(|n| valid_nonce(n))
        .ok_or_else(|| bad("expected r=<nonce> of printable characters"))?
        .to_string();
    let mut extensions = Vec::new();
    for ext in fields {
        let (k, v) = ext
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| bad("an extension must be name=value"))?;
        extensions.push((k.to_string(), v.to_string()));
    }
    if extensions.iter().any(|(k, _)| k == "tokenauth") {
        return Err(SaslError::Unsupported(
            "delegation tokens (tokenauth) are not supported".into(),
        ));
    }
    if authzid.as_ref().is_some_and(|a| a != &user) {
        return Err(SaslError::Unsupported(
            "Authentication failed: the authorization id must be empty or equal to the username"
                .into(),
        ));
    }
    Ok(ClientFirst {
        gs2_header,
        user,
        nonce,
        bare: bare.to_string(),
        extensions,
    })
}

/// The client's final message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFinal {
    /// The decoded `c=` value: the gs2 header again.
    pub channel_binding: Vec<u8>,
    pub nonce: String,
    pub proof: Vec<u8>,
    /// Everything before `,p=` (part of the AuthMessage).
    pub without_proof: String,
}

/// Parses a client-final message.
pub fn parse_client_final(
    mechanism: ScramMechanism,
    message: &[u8],
) -> Result<ClientFinal, SaslError> {
    let bad = |reason: &str| malformed(mechanism, reason);
    let text = message_text(mechanism, message)?;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or_else(|| bad("expected ,p=<proof> at the end"))?;
    let proof = B64
        .decode(proof)
        .map_err(|_| bad("the proof is not base64"))?;
    let mut fields = without_proof.split(',');
    let channel_binding = fields
        .next()
        .and_then(|f| f.strip_prefix("c="))
        .and_then(|c| B64.decode(c).ok())
        .ok_or_else(|| bad("expected c=<base64 channel binding>"))?;
    let nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .filter(|n| valid_nonce(n))
        .ok_or_else(|| bad("expected r=<nonce>"))?
        .to_string();
    Ok(ClientFinal {
        channel_binding,
        nonce,
        proof,
        without_proof: without_proof.to_string(),
    })
}

/// A secret of this process, for the made-up salts of unknown users: the same user gets the
/// same salt while the broker runs, and nobody can tell it from a real one.
fn unknown_user_salt(user: &str) -> Vec<u8> {
    static SECRET: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let secret = SECRET.get_or_init(|| rand::thread_rng().gen());
    ScramMechanism::Sha256.hmac(secret, user.as_bytes())
}

/// Where a server exchange is. (One lives per connection in the middle of a login, so the
/// size of the waiting variant does not matter.)
#[allow(clippy::large_enum_variant)]
enum ServerState {
    /// Waiting for client-first.
    Start,
    /// Sent server-first; waiting for client-final.
    SentFirst {
        first: ClientFirst,
        server_first: String,
        nonce: String,
        /// `None` for an unknown user: the exchange goes on and fails at the end.
        credential: Option<ScramCredential>,
    },
    Done,
}

/// What a server step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStep {
    /// Send this and wait for the client's next message.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send this (server-final) as the last message.
    Done { user: String, response: Vec<u8> },
}

/// The server side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: ScramMechanism,
    state: ServerState,
}

impl ScramServer {
    pub fn new(mechanism: ScramMechanism) -> Self {
        ScramServer {
            mechanism,
            state: ServerState::Start,
        }
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// The user named in client-first, once it arrived (for log lines and rate limits).
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            ServerState::SentFirst { first, .. } => Some(&first.user),
            _ => None,
        }
    }

    /// Takes the client's next message. `lookup` gives the user's credential for this
    /// mechanism (asked once, after client-first). Any error ends the exchange.
    pub fn step(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<ServerStep, SaslError> {
        match std::mem::replace(&mut self.state, ServerState::Done) {
            ServerState::Start => {
                let first = parse_client_first(self.mechanism, message)?;
                let credential = lookup(&first.user).filter(|c| {
                    (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&c.iterations)
                        && !c.stored_key.is_empty()
                });
                let (salt, iterations) = match &credential {
                    Some(c) => (c.salt.clone(), c.iterations),
                    None => (unknown_user_salt(&first.user), MIN_ITERATIONS),
                };
                let nonce = format!("{}{}", first.nonce, random_nonce());
                let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
                let response = server_first.clone().into_bytes();
                self.state = ServerState::SentFirst {
                    first,
                    server_first,
                    nonce,
                    credential,
                };
                Ok(ServerStep::Continue(response))
            }
            ServerState::SentFirst {
                first,
                server_first,
                nonce,
                credential,
            } => {
                let last = parse_client_final(self.mechanism, message)?;
                if last.channel_binding != first.gs2_header.as_bytes() {
                    return Err(malformed(
                        self.mechanism,
                        "the channel binding c= does not match the gs2 header of the first message",
                    ));
                }
                // RFC 5802 wants the nonce of server-first back; librdkafka sends its own
                // nonce followed by the whole server nonce, and Kafka accepts any nonce that
                // ends with the server's, so that is the rule here too.
                if !last.nonce.ends_with(&nonce) {
                    return Err(malformed(self.mechanism, "the nonce does not match"));
                }
                let Some(credential) = credential else {
                    return Err(SaslError::BadCredentials);
                };
                let auth_message = format!("{},{server_first},{}", first.bare, last.without_proof);
                let m = self.mechanism;
                let client_signature = m.hmac(&credential.stored_key, auth_message.as_bytes());
                if last.proof.len() != client_signature.len() {
                    return Err(SaslError::BadCredentials);
                }
                let client_key: Vec<u8> = last
                    .proof
                    .iter()
                    .zip(&client_signature)
                    .map(|(p, s)| p ^ s)
                    .collect();
                let matches: bool = m.hash(&client_key).ct_eq(&credential.stored_key).into();
                if !matches {
                    return Err(SaslError::BadCredentials);
                }
                let server_signature = m.hmac(&credential.server_key, auth_message.as_bytes());
                Ok(ServerStep::Done {
                    user: first.user,
                    response: format!("v={}", B64.encode(server_signature)).into_bytes(),
                })
            }
            ServerState::Done => Err(malformed(self.mechanism, "the exchange is over")),
        }
    }
}

/// The client side of one SCRAM exchange: [`ScramClient::first`], then
/// [`ScramClient::final_message`] with the server's first answer, then
/// [`ScramClient::verify_server_final`].
pub struct ScramClient {
    mechanism: ScramMechanism,
    password: String,
    bare: String,
    nonce: String,
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    pub fn new(mechanism: ScramMechanism, user: &str, password: &str) -> Self {
        Self::with_nonce(mechanism, user, password, &random_nonce())
    }

    /// With a chosen nonce (tests against published vectors).
    pub fn with_nonce(mechanism: ScramMechanism, user: &str, password: &str, nonce: &str) -> Self {
        ScramClient {
            mechanism,
            password: password.to_string(),
            bare: format!("n={},r={nonce}", encode_saslname(user)),
            nonce: nonce.to_string(),
            server_signature: None,
        }
    }

    /// client-first.
    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.bare).into_bytes()
    }

    /// client-final, from the server-first message.
    pub fn final_message(&mut self, server_first: &[u8]) -> Result<Vec<u8>, SaslError> {
        let m = self.mechanism;
        let bad = |reason: &str| malformed(m, reason);
        let text = std::str::from_utf8(server_first).map_err(|_| bad("not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(SaslError::Unsupported(format!(
                "the server refused: {error}"
            )));
        }
        let mut fields = text.split(',');
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| n.starts_with(&self.nonce) && n.len() > self.nonce.len())
            .ok_or_else(|| bad("the server's nonce does not extend ours"))?;
        let salt = fields
            .next()
            .and_then(|f| f.strip_prefix("s="))
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| bad("expected s=<salt>"))?;
        let iterations: u32 = fields
            .next()
            .and_then(|f| f.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .filter(|i| (1..=1_000_000).contains(i))
            .ok_or_else(|| bad("expected i=<iterations>"))?;
        let salted = m.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.bare);
        let signature = m.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = m.hmac(&salted, b"Server Key");
        self.server_signature = Some(m.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks server-final: the server proved it holds the credential.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), SaslError> {
        let text = std::str::from_utf8(server_final)
            .map_err(|_| malformed(self.mechanism, "not UTF-8"))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(SaslError::Unsupported(format!(
                "the server refused: {error}"
            )));
        }
        let presented = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v.split(',').next().unwrap_or_default()).ok())
            .ok_or_else(|| malformed(self.mechanism, "expected v=<signature>"))?;
        let expected = self
            .server_signature
            .as_ref()
            .ok_or_else(|| malformed(self.mechanism, "server-final before server-first"))?;
        if bool::from(presented.ct_eq(expected)) {
            Ok(())
        } else {
            Err(SaslError::BadServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677, section 3.
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_credential() -> ScramCredential {
        let m = ScramMechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("base64");
        let salted = m.salted_password(b"pencil", &salt, 4096);
        ScramCredential::from_salted_password(m, &salted, &salt, 4096)
    }

    /// The server with the RFC's server nonce: drive the state machine up to server-first
    /// and replace its random nonce part with the RFC's.
    fn rfc_server() -> ScramServer {
        let first = parse_client_first(ScramMechanism::Sha256, CLIENT_FIRST.as_bytes())
            .expect("client-first parses");
        ScramServer {
            mechanism: ScramMechanism::Sha256,
            state: ServerState::SentFirst {
                first,
                server_first: SERVER_FIRST.into(),
                nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
                credential: Some(rfc_credential()),
            },
        }
    }

    #[test]
    fn rfc7677_server_verifies_the_client_and_signs() {
        let mut server = rfc_server();
        let step = server
            .step(CLIENT_FINAL.as_bytes(), |_| unreachable!("looked up once"))
            .expect("the RFC's proof verifies");
        assert_eq!(
            step,
            ServerStep::Done {
                user: "user".into(),
                response: SERVER_FINAL.as_bytes().to_vec()
            }
        );
    }

    #[test]
    fn rfc7677_client_computes_the_proof_and_checks_the_server() {
        let mut client = ScramClient::with_nonce(
            ScramMechanism::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
        );
        assert_eq!(client.first(), CLIENT_FIRST.as_bytes());
        let last = client
            .final_message(SERVER_FIRST.as_bytes())
            .expect("server-first");
        assert_eq!(String::from_utf8(last).expect("utf8"), CLIENT_FINAL);
        client
            .verify_server_final(SERVER_FINAL.as_bytes())
            .expect("server signature");
        assert_eq!(
            client.verify_server_final(b"v=AAAA"),
            Err(SaslError::BadServerSignature)
        );
    }

    fn exchange(
        m: ScramMechanism,
        stored: Option<ScramCredential>,
        user: &str,
        password: &str,
    ) -> Result<String, SaslError> {
        let mut client = ScramClient::new(m, user, password);
        let mut server = ScramServer::new(m);
        let ServerStep::Continue(first) = server.step(&client.first(), |_| stored)? else {
            panic!("server-first expected");
        };
        // RFC 5802's structure: the server nonce extends the client's; salt and iterations.
        let text = String::from_utf8(first.clone()).expect("utf8");
        assert!(text.starts_with(&format!("r={}", client.nonce)), "{text}");
        assert!(text.contains(",s=") && text.contains(",i="), "{text}");
        assert_eq!(server.user(), Some(user));
        let last = client.final_message(&first)?;
        match server.step(&last, |_| None)? {
            ServerStep::Done { user, response } => {
                client.verify_server_final(&response)?;
                Ok(user)
            }
            ServerStep::Continue(_) => panic!("done expected"),
        }
    }

    #[test]
    fn both_mechanisms_round_trip_and_refuse_bad_passwords_and_unknown_users_alike() {
        for m in ScramMechanism::ALL {
            let cred = ScramCredential::from_password(m, "alice-secret", 4096);
            assert_eq!(
                exchange(m, Some(cred.clone()), "alice", "alice-secret"),
                Ok("alice".into())
            );
            let wrong = exchange(m, Some(cred), "alice", "nope");
            let unknown = exchange(m, None, "mallory", "alice-secret");
            assert_eq!(wrong, Err(SaslError::BadCredentials));
            assert_eq!(unknown, Err(SaslError::BadCredentials));
        }
    }

    #[test]
    fn an_unknown_user_gets_the_same_salt_every_time() {
        let salt_of = || {
            let mut s = ScramServer::new(ScramMechanism::Sha512);
            match s.step(b"n,,n=ghost,r=abc", |_| None) {
                Ok(ServerStep::Continue(first)) => {
                    let text = String::from_utf8(first).expect("utf8");
                    text.split(',').nth(1).map(str::to_string)
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(salt_of(), salt_of());
    }

    #[test]
    fn client_first_refusals() {
        let m = ScramMechanism::Sha256;
        let unsupported = [
            "p=tls-unique,,n=u,r=abc",
            "n,,n=u,r=abc,tokenauth=true",
            "n,a=other,n=u,r=abc",
            "n,,m=x,n=u,r=abc",
        ];
        for text in unsupported {
            assert!(
                matches!(
                    parse_client_first(m, text.as_bytes()),
                    Err(SaslError::Unsupported(_))
                ),
                "{text}"
            );
        }
        let malformed = [
            "",
            "n",
            "n,",
            "x,,n=u,r=abc",
            "n,,r=abc",
            "n,,n=,r=abc",
            "n,,n=u",
            "n,,n=u,r=",
            "n,,n=a=b,r=abc",
            "n,,n=u,r=a\u{7f}",
            "n,,n=u,r=abc,=x",
            "n,b,n=u,r=abc",
        ];
        for text in malformed {
            assert!(
                matches!(
                    parse_client_first(m, text.as_bytes()),
                    Err(SaslError::Malformed { .. })
                ),
                "{text}"
            );
        }
        let ok = parse_client_first(m, b"y,a=a=2Cb,n=a=2Cb,r=abc,ext=1").expect("parses");
        assert_eq!(
            (ok.user.as_str(), ok.gs2_header.as_str()),
            ("a,b", "y,a=a=2Cb,")
        );
        assert_eq!(ok.extensions, vec![("ext".to_string(), "1".to_string())]);
    }

    #[test]
    fn client_final_refusals() {
        let m = ScramMechanism::Sha256;
        let mut server = ScramServer::new(m);
        let cred = ScramCredential::from_password(m, "pw", 4096);
        let Ok(ServerStep::Continue(first)) = server.step(b"n,,n=u,r=abc", |_| Some(cred)) else {
            panic!("server-first");
        };
        let text = String::from_utf8(first).expect("utf8");
        let nonce = text
            .split(',')
            .next()
            .and_then(|r| r.strip_prefix("r="))
            .expect("nonce");
        // Channel binding that is not the gs2 header of the first message.
        let bad_binding = format!("c=eSws,r={nonce},p=AAAA");
        assert!(matches!(
            server.step(bad_binding.as_bytes(), |_| None),
            Err(SaslError::Malformed { .. })
        ));
        // librdkafka's nonce (its own, then the server's whole nonce) is accepted, as Kafka
        // accepts it; a nonce that does not end with the server's is not.
        let mut other = ScramServer::new(m);
        let Ok(ServerStep::Continue(_)) = other.step(b"n,,n=u,r=abc", |_| {
            Some(ScramCredential::from_password(m, "pw", 4096))
        }) else {
            panic!("server-first");
        };
        assert!(matches!(
            other.step(b"c=biws,r=abcabc,p=AAAA", |_| None),
            Err(SaslError::Malformed { .. })
        ));
        // The exchange is over after an error.
        assert!(server.step(b"c=biws,r=x,p=AAAA", |_| None).is_err());
        for text in [
            "",
            "c=biws,r=abc",
            "c=biws,p=AAAA",
            "c=!!,r=abc,p=AAAA",
            "c=biws,r=abc,p=!!",
        ] {
            assert!(parse_client_final(m, text.as_bytes()).is_err(), "{text}");
        }
    }

    #[test]
    fn saslnames() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("a=2"), None);
        assert_eq!(encode_saslname("a,b=c"), "a=2Cb=3Dc");
        assert_eq!(ScramMechanism::from_wire(2), Some(ScramMechanism::Sha512));
        assert_eq!(
            ScramMechanism::from_name("SCRAM-SHA-256").map(|m| m.wire()),
            Some(1)
        );
        assert_eq!(ScramMechanism::from_wire(0), None);
    }
}
