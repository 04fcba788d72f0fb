//! Newtypes for the secrets of the flow.
//!
//! Every value that would let someone impersonate the RP or the user (client
//! secrets, codes, `deferred_auth_id`s, tokens, notification tokens, PKCE
//! verifiers, `state`, `nonce`) lives in one of these types. They:
//!
//! - never print their value: `Debug` shows a [`Fingerprint`] (the first
//!   32 bits of a SHA-256, enough to correlate log lines, useless to an
//!   attacker for high-entropy values) or, for low-entropy secrets such as a
//!   client secret, only `[redacted]`; there is no `Display`;
//! - compare in constant time (`PartialEq`), so an equality check against
//!   attacker-supplied input leaks no prefix length;
//! - are wiped from memory when dropped (`zeroize`);
//! - serialise transparently, because the SDK must persist them: treat every
//!   serialised form as secret at rest.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use zeroize::{Zeroize, Zeroizing};

/// A short, non-reversible tag for a secret: the first four bytes of its
/// SHA-256, shown as eight hex digits. Safe to log for high-entropy values.
///
/// ```
/// use oidc_dtr::DeferredId;
/// use oidc_dtr::secret::Fingerprint;
///
/// let id = DeferredId::new("f4oirNBUlM-abcdef");
/// // Safe to log: four bytes of the SHA-256, not the value.
/// assert_eq!(id.fingerprint(), Fingerprint::of(b"f4oirNBUlM-abcdef"));
/// println!("polling {:?}", id.fingerprint());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 4]);

impl Fingerprint {
    /// The fingerprint of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        let mut out = [0u8; 4];
        out.copy_from_slice(&d.as_ref()[..4]);
        Fingerprint(out)
    }

    /// The fingerprint whose digest starts with these four bytes (a store
    /// that keys records by the SHA-256 of their id names them with it).
    pub(crate) const fn from_digest_prefix(prefix: [u8; 4]) -> Self {
        Fingerprint(prefix)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{self}")
    }
}

/// Constant-time equality of two byte strings (the length is not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

macro_rules! secret_string {
    ($(#[$meta:meta])* $name:ident, $debug:ident) => {
        $(#[$meta])*
        #[derive(Clone, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value.
            pub fn new(value: impl Into<String>) -> Self {
                $name(value.into())
            }

            /// The secret value itself. Every call site is a place where the
            /// secret leaves its wrapper: keep them few.
            pub fn secret(&self) -> &str {
                &self.0
            }

            /// A log-safe tag for this value (see [`Fingerprint`]).
            pub fn fingerprint(&self) -> Fingerprint {
                Fingerprint::of(self.0.as_bytes())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                secret_string!(@debug $debug, self, f, stringify!($name))
            }
        }

        impl PartialEq for $name {
            /// Constant-time comparison.
            fn eq(&self, other: &Self) -> bool {
                ct_eq(self.0.as_bytes(), other.0.as_bytes())
            }
        }

        impl Eq for $name {}

        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.0.hash(state)
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.0.zeroize();
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }
    };
    (@debug fingerprint, $self:ident, $f:ident, $n:expr) => {
        write!($f, "{}({:?})", $n, $self.fingerprint())
    };
    (@debug redacted, $self:ident, $f:ident, $n:expr) => {
        write!($f, "{}([redacted])", $n)
    };
}

secret_string!(
    /// The client's shared secret (`client_secret_basic`, `client_secret_post`,
    /// `client_secret_jwt`). Its `Debug` shows nothing: client secrets may have
    /// low entropy, so not even a fingerprint is printed.
    ///
    /// ```
    /// use oidc_dtr::ClientAuth;
    /// use oidc_dtr::secret::ClientSecret;
    ///
    /// let secret = ClientSecret::new("s3cret-from-the-vault");
    /// assert_eq!(format!("{secret:?}"), "ClientSecret([redacted])");
    /// let auth = ClientAuth::ClientSecretBasic(secret);
    /// assert_eq!(auth.method_name(), "client_secret_basic");
    /// ```
    ClientSecret,
    redacted
);
secret_string!(
    /// The `state` value that binds a redirect to the browser session that
    /// started it.
    State,
    fingerprint
);
secret_string!(
    /// The `nonce` sent in the authentication request; every ID token of the
    /// flow (interim and final) must carry it.
    Nonce,
    fingerprint
);
secret_string!(
    /// The PKCE `code_verifier` (RFC 7636). Only its S256 challenge leaves the RP
    /// in the authorization request.
    PkceVerifier,
    fingerprint
);
secret_string!(
    /// The `deferred_code` from the Authentication Request Acknowledgment:
    /// single use, exchanged once at the token endpoint, never used to poll.
    DeferredCode,
    fingerprint
);
secret_string!(
    /// A plain authorization `code`, returned instead of a `deferred_code` when
    /// `deferred_code code` was requested and the OP decided not to defer.
    AuthorizationCode,
    fingerprint
);
secret_string!(
    /// The identifier the OP gave one deferred authentication: the
    /// `deferred_auth_id` of the OpenID Connect profile, or the
    /// `deferral_code` of the IETF profile. It is the key for polls, pings,
    /// cancellation, [`DtrClient::watch`](crate::DtrClient::watch) and the
    /// store. Whoever holds it (and the client credentials) can redeem the
    /// tokens, so it is treated as a secret and logged only as a
    /// fingerprint.
    ///
    /// ```
    /// use oidc_dtr::DeferredId;
    ///
    /// let id = DeferredId::new("f4oirNBUlM-abcdef");
    /// assert_eq!(id.secret(), "f4oirNBUlM-abcdef");
    /// // Debug never shows the value, only a fingerprint.
    /// assert!(!format!("{id:?}").contains("f4oirNBUlM"));
    /// ```
    DeferredId,
    fingerprint
);
secret_string!(
    /// The `deferred_notification_token`: a bearer secret the RP chooses at the
    /// exchange and the OP presents on the Ping Callback.
    DeferredNotificationToken,
    fingerprint
);
secret_string!(
    /// An OAuth access token.
    AccessToken,
    fingerprint
);
secret_string!(
    /// An OAuth refresh token.
    RefreshToken,
    fingerprint
);

/// A compact-serialised JWT as received (an ID token or interim ID token).
/// ID tokens carry personal data, so the raw form is kept out of `Debug`.
///
/// Like the other secret types: no `Display`, a fingerprint as `Debug`,
/// constant-time equality, transparent serialisation, wiped from memory
/// when dropped. Unlike them, clones share one buffer (the validated
/// [`IdToken`](crate::tokens::IdToken) keeps the token it was given without copying
/// it), which is wiped once, when the last clone is dropped.
#[derive(Clone)]
pub struct RawJwt(Arc<Zeroizing<String>>);

impl RawJwt {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        RawJwt(Arc::new(Zeroizing::new(value.into())))
    }

    /// The secret value itself. Every call site is a place where the
    /// secret leaves its wrapper: keep them few.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// A log-safe tag for this value (see [`Fingerprint`]).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.0.as_bytes())
    }
}

impl fmt::Debug for RawJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawJwt({:?})", self.fingerprint())
    }
}

impl PartialEq for RawJwt {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        ct_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for RawJwt {}

impl Hash for RawJwt {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.secret().hash(state)
    }
}

impl From<String> for RawJwt {
    fn from(s: String) -> Self {
        RawJwt::new(s)
    }
}

impl From<&str> for RawJwt {
    fn from(s: &str) -> Self {
        RawJwt::new(s)
    }
}

impl serde::Serialize for RawJwt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.secret())
    }
}

impl<'de> serde::Deserialize<'de> for RawJwt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(RawJwt::new)
    }
}

/// The SHA-256 of a secret, kept instead of the secret where the SDK only
/// ever needs to *check* a presented value (the `deferred_notification_token`
/// is stored this way). Serialised as base64url.
#[derive(Clone)]
pub struct SecretHash([u8; 32]);

impl PartialEq for SecretHash {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl Eq for SecretHash {}

impl SecretHash {
    /// The hash of `secret`.
    pub fn of(secret: &[u8]) -> Self {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        SecretHash(out)
    }

    /// Whether `presented` hashes to this value. Hashing first and comparing
    /// the digests in constant time reveals nothing about the stored secret,
    /// not even its length.
    pub fn matches(&self, presented: &[u8]) -> bool {
        ct_eq(&Self::of(presented).0, &self.0)
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({:?})", Fingerprint::of(&self.0))
    }
}

impl serde::Serialize for SecretHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for SecretHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let s = String::deserialize(d)?;
        let v = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)?;
        let arr: [u8; 32] = v
            .try_into()
            .map_err(|_| serde::de::Error::custom("a SecretHash is 32 bytes"))?;
        Ok(SecretHash(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = ClientSecret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "ClientSecret([redacted])");
        let id = DeferredId::new("f4oirNBUlM-abcdef");
        let dbg = format!("{id:?}");
        assert!(!dbg.contains("f4oirNBUlM"), "{dbg}");
        assert!(dbg.starts_with("DeferredId(#"), "{dbg}");
        assert_eq!(format!("{:?}", id.fingerprint()).len(), 9);
    }

    #[test]
    fn equality_and_hash_follow_the_value() {
        use std::collections::HashSet;
        let a = DeferredId::new("abc");
        let b = DeferredId::new("abc");
        let c = DeferredId::new("abd");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, DeferredId::new("ab"));
        let set: HashSet<_> = [a, b, c].into_iter().collect();
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn serialises_transparently() {
        let n = Nonce::new("n-0S6_WzA2Mj");
        let j = serde_json::to_string(&n).unwrap();
        assert_eq!(j, "\"n-0S6_WzA2Mj\"");
        assert_eq!(serde_json::from_str::<Nonce>(&j).unwrap(), n);
    }

    #[test]
    fn secret_hash_matches_only_the_secret() {
        let h = SecretHash::of(b"token-123");
        assert!(h.matches(b"token-123"));
        assert!(!h.matches(b"token-124"));
        assert!(!h.matches(b""));
        let j = serde_json::to_string(&h).unwrap();
        assert!(!j.contains("token"));
        assert_eq!(serde_json::from_str::<SecretHash>(&j).unwrap(), h);
        assert!(serde_json::from_str::<SecretHash>("\"AAAA\"").is_err());
    }

    #[test]
    fn raw_jwt_behaves_like_the_other_secrets() {
        let t = RawJwt::new("eyJhbGciOiJSUzI1NiJ9.e30.c2ln");
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("eyJ"), "{dbg}");
        assert!(dbg.starts_with("RawJwt(#"), "{dbg}");
        let c = t.clone();
        assert_eq!(c, t);
        assert_eq!(c.secret(), t.secret());
        // Clones share the buffer: no copy of the token.
        assert!(std::ptr::eq(c.secret().as_ptr(), t.secret().as_ptr()));
        assert_ne!(t, RawJwt::from("eyJhbGciOiJSUzI1NiJ9.e30.c2lm"));
        let j = serde_json::to_string(&t).unwrap();
        assert_eq!(j, "\"eyJhbGciOiJSUzI1NiJ9.e30.c2ln\"");
        assert_eq!(serde_json::from_str::<RawJwt>(&j).unwrap(), t);
    }

    #[test]
    fn fingerprint_is_stable() {
        // SHA-256("abc") starts with ba7816bf.
        assert_eq!(Fingerprint::of(b"abc").to_string(), "ba7816bf");
    }
}
