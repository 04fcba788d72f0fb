//! Compact JWS decoding (RFC 7515 §7.1), with the header rules an ID token
//! needs: no JWE, no `crit`, a known `alg`, an ID-token `typ` if any.
//!
//! Decoding borrows from the input where it can: the signing input is a
//! slice of the token, and the payload is base64-decoded only after the
//! signature has been checked, so a forged token costs one header parse and
//! one signature check. Each part is decoded once, into a buffer on the
//! stack when it fits (every signature of a supported algorithm does, and
//! the header and payload of a typical ID token do): no heap allocation
//! per part on the validation hot path. A header whose exact text the key
//! set has seen on a verified token is not decoded again
//! ([`decode_known`]; see `KeySet::known_header`).

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::Algorithm;
use crate::error::{ValidationError, sanitize};
use crate::json::scan::{Fast, Scanner};

/// The largest compact JWS accepted, in bytes. ID tokens with OpenID
/// Connect for Identity Assurance `verified_claims` can be large, but not
/// this large.
pub(crate) const MAX_JWS_BYTES: usize = 256 * 1024;

/// A decoded compact JWS whose signature has not been checked yet. The
/// signature and the `kid` borrow the caller's [`JwsBuf`] (or the token).
#[derive(Debug)]
pub(crate) struct Jws<'a> {
    /// The `alg` header.
    pub alg: Algorithm,
    /// The `kid` header, if any (owned only when it was written with
    /// escapes).
    pub kid: Option<Cow<'a, str>>,
    /// `BASE64URL(header) "." BASE64URL(payload)`: what the signature covers.
    pub signing_input: &'a [u8],
    /// The payload, still base64url-encoded.
    pub payload_b64: &'a str,
    /// The signature bytes.
    pub signature: &'a [u8],
}

/// The largest signature of a supported algorithm: RSA with an 8192-bit
/// modulus, 1024 bytes.
const INLINE_SIGNATURE: usize = 1024;

/// The largest header decoded on the stack; a longer one goes to the heap.
const INLINE_HEADER: usize = 256;

/// Room for the decoded header and signature of one JWS, on the caller's
/// stack: [`decode`] writes them here and the [`Jws`] borrows them, so
/// nothing is moved or allocated per token (a part longer than the room,
/// which no supported algorithm's signature is, goes to the heap; such a
/// signature never verifies, but the error stays the one it was: a
/// signature error after the key lookup).
pub(crate) struct JwsBuf {
    header: [u8; INLINE_HEADER],
    signature: [u8; INLINE_SIGNATURE],
    header_heap: Vec<u8>,
    signature_heap: Vec<u8>,
}

impl JwsBuf {
    pub(crate) fn new() -> Self {
        JwsBuf {
            header: [0; INLINE_HEADER],
            signature: [0; INLINE_SIGNATURE],
            header_heap: Vec::new(),
            signature_heap: Vec::new(),
        }
    }
}

/// The base64url alphabet (RFC 4648 §5) as a reverse table: the 6-bit
/// value of each byte, or `INVALID`.
const INVALID: u8 = 0xff;
const B64URL: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// The decoded length of `len` base64url characters without padding, or
/// `None` for a length no encoding produces (one character past a group).
pub(crate) fn b64_decoded_len(len: usize) -> Option<usize> {
    match len % 4 {
        1 => None,
        0 => Some(len / 4 * 3),
        r => Some(len / 4 * 3 + r - 1),
    }
}

/// Decodes base64url without padding into `out`, which must be exactly
/// [`b64_decoded_len`] long; `None` on any character outside the alphabet
/// (padding included), a length no encoding produces, or non-zero bits
/// after the last byte (so every byte string has exactly one encoding, as
/// with the `base64` crate's strict engine).
///
/// The hot path of validation decodes two or three parts per token:
/// thirty-two characters (twenty-four bytes) per step (see
/// [`block_values`]) and one check for bad characters at the end; the last
/// 31 characters at most with a table, eight at a time.
pub(crate) fn b64_decode_into(part: &[u8], out: &mut [u8]) -> Option<()> {
    if b64_decoded_len(part.len())? != out.len() {
        return None;
    }
    let (blocks, tail) = part.as_chunks::<32>();
    let (blocks_out, tail_out) = out.split_at_mut(blocks.len() * 24);
    let (blocks_out, _) = blocks_out.as_chunks_mut::<24>();
    // Every value of a bad character has its top bits set.
    let mut bad = [0u8; 32];
    for (c, o) in blocks.iter().zip(blocks_out) {
        let mut quads = [0u32; 8];
        block_values(c, &mut quads, &mut bad);
        let (pairs, _) = quads.as_chunks::<2>();
        let (outs, _) = o.as_chunks_mut::<6>();
        for (q, o) in pairs.iter().zip(outs) {
            // Two 24-bit groups: six bytes, big-endian.
            let w = (u64::from(q[0]) << 24) | u64::from(q[1]);
            let [_, _, b @ ..] = w.to_be_bytes();
            *o = b;
        }
    }
    if bad.iter().fold(0, |a, &b| a | b) & 0xc0 != 0 {
        return None;
    }
    // The last 31 characters at most: eight at a time, a table lookup
    // each, then the last group.
    let (eights, rest) = tail.as_chunks::<8>();
    let (eights_out, rest_out) = tail_out.split_at_mut(eights.len() * 6);
    let (eights_out, _) = eights_out.as_chunks_mut::<6>();
    let mut bad = 0u8;
    for (c, o) in eights.iter().zip(eights_out) {
        let mut n = 0u64;
        for &ch in c {
            let v = B64URL[ch as usize];
            bad |= v;
            n = (n << 6) | u64::from(v);
        }
        let [_, _, b @ ..] = n.to_be_bytes();
        *o = b;
    }
    if bad & 0xc0 != 0 {
        return None;
    }
    b64_decode_tail(rest, rest_out)
}

/// The values of 32 base64url characters, as 8 groups of 24 bits; each
/// value is also or-ed into `bad` (a bad character's value is `INVALID`).
///
/// Written so that the compiler turns it into vector instructions (16
/// characters at a time with SSE2): a value by comparisons and selects
/// rather than a table lookup, then the groups by shifts on 32-bit lanes.
/// Kept out of line: inlined into its caller, the loops were compiled to
/// scalar code, one character at a time (and so were they when this
/// function also reordered the bytes for the stores).
#[inline(never)]
fn block_values(c: &[u8; 32], quads: &mut [u32; 8], bad: &mut [u8; 32]) {
    let mut v = [0u8; 32];
    for (v, &ch) in v.iter_mut().zip(c) {
        let upper = ch.wrapping_sub(b'A');
        let lower = ch.wrapping_sub(b'a');
        let digit = ch.wrapping_sub(b'0');
        let mut x = INVALID;
        x = if upper < 26 { upper } else { x };
        x = if lower < 26 { lower + 26 } else { x };
        x = if digit < 10 { digit + 52 } else { x };
        x = if ch == b'-' { 62 } else { x };
        x = if ch == b'_' { 63 } else { x };
        *v = x;
    }
    for (b, &x) in bad.iter_mut().zip(&v) {
        *b |= x;
    }
    let (fours, _) = v.as_chunks::<4>();
    for (q, f) in quads.iter_mut().zip(fours) {
        let x = u32::from_le_bytes(*f);
        *q = ((x & 0xff) << 18) | ((x & 0xff00) << 4) | ((x & 0xff_0000) >> 10) | (x >> 24);
    }
}

/// The last group of [`b64_decode_into`]: at most 7 characters.
fn b64_decode_tail(part: &[u8], out: &mut [u8]) -> Option<()> {
    let (fours, rest) = part.as_chunks::<4>();
    let (fours_out, rest_out) = out.split_at_mut(fours.len() * 3);
    let (fours_out, _) = fours_out.as_chunks_mut::<3>();
    for (c, o) in fours.iter().zip(fours_out) {
        let (a, b, cc, d) = (
            B64URL[c[0] as usize],
            B64URL[c[1] as usize],
            B64URL[c[2] as usize],
            B64URL[c[3] as usize],
        );
        if (a | b | cc | d) & 0xc0 != 0 {
            return None;
        }
        let n = (u32::from(a) << 18) | (u32::from(b) << 12) | (u32::from(cc) << 6) | u32::from(d);
        let [_, b @ ..] = n.to_be_bytes();
        *o = b;
    }
    b64_decode_rest(rest, rest_out)
}

/// The last 0, 2 or 3 characters of [`b64_decode_into`] (one is no
/// encoding), whose unused low bits must be zero.
fn b64_decode_rest(rest: &[u8], out: &mut [u8]) -> Option<()> {
    let mut n = 0u32;
    for &ch in rest {
        let v = B64URL[ch as usize];
        if v & 0xc0 != 0 {
            return None;
        }
        n = (n << 6) | u32::from(v);
    }
    match (rest.len(), out) {
        (0, []) => {}
        // 12 bits: one byte and 4 bits that must be zero.
        (2, [a]) if n & 0xf == 0 => *a = (n >> 4) as u8,
        // 18 bits: two bytes and 2 bits that must be zero.
        (3, [a, b]) if n & 0x3 == 0 => {
            *a = (n >> 10) as u8;
            *b = (n >> 2) as u8;
        }
        _ => return None,
    }
    Some(())
}

/// Decodes base64url without padding into `stack` when the decoded part
/// fits, else into `heap`; returns the decoded bytes.
pub(crate) fn b64_decode_buf<'b>(
    part: &str,
    what: &str,
    stack: &'b mut [u8],
    heap: &'b mut Vec<u8>,
) -> Result<&'b [u8], ValidationError> {
    let bad = || ValidationError::malformed(what, "not base64url without padding");
    let len = b64_decoded_len(part.len()).ok_or_else(bad)?;
    let out = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.clear();
        heap.resize(len, 0);
        &mut heap[..]
    };
    b64_decode_into(part.as_bytes(), out).ok_or_else(bad)?;
    Ok(out)
}

/// Decodes base64url without padding into a new `Vec` (for a part whose
/// decoded bytes outlive the validation, such as the payload kept by
/// [`IdTokenClaims`](crate::IdTokenClaims)).
pub(crate) fn b64_decode_vec(part: &str, what: &str) -> Result<Vec<u8>, ValidationError> {
    let bad = || ValidationError::malformed(what, "not base64url without padding");
    let len = b64_decoded_len(part.len()).ok_or_else(bad)?;
    let mut out = vec![0u8; len];
    b64_decode_into(part.as_bytes(), &mut out).ok_or_else(bad)?;
    Ok(out)
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow, default)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
    #[serde(default)]
    enc: Option<IgnoredAny>,
}

/// The members of a header that [`decode`] reads.
struct HeaderView<'a> {
    alg: Option<Cow<'a, str>>,
    kid: Option<Cow<'a, str>>,
    typ: Option<Cow<'a, str>>,
}

/// Reads the header of the common shape (`alg`, `kid`, `typ` as strings
/// without escapes, no `crit` or `enc`, other members ignored) without
/// serde_json; `None` for anything else, which [`header_full`] then reads.
fn header_fast(bytes: &[u8]) -> Option<HeaderView<'_>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut scan = Scanner::new(text);
    let (mut alg, mut kid, mut typ) = (None, None, None);
    scan.members(|scan, name| {
        let slot = match name {
            "alg" => &mut alg,
            "kid" => &mut kid,
            "typ" => &mut typ,
            // Refusals, with their own errors: serde_json reads them.
            "crit" | "enc" => return None,
            // Ignored, as serde ignores unknown fields (the fast reader is
            // only stricter: it gives up on a duplicate inside one).
            _ => return scan.value(0).map(drop),
        };
        match (scan.value(0)?, &slot) {
            (Fast::Str(s), None) => {
                *slot = Some(Cow::Borrowed(s));
                Some(())
            }
            // A duplicate, `null` or another type: serde_json's error.
            _ => None,
        }
    })?;
    Some(HeaderView { alg, kid, typ })
}

/// Reads the header with serde_json, with its errors.
fn header_full(bytes: &[u8]) -> Result<HeaderView<'_>, ValidationError> {
    let header: Header<'_> = serde_json::from_slice(bytes).map_err(|e| {
        ValidationError::malformed(
            "header",
            format!(
                "not a valid JOSE header ({})",
                sanitize(&e.to_string(), 120)
            ),
        )
    })?;
    if header.enc.is_some() {
        return Err(ValidationError::Jwe);
    }
    if let Some(crit) = &header.crit {
        let names = match crit {
            serde_json::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => sanitize(s, 40),
                    _ => "?".to_owned(),
                })
                .take(8)
                .collect(),
            _ => vec!["?".to_owned()],
        };
        return Err(ValidationError::CritHeader { names });
    }
    Ok(HeaderView {
        alg: header.alg,
        kid: header.kid,
        typ: header.typ,
    })
}

/// The three parts of a compact JWS, split on their dots, not decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parts<'a> {
    /// The header, base64url-encoded: the text a
    /// [`KeySet`](crate::jose::KeySet) remembers validated headers by.
    pub header: &'a str,
    /// The payload, base64url-encoded.
    pub payload: &'a str,
    /// The signature, base64url-encoded.
    pub signature: &'a str,
    /// `header "." payload`: what the signature covers.
    pub signing_input: &'a [u8],
}

/// Splits a compact JWS into its three parts (the length and the number
/// of parts are the only checks). The dots are found with `memchr`, which
/// reads the token a vector register at a time.
pub(crate) fn split(token: &str) -> Result<Parts<'_>, ValidationError> {
    if token.len() > MAX_JWS_BYTES {
        return Err(ValidationError::malformed(
            "serialization",
            format!("longer than {MAX_JWS_BYTES} bytes"),
        ));
    }
    let not_three = || ValidationError::malformed("serialization", "not three dot-separated parts");
    let bytes = token.as_bytes();
    let first = memchr::memchr(b'.', bytes).ok_or_else(not_three)?;
    let second = first + 1 + memchr::memchr(b'.', &bytes[first + 1..]).ok_or_else(not_three)?;
    // Dots are ASCII: every cut is on a char boundary.
    let (Some(header), Some(payload), Some(signature)) = (
        token.get(..first),
        token.get(first + 1..second),
        token.get(second + 1..),
    ) else {
        return Err(not_three());
    };
    if memchr::memchr(b'.', signature.as_bytes()).is_some() {
        return Err(
            match memchr::memchr_iter(b'.', signature.as_bytes()).count() {
                // Five parts: the JWE compact serialization (RFC 7516 §7.1).
                2 => ValidationError::Jwe,
                _ => not_three(),
            },
        );
    }
    Ok(Parts {
        header,
        payload,
        signature,
        signing_input: &bytes[..second],
    })
}

/// Splits and decodes a compact JWS, checking the header. The header and
/// the signature are decoded into `buf`.
pub(crate) fn decode<'a>(token: &'a str, buf: &'a mut JwsBuf) -> Result<Jws<'a>, ValidationError> {
    decode_parts(split(token)?, buf)
}

/// [`decode`] on a JWS already split.
pub(crate) fn decode_parts<'a>(
    parts: Parts<'a>,
    buf: &'a mut JwsBuf,
) -> Result<Jws<'a>, ValidationError> {
    let JwsBuf {
        header: header_buf,
        signature: signature_buf,
        header_heap,
        signature_heap,
    } = buf;
    let header_bytes = b64_decode_buf(parts.header, "header", header_buf, header_heap)?;
    let header = match header_fast(header_bytes) {
        Some(header) => header,
        None => header_full(header_bytes)?,
    };
    let alg = match header.alg.as_deref() {
        None => return Err(ValidationError::malformed("header", "`alg` is missing")),
        Some(a) => Algorithm::parse(a).ok_or_else(|| ValidationError::AlgorithmNotAllowed {
            alg: sanitize(a, 40),
        })?,
    };
    if let Some(typ) = header.typ.as_deref()
        && !is_id_token_typ(typ)
    {
        return Err(ValidationError::Type {
            typ: sanitize(typ, 40),
        });
    }
    let signature = b64_decode_buf(parts.signature, "signature", signature_buf, signature_heap)?;
    Ok(Jws {
        alg,
        kid: header.kid,
        signing_input: parts.signing_input,
        payload_b64: parts.payload,
        signature,
    })
}

/// [`decode_parts`] for a header whose exact text passed its checks
/// before, with this `alg` and `kid` (see
/// [`KeySet::known_header`](crate::jose::KeySet)): the header's checks
/// depend on its text alone, so only the signature is decoded. The errors
/// that can remain come in the same order.
pub(crate) fn decode_known<'a>(
    parts: Parts<'a>,
    alg: Algorithm,
    kid: Option<&'a str>,
    buf: &'a mut JwsBuf,
) -> Result<Jws<'a>, ValidationError> {
    let signature = b64_decode_buf(
        parts.signature,
        "signature",
        &mut buf.signature,
        &mut buf.signature_heap,
    )?;
    Ok(Jws {
        alg,
        kid: kid.map(Cow::Borrowed),
        signing_input: parts.signing_input,
        payload_b64: parts.payload,
        signature,
    })
}

/// ID tokens carry no `typ` or `JWT` (RFC 7519 §5.1); anything else (e.g.
/// `at+jwt`, `logout+jwt`, `dpop+jwt`) is another kind of token.
fn is_id_token_typ(typ: &str) -> bool {
    typ.eq_ignore_ascii_case("JWT") || typ.eq_ignore_ascii_case("application/jwt")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::b64;

    fn token(header: &str, payload: &str, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64(header.as_bytes()),
            b64(payload.as_bytes()),
            b64(sig)
        )
    }

    #[test]
    fn decodes_a_plain_jws() {
        let t = token(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#, "{}", b"sig");
        let mut buf = JwsBuf::new();
        let j = decode(&t, &mut buf).unwrap();
        assert_eq!(j.alg, Algorithm::RS256);
        assert_eq!(j.kid.as_deref(), Some("k1"));
        assert_eq!(j.signature, b"sig");
        assert_eq!(j.signing_input, t.rsplit_once('.').unwrap().0.as_bytes());
    }

    #[test]
    fn long_parts_fall_back_to_the_heap() {
        // A signature longer than any supported key makes, and a long
        // header: decoded exactly as the short ones.
        let sig = vec![0xa5u8; INLINE_SIGNATURE + 100];
        let kid = "k".repeat(400);
        let t = token(&format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#), "{}", &sig);
        let mut buf = JwsBuf::new();
        let j = decode(&t, &mut buf).unwrap();
        assert_eq!(j.signature, &sig[..]);
        assert_eq!(j.kid.as_deref(), Some(kid.as_str()));
        assert_eq!(buf.signature_heap.len(), sig.len());
        assert!(buf.header_heap.len() > INLINE_HEADER);
        let t = token(r#"{"alg":"RS256"}"#, "{}", &[7u8; 512]);
        let mut buf = JwsBuf::new();
        let j = decode(&t, &mut buf).unwrap();
        assert_eq!(j.signature, &[7u8; 512][..]);
        assert!(buf.signature_heap.is_empty() && buf.header_heap.is_empty());
        // The stack path is as strict as the heap one.
        let mut stack = [0u8; 8];
        let mut heap = Vec::new();
        for bad in ["c2ln==", "c2l+", "c2m", "c"] {
            assert!(
                b64_decode_buf(bad, "x", &mut stack, &mut heap).is_err(),
                "{bad}"
            );
        }
    }

    /// The table decoder accepts and refuses exactly what the `base64`
    /// crate's strict URL-safe engine does, with the same bytes.
    #[test]
    fn b64_decoder_matches_the_strict_engine() {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..4000 {
            let len = (next() % 200) as usize;
            let mut text: Vec<u8> = (0..len).map(|_| alphabet[(next() % 64) as usize]).collect();
            // Now and then a byte outside the alphabet, padding included.
            if round % 5 == 0 && len > 0 {
                let bad = [b'=', b'+', b'/', b' ', b'.', 0xc3, 0];
                text[(next() as usize) % len] = bad[(next() as usize) % bad.len()];
            }
            let Ok(text) = String::from_utf8(text) else {
                continue;
            };
            let expected = URL_SAFE_NO_PAD.decode(text.as_bytes()).ok();
            let got = b64_decoded_len(text.len()).and_then(|n| {
                let mut out = vec![0u8; n];
                b64_decode_into(text.as_bytes(), &mut out).map(|()| out)
            });
            assert_eq!(got, expected, "{text:?}");
            let mut stack = [0u8; 16];
            let mut heap = Vec::new();
            let buf = b64_decode_buf(&text, "x", &mut stack, &mut heap).ok();
            assert_eq!(buf.map(<[u8]>::to_vec), expected, "{text:?}");
        }
        // Every byte string has one encoding: the trailing bits must be zero.
        assert!(b64_decode_vec("QR", "x").is_err());
        assert_eq!(b64_decode_vec("QQ", "x").unwrap(), b"A");
        assert!(b64_decode_vec("QUJ", "x").is_err());
        assert_eq!(b64_decode_vec("QUI", "x").unwrap(), b"AB");
    }

    #[test]
    fn header_rules() {
        type Check = fn(&ValidationError) -> bool;
        let cases: &[(&str, Check)] = &[
            (
                r#"{"alg":"none"}"#,
                |e| matches!(e, ValidationError::AlgorithmNotAllowed { alg } if alg == "none"),
            ),
            (r#"{"alg":"RS1"}"#, |e| {
                matches!(e, ValidationError::AlgorithmNotAllowed { .. })
            }),
            (r#"{"typ":"JWT"}"#, |e| {
                matches!(e, ValidationError::Malformed { .. })
            }),
            (
                r#"{"alg":"RS256","crit":["exp"],"exp":1}"#,
                |e| matches!(e, ValidationError::CritHeader { names } if names == &["exp"]),
            ),
            (r#"{"alg":"RS256","crit":"x"}"#, |e| {
                matches!(e, ValidationError::CritHeader { .. })
            }),
            (r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#, |e| {
                matches!(e, ValidationError::Jwe)
            }),
            (r#"{"alg":"RS256","typ":"at+jwt"}"#, |e| {
                matches!(e, ValidationError::Type { .. })
            }),
            (r#"{"alg":"RS256","alg":"HS256"}"#, |e| {
                matches!(e, ValidationError::Malformed { .. })
            }),
            (r#"{"alg":5}"#, |e| {
                matches!(e, ValidationError::Malformed { .. })
            }),
            (r#"[1]"#, |e| matches!(e, ValidationError::Malformed { .. })),
        ];
        for (h, check) in cases {
            let e = decode(&token(h, "{}", b"s"), &mut JwsBuf::new()).unwrap_err();
            assert!(check(&e), "{h}: {e:?}");
        }
        let t = token(r#"{"alg":"ES256","typ":"jwt"}"#, "{}", b"s");
        assert_eq!(
            decode(&t, &mut JwsBuf::new()).unwrap().alg,
            Algorithm::ES256
        );
    }

    /// The fast header reader gives what serde_json gives, or gives up.
    #[test]
    fn header_readers_agree() {
        let headers = [
            r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#,
            r#" { "typ" : "JWT" , "alg" : "ES256" } "#,
            r#"{"alg":"RS256","x5t":"abc","jku":null,"n":[1,{"a":true}],"o":{}}"#,
            r#"{"alg":"RS256","kid":"k\u0031"}"#,
            r#"{"alg":"RS256","kid":7}"#,
            r#"{"alg":"RS256","alg":"RS256"}"#,
            r#"{"alg":"RS256","x":1,"x":2}"#,
            r#"{"alg":"RS256","x":{"y":1,"y":2}}"#,
            r#"{"alg":null}"#,
            r#"{"alg":"RS256","crit":[]}"#,
            r#"{"alg":"RS256","enc":"A256GCM"}"#,
            r#"{"alg":"RS256","e":1.5}"#,
            r#"{"alg":"RS256"} x"#,
            r#"{"alg":"RS256",}"#,
            r#"["RS256"]"#,
            r#"{}"#,
            "{\"alg\":\"RS256\",\"kid\":\"\u{e9}\"}",
        ];
        let mut understood = 0;
        for h in headers {
            let full = header_full(h.as_bytes());
            let Some(fast) = header_fast(h.as_bytes()) else {
                continue;
            };
            understood += 1;
            let full = full.unwrap_or_else(|e| panic!("{h}: {e:?}"));
            assert_eq!(fast.alg, full.alg, "{h}");
            assert_eq!(fast.kid, full.kid, "{h}");
            assert_eq!(fast.typ, full.typ, "{h}");
        }
        assert_eq!(understood, 6);
        // Not UTF-8: serde_json's error.
        assert!(header_fast(b"{\"alg\":\"\xff\"}").is_none());
    }

    #[test]
    fn serialization_rules() {
        assert_eq!(
            decode("a.b.c.d.e", &mut JwsBuf::new()).unwrap_err(),
            ValidationError::Jwe
        );
        for bad in ["", "a", "a.b", "a.b.c.d", "a.b.c.d.e.f"] {
            assert!(
                matches!(
                    decode(bad, &mut JwsBuf::new()).unwrap_err(),
                    ValidationError::Malformed { .. }
                ),
                "{bad}"
            );
        }
        let h = b64(br#"{"alg":"RS256"}"#);
        // Padding and non-alphabet characters are refused.
        for sig in ["c2ln==", "c2l+", "c2l/", "c2l n"] {
            let e = decode(&format!("{h}.e30.{sig}"), &mut JwsBuf::new()).unwrap_err();
            assert!(
                matches!(e, ValidationError::Malformed { ref part, .. } if part == "signature"),
                "{sig}: {e:?}"
            );
        }
        let huge = "a".repeat(MAX_JWS_BYTES + 1);
        assert!(matches!(
            decode(&huge, &mut JwsBuf::new()).unwrap_err(),
            ValidationError::Malformed { .. }
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let inputs = [
            "..".to_owned(),
            "\u{0}.\u{1}.\u{2}".to_owned(),
            format!("{}..", b64(b"{")),
            format!("{}.x.y", b64(&[0xff, 0xfe])),
            "é.é.é".to_owned(),
        ];
        for i in inputs {
            assert!(decode(&i, &mut JwsBuf::new()).is_err(), "{i}");
        }
    }
}
