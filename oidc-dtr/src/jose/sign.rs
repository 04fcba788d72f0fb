//! Signing keys and JWS compact signing.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use serde_json::{Map, Value, json};

use super::{Algorithm, b64};

/// A key could not be generated, loaded or used for signing.
///
/// ```
/// use oidc_dtr::jose::{Algorithm, KeyError, SigningKey};
///
/// match SigningKey::from_pem(Algorithm::ES256, "not a PEM key") {
///     Err(KeyError::Rejected(why)) => println!("bad key material: {why}"),
///     Err(KeyError::WrongAlgorithm(alg)) => println!("{alg} does not fit this key"),
///     Err(other) => println!("{other}"),
///     Ok(_) => unreachable!("garbage is not a key"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The algorithm does not fit the key, or is not supported here.
    #[error("algorithm {0} cannot be used with this key")]
    WrongAlgorithm(Algorithm),
    /// The key material was rejected.
    #[error("the key was rejected: {0}")]
    Rejected(String),
    /// Signing failed.
    #[error("signing failed")]
    Signing,
}

#[derive(Clone)]
enum Kind {
    Rsa(Arc<sig::RsaKeyPair>),
    Ec(Arc<sig::EcdsaKeyPair>),
    Ed(Arc<sig::Ed25519KeyPair>),
    Hmac(Box<aws_lc_rs::hmac::Key>),
}

/// A private key plus the JWS algorithm it signs with.
///
/// `Debug` shows the algorithm and `kid` only.
///
/// ```
/// use oidc_dtr::jose::{Algorithm, SigningKey};
///
/// let key = SigningKey::generate(Algorithm::ES256)?.with_kid("rp-key-1");
/// assert_eq!(key.algorithm(), Algorithm::ES256);
/// // Publish the public half in the RP's JWK Set (for `private_key_jwt`).
/// let jwk = key.public_jwk().expect("an asymmetric key");
/// assert_eq!(jwk["kid"], "rp-key-1");
/// assert!(jwk.get("d").is_none()); // no private part
/// // Keep the private key, e.g. as PKCS#8 in a secret manager.
/// let der = key.to_pkcs8_der()?;
/// let restored = SigningKey::from_pkcs8_der(Algorithm::ES256, &der)?;
/// assert_eq!(restored.public_jwk_minimal(), key.public_jwk_minimal());
/// # Ok::<(), oidc_dtr::jose::KeyError>(())
/// ```
#[derive(Clone)]
pub struct SigningKey {
    kind: Kind,
    alg: Algorithm,
    pub(super) kid: Option<String>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn rsa_params(alg: Algorithm) -> Option<&'static dyn sig::RsaEncoding> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_SHA512,
        _ => return None,
    })
}

fn ec_params(alg: Algorithm) -> Option<&'static sig::EcdsaSigningAlgorithm> {
    Some(match alg {
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
        _ => return None,
    })
}

fn hmac_params(alg: Algorithm) -> Option<aws_lc_rs::hmac::Algorithm> {
    Some(match alg {
        Algorithm::HS256 => aws_lc_rs::hmac::HMAC_SHA256,
        Algorithm::HS384 => aws_lc_rs::hmac::HMAC_SHA384,
        Algorithm::HS512 => aws_lc_rs::hmac::HMAC_SHA512,
        _ => return None,
    })
}

impl SigningKey {
    /// Generates a fresh key for `alg` (RSA keys are 2048 bits). HMAC keys
    /// cannot be generated here: use [`SigningKey::hmac`].
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let rejected = |e: aws_lc_rs::error::Unspecified| KeyError::Rejected(e.to_string());
        let kind = if rsa_params(alg).is_some() {
            Kind::Rsa(Arc::new(
                sig::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(rejected)?,
            ))
        } else if let Some(p) = ec_params(alg) {
            Kind::Ec(Arc::new(sig::EcdsaKeyPair::generate(p).map_err(rejected)?))
        } else if alg == Algorithm::EdDSA {
            Kind::Ed(Arc::new(sig::Ed25519KeyPair::generate().map_err(rejected)?))
        } else {
            return Err(KeyError::WrongAlgorithm(alg));
        };
        Ok(SigningKey {
            kind,
            alg,
            kid: None,
        })
    }

    /// Loads a PKCS#8 DER private key for `alg`.
    pub fn from_pkcs8_der(alg: Algorithm, der: &[u8]) -> Result<Self, KeyError> {
        let rejected = |e: aws_lc_rs::error::KeyRejected| KeyError::Rejected(e.to_string());
        let kind = if rsa_params(alg).is_some() {
            Kind::Rsa(Arc::new(
                sig::RsaKeyPair::from_pkcs8(der).map_err(rejected)?,
            ))
        } else if let Some(p) = ec_params(alg) {
            Kind::Ec(Arc::new(
                sig::EcdsaKeyPair::from_pkcs8(p, der).map_err(rejected)?,
            ))
        } else if alg == Algorithm::EdDSA {
            Kind::Ed(Arc::new(
                sig::Ed25519KeyPair::from_pkcs8(der).map_err(rejected)?,
            ))
        } else {
            return Err(KeyError::WrongAlgorithm(alg));
        };
        Ok(SigningKey {
            kind,
            alg,
            kid: None,
        })
    }

    /// Loads a PEM private key: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY`
    /// (PKCS#1) or `EC PRIVATE KEY` (SEC 1).
    pub fn from_pem(alg: Algorithm, pem: &str) -> Result<Self, KeyError> {
        let (label, der) = pem_decode(pem)?;
        let rejected = |e: aws_lc_rs::error::KeyRejected| KeyError::Rejected(e.to_string());
        match label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(alg, &der),
            "RSA PRIVATE KEY" if rsa_params(alg).is_some() => Ok(SigningKey {
                kind: Kind::Rsa(Arc::new(sig::RsaKeyPair::from_der(&der).map_err(rejected)?)),
                alg,
                kid: None,
            }),
            "EC PRIVATE KEY" => {
                let p = ec_params(alg).ok_or(KeyError::WrongAlgorithm(alg))?;
                Ok(SigningKey {
                    kind: Kind::Ec(Arc::new(
                        sig::EcdsaKeyPair::from_private_key_der(p, &der).map_err(rejected)?,
                    )),
                    alg,
                    kid: None,
                })
            }
            other => Err(KeyError::Rejected(format!(
                "unsupported PEM block `{other}`"
            ))),
        }
    }

    /// Loads a private JWK (RSA, EC P-256/P-384, or OKP Ed25519). The
    /// algorithm is the JWK's `alg`, or `default_alg` when it has none; the
    /// `kid` is kept.
    pub fn from_jwk(jwk: &Value, default_alg: Option<Algorithm>) -> Result<Self, KeyError> {
        let field = |name: &str| -> Result<Vec<u8>, KeyError> {
            jwk.get(name)
                .and_then(Value::as_str)
                .and_then(super::b64_decode)
                .ok_or_else(|| {
                    KeyError::Rejected(format!("JWK member `{name}` is missing or not base64url"))
                })
        };
        let rejected = |e: aws_lc_rs::error::KeyRejected| KeyError::Rejected(e.to_string());
        let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or("");
        let crv = jwk.get("crv").and_then(Value::as_str).unwrap_or("");
        let alg = match jwk.get("alg").and_then(Value::as_str) {
            Some(a) => Algorithm::parse(a)
                .ok_or_else(|| KeyError::Rejected(format!("unsupported alg `{a}`")))?,
            None => match (kty, crv, default_alg) {
                (_, _, Some(a)) => a,
                ("EC", "P-256", None) => Algorithm::ES256,
                ("EC", "P-384", None) => Algorithm::ES384,
                ("OKP", "Ed25519", None) => Algorithm::EdDSA,
                ("RSA", _, None) => Algorithm::RS256,
                _ => return Err(KeyError::Rejected("JWK has no usable `alg`".into())),
            },
        };
        let kind = match kty {
            "RSA" if rsa_params(alg).is_some() => {
                let (n, e, d) = (field("n")?, field("e")?, field("d")?);
                let (p, q, dp, dq, qi) = (
                    field("p")?,
                    field("q")?,
                    field("dp")?,
                    field("dq")?,
                    field("qi")?,
                );
                let c = aws_lc_rs::rsa::KeyPairComponents {
                    public_key: aws_lc_rs::rsa::PublicKeyComponents { n, e },
                    d,
                    p,
                    q,
                    dP: dp,
                    dQ: dq,
                    qInv: qi,
                };
                Kind::Rsa(Arc::new(
                    sig::RsaKeyPair::from_components(&c).map_err(rejected)?,
                ))
            }
            "EC" => {
                let p = ec_params(alg).ok_or(KeyError::WrongAlgorithm(alg))?;
                let want = if std::ptr::eq(p, &sig::ECDSA_P256_SHA256_FIXED_SIGNING) {
                    "P-256"
                } else {
                    "P-384"
                };
                if crv != want {
                    return Err(KeyError::WrongAlgorithm(alg));
                }
                let mut point = vec![4u8];
                point.extend(field("x")?);
                point.extend(field("y")?);
                Kind::Ec(Arc::new(
                    sig::EcdsaKeyPair::from_private_key_and_public_key(p, &field("d")?, &point)
                        .map_err(rejected)?,
                ))
            }
            "OKP" if crv == "Ed25519" && alg == Algorithm::EdDSA => Kind::Ed(Arc::new(
                sig::Ed25519KeyPair::from_seed_and_public_key(&field("d")?, &field("x")?)
                    .map_err(rejected)?,
            )),
            _ => return Err(KeyError::WrongAlgorithm(alg)),
        };
        Ok(SigningKey {
            kind,
            alg,
            kid: jwk.get("kid").and_then(Value::as_str).map(str::to_owned),
        })
    }

    /// An HMAC key (`HS256`/`HS384`/`HS512`) from a shared secret.
    pub fn hmac(alg: Algorithm, secret: &[u8]) -> Result<Self, KeyError> {
        let p = hmac_params(alg).ok_or(KeyError::WrongAlgorithm(alg))?;
        Ok(SigningKey {
            kind: Kind::Hmac(Box::new(aws_lc_rs::hmac::Key::new(p, secret))),
            alg,
            kid: None,
        })
    }

    /// Sets the `kid` placed in JWS headers and the public JWK.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Uses the same key with another algorithm of its family (e.g. an RSA
    /// key for PS256 instead of RS256).
    pub fn with_algorithm(mut self, alg: Algorithm) -> Result<Self, KeyError> {
        let fits = match &self.kind {
            Kind::Rsa(_) => rsa_params(alg).is_some(),
            Kind::Ec(k) => ec_params(alg).is_some_and(|p| std::ptr::eq(p, k.algorithm())),
            Kind::Ed(_) => alg == Algorithm::EdDSA,
            Kind::Hmac(_) => false,
        };
        if !fits {
            return Err(KeyError::WrongAlgorithm(alg));
        }
        self.alg = alg;
        Ok(self)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The `kid`, if set.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The private key as PKCS#8 DER (to persist it). Treat it as a secret.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, KeyError> {
        let fail = |_| KeyError::Rejected("cannot serialise".into());
        match &self.kind {
            Kind::Rsa(k) => {
                let d: aws_lc_rs::encoding::Pkcs8V1Der<'_> = k.as_der().map_err(fail)?;
                Ok(d.as_ref().to_vec())
            }
            Kind::Ec(k) => Ok(k.to_pkcs8v1().map_err(fail)?.as_ref().to_vec()),
            Kind::Ed(k) => Ok(k.to_pkcs8v1().map_err(fail)?.as_ref().to_vec()),
            Kind::Hmac(_) => Err(KeyError::WrongAlgorithm(self.alg)),
        }
    }

    /// The public key as a JWK (with `kid`, `alg` and `use: "sig"`); `None`
    /// for HMAC keys, which have no public part.
    pub fn public_jwk(&self) -> Option<Value> {
        let mut jwk = match &self.kind {
            Kind::Rsa(k) => {
                let pk = k.public_key();
                json!({
                    "kty": "RSA",
                    "n": b64(pk.modulus().big_endian_without_leading_zero()),
                    "e": b64(pk.exponent().big_endian_without_leading_zero()),
                })
            }
            Kind::Ec(k) => {
                let point = k.public_key().as_ref();
                let (crv, n) = if self.alg == Algorithm::ES256 {
                    ("P-256", 32)
                } else {
                    ("P-384", 48)
                };
                // Uncompressed point: 0x04 || x || y.
                let (x, y) = point.get(1..)?.split_at(n);
                json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)})
            }
            Kind::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.public_key().as_ref())})
            }
            Kind::Hmac(_) => return None,
        };
        let obj = jwk.as_object_mut()?;
        if let Some(kid) = &self.kid {
            obj.insert("kid".into(), Value::String(kid.clone()));
        }
        obj.insert("alg".into(), Value::String(self.alg.as_str().into()));
        obj.insert("use".into(), Value::String("sig".into()));
        Some(jwk)
    }

    /// The public JWK with only the members RFC 7638 hashes (for
    /// thumbprints and DPoP `jwk` headers).
    pub fn public_jwk_minimal(&self) -> Option<Value> {
        let full = self.public_jwk()?;
        let keep: &[&str] = match full.get("kty")?.as_str()? {
            "RSA" => &["kty", "n", "e"],
            "EC" => &["kty", "crv", "x", "y"],
            "OKP" => &["kty", "crv", "x"],
            _ => return None,
        };
        let obj = full.as_object()?;
        Some(Value::Object(
            keep.iter()
                .filter_map(|k| obj.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                .collect(),
        ))
    }

    /// Signs raw bytes (the JWS signing input).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match &self.kind {
            Kind::Rsa(k) => {
                let p = rsa_params(self.alg).ok_or(KeyError::WrongAlgorithm(self.alg))?;
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign(p, &rng, message, &mut out)
                    .map_err(|_| KeyError::Signing)?;
                Ok(out)
            }
            Kind::Ec(k) => Ok(k
                .sign(&rng, message)
                .map_err(|_| KeyError::Signing)?
                .as_ref()
                .to_vec()),
            Kind::Ed(k) => Ok(k.sign(message).as_ref().to_vec()),
            Kind::Hmac(k) => Ok(aws_lc_rs::hmac::sign(k, message).as_ref().to_vec()),
        }
    }

    /// Signs a JWT: the header gets `alg`, `kid` (when set) and every member
    /// of `header` (e.g. `typ`, `jwk`); the payload is `claims`.
    pub fn sign_jwt(&self, header: Map<String, Value>, claims: &Value) -> Result<String, KeyError> {
        let mut h = Map::new();
        h.insert("alg".into(), Value::String(self.alg.as_str().into()));
        if let Some(kid) = &self.kid {
            h.insert("kid".into(), Value::String(kid.clone()));
        }
        h.extend(header);
        let input = format!(
            "{}.{}",
            b64(Value::Object(h).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", b64(&sig)))
    }
}

/// The label and DER bytes of the first PEM block.
fn pem_decode(pem: &str) -> Result<(String, Vec<u8>), KeyError> {
    use base64::Engine as _;
    let bad = || KeyError::Rejected("not a PEM block".into());
    let begin = pem.find("-----BEGIN ").ok_or_else(bad)?;
    let rest = &pem[begin + 11..];
    let label_end = rest.find("-----").ok_or_else(bad)?;
    let label = rest[..label_end].to_owned();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest.find(&end_marker).ok_or_else(bad)?;
    let b64: String = rest
        .get(body_start..body_end)
        .ok_or_else(bad)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| KeyError::Rejected("PEM body is not base64".into()))?;
    Ok((label, der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_export() {
        for alg in [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA] {
            let k = SigningKey::generate(alg).unwrap().with_kid("k1");
            let jwt = k.sign_jwt(Map::new(), &json!({"a": 1})).unwrap();
            assert_eq!(jwt.split('.').count(), 3);
            let jwk = k.public_jwk().unwrap();
            assert_eq!(jwk["kid"], "k1");
            assert_eq!(jwk["alg"], alg.as_str());
            let der = k.to_pkcs8_der().unwrap();
            let k2 = SigningKey::from_pkcs8_der(alg, &der).unwrap();
            assert_eq!(k2.public_jwk_minimal(), k.public_jwk_minimal());
        }
    }

    #[test]
    fn rsa_key_exports_and_switches_to_pss() {
        let k = SigningKey::generate(Algorithm::RS256).unwrap();
        let jwk = k.public_jwk_minimal().unwrap();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["e"], "AQAB");
        let ps = k.clone().with_algorithm(Algorithm::PS256).unwrap();
        assert_eq!(ps.algorithm(), Algorithm::PS256);
        assert!(k.clone().with_algorithm(Algorithm::ES256).is_err());
        assert_eq!(ps.sign(b"x").unwrap().len(), 256);
    }

    #[test]
    fn pem_round_trip() {
        use base64::Engine as _;
        for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
            let k = SigningKey::generate(alg).unwrap();
            let b64 = base64::engine::general_purpose::STANDARD.encode(k.to_pkcs8_der().unwrap());
            let lines: Vec<String> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            );
            let back = SigningKey::from_pem(alg, &pem).unwrap();
            assert_eq!(back.public_jwk_minimal(), k.public_jwk_minimal());
        }
        assert!(SigningKey::from_pem(Algorithm::ES256, "garbage").is_err());
        assert!(
            SigningKey::from_pem(
                Algorithm::ES256,
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
            )
            .is_err()
        );
    }

    #[test]
    fn private_jwk_import() {
        use base64::Engine as _;
        let b = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        // EC: export the public part of a generated key, and take d from its
        // PKCS#8 encoding (the last 32 bytes of the private key octet string
        // are found by re-importing through the JWK path and comparing).
        let k = SigningKey::generate(Algorithm::ES256).unwrap();
        let mut jwk = k.public_jwk_minimal().unwrap();
        jwk["d"] = Value::String(b(&[1u8; 32]));
        // A d that does not match x/y is rejected.
        assert!(SigningKey::from_jwk(&jwk, None).is_err());
        // Missing members are named.
        let e = SigningKey::from_jwk(&json!({"kty": "EC", "crv": "P-256"}), None).unwrap_err();
        assert!(
            e.to_string().contains("`x`") || e.to_string().contains("`d`"),
            "{e}"
        );
        assert!(SigningKey::from_jwk(&json!({"kty": "oct", "k": "AAAA"}), None).is_err());
    }

    #[test]
    fn hmac_cannot_be_generated_or_exported() {
        assert!(SigningKey::generate(Algorithm::HS256).is_err());
        let k = SigningKey::hmac(Algorithm::HS256, b"secret").unwrap();
        assert!(k.public_jwk().is_none());
        assert_eq!(k.sign(b"x").unwrap().len(), 32);
    }
}
