//! Encryption at rest: the [`Sealer`] hook and an AES-256-GCM implementation.
//!
//! A record holds every secret of an authentication (the `deferred_auth_id`,
//! PKCE verifier, nonce, DPoP private key, notification-token hash) and, once
//! it succeeded, the tokens. A [`FileStore`](super::FileStore) opened with a
//! sealer seals each serialised record as a whole, so none of these is
//! readable in the file. The key stays with the application (a KMS, an
//! environment secret); the store only ever calls the hook.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroize;

use crate::error::StoreError;

/// Seals and opens stored values (authenticated encryption).
///
/// `aad` is data the ciphertext is bound to without containing it: the
/// store passes the record's key, so a sealed value copied under another
/// record's key fails to open. Implementations must authenticate it (an
/// AEAD does). Errors are [`StoreError::Sealing`] and must not contain the
/// plaintext or the key.
///
/// ```
/// use std::sync::Arc;
/// use oidc_dtr::error::StoreError;
/// use oidc_dtr::store::{AesGcmSealer, Sealer};
///
/// /// Logs every use of the key (a KMS-backed sealer would call out here).
/// struct Audited(AesGcmSealer);
///
/// impl Sealer for Audited {
///     fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
///         println!("seal");
///         self.0.seal(plaintext, aad)
///     }
///     fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
///         println!("open");
///         self.0.open(sealed, aad)
///     }
/// }
/// let sealer: Arc<dyn Sealer> = Arc::new(Audited(AesGcmSealer::new([7; 32])?));
/// // e.g. `FileStore::open_with_sealer(path, sealer)`
/// # let _ = sealer;
/// # Ok::<(), StoreError>(())
/// ```
pub trait Sealer: Send + Sync + 'static {
    /// Encrypts `plaintext`, bound to `aad`.
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Decrypts what [`seal`](Self::seal) produced with the same `aad`;
    /// fails on a wrong key, wrong `aad`, or any change to `sealed`.
    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError>;
}

/// AES-256-GCM (aws-lc-rs) with a random 96-bit nonce per seal.
///
/// Output: `nonce (12 bytes) || ciphertext || tag (16 bytes)`. Random
/// nonces are safe for about 2³² seals under one key; rotate the key well
/// before that (a store writes one seal per record change).
///
/// ```
/// use oidc_dtr::store::{AesGcmSealer, Sealer};
///
/// // In production: 32 random bytes from a secret manager, never in code.
/// let sealer = AesGcmSealer::new([7; 32])?;
/// let sealed = sealer.seal(b"record", b"record-key")?;
/// assert_eq!(sealer.open(&sealed, b"record-key")?, b"record");
/// // Bound to its record: another key's `aad` does not open it.
/// assert!(sealer.open(&sealed, b"another-record").is_err());
/// # Ok::<(), oidc_dtr::error::StoreError>(())
/// ```
pub struct AesGcmSealer {
    key: LessSafeKey,
}

impl fmt::Debug for AesGcmSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesGcmSealer([redacted])")
    }
}

/// Bytes a seal adds to the plaintext.
const OVERHEAD: usize = NONCE_LEN + 16;

impl AesGcmSealer {
    /// A sealer with this 256-bit key (from a KMS or a secret store; 32
    /// random bytes). The array is wiped once the key is loaded.
    pub fn new(mut key: [u8; 32]) -> Result<Self, StoreError> {
        let unbound = UnboundKey::new(&AES_256_GCM, &key);
        key.zeroize();
        let unbound =
            unbound.map_err(|_| StoreError::Sealing("could not load the AES-256 key".into()))?;
        Ok(AesGcmSealer {
            key: LessSafeKey::new(unbound),
        })
    }
}

impl Sealer for AesGcmSealer {
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| StoreError::Sealing("the random number generator failed".into()))?;
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| StoreError::Sealing("encryption failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < OVERHEAD {
            return Err(StoreError::Sealing(
                "a sealed value is too short (not encrypted, or truncated)".into(),
            ));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| StoreError::Sealing("bad nonce".into()))?;
        let mut buf = ciphertext.to_vec();
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| {
                StoreError::Sealing(
                    "a sealed value does not open: wrong key, or the value was altered".into(),
                )
            })?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let s = AesGcmSealer::new([7u8; 32]).unwrap();
        let sealed = s.seal(b"access-token-xyz", b"key-1").unwrap();
        assert_eq!(sealed.len(), 16 + OVERHEAD);
        assert!(!sealed.windows(16).any(|w| w == b"access-token-xyz"));
        assert_eq!(s.open(&sealed, b"key-1").unwrap(), b"access-token-xyz");
        // Fresh nonce each time.
        assert_ne!(s.seal(b"access-token-xyz", b"key-1").unwrap(), sealed);
        // Another record's key, another key, a flipped bit, a short value.
        assert!(matches!(
            s.open(&sealed, b"key-2"),
            Err(StoreError::Sealing(_))
        ));
        let other = AesGcmSealer::new([8u8; 32]).unwrap();
        assert!(matches!(
            other.open(&sealed, b"key-1"),
            Err(StoreError::Sealing(_))
        ));
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(s.open(&bad, b"key-1").is_err());
        assert!(s.open(&sealed[..10], b"key-1").is_err());
        assert!(s.open(&[], b"key-1").is_err());
        assert_eq!(format!("{s:?}"), "AesGcmSealer([redacted])");
    }
}
