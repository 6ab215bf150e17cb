//! `ssl.principal.mapping.rules`: from a certificate's distinguished name to a user name, as
//! Kafka's `SslPrincipalMapper` does it.
//!
//! The value is a comma-separated list of rules, tried in order; the first that applies gives
//! the name, and a name no rule applies to fails the authentication:
//!
//! - `DEFAULT` applies to every name and keeps it whole (`CN=alice,OU=eng,O=acme,C=US`);
//! - `RULE:pattern/replacement/` applies when `pattern` matches the *whole* name, which is then
//!   rewritten as Java's `String.replaceAll(pattern, replacement)` does (`$1` names a group, a
//!   group number beyond the pattern's groups is kept as literal text, `\x` is a literal `x`);
//!   a trailing `L` or `U` (`RULE:pattern/replacement/L`) lower- or upper-cases the result.
//!
//! A `/` or `\` inside the pattern or the replacement is escaped with `\`; commas inside a rule
//! need no escape. Patterns use Rust's regex syntax, which agrees with Java's for such rules;
//! look-around and back-references inside a pattern are refused at start-up.

use regex::{Captures, Regex};

/// Why `ssl.principal.mapping.rules` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rule {rule:?}: {reason}")]
pub struct InvalidRule {
    pub rule: String,
    pub reason: String,
}

/// No rule applied to a certificate's name: the client is refused, as Kafka refuses it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no rule of ssl.principal.mapping.rules applies to {name:?}")]
pub struct NoMatchingRule {
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace {
        /// The pattern as written, for error messages and `Display`.
        source: String,
        /// The pattern, for `replaceAll`.
        pattern: Regex,
        /// The pattern anchored at both ends: Java's `Matcher.matches()`.
        whole: Regex,
        replacement: String,
        case: Case,
    },
}

/// Kafka's grammar of one rule (`SslPrincipalMapper.RULE_PATTERN`).
const RULE_PATTERN: &str = r"(DEFAULT)|RULE:((?:\\.|[^\\/])*)/((?:\\.|[^\\/])*)/([LU]?).*?|(.*?)";

/// The parsed rules, in order.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

impl Default for PrincipalMapper {
    /// `DEFAULT` alone: the whole distinguished name is the user name.
    fn default() -> Self {
        PrincipalMapper {
            rules: vec![Rule::Default],
        }
    }
}

impl PrincipalMapper {
    /// Parses the value of `ssl.principal.mapping.rules`. Empty rules are ignored, as Kafka
    /// ignores them.
    pub fn parse(value: &str) -> Result<Self, InvalidRule> {
        let splitter = Regex::new(&format!(r"\s*({RULE_PATTERN})\s*(?:,\s*|$)"))
            .expect("the rule splitter is a valid regex");
        let parser = Regex::new(&format!(r"^(?:{RULE_PATTERN})"))
            .expect("the rule grammar is a valid regex");
        let mut rules = Vec::new();
        for found in splitter.captures_iter(value.trim()) {
            let text = found.get(1).map_or("", |m| m.as_str());
            if let Some(rule) = parse_rule(&parser, text)? {
                rules.push(rule);
            }
        }
        Ok(PrincipalMapper { rules })
    }

    /// The user name for a certificate's distinguished name (RFC 2253 form).
    pub fn name_for(&self, distinguished_name: &str) -> Result<String, NoMatchingRule> {
        self.rules
            .iter()
            .find_map(|rule| rule.apply(distinguished_name))
            .ok_or_else(|| NoMatchingRule {
                name: distinguished_name.to_string(),
            })
    }
}

fn parse_rule(parser: &Regex, text: &str) -> Result<Option<Rule>, InvalidRule> {
    let invalid = |reason: String| InvalidRule {
        rule: text.to_string(),
        reason,
    };
    let caps = parser
        .captures(text)
        .expect("the grammar's last alternative matches the empty prefix");
    let matched = caps.get(0).map_or(0, |m| m.end());
    if matched != text.len() {
        return Err(invalid(format!(
            "expected DEFAULT or RULE:pattern/replacement/[L|U], and {:?} is left over",
            &text[matched..]
        )));
    }
    if caps.get(1).is_some() {
        return Ok(Some(Rule::Default));
    }
    let (Some(source), Some(replacement)) = (caps.get(2), caps.get(3)) else {
        // The empty rule (between two commas).
        return Ok(None);
    };
    let source = source.as_str().to_string();
    let compile = |p: &str| {
        Regex::new(p).map_err(|e| invalid(format!("the pattern is not a valid regex: {e}")))
    };
    let pattern = compile(&source)?;
    let whole = compile(&format!(r"\A(?:{source})\z"))?;
    let replacement = replacement.as_str().to_string();
    check_replacement(&replacement).map_err(|r| invalid(r.to_string()))?;
    let case = match caps.get(4).map(|m| m.as_str()) {
        Some("L") => Case::Lower,
        Some("U") => Case::Upper,
        _ => Case::Keep,
    };
    Ok(Some(Rule::Replace {
        source,
        pattern,
        whole,
        replacement,
        case,
    }))
}

/// Refuses what Java's `replaceAll` would throw on when the rule is applied.
fn check_replacement(replacement: &str) -> Result<(), &'static str> {
    let mut chars = replacement.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => {
                return Err("the replacement ends with a lone backslash")
            }
            '$' => match chars.next() {
                Some(d) if d.is_ascii_digit() => {}
                Some('{') => {
                    if !chars.by_ref().any(|c| c == '}') {
                        return Err("the replacement has an unclosed ${name}");
                    }
                }
                _ => return Err("a $ in the replacement must name a group ($1, ${name}); write \\$ for a literal $"),
            },
            _ => {}
        }
    }
    Ok(())
}

impl Rule {
    fn apply(&self, name: &str) -> Option<String> {
        match self {
            Rule::Default => Some(name.to_string()),
            Rule::Replace {
                pattern,
                whole,
                replacement,
                case,
                ..
            } => {
                if !whole.is_match(name) {
                    return None;
                }
                let replaced = replace_all(pattern, name, replacement);
                Some(match case {
                    Case::Keep => replaced,
                    Case::Lower => replaced.to_lowercase(),
                    Case::Upper => replaced.to_uppercase(),
                })
            }
        }
    }
}

/// Java's `String.replaceAll`: every match, left to right; after an empty match the search
/// resumes one character further on (so `.*` on `a` matches twice, as in Java).
fn replace_all(pattern: &Regex, text: &str, replacement: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while from <= text.len() {
        let Some(caps) = pattern.captures_at(text, from) else {
            break;
        };
        let m = caps.get(0).expect("group 0 is the whole match");
        out.push_str(&text[copied..m.start()]);
        expand(&caps, replacement, &mut out);
        copied = m.end();
        from = if m.is_empty() {
            match text[m.end()..].chars().next() {
                Some(c) => m.end() + c.len_utf8(),
                None => break,
            }
        } else {
            m.end()
        };
    }
    out.push_str(&text[copied..]);
    out
}

/// Java's replacement syntax with Kafka's escaping of back-references beyond the pattern's
/// groups: `$12` is group 12 if there is one, else group 1 followed by `2`; a reference to a
/// group that does not exist stays literal text; `${name}` is a named group; `\x` is `x`.
fn expand(caps: &Captures<'_>, replacement: &str, out: &mut String) {
    let groups = caps.len() - 1;
    let mut chars = replacement.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    out.push(escaped);
                }
            }
            '$' => match chars.peek().copied() {
                Some((_, '{')) => {
                    let rest = &replacement[at + 2..];
                    let end = rest.find('}').unwrap_or(rest.len());
                    if let Some(m) = caps.name(&rest[..end]) {
                        out.push_str(m.as_str());
                    }
                    while chars.next_if(|&(i, _)| i <= at + 2 + end).is_some() {}
                }
                Some((_, d)) if d.is_ascii_digit() => {
                    let mut number = d.to_digit(10).expect("a digit") as usize;
                    if number > groups {
                        out.push('$');
                        continue;
                    }
                    chars.next();
                    while let Some(&(_, next)) = chars.peek() {
                        let Some(digit) = next.to_digit(10) else {
                            break;
                        };
                        let longer = number * 10 + digit as usize;
                        if longer > groups {
                            break;
                        }
                        number = longer;
                        chars.next();
                    }
                    out.push_str(caps.get(number).map_or("", |m| m.as_str()));
                }
                _ => out.push('$'),
            },
            c => out.push(c),
        }
    }
}

/// Kafka's text form of a rule, as its `SslPrincipalMapper.Rule.toString()` writes it.
impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Default => f.write_str("DEFAULT"),
            Rule::Replace {
                source,
                replacement,
                case,
                ..
            } => {
                write!(f, "RULE:{source}/{replacement}")?;
                match case {
                    Case::Keep => Ok(()),
                    Case::Lower => f.write_str("/L"),
                    Case::Upper => f.write_str("/U"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(value: &str) -> Vec<String> {
        PrincipalMapper::parse(value)
            .unwrap_or_else(|e| panic!("{value:?}: {e}"))
            .rules
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Kafka's documentation example (security.html, "Customizing SSL User Name").
    #[test]
    fn kafkas_documented_example() {
        let mapper = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,\
             RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,\
             RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L,\
             DEFAULT",
        )
        .expect("valid");
        let name = |dn: &str| mapper.name_for(dn).expect("a rule applies");
        assert_eq!(
            name("CN=serviceuser,OU=ServiceUsers,O=Unknown,L=Unknown,ST=Unknown,C=Unknown"),
            "serviceuser"
        );
        assert_eq!(
            name("CN=adminUser,OU=Admin,O=Unknown,L=Unknown,ST=Unknown,C=Unknown"),
            "adminuser@admin"
        );
    }

    /// The cases of Kafka's `SslPrincipalMapperTest.testSslPrincipalMapper`.
    #[test]
    fn rules_apply_in_order() {
        let mapper = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, \
             RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, \
             RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U, \
             RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U, \
             DEFAULT",
        )
        .expect("valid");
        let name = |dn: &str| mapper.name_for(dn).expect("a rule applies");
        assert_eq!(name("CN=Duke,OU=ServiceUsers,O=Org,C=US"), "duke");
        assert_eq!(
            name("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US"),
            "duke@sme"
        );
        assert_eq!(name("cn=duke,ou=sme,dc=mycp,dc=com"), "DUKE@SME");
        assert_eq!(name("cN=duke,OU=JavaSoft,O=Sun Microsystems"), "DUKE");
        assert_eq!(
            name("OU=JavaSoft,O=Sun Microsystems,C=US"),
            "OU=JavaSoft,O=Sun Microsystems,C=US"
        );
    }

    #[test]
    fn default_keeps_the_whole_name_and_no_match_is_an_error() {
        let mapper = PrincipalMapper::default();
        assert_eq!(
            mapper
                .name_for("CN=alice,OU=eng,O=acme,C=US")
                .expect("default"),
            "CN=alice,OU=eng,O=acme,C=US"
        );
        let mapper = PrincipalMapper::parse("RULE:^CN=([a-z]+),.*$/$1/").expect("valid");
        assert_eq!(
            mapper.name_for("CN=alice,O=acme").expect("matches"),
            "alice"
        );
        let err = mapper.name_for("O=acme").expect_err("no rule applies");
        assert_eq!(err.name, "O=acme");
    }

    #[test]
    fn valid_rules() {
        for value in [
            "DEFAULT",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L",
            "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/U",
            "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U",
            "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
            "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
            "RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
        ] {
            PrincipalMapper::parse(value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        }
    }

    #[test]
    fn invalid_rules() {
        for value in [
            "default",
            "DEFAUL",
            "DEFAULT/L",
            "DEFAULT/U",
            "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
            "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
            // Not valid regex: an unclosed group, a look-ahead.
            "RULE:^CN=(.*/$1/",
            "RULE:^CN=(?=a)(.*)$/$1/",
            // Replacements Java would throw on.
            "RULE:^CN=(.*)$/$x/",
            "RULE:^CN=(.*)$/$1\\/",
        ] {
            assert!(
                PrincipalMapper::parse(value).is_err(),
                "{value:?} should be refused"
            );
        }
    }

    /// Kafka's `testRulesSplitting`: how a value splits into rules.
    #[test]
    fn rules_split_as_kafka_splits_them() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("DEFAULT", &["DEFAULT"]),
            ("RULE://", &["RULE:/"]),
            ("RULE:/.*/", &["RULE:/.*"]),
            ("RULE:/.*/L", &["RULE:/.*/L"]),
            ("RULE://,DEFAULT", &["RULE:/", "DEFAULT"]),
            ("  RULE:// ,  DEFAULT  ", &["RULE:/", "DEFAULT"]),
            (
                "  RULE:   /     / ,  DEFAULT  ",
                &["RULE:   /     ", "DEFAULT"],
            ),
            (
                "  RULE:  /     /U   ,DEFAULT  ",
                &["RULE:  /     /U", "DEFAULT"],
            ),
            (
                "  RULE:([A-Z]*)/$1/U   ,RULE:([a-z]+)/$1/,   DEFAULT  ",
                &["RULE:([A-Z]*)/$1/U", "RULE:([a-z]+)/$1", "DEFAULT"],
            ),
            // Empty rules are ignored.
            (",   , , ,      , , ,   ", &[]),
            (",,RULE://,,,DEFAULT,,", &["RULE:/", "DEFAULT"]),
            (
                ",  , RULE: /   /    ,,,   DEFAULT, ,   ",
                &["RULE: /   ", "DEFAULT"],
            ),
            // Escapes stay in the pattern and the replacement.
            (r"RULE:\/\\\(\)\n\t/\/\//", &[r"RULE:\/\\\(\)\n\t/\/\/"]),
            (
                r"RULE:\**\/+/*/L,RULE:\/*\**/**/",
                &[r"RULE:\**\/+/*/L", r"RULE:\/*\**/**"],
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(rules(value), *expected, "{value:?}");
        }
    }

    /// Kafka's `testCommaWithWhitespace`: an escaped comma inside a name.
    #[test]
    fn escaped_comma_in_a_name() {
        let mapper =
            PrincipalMapper::parse(r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT").expect("valid");
        assert_eq!(
            mapper
                .name_for(r"CN=Tkac\, Adam,OU=ITZ,DC=geodis,DC=cz")
                .expect("matches"),
            r"Tkac\, Adam"
        );
    }

    #[test]
    fn replacement_follows_java() {
        let mapper = |rule: &str| PrincipalMapper::parse(rule).expect("valid");
        // A group number beyond the pattern's groups is literal text (Kafka escapes it).
        let m = mapper("RULE:^CN=(.*?),O=(.*)$/$1@$3/");
        assert_eq!(m.name_for("CN=a,O=b").expect("matches"), "a@$3");
        // $12 with two groups is group 1 followed by "2".
        let m = mapper("RULE:^CN=(.*?),O=(.*)$/$12/");
        assert_eq!(m.name_for("CN=a,O=b").expect("matches"), "a2");
        // Named groups and escaped characters.
        let m = mapper(r"RULE:^CN=(?P<user>[^,]*),.*$/${user}\$x/U");
        assert_eq!(m.name_for("CN=bob,O=b").expect("matches"), "BOB$X");
        // replaceAll, not replaceFirst: `.*` matches the name, then the empty end (Java).
        let m = mapper("RULE:.*/x/");
        assert_eq!(m.name_for("abc").expect("matches"), "xx");
    }
}
