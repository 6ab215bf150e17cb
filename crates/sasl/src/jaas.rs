//! Kafka's `sasl.jaas.config` value: one JAAS login module entry,
//!
//! ```text
//! org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="s3cr=t;" user_alice="x";
//! ```
//!
//! a class name, a control flag (`required`, `requisite`, `sufficient`, `optional`), options
//! `name=value` (the value a bare word or a double-quoted string with backslash escapes), and
//! a `;` that ends it. Kafka accepts exactly one entry in the property, and so does this
//! parser. Errors name the position and what was expected, never an option's value (values
//! are passwords), and [`JaasEntry`]'s `Debug` hides them too.

/// JAAS control flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlFlag {
    Required,
    Requisite,
    Sufficient,
    Optional,
}

/// One login module and its options, in the order written.
#[derive(Clone, PartialEq, Eq)]
pub struct JaasEntry {
    pub login_module: String,
    pub flag: ControlFlag,
    pub options: Vec<(String, String)>,
}

impl std::fmt::Debug for JaasEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("JaasEntry")
            .field("login_module", &self.login_module)
            .field("flag", &self.flag)
            .field("options (values hidden)", &names)
            .finish()
    }
}

impl JaasEntry {
    /// The value of option `name` (the last one when written twice).
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A JAAS line that cannot be read. Never carries an option's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed JAAS configuration at character {position}: {reason}")]
pub struct JaasError {
    pub position: usize,
    pub reason: String,
}

/// Longest JAAS text read, so a hostile value cannot make the parser work long.
pub const MAX_JAAS_BYTES: usize = 64 * 1024;

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn error(&self, reason: impl Into<String>) -> JaasError {
        JaasError {
            position: self.pos,
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Skips blanks and Java-style comments (`// ...` and `/* ... */`), as JAAS files allow.
    fn skip_blanks(&mut self) -> Result<(), JaasError> {
        loop {
            let rest = &self.text[self.pos..];
            if let Some(c) = rest.chars().next().filter(|c| c.is_whitespace()) {
                self.pos += c.len_utf8();
            } else if rest.starts_with("//") {
                self.pos += rest.find('\n').unwrap_or(rest.len());
            } else if let Some(comment) = rest.strip_prefix("/*") {
                let end = comment
                    .find("*/")
                    .ok_or_else(|| self.error("unterminated /* comment"))?;
                self.pos += end + 4;
            } else {
                return Ok(());
            }
        }
    }

    fn word(&mut self) -> &str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_alphanumeric() || matches!(c, '_' | '.' | '$' | '-' | '/' | ':' | '+' | '@') {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        &self.text[start..self.pos]
    }

    /// A double-quoted string after its opening quote: `\\`, `\"`, `\n`, `\t`, `\r` and `\c`
    /// for any other `c`.
    fn quoted(&mut self) -> Result<String, JaasError> {
        let start = self.pos;
        let mut out = String::new();
        loop {
            match self.bump() {
                None => {
                    self.pos = start;
                    return Err(self.error("a quoted value is not closed with \""));
                }
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(c) => out.push(c),
                    None => {
                        self.pos = start;
                        return Err(self.error("a quoted value ends in a lone backslash"));
                    }
                },
                Some(c) => out.push(c),
            }
        }
    }
}

/// Parses a `sasl.jaas.config` value: exactly one login module entry ending in `;`.
pub fn parse(text: &str) -> Result<JaasEntry, JaasError> {
    if text.len() > MAX_JAAS_BYTES {
        return Err(JaasError {
            position: MAX_JAAS_BYTES,
            reason: format!("longer than {MAX_JAAS_BYTES} bytes"),
        });
    }
    let mut c = Cursor { text, pos: 0 };
    c.skip_blanks()?;
    let login_module = c.word().to_string();
    if login_module.is_empty() {
        return Err(c.error("expected a login module class name"));
    }
    c.skip_blanks()?;
    let flag_at = c.pos;
    let flag = match c.word().to_ascii_lowercase().as_str() {
        "required" => ControlFlag::Required,
        "requisite" => ControlFlag::Requisite,
        "sufficient" => ControlFlag::Sufficient,
        "optional" => ControlFlag::Optional,
        other => {
            let shown = if other.is_empty() { "nothing" } else { other };
            c.pos = flag_at;
            return Err(c.error(format!(
                "expected a control flag (required, requisite, sufficient or optional) after {login_module}, found {shown}"
            )));
        }
    };
    let mut options = Vec::new();
    loop {
        c.skip_blanks()?;
        match c.peek() {
            Some(';') => {
                c.bump();
                break;
            }
            None => return Err(c.error("the entry must end with ';'")),
            _ => {}
        }
        let name = c.word().to_string();
        if name.is_empty() {
            return Err(c.error("expected an option name=value or ';'"));
        }
        c.skip_blanks()?;
        if c.bump() != Some('=') {
            return Err(c.error(format!("expected '=' after option {name}")));
        }
        c.skip_blanks()?;
        let value = if c.peek() == Some('"') {
            c.bump();
            c.quoted()?
        } else {
            let value = c.word().to_string();
            if value.is_empty() {
                return Err(c.error(format!("option {name} has no value")));
            }
            value
        };
        options.push((name, value));
    }
    c.skip_blanks()?;
    if c.peek().is_some() {
        return Err(
            c.error("text after the entry's ';': sasl.jaas.config holds exactly one login module")
        );
    }
    Ok(JaasEntry {
        login_module,
        flag,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_plain_line() {
        let e = parse(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";"#,
        )
        .expect("parses");
        assert_eq!(
            e.login_module,
            "org.apache.kafka.common.security.plain.PlainLoginModule"
        );
        assert_eq!(e.flag, ControlFlag::Required);
        assert_eq!(e.option("username"), Some("admin"));
        assert_eq!(e.option("user_alice"), Some("alice-secret"));
        assert_eq!(e.options.len(), 4);
        assert!(!format!("{e:?}").contains("secret"));
    }

    #[test]
    fn quoted_values_blanks_comments_and_bare_words() {
        let e = parse(
            "  m.Scram  Optional /* c */ username = bob\n password=\"a \\\"q\\\" ;=\\\\ \\n\"  // tail\n ; ",
        )
        .expect("parses");
        assert_eq!(e.flag, ControlFlag::Optional);
        assert_eq!(e.option("username"), Some("bob"));
        assert_eq!(e.option("password"), Some("a \"q\" ;=\\ \n"));
    }

    #[test]
    fn malformed_lines_say_where_and_never_echo_values() {
        let cases = [
            ("", "class name"),
            ("m.Plain", "control flag"),
            ("m.Plain mandatory;", "control flag"),
            ("m.Plain required username=\"x\"", "end with ';'"),
            ("m.Plain required password=\"hunter2;", "not closed"),
            ("m.Plain required password=\"hunter2\\", "lone backslash"),
            ("m.Plain required username \"x\";", "'='"),
            ("m.Plain required username=;", "no value"),
            ("m.Plain required; m.Other required;", "exactly one"),
            ("m.Plain required /* open", "comment"),
            ("m.Plain required =x;", "option name"),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text);
            let shown = err.to_string();
            assert!(shown.contains(expected), "{text}: {shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn an_option_given_twice_keeps_the_last() {
        let e = parse("m required a=1 a=2;").expect("parses");
        assert_eq!(e.option("a"), Some("2"));
    }
}
