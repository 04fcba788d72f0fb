//! ID token validation (OpenID Connect Core §3.1.3.7, with the DTR rules:
//! interim and final ID tokens are validated alike, the final one against
//! the request's `nonce`, `max_age` and the interim `sub`).
//!
//! The checks, in order; each failure is its own
//! [`ValidationError`] variant:
//!
//! 1. compact JWS with three parts (a JWE is refused), no `crit` header, a
//!    `typ` (if any) that is an ID token's;
//! 2. `alg` in the allow-list: the configured algorithms (default `RS256`)
//!    ∩ the OP's `id_token_signing_alg_values_supported`; never `none`; HMAC
//!    only when configured, with the client secret as key;
//! 3. the key: by `kid`, or the JWK Set's only key for `alg` when the token
//!    has no `kid` (an unknown `kid` refreshes the JWK Set once, see
//!    [`jwks`](super::jwks));
//! 4. the signature;
//! 5. `iss` equals the issuer exactly;
//! 6. `aud` contains the client id, and every other audience is trusted;
//! 7. `azp` is present when there are several audiences, and equals the
//!    client id when present;
//! 8. `exp` (expired when now ≥ `exp` + leeway), `nbf` (now < `nbf` −
//!    leeway), `iat` not in the future (beyond its leeway): three leeways;
//! 9. `nonce` equals the request's (constant time);
//! 10. `at_hash` matches the access token, when both are present;
//! 11. with `max_age` requested, `auth_time` is present and no older than
//!     `max_age` *at the time of the request* (deferred authentications
//!     finish late, so "now" would fail them all);
//! 12. `sub` equals the interim ID token's, when one was received (the drafts
//!     leave this open; required by default).
//!
//! The signature is checked before any claim is looked at: a forged token
//! learns nothing from the error, and costs one header parse and one
//! signature check.

use std::fmt;
use std::time::Duration;

use crate::error::{ConfigError, ValidationError, sanitize};
use crate::jose::jwk::KeySet;
use crate::jose::jws::{self, Jws, JwsBuf};
use crate::jose::{AlgSet, Algorithm, half_hash_matches};
use crate::proto::claims::{self, ClaimsView, IdTokenClaims, Times};
use crate::proto::token::{IdToken, ValidationContext};
use crate::secret::{AccessToken, ClientSecret, RawJwt, ct_eq};
use crate::time::UnixTime;

/// How ID tokens are validated. Start from [`ValidationOptions::default`]
/// and adjust with the setters; hand it to
/// [`DtrClientBuilder::validation`](crate::DtrClientBuilder::validation).
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::{jose::Algorithm, tokens::ValidationOptions};
///
/// let options = ValidationOptions::default()
///     .algorithms([Algorithm::ES256, Algorithm::PS256])
///     .leeway(Duration::from_secs(30))
///     .trust_audience("https://api.example.com");
/// assert_ne!(options, ValidationOptions::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValidationOptions {
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) exp_leeway: Duration,
    pub(crate) nbf_leeway: Duration,
    pub(crate) iat_leeway: Duration,
    pub(crate) max_age_leeway: Duration,
    pub(crate) auth_time_leeway: Duration,
    pub(crate) max_iat_age: Duration,
    pub(crate) trusted_audiences: Vec<String>,
    pub(crate) require_same_subject: bool,
    pub(crate) enforce_max_age: bool,
}

impl Default for ValidationOptions {
    fn default() -> Self {
        ValidationOptions {
            algorithms: vec![Algorithm::RS256],
            exp_leeway: Duration::from_secs(60),
            nbf_leeway: Duration::from_secs(60),
            iat_leeway: Duration::from_secs(60),
            max_age_leeway: Duration::from_secs(60),
            auth_time_leeway: Duration::from_secs(60),
            max_iat_age: Duration::from_secs(24 * 3600),
            trusted_audiences: Vec::new(),
            require_same_subject: true,
            enforce_max_age: true,
        }
    }
}

impl ValidationOptions {
    /// The algorithms accepted. Default: `RS256`, the OpenID Connect
    /// default. The effective list is this ∩ the OP's
    /// `id_token_signing_alg_values_supported`. HMAC algorithms (`HS256`,
    /// ...) require a client secret, which becomes the key.
    #[must_use]
    pub fn algorithms(mut self, algs: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algs.into_iter().collect();
        self
    }

    /// The same leeway for `exp`, `nbf`, `iat` and `max_age` (each 60 s by
    /// default; see the setters of each).
    #[must_use]
    pub fn leeway(mut self, d: Duration) -> Self {
        self.exp_leeway = d;
        self.nbf_leeway = d;
        self.iat_leeway = d;
        self.max_age_leeway = d;
        self
    }

    /// The leeway for `exp`. Default: 60 s.
    #[must_use]
    pub fn exp_leeway(mut self, d: Duration) -> Self {
        self.exp_leeway = d;
        self
    }

    /// The leeway for `nbf`. Default: 60 s.
    #[must_use]
    pub fn nbf_leeway(mut self, d: Duration) -> Self {
        self.nbf_leeway = d;
        self
    }

    /// How far in the future `iat` may be. Default: 60 s.
    #[must_use]
    pub fn iat_leeway(mut self, d: Duration) -> Self {
        self.iat_leeway = d;
        self
    }

    /// The leeway for the `auth_time` + `max_age` check. Default: 60 s.
    #[must_use]
    pub fn max_age_leeway(mut self, d: Duration) -> Self {
        self.max_age_leeway = d;
        self
    }

    /// How far in the future `auth_time` may be, whenever it is present.
    /// Default: 60 s.
    #[must_use]
    pub fn auth_time_leeway(mut self, d: Duration) -> Self {
        self.auth_time_leeway = d;
        self
    }

    /// How far in the past `iat` may be: an ID token is validated when it
    /// arrives, so an old one is a replay or a broken OP clock. Default:
    /// 24 h.
    #[must_use]
    pub fn max_iat_age(mut self, d: Duration) -> Self {
        self.max_iat_age = d;
        self
    }

    /// Trusts another audience besides the client id in `aud` (none by
    /// default); call once per audience.
    #[must_use]
    pub fn trust_audience(mut self, aud: impl Into<String>) -> Self {
        self.trusted_audiences.push(aud.into());
        self
    }

    /// Whether the final ID token's `sub` must equal the interim ID
    /// token's (the drafts leave this open). Default: true.
    #[must_use]
    pub fn require_same_subject(mut self, yes: bool) -> Self {
        self.require_same_subject = yes;
        self
    }

    /// Whether `auth_time` is checked against a requested `max_age`. The
    /// reference is the time of the authentication request: a deferred
    /// authentication finishes late, so "now" would fail every `max_age`.
    /// Default: true.
    #[must_use]
    pub fn enforce_max_age(mut self, yes: bool) -> Self {
        self.enforce_max_age = yes;
        self
    }
}

/// Validates ID tokens for one client of one OP: the sans-IO core behind
/// [`DtrClient::validate_token_response`](crate::DtrClient::validate_token_response).
///
/// Use it directly with a [`KeySet`] you manage (tests, custom caches,
/// benchmarks); the client adds the JWKS cache.
///
/// ```
/// use oidc_dtr::jose::Algorithm;
/// use oidc_dtr::tokens::{IdTokenValidator, ValidationOptions};
///
/// let validator = IdTokenValidator::new(
///     "https://op.example",
///     "my-rp",
///     ValidationOptions::default().algorithms([Algorithm::ES256, Algorithm::PS256]),
///     Some(&["ES256".to_owned(), "RS256".to_owned()]), // what the OP publishes
///     None,                                            // no client secret: no HMAC
/// )?;
/// // Only what both sides allow.
/// assert_eq!(validator.allowed_algorithms(), [Algorithm::ES256]);
/// # Ok::<(), oidc_dtr::error::ConfigError>(())
/// ```
pub struct IdTokenValidator {
    issuer: String,
    client_id: String,
    allowed: AlgSet,
    hmac: Vec<(Algorithm, aws_lc_rs::hmac::Key)>,
    options: ValidationOptions,
}

impl fmt::Debug for IdTokenValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdTokenValidator")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("allowed", &self.allowed)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn hmac_alg(alg: Algorithm) -> Option<aws_lc_rs::hmac::Algorithm> {
    Some(match alg {
        Algorithm::HS256 => aws_lc_rs::hmac::HMAC_SHA256,
        Algorithm::HS384 => aws_lc_rs::hmac::HMAC_SHA384,
        Algorithm::HS512 => aws_lc_rs::hmac::HMAC_SHA512,
        _ => return None,
    })
}

/// Milliseconds of a duration, saturating.
fn ms(d: Duration) -> i128 {
    i128::try_from(d.as_millis()).unwrap_or(i128::MAX)
}

impl IdTokenValidator {
    /// A validator for `client_id` at `issuer`.
    ///
    /// `op_algorithms` is the OP's `id_token_signing_alg_values_supported`
    /// (when it publishes one): the allow-list is the configured algorithms
    /// ∩ that list, and an empty intersection is a configuration error.
    /// HMAC algorithms need `client_secret`.
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        options: ValidationOptions,
        op_algorithms: Option<&[String]>,
        client_secret: Option<&ClientSecret>,
    ) -> Result<Self, ConfigError> {
        if options.algorithms.is_empty() {
            return Err(ConfigError::Invalid {
                field: "validation.algorithms",
                reason: "is empty".into(),
            });
        }
        let mut allowed = AlgSet::default();
        for &alg in &options.algorithms {
            if op_algorithms.is_none_or(|list| list.iter().any(|a| a == alg.as_str())) {
                allowed.insert(alg);
            }
        }
        if allowed.is_empty() {
            return Err(ConfigError::Invalid {
                field: "validation.algorithms",
                reason: format!(
                    "none of {} is in the OP's `id_token_signing_alg_values_supported`",
                    options
                        .algorithms
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let mut hmac = Vec::new();
        for alg in allowed.iter().filter(|a| a.is_hmac()) {
            let Some(secret) = client_secret else {
                return Err(ConfigError::Invalid {
                    field: "validation.algorithms",
                    reason: format!("{alg} needs a client secret (its key is the secret)"),
                });
            };
            if let Some(h) = hmac_alg(alg) {
                hmac.push((
                    alg,
                    aws_lc_rs::hmac::Key::new(h, secret.secret().as_bytes()),
                ));
            }
        }
        Ok(IdTokenValidator {
            issuer: issuer.into(),
            client_id: client_id.into(),
            allowed,
            hmac,
            options,
        })
    }

    /// The effective allow-list.
    pub fn allowed_algorithms(&self) -> Vec<Algorithm> {
        self.allowed.iter().collect()
    }

    /// The options.
    pub fn options(&self) -> &ValidationOptions {
        &self.options
    }

    /// Validates `token` against `keys`, with no JWK Set refresh: every
    /// check of the module docs. `access_token` is the one that came with the
    /// ID token (for `at_hash`); `now` is the validation time.
    pub fn validate(
        &self,
        token: &RawJwt,
        keys: &KeySet,
        ctx: &ValidationContext,
        access_token: Option<&AccessToken>,
        now: UnixTime,
    ) -> Result<IdToken, ValidationError> {
        let parts = jws::split(token.secret())?;
        let mut buf = JwsBuf::new();
        let jws = match keys.known_header(parts.header) {
            // A header seen before on a token this set verified: the same
            // text passes the same checks and selects the same key.
            Some(known) => {
                let jws = jws::decode_known(parts, known.alg, known.kid.as_deref(), &mut buf)?;
                self.check_alg(jws.alg)?;
                keys.verify_from(
                    known.index,
                    jws.kid.as_deref(),
                    jws.alg,
                    jws.signing_input,
                    jws.signature,
                )?;
                jws
            }
            None => {
                let jws = jws::decode_parts(parts, &mut buf)?;
                self.check_alg(jws.alg)?;
                if jws.alg.is_hmac() {
                    self.verify_hmac(&jws)?;
                } else {
                    keys.verify_id_token(
                        parts.header,
                        jws.kid.as_deref(),
                        jws.alg,
                        jws.signing_input,
                        jws.signature,
                    )?;
                }
                jws
            }
        };
        let claims = self.check_claims(&jws, ctx, access_token, now)?;
        Ok(IdToken::new(token.clone(), claims))
    }

    /// Step 2: `alg` is in the allow-list.
    pub(crate) fn check_alg(&self, alg: Algorithm) -> Result<(), ValidationError> {
        if !self.allowed.contains(alg) {
            return Err(ValidationError::AlgorithmNotAllowed {
                alg: alg.as_str().into(),
            });
        }
        Ok(())
    }

    /// Step 4 for HMAC tokens: the key is the client secret.
    pub(crate) fn verify_hmac(&self, jws: &Jws<'_>) -> Result<(), ValidationError> {
        let key = self
            .hmac
            .iter()
            .find(|(a, _)| *a == jws.alg)
            .map(|(_, k)| k)
            .ok_or_else(|| ValidationError::AlgorithmNotAllowed {
                alg: jws.alg.as_str().into(),
            })?;
        aws_lc_rs::hmac::verify(key, jws.signing_input, jws.signature)
            .map_err(|_| ValidationError::Signature)
    }

    /// Steps 5 to 12, on a token whose signature has been checked.
    pub(crate) fn check_claims(
        &self,
        jws: &Jws<'_>,
        ctx: &ValidationContext,
        access_token: Option<&AccessToken>,
        now: UnixTime,
    ) -> Result<IdTokenClaims, ValidationError> {
        let payload = jws::b64_decode_vec(jws.payload_b64, "claims")?;
        let payload = claims::payload_text(payload)?;
        let times = self.check_view(
            &ClaimsView::parse(&payload)?,
            jws.alg,
            ctx,
            access_token,
            now,
        )?;
        Ok(IdTokenClaims::validated(payload, times))
    }

    /// Steps 5 to 12 on the claims read for validation.
    fn check_view(
        &self,
        claims: &ClaimsView<'_>,
        alg: Algorithm,
        ctx: &ValidationContext,
        access_token: Option<&AccessToken>,
        now: UnixTime,
    ) -> Result<Times, ValidationError> {
        let o = &self.options;

        if claims.iss != self.issuer {
            return Err(ValidationError::Issuer {
                expected: self.issuer.clone(),
                found: sanitize(&claims.iss, 200),
            });
        }
        let aud = &claims.aud;
        if !aud.iter().any(|a| a == self.client_id) {
            return Err(ValidationError::Audience {
                client_id: self.client_id.clone(),
            });
        }
        if let Some(untrusted) = aud
            .iter()
            .find(|a| *a != self.client_id && !o.trusted_audiences.iter().any(|t| t == a))
        {
            return Err(ValidationError::UntrustedAudience {
                audience: sanitize(untrusted, 200),
            });
        }
        match claims.azp.as_deref() {
            None if aud.len() > 1 => return Err(ValidationError::MissingAzp),
            Some(azp) if azp != self.client_id => {
                return Err(ValidationError::Azp {
                    found: sanitize(azp, 200),
                });
            }
            _ => {}
        }

        let t = claims.times;
        let now_ms = i128::from(now.as_millis());
        let secs_ms = |s: i64| i128::from(s) * 1000;
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let exp = t.exp;
        if now_ms >= secs_ms(exp) + ms(o.exp_leeway) {
            return Err(ValidationError::Expired { exp, now: now_secs });
        }
        if let Some(nbf) = t.nbf
            && now_ms < secs_ms(nbf) - ms(o.nbf_leeway)
        {
            return Err(ValidationError::NotYetValid { nbf, now: now_secs });
        }
        let iat = t.iat;
        if secs_ms(iat) > now_ms + ms(o.iat_leeway) {
            return Err(ValidationError::IssuedInFuture { iat, now: now_secs });
        }
        if secs_ms(iat) < now_ms - ms(o.max_iat_age) {
            return Err(ValidationError::IssuedTooLongAgo { iat, now: now_secs });
        }
        if let Some(auth_time) = t.auth_time
            && secs_ms(auth_time) > now_ms + ms(o.auth_time_leeway)
        {
            return Err(ValidationError::AuthTimeInFuture {
                auth_time,
                now: now_secs,
            });
        }

        match claims.nonce.as_deref() {
            None if ctx.nonce_optional() => {}
            None => return Err(ValidationError::MissingNonce),
            Some(n) if !ct_eq(n.as_bytes(), ctx.nonce().secret().as_bytes()) => {
                return Err(ValidationError::Nonce);
            }
            Some(_) => {}
        }

        if let (Some(at_hash), Some(at)) = (claims.at_hash.as_deref(), access_token)
            && !half_hash_matches(alg, at.secret(), at_hash)
        {
            return Err(ValidationError::AtHash);
        }

        if let Some(max_age) = ctx.max_age()
            && o.enforce_max_age
        {
            let auth_time = t.auth_time.ok_or(ValidationError::MissingAuthTime)?;
            let requested_ms = i128::from(ctx.requested_at().as_millis());
            let max_age_ms = i128::from(max_age) * 1000;
            if secs_ms(auth_time) + max_age_ms + ms(o.max_age_leeway) < requested_ms {
                return Err(ValidationError::MaxAgeExceeded {
                    auth_time,
                    max_age,
                    requested_at: i64::try_from(ctx.requested_at().as_secs()).unwrap_or(i64::MAX),
                });
            }
        }

        if o.require_same_subject
            && let Some(expected) = ctx.expected_subject()
            && claims.sub != expected
        {
            return Err(ValidationError::SubjectChanged);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests;
