//! PLAIN (RFC 4616): one client message `[authzid] NUL authcid NUL passwd`, UTF-8.
//!
//! Kafka's server accepts an authorization id only when it is empty or the user itself (no
//! impersonation), and so does [`parse`]. The password is checked by the caller against its
//! user list, in constant time ([`password_matches`]).

use subtle::ConstantTimeEq;

use crate::SaslError;

/// A parsed PLAIN message.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainMessage {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for PlainMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainMessage")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

fn malformed(reason: &str) -> SaslError {
    SaslError::Malformed {
        mechanism: crate::PLAIN,
        reason: reason.into(),
    }
}

/// Parses the client's message.
pub fn parse(message: &[u8]) -> Result<PlainMessage, SaslError> {
    let text = std::str::from_utf8(message).map_err(|_| malformed("not UTF-8"))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "expected [authzid] NUL username NUL password (exactly two NUL separators)",
        ));
    };
    if user.is_empty() {
        return Err(malformed("the username is empty"));
    }
    if password.is_empty() {
        return Err(malformed("the password is empty"));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(SaslError::Unsupported(
            "Authentication failed: the authorization id must be empty or equal to the username"
                .into(),
        ));
    }
    Ok(PlainMessage {
        user: user.to_string(),
        password: password.to_string(),
    })
}

/// The client's message for `user` and `password` (no authorization id).
pub fn client_message(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

/// Compares a presented password with the expected one in time independent of where they
/// differ (the length still shows).
pub fn password_matches(presented: &str, expected: &str) -> bool {
    password_matches_bytes(presented.as_bytes(), expected.as_bytes())
}

/// Constant-time equality of two secrets (length aside).
pub fn password_matches_bytes(presented: &[u8], expected: &[u8]) -> bool {
    presented.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_authzid() {
        let m = parse(b"\0alice\0alice-secret").expect("parses");
        assert_eq!(
            (m.user.as_str(), m.password.as_str()),
            ("alice", "alice-secret")
        );
        let m = parse(b"alice\0alice\0pw").expect("authzid = user");
        assert_eq!(m.user, "alice");
        assert_eq!(
            parse(&client_message("bob", "x")).expect("round trip").user,
            "bob"
        );
        assert!(!format!("{m:?}").contains("pw"));
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            parse(b"mallory\0alice\0pw"),
            Err(SaslError::Unsupported(_))
        ));
        for bad in [
            &b"alice\0pw"[..],
            b"\0\0pw",
            b"\0alice\0",
            b"\0a\0b\0c",
            b"\0a\0\xff",
        ] {
            assert!(
                matches!(parse(bad), Err(SaslError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn password_comparison() {
        assert!(password_matches("s3cret", "s3cret"));
        assert!(!password_matches("s3cres", "s3cret"));
        assert!(!password_matches("s3cre", "s3cret"));
    }
}
