//! JWK Sets (RFC 7517): parsing the OP's public keys, once.
//!
//! A [`KeySet`] is parsed once, when the JWK Set arrives: every usable key
//! becomes an aws-lc-rs `ParsedPublicKey` per algorithm it may verify, so
//! validating a token never parses or builds a key. Keys the SDK cannot use
//! (encryption keys, symmetric keys, unknown key types or curves, RSA keys
//! under 2048 bits, malformed members) are skipped, not fatal: one odd key
//! must not take the whole set down.

use std::fmt;
use std::sync::OnceLock;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::{AlgSet, Algorithm};
use crate::error::{ResponseError, ValidationError, sanitize};
use crate::json::JsonObject;

const CONTEXT: &str = "JWK Set";

/// One usable key: its `kid` and one pre-parsed verifier per algorithm.
struct Key {
    kid: Option<String>,
    verifiers: Vec<(Algorithm, ParsedPublicKey)>,
}

impl Key {
    fn verifier(&self, alg: Algorithm) -> Option<&ParsedPublicKey> {
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, k)| k)
    }
}

/// A parsed JWK Set: the OP's public signing keys, ready to verify.
///
/// Built once per fetch; verification reuses the parsed keys.
///
/// ```
/// use oidc_dtr::jose::{Algorithm, KeySet, SigningKey};
///
/// let key = SigningKey::generate(Algorithm::ES256)?.with_kid("k1");
/// let jwks = KeySet::from_keys([key.public_jwk().unwrap()], &[Algorithm::ES256]);
/// assert_eq!(jwks.len(), 1);
/// assert_eq!(jwks.kids().collect::<Vec<_>>(), [Some("k1")]);
/// // Keys for algorithms not allowed are skipped, not errors.
/// assert!(KeySet::from_keys([key.public_jwk().unwrap()], &[Algorithm::RS256]).is_empty());
/// # Ok::<(), oidc_dtr::jose::KeyError>(())
/// ```
pub struct KeySet {
    keys: Vec<Key>,
    /// The usable keys as received (for export).
    raw: Vec<Value>,
    skipped: usize,
    /// ID token headers that passed their checks and named a key of this
    /// set that verified the token (see [`KeySet::known_header`]).
    headers: [OnceLock<KnownHeader>; HEADER_SLOTS],
}

/// How many distinct ID token headers a [`KeySet`] remembers: an OP signs
/// its tokens with one header per key, and a set rarely holds more than a
/// couple of keys in use.
const HEADER_SLOTS: usize = 4;

/// The longest header segment remembered, in bytes (an ID token header is
/// `alg`, `kid` and `typ`: well under this).
const MAX_KNOWN_HEADER: usize = 512;

/// An ID token header whose exact base64url text passed the header checks
/// (`alg` known, no `crit`, no JWE, an ID token's `typ`), with what they
/// read, and the key of the set its `kid` and `alg` selected.
///
/// Every one of those depends on the header text alone (and the key on
/// the set, which never changes): the same text always gives the same
/// result, so a token whose header segment is byte for byte a remembered
/// one skips the base64url decoding, the JSON and the key lookup, and gets
/// the same answer. Only headers of tokens whose signature verified are
/// remembered, so a forger cannot fill the slots.
pub(crate) struct KnownHeader {
    segment: Box<str>,
    /// The `alg` the header names.
    pub(crate) alg: Algorithm,
    /// The `kid` the header names, if any.
    pub(crate) kid: Option<Box<str>>,
    /// The key selected for `kid` and `alg` (a [`Selection::Found`]).
    pub(crate) index: usize,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field(
                "keys",
                &self
                    .keys
                    .iter()
                    .map(|k| (k.kid.as_deref(), k.verifiers.iter().map(|v| v.0).collect()))
                    .collect::<Vec<(Option<&str>, Vec<Algorithm>)>>(),
            )
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// What a key lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selection {
    /// The index of the key to use.
    Found(usize),
    /// No key has this `kid` (or, without a `kid`, none fits the `alg`).
    Missing,
    /// Keys have this `kid` but none can verify the `alg`.
    Mismatch,
    /// No `kid`, and this many keys fit.
    Ambiguous(usize),
}

impl KeySet {
    /// An empty set.
    pub fn empty() -> Self {
        KeySet {
            keys: Vec::new(),
            raw: Vec::new(),
            skipped: 0,
            headers: Default::default(),
        }
    }

    /// Parses a JWK Set document (`{"keys": [...]}`), keeping the keys that
    /// can verify one of `algorithms` and skipping the others. HMAC
    /// algorithms are ignored here: symmetric keys never come from a JWK Set.
    pub fn from_json(body: &[u8], algorithms: &[Algorithm]) -> Result<Self, ResponseError> {
        let obj = JsonObject::parse(body, CONTEXT)?;
        let Some(Value::Array(keys)) = obj.get("keys") else {
            return Err(obj.err("keys", "must be an array"));
        };
        Ok(Self::from_keys(keys.iter().cloned(), algorithms))
    }

    /// Builds a set from individual JWKs (see [`from_json`](Self::from_json)).
    pub fn from_keys(keys: impl IntoIterator<Item = Value>, algorithms: &[Algorithm]) -> Self {
        let algs: AlgSet = algorithms
            .iter()
            .copied()
            .filter(|a| !a.is_hmac())
            .collect();
        let mut set = KeySet::empty();
        for jwk in keys {
            match parse_jwk(&jwk, algs) {
                Ok(key) => {
                    set.keys.push(key);
                    set.raw.push(jwk);
                }
                Err(why) => {
                    set.skipped += 1;
                    let kid = jwk
                        .get("kid")
                        .and_then(|k| k.as_str())
                        .map(|k| sanitize(k, 40));
                    tracing::debug!(?kid, why, "JWK skipped");
                }
            }
        }
        set
    }

    /// How many usable keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys of the document were skipped as unusable.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The `kid`s of the usable keys.
    pub fn kids(&self) -> impl Iterator<Item = Option<&str>> {
        self.keys.iter().map(|k| k.kid.as_deref())
    }

    /// The usable keys as received.
    pub(crate) fn jwks(&self) -> &[Value] {
        &self.raw
    }

    /// Finds the key for a token's `kid` and `alg`. Without a `kid`, the
    /// set's single key that fits `alg` is used; several are ambiguous.
    pub(crate) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection {
        match kid {
            Some(kid) => {
                let mut seen = false;
                for (i, k) in self.keys.iter().enumerate() {
                    if k.kid.as_deref() == Some(kid) {
                        if k.verifier(alg).is_some() {
                            return Selection::Found(i);
                        }
                        seen = true;
                    }
                }
                if seen {
                    Selection::Mismatch
                } else {
                    Selection::Missing
                }
            }
            None => {
                let mut found = None;
                let mut n = 0;
                for (i, k) in self.keys.iter().enumerate() {
                    if k.verifier(alg).is_some() {
                        found.get_or_insert(i);
                        n += 1;
                    }
                }
                match (found, n) {
                    (Some(i), 1) => Selection::Found(i),
                    (None, _) => Selection::Missing,
                    (_, n) => Selection::Ambiguous(n),
                }
            }
        }
    }

    /// The verifier of key `index` for `alg`.
    #[cfg(test)]
    pub(crate) fn verifier(&self, index: usize, alg: Algorithm) -> Option<&ParsedPublicKey> {
        self.keys.get(index)?.verifier(alg)
    }

    /// Verifies a JWS signature over `signing_input` with the key this set
    /// holds for `kid` and `alg` (without a `kid`, the single key that fits
    /// `alg`). The error says which lookup or check failed.
    pub fn verify(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), ValidationError> {
        match self.select(kid, alg) {
            Selection::Found(i) => self.verify_from(i, kid, alg, signing_input, signature),
            other => Err(miss_error(kid, alg, other)),
        }
    }

    /// Verifies with the key at `index` (a [`Selection::Found`]) and, when
    /// the token names a `kid`, with every later key of that `kid` able to
    /// verify `alg` (an OP may publish several keys under one `kid`, e.g.
    /// during a rotation): the signature is good if one of them accepts it.
    pub(crate) fn verify_from(
        &self,
        index: usize,
        kid: Option<&str>,
        alg: Algorithm,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), ValidationError> {
        for (n, k) in self.keys.iter().skip(index).enumerate() {
            if n > 0 && (kid.is_none() || k.kid.as_deref() != kid) {
                continue;
            }
            if let Some(v) = k.verifier(alg)
                && v.verify_sig(signing_input, signature).is_ok()
            {
                return Ok(());
            }
        }
        Err(ValidationError::Signature)
    }

    /// The remembered ID token header whose base64url text is exactly
    /// `segment`, if any (a comparison of bytes per remembered header; see
    /// [`KnownHeader`]).
    pub(crate) fn known_header(&self, segment: &str) -> Option<&KnownHeader> {
        self.headers
            .iter()
            .map_while(OnceLock::get)
            .find(|h| *h.segment == *segment)
    }

    /// Remembers an ID token header that passed its checks with `alg` and
    /// `kid`, and whose token key `index` of this set (selected for `kid`
    /// and `alg`) verified. Does nothing once every slot is taken, or for
    /// a header too long to be an ordinary one. Safe to race: two threads
    /// remembering the same header at once may take two slots for it, which
    /// only wastes one.
    pub(crate) fn remember_header(
        &self,
        segment: &str,
        alg: Algorithm,
        kid: Option<&str>,
        index: usize,
    ) {
        if segment.len() > MAX_KNOWN_HEADER {
            return;
        }
        let mut entry = None;
        for slot in &self.headers {
            if let Some(h) = slot.get() {
                if *h.segment == *segment {
                    return;
                }
                continue;
            }
            let new = entry.take().unwrap_or_else(|| KnownHeader {
                segment: segment.into(),
                alg,
                kid: kid.map(Into::into),
                index,
            });
            match slot.set(new) {
                Ok(()) => return,
                // Another thread took this slot meanwhile: maybe with this
                // very header, else try the next slot.
                Err(back) => {
                    if slot.get().is_some_and(|h| *h.segment == *segment) {
                        return;
                    }
                    entry = Some(back);
                }
            }
        }
    }

    /// [`verify`](Self::verify) for an ID token whose header (the
    /// base64url text `segment`) passed its checks: on success, the header
    /// is remembered (see [`known_header`](Self::known_header)).
    pub(crate) fn verify_id_token(
        &self,
        segment: &str,
        kid: Option<&str>,
        alg: Algorithm,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), ValidationError> {
        match self.select(kid, alg) {
            Selection::Found(i) => {
                self.verify_from(i, kid, alg, signing_input, signature)?;
                self.remember_header(segment, alg, kid, i);
                Ok(())
            }
            other => Err(miss_error(kid, alg, other)),
        }
    }

    /// Finds the verifier for a token's `kid` and `alg`, or says why not.
    #[cfg(test)]
    pub(crate) fn find(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<&ParsedPublicKey, ValidationError> {
        match self.select(kid, alg) {
            Selection::Found(i) => self
                .verifier(i, alg)
                .ok_or_else(|| miss_error(kid, alg, Selection::Missing)),
            other => Err(miss_error(kid, alg, other)),
        }
    }
}

/// The error for a lookup that found no key.
pub(crate) fn miss_error(kid: Option<&str>, alg: Algorithm, sel: Selection) -> ValidationError {
    match (sel, kid) {
        (Selection::Ambiguous(n), _) => ValidationError::AmbiguousKey {
            alg: alg.as_str().into(),
            candidates: n,
        },
        (Selection::Mismatch, Some(kid)) => ValidationError::KeyMismatch {
            kid: sanitize(kid, 80),
            alg: alg.as_str().into(),
        },
        (_, Some(kid)) => ValidationError::UnknownKid {
            kid: sanitize(kid, 80),
        },
        (_, None) => ValidationError::NoMatchingKey {
            alg: alg.as_str().into(),
        },
    }
}

fn b64_member(jwk: &serde_json::Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let s = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{name}` is missing or not a string"))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('=').as_bytes())
        .map_err(|_| format!("`{name}` is not base64url"))
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[i..]
}

fn rsa_params(alg: Algorithm) -> Option<&'static sig::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// The field prime of Curve25519, 2^255 - 19, little-endian.
const ED25519_P: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// The `y` coordinates (little-endian, sign bit cleared) of the eight points
/// of small order on Edwards25519: the identity (y = 1), the point of order
/// 2 (y = p - 1), the two of order 4 (y = 0) and the four of order 8.
const ED25519_SMALL_ORDER_Y: [[u8; 32]; 5] = {
    let mut one = [0u8; 32];
    one[0] = 1;
    let mut p_minus_1 = ED25519_P;
    p_minus_1[0] = 0xec;
    [
        [0u8; 32],
        one,
        p_minus_1,
        [
            0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef,
            0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88,
            0x6d, 0x53, 0xfc, 0x05,
        ],
        [
            0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10,
            0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77,
            0x92, 0xac, 0x03, 0x7a,
        ],
    ]
};

/// Refuses an Ed25519 public key whose encoding is non-canonical (y >= p)
/// or whose point has small order: with such a key (the identity, say),
/// signatures can be forged without any secret.
fn check_ed25519_point(x: &[u8; 32]) -> Result<(), String> {
    let mut y = *x;
    y[31] &= 0x7f;
    // y >= p, comparing little-endian numbers from the top byte down.
    if y.iter().rev().cmp(ED25519_P.iter().rev()) != std::cmp::Ordering::Less {
        return Err("non-canonical Ed25519 point".into());
    }
    if ED25519_SMALL_ORDER_Y.contains(&y) {
        return Err("Ed25519 point of small order".into());
    }
    Ok(())
}

/// Parses one JWK into a [`Key`], or says why it cannot be used.
fn parse_jwk(jwk: &Value, allowed: AlgSet) -> Result<Key, String> {
    let Value::Object(m) = jwk else {
        return Err("not a JSON object".into());
    };
    let text = |name: &str| -> Result<Option<&str>, String> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("`{name}` is not a string")),
        }
    };
    let kid = text("kid")?.map(str::to_owned);
    if let Some(u) = text("use")?
        && u != "sig"
    {
        return Err(format!("`use` is `{}`", sanitize(u, 20)));
    }
    if let Some(ops) = m.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err("`key_ops` does not allow `verify`".into());
        }
    }
    let jwk_alg = match text("alg")? {
        None => None,
        Some(a) => Some(
            Algorithm::parse(a).ok_or_else(|| format!("unknown `alg` `{}`", sanitize(a, 20)))?,
        ),
    };
    let wanted = |family: &[Algorithm]| -> Vec<Algorithm> {
        family
            .iter()
            .copied()
            .filter(|a| allowed.contains(*a) && jwk_alg.is_none_or(|j| j == *a))
            .collect()
    };
    let rejected = |e: aws_lc_rs::error::KeyRejected| format!("rejected by aws-lc ({e})");
    let mut verifiers = Vec::new();
    match text("kty")?.ok_or("`kty` is missing")? {
        "RSA" => {
            let algs = wanted(&[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ]);
            if algs.is_empty() {
                return Err("no allowed algorithm for an RSA key".into());
            }
            let n = b64_member(m, "n")?;
            let e = b64_member(m, "e")?;
            let (n, e) = (strip_leading_zeros(&n), strip_leading_zeros(&e));
            // RFC 8017 §3.1: 3 <= e < n, e odd. aws-lc checks neither.
            if e.is_empty() || (e.len() == 1 && e[0] < 3) || e.last().is_some_and(|b| b % 2 == 0) {
                return Err("RSA exponent `e` below 3 or even".into());
            }
            // An empty (or all-zero) modulus has 0 bits; never underflow.
            let bits = match n.first() {
                Some(b) => (n.len() * 8).saturating_sub(b.leading_zeros() as usize),
                None => 0,
            };
            if !(2048..=8192).contains(&bits) {
                return Err(format!(
                    "RSA modulus of {bits} bits (2048 to 8192 accepted)"
                ));
            }
            let comps = RsaPublicKeyComponents { n, e };
            for a in algs {
                let params = rsa_params(a).ok_or("not an RSA algorithm")?;
                verifiers.push((a, comps.to_parsed_public_key(params).map_err(rejected)?));
            }
        }
        "EC" => {
            let (alg, len, params): (_, usize, &'static sig::EcdsaVerificationAlgorithm) =
                match text("crv")?.ok_or("`crv` is missing")? {
                    "P-256" => (Algorithm::ES256, 32, &sig::ECDSA_P256_SHA256_FIXED),
                    "P-384" => (Algorithm::ES384, 48, &sig::ECDSA_P384_SHA384_FIXED),
                    other => return Err(format!("unsupported curve `{}`", sanitize(other, 20))),
                };
            if wanted(&[alg]).is_empty() {
                return Err(format!("{alg} is not allowed"));
            }
            let x = b64_member(m, "x")?;
            let y = b64_member(m, "y")?;
            if x.len() != len || y.len() != len {
                return Err("`x` or `y` has the wrong length".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            verifiers.push((alg, ParsedPublicKey::new(params, &point).map_err(rejected)?));
        }
        "OKP" => {
            let crv = text("crv")?.ok_or("`crv` is missing")?;
            if crv != "Ed25519" {
                return Err(format!("unsupported curve `{}`", sanitize(crv, 20)));
            }
            if wanted(&[Algorithm::EdDSA]).is_empty() {
                return Err("EdDSA is not allowed".into());
            }
            let x = b64_member(m, "x")?;
            let Ok(x32) = <[u8; 32]>::try_from(x.as_slice()) else {
                return Err("`x` has the wrong length".into());
            };
            check_ed25519_point(&x32)?;
            verifiers.push((
                Algorithm::EdDSA,
                ParsedPublicKey::new(&sig::ED25519, &x).map_err(rejected)?,
            ));
        }
        other => return Err(format!("unsupported `kty` `{}`", sanitize(other, 20))),
    }
    Ok(Key { kid, verifiers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::SigningKey;
    use serde_json::json;

    fn jwk(alg: Algorithm, kid: &str) -> (SigningKey, Value) {
        let k = SigningKey::generate(alg).unwrap().with_kid(kid);
        let j = k.public_jwk().unwrap();
        (k, j)
    }

    const ALL_ASYM: &[Algorithm] = &[
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    #[test]
    fn parses_every_key_type_and_verifies() {
        for alg in [
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ] {
            let (k, j) = jwk(alg, "k");
            let set = KeySet::from_keys([j], ALL_ASYM);
            assert_eq!(set.len(), 1, "{alg}");
            let sig = k.sign(b"msg").unwrap();
            let v = set.find(Some("k"), alg).unwrap();
            assert!(v.verify_sig(b"msg", &sig).is_ok(), "{alg}");
            assert!(v.verify_sig(b"msh", &sig).is_err(), "{alg}");
        }
    }

    #[test]
    fn rsa_key_without_alg_serves_pkcs1_and_pss() {
        let (k, mut j) = jwk(Algorithm::RS256, "r");
        j.as_object_mut().unwrap().remove("alg");
        let set = KeySet::from_keys([j.clone()], ALL_ASYM);
        assert!(set.find(Some("r"), Algorithm::RS256).is_ok());
        let pss = k.with_algorithm(Algorithm::PS256).unwrap();
        let sig = pss.sign(b"m").unwrap();
        assert!(
            set.find(Some("r"), Algorithm::PS256)
                .unwrap()
                .verify_sig(b"m", &sig)
                .is_ok()
        );
        // With `alg: RS256` on the JWK, PS256 is refused for that key.
        j["alg"] = json!("RS256");
        let set = KeySet::from_keys([j], ALL_ASYM);
        assert!(matches!(
            set.find(Some("r"), Algorithm::PS256),
            Err(ValidationError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let (_, good) = jwk(Algorithm::ES256, "good");
        let (_, mut enc) = jwk(Algorithm::ES256, "enc");
        enc["use"] = json!("enc");
        let (_, mut ops) = jwk(Algorithm::ES256, "ops");
        ops["key_ops"] = json!(["encrypt"]);
        let (_, mut bad_x) = jwk(Algorithm::ES256, "badx");
        bad_x["x"] = json!("AAAA");
        let (_, mut off_curve) = jwk(Algorithm::ES256, "off");
        off_curve["y"] = off_curve["x"].clone();
        let small_rsa =
            json!({"kty":"RSA","kid":"small","n": crate::jose::b64(&[0xc1; 128]),"e":"AQAB"});
        let doc = json!({"keys": [
            good,
            enc,
            ops,
            bad_x,
            off_curve,
            small_rsa,
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"EC","crv":"P-521","x":"AA","y":"AA"},
            {"kty":"OKP","crv":"X25519","x":"AA"},
            {"kty":"RSA","n":5},
            {"kid":"nokty"},
            "not an object",
            {"kty":"EC","crv":"P-256","alg":"ES999","x":"AA","y":"AA"},
        ]});
        let set = KeySet::from_json(doc.to_string().as_bytes(), ALL_ASYM).unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), [Some("good")]);
        assert_eq!(set.skipped(), 12);
    }

    /// Issue 11, item 1: degenerate key material is skipped, never a panic
    /// (an empty or all-zero modulus used to underflow the bit count).
    #[test]
    fn degenerate_key_material_is_skipped_without_panicking() {
        let zeros = crate::jose::b64(&[0u8; 256]);
        let mut keys = Vec::new();
        for n in ["", "AA", "AAAA", zeros.as_str(), "AQ"] {
            for e in ["", "AA", "AQAB"] {
                keys.push(json!({"kty":"RSA","kid":"r","n":n,"e":e}));
                keys.push(json!({"kty":"RSA","kid":"r","alg":"PS256","n":n,"e":e}));
            }
        }
        for x in ["", "AA", zeros.as_str()] {
            keys.push(json!({"kty":"EC","crv":"P-256","x":x,"y":x}));
            keys.push(json!({"kty":"EC","crv":"P-384","x":x,"y":x}));
            keys.push(json!({"kty":"OKP","crv":"Ed25519","x":x}));
        }
        let all = keys.len();
        let set = KeySet::from_keys(keys, ALL_ASYM);
        assert!(set.is_empty());
        assert_eq!(set.skipped(), all);
    }

    #[test]
    fn keys_for_algorithms_not_allowed_are_skipped() {
        let (_, j) = jwk(Algorithm::ES256, "e");
        let set = KeySet::from_keys([j], &[Algorithm::RS256]);
        assert!(set.is_empty());
    }

    #[test]
    fn document_errors() {
        for body in ["[]", "{}", r#"{"keys":{}}"#, "nope"] {
            assert!(
                KeySet::from_json(body.as_bytes(), ALL_ASYM).is_err(),
                "{body}"
            );
        }
        assert!(
            KeySet::from_json(br#"{"keys":[]}"#, ALL_ASYM)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn selection_rules() {
        let (_, a) = jwk(Algorithm::ES256, "a");
        let (_, b) = jwk(Algorithm::ES256, "b");
        let (_, r) = jwk(Algorithm::RS256, "r");
        let one = KeySet::from_keys([a.clone(), r.clone()], ALL_ASYM);
        assert_eq!(one.select(None, Algorithm::ES256), Selection::Found(0));
        assert_eq!(one.select(None, Algorithm::RS256), Selection::Found(1));
        assert_eq!(one.select(None, Algorithm::EdDSA), Selection::Missing);
        assert_eq!(one.select(Some("a"), Algorithm::RS256), Selection::Mismatch);
        assert_eq!(one.select(Some("zz"), Algorithm::ES256), Selection::Missing);
        let two = KeySet::from_keys([a, b], ALL_ASYM);
        assert_eq!(two.select(None, Algorithm::ES256), Selection::Ambiguous(2));
        assert!(matches!(
            two.find(None, Algorithm::ES256),
            Err(ValidationError::AmbiguousKey { candidates: 2, .. })
        ));
        assert!(matches!(
            two.find(Some("zz"), Algorithm::ES256),
            Err(ValidationError::UnknownKid { .. })
        ));
        assert!(matches!(
            two.find(None, Algorithm::RS256),
            Err(ValidationError::NoMatchingKey { .. })
        ));
    }

    fn okp(x: &[u8]) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": URL_SAFE_NO_PAD.encode(x)})
    }

    #[test]
    fn ed25519_small_order_and_non_canonical_points_are_refused() {
        // The identity point: with it, R = identity and S = 0 "verify" any
        // message.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let set = KeySet::from_keys([okp(&identity)], &[Algorithm::EdDSA]);
        assert_eq!((set.len(), set.skipped()), (0, 1));
        assert!(
            set.verify(Some("e"), Algorithm::EdDSA, b"anything", &forged)
                .is_err()
        );
        let mut bad = Vec::new();
        for y in ED25519_SMALL_ORDER_Y {
            bad.push(y);
            let mut neg = y;
            neg[31] |= 0x80;
            bad.push(neg);
        }
        // Non-canonical: p, p + 1, 2^255 - 1.
        let mut p = ED25519_P;
        bad.push(p);
        p[0] = 0xee;
        bad.push(p);
        bad.push([0xff; 32]);
        for x in bad {
            let set = KeySet::from_keys([okp(&x)], &[Algorithm::EdDSA]);
            assert_eq!(set.len(), 0, "{x:02x?}");
        }
        // A real key still parses.
        let (_, j) = jwk(Algorithm::EdDSA, "ok");
        assert_eq!(KeySet::from_keys([j], &[Algorithm::EdDSA]).len(), 1);
    }

    #[test]
    fn rsa_exponent_below_3_or_even_is_unusable() {
        let (_, j) = jwk(Algorithm::RS256, "r");
        for e in [
            &[1u8][..],
            &[2],
            &[0],
            &[0, 1],
            &[1, 0, 0],
            &[0x01, 0x00, 0x02],
        ] {
            let mut k = j.clone();
            k["e"] = json!(URL_SAFE_NO_PAD.encode(e));
            let set = KeySet::from_keys([k], &[Algorithm::RS256]);
            assert_eq!((set.len(), set.skipped()), (0, 1), "{e:?}");
        }
        assert_eq!(KeySet::from_keys([j], &[Algorithm::RS256]).len(), 1);
    }

    #[test]
    fn every_key_with_the_kid_is_tried() {
        let (_, first) = jwk(Algorithm::ES256, "same");
        let (k2, second) = jwk(Algorithm::ES256, "same");
        let (_, other) = jwk(Algorithm::ES256, "other");
        let set = KeySet::from_keys([other, first, second], ALL_ASYM);
        assert_eq!(set.len(), 3);
        let sig = k2.sign(b"msg").unwrap();
        assert!(
            set.verify(Some("same"), Algorithm::ES256, b"msg", &sig)
                .is_ok()
        );
        assert_eq!(
            set.verify(Some("same"), Algorithm::ES256, b"msh", &sig),
            Err(ValidationError::Signature)
        );
        // A key of another kid is never tried.
        assert!(
            set.verify(Some("other"), Algorithm::ES256, b"msg", &sig)
                .is_err()
        );
    }
}
