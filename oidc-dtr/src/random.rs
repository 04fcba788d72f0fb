//! The injectable source of randomness behind `state`, `nonce`, PKCE
//! verifiers, notification tokens, DPoP `jti`s and backoff jitter.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The random source failed to produce bytes.
///
/// With the operating system's generator this does not happen in practice;
/// it is an error rather than a panic so that no code path can abort.
///
/// ```
/// use oidc_dtr::random::{RandomError, RandomSource, SystemRandom};
///
/// let mut nonce = [0u8; 32];
/// match SystemRandom.fill(&mut nonce) {
///     Ok(()) => {}
///     Err(RandomError) => eprintln!("no randomness: refuse to go on"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the random number generator failed")]
#[allow(clippy::exhaustive_structs)] // a unit type, complete by nature
pub struct RandomError;

/// A cryptographically secure random source.
///
/// The default, [`SystemRandom`], is the operating system's generator via
/// aws-lc-rs. Tests may inject a deterministic source; production code never
/// should.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use oidc_dtr::DtrClient;
/// use oidc_dtr::random::{RandomError, RandomSource, SystemRandom};
///
/// /// Counts how often the SDK draws randomness (still from the OS).
/// #[derive(Default)]
/// struct Counting(AtomicUsize);
///
/// impl RandomSource for Counting {
///     fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         SystemRandom.fill(dest)
///     }
/// }
/// let rng = Arc::new(Counting::default());
/// let builder = DtrClient::builder().random(rng.clone());
/// # let _ = builder;
/// ```
pub trait RandomSource: Send + Sync + 'static {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError>;
}

/// The operating system's CSPRNG (through aws-lc-rs).
///
/// ```
/// use oidc_dtr::random::{RandomSource, SystemRandom};
///
/// let mut key = [0u8; 32];
/// SystemRandom.fill(&mut key)?;
/// assert_ne!(key, [0u8; 32]);
/// # Ok::<(), oidc_dtr::random::RandomError>(())
/// ```
#[derive(Clone, Copy, Default)]
#[allow(clippy::exhaustive_structs)] // a unit type, complete by nature
pub struct SystemRandom;

impl fmt::Debug for SystemRandom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SystemRandom")
    }
}

impl RandomSource for SystemRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        aws_lc_rs::rand::fill(dest).map_err(|_| RandomError)
    }
}

/// `n_bytes` random bytes, base64url-encoded without padding.
pub(crate) fn random_b64url(rng: &dyn RandomSource, n_bytes: usize) -> Result<String, RandomError> {
    let mut buf = vec![0u8; n_bytes];
    rng.fill(&mut buf)?;
    let s = URL_SAFE_NO_PAD.encode(&buf);
    zeroize::Zeroize::zeroize(&mut buf);
    Ok(s)
}

/// A uniformly random `u64` in `0..=max` (for full-jitter backoff).
pub(crate) fn random_u64_inclusive(rng: &dyn RandomSource, max: u64) -> Result<u64, RandomError> {
    if max == 0 {
        return Ok(0);
    }
    let mut buf = [0u8; 8];
    rng.fill(&mut buf)?;
    let v = u64::from_le_bytes(buf);
    // The modulo bias is at most max/2^64: irrelevant for jitter.
    Ok(if max == u64::MAX { v } else { v % (max + 1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64url_has_expected_length_and_alphabet() {
        let s = random_b64url(&SystemRandom, 32).unwrap();
        assert_eq!(s.len(), 43);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(s, random_b64url(&SystemRandom, 32).unwrap());
    }

    #[test]
    fn bounded_u64_stays_in_range() {
        for max in [0u64, 1, 7, 1000, u64::MAX] {
            for _ in 0..200 {
                assert!(random_u64_inclusive(&SystemRandom, max).unwrap() <= max);
            }
        }
    }
}
