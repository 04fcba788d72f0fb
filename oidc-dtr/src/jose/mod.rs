//! Keys: signing keys for client assertions, DPoP keys, JWK Sets.
//!
//! The SDK signs two things itself: `private_key_jwt` client assertions
//! ([`SigningKey`], given to [`ClientAuth`](crate::ClientAuth)) and DPoP
//! proofs ([`DpopKey`], one per authentication by default, generated for
//! you). It verifies ID tokens against the OP's JWK Set ([`KeySet`]), and
//! [`jwk_thumbprint`] computes the RFC 7638 thumbprint of any public JWK,
//! e.g. to check a DPoP-bound token's `cnf.jkt`.
//!
//! A key that lives outside the process (a KMS, an HSM) signs through the
//! [`Signer`] trait, which [`SigningKey`] and [`DpopKey`] implement too:
//! see [`ClientAuth::private_key_jwt_signer`](crate::ClientAuth::private_key_jwt_signer),
//! [`DtrClientBuilder::request_object_signer`](crate::DtrClientBuilder::request_object_signer)
//! and, for DPoP proofs, [`DpopConfig::signer`](crate::client::DpopConfig::signer).
//!
//! ID tokens are verified with asymmetric algorithms only ([`Algorithm`]:
//! RS, PS, ES and EdDSA); `none` does not exist here, and HMAC keys serve
//! only for `client_secret_jwt` assertions. Everything runs on aws-lc-rs;
//! keys are parsed once and reused.
//!
//! ```
//! use oidc_dtr::jose::{Algorithm, SigningKey};
//!
//! let key = SigningKey::generate(Algorithm::ES256)?.with_kid("rp-2026");
//! let jwk = key.public_jwk().expect("an asymmetric key has a public JWK");
//! assert_eq!(jwk["kty"], "EC");
//! assert_eq!(jwk["kid"], "rp-2026");
//! # Ok::<(), oidc_dtr::jose::KeyError>(())
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

pub(crate) mod dpop;
pub(crate) mod jwk;
pub(crate) mod jws;
pub(crate) mod sign;
pub(crate) mod signer;

pub use dpop::{DpopKey, jwk_thumbprint};
pub use jwk::KeySet;
pub use sign::{KeyError, SigningKey};
pub use signer::{SignFuture, Signer, SignerError};

/// A JWS algorithm (RFC 7518 §3, RFC 8037). `none` is deliberately absent.
///
/// ```
/// use oidc_dtr::jose::Algorithm;
///
/// assert_eq!(Algorithm::parse("PS256"), Some(Algorithm::PS256));
/// assert_eq!(Algorithm::parse("none"), None); // never accepted
/// assert_eq!(Algorithm::ES256.as_str(), "ES256");
/// assert!(Algorithm::HS256.is_hmac());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC SHA-256.
    HS256,
    /// HMAC SHA-384.
    HS384,
    /// HMAC SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// RSASSA-PSS SHA-256.
    PS256,
    /// RSASSA-PSS SHA-384.
    PS384,
    /// RSASSA-PSS SHA-512.
    PS512,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// The `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Parses an `alg` value; `none` and unknown values give `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "EdDSA" => Algorithm::EdDSA,
            _ => return None,
        })
    }

    /// Whether this is an HMAC (symmetric) algorithm.
    pub fn is_hmac(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }

    /// Every algorithm this crate knows, in a fixed order.
    pub const ALL: [Algorithm; 12] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// The hash used by the algorithm, which also defines `at_hash` (OIDC
    /// Core §3.1.3.6) and `ath`-style digests.
    pub(crate) fn digest(self) -> &'static aws_lc_rs::digest::Algorithm {
        use aws_lc_rs::digest::{SHA256, SHA384, SHA512};
        match self {
            Algorithm::HS256 | Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => &SHA256,
            Algorithm::HS384 | Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => &SHA384,
            // EdDSA: OIDC uses SHA-512 for Ed25519 (per the OpenID errata).
            Algorithm::HS512 | Algorithm::RS512 | Algorithm::PS512 | Algorithm::EdDSA => &SHA512,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of algorithms, as a bit set (the allow-list is checked on every
/// token, so it costs one AND).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AlgSet(u16);

impl AlgSet {
    pub(crate) fn insert(&mut self, alg: Algorithm) {
        self.0 |= alg.bit();
    }

    pub(crate) fn contains(self, alg: Algorithm) -> bool {
        self.0 & alg.bit() != 0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Algorithm> for AlgSet {
    fn from_iter<I: IntoIterator<Item = Algorithm>>(iter: I) -> Self {
        let mut s = AlgSet::default();
        for a in iter {
            s.insert(a);
        }
        s
    }
}

impl fmt::Debug for AlgSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// base64url without padding.
pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.as_bytes()).ok()
}

/// Whether `claimed` (an `at_hash` or `c_hash`) is the left half of the
/// hash of `value`, base64url-encoded. The claim is decoded rather than
/// the half hash encoded: the strict decoder gives each byte string one
/// encoding only (no padding, zero trailing bits), so the two ways agree
/// on every input, and this one needs no buffer for the text. The bytes
/// are compared in constant time. This runs for every validated ID token:
/// no heap.
pub(crate) fn half_hash_matches(alg: Algorithm, value: &str, claimed: &str) -> bool {
    let d = aws_lc_rs::digest::digest(alg.digest(), value.as_bytes());
    let half = &d.as_ref()[..d.as_ref().len() / 2];
    // Half a SHA-512 at most.
    let mut decoded = [0u8; 32];
    jws::b64_decoded_len(claimed.len())
        .filter(|&n| n == half.len())
        .and_then(|n| jws::b64_decode_into(claimed.as_bytes(), &mut decoded[..n]))
        .is_some_and(|()| crate::secret::ct_eq(&decoded[..half.len()], half))
}

/// The left half of the hash of `value`, base64url: the `at_hash` /
/// `c_hash` of `value`.
#[cfg(test)]
pub(crate) fn half_hash(alg: Algorithm, value: &str) -> String {
    let d = aws_lc_rs::digest::digest(alg.digest(), value.as_bytes());
    let bytes = d.as_ref();
    b64(&bytes[..bytes.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_round_trip_and_no_none() {
        for a in [
            Algorithm::HS256,
            Algorithm::RS256,
            Algorithm::PS384,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ] {
            assert_eq!(Algorithm::parse(a.as_str()), Some(a));
        }
        assert_eq!(Algorithm::parse("none"), None);
        assert_eq!(Algorithm::parse("rs256"), None);
    }

    #[test]
    fn alg_set() {
        let s: AlgSet = [Algorithm::RS256, Algorithm::EdDSA].into_iter().collect();
        assert!(s.contains(Algorithm::RS256) && s.contains(Algorithm::EdDSA));
        assert!(!s.contains(Algorithm::HS256));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [Algorithm::RS256, Algorithm::EdDSA]
        );
        assert!(AlgSet::default().is_empty());
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.as_str()), Some(a));
        }
    }

    #[test]
    fn at_hash_is_left_half_of_sha256() {
        // Vector computed independently with Python's hashlib:
        // b64url(sha256(b"jHkWEdUXMU1BwAsC4vtUsZwnNHy1Pr3X")[:16]).
        let h = half_hash(Algorithm::RS256, "jHkWEdUXMU1BwAsC4vtUsZwnNHy1Pr3X");
        assert_eq!(h, "tIRlbE0W-qLwlxCKmfViHQ");
        assert_eq!(half_hash(Algorithm::ES384, "x").len(), 32);
    }
}
