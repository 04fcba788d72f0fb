//! Token responses: the parsed [`TokenResponse`] (not yet validated), the
//! [`ValidationContext`] a flow carries for validation, and the validated
//! [`TokenSet`] with its [`IdToken`].
//!
//! The same types serve the plain-code fallback
//! ([`DtrClient::exchange_code`](crate::DtrClient::exchange_code)) and the
//! deferred poll, so an application handles both answers with one code
//! path.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use url::Url;

use crate::error::AssuranceError;
use crate::error::{Error, ResponseError, ValidationError};
use crate::json::JsonObject;
use crate::proto::assurance::{
    AssuranceLimits, CheckedVerifiedClaims, ClaimsRequest, ClaimsTarget, ReceivedClaims,
};
use crate::proto::authorize::PendingAuthorization;
use crate::proto::callback::{Acknowledgment, CodeResponse};
use crate::proto::claims::IdTokenClaims;
use crate::proto::exchange::DeferredAuthentication;
use crate::proto::message::{HttpResponse, success_object};
use crate::secret::{AccessToken, Nonce, RawJwt, RefreshToken};
use crate::time::UnixTime;

const CONTEXT: &str = "token response";

/// The members of a token response the SDK reads; the rest is kept in
/// [`TokenResponse::extra`].
const KNOWN: [&str; 6] = [
    "access_token",
    "token_type",
    "expires_in",
    "refresh_token",
    "scope",
    "id_token",
];

/// A successful token response (RFC 6749 §5.1, OpenID Connect Core
/// §3.1.3.3), parsed but **not validated**. Hand it to
/// [`DtrClient::validate_token_response`](crate::DtrClient::validate_token_response)
/// to get a [`TokenSet`].
///
/// `Debug` shows no token.
#[derive(Clone)]
#[non_exhaustive]
pub struct TokenResponse {
    /// `access_token`.
    pub access_token: AccessToken,
    /// `token_type`, as sent (compare with [`is_bearer`](Self::is_bearer) /
    /// [`is_dpop`](Self::is_dpop): the value is case-insensitive).
    pub token_type: String,
    /// `expires_in`: the access token's lifetime in seconds.
    pub expires_in: Option<u64>,
    /// `refresh_token`.
    pub refresh_token: Option<RefreshToken>,
    /// `scope`, when the OP sent one (it may differ from the request).
    pub scope: Option<String>,
    /// `id_token`, not yet validated.
    pub id_token: Option<RawJwt>,
    /// Every other member, as sent.
    pub extra: Map<String, Value>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &self.access_token)
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token)
            .field("scope", &self.scope)
            .field("id_token", &self.id_token)
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `expires_in`: a positive integer, or the same written as a string of
/// decimal digits (`"3599"`, as some providers send: unambiguous, so
/// accepted). Anything else (`"3600.5"`, `0`, `-1`, `" 60"`) is refused.
fn expires_in(obj: &JsonObject) -> Result<Option<u64>, ResponseError> {
    if let Some(Value::String(s)) = obj.get("expires_in") {
        return match s.parse::<u64>() {
            Ok(n) if n > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
            _ => Err(obj.err(
                "expires_in",
                "must be a positive integer, got a string that is not one",
            )),
        };
    }
    obj.optional_positive_int("expires_in")
}

impl TokenResponse {
    /// A response with just an access token and its type.
    pub fn new(access_token: AccessToken, token_type: impl Into<String>) -> Self {
        TokenResponse {
            access_token,
            token_type: token_type.into(),
            expires_in: None,
            refresh_token: None,
            scope: None,
            id_token: None,
            extra: Map::new(),
        }
    }

    /// Parses the JSON body of a successful token response (for custom
    /// transports). Errors name the member at fault, never its value.
    pub fn from_json(body: &[u8]) -> Result<Self, ResponseError> {
        Self::from_object(JsonObject::parse(body, CONTEXT)?)
    }

    fn from_object(obj: JsonObject) -> Result<Self, ResponseError> {
        let non_empty = |field: &'static str| -> Result<Option<String>, ResponseError> {
            match obj.optional_str(field)? {
                Some("") => Err(obj.err(field, "is empty")),
                other => Ok(other.map(str::to_owned)),
            }
        };
        let access_token = AccessToken::new(obj.required_str("access_token")?);
        let token_type = obj.required_str("token_type")?.to_owned();
        let expires_in = expires_in(&obj)?;
        let refresh_token = non_empty("refresh_token")?.map(RefreshToken::new);
        let scope = obj.optional_str("scope")?.map(str::to_owned);
        let id_token = non_empty("id_token")?.map(RawJwt::new);
        let extra = obj
            .map
            .into_iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .collect();
        Ok(TokenResponse {
            access_token,
            token_type,
            expires_in,
            refresh_token,
            scope,
            id_token,
            extra,
        })
    }

    /// Whether `token_type` is `Bearer` (case-insensitive).
    pub fn is_bearer(&self) -> bool {
        self.token_type.eq_ignore_ascii_case("bearer")
    }

    /// Whether `token_type` is `DPoP` (case-insensitive).
    pub fn is_dpop(&self) -> bool {
        self.token_type.eq_ignore_ascii_case("dpop")
    }
}

/// Parses a token endpoint response: error statuses become
/// [`Error::OAuth`] / [`Error::Http`], a 200 with an OAuth error body becomes
/// [`Error::OAuth`], a malformed success body [`Error::Response`].
pub(crate) fn parse_token_response(
    resp: &HttpResponse,
    endpoint: &Url,
) -> Result<TokenResponse, Error> {
    let obj = success_object(resp, endpoint, CONTEXT, "access_token")?;
    Ok(TokenResponse::from_object(obj)?)
}

/// A token response the OP issued whose ID token could not be validated
/// yet: the OP's JWK Set was unreachable. The OP will not issue these tokens
/// again, so they are kept (in the authentication's stored record, sealed
/// like the rest of it, where a store is configured) and validated once the
/// keys can be fetched, with the times checked as of `received_at`.
///
/// `Debug` shows no token.
#[derive(Clone, Serialize, Deserialize)]
pub struct HeldTokens {
    /// The token response's JSON body, as received.
    body: String,
    /// When it was received: the ID token's times are checked at this
    /// instant, and the access token's expiry counts from it.
    received_at: UnixTime,
}

impl HeldTokens {
    /// Tokens from `body` (a 2xx token response's JSON), received at
    /// `received_at`. `None` if the body is not UTF-8 (it could not be JSON).
    pub(crate) fn new(body: &[u8], received_at: UnixTime) -> Option<Self> {
        Some(HeldTokens {
            body: String::from_utf8(body.to_vec()).ok()?,
            received_at,
        })
    }

    /// When the token response was received.
    pub fn received_at(&self) -> UnixTime {
        self.received_at
    }

    /// The body as received (a secret).
    pub(crate) fn body(&self) -> &str {
        &self.body
    }

    /// The token response as an HTTP answer again, to validate it.
    pub(crate) fn response(&self) -> HttpResponse {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        HttpResponse {
            status: http::StatusCode::OK,
            headers,
            body: bytes::Bytes::from(self.body.clone().into_bytes()),
        }
    }
}

impl fmt::Debug for HeldTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldTokens")
            .field("received_at", &self.received_at)
            .finish_non_exhaustive()
    }
}

impl PartialEq for HeldTokens {
    /// Constant-time on the body.
    fn eq(&self, other: &Self) -> bool {
        self.received_at == other.received_at
            && crate::secret::ct_eq(self.body.as_bytes(), other.body.as_bytes())
    }
}

impl Eq for HeldTokens {}

impl Drop for HeldTokens {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.body);
    }
}

/// What an ID token of one flow is checked against, besides the client's
/// own settings: the `nonce` sent, the `max_age` requested and when, and the
/// interim ID token's `sub`, if there was one.
///
/// Build it from the flow's state: `ValidationContext::from(&auth)` for a
/// [`DeferredAuthentication`], `from(&code)` for a [`CodeResponse`].
/// It serialises, so a poller can keep it with its own state.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationContext {
    nonce: Nonce,
    max_age: Option<u64>,
    requested_at: UnixTime,
    expected_subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claims_request: Option<Box<ClaimsRequest>>,
    /// An ID token without `nonce` is accepted (one with a `nonce` must
    /// still carry this one): the device flow, whose RFC 8628 requests
    /// define no `nonce` for the OP to echo.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    nonce_optional: bool,
}

impl fmt::Debug for ValidationContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidationContext")
            .field("nonce", &self.nonce)
            .field("max_age", &self.max_age)
            .field("requested_at", &self.requested_at)
            .field("expected_subject", &self.expected_subject.is_some())
            .finish()
    }
}

impl ValidationContext {
    /// A context with the request's `nonce` and the time the request was
    /// made.
    pub fn new(nonce: Nonce, requested_at: UnixTime) -> Self {
        ValidationContext {
            nonce,
            max_age: None,
            requested_at,
            expected_subject: None,
            claims_request: None,
            nonce_optional: false,
        }
    }

    /// Accepts an ID token without `nonce` (for flows whose request cannot
    /// carry one, such as the device flow); a `nonce` that is present must
    /// still match.
    pub fn with_optional_nonce(mut self, optional: bool) -> Self {
        self.nonce_optional = optional;
        self
    }

    /// Whether an ID token without `nonce` is accepted.
    pub fn nonce_optional(&self) -> bool {
        self.nonce_optional
    }

    /// Sets the `max_age` the request asked for.
    pub fn with_max_age(mut self, max_age: Option<u64>) -> Self {
        self.max_age = max_age;
        self
    }

    /// Sets the `sub` the ID token must have (the interim ID token's).
    pub fn with_expected_subject(mut self, sub: Option<String>) -> Self {
        self.expected_subject = sub;
        self
    }

    /// The `nonce` every ID token of the flow must carry.
    pub fn nonce(&self) -> &Nonce {
        &self.nonce
    }

    /// The requested `max_age`.
    pub fn max_age(&self) -> Option<u64> {
        self.max_age
    }

    /// When the authentication request was made.
    pub fn requested_at(&self) -> UnixTime {
        self.requested_at
    }

    /// The `sub` the ID token must have, if any.
    pub fn expected_subject(&self) -> Option<&str> {
        self.expected_subject.as_deref()
    }

    /// Sets the typed `claims` request the verified claims are checked
    /// against (see [`TokenSet::verified_claims`]).
    pub fn with_claims_request(mut self, request: Option<ClaimsRequest>) -> Self {
        self.claims_request = request.map(Box::new);
        self
    }

    /// The typed `claims` request, if the authentication request had one.
    pub fn claims_request(&self) -> Option<&ClaimsRequest> {
        self.claims_request.as_deref()
    }
}

impl From<&PendingAuthorization> for ValidationContext {
    fn from(p: &PendingAuthorization) -> Self {
        let mut ctx = ValidationContext::new(p.nonce.clone(), p.created_at).with_max_age(p.max_age);
        ctx.claims_request = p.claims_request.clone();
        ctx
    }
}

impl From<&CodeResponse> for ValidationContext {
    fn from(c: &CodeResponse) -> Self {
        ValidationContext::from(&c.pending)
    }
}

impl From<&Acknowledgment> for ValidationContext {
    fn from(a: &Acknowledgment) -> Self {
        ValidationContext::from(&a.pending)
    }
}

impl From<&DeferredAuthentication> for ValidationContext {
    fn from(a: &DeferredAuthentication) -> Self {
        let mut ctx = ValidationContext::new(a.nonce.clone(), a.requested_at)
            .with_max_age(a.max_age)
            .with_expected_subject(a.interim_subject().map(str::to_owned))
            .with_optional_nonce(a.device_flow);
        ctx.claims_request = a.claims_request.clone();
        ctx
    }
}

/// A validated ID token: the compact JWT as received and its claims.
///
/// `Debug` shows a fingerprint of the JWT and no personal data. It
/// serialises as the JWT alone (`{"jwt": "..."}`); deserialising re-reads
/// the claims without checking the signature again, so only deserialise
/// what this SDK validated and stored.
#[derive(Clone, PartialEq, Eq)]
pub struct IdToken {
    raw: RawJwt,
    // Inline: the claims keep their large typed part behind a lazily built
    // box, so they are small; one allocation less per validated token.
    claims: IdTokenClaims,
}

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdToken")
            .field("raw", &self.raw)
            .field("claims", &self.claims)
            .finish()
    }
}

impl IdToken {
    pub(crate) fn new(raw: RawJwt, claims: IdTokenClaims) -> Self {
        IdToken { raw, claims }
    }

    /// The compact JWT as received (e.g. for `id_token_hint` at logout).
    pub fn raw(&self) -> &RawJwt {
        &self.raw
    }

    /// The validated claims.
    pub fn claims(&self) -> &IdTokenClaims {
        &self.claims
    }

    /// The payload deserialised into the caller's own type, exactly as the
    /// OP sent it.
    pub fn claims_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.claims.payload())
    }

    pub(crate) fn into_parts(self) -> (RawJwt, IdTokenClaims) {
        (self.raw, self.claims)
    }
}

fn payload_bytes(raw: &RawJwt) -> Result<Vec<u8>, ValidationError> {
    let payload = raw
        .secret()
        .split('.')
        .nth(1)
        .ok_or_else(|| ValidationError::malformed("serialization", "no payload"))?;
    URL_SAFE_NO_PAD
        .decode(payload.as_bytes())
        .map_err(|_| ValidationError::malformed("claims", "not base64url without padding"))
}

#[derive(Serialize, Deserialize)]
struct IdTokenRepr {
    jwt: RawJwt,
}

impl Serialize for IdToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        IdTokenRepr {
            jwt: self.raw.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for IdToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let repr = IdTokenRepr::deserialize(d)?;
        let claims = payload_bytes(&repr.jwt)
            .and_then(IdTokenClaims::from_payload_vec)
            .map_err(serde::de::Error::custom)?;
        Ok(IdToken::new(repr.jwt, claims))
    }
}

/// Validated tokens: what the SDK hands the application.
///
/// `Debug` shows fingerprints of the tokens only. It serialises (to persist
/// a delivered outcome): treat the serialised form as secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    access_token: AccessToken,
    token_type: String,
    expires_at: Option<UnixTime>,
    refresh_token: Option<RefreshToken>,
    scope: Option<String>,
    id_token: IdToken,
    received_at: UnixTime,
    /// The DPoP key the access token is bound to, when DPoP was used with
    /// a key generated for the flow.
    #[serde(default)]
    dpop_key: Option<Box<crate::jose::DpopKey>>,
    /// The RFC 7638 thumbprint of the external DPoP signer's key the access
    /// token is bound to (the private key stays with the signer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dpop_signer_jkt: Option<Box<str>>,
    /// The `x5t#S256` of the client certificate (mutual TLS, RFC 8705) the
    /// tokens were issued to: certificate-bound access tokens are presented
    /// with it. Absent without mutual TLS and in token sets stored before
    /// it existed (the current certificate is used then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_cert_thumbprint: Option<String>,
    /// The typed `claims` request of the flow, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claims_request: Option<Box<ClaimsRequest>>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &self.access_token)
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token)
            .field("scope", &self.scope)
            .field("id_token", &self.id_token)
            .field("received_at", &self.received_at)
            .field("dpop_key", &self.dpop_key)
            .field("dpop_signer_jkt", &self.dpop_signer_jkt)
            .field("client_cert_thumbprint", &self.client_cert_thumbprint)
            .field("claims_request", &self.claims_request.is_some())
            .finish()
    }
}

impl TokenSet {
    /// Assembles a token set from a response whose ID token was validated.
    pub(crate) fn new(resp: TokenResponse, id_token: IdToken, received_at: UnixTime) -> Self {
        TokenSet {
            expires_at: resp
                .expires_in
                .map(|s| received_at.saturating_add(Duration::from_secs(s))),
            access_token: resp.access_token,
            token_type: resp.token_type,
            refresh_token: resp.refresh_token,
            scope: resp.scope,
            id_token,
            received_at,
            dpop_key: None,
            dpop_signer_jkt: None,
            client_cert_thumbprint: None,
            claims_request: None,
        }
    }

    /// Remembers the flow's `claims` request (from the validation context).
    pub(crate) fn with_claims_request_of(mut self, ctx: &ValidationContext) -> Self {
        self.claims_request = ctx.claims_request.clone();
        self
    }

    /// The typed `claims` request of the flow, if it had one.
    pub fn claims_request(&self) -> Option<&ClaimsRequest> {
        self.claims_request.as_deref()
    }

    /// The ID token's claims split into unverified claims and typed
    /// `verified_claims` (OpenID Connect for Identity Assurance 1.0), without
    /// checking them against the request. Fails when `verified_claims` is
    /// malformed or appears anywhere but at the top level (or in
    /// `_claim_names`).
    pub fn received_claims(&self) -> Result<ReceivedClaims, AssuranceError> {
        ReceivedClaims::from_claims(&self.claims().to_json(), &AssuranceLimits::default())
    }

    /// The ID token's verified claims, checked against the `claims` request
    /// of the flow ([`AuthorizationRequestBuilder::claims_request`](crate::client::AuthorizationRequestBuilder::claims_request))
    /// at the time the tokens were received: every returned
    /// `trust_framework`, `assurance_level` and evidence type must be one the
    /// request allowed, and `verification.time` no older than its `max_age`.
    /// Verified claims the request did not ask for are returned apart
    /// ([`CheckedVerifiedClaims::unrequested`]), never merged; unverified
    /// claims of the same name stay in [`claims`](Self::claims).
    ///
    /// A failed check does **not** fail the authentication: the ID token
    /// passed OpenID Connect validation and the tokens stay usable (and
    /// stored until acknowledged). It is reported here, as a typed
    /// [`AssuranceError`], every time you ask; treat it as "no verified
    /// identity". Without a `claims` request every element is unrequested.
    pub fn verified_claims(&self) -> Result<CheckedVerifiedClaims, AssuranceError> {
        let received = self.received_claims()?;
        let requests = self
            .claims_request
            .as_deref()
            .map(|r| r.verified_claims(ClaimsTarget::IdToken))
            .unwrap_or(&[]);
        crate::proto::assurance::check_verified_claims(
            requests,
            &received.verified,
            self.received_at.as_secs(),
        )
    }

    /// Attaches the DPoP key the tokens are bound to.
    pub(crate) fn with_dpop(mut self, dpop: Option<crate::jose::dpop::FlowDpop>) -> Self {
        (self.dpop_key, self.dpop_signer_jkt) = crate::jose::dpop::FlowDpop::into_stored(dpop);
        self
    }

    /// Records the client certificate the tokens were issued to.
    pub(crate) fn with_client_cert(mut self, thumbprint: Option<&str>) -> Self {
        self.client_cert_thumbprint = thumbprint.map(str::to_owned);
        self
    }

    /// The DPoP key the access token is bound to, when it was generated for
    /// the flow (present it with [`resource_proof_at`](Self::resource_proof_at));
    /// `None` for bearer tokens and for a key held by an external signer
    /// ([`DpopConfig::signer`](crate::client::DpopConfig::signer): see
    /// [`dpop_jkt`](Self::dpop_jkt) and
    /// [`DtrClient::sign_resource_proof`](crate::DtrClient::sign_resource_proof)).
    pub fn dpop_key(&self) -> Option<&crate::jose::DpopKey> {
        self.dpop_key.as_deref()
    }

    /// The RFC 7638 thumbprint (`jkt`) of the DPoP key the access token is
    /// bound to, generated or held by an external signer; `None` when DPoP
    /// was not used.
    pub fn dpop_jkt(&self) -> Option<&str> {
        self.dpop().map(crate::jose::dpop::DpopRef::thumbprint)
    }

    /// The DPoP key, as kept.
    pub(crate) fn dpop(&self) -> Option<crate::jose::dpop::DpopRef<'_>> {
        crate::jose::dpop::DpopRef::from_stored(
            self.dpop_key.as_deref(),
            self.dpop_signer_jkt.as_deref(),
        )
    }

    /// The `x5t#S256` (RFC 8705 §3.1) of the client certificate the tokens
    /// were issued to, under mutual TLS: [`DtrClient::userinfo`](crate::DtrClient::userinfo)
    /// presents that certificate (a certificate-bound access token is
    /// refused with another), even after the client certificate was
    /// rotated, as long as it is configured
    /// ([`HttpConfig::previous_client_identity`](crate::client::HttpConfig::previous_client_identity)).
    /// `None` without mutual TLS, and for token sets stored before this was
    /// recorded (the current certificate is presented then).
    pub fn client_cert_thumbprint(&self) -> Option<&str> {
        self.client_cert_thumbprint.as_deref()
    }

    /// A DPoP proof for presenting the access token to a resource server
    /// (RFC 9449 §7): `htm`/`htu` of the request, a fresh `jti`, `iat` now,
    /// and `ath`, the hash of the access token. Send it in the `DPoP` header
    /// with `Authorization: DPoP <access token>`. `None` for bearer tokens.
    /// Tokens bound to an external signer's key
    /// ([`DpopConfig::signer`](crate::client::DpopConfig::signer)) cannot be
    /// signed here ([`KeyError::Rejected`](crate::jose::KeyError::Rejected)):
    /// use [`DtrClient::sign_resource_proof`](crate::DtrClient::sign_resource_proof).
    ///
    /// `now` and `rng` are the proof's `iat` and the source of its `jti`;
    /// [`DtrClient::resource_proof`](crate::DtrClient::resource_proof) passes
    /// the client's own.
    pub fn resource_proof_at(
        &self,
        method: &http::Method,
        url: &url::Url,
        nonce: Option<&str>,
        now: UnixTime,
        rng: &dyn crate::random::RandomSource,
    ) -> Option<Result<String, crate::jose::KeyError>> {
        let Some(key) = self.dpop_key.as_ref() else {
            // A key held by an external signer signs asynchronously.
            return self.dpop_signer_jkt.as_ref().map(|_| {
                Err(crate::jose::KeyError::Rejected(
                    "the access token is bound to an external signer's key: use DtrClient::sign_resource_proof".into(),
                ))
            });
        };
        let jti = match crate::random::random_b64url(rng, 16) {
            Ok(j) => j,
            Err(_) => return Some(Err(crate::jose::KeyError::Signing)),
        };
        let ath = crate::jose::dpop::ath(self.access_token.secret());
        Some(key.proof(method, url, now, &jti, nonce, Some(&ath)))
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    /// `token_type`, as sent.
    pub fn token_type(&self) -> &str {
        &self.token_type
    }
    /// Whether `token_type` is `Bearer` (case-insensitive).
    pub fn is_bearer(&self) -> bool {
        self.token_type.eq_ignore_ascii_case("bearer")
    }
    /// Whether `token_type` is `DPoP` (case-insensitive).
    pub fn is_dpop(&self) -> bool {
        self.token_type.eq_ignore_ascii_case("dpop")
    }
    /// When the access token expires (`received_at + expires_in`), if the
    /// OP said.
    pub fn expires_at(&self) -> Option<UnixTime> {
        self.expires_at
    }
    /// The refresh token, if any.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    /// The granted `scope`, if the OP sent one.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }
    /// The validated ID token.
    pub fn id_token(&self) -> &IdToken {
        &self.id_token
    }
    /// The ID token's claims (shortcut for `id_token().claims()`).
    pub fn claims(&self) -> &IdTokenClaims {
        self.id_token.claims()
    }
    /// When the token response arrived.
    pub fn received_at(&self) -> UnixTime {
        self.received_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use serde_json::json;

    fn url() -> Url {
        Url::parse("https://op.example/token").unwrap()
    }

    fn parse(v: Value) -> Result<TokenResponse, Error> {
        parse_token_response(&HttpResponse::json(StatusCode::OK, &v), &url())
    }

    #[test]
    fn full_response() {
        let r = parse(json!({
            "access_token": "SlAV32hkKG",
            "token_type": "DPoP",
            "expires_in": 3600,
            "refresh_token": "8xLOxBtZp8",
            "scope": "openid profile",
            "id_token": "a.b.c",
            "authorization_details": [{"type": "x"}]
        }))
        .unwrap();
        assert_eq!(r.access_token.secret(), "SlAV32hkKG");
        assert!(r.is_dpop() && !r.is_bearer());
        assert_eq!(r.expires_in, Some(3600));
        assert_eq!(r.refresh_token.as_ref().unwrap().secret(), "8xLOxBtZp8");
        assert_eq!(r.scope.as_deref(), Some("openid profile"));
        assert_eq!(r.id_token.as_ref().unwrap().secret(), "a.b.c");
        assert_eq!(
            r.extra.keys().collect::<Vec<_>>(),
            ["authorization_details"]
        );
        let dbg = format!("{r:?}");
        for s in ["SlAV32hkKG", "8xLOxBtZp8", "a.b.c"] {
            assert!(!dbg.contains(s), "{dbg}");
        }
    }

    #[test]
    fn token_type_is_case_insensitive() {
        let r = parse(json!({"access_token": "x", "token_type": "bearer"})).unwrap();
        assert!(r.is_bearer());
        let r = parse(json!({"access_token": "x", "token_type": "dpop"})).unwrap();
        assert!(r.is_dpop());
    }

    #[test]
    fn member_rules() {
        for (v, field) in [
            (json!({"token_type": "Bearer"}), "access_token"),
            (
                json!({"access_token": "", "token_type": "Bearer"}),
                "access_token",
            ),
            (json!({"access_token": "x"}), "token_type"),
            (json!({"access_token": "x", "token_type": 1}), "token_type"),
            (
                json!({"access_token": "x", "token_type": "Bearer", "expires_in": 0}),
                "expires_in",
            ),
            (
                json!({"access_token": "x", "token_type": "Bearer", "expires_in": "3600.5"}),
                "expires_in",
            ),
            (
                json!({"access_token": "x", "token_type": "Bearer", "expires_in": "-1"}),
                "expires_in",
            ),
            (
                json!({"access_token": "x", "token_type": "Bearer", "expires_in": "+60"}),
                "expires_in",
            ),
            (
                json!({"access_token": "x", "token_type": "Bearer", "expires_in": "0"}),
                "expires_in",
            ),
            (
                json!({"access_token": "x", "token_type": "Bearer", "expires_in": 3600.5}),
                "expires_in",
            ),
            (
                json!({"access_token": "x", "token_type": "Bearer", "expires_in": -1}),
                "expires_in",
            ),
            (json!({"access_token": "x", "token_type": ""}), "token_type"),
            (
                json!({"access_token": "x", "token_type": "Bearer", "refresh_token": ""}),
                "refresh_token",
            ),
            (
                json!({"access_token": "x", "token_type": "Bearer", "id_token": 5}),
                "id_token",
            ),
            (
                json!({"access_token": "x", "token_type": "Bearer", "id_token": ""}),
                "id_token",
            ),
            (
                json!({"access_token": "x", "token_type": "Bearer", "scope": ["a"]}),
                "scope",
            ),
        ] {
            match parse(v.clone()) {
                Err(Error::Response(e)) => assert_eq!(e.field, Some(field), "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
        let r = parse(json!({"access_token": "x", "token_type": "Bearer", "expires_in": null}))
            .unwrap();
        assert_eq!(r.expires_in, None);
        // Issue 11, item 6: a numeric string is unambiguous: accepted.
        let r = parse(json!({"access_token": "x", "token_type": "Bearer", "expires_in": "3599"}))
            .unwrap();
        assert_eq!(r.expires_in, Some(3599));
    }

    /// Issue 22: `expires_in` in exponent or fraction form was accepted.
    #[test]
    fn expires_in_in_exponent_or_fraction_form_is_refused() {
        for lit in ["1e300", "3.6e3", "3600.0"] {
            let body =
                format!(r#"{{"access_token":"x","token_type":"Bearer","expires_in":{lit}}}"#);
            let e = TokenResponse::from_json(body.as_bytes()).unwrap_err();
            assert_eq!(e.field, Some("expires_in"), "{lit}");
        }
        let body = r#"{"access_token":"x","token_type":"Bearer","expires_in":123456789012345678901234567890}"#;
        assert_eq!(
            TokenResponse::from_json(body.as_bytes())
                .unwrap()
                .expires_in,
            Some(u64::MAX)
        );
    }

    #[test]
    fn error_statuses_are_oauth_errors() {
        let resp = HttpResponse::json(StatusCode::BAD_REQUEST, &json!({"error": "invalid_grant"}));
        assert!(matches!(
            parse_token_response(&resp, &url()),
            Err(Error::OAuth(_))
        ));
        let resp = HttpResponse::json(StatusCode::OK, &json!({"error": "authorization_pending"}));
        assert!(matches!(
            parse_token_response(&resp, &url()),
            Err(Error::OAuth(_))
        ));
        let mut resp = HttpResponse::json(StatusCode::OK, &json!({}));
        resp.body = bytes::Bytes::from_static(b"<html>");
        assert!(matches!(
            parse_token_response(&resp, &url()),
            Err(Error::Response(_))
        ));
    }

    #[test]
    fn token_set_expiry_is_absolute() {
        let mut r = TokenResponse::new(AccessToken::new("at"), "Bearer");
        r.expires_in = Some(3600);
        let claims = IdTokenClaims::from_map(
            json!({"iss":"i","sub":"s","aud":"a","exp":2,"iat":1})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
        let jwt = format!(
            "e30.{}.sig",
            crate::jose::b64(
                json!({"iss":"i","sub":"s","aud":"a","exp":2,"iat":1})
                    .to_string()
                    .as_bytes()
            )
        );
        let id = IdToken::new(RawJwt::new(jwt.clone()), claims);
        let set = TokenSet::new(r, id, UnixTime::from_secs(1000));
        assert_eq!(set.expires_at(), Some(UnixTime::from_secs(4600)));
        assert!(set.is_bearer());
        // Serde round trip; Debug shows no token.
        let json = serde_json::to_string(&set).unwrap();
        let back: TokenSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        assert_eq!(back.claims().subject(), "s");
        let dbg = format!("{set:?}");
        assert!(!dbg.contains(&jwt) && !dbg.contains("\"at\""), "{dbg}");
        #[derive(Deserialize)]
        struct Mine {
            iss: String,
        }
        assert_eq!(set.id_token().claims_as::<Mine>().unwrap().iss, "i");
    }

    #[test]
    fn context_debug_hides_the_nonce_and_subject() {
        let c = ValidationContext::new(Nonce::new("the-nonce"), UnixTime::from_secs(5))
            .with_expected_subject(Some("the-sub".into()));
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("the-nonce") && !dbg.contains("the-sub"),
            "{dbg}"
        );
        let back: ValidationContext =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn duplicate_members_are_refused() {
        for body in [
            r#"{"access_token":"x","token_type":"DPoP","token_type":"Bearer"}"#,
            r#"{"access_token":"x","access_token":"y","token_type":"Bearer"}"#,
            r#"{"access_token":"x","token_type":"Bearer","id_token":"a.b.c","id_token":"d.e.f"}"#,
            // At any depth (issue 22): an extension member the application
            // reads through `extra`.
            r#"{"access_token":"x","token_type":"Bearer","authorization_details":[{"type":"a","type":"b"}]}"#,
        ] {
            let e = TokenResponse::from_json(body.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("more than once"), "{e}");
            let mut resp = HttpResponse::json(StatusCode::OK, &Value::Object(Default::default()));
            resp.body = bytes::Bytes::from(body);
            assert!(matches!(
                parse_token_response(&resp, &url()),
                Err(Error::Response(_))
            ));
        }
    }
}
