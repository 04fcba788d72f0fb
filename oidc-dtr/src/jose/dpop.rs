//! DPoP (RFC 9449): a key per authentication process and a fresh proof for
//! every request.

use std::fmt;

use http::Method;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};
use url::Url;

use super::sign::{KeyError, SigningKey};
use super::signer::{Signer, UnsignedJws};
use super::{Algorithm, b64};
use crate::time::UnixTime;

/// A DPoP key: the private key that proves possession, its public JWK and
/// its RFC 7638 thumbprint (`jkt`).
///
/// One key per authentication process, kept with the
/// [`DeferredAuthentication`](crate::DeferredAuthentication) so that the
/// process can resume after a restart and the OP still recognises it.
/// It serialises (the private key as PKCS#8, base64url: a secret at rest);
/// `Debug` shows only the algorithm and thumbprint.
///
/// ```
/// use oidc_dtr::jose::{Algorithm, DpopKey, jwk_thumbprint};
///
/// let key = DpopKey::generate(Algorithm::ES256)?;
/// // The `jkt` that access tokens bound to this key carry.
/// assert_eq!(Some(key.thumbprint().to_owned()), jwk_thumbprint(key.public_jwk()));
/// assert_eq!(key.algorithm(), Algorithm::ES256);
/// # Ok::<(), oidc_dtr::jose::KeyError>(())
/// ```
#[derive(Clone)]
pub struct DpopKey {
    key: SigningKey,
    jwk: Value,
    thumbprint: String,
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("alg", &self.key.algorithm())
            .field("jkt", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

impl PartialEq for DpopKey {
    fn eq(&self, other: &Self) -> bool {
        self.thumbprint == other.thumbprint && self.key.algorithm() == other.key.algorithm()
    }
}

impl Eq for DpopKey {}

impl DpopKey {
    /// A fresh key (ES256 is the default choice of the SDK).
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        Self::from_signing_key(SigningKey::generate(alg)?)
    }

    /// Wraps a caller-supplied asymmetric key.
    pub fn from_signing_key(mut key: SigningKey) -> Result<Self, KeyError> {
        // A proof identifies its key by the `jwk` header, never by `kid`.
        key.kid = None;
        let jwk = key
            .public_jwk_minimal()
            .ok_or(KeyError::WrongAlgorithm(key.algorithm()))?;
        let thumbprint = jwk_thumbprint(&jwk).ok_or(KeyError::WrongAlgorithm(key.algorithm()))?;
        Ok(DpopKey {
            key,
            jwk,
            thumbprint,
        })
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }

    /// The RFC 7638 SHA-256 thumbprint of the public key (the `jkt` the OP
    /// binds tokens to).
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The private key (crate-internal: it signs the proofs).
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public JWK placed in every proof's header.
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// A DPoP proof for one request: `typ: dpop+jwt`, the public `jwk`, a
    /// fresh `jti`, `iat`, `htm`, and `htu` without query or fragment; plus
    /// the server's `nonce` and the access token hash `ath` when given.
    pub fn proof(
        &self,
        method: &Method,
        url: &Url,
        now: UnixTime,
        jti: &str,
        nonce: Option<&str>,
        ath: Option<&str>,
    ) -> Result<String, KeyError> {
        let unsigned = unsigned_proof(
            self.key.algorithm(),
            &self.jwk,
            ProofClaims {
                method,
                url,
                now,
                jti,
                nonce,
                ath,
            },
        );
        let signature = self.key.sign(unsigned.signing_input())?;
        Ok(unsigned.complete(&signature))
    }
}

/// What a DPoP proof says about its request.
#[derive(Clone, Copy)]
pub(crate) struct ProofClaims<'a> {
    pub(crate) method: &'a Method,
    pub(crate) url: &'a Url,
    pub(crate) now: UnixTime,
    pub(crate) jti: &'a str,
    pub(crate) nonce: Option<&'a str>,
    pub(crate) ath: Option<&'a str>,
}

/// A DPoP proof waiting for its signature: `typ: dpop+jwt`, the public
/// `jwk`, `alg`, and the claims (`htu` without query or fragment).
pub(crate) fn unsigned_proof(alg: Algorithm, jwk: &Value, c: ProofClaims<'_>) -> UnsignedJws {
    let mut header = Map::new();
    header.insert("typ".into(), Value::String("dpop+jwt".into()));
    header.insert("jwk".into(), jwk.clone());
    let mut claims = json!({
        "jti": c.jti,
        "htm": c.method.as_str(),
        "htu": htu(c.url),
        "iat": c.now.as_secs(),
    });
    if let Some(n) = c.nonce {
        claims["nonce"] = Value::String(n.to_owned());
    }
    if let Some(a) = c.ath {
        claims["ath"] = Value::String(a.to_owned());
    }
    // A proof names its key by the `jwk` header, never by `kid`.
    UnsignedJws::new(alg, None, header, &claims)
}

/// The DPoP key of one flow, as its records keep it: a key generated for
/// it (stored with the record, private key included), or an external
/// [`Signer`](super::Signer) configured with
/// [`DpopConfig::signer`](crate::client::DpopConfig::signer), named by its
/// RFC 7638 thumbprint only (the private key never leaves the signer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FlowDpop {
    /// A key held in the record.
    Key(Box<DpopKey>),
    /// A configured external signer, by thumbprint.
    Signer(String),
}

impl FlowDpop {
    /// Borrows it.
    pub(crate) fn as_ref(&self) -> DpopRef<'_> {
        match self {
            FlowDpop::Key(k) => DpopRef::Key(k),
            FlowDpop::Signer(t) => DpopRef::Signer(t),
        }
    }

    /// The RFC 7638 thumbprint (`jkt`) of the key.
    pub(crate) fn thumbprint(&self) -> &str {
        self.as_ref().thumbprint()
    }

    /// The two stored members: the key itself, or the signer's thumbprint.
    pub(crate) fn into_stored(this: Option<Self>) -> (Option<Box<DpopKey>>, Option<Box<str>>) {
        match this {
            None => (None, None),
            Some(FlowDpop::Key(k)) => (Some(k), None),
            Some(FlowDpop::Signer(t)) => (None, Some(t.into_boxed_str())),
        }
    }
}

/// A borrowed [`FlowDpop`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum DpopRef<'a> {
    /// A key held in the record.
    Key(&'a DpopKey),
    /// A configured external signer, by thumbprint.
    Signer(&'a str),
}

impl<'a> DpopRef<'a> {
    /// From the two stored members (the key wins; a record has one or none).
    pub(crate) fn from_stored(key: Option<&'a DpopKey>, jkt: Option<&'a str>) -> Option<Self> {
        match (key, jkt) {
            (Some(k), _) => Some(DpopRef::Key(k)),
            (None, Some(t)) => Some(DpopRef::Signer(t)),
            (None, None) => None,
        }
    }

    /// The RFC 7638 thumbprint (`jkt`) of the key.
    pub(crate) fn thumbprint(self) -> &'a str {
        match self {
            DpopRef::Key(k) => k.thumbprint(),
            DpopRef::Signer(t) => t,
        }
    }

    /// An owned copy.
    pub(crate) fn to_owned_dpop(self) -> FlowDpop {
        match self {
            DpopRef::Key(k) => FlowDpop::Key(Box::new(k.clone())),
            DpopRef::Signer(t) => FlowDpop::Signer(t.to_owned()),
        }
    }
}

/// An external signer configured for DPoP: its public JWK reduced to the
/// members RFC 7638 counts (what a proof's `jwk` header carries) and its
/// thumbprint.
#[derive(Clone)]
pub(crate) struct DpopSigner {
    pub(crate) signer: std::sync::Arc<dyn Signer>,
    pub(crate) jwk: Value,
    pub(crate) thumbprint: String,
}

impl fmt::Debug for DpopSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopSigner")
            .field("alg", &self.signer.algorithm())
            .field("jkt", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

impl DpopSigner {
    /// Checks a signer for DPoP: an asymmetric algorithm, a public JWK
    /// whose key type fits it, and a thumbprint. The reason when not.
    pub(crate) fn new(signer: std::sync::Arc<dyn Signer>) -> Result<Self, String> {
        let alg = signer.algorithm();
        let Some(full) = signer.public_jwk() else {
            return Err("the signer has no public JWK (Signer::public_jwk returned None): a DPoP proof carries the public key".into());
        };
        let kty = full.get("kty").and_then(Value::as_str).unwrap_or("");
        let (fits, keep): (bool, &[&str]) = match kty {
            "RSA" => (
                matches!(
                    alg,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                ),
                &["kty", "n", "e"],
            ),
            "EC" => (
                matches!(alg, Algorithm::ES256 | Algorithm::ES384),
                &["kty", "crv", "x", "y"],
            ),
            "OKP" => (alg == Algorithm::EdDSA, &["kty", "crv", "x"]),
            _ => (false, &[]),
        };
        if !fits {
            return Err(format!(
                "the signer's algorithm {alg} does not fit its public JWK (kty `{}`); DPoP needs an asymmetric key",
                crate::error::sanitize(kty, 10)
            ));
        }
        // Only the public members: a private `d` (a mistake) never reaches
        // a header.
        let jwk = Value::Object(
            keep.iter()
                .filter_map(|k| full.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                .collect(),
        );
        let thumbprint = jwk_thumbprint(&jwk)
            .ok_or_else(|| "the signer's public JWK lacks a required member".to_owned())?;
        Ok(DpopSigner {
            signer,
            jwk,
            thumbprint,
        })
    }
}

/// The `htu` of a request: its URL without query and fragment.
pub(crate) fn htu(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// `ath`: base64url(SHA-256(access token)), for presenting a DPoP-bound
/// access token to a resource server (RFC 9449 §4.2).
pub(crate) fn ath(access_token: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    b64(d.as_ref())
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK, base64url without
/// padding: the `jkt` a DPoP-bound token or a PAR `dpop_jkt` names, for any
/// key (a resource server checking a proof, an OP's key, a key from a KMS).
///
/// Only the required members of the key type count (`crv`, `kty`, `x`, `y`
/// for EC; `e`, `kty`, `n` for RSA; `crv`, `kty`, `x` for OKP), in
/// lexicographic order with no whitespace, so `kid`, `use` or member order do
/// not change it. `None` when `kty` is another type or a required member is
/// missing or not a string.
///
/// ```
/// // The example of RFC 7638 §3.1.
/// let jwk = serde_json::json!({
///     "kty": "RSA",
///     "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
///     "e": "AQAB",
///     "alg": "RS256",
///     "kid": "2011-04-29"
/// });
/// assert_eq!(
///     oidc_dtr::jose::jwk_thumbprint(&jwk).as_deref(),
///     Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
/// );
/// assert_eq!(oidc_dtr::jose::jwk_thumbprint(&serde_json::json!({"kty": "oct", "k": "AA"})), None);
/// ```
// Built by hand so that it does not depend on how `serde_json` orders
// object keys.
#[must_use]
pub fn jwk_thumbprint(jwk: &Value) -> Option<String> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    let q = |v: &str| serde_json::to_string(v).ok();
    let canonical = match s("kty")? {
        "EC" => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            q(s("crv")?)?,
            q(s("x")?)?,
            q(s("y")?)?
        ),
        "RSA" => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, q(s("e")?)?, q(s("n")?)?),
        "OKP" => format!(
            r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
            q(s("crv")?)?,
            q(s("x")?)?
        ),
        _ => return None,
    };
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    Some(b64(d.as_ref()))
}

#[derive(Serialize, Deserialize)]
struct Stored {
    alg: Algorithm,
    pkcs8: String,
}

impl Serialize for DpopKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let der = self.key.to_pkcs8_der().map_err(serde::ser::Error::custom)?;
        Stored {
            alg: self.key.algorithm(),
            pkcs8: b64(&der),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for DpopKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let stored = Stored::deserialize(d)?;
        let der = super::b64_decode(&stored.pkcs8)
            .ok_or_else(|| serde::de::Error::custom("pkcs8 is not base64url"))?;
        let key = SigningKey::from_pkcs8_der(stored.alg, &der).map_err(serde::de::Error::custom)?;
        DpopKey::from_signing_key(key).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            jwk_thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn proof_has_the_required_shape() {
        use base64::Engine as _;
        let key = DpopKey::generate(Algorithm::ES256).unwrap();
        let url = Url::parse("https://op.example/token?x=1#frag").unwrap();
        let p = key
            .proof(
                &Method::POST,
                &url,
                UnixTime::from_secs(1_700_000_000),
                "jti-1",
                Some("n-1"),
                None,
            )
            .unwrap();
        let parts: Vec<&str> = p.split('.').collect();
        assert_eq!(parts.len(), 3);
        let dec = |s: &str| -> Value {
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(s)
                    .unwrap(),
            )
            .unwrap()
        };
        let h = dec(parts[0]);
        assert_eq!(h["typ"], "dpop+jwt");
        assert_eq!(h["alg"], "ES256");
        assert_eq!(h["jwk"], *key.public_jwk());
        assert!(h.get("kid").is_none());
        assert!(
            h["jwk"].get("d").is_none(),
            "no private member in the header"
        );
        let c = dec(parts[1]);
        assert_eq!(c["htm"], "POST");
        assert_eq!(c["htu"], "https://op.example/token");
        assert_eq!(c["iat"], 1_700_000_000);
        assert_eq!(c["jti"], "jti-1");
        assert_eq!(c["nonce"], "n-1");
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[2])
                .unwrap()
                .len(),
            64
        );
    }

    #[test]
    fn serde_round_trip_keeps_the_key() {
        let key = DpopKey::generate(Algorithm::ES256).unwrap();
        let j = serde_json::to_string(&key).unwrap();
        let back: DpopKey = serde_json::from_str(&j).unwrap();
        assert_eq!(back.thumbprint(), key.thumbprint());
        assert!(!format!("{key:?}").contains("pkcs8"));
        assert!(serde_json::from_str::<DpopKey>(r#"{"alg":"ES256","pkcs8":"AAAA"}"#).is_err());
    }

    #[test]
    fn ath_is_sha256_b64url() {
        // b64url(sha256("abc")).
        assert_eq!(ath("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
    }
}
