//! SASL on SASL_PLAINTEXT and SASL_SSL listeners: a stage of the connection's request loop.
//!
//! ```text
//!  (TLS handshake on SASL_SSL)
//!  ApiVersions ─▶ served as usual, any number of times
//!  SaslHandshake{mechanism} ─▶ enabled? else UNSUPPORTED_SASL_MECHANISM + close
//!     v0: the next frames are raw tokens (no Kafka header), answered raw
//!     v1: the tokens travel in SaslAuthenticate requests
//!  tokens ─▶ PLAIN: one message, checked against the JAAS line's user_<name> passwords
//!            SCRAM: client-first ▶ server-first, client-final ▶ server-final, against the
//!                   credential in the metadata image (looked up at authentication time)
//!            OAUTHBEARER: one message carrying a JWT, checked by the listener's validator
//!                   ([`oauth`]); the session ends no later than the token
//!     failure: SASL_AUTHENTICATION_FAILED after connection.failed.authentication.delay.ms,
//!              then close
//!  authenticated: principal User:<name>; every request is served until the session
//!  (connections.max.reauth.ms) ends; SaslHandshake + SaslAuthenticate again re-authenticate
//!  (KIP-368: same mechanism, same principal); a request other than that after the end
//!  closes the connection.
//! ```
//!
//! Before authentication, any request other than ApiVersions, SaslHandshake and
//! SaslAuthenticate closes the connection unanswered, as Kafka does. Each refusal is one
//! INFO line with the peer, listener, mechanism and user (when known); the messages sent to
//! the client never tell whether a user exists. Failed attempts are counted per user and
//! per address ([`limiter`]); over the limit an attempt is refused without checking it.
//!
//! The stage owns only its connection's state; the broker-wide parts are the settings (read
//! at start-up), the limiter and the metadata image.

pub mod bootstrap;
pub mod limiter;
pub mod oauth;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, RequestKind, ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use strata_protocol::request::{encode_response, Request};
use strata_protocol::ErrorCode;
use strata_sasl::scram::{ScramCredential, ScramServer, ServerStep};
use strata_sasl::SaslError;
use tokio::time::Instant;

pub use bootstrap::AddScram;
pub use limiter::FailureLimiter;
pub use settings::{Mechanism, SaslSettings};

use crate::auth::{ConnectionContext, Principal};
use crate::broker::Broker;
use crate::handlers::str_bytes;

/// What the connection does with a frame the stage kept (one it lets through is served as
/// usual).
pub enum Outcome {
    /// Send this (a framed response) and read on.
    Answer(Bytes),
    /// Send this after `delay` (a failed authentication), then close.
    AnswerAndClose { answer: Bytes, delay: Duration },
    /// Close at once, unanswered (the reason is logged).
    Close,
}

/// An authenticated session.
struct Session {
    user: String,
    mechanism: Mechanism,
    /// When `connections.max.reauth.ms` ends it.
    expires: Option<Instant>,
}

/// Where the exchange is.
enum State {
    /// Waiting for SaslHandshake (or serving requests, once a session exists).
    Handshake,
    /// After SaslHandshake: waiting for the mechanism's tokens, raw (v0) or in
    /// SaslAuthenticate (v1).
    Tokens {
        mechanism: Mechanism,
        raw: bool,
        /// Boxed: the exchange is short, the state lives as long as the connection.
        scram: Option<Box<ScramServer>>,
    },
}

pub struct SaslStage {
    settings: Arc<SaslSettings>,
    state: State,
    session: Option<Session>,
}

/// Logs each SASL listener's settings (one WARN for mechanisms listed but not served) and
/// builds the broker-wide limiter of failed attempts.
pub fn announce(config: &crate::config::BrokerConfig) -> FailureLimiter {
    for settings in config.sasl.values() {
        if !settings.not_served.is_empty() {
            tracing::warn!(
                listener = %settings.listener,
                not_served = settings.not_served.join(","),
                served = settings.mechanism_names().join(","),
                "sasl.enabled.mechanisms lists mechanisms Strata does not offer (GSSAPI/Kerberos, ...): clients asking for them get UNSUPPORTED_SASL_MECHANISM"
            );
        }
        match settings.oauth.as_deref() {
            Some(oauth) if oauth.is_unsecured() => tracing::warn!(
                listener = %settings.listener,
                "OAUTHBEARER takes unsigned tokens on this listener (Kafka's default validator, meant for development): any client can claim any principal. For production set listener.name.<l>.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler and sasl.oauthbearer.jwks.endpoint.url"
            ),
            Some(oauth) => tracing::info!(
                listener = %settings.listener,
                jwks = %oauth.keys.as_ref().map_or_else(String::new, |k| k.path.display().to_string()),
                keys = oauth.keys.as_ref().map_or(0, |k| k.key_count()),
                "OAUTHBEARER checks signed tokens against the key set"
            ),
            None => {}
        }
        tracing::info!(
            listener = %settings.listener,
            mechanisms = settings.mechanism_names().join(","),
            plain_users = settings.plain_users.len(),
            session_lifetime_ms = settings.session_lifetime.map_or(0, |d| d.as_millis() as u64),
            inter_broker_mechanism = %config.sasl_inter_broker_mechanism,
            "SASL ready"
        );
    }
    FailureLimiter::new(
        config
            .parsed::<u32>(crate::config::SASL_MAX_FAILED_ATTEMPTS)
            .unwrap_or(0),
        Duration::from_millis(
            config
                .parsed::<u64>(crate::config::SASL_FAILED_ATTEMPTS_WINDOW_MS)
                .unwrap_or(60_000)
                .max(1),
        ),
    )
}

/// The refusal of an attempt, before it is logged and answered.
struct Refusal {
    error: ErrorCode,
    message: String,
    user: Option<String>,
    /// What went into the log line beyond the client's message.
    detail: &'static str,
}

impl SaslStage {
    pub fn new(settings: Arc<SaslSettings>) -> Self {
        SaslStage {
            settings,
            state: State::Handshake,
            session: None,
        }
    }

    /// Whether the client has authenticated (requests are its principal's).
    pub fn authenticated(&self) -> bool {
        self.session.is_some()
    }

    /// After a v0 SaslHandshake the client sends its tokens as bare frames.
    pub fn expects_raw_token(&self) -> bool {
        matches!(self.state, State::Tokens { raw: true, .. })
    }

    /// Looks at a decoded request first: `Ok` gives it back to be served as usual
    /// (authenticated, or ApiVersions).
    pub fn on_request(
        &mut self,
        broker: &Broker,
        ctx: &mut ConnectionContext,
        request: Request,
    ) -> Result<Request, Outcome> {
        let api = request.api_key;
        let now = Instant::now();
        Err(match (&self.state, api) {
            (_, ApiKey::SaslHandshake) => self.handshake(ctx, request),
            (State::Tokens { raw: false, .. }, ApiKey::SaslAuthenticate) => {
                self.authenticate_request(broker, ctx, request)
            }
            (State::Tokens { .. }, _) => {
                tracing::info!(peer = %ctx.peer, listener = %ctx.listener, api = ?api, "closing connection: a request other than SaslAuthenticate in the middle of a SASL exchange");
                Outcome::Close
            }
            (State::Handshake, ApiKey::ApiVersions) => return Ok(request),
            (State::Handshake, ApiKey::SaslAuthenticate) if self.session.is_none() => {
                let answer = authenticate_error(
                    &request,
                    ErrorCode::IllegalSaslState,
                    "SaslAuthenticate before SaslHandshake",
                );
                tracing::info!(peer = %ctx.peer, listener = %ctx.listener, "closing connection: SaslAuthenticate before SaslHandshake");
                close_with(answer, Duration::ZERO)
            }
            (State::Handshake, _) => match &self.session {
                None => {
                    tracing::info!(peer = %ctx.peer, listener = %ctx.listener, api = ?api, "closing connection: request before SASL authentication (only ApiVersions, SaslHandshake and SaslAuthenticate are served until then)");
                    Outcome::Close
                }
                Some(s) if s.expires.is_some_and(|e| now >= e) => {
                    tracing::info!(peer = %ctx.peer, listener = %ctx.listener, user = %s.user, api = ?api, "closing connection: the SASL session ended (connections.max.reauth.ms) and the client did not re-authenticate");
                    Outcome::Close
                }
                Some(_) => return Ok(request),
            },
        })
    }

    /// A raw token after a v0 handshake.
    pub fn on_raw_token(
        &mut self,
        broker: &Broker,
        ctx: &mut ConnectionContext,
        token: &[u8],
    ) -> Outcome {
        match self.exchange(broker, ctx, token) {
            Ok(response) => Outcome::Answer(raw_frame(&response.unwrap_or_default())),
            Err(refusal) => {
                let delay = self.log_refusal(ctx, &refusal);
                // v0 clients get no error message: the connection closes after the delay.
                close_with(Bytes::new(), delay)
            }
        }
    }

    fn handshake(&mut self, ctx: &mut ConnectionContext, request: Request) -> Outcome {
        let version = request.version();
        let RequestKind::SaslHandshake(req) = &request.body else {
            return Outcome::Close;
        };
        let names = self.settings.mechanism_names();
        let answer = |error: Option<ErrorCode>| {
            encode(
                &request,
                ResponseKind::SaslHandshake(
                    SaslHandshakeResponse::default()
                        .with_error_code(strata_protocol::code(error))
                        .with_mechanisms(names.iter().map(|m| str_bytes(*m)).collect()),
                ),
            )
        };
        let asked = req.mechanism.to_string();
        if matches!(self.state, State::Tokens { .. }) {
            tracing::info!(peer = %ctx.peer, listener = %ctx.listener, mechanism = %asked, "closing connection: a second SaslHandshake in the middle of a SASL exchange");
            return close_with(answer(Some(ErrorCode::IllegalSaslState)), Duration::ZERO);
        }
        let mechanism = Mechanism::from_name(&asked).filter(|m| self.settings.serves(*m));
        let reauth_mismatch = self
            .session
            .as_ref()
            .is_some_and(|s| Some(s.mechanism) != mechanism);
        let Some(mechanism) = mechanism.filter(|_| !reauth_mismatch) else {
            let why = if reauth_mismatch {
                "re-authentication must use the mechanism of the session"
            } else if self.settings.not_served.contains(&asked) {
                "mechanism listed in sasl.enabled.mechanisms but not offered by Strata"
            } else {
                "mechanism not enabled on this listener"
            };
            tracing::info!(peer = %ctx.peer, listener = %ctx.listener, mechanism = %asked, enabled = ?names, "closing connection: UNSUPPORTED_SASL_MECHANISM ({why})");
            return close_with(
                answer(Some(ErrorCode::UnsupportedSaslMechanism)),
                Duration::ZERO,
            );
        };
        self.state = State::Tokens {
            mechanism,
            raw: version == 0,
            scram: None,
        };
        Outcome::Answer(answer(None))
    }

    fn authenticate_request(
        &mut self,
        broker: &Broker,
        ctx: &mut ConnectionContext,
        request: Request,
    ) -> Outcome {
        let RequestKind::SaslAuthenticate(req) = &request.body else {
            return Outcome::Close;
        };
        match self.exchange(broker, ctx, &req.auth_bytes) {
            Ok(response) => {
                let lifetime_ms = match (&self.session, &self.state) {
                    (Some(s), State::Handshake) => s.expires.map_or(0, |e| {
                        i64::try_from(e.saturating_duration_since(Instant::now()).as_millis())
                            .unwrap_or(i64::MAX)
                    }),
                    _ => 0,
                };
                encode_answer(
                    &request,
                    ResponseKind::SaslAuthenticate(
                        SaslAuthenticateResponse::default()
                            .with_error_message(None)
                            .with_auth_bytes(Bytes::from(response.unwrap_or_default()))
                            .with_session_lifetime_ms(lifetime_ms),
                    ),
                )
            }
            Err(refusal) => {
                let delay = self.log_refusal(ctx, &refusal);
                close_with(
                    authenticate_error(&request, refusal.error, &refusal.message),
                    delay,
                )
            }
        }
    }

    /// One token of the exchange: the answer token (`None`: nothing to send, PLAIN v0), or
    /// the refusal. Completes the session when the mechanism is done.
    fn exchange(
        &mut self,
        broker: &Broker,
        ctx: &mut ConnectionContext,
        token: &[u8],
    ) -> Result<Option<Vec<u8>>, Refusal> {
        let State::Tokens {
            mechanism, scram, ..
        } = &mut self.state
        else {
            return Err(refusal(
                ErrorCode::IllegalSaslState,
                "no SASL exchange in progress",
                None,
                "token outside an exchange",
            ));
        };
        let mechanism = *mechanism;
        let host = ctx.peer.ip();
        let now = std::time::Instant::now();
        let limiter = &broker.sasl_failures;
        // When the credential itself expires (an OAUTHBEARER token's exp).
        let mut credential_expiry: Option<Duration> = None;
        let (user, response) = match mechanism {
            Mechanism::Plain => {
                let message = strata_sasl::plain::parse(token).map_err(|e| from_sasl(e, None))?;
                if let Some(blocked) = limiter.check(Some(&message.user), host, now) {
                    return Err(self.blocked(ctx, mechanism, Some(&message.user), blocked));
                }
                // An unknown user is compared with a password it cannot match, so that both
                // refusals take the same path.
                let expected = self.settings.plain_users.get(&message.user);
                let matches = strata_sasl::plain::password_matches(
                    &message.password,
                    expected.map_or("\u{0}unknown user", String::as_str),
                ) && expected.is_some();
                if !matches {
                    limiter.record_failure(Some(&message.user), host, now);
                    return Err(from_sasl(SaslError::BadCredentials, Some(message.user)));
                }
                // Kafka's PLAIN server answers with an empty token (a zero-length frame for
                // v0 clients).
                (message.user, Some(Vec::new()))
            }
            Mechanism::OAuthBearer => {
                let Some(oauth) = self.settings.oauth.as_deref() else {
                    return Err(refusal(
                        ErrorCode::UnsupportedSaslMechanism,
                        "OAUTHBEARER is not configured on this listener",
                        None,
                        "no validator",
                    ));
                };
                let message =
                    strata_sasl::oauthbearer::parse(token).map_err(|e| from_sasl(e, None))?;
                // The user is only known once the token is checked: attempts count per address.
                if let Some(blocked) = limiter.check(None, host, now) {
                    return Err(self.blocked(ctx, mechanism, None, blocked));
                }
                let valid = oauth.validate(&message.token).map_err(|e| {
                    limiter.record_failure(None, host, now);
                    from_sasl(e, None)
                })?;
                if message
                    .authzid
                    .as_ref()
                    .is_some_and(|a| *a != valid.principal)
                {
                    return Err(from_sasl(
                        SaslError::Unsupported(
                            "Authentication failed: the authorization id must be empty or the token's principal".into(),
                        ),
                        Some(valid.principal),
                    ));
                }
                let remaining = valid
                    .expires_at_ms
                    .saturating_sub(crate::partition::now_ms())
                    .max(0);
                credential_expiry = Some(Duration::from_millis(remaining.unsigned_abs()));
                // Kafka's OAUTHBEARER server answers success with an empty token.
                (valid.principal, Some(Vec::new()))
            }
            Mechanism::Scram(m) => {
                let server = scram.get_or_insert_with(|| Box::new(ScramServer::new(m)));
                let first = server.user().is_none();
                let known_user = server.user().map(str::to_string);
                let image = broker.image();
                let mut looked_up = None;
                let step = server.step(token, |user| {
                    looked_up = Some(user.to_string());
                    image
                        .scram_credential(user, m.wire())
                        .map(|c| ScramCredential {
                            salt: c.salt.clone(),
                            stored_key: c.stored_key.clone(),
                            server_key: c.server_key.clone(),
                            iterations: c.iterations,
                        })
                });
                let user = looked_up.or(known_user);
                if first {
                    if let Some(blocked) = limiter.check(user.as_deref(), host, now) {
                        return Err(self.blocked(ctx, mechanism, user.as_deref(), blocked));
                    }
                }
                match step {
                    Ok(ServerStep::Continue(response)) => return Ok(Some(response)),
                    Ok(ServerStep::Done { user, response }) => (user, Some(response)),
                    Err(e) => {
                        if e == SaslError::BadCredentials {
                            limiter.record_failure(user.as_deref(), host, now);
                        }
                        return Err(from_sasl(e, user));
                    }
                }
            }
        };
        if let Some(previous) = &self.session {
            if previous.user != user {
                return Err(refusal(
                    ErrorCode::SaslAuthenticationFailed,
                    "Cannot change principals during re-authentication",
                    Some(user),
                    "re-authentication as another user",
                ));
            }
        }
        // KIP-368: a session ends with connections.max.reauth.ms, or earlier with its
        // credential (only when re-authentication is on, as in Kafka).
        let expires = self
            .settings
            .session_lifetime
            .map(|l| Instant::now() + credential_expiry.map_or(l, |c| c.min(l)));
        tracing::debug!(peer = %ctx.peer, listener = %ctx.listener, mechanism = %mechanism.name(), %user, reauthentication = self.session.is_some(), "SASL authentication succeeded");
        ctx.principal = Principal::user(user.clone());
        self.session = Some(Session {
            user,
            mechanism,
            expires,
        });
        self.state = State::Handshake;
        Ok(response)
    }

    fn blocked(
        &self,
        ctx: &ConnectionContext,
        mechanism: Mechanism,
        user: Option<&str>,
        blocked: limiter::Blocked,
    ) -> Refusal {
        if blocked.log {
            tracing::warn!(peer = %ctx.peer, listener = %ctx.listener, mechanism = %mechanism.name(), user = %user.unwrap_or("-"), limited = %blocked.key, remaining_ms = blocked.remaining.as_millis() as u64, "too many failed SASL authentications: refusing attempts unchecked until the window ends (strata.sasl.max.failed.attempts); logged once per window");
        }
        Refusal {
            error: ErrorCode::SaslAuthenticationFailed,
            message: "Authentication failed: too many failed attempts, try again later".into(),
            user: user.map(str::to_string),
            detail: "rate limited",
        }
    }

    /// Logs a refusal (rate-limited ones were logged once already) and returns the delay
    /// before the answer. The exchange is over.
    fn log_refusal(&mut self, ctx: &ConnectionContext, refusal: &Refusal) -> Duration {
        let mechanism = match &self.state {
            State::Tokens { mechanism, .. } => mechanism.name(),
            State::Handshake => "-",
        };
        if refusal.detail != "rate limited" {
            tracing::info!(
                peer = %ctx.peer,
                listener = %ctx.listener,
                %mechanism,
                user = %refusal.user.as_deref().unwrap_or("-"),
                error = ?refusal.error,
                reason = %refusal.message,
                detail = %refusal.detail,
                "closing connection: SASL authentication failed"
            );
        }
        self.state = State::Handshake;
        self.settings.failed_authentication_delay
    }
}

fn refusal(error: ErrorCode, message: &str, user: Option<String>, detail: &'static str) -> Refusal {
    Refusal {
        error,
        message: message.to_string(),
        user,
        detail,
    }
}

fn from_sasl(error: SaslError, user: Option<String>) -> Refusal {
    let detail = match error {
        SaslError::BadCredentials => "wrong password or unknown user",
        SaslError::Malformed { .. } => "malformed message",
        SaslError::Unsupported(_) => "unsupported feature",
        SaslError::InvalidToken(_) => "invalid token",
        SaslError::BadServerSignature => "server signature",
    };
    Refusal {
        error: ErrorCode::SaslAuthenticationFailed,
        message: error.to_string(),
        user,
        detail,
    }
}

fn close_with(answer: Bytes, delay: Duration) -> Outcome {
    Outcome::AnswerAndClose { answer, delay }
}

fn raw_frame(token: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + token.len());
    buf.put_u32(u32::try_from(token.len()).unwrap_or(u32::MAX));
    buf.put_slice(token);
    buf.freeze()
}

fn encode(request: &Request, body: ResponseKind) -> Bytes {
    encode_response(
        request.correlation_id(),
        request.api_key,
        request.version(),
        &body,
    )
    .unwrap_or_else(|error| {
        tracing::error!(%error, "cannot encode a SASL response");
        Bytes::new()
    })
}

fn encode_answer(request: &Request, body: ResponseKind) -> Outcome {
    Outcome::Answer(encode(request, body))
}

fn authenticate_error(request: &Request, error: ErrorCode, message: &str) -> Bytes {
    encode(
        request,
        ResponseKind::SaslAuthenticate(
            SaslAuthenticateResponse::default()
                .with_error_code(error.code())
                .with_error_message(Some(str_bytes(message))),
        ),
    )
}

/// Whether `password` is `user`'s, by the broker's SASL users: a PLAIN user of any SASL
/// listener, or a SCRAM credential in the metadata (the password salted with the credential's
/// salt and iterations must give its StoredKey). Comparisons are constant-time. For logins
/// outside the Kafka protocol (the HTTP console), which then act as `User:<user>`.
pub fn password_is_valid(broker: &Broker, user: &str, password: &str) -> bool {
    let plain = broker.config.sasl.values().any(|s| {
        s.serves(settings::Mechanism::Plain)
            && s.plain_users
                .get(user)
                .is_some_and(|expected| strata_sasl::plain::password_matches(password, expected))
    });
    if plain {
        return true;
    }
    let image = broker.image();
    [
        strata_sasl::scram::ScramMechanism::Sha256,
        strata_sasl::scram::ScramMechanism::Sha512,
    ]
    .into_iter()
    .any(|m| {
        image.scram_credential(user, m.wire()).is_some_and(|c| {
            let derived = ScramCredential::from_salted_password(
                m,
                &m.salted_password(
                    password.as_bytes(),
                    &c.salt,
                    c.iterations.max(1).unsigned_abs(),
                ),
                &c.salt,
                c.iterations,
            );
            strata_sasl::plain::password_matches_bytes(&derived.stored_key, &c.stored_key)
        })
    })
}
