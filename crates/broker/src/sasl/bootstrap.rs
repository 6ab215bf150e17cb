//! The first SCRAM users, written with the metadata's first records: Kafka's
//! `kafka-storage.sh format --add-scram 'SCRAM-SHA-256=[name=alice,password=alice-secret]'`,
//! given to `strata serve --add-scram` (the data directory is formatted by the first start).
//! On a directory formatted before, the option is ignored with a warning: users then change
//! through AlterUserScramCredentials (`strata users`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use strata_quorum::MetadataRecord;
use strata_sasl::scram::{ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS};

/// One `--add-scram` credential.
#[derive(Clone, PartialEq, Eq)]
pub struct AddScram {
    pub mechanism: ScramMechanism,
    pub name: String,
    pub password: String,
    pub iterations: i32,
}

impl std::fmt::Debug for AddScram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}=[name={},iterations={}]",
            self.mechanism, self.name, self.iterations
        )
    }
}

impl AddScram {
    /// Parses Kafka's `MECHANISM=[name=NAME,password=PASSWORD(,iterations=N)]`; values may be
    /// double-quoted (a quoted password may hold `,` and `]`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage = "expected MECHANISM=[name=NAME,password=PASSWORD] with MECHANISM SCRAM-SHA-256 or SCRAM-SHA-512, e.g. 'SCRAM-SHA-256=[name=alice,password=alice-secret]'";
        let (mechanism, rest) = text.trim().split_once('=').ok_or(usage)?;
        let mechanism = ScramMechanism::from_name(mechanism.trim()).ok_or(usage)?;
        let body = rest
            .trim()
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .ok_or(usage)?;
        let (mut name, mut password, mut iterations) = (None, None, MIN_ITERATIONS);
        for (key, value) in split_fields(body).ok_or(usage)? {
            match key.as_str() {
                "name" => name = Some(value),
                "password" => password = Some(value),
                "iterations" => {
                    iterations = value
                        .parse()
                        .ok()
                        .filter(|i| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(i))
                        .ok_or_else(|| {
                            format!("iterations must be {MIN_ITERATIONS} to {MAX_ITERATIONS}")
                        })?
                }
                other => return Err(format!("unknown field {other:?}: {usage}")),
            }
        }
        let name = name.filter(|n| !n.is_empty()).ok_or("name is missing")?;
        let password = password
            .filter(|p| !p.is_empty())
            .ok_or("password is missing")?;
        Ok(AddScram {
            mechanism,
            name,
            password,
            iterations,
        })
    }

    /// The record that sets this credential (a new random salt).
    pub fn record(&self) -> MetadataRecord {
        let c = ScramCredential::from_password(self.mechanism, &self.password, self.iterations);
        MetadataRecord::UserScramCredential {
            name: self.name.clone(),
            mechanism: self.mechanism.wire(),
            salt: B64.encode(&c.salt),
            stored_key: B64.encode(&c.stored_key),
            server_key: B64.encode(&c.server_key),
            iterations: c.iterations,
        }
    }
}

/// `key=value` fields separated by `,`; a value may be double-quoted (`\"` inside).
fn split_fields(body: &str) -> Option<Vec<(String, String)>> {
    let mut fields = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim().to_string();
        if key.is_empty() {
            return None;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push((key, value));
                    return Some(fields);
                }
                Some(',') => {}
                Some(_) => return None,
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
            fields.push((key, value.trim().to_string()));
            if chars.peek().is_none() {
                return Some(fields);
            }
            continue;
        }
        fields.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_syntax() {
        let a = AddScram::parse("SCRAM-SHA-256=[name=alice,password=alice-secret]").expect("ok");
        assert_eq!(
            (a.name.as_str(), a.password.as_str()),
            ("alice", "alice-secret")
        );
        assert_eq!((a.mechanism, a.iterations), (ScramMechanism::Sha256, 4096));
        let a = AddScram::parse(r#"SCRAM-SHA-512=[name=bob,password="a,b]\"c",iterations=8192]"#)
            .expect("quoted");
        assert_eq!((a.password.as_str(), a.iterations), ("a,b]\"c", 8192));
        assert!(!format!("{a:?}").contains("a,b"));
        for bad in [
            "",
            "PLAIN=[name=a,password=b]",
            "SCRAM-SHA-256=name=a,password=b",
            "SCRAM-SHA-256=[name=a]",
            "SCRAM-SHA-256=[password=b]",
            "SCRAM-SHA-256=[name=a,password=b,iterations=100]",
            "SCRAM-SHA-256=[name=a,password=b,salt=c]",
            r#"SCRAM-SHA-256=[name=a,password="b]"#,
        ] {
            assert!(AddScram::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_record_verifies_the_password() {
        let a = AddScram::parse("SCRAM-SHA-256=[name=alice,password=pw]").expect("ok");
        let mut image = strata_quorum::MetadataImage::default();
        image.apply(&a.record());
        let c = image.scram_credential("alice", 1).expect("set");
        let m = ScramMechanism::Sha256;
        let expected = ScramCredential::from_salted_password(
            m,
            &m.salted_password(b"pw", &c.salt, 4096),
            &c.salt,
            4096,
        );
        assert_eq!(c.stored_key, expected.stored_key);
    }
}
