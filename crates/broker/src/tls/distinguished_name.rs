//! A certificate subject as Kafka names it: Java's `X500Principal.getName()`, the RFC 2253
//! string (`CN=alice,OU=eng,O=acme,C=US`) that `ssl.principal.mapping.rules` rewrites.
//!
//! The input is the DER contents of an X.509 `Name` (its RDNSequence without the outer
//! SEQUENCE header), as webpki hands it over after verifying the certificate. Java's rules,
//! followed here:
//!
//! - the relative distinguished names (RDNs) in reverse order of their encoding, the last one
//!   first, joined by `,`; the attributes of a multi-valued RDN in encoding order, joined by
//!   `+`;
//! - the attribute types CN, C, L, ST, O, OU, STREET, DC and UID by keyword; any other type
//!   (emailAddress, serialNumber, ...) as its dotted OID, its value as `#` and the lowercase
//!   hex of the value's whole DER encoding;
//! - string values as text, with `,=+<>#;"\` escaped by a backslash, NUL as `\00`, leading
//!   and trailing spaces escaped; values of other types as `#hex`.
//!
//! The parser is bounded by its input and never panics on malformed DER: it answers
//! [`MalformedName`].

/// The subject's DER is not a well-formed `Name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed certificate subject: {0}")]
pub struct MalformedName(&'static str);

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_T61_STRING: u8 = 0x14;
const TAG_IA5_STRING: u8 = 0x16;
const TAG_GENERAL_STRING: u8 = 0x1b;
const TAG_UNIVERSAL_STRING: u8 = 0x1c;
const TAG_BMP_STRING: u8 = 0x1e;

/// The attribute types Java names by keyword in RFC 2253 form (`AVAKeyword`).
const KEYWORDS: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// Characters Java escapes with a backslash anywhere in a value.
const ESCAPED: &str = ",=+<>#;\"\\";

/// One DER element: its first tag byte, its contents, and its whole encoding.
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
    encoding: &'a [u8],
}

/// Reads DER elements one after another from a byte slice.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn next(&mut self) -> Result<Element<'a>, MalformedName> {
        let bytes = self.rest;
        let truncated = MalformedName("truncated element");
        let tag = *bytes.first().ok_or(truncated.clone())?;
        let mut at = 1;
        if tag & 0x1f == 0x1f {
            // High tag number form: base-128 continuation bytes.
            loop {
                let b = *bytes.get(at).ok_or(truncated.clone())?;
                at += 1;
                if b & 0x80 == 0 {
                    break;
                }
                if at > 6 {
                    return Err(MalformedName("tag number too large"));
                }
            }
        }
        let first = *bytes.get(at).ok_or(truncated.clone())?;
        at += 1;
        let len = match first {
            0..=0x7f => usize::from(first),
            0x80 => return Err(MalformedName("indefinite length")),
            _ => {
                let count = usize::from(first & 0x7f);
                if count > 4 {
                    return Err(MalformedName("length too large"));
                }
                let digits = bytes.get(at..at + count).ok_or(truncated.clone())?;
                at += count;
                digits
                    .iter()
                    .fold(0usize, |n, &d| (n << 8) | usize::from(d))
            }
        };
        let end = at.checked_add(len).ok_or(truncated.clone())?;
        let contents = bytes.get(at..end).ok_or(truncated)?;
        self.rest = &bytes[end..];
        Ok(Element {
            tag,
            contents,
            encoding: &bytes[..end],
        })
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<Element<'a>, MalformedName> {
        let element = self.next()?;
        if element.tag != tag {
            return Err(MalformedName(what));
        }
        Ok(element)
    }
}

/// The RFC 2253 string of a `Name` given as the DER contents of its RDNSequence.
pub fn rfc2253(name: &[u8]) -> Result<String, MalformedName> {
    let mut rdns = Vec::new();
    let mut reader = Reader::new(name);
    while !reader.is_empty() {
        let set = reader.expect(TAG_SET, "an RDN is not a SET")?;
        let mut attributes = Vec::new();
        let mut inner = Reader::new(set.contents);
        while !inner.is_empty() {
            let sequence = inner.expect(TAG_SEQUENCE, "an attribute is not a SEQUENCE")?;
            attributes.push(attribute(sequence.contents)?);
        }
        if attributes.is_empty() {
            return Err(MalformedName("an RDN without attributes"));
        }
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// One `type=value` of an RDN.
fn attribute(contents: &[u8]) -> Result<String, MalformedName> {
    let mut reader = Reader::new(contents);
    let oid = dotted_oid(
        reader
            .expect(TAG_OID, "an attribute type is not an OID")?
            .contents,
    )?;
    let value = reader.next()?;
    if !reader.is_empty() {
        return Err(MalformedName("extra bytes after an attribute value"));
    }
    let keyword = KEYWORDS.iter().find(|(o, _)| *o == oid).map(|(_, k)| *k);
    let text = keyword.and_then(|_| string_value(value.tag, value.contents));
    Ok(match (keyword, text) {
        (Some(keyword), Some(text)) => format!("{keyword}={}", escape(&text)),
        (keyword, _) => format!("{}=#{}", keyword.unwrap_or(&oid), hex(value.encoding)),
    })
}

/// The text of a string-typed value (Java's `isDerString`); `None` for other types.
fn string_value(tag: u8, contents: &[u8]) -> Option<String> {
    match tag {
        TAG_UTF8_STRING | TAG_PRINTABLE_STRING | TAG_IA5_STRING | TAG_GENERAL_STRING => {
            Some(String::from_utf8_lossy(contents).into_owned())
        }
        // T.61 is close enough to Latin-1 for the names certificates carry.
        TAG_T61_STRING => Some(contents.iter().map(|&b| char::from(b)).collect()),
        TAG_BMP_STRING => {
            let units: Vec<u16> = contents
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            Some(String::from_utf16_lossy(&units))
        }
        TAG_UNIVERSAL_STRING => Some(
            contents
                .chunks(4)
                .map(|c| {
                    let mut b = [0u8; 4];
                    b[..c.len()].copy_from_slice(c);
                    char::from_u32(u32::from_be_bytes(b)).unwrap_or(char::REPLACEMENT_CHARACTER)
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Java's escaping of a value in RFC 2253 form (`AVA.toRFC2253String`).
fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len() + 4);
    for c in value.chars() {
        if ESCAPED.contains(c) {
            escaped.push('\\');
            escaped.push(c);
        } else if c == '\0' {
            escaped.push_str("\\00");
        } else {
            escaped.push(c);
        }
    }
    let blank = |c: char| c == ' ' || c == '\r';
    let lead = escaped.chars().take_while(|&c| blank(c)).count();
    let count = escaped.chars().count();
    let trail = escaped.chars().rev().take_while(|&c| blank(c)).count();
    let mut out = String::with_capacity(escaped.len() + lead + trail);
    for (i, c) in escaped.chars().enumerate() {
        if i < lead || i >= count - trail {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The dotted form of a DER object identifier (`2.5.4.3`).
fn dotted_oid(contents: &[u8]) -> Result<String, MalformedName> {
    let mut arcs: Vec<u128> = Vec::new();
    let mut value: u128 = 0;
    for (i, &b) in contents.iter().enumerate() {
        if value > u128::MAX >> 7 {
            return Err(MalformedName("object identifier arc too large"));
        }
        value = (value << 7) | u128::from(b & 0x7f);
        if b & 0x80 != 0 {
            if i + 1 == contents.len() {
                return Err(MalformedName("truncated object identifier"));
            }
            continue;
        }
        if arcs.is_empty() {
            let first = (value / 40).min(2);
            arcs.push(first);
            arcs.push(value - first * 40);
        } else {
            arcs.push(value);
        }
        value = 0;
    }
    if arcs.is_empty() {
        return Err(MalformedName("empty object identifier"));
    }
    Ok(arcs
        .iter()
        .map(u128::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(contents.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(contents);
        out
    }

    fn oid(dotted: &str) -> Vec<u8> {
        let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().expect("arc")).collect();
        let mut out = vec![];
        let mut push = |mut v: u64| {
            let mut bytes = vec![(v & 0x7f) as u8];
            v >>= 7;
            while v > 0 {
                bytes.push((v & 0x7f) as u8 | 0x80);
                v >>= 7;
            }
            bytes.reverse();
            out.extend(bytes);
        };
        push(arcs[0] * 40 + arcs[1]);
        for &a in &arcs[2..] {
            push(a);
        }
        tlv(TAG_OID, &out)
    }

    fn ava(dotted: &str, tag: u8, value: &[u8]) -> Vec<u8> {
        let mut contents = oid(dotted);
        contents.extend(tlv(tag, value));
        tlv(TAG_SEQUENCE, &contents)
    }

    /// An RDNSequence's contents from RDNs given in encoding order.
    fn name(rdns: &[Vec<Vec<u8>>]) -> Vec<u8> {
        rdns.iter()
            .flat_map(|avas| tlv(TAG_SET, &avas.concat()))
            .collect()
    }

    #[test]
    fn rdns_come_last_first_with_keywords() {
        // What `openssl req -subj /C=US/O=acme/OU=eng/CN=alice` encodes.
        let subject = name(&[
            vec![ava("2.5.4.6", TAG_PRINTABLE_STRING, b"US")],
            vec![ava("2.5.4.10", TAG_UTF8_STRING, b"acme")],
            vec![ava("2.5.4.11", TAG_UTF8_STRING, b"eng")],
            vec![ava("2.5.4.3", TAG_UTF8_STRING, b"alice")],
        ]);
        assert_eq!(
            rfc2253(&subject).expect("valid"),
            "CN=alice,OU=eng,O=acme,C=US"
        );
    }

    #[test]
    fn other_types_are_oids_with_hex_values() {
        let subject = name(&[
            vec![ava("2.5.4.3", TAG_UTF8_STRING, b"bob")],
            vec![ava("1.2.840.113549.1.9.1", TAG_IA5_STRING, b"b@x.io")],
            vec![ava(
                "0.9.2342.19200300.100.1.25",
                TAG_IA5_STRING,
                b"example",
            )],
        ]);
        assert_eq!(
            rfc2253(&subject).expect("valid"),
            "DC=example,1.2.840.113549.1.9.1=#16066240782e696f,CN=bob"
        );
        // A keyword type whose value is not a string (an INTEGER) is hex too.
        let subject = name(&[vec![ava("2.5.4.3", 0x02, &[0x01, 0x00])]]);
        assert_eq!(rfc2253(&subject).expect("valid"), "CN=#02020100");
    }

    #[test]
    fn multi_valued_rdns_join_with_plus_in_encoding_order() {
        let subject = name(&[
            vec![ava("2.5.4.10", TAG_UTF8_STRING, b"acme")],
            vec![
                ava("2.5.4.11", TAG_UTF8_STRING, b"eng"),
                ava("0.9.2342.19200300.100.1.1", TAG_UTF8_STRING, b"42"),
            ],
        ]);
        assert_eq!(rfc2253(&subject).expect("valid"), "OU=eng+UID=42,O=acme");
    }

    #[test]
    fn special_characters_are_escaped_as_java_does() {
        let value =
            |v: &[u8]| rfc2253(&name(&[vec![ava("2.5.4.3", TAG_UTF8_STRING, v)]])).expect("valid");
        assert_eq!(value(b"acme, inc."), r"CN=acme\, inc.");
        assert_eq!(
            value(b"a=b+c<d>e#f;g\"h\\i"),
            r#"CN=a\=b\+c\<d\>e\#f\;g\"h\\i"#
        );
        assert_eq!(value(b"  two spaces "), r"CN=\ \ two spaces\ ");
        assert_eq!(value(b"nul\0"), r"CN=nul\00");
        assert_eq!(value("Zoë".as_bytes()), "CN=Zoë");
        let bmp = rfc2253(&name(&[vec![ava(
            "2.5.4.3",
            TAG_BMP_STRING,
            &[0, b'h', 0, b'i'],
        )]]))
        .expect("valid");
        assert_eq!(bmp, "CN=hi");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = name(&[vec![ava("2.5.4.3", TAG_UTF8_STRING, b"alice")]]);
        for cut in 0..good.len() {
            let _ = rfc2253(&good[..cut]);
        }
        assert!(rfc2253(&good[..good.len() - 1]).is_err());
        assert!(rfc2253(&[TAG_SET, 0x80]).is_err());
        assert!(rfc2253(&[TAG_SEQUENCE, 0x00]).is_err());
        assert!(rfc2253(&[TAG_SET, 0x00]).is_err());
        assert!(rfc2253(&[TAG_SET, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert_eq!(rfc2253(&[]).expect("the empty name"), "");
    }

    #[test]
    fn large_oid_arcs() {
        assert_eq!(
            dotted_oid(&[0x69, 0x83, 0xff, 0x7f]).expect("valid"),
            "2.25.65535"
        );
        assert!(dotted_oid(&[0x69, 0x83]).is_err());
    }
}
