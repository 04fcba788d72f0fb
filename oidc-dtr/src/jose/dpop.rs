//! DPoP (RFC 9449): a key per authentication process and a fresh proof for
//! every request.

use std::fmt;

use http::Method;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};
use url::Url;

use super::sign::{KeyError, SigningKey};
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
        let mut header = Map::new();
        header.insert("typ".into(), Value::String("dpop+jwt".into()));
        header.insert("jwk".into(), self.jwk.clone());
        let mut claims = json!({
            "jti": jti,
            "htm": method.as_str(),
            "htu": htu(url),
            "iat": now.as_secs(),
        });
        if let Some(n) = nonce {
            claims["nonce"] = Value::String(n.to_owned());
        }
        if let Some(a) = ath {
            claims["ath"] = Value::String(a.to_owned());
        }
        self.key.sign_jwt(header, &claims)
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
