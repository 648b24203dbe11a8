//! Certificate subjects as a policy's `cert_subject` names them: an RFC 4514
//! string parsed, once at load, into the structured name it denotes. A client
//! certificate matches when its subject is that name, attribute by attribute;
//! rendered text is never compared, so no value can pass for a separator.

use std::fmt;

/// An attribute's type: the content octets of its OID's DER encoding, so a
/// certificate's OID is compared byte for byte, never decoded first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttributeType(Vec<u8>);

impl AttributeType {
    /// The type whose OID is encoded (without tag and length) as `der_content`.
    pub fn from_der_content(der_content: &[u8]) -> AttributeType {
        AttributeType(der_content.to_vec())
    }

    fn short_name(&self) -> Option<&'static str> {
        SHORT_NAMES
            .iter()
            .find(|(_, arcs)| encode_oid(arcs).as_deref() == Some(&self.0[..]))
            .map(|(name, _)| *name)
    }
}

/// The names a policy may use instead of a dotted OID (case does not matter).
const SHORT_NAMES: [(&str, &[u64]); 10] = [
    ("CN", &[2, 5, 4, 3]),
    ("O", &[2, 5, 4, 10]),
    ("OU", &[2, 5, 4, 11]),
    ("C", &[2, 5, 4, 6]),
    ("L", &[2, 5, 4, 7]),
    ("ST", &[2, 5, 4, 8]),
    ("serialNumber", &[2, 5, 4, 5]),
    ("DC", &[0, 9, 2342, 19200300, 100, 1, 25]),
    ("UID", &[0, 9, 2342, 19200300, 100, 1, 1]),
    ("emailAddress", &[1, 2, 840, 113549, 1, 9, 1]),
];

/// One attribute of a name: its type and its value, as a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attribute {
    pub attribute_type: AttributeType,
    pub value: String,
}

/// A distinguished name: its RDNs in the order the certificate encodes them,
/// each RDN's attributes sorted (an RDN is a SET, so its order means nothing).
/// Equality is exact: same RDNs, same types, same values, case included.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DistinguishedName {
    rdns: Vec<Vec<Attribute>>,
}

impl DistinguishedName {
    /// The name made of these RDNs, in this order.
    pub fn from_rdns(rdns: Vec<Vec<Attribute>>) -> DistinguishedName {
        let rdns = rdns
            .into_iter()
            .map(|mut rdn| {
                rdn.sort();
                rdn
            })
            .collect();
        DistinguishedName { rdns }
    }

    /// Parses a policy's `cert_subject`: RFC 4514 syntax (`\,` `\+` `\"` `\\`
    /// `\<` `\>` `\;` `\#` `\=` `\ ` and `\XX` byte escapes; `+` joins the
    /// attributes of one RDN), but with the RDNs in certificate order, and
    /// spaces allowed before an attribute type. The error names the problem;
    /// the caller adds the principal.
    pub fn parse(text: &str) -> Result<DistinguishedName, String> {
        if text.trim().is_empty() {
            return Err("cert_subject is empty".to_owned());
        }
        let mut rdns = Vec::new();
        let mut rdn = Vec::new();
        let mut rest = text;
        loop {
            rest = rest.trim_start_matches(' ');
            let (name, attribute_type, after_type) = read_type(rest)?;
            let (value, separator, after_value) = read_value(after_type, name)?;
            rdn.push(Attribute {
                attribute_type,
                value,
            });
            match separator {
                Some(b'+') => {}
                Some(_) => rdns.push(std::mem::take(&mut rdn)),
                None => {
                    rdns.push(rdn);
                    return Ok(DistinguishedName::from_rdns(rdns));
                }
            }
            if after_value.trim_start_matches(' ').is_empty() {
                return Err(format!(
                    "cert_subject ends with {:?}: an attribute is missing after it",
                    char::from(separator.unwrap_or(b','))
                ));
            }
            rest = after_value;
        }
    }
}

/// An attribute type and what follows its `=`.
fn read_type(text: &str) -> Result<(&str, AttributeType, &str), String> {
    let end = text.find(['=', ',', '+']).unwrap_or(text.len());
    let name = text[..end].trim_end_matches(' ');
    if !text[end..].starts_with('=') {
        return Err(if name.is_empty() {
            "cert_subject has an empty attribute (two separators in a row?)".to_owned()
        } else {
            format!(
                "cert_subject: expected \"=\" after {name:?} (a \",\" or \"+\" inside a value is written \"\\,\" or \"\\+\")"
            )
        });
    }
    if name.is_empty() {
        return Err("cert_subject: an attribute type is missing before \"=\"".to_owned());
    }
    let attribute_type = parse_type(name)?;
    Ok((name, attribute_type, &text[end + 1..]))
}

fn parse_type(name: &str) -> Result<AttributeType, String> {
    let known = SHORT_NAMES
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(name));
    let arcs = match known {
        Some((_, arcs)) => arcs.to_vec(),
        None if name.starts_with(|c: char| c.is_ascii_digit()) => parse_dotted_oid(name)
            .ok_or_else(|| format!("cert_subject: {name:?} is not a dotted OID like 2.5.4.3"))?,
        None => {
            let names: Vec<&str> = SHORT_NAMES.iter().map(|(short, _)| *short).collect();
            return Err(format!(
                "cert_subject: unknown attribute type {name:?} (known: {}, or a dotted OID like 2.5.4.3)",
                names.join(", ")
            ));
        }
    };
    encode_oid(&arcs)
        .map(AttributeType)
        .ok_or_else(|| format!("cert_subject: {name:?} is not a valid OID"))
}

/// RFC 4512 numericoid: numbers without leading zeros, joined by dots.
fn parse_dotted_oid(text: &str) -> Option<Vec<u64>> {
    text.split('.')
        .map(|arc| {
            let canonical = !arc.is_empty()
                && arc.bytes().all(|b| b.is_ascii_digit())
                && (arc == "0" || !arc.starts_with('0'));
            canonical.then(|| arc.parse().ok()).flatten()
        })
        .collect()
}

/// The DER content octets of an OID, or `None` when the arcs are not an OID
/// (fewer than two, a first arc over 2, a second over 39 under 0 or 1).
fn encode_oid(arcs: &[u64]) -> Option<Vec<u8>> {
    let [first, second, rest @ ..] = arcs else {
        return None;
    };
    if *first > 2 || (*first < 2 && *second > 39) {
        return None;
    }
    let mut der = Vec::new();
    for arc in
        std::iter::once(first.checked_mul(40)?.checked_add(*second)?).chain(rest.iter().copied())
    {
        let groups = (64 - arc.leading_zeros()).div_ceil(7).max(1);
        for group in (0..groups).rev() {
            let bits = ((arc >> (7 * group)) & 0x7f) as u8;
            der.push(if group == 0 { bits } else { bits | 0x80 });
        }
    }
    Some(der)
}

/// The dotted form of DER content octets, or `None` if they are malformed.
fn decode_oid(der: &[u8]) -> Option<String> {
    let mut arcs = Vec::new();
    let mut arc: u64 = 0;
    for (index, byte) in der.iter().enumerate() {
        if arc == 0 && *byte == 0x80 {
            return None; // not minimal
        }
        arc = arc.checked_mul(128)? | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (arc / 40).min(2);
                arcs.push(first);
                arcs.push(arc - first * 40);
            } else {
                arcs.push(arc);
            }
            arc = 0;
        } else if index + 1 == der.len() {
            return None; // truncated
        }
    }
    (!arcs.is_empty()).then(|| {
        arcs.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    })
}

/// A value up to the next unescaped `,` or `+`; that separator (if any) and
/// the text after it.
fn read_value<'a>(text: &'a str, name: &str) -> Result<(String, Option<u8>, &'a str), String> {
    if text.starts_with('#') {
        return Err(format!(
            "cert_subject: the value of {name} is written #hex, which is not supported; write the string (a leading \"#\" is escaped \"\\#\")"
        ));
    }
    if text.starts_with(' ') {
        return Err(format!(
            "cert_subject: the value of {name} begins with a space; remove it, or write \"\\ \" if it belongs to the value"
        ));
    }
    let bytes = text.as_bytes();
    let mut value = Vec::new();
    let mut ends_with_plain_space = false;
    let mut index = 0;
    let separator = loop {
        let Some(&byte) = bytes.get(index) else {
            break None;
        };
        index += 1;
        match byte {
            b',' | b'+' => break Some(byte),
            b'\\' => {
                let escaped = escaped_byte(&bytes[index..]).ok_or_else(|| {
                    format!(
                        "cert_subject: a bad escape in the value of {name}: \"\\\" is followed by one of , + \" \\ < > ; # = or a space, or by two hex digits"
                    )
                })?;
                index += escaped.1;
                value.push(escaped.0);
                ends_with_plain_space = false;
            }
            b'"' | b';' | b'<' | b'>' | b'\0' => {
                return Err(format!(
                    "cert_subject: {:?} in the value of {name} must be escaped (\"\\{}\"); RDNs are separated by \",\"",
                    char::from(byte),
                    if byte == b'\0' { "00".to_owned() } else { char::from(byte).to_string() }
                ));
            }
            _ => {
                value.push(byte);
                ends_with_plain_space = byte == b' ';
            }
        }
    };
    if ends_with_plain_space {
        return Err(format!(
            "cert_subject: the value of {name} ends with a space; remove it, or write \"\\ \" if it belongs to the value"
        ));
    }
    if value.is_empty() {
        return Err(format!("cert_subject: the value of {name} is empty"));
    }
    let value = String::from_utf8(value).map_err(|_| {
        format!("cert_subject: the escaped bytes in the value of {name} are not UTF-8")
    })?;
    Ok((value, separator, &text[index..]))
}

/// The byte an escape stands for (after its `\`), and how many bytes it used.
fn escaped_byte(after_backslash: &[u8]) -> Option<(u8, usize)> {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    match after_backslash {
        [high, low, ..] if hex(*high).is_some() && hex(*low).is_some() => {
            Some(((hex(*high)? * 16 + hex(*low)?) as u8, 2))
        }
        [special, ..] if b",+\"\\<>;#= ".contains(special) => Some((*special, 1)),
        _ => None,
    }
}

/// RFC 4514 text, RDNs in certificate order, known types by their short names.
impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (rdn_index, rdn) in self.rdns.iter().enumerate() {
            for (attribute_index, attribute) in rdn.iter().enumerate() {
                let separator = match (rdn_index, attribute_index) {
                    (0, 0) => "",
                    (_, 0) => ",",
                    _ => "+",
                };
                f.write_str(separator)?;
                match attribute.attribute_type.short_name() {
                    Some(name) => f.write_str(name)?,
                    None => match decode_oid(&attribute.attribute_type.0) {
                        Some(dotted) => f.write_str(&dotted)?,
                        None => f.write_str("?")?,
                    },
                }
                f.write_str("=")?;
                write_escaped(&attribute.value, f)?;
            }
        }
        Ok(())
    }
}

fn write_escaped(value: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let last = value.chars().count().saturating_sub(1);
    for (index, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => write!(f, "\\{c}")?,
            '#' if index == 0 => f.write_str("\\#")?,
            ' ' if index == 0 || index == last => f.write_str("\\ ")?,
            c if c.is_control() => {
                let mut utf8 = [0; 4];
                for byte in c.encode_utf8(&mut utf8).bytes() {
                    write!(f, "\\{byte:02X}")?;
                }
            }
            c => write!(f, "{c}")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(arcs: &[u64], value: &str) -> Attribute {
        Attribute {
            attribute_type: AttributeType(encode_oid(arcs).expect("valid OID")),
            value: value.to_owned(),
        }
    }

    const CN: &[u64] = &[2, 5, 4, 3];
    const O: &[u64] = &[2, 5, 4, 10];

    fn name(rdns: &[&[(&[u64], &str)]]) -> DistinguishedName {
        DistinguishedName::from_rdns(
            rdns.iter()
                .map(|rdn| {
                    rdn.iter()
                        .map(|(arcs, value)| attribute(arcs, value))
                        .collect()
                })
                .collect(),
        )
    }

    fn parsed(text: &str) -> DistinguishedName {
        DistinguishedName::parse(text).unwrap_or_else(|problem| panic!("{text:?}: {problem}"))
    }

    fn problem(text: &str) -> String {
        DistinguishedName::parse(text).expect_err(text)
    }

    #[test]
    fn rdns_keep_the_order_written_and_types_ignore_case() {
        let expected = name(&[&[(CN, "payments")], &[(O, "Example")]]);
        assert_eq!(parsed("CN=payments,O=Example"), expected);
        assert_eq!(parsed("cn=payments, o=Example"), expected);
        assert_eq!(parsed("2.5.4.3=payments,2.5.4.10=Example"), expected);
        assert_ne!(parsed("O=Example,CN=payments"), expected);
        assert_ne!(parsed("CN=Payments,O=Example"), expected);
    }

    #[test]
    fn an_escaped_comma_is_part_of_the_value_and_not_a_separator() {
        assert_eq!(
            parsed("CN=payments\\, O=Example"),
            name(&[&[(CN, "payments, O=Example")]])
        );
        assert_ne!(
            parsed("CN=payments\\, O=Example"),
            parsed("CN=payments,O=Example")
        );
        assert_eq!(parsed("O=Acme\\, Inc."), name(&[&[(O, "Acme, Inc.")]]));
        assert_ne!(parsed("O=Acme\\, Inc."), parsed("O=Acme\\,Inc."));
    }

    #[test]
    fn every_rfc_4514_escape_is_understood() {
        assert_eq!(
            parsed("CN=\\\"a\\+b\\\\c\\<d\\>e\\;f\\=g\\#h"),
            name(&[&[(CN, "\"a+b\\c<d>e;f=g#h")]])
        );
        assert_eq!(parsed("CN=\\#tag"), name(&[&[(CN, "#tag")]]));
        assert_eq!(parsed("CN=\\ padded\\ "), name(&[&[(CN, " padded ")]]));
        assert_eq!(parsed("CN=caf\\C3\\A9"), name(&[&[(CN, "café")]]));
        assert_eq!(parsed("CN=café"), name(&[&[(CN, "café")]]));
    }

    #[test]
    fn plus_joins_the_attributes_of_one_rdn_in_any_order() {
        let multi = name(&[&[(CN, "a"), (O, "b")]]);
        assert_eq!(parsed("CN=a+O=b"), multi);
        assert_eq!(parsed("O=b+CN=a"), multi);
        assert_ne!(parsed("CN=a,O=b"), multi);
    }

    #[test]
    fn every_documented_short_name_is_known() {
        for (short, arcs) in SHORT_NAMES {
            let text = format!("{short}=x");
            assert_eq!(parsed(&text), name(&[&[(arcs, "x")]]), "{short}");
        }
    }

    #[test]
    fn oids_encode_to_their_known_der_content() {
        assert_eq!(encode_oid(&[2, 5, 4, 3]), Some(vec![0x55, 0x04, 0x03]));
        assert_eq!(
            encode_oid(&[1, 2, 840, 113549, 1, 9, 1]),
            Some(vec![0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01])
        );
        assert_eq!(
            encode_oid(&[0, 9, 2342, 19200300, 100, 1, 25]),
            Some(vec![
                0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19
            ])
        );
        assert_eq!(encode_oid(&[2, 999, 3]), Some(vec![0x88, 0x37, 0x03]));
        assert_eq!(decode_oid(&[0x88, 0x37, 0x03]).as_deref(), Some("2.999.3"));
        assert_eq!(encode_oid(&[3, 1]), None);
        assert_eq!(encode_oid(&[1, 40]), None);
        assert_eq!(encode_oid(&[2]), None);
    }

    #[test]
    fn display_escapes_so_that_parsing_it_gives_the_same_name() {
        let tricky = name(&[
            &[(CN, " payments, O=Example+x\\ ")],
            &[(O, "#1;<>\"")],
            &[(&[1, 2, 3], "a\u{7}b")],
        ]);
        let text = tricky.to_string();
        assert_eq!(
            text,
            "CN=\\ payments\\, O=Example\\+x\\\\\\ ,O=\\#1\\;\\<\\>\\\",1.2.3=a\\07b"
        );
        assert_eq!(parsed(&text), tricky);
    }

    #[test]
    fn malformed_subjects_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("   ", "empty"),
            ("payments", "expected \"=\" after \"payments\""),
            ("CN=Acme, Inc.", "expected \"=\" after \"Inc.\""),
            ("CN=a,,O=b", "empty attribute"),
            ("CN=a,", "ends with ','"),
            ("CN=a+", "ends with '+'"),
            ("=a", "attribute type is missing"),
            ("XX=a", "unknown attribute type \"XX\""),
            ("2.5.04.3=a", "not a dotted OID"),
            ("2.5..3=a", "not a dotted OID"),
            ("3.5.4.3=a", "not a valid OID"),
            ("2.99999999999999999999.1=a", "not a dotted OID"),
            ("CN=", "value of CN is empty"),
            ("CN=,O=b", "value of CN is empty"),
            ("CN= a", "begins with a space"),
            ("CN=a ,O=b", "ends with a space"),
            ("CN=a ", "ends with a space"),
            ("CN=#0403616263", "#hex"),
            ("CN=a;O=b", "must be escaped"),
            ("CN=a\"b", "must be escaped"),
            ("CN=a<b", "must be escaped"),
            ("CN=a\0b", "must be escaped (\"\\00\")"),
            ("CN=a\\qb", "bad escape"),
            ("CN=a\\", "bad escape"),
            ("CN=a\\4", "bad escape"),
            ("CN=a\\FF", "not UTF-8"),
        ] {
            let message = problem(text);
            assert!(
                message.contains(reason),
                "{text:?}: {message:?} lacks {reason:?}"
            );
        }
    }
}
