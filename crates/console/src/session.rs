//! Logins to the console when SASL protects the broker (any SASL listener, or
//! `console.auth.required=true`): the same users as the Kafka listeners (PLAIN users of the
//! JAAS lines, SCRAM credentials in the metadata) log in with a form, which opens a server-side
//! session (a random 128-bit id in the `strata_session` cookie, `HttpOnly; SameSite=Strict`,
//! idle for at most 30 minutes, at most 1024 at once), or send HTTP Basic credentials with each
//! request (scripts, Prometheus). The request then acts as `User:<name>`, so ACLs apply to it
//! as to a Kafka client of that user.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use strata_broker::auth::Principal;
use strata_broker::broker::Broker;

const MAX_SESSIONS: usize = 1024;
const IDLE: Duration = Duration::from_secs(30 * 60);

tokio::task_local! {
    /// Who is asking, for the duration of one console request.
    pub static CALLER: (Principal, SocketAddr);
}

/// The caller of the request being handled (anonymous outside a request).
pub fn caller() -> (Principal, SocketAddr) {
    CALLER.try_with(|c| c.clone()).unwrap_or_else(|_| {
        (
            Principal::anonymous(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
    })
}

#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, (String, Instant)>>,
}

impl Sessions {
    /// A new session for `user`; its id goes in the cookie.
    pub fn open(&self, user: &str) -> String {
        let id: String = (0..16)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        open.retain(|_, (_, last)| now.duration_since(*last) < IDLE);
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open
                .iter()
                .min_by_key(|(_, (_, last))| *last)
                .map(|(k, _)| k.clone())
            {
                open.remove(&oldest);
            }
        }
        open.insert(id.clone(), (user.to_string(), now));
        id
    }

    /// The user of a live session, which it keeps alive.
    pub fn user(&self, id: &str) -> Option<String> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match open.get_mut(id) {
            Some((user, last)) if now.duration_since(*last) < IDLE => {
                *last = now;
                Some(user.clone())
            }
            Some(_) => {
                open.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// The user a request authenticates as: its session cookie, else HTTP Basic credentials.
pub fn authenticate(
    broker: &Broker,
    sessions: &Sessions,
    headers: &hyper::HeaderMap,
) -> Option<String> {
    let cookies = headers
        .get(hyper::header::COOKIE)
        .and_then(|v| v.to_str().ok());
    if let Some(id) = cookie(cookies, "strata_session") {
        if let Some(user) = sessions.user(&id) {
            return Some(user);
        }
    }
    let basic = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    if strata_broker::sasl::password_is_valid(broker, user, password) {
        Some(user.to_string())
    } else {
        tracing::info!(
            user,
            "console login refused (HTTP Basic): wrong user or password"
        );
        None
    }
}

pub fn cookie(header: Option<&str>, name: &str) -> Option<String> {
    header?
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_resolve_and_close() {
        let s = Sessions::default();
        let id = s.open("alice");
        assert_eq!(id.len(), 32);
        assert_eq!(s.user(&id).as_deref(), Some("alice"));
        assert_ne!(s.open("bob"), id);
        s.close(&id);
        assert_eq!(s.user(&id), None);
        assert_eq!(s.user("forged"), None);
        for i in 0..(MAX_SESSIONS + 5) {
            s.open(&format!("u{i}"));
        }
        assert!(s.open.lock().unwrap().len() <= MAX_SESSIONS);
    }
}
