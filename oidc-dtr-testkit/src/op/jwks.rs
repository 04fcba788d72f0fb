//! The JWKS endpoint's document and the OP's signing keys.

use super::*;

impl OpState {
    pub(crate) fn jwks(&self) -> Value {
        let now = self.now();
        let keys: Vec<Value> = std::iter::once(&self.key)
            .chain(
                self.old_keys
                    .iter()
                    .filter(|(_, retire_at)| retire_at.is_none_or(|t| now < t))
                    .map(|(k, _)| k),
            )
            .filter_map(SigningKey::public_jwk)
            .collect();
        json!({ "keys": keys })
    }
}

/// A fresh key with a random `kid`.
pub(crate) fn new_key(alg: Algorithm) -> Result<SigningKey, KeyError> {
    let mut kid = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut kid);
    Ok(SigningKey::generate(alg)?.with_kid(b64(&kid)))
}
