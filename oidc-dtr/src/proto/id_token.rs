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
use crate::jose::jws::{self, Jws};
use crate::jose::{AlgSet, Algorithm, HALF_HASH_B64, half_hash_into};
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
        let jws = self.decode(token.secret())?;
        if jws.alg.is_hmac() {
            self.verify_hmac(&jws)?;
        } else {
            keys.verify(
                jws.kid.as_deref(),
                jws.alg,
                jws.signing_input,
                &jws.signature,
            )?;
        }
        let claims = self.check_claims(&jws, ctx, access_token, now)?;
        Ok(IdToken::new(token.clone(), claims))
    }

    /// Step 1 and 2: decode the JWS and check the header and `alg`.
    pub(crate) fn decode<'a>(&self, token: &'a str) -> Result<Jws<'a>, ValidationError> {
        let jws = jws::decode(token)?;
        if !self.allowed.contains(jws.alg) {
            return Err(ValidationError::AlgorithmNotAllowed {
                alg: jws.alg.as_str().into(),
            });
        }
        Ok(jws)
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
        aws_lc_rs::hmac::verify(key, jws.signing_input, &jws.signature)
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
        let aud = claims.aud.as_slice();
        if !aud.iter().any(|a| *a == self.client_id) {
            return Err(ValidationError::Audience {
                client_id: self.client_id.clone(),
            });
        }
        if let Some(untrusted) = aud
            .iter()
            .find(|a| **a != self.client_id && !o.trusted_audiences.iter().any(|t| *t == **a))
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

        if let (Some(at_hash), Some(at)) = (claims.at_hash.as_deref(), access_token) {
            let mut buf = [0u8; HALF_HASH_B64];
            let expected = half_hash_into(alg, at.secret(), &mut buf);
            if !ct_eq(at_hash.as_bytes(), expected) {
                return Err(ValidationError::AtHash);
            }
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
mod tests {
    use super::*;
    use crate::jose::{SigningKey, b64, half_hash};
    use crate::secret::Nonce;
    use serde_json::{Map, Value, json};
    use std::sync::OnceLock;

    const ISS: &str = "https://op.example";
    const CLIENT: &str = "client-1";
    const NONCE: &str = "n-0S6_WzA2Mj";
    const NOW: u64 = 1_900_000_000;
    const AT: &str = "jHkWEdUXMU1BwAsC4vtUsZwnNHy1Pr3X";

    fn rsa() -> &'static SigningKey {
        static K: OnceLock<SigningKey> = OnceLock::new();
        K.get_or_init(|| {
            SigningKey::generate(Algorithm::RS256)
                .unwrap()
                .with_kid("rsa-1")
        })
    }

    fn keys() -> KeySet {
        let ec = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid("ec-1");
        KeySet::from_keys(
            [rsa().public_jwk().unwrap(), ec.public_jwk().unwrap()],
            &Algorithm::ALL,
        )
    }

    fn claims() -> Value {
        json!({
            "iss": ISS,
            "sub": "user-1",
            "aud": CLIENT,
            "exp": NOW + 600,
            "iat": NOW,
            "nonce": NONCE,
            "auth_time": NOW - 100,
            "at_hash": half_hash(Algorithm::RS256, AT),
        })
    }

    fn ctx() -> ValidationContext {
        ValidationContext::new(Nonce::new(NONCE), UnixTime::from_secs(NOW - 200))
    }

    fn validator(opts: ValidationOptions) -> IdTokenValidator {
        IdTokenValidator::new(ISS, CLIENT, opts, None, Some(&ClientSecret::new("s3cr3t"))).unwrap()
    }

    fn sign(c: &Value) -> RawJwt {
        RawJwt::new(rsa().sign_jwt(Map::new(), c).unwrap())
    }

    fn run_with(
        v: &IdTokenValidator,
        token: &RawJwt,
        ctx: &ValidationContext,
    ) -> Result<IdToken, ValidationError> {
        v.validate(
            token,
            &keys(),
            ctx,
            Some(&AccessToken::new(AT)),
            UnixTime::from_secs(NOW),
        )
    }

    fn run(token: &RawJwt) -> Result<IdToken, ValidationError> {
        run_with(&validator(ValidationOptions::default()), token, &ctx())
    }

    fn with(f: impl FnOnce(&mut Map<String, Value>)) -> RawJwt {
        let mut c = claims();
        f(c.as_object_mut().unwrap());
        sign(&c)
    }

    #[test]
    fn a_good_token_validates() {
        let raw = sign(&claims());
        let t = run(&raw).unwrap();
        assert_eq!(t.claims().subject(), "user-1");
        assert_eq!(t.raw(), &raw);
    }

    #[test]
    fn at_hash_on_the_stack_matches_half_hash() {
        for alg in Algorithm::ALL {
            let mut buf = [0u8; HALF_HASH_B64];
            assert_eq!(
                half_hash_into(alg, AT, &mut buf),
                half_hash(alg, AT).as_bytes(),
                "{alg}"
            );
        }
    }

    #[test]
    fn jwe_is_refused() {
        let h = b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#);
        assert_eq!(
            run(&RawJwt::new(format!("{h}.a.b.c.d"))).unwrap_err(),
            ValidationError::Jwe
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let t = format!(
            "{}.{}.",
            b64(br#"{"alg":"none"}"#),
            b64(claims().to_string().as_bytes())
        );
        assert_eq!(
            run(&RawJwt::new(t)).unwrap_err(),
            ValidationError::AlgorithmNotAllowed { alg: "none".into() }
        );
    }

    #[test]
    fn alg_outside_the_allow_list_is_refused() {
        // A valid ES256 token, but only RS256 is allowed.
        let ec = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid("ec-x");
        let set = KeySet::from_keys([ec.public_jwk().unwrap()], &Algorithm::ALL);
        let t = RawJwt::new(ec.sign_jwt(Map::new(), &claims()).unwrap());
        let v = validator(ValidationOptions::default());
        assert_eq!(
            v.validate(&t, &set, &ctx(), None, UnixTime::from_secs(NOW))
                .unwrap_err(),
            ValidationError::AlgorithmNotAllowed {
                alg: "ES256".into()
            }
        );
        let v = validator(ValidationOptions::default().algorithms([Algorithm::ES256]));
        assert!(
            v.validate(&t, &set, &ctx(), None, UnixTime::from_secs(NOW))
                .is_ok()
        );
    }

    #[test]
    fn allow_list_is_intersected_with_the_op_list() {
        let op = vec!["RS256".to_owned(), "ES256".to_owned()];
        let v = IdTokenValidator::new(
            ISS,
            CLIENT,
            ValidationOptions::default().algorithms([Algorithm::ES256, Algorithm::PS256]),
            Some(&op),
            None,
        )
        .unwrap();
        assert_eq!(v.allowed_algorithms(), [Algorithm::ES256]);
        let e = IdTokenValidator::new(
            ISS,
            CLIENT,
            ValidationOptions::default().algorithms([Algorithm::PS256]),
            Some(&op),
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("id_token_signing_alg_values_supported"),
            "{e}"
        );
        assert!(
            IdTokenValidator::new(
                ISS,
                CLIENT,
                ValidationOptions::default().algorithms([]),
                None,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn hmac_needs_a_secret_and_uses_it() {
        let e = IdTokenValidator::new(
            ISS,
            CLIENT,
            ValidationOptions::default().algorithms([Algorithm::HS256]),
            None,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("client secret"), "{e}");
        let v = validator(ValidationOptions::default().algorithms([Algorithm::HS256]));
        let mut c = claims();
        c["at_hash"] = json!(half_hash(Algorithm::HS256, AT));
        let good = SigningKey::hmac(Algorithm::HS256, b"s3cr3t").unwrap();
        let t = RawJwt::new(good.sign_jwt(Map::new(), &c).unwrap());
        assert!(run_with(&v, &t, &ctx()).is_ok());
        let bad = SigningKey::hmac(Algorithm::HS256, b"guess").unwrap();
        let t = RawJwt::new(bad.sign_jwt(Map::new(), &c).unwrap());
        assert_eq!(
            run_with(&v, &t, &ctx()).unwrap_err(),
            ValidationError::Signature
        );
        // HS256 is not in the default list: refused even with a secret.
        let t = RawJwt::new(good.sign_jwt(Map::new(), &c).unwrap());
        assert_eq!(
            run(&t).unwrap_err(),
            ValidationError::AlgorithmNotAllowed {
                alg: "HS256".into()
            }
        );
    }

    #[test]
    fn bad_signature() {
        let t = sign(&claims());
        let (input, sig) = t.secret().rsplit_once('.').unwrap();
        let mut bytes = crate::jose::b64_decode(sig).unwrap();
        bytes[10] ^= 1;
        let forged = RawJwt::new(format!("{input}.{}", b64(&bytes)));
        assert_eq!(run(&forged).unwrap_err(), ValidationError::Signature);
        // A valid signature over other claims does not carry over.
        let other = with(|c| {
            c.insert("sub".into(), json!("admin"));
        });
        let (other_input, _) = other.secret().rsplit_once('.').unwrap();
        let spliced = RawJwt::new(format!("{other_input}.{sig}"));
        assert_eq!(run(&spliced).unwrap_err(), ValidationError::Signature);
    }

    #[test]
    fn kid_selection() {
        // Unknown kid.
        let stranger = SigningKey::generate(Algorithm::RS256)
            .unwrap()
            .with_kid("rotated-away");
        let t = RawJwt::new(stranger.sign_jwt(Map::new(), &claims()).unwrap());
        assert_eq!(
            run(&t).unwrap_err(),
            ValidationError::UnknownKid {
                kid: "rotated-away".into()
            }
        );
        // No kid: the single RSA key of the set is used.
        let no_kid =
            SigningKey::from_pkcs8_der(Algorithm::RS256, &rsa().to_pkcs8_der().unwrap()).unwrap();
        let t = RawJwt::new(no_kid.sign_jwt(Map::new(), &claims()).unwrap());
        assert!(run(&t).is_ok());
        // No kid and two RSA keys: ambiguous.
        let two = KeySet::from_keys(
            [rsa().public_jwk().unwrap(), stranger.public_jwk().unwrap()],
            &Algorithm::ALL,
        );
        let v = validator(ValidationOptions::default());
        assert!(matches!(
            v.validate(&t, &two, &ctx(), None, UnixTime::from_secs(NOW)),
            Err(ValidationError::AmbiguousKey { candidates: 2, .. })
        ));
        // A kid naming a key of another type.
        let ec_kid = SigningKey::from_pkcs8_der(Algorithm::RS256, &rsa().to_pkcs8_der().unwrap())
            .unwrap()
            .with_kid("ec-1");
        let t = RawJwt::new(ec_kid.sign_jwt(Map::new(), &claims()).unwrap());
        assert!(matches!(
            run(&t).unwrap_err(),
            ValidationError::KeyMismatch { .. }
        ));
    }

    #[test]
    fn crit_header_is_refused() {
        let mut h = Map::new();
        h.insert("crit".into(), json!(["b64"]));
        h.insert("b64".into(), json!(false));
        let t = RawJwt::new(rsa().sign_jwt(h, &claims()).unwrap());
        assert_eq!(
            run(&t).unwrap_err(),
            ValidationError::CritHeader {
                names: vec!["b64".into()]
            }
        );
    }

    #[test]
    fn typ_of_another_token_is_refused() {
        let mut h = Map::new();
        h.insert("typ".into(), json!("at+jwt"));
        let t = RawJwt::new(rsa().sign_jwt(h, &claims()).unwrap());
        assert!(matches!(run(&t).unwrap_err(), ValidationError::Type { .. }));
        let mut h = Map::new();
        h.insert("typ".into(), json!("JWT"));
        assert!(run(&RawJwt::new(rsa().sign_jwt(h, &claims()).unwrap())).is_ok());
    }

    #[test]
    fn issuer_must_match_exactly() {
        for iss in [
            "https://evil.example",
            "https://op.example/",
            "HTTPS://OP.EXAMPLE",
        ] {
            let t = with(|c| {
                c.insert("iss".into(), json!(iss));
            });
            assert_eq!(
                run(&t).unwrap_err(),
                ValidationError::Issuer {
                    expected: ISS.into(),
                    found: iss.into()
                }
            );
        }
    }

    #[test]
    fn audience_must_contain_the_client() {
        let t = with(|c| {
            c.insert("aud".into(), json!("someone-else"));
        });
        assert_eq!(
            run(&t).unwrap_err(),
            ValidationError::Audience {
                client_id: CLIENT.into()
            }
        );
        let t = with(|c| {
            c.insert("aud".into(), json!(["x", "y"]));
        });
        assert!(matches!(
            run(&t).unwrap_err(),
            ValidationError::Audience { .. }
        ));
    }

    #[test]
    fn other_audiences_must_be_trusted() {
        let t = with(|c| {
            c.insert("aud".into(), json!([CLIENT, "api://other"]));
            c.insert("azp".into(), json!(CLIENT));
        });
        assert_eq!(
            run(&t).unwrap_err(),
            ValidationError::UntrustedAudience {
                audience: "api://other".into()
            }
        );
        let v = validator(ValidationOptions::default().trust_audience("api://other"));
        assert!(run_with(&v, &t, &ctx()).is_ok());
    }

    #[test]
    fn azp_rules() {
        let v = validator(ValidationOptions::default().trust_audience("api://other"));
        // Several audiences, no azp.
        let t = with(|c| {
            c.insert("aud".into(), json!([CLIENT, "api://other"]));
        });
        assert_eq!(
            run_with(&v, &t, &ctx()).unwrap_err(),
            ValidationError::MissingAzp
        );
        // azp present and wrong, with one audience.
        let t = with(|c| {
            c.insert("azp".into(), json!("api://other"));
        });
        assert_eq!(
            run_with(&v, &t, &ctx()).unwrap_err(),
            ValidationError::Azp {
                found: "api://other".into()
            }
        );
        // azp present and right, with one audience.
        let t = with(|c| {
            c.insert("azp".into(), json!(CLIENT));
        });
        assert!(run_with(&v, &t, &ctx()).is_ok());
    }

    #[test]
    fn exp_with_leeway() {
        // Expired 30 s ago: inside the default 60 s leeway.
        let t = with(|c| {
            c.insert("exp".into(), json!(NOW - 30));
        });
        assert!(run(&t).is_ok());
        let t = with(|c| {
            c.insert("exp".into(), json!(NOW - 60));
        });
        assert_eq!(
            run(&t).unwrap_err(),
            ValidationError::Expired {
                exp: (NOW - 60) as i64,
                now: NOW as i64
            }
        );
        let strict = validator(ValidationOptions::default().exp_leeway(Duration::ZERO));
        let t = with(|c| {
            c.insert("exp".into(), json!(NOW));
        });
        assert!(matches!(
            run_with(&strict, &t, &ctx()).unwrap_err(),
            ValidationError::Expired { .. }
        ));
        // The exp leeway does not loosen iat (zitadel/oidc#740).
        let t = with(|c| {
            c.insert("iat".into(), json!(NOW + 120));
        });
        let loose_exp =
            validator(ValidationOptions::default().exp_leeway(Duration::from_secs(3600)));
        assert!(matches!(
            run_with(&loose_exp, &t, &ctx()).unwrap_err(),
            ValidationError::IssuedInFuture { .. }
        ));
    }

    #[test]
    fn nbf_with_leeway() {
        let t = with(|c| {
            c.insert("nbf".into(), json!(NOW + 30));
        });
        assert!(run(&t).is_ok());
        let t = with(|c| {
            c.insert("nbf".into(), json!(NOW + 61));
        });
        assert_eq!(
            run(&t).unwrap_err(),
            ValidationError::NotYetValid {
                nbf: (NOW + 61) as i64,
                now: NOW as i64
            }
        );
    }

    #[test]
    fn iat_far_in_the_past_is_refused() {
        let day = 24 * 3600;
        assert!(
            run(&with(|c| {
                c.insert("iat".into(), json!(NOW - day));
            }))
            .is_ok()
        );
        assert_eq!(
            run(&with(|c| {
                c.insert("iat".into(), json!(NOW - day - 1));
            }))
            .unwrap_err(),
            ValidationError::IssuedTooLongAgo {
                iat: (NOW - day - 1) as i64,
                now: NOW as i64,
            }
        );
    }

    #[test]
    fn auth_time_in_the_future_is_refused() {
        assert!(
            run(&with(|c| {
                c.insert("auth_time".into(), json!(NOW + 60));
            }))
            .is_ok()
        );
        assert_eq!(
            run(&with(|c| {
                c.insert("auth_time".into(), json!(NOW + 61));
            }))
            .unwrap_err(),
            ValidationError::AuthTimeInFuture {
                auth_time: (NOW + 61) as i64,
                now: NOW as i64,
            }
        );
    }

    #[test]
    fn iat_in_the_future() {
        let t = with(|c| {
            c.insert("iat".into(), json!(NOW + 60));
        });
        assert!(run(&t).is_ok());
        let t = with(|c| {
            c.insert("iat".into(), json!(NOW + 61));
        });
        assert_eq!(
            run(&t).unwrap_err(),
            ValidationError::IssuedInFuture {
                iat: (NOW + 61) as i64,
                now: NOW as i64
            }
        );
    }

    #[test]
    fn nonce_missing_or_wrong() {
        let t = with(|c| {
            c.remove("nonce");
        });
        assert_eq!(run(&t).unwrap_err(), ValidationError::MissingNonce);
        for wrong in ["n-0S6_WzA2Mk", "n-0S6_WzA2M", "", "n-0S6_WzA2Mj "] {
            let t = with(|c| {
                c.insert("nonce".into(), json!(wrong));
            });
            assert_eq!(run(&t).unwrap_err(), ValidationError::Nonce, "{wrong:?}");
        }
    }

    #[test]
    fn at_hash_checked_when_both_present() {
        let t = with(|c| {
            c.insert(
                "at_hash".into(),
                json!(half_hash(Algorithm::RS256, "other")),
            );
        });
        assert_eq!(run(&t).unwrap_err(), ValidationError::AtHash);
        // No access token (an interim ID token): at_hash is not checked.
        let v = validator(ValidationOptions::default());
        assert!(
            v.validate(&t, &keys(), &ctx(), None, UnixTime::from_secs(NOW))
                .is_ok()
        );
        // No at_hash: fine (the code flow's token-endpoint ID token).
        let t = with(|c| {
            c.remove("at_hash");
        });
        assert!(run(&t).is_ok());
    }

    #[test]
    fn auth_time_and_max_age_relative_to_the_request() {
        let requested = UnixTime::from_secs(NOW - 86_400); // asked a day ago
        let ctx = ValidationContext::new(Nonce::new(NONCE), requested).with_max_age(Some(300));
        let v = validator(ValidationOptions::default());
        // Authenticated 100 s before the request: fine, though a day before now.
        let t = with(|c| {
            c.insert("auth_time".into(), json!(NOW - 86_400 - 100));
        });
        assert!(run_with(&v, &t, &ctx).is_ok());
        // Authenticated 400 s before the request (+60 s leeway still short).
        let t = with(|c| {
            c.insert("auth_time".into(), json!(NOW - 86_400 - 400));
        });
        assert_eq!(
            run_with(&v, &t, &ctx).unwrap_err(),
            ValidationError::MaxAgeExceeded {
                auth_time: (NOW - 86_400 - 400) as i64,
                max_age: 300,
                requested_at: (NOW - 86_400) as i64
            }
        );
        // Switched off.
        let off = validator(ValidationOptions::default().enforce_max_age(false));
        assert!(run_with(&off, &t, &ctx).is_ok());
        // Missing auth_time.
        let t = with(|c| {
            c.remove("auth_time");
        });
        assert_eq!(
            run_with(&v, &t, &ctx).unwrap_err(),
            ValidationError::MissingAuthTime
        );
        // Without max_age, auth_time is optional.
        assert!(run(&t).is_ok());
    }

    #[test]
    fn subject_must_match_the_interim_token() {
        let ctx = ctx().with_expected_subject(Some("user-1".into()));
        let v = validator(ValidationOptions::default());
        assert!(run_with(&v, &sign(&claims()), &ctx).is_ok());
        let t = with(|c| {
            c.insert("sub".into(), json!("user-2"));
        });
        assert_eq!(
            run_with(&v, &t, &ctx).unwrap_err(),
            ValidationError::SubjectChanged
        );
        let off = validator(ValidationOptions::default().require_same_subject(false));
        assert!(run_with(&off, &t, &ctx).is_ok());
    }

    #[test]
    fn missing_and_mistyped_claims_are_named() {
        let t = with(|c| {
            c.remove("exp");
        });
        assert_eq!(
            run(&t).unwrap_err(),
            ValidationError::MissingClaim {
                claim: "exp".into()
            }
        );
        let t = with(|c| {
            c.insert("iat".into(), json!("now"));
        });
        assert!(matches!(
            run(&t).unwrap_err(),
            ValidationError::InvalidClaim { claim, .. } if claim == "iat"
        ));
        // A payload that is not JSON, signed properly.
        let h = b64(br#"{"alg":"RS256","kid":"rsa-1"}"#);
        let input = format!("{h}.{}", b64(b"not json"));
        let sig = rsa().sign(input.as_bytes()).unwrap();
        let t = RawJwt::new(format!("{input}.{}", b64(&sig)));
        assert!(matches!(
            run(&t).unwrap_err(),
            ValidationError::Malformed { part, .. } if part == "claims"
        ));
    }

    /// Issue 22: a correctly signed ID token whose payload repeats a member
    /// inside a non-registered claim or inside `verified_claims` was
    /// accepted, the last one winning.
    #[test]
    fn duplicate_members_at_any_depth_fail_validation() {
        let good = claims().to_string();
        let head = &good[..good.len() - 1];
        for (extra, name) in [
            (r#""email":"a@x","email":"admin@x""#, "email"),
            (r#""address":{"country":"DE","country":"FR"}"#, "country"),
            (
                r#""verified_claims":{"verification":{"trust_framework":"de_aml"},"claims":{"given_name":"Max","given_name":"Eve"}}"#,
                "given_name",
            ),
            (
                r#""verified_claims":[{"verification":{"trust_framework":"de_aml","time":"2020-01-01","time":"2099-01-01"},"claims":{"x":1}}]"#,
                "time",
            ),
        ] {
            let payload = format!("{head},{extra}}}");
            let input = format!(
                "{}.{}",
                crate::jose::b64(br#"{"alg":"RS256","kid":"rsa-1"}"#),
                crate::jose::b64(payload.as_bytes())
            );
            let sig = rsa().sign(input.as_bytes()).unwrap();
            let token = RawJwt::new(format!("{input}.{}", crate::jose::b64(&sig)));
            assert_eq!(
                run(&token).unwrap_err(),
                ValidationError::malformed("claims", format!("the member `{name}` appears twice")),
                "{extra}"
            );
        }
    }

    #[test]
    fn errors_hold_no_secret_claim_values() {
        let t = with(|c| {
            c.insert("nonce".into(), json!("attacker-nonce-value"));
            c.insert("sub".into(), json!("secret-subject"));
        });
        let e = run(&t).unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("attacker-nonce-value") && !text.contains(NONCE),
            "{text}"
        );
        assert!(!text.contains("secret-subject"), "{text}");
        // Errors survive serde (the store persists failed outcomes).
        let back: ValidationError =
            serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn hostile_tokens_never_panic() {
        let v = validator(ValidationOptions::default());
        let h = b64(br#"{"alg":"RS256","kid":"rsa-1"}"#);
        for t in [
            String::new(),
            "...".into(),
            format!("{h}.{}.", b64(&[0xff; 40])),
            format!("{h}.!!!.AAAA"),
            format!("{h}.e30.{}", "A".repeat(10_000)),
            format!("{}.e30.AA", b64(br#"{"alg":"RS256","kid":{"x":1}}"#)),
        ] {
            let _ = v.validate(
                &RawJwt::new(t),
                &keys(),
                &ctx(),
                None,
                UnixTime::from_secs(NOW),
            );
        }
    }
}
