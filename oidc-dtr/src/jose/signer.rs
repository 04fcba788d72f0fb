//! Signing by a key that may live outside the process (a KMS, an HSM, a
//! signing service): the [`Signer`] trait.
//!
//! The SDK builds every JWS it sends as data (header and claims, then the
//! signing input `base64url(header) "." base64url(claims)`), hands the
//! signing input to a [`Signer`], awaits the signature and assembles the
//! compact JWS. [`SigningKey`] and [`DpopKey`] implement the trait with a
//! future that is ready at once; an implementation of your own can call a
//! remote service.
//!
//! Pure: this module only defines the signature of the operation; it
//! neither spawns nor sleeps.

pub use crate::error::SignerError;
use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

use super::dpop::DpopKey;
use super::sign::SigningKey;
use super::{Algorithm, b64};

/// The future a [`Signer`] returns: the signature of the signing input.
pub type SignFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, SignerError>> + Send + 'a>>;

/// Something that signs JWS signing inputs with one key, possibly
/// remotely.
///
/// Used for `private_key_jwt` client assertions
/// ([`ClientAuth::private_key_jwt_signer`](crate::ClientAuth::private_key_jwt_signer)),
/// signed request objects
/// ([`DtrClientBuilder::request_object_signer`](crate::DtrClientBuilder::request_object_signer))
/// and DPoP proofs
/// ([`DpopConfig::signer`](crate::client::DpopConfig::signer) and
/// [`previous_signer`](crate::client::DpopConfig::previous_signer)). A DPoP
/// signer must give its public key ([`public_jwk`](Self::public_jwk): a
/// proof carries it in its header, and records name the key by its RFC 7638
/// thumbprint); its `key_id` is not used (a proof has no `kid`).
///
/// `sign` is given the exact JWS signing input (RFC 7515 §5.1: the ASCII
/// of `base64url(header) "." base64url(payload)`) and returns the raw
/// signature in JWS form: for ECDSA the fixed-size `R || S` concatenation
/// (RFC 7518 §3.4), *not* DER (convert a KMS's DER output); for RSA and
/// Ed25519 the plain signature bytes.
///
/// A failure is a [`SignerError`]; say whether it may go away
/// ([`SignerError::retryable`]): while an authentication is being polled,
/// a retryable failure is retried with backoff like a network failure, and
/// the authentication is not ended.
///
/// ```
/// use std::sync::Arc;
/// use oidc_dtr::jose::{Algorithm, Signer, SigningKey};
///
/// let key = SigningKey::generate(Algorithm::ES256)?.with_kid("k1");
/// let signer: Arc<dyn Signer> = Arc::new(key);
/// assert_eq!(signer.algorithm(), Algorithm::ES256);
/// assert_eq!(signer.key_id(), Some("k1"));
/// # Ok::<(), oidc_dtr::jose::KeyError>(())
/// ```
pub trait Signer: Send + Sync + 'static {
    /// The JWS algorithm of the key (the header's `alg`).
    fn algorithm(&self) -> Algorithm;

    /// The `kid` to put in the header, if any.
    fn key_id(&self) -> Option<&str>;

    /// The public key as a JWK, when it is known (a DPoP proof carries it
    /// in its header: required of a DPoP signer); `None` otherwise. Only
    /// its public members are used.
    fn public_jwk(&self) -> Option<Value>;

    /// Signs the JWS signing input.
    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> SignFuture<'a>;
}

impl Signer for SigningKey {
    fn algorithm(&self) -> Algorithm {
        SigningKey::algorithm(self)
    }

    fn key_id(&self) -> Option<&str> {
        self.kid()
    }

    fn public_jwk(&self) -> Option<Value> {
        SigningKey::public_jwk(self)
    }

    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> SignFuture<'a> {
        let r = SigningKey::sign(self, signing_input)
            .map_err(|e| SignerError::permanent(e.to_string()));
        Box::pin(std::future::ready(r))
    }
}

impl Signer for DpopKey {
    fn algorithm(&self) -> Algorithm {
        DpopKey::algorithm(self)
    }

    /// A DPoP proof names its key by the `jwk` header, never by `kid`.
    fn key_id(&self) -> Option<&str> {
        None
    }

    fn public_jwk(&self) -> Option<Value> {
        Some(DpopKey::public_jwk(self).clone())
    }

    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> SignFuture<'a> {
        let r = self
            .signing_key()
            .sign(signing_input)
            .map_err(|e| SignerError::permanent(e.to_string()));
        Box::pin(std::future::ready(r))
    }
}

/// A JWS waiting for its signature: the signing input, built from the
/// header (with `alg` and `kid` of the signer) and the claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnsignedJws {
    signing_input: String,
}

impl UnsignedJws {
    /// The header gets `alg`, `kid` (when the signer has one) and every
    /// member of `header` (e.g. `typ`); the payload is `claims`.
    pub(crate) fn new(
        alg: Algorithm,
        kid: Option<&str>,
        header: Map<String, Value>,
        claims: &Value,
    ) -> Self {
        let mut h = Map::new();
        h.insert("alg".into(), Value::String(alg.as_str().into()));
        if let Some(kid) = kid {
            h.insert("kid".into(), Value::String(kid.to_owned()));
        }
        h.extend(header);
        UnsignedJws {
            signing_input: format!(
                "{}.{}",
                b64(Value::Object(h).to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            ),
        }
    }

    /// [`new`](Self::new) with the algorithm and `kid` of `signer`.
    pub(crate) fn for_signer(
        signer: &dyn Signer,
        header: Map<String, Value>,
        claims: &Value,
    ) -> Self {
        Self::new(signer.algorithm(), signer.key_id(), header, claims)
    }

    /// The bytes to sign.
    pub(crate) fn signing_input(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    /// The compact JWS with `signature`.
    pub(crate) fn complete(self, signature: &[u8]) -> String {
        let mut s = self.signing_input;
        s.push('.');
        s.push_str(&b64(signature));
        s
    }

    /// Signs with `signer` (awaiting it: a remote signer takes its time).
    pub(crate) async fn sign_with(self, signer: &dyn Signer) -> Result<String, SignerError> {
        let signature = signer.sign(self.signing_input()).await?;
        Ok(self.complete(&signature))
    }

    /// Signs with `signer` when its future is ready at once (the built-in
    /// keys); `None` when the signer would have to wait.
    pub(crate) fn sign_now(self, signer: &dyn Signer) -> Option<Result<String, SignerError>> {
        let mut fut = signer.sign(self.signing_input());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => {
                drop(fut);
                Some(r.map(|sig| self.complete(&sig)))
            }
            std::task::Poll::Pending => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unsigned_jws_matches_the_synchronous_signing() {
        let key = SigningKey::generate(Algorithm::EdDSA)
            .unwrap()
            .with_kid("k1");
        let mut header = Map::new();
        header.insert("typ".into(), json!("JWT"));
        let claims = json!({"iss": "c1"});
        // Ed25519 is deterministic: both paths give the same JWS.
        let direct = key.sign_jwt(header.clone(), &claims).unwrap();
        let via_trait = UnsignedJws::for_signer(&key, header, &claims)
            .sign_now(&key)
            .unwrap()
            .unwrap();
        assert_eq!(direct, via_trait);
        let h: Value = serde_json::from_slice(
            &crate::jose::b64_decode(via_trait.split('.').next().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(h["alg"], "EdDSA");
        assert_eq!(h["kid"], "k1");
        assert_eq!(h["typ"], "JWT");
    }

    #[test]
    fn dpop_key_signs_without_kid_and_shows_its_jwk() {
        let k = DpopKey::generate(Algorithm::ES256).unwrap();
        assert_eq!(Signer::key_id(&k), None);
        assert_eq!(Signer::public_jwk(&k).as_ref(), Some(k.public_jwk()));
        let jws = UnsignedJws::for_signer(&k, Map::new(), &json!({}))
            .sign_now(&k)
            .unwrap()
            .unwrap();
        assert_eq!(jws.split('.').count(), 3);
    }

    struct Never;
    impl Signer for Never {
        fn algorithm(&self) -> Algorithm {
            Algorithm::ES256
        }
        fn key_id(&self) -> Option<&str> {
            None
        }
        fn public_jwk(&self) -> Option<Value> {
            None
        }
        fn sign<'a>(&'a self, _: &'a [u8]) -> SignFuture<'a> {
            Box::pin(std::future::pending())
        }
    }

    #[test]
    fn a_waiting_signer_is_not_signed_now() {
        let u = UnsignedJws::for_signer(&Never, Map::new(), &json!({}));
        assert!(u.sign_now(&Never).is_none());
        let e = SignerError::retryable("kms timeout");
        assert!(e.retryable);
        assert_eq!(e.to_string(), "the signer failed (retryable): kms timeout");
    }
}
