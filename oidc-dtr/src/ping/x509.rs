//! Just enough DER to match a client certificate's subject: its subject
//! distinguished name and its subjectAltName entries, read from a
//! certificate whose chain has already been verified, and the RFC 4514
//! string form of a distinguished name, read from the configuration.
//!
//! The reader is strict (definite, minimal lengths; low tag numbers) and
//! never panics: anything it does not understand is "no match".

use std::net::IpAddr;

/// `id-ce-subjectAltName` (2.5.29.17), the content octets of the OID.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
/// `[0] EXPLICIT Version` of a TBSCertificate.
const TAG_VERSION: u8 = 0xa0;
/// `[3] EXPLICIT Extensions` of a TBSCertificate.
const TAG_EXTENSIONS: u8 = 0xa3;
/// GeneralName choices (RFC 5280 §4.2.1.6), context-specific primitive.
const GN_RFC822: u8 = 0x81;
const GN_DNS: u8 = 0x82;
const GN_URI: u8 = 0x86;
const GN_IP: u8 = 0x87;

/// One DER element: its tag, its content octets, and the whole encoding.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
    raw: &'a [u8],
}

/// Reads DER elements one after the other.
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

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn next(&mut self) -> Option<Tlv<'a>> {
        let start = self.rest;
        let (&tag, rest) = start.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // high tag numbers: never used here
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            // 0: indefinite (not DER); over 4: no certificate is that big.
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (octets, after) = rest.split_at(n);
            if octets.first() == Some(&0) {
                return None; // not minimal
            }
            let len = octets
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            if len < 0x80 {
                return None; // not minimal
            }
            rest = after;
            len
        };
        if rest.len() < len {
            return None;
        }
        let (value, after) = rest.split_at(len);
        let consumed = start.len() - after.len();
        self.rest = after;
        Some(Tlv {
            tag,
            value,
            raw: start.get(..consumed)?,
        })
    }

    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        let tlv = self.next()?;
        (tlv.tag == tag).then_some(tlv.value)
    }
}

/// What of a certificate the subject rules look at.
pub(super) struct CertNames<'a> {
    /// The subject Name's content (the RDN sequence).
    subject: &'a [u8],
    /// The subjectAltName extension's GeneralNames content, if any.
    san: Option<&'a [u8]>,
}

impl<'a> CertNames<'a> {
    /// Reads a DER certificate; `None` if it is not one.
    pub(super) fn parse(der: &'a [u8]) -> Option<Self> {
        let mut outer = Reader::new(der);
        let cert = outer.expect(TAG_SEQUENCE)?;
        if !outer.is_empty() {
            return None;
        }
        let tbs = Reader::new(cert).expect(TAG_SEQUENCE)?;
        let mut t = Reader::new(tbs);
        if t.peek_tag() == Some(TAG_VERSION) {
            t.next()?;
        }
        t.expect(TAG_INTEGER)?; // serialNumber
        t.expect(TAG_SEQUENCE)?; // signature
        t.expect(TAG_SEQUENCE)?; // issuer
        t.expect(TAG_SEQUENCE)?; // validity
        let subject = t.expect(TAG_SEQUENCE)?;
        t.expect(TAG_SEQUENCE)?; // subjectPublicKeyInfo
        let mut san = None;
        while !t.is_empty() {
            let field = t.next()?; // issuerUniqueID, subjectUniqueID, extensions
            if field.tag != TAG_EXTENSIONS {
                continue;
            }
            let mut wrapper = Reader::new(field.value);
            let mut exts = Reader::new(wrapper.expect(TAG_SEQUENCE)?);
            if !wrapper.is_empty() {
                return None;
            }
            while !exts.is_empty() {
                let mut ext = Reader::new(exts.expect(TAG_SEQUENCE)?);
                let oid = ext.expect(TAG_OID)?;
                if ext.peek_tag() == Some(TAG_BOOLEAN) {
                    ext.next()?; // critical
                }
                let value = ext.expect(TAG_OCTET_STRING)?;
                if oid == OID_SUBJECT_ALT_NAME {
                    if san.is_some() {
                        return None; // RFC 5280 §4.2: at most one of each
                    }
                    let mut v = Reader::new(value);
                    san = Some(v.expect(TAG_SEQUENCE)?);
                    if !v.is_empty() {
                        return None;
                    }
                }
            }
        }
        Some(CertNames { subject, san })
    }

    /// The subjectAltName entries with tag `tag`.
    fn san_entries(&self, tag: u8) -> impl Iterator<Item = &'a [u8]> + '_ {
        let mut r = Reader::new(self.san.unwrap_or_default());
        std::iter::from_fn(move || r.next())
            .filter(move |gn| gn.tag == tag)
            .map(|gn| gn.value)
    }

    fn has_dns(&self, expected: &str) -> bool {
        self.san_entries(GN_DNS)
            .any(|v| v.eq_ignore_ascii_case(expected.as_bytes()))
    }

    fn has_uri(&self, expected: &str) -> bool {
        self.san_entries(GN_URI).any(|v| v == expected.as_bytes())
    }

    fn has_ip(&self, expected: &IpAddr) -> bool {
        let octets: Vec<u8> = match expected {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        self.san_entries(GN_IP).any(|v| v == octets.as_slice())
    }

    /// RFC 5280 §7.5: the local part is compared exactly, the domain
    /// without regard to case.
    fn has_email(&self, expected: &str) -> bool {
        let Some((local, domain)) = expected.rsplit_once('@') else {
            return false;
        };
        self.san_entries(GN_RFC822).any(|v| {
            let Ok(v) = std::str::from_utf8(v) else {
                return false;
            };
            v.rsplit_once('@')
                .is_some_and(|(l, d)| l == local && d.eq_ignore_ascii_case(domain))
        })
    }

    fn subject_matches(&self, expected: &[Vec<Attribute>]) -> bool {
        let Some(rdns) = parse_name(self.subject) else {
            return false;
        };
        // The string form lists the RDNs last first (RFC 4514 §2.1).
        rdns.len() == expected.len()
            && rdns
                .iter()
                .zip(expected.iter().rev())
                .all(|(got, want)| rdn_matches(got, want))
    }
}

/// The subject rules of one trusted CA, checked and compiled.
#[derive(Clone, Debug, Default)]
pub(super) struct SubjectRules {
    pub(super) dn: Option<Vec<Vec<Attribute>>>,
    pub(super) san_dns: Option<String>,
    pub(super) san_uri: Option<String>,
    pub(super) san_ip: Option<IpAddr>,
    pub(super) san_email: Option<String>,
}

impl SubjectRules {
    /// Whether the certificate satisfies every rule (none set: `false`).
    pub(super) fn matches(&self, cert: &CertNames<'_>) -> bool {
        let mut any = false;
        let mut all = true;
        if let Some(dn) = &self.dn {
            any = true;
            all &= cert.subject_matches(dn);
        }
        if let Some(v) = &self.san_dns {
            any = true;
            all &= cert.has_dns(v);
        }
        if let Some(v) = &self.san_uri {
            any = true;
            all &= cert.has_uri(v);
        }
        if let Some(v) = &self.san_ip {
            any = true;
            all &= cert.has_ip(v);
        }
        if let Some(v) = &self.san_email {
            any = true;
            all &= cert.has_email(v);
        }
        any && all
    }
}

/// One attribute of a distinguished name: its type (the OID's content
/// octets) and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Attribute {
    oid: Vec<u8>,
    value: AttributeValue,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum AttributeValue {
    /// A string, normalised (see [`normalise`]).
    Text(String),
    /// `#hex` in the string form: the value's whole DER encoding.
    Der(Vec<u8>),
}

/// An attribute as the certificate has it.
struct CertAttribute<'a> {
    oid: &'a [u8],
    value: Tlv<'a>,
}

fn parse_name(content: &[u8]) -> Option<Vec<Vec<CertAttribute<'_>>>> {
    let mut rdns = Vec::new();
    let mut r = Reader::new(content);
    while !r.is_empty() {
        let mut set = Reader::new(r.expect(TAG_SET)?);
        let mut rdn = Vec::new();
        while !set.is_empty() {
            let mut atv = Reader::new(set.expect(TAG_SEQUENCE)?);
            let oid = atv.expect(TAG_OID)?;
            let value = atv.next()?;
            if !atv.is_empty() {
                return None;
            }
            rdn.push(CertAttribute { oid, value });
        }
        if rdn.is_empty() {
            return None;
        }
        rdns.push(rdn);
    }
    Some(rdns)
}

fn rdn_matches(got: &[CertAttribute<'_>], want: &[Attribute]) -> bool {
    got.len() == want.len()
        && want.iter().all(|w| {
            got.iter()
                .any(|g| g.oid == w.oid.as_slice() && value_matches(&g.value, &w.value))
        })
}

fn value_matches(got: &Tlv<'_>, want: &AttributeValue) -> bool {
    match want {
        AttributeValue::Der(der) => got.raw == der.as_slice(),
        AttributeValue::Text(text) => decode_string(got).is_some_and(|s| normalise(&s) == *text),
    }
}

/// The text of a directory string (RFC 5280 §4.1.2.4 and the IA5 and
/// numeric strings of some attributes).
fn decode_string(tlv: &Tlv<'_>) -> Option<String> {
    match tlv.tag {
        // UTF8String, PrintableString, IA5String, NumericString, VisibleString
        0x0c | 0x13 | 0x16 | 0x12 | 0x1a => String::from_utf8(tlv.value.to_vec()).ok(),
        // TeletexString, as Latin-1 (what certificates in the wild mean).
        0x14 => Some(tlv.value.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE.
        0x1e => {
            if !tlv.value.len().is_multiple_of(2) {
                return None;
            }
            let units = tlv
                .value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        // UniversalString: UTF-32BE.
        0x1c => {
            if !tlv.value.len().is_multiple_of(4) {
                return None;
            }
            tlv.value
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// Comparison form of a string value: leading and trailing white space
/// dropped, inner runs of it made one space, case folded (the
/// `caseIgnoreMatch` of the directory attributes, without the full LDAP
/// string preparation of RFC 4518).
fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Why a distinguished name string was refused.
pub(super) type DnError = &'static str;

/// The short names of RFC 4514 §3, and a few more that certificates use.
const KEYWORDS: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("C", "2.5.4.6"),
    ("STREET", "2.5.4.9"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("SERIALNUMBER", "2.5.4.5"),
    ("SN", "2.5.4.4"),
    ("GN", "2.5.4.42"),
    ("GIVENNAME", "2.5.4.42"),
    ("TITLE", "2.5.4.12"),
    ("POSTALCODE", "2.5.4.17"),
    ("ORGANIZATIONIDENTIFIER", "2.5.4.97"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
    ("E", "1.2.840.113549.1.9.1"),
];

/// Parses the RFC 4514 string form of a distinguished name into its RDNs,
/// in the string's order (last RDN of the certificate first).
pub(super) fn parse_dn(s: &str) -> Result<Vec<Vec<Attribute>>, DnError> {
    let mut rdns: Vec<Vec<Attribute>> = vec![Vec::new()];
    let mut chars = s.chars().peekable();
    loop {
        // attributeType
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err("an attribute has no `=`");
        }
        let oid = attribute_oid(name.trim())?;
        // attributeValue, up to an unescaped `,` or `+`
        let mut value: Vec<u8> = Vec::new();
        // Where the value ends if trailing unescaped spaces are dropped.
        let mut keep = 0usize;
        let mut separator = None;
        let mut leading = true;
        // An unescaped `#` first: the value is hex DER (RFC 4514 §2.4).
        let mut hex_form = false;
        while let Some(c) = chars.next() {
            match c {
                ',' | '+' => {
                    separator = Some(c);
                    break;
                }
                '\\' => {
                    let Some(e) = chars.next() else {
                        return Err("a value ends with `\\`");
                    };
                    if e.is_ascii_hexdigit() {
                        let Some(e2) = chars.next().filter(char::is_ascii_hexdigit) else {
                            return Err(
                                "`\\` must be followed by two hex digits or a special character",
                            );
                        };
                        let hex = [e as u8, e2 as u8];
                        let byte = std::str::from_utf8(&hex)
                            .ok()
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .ok_or("bad hex escape")?;
                        value.push(byte);
                    } else if matches!(
                        e,
                        ' ' | '"' | '#' | '+' | ',' | ';' | '<' | '=' | '>' | '\\'
                    ) {
                        let mut buf = [0u8; 4];
                        value.extend_from_slice(e.encode_utf8(&mut buf).as_bytes());
                    } else {
                        return Err(
                            "`\\` must be followed by two hex digits or a special character",
                        );
                    }
                    leading = false;
                    keep = value.len();
                }
                ' ' if leading => {}
                _ => {
                    hex_form |= leading && c == '#';
                    leading = false;
                    let mut buf = [0u8; 4];
                    value.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    if c != ' ' {
                        keep = value.len();
                    }
                }
            }
        }
        value.truncate(keep);
        let value = if hex_form {
            AttributeValue::Der(hex_value(value.get(1..).unwrap_or_default())?)
        } else {
            let text = String::from_utf8(value).map_err(|_| "a value is not UTF-8")?;
            if text.is_empty() {
                return Err("an attribute value is empty");
            }
            AttributeValue::Text(normalise(&text))
        };
        if let Some(rdn) = rdns.last_mut() {
            rdn.push(Attribute { oid, value });
        }
        match separator {
            None => break,
            Some(',') => rdns.push(Vec::new()),
            Some(_) => {}
        }
    }
    Ok(rdns)
}

/// The DER of a `#hex` value: one complete element.
fn hex_value(hex: &[u8]) -> Result<Vec<u8>, DnError> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return Err("a `#` value is not an even number of hex digits");
    }
    let der = hex
        .chunks_exact(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or("a `#` value is not hex")?;
    let mut r = Reader::new(&der);
    if r.next().is_none() || !r.is_empty() {
        return Err("a `#` value is not one DER element");
    }
    Ok(der)
}

/// The content octets of the OID an attribute type names.
fn attribute_oid(name: &str) -> Result<Vec<u8>, DnError> {
    if name.is_empty() {
        return Err("an attribute type is empty");
    }
    let dotted = KEYWORDS
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or(name, |(_, oid)| *oid);
    let dotted = dotted
        .strip_prefix("oid.")
        .or_else(|| dotted.strip_prefix("OID."))
        .unwrap_or(dotted);
    encode_oid(dotted).ok_or("an attribute type is neither a known name nor a dotted OID")
}

fn encode_oid(dotted: &str) -> Option<Vec<u8>> {
    let arcs: Vec<u64> = dotted
        .split('.')
        .map(|a| {
            if a.is_empty()
                || !a.bytes().all(|b| b.is_ascii_digit())
                || (a.len() > 1 && a.starts_with('0'))
            {
                None
            } else {
                a.parse().ok()
            }
        })
        .collect::<Option<_>>()?;
    let (&first, rest) = arcs.split_first()?;
    let (&second, rest) = rest.split_first()?;
    if first > 2 || (first < 2 && second >= 40) {
        return None;
    }
    let mut out = Vec::new();
    for arc in
        std::iter::once(first.checked_mul(40)?.checked_add(second)?).chain(rest.iter().copied())
    {
        let mut groups = vec![(arc & 0x7f) as u8];
        let mut v = arc >> 7;
        while v > 0 {
            groups.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        out.extend(groups.iter().rev());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_encode_as_der() {
        assert_eq!(encode_oid("2.5.4.3"), Some(vec![0x55, 0x04, 0x03]));
        assert_eq!(
            encode_oid("1.2.840.113549.1.9.1"),
            Some(vec![0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01])
        );
        assert_eq!(encode_oid("3.1"), None);
        assert_eq!(encode_oid("1.40"), None);
        assert_eq!(encode_oid("1"), None);
        assert_eq!(encode_oid("1..2"), None);
        assert_eq!(encode_oid("1.02"), None);
    }

    #[test]
    fn dn_strings_parse_with_escapes_and_multi_valued_rdns() {
        let dn = parse_dn(r"CN=Op\, Inc.+UID=7, O=Example  Corp ,C=DE").unwrap();
        assert_eq!(dn.len(), 3);
        assert_eq!(dn[0].len(), 2);
        assert_eq!(dn[0][0].value, AttributeValue::Text("op, inc.".into()));
        assert_eq!(dn[1][0].value, AttributeValue::Text("example corp".into()));
        assert_eq!(dn[2][0].oid, vec![0x55, 0x04, 0x06]);
        let hex = parse_dn(r"CN=\C3\A9t\C3\A9,2.5.4.10=#0c0141").unwrap();
        assert_eq!(hex[0][0].value, AttributeValue::Text("été".into()));
        assert_eq!(hex[1][0].value, AttributeValue::Der(vec![0x0c, 0x01, 0x41]));
        // An escaped `#` is text; escaped spaces belong to the value (and are
        // then normalised as any white space).
        let text = parse_dn(r"CN=\#x,O=\ a\ ").unwrap();
        assert_eq!(text[0][0].value, AttributeValue::Text("#x".into()));
        assert_eq!(text[1][0].value, AttributeValue::Text("a".into()));
        for bad in [
            "",
            "CN",
            "CN=",
            "=x",
            "XX=y",
            "CN=a\\",
            "CN=\\zz",
            "CN=#0c",
            "CN=#0c0141ff",
            "CN=\\ff",
        ] {
            assert!(parse_dn(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_reader_refuses_what_is_not_der() {
        // Indefinite length, non-minimal lengths, truncation, high tags.
        for bad in [
            &[0x30, 0x80, 0x00, 0x00][..],
            &[0x30, 0x81, 0x01, 0x00],
            &[0x30, 0x82, 0x00, 0x81],
            &[0x30, 0x05, 0x00],
            &[0x1f, 0x01, 0x00],
            &[0x30],
            &[],
        ] {
            assert!(Reader::new(bad).next().is_none(), "{bad:?}");
            assert!(CertNames::parse(bad).is_none());
        }
    }
}
