//! The Authentication Request (draft §"Authentication Request"): the URL the
//! browser is sent to, and the [`PendingAuthorization`] the RP keeps until
//! the browser comes back.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{ConfigError, Error};
use crate::proto::assurance::ClaimsRequest;
use crate::proto::discovery::ProviderMetadata;
use crate::random::RandomSource;
use crate::random::random_b64url;
use crate::secret::{Nonce, PkceVerifier, State};
use crate::time::UnixTime;

/// Bytes of randomness in `state`, `nonce` and the PKCE verifier (256 bits;
/// the draft and RFC 6749 ask for at least 128).
pub(crate) const RANDOM_BYTES: usize = 32;

/// The `response_type` of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ResponseType {
    /// `deferred_code`: the OP always answers with a `deferred_code`.
    #[default]
    #[serde(rename = "deferred_code")]
    DeferredCode,
    /// `deferred_code code`: the OP decides whether to defer (`deferred_code`)
    /// or to answer at once with a plain `code`.
    #[serde(rename = "deferred_code code")]
    DeferredCodeOrCode,
    /// `code`: the ordinary authorization code flow. The IETF profile
    /// defers at the token endpoint instead
    /// ([`DtrClient::redeem_code`](crate::DtrClient::redeem_code)).
    #[serde(rename = "code")]
    Code,
}

impl ResponseType {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseType::DeferredCode => "deferred_code",
            ResponseType::DeferredCodeOrCode => "deferred_code code",
            ResponseType::Code => "code",
        }
    }
}

/// How the OP returns the response to the redirect URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResponseMode {
    /// In the query string of a GET (the SDK's default; the draft defines none).
    #[default]
    Query,
    /// In an `application/x-www-form-urlencoded` POST body (OAuth 2.0 Form
    /// Post Response Mode).
    FormPost,
}

impl ResponseMode {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseMode::Query => "query",
            ResponseMode::FormPost => "form_post",
        }
    }
}

/// What the RP must remember between sending the browser away and its
/// return: keep it in the user's session (server-side, or encrypted).
///
/// It serialises with serde; its `Debug` shows only fingerprints of `state`,
/// `nonce` and the PKCE verifier.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) redirect_uri: Url,
    pub(crate) state: State,
    pub(crate) nonce: Nonce,
    pub(crate) pkce_verifier: PkceVerifier,
    pub(crate) response_type: ResponseType,
    pub(crate) response_mode: ResponseMode,
    pub(crate) max_age: Option<u64>,
    pub(crate) created_at: UnixTime,
    /// The typed `claims` request (identity assurance), kept to check the
    /// verified claims that come back. Boxed: rare and large.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) claims_request: Option<Box<ClaimsRequest>>,
    /// Whether the request carried the `completion_mode=deferred` hint
    /// (IETF profile): the token request must then opt in too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) completion_mode_hint: bool,
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "redirect_uri",
                &crate::proto::message::endpoint_label(&self.redirect_uri),
            )
            .field("state", &self.state)
            .field("nonce", &self.nonce)
            .field("pkce_verifier", &self.pkce_verifier)
            .field("response_type", &self.response_type)
            .field("response_mode", &self.response_mode)
            .field("max_age", &self.max_age)
            .field("created_at", &self.created_at)
            .field("claims_request", &self.claims_request.is_some())
            .field("completion_mode_hint", &self.completion_mode_hint)
            .finish()
    }
}

impl PendingAuthorization {
    /// The issuer the request was sent to.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    /// The client that sent it.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
    /// The redirect URI the response must arrive at.
    pub fn redirect_uri(&self) -> &Url {
        &self.redirect_uri
    }
    /// The `state` sent.
    pub fn state(&self) -> &State {
        &self.state
    }
    /// The `nonce` sent; every ID token of this flow must carry it.
    pub fn nonce(&self) -> &Nonce {
        &self.nonce
    }
    /// The PKCE verifier.
    pub fn pkce_verifier(&self) -> &PkceVerifier {
        &self.pkce_verifier
    }
    /// Whether the request carried the IETF `completion_mode=deferred`
    /// hint: the code must then be redeemed with the opt-in too
    /// ([`DtrClient::redeem_code`](crate::DtrClient::redeem_code)).
    pub fn completion_mode_hint(&self) -> bool {
        self.completion_mode_hint
    }
    /// The requested `response_type`.
    pub fn response_type(&self) -> ResponseType {
        self.response_type
    }
    /// The requested `response_mode`.
    pub fn response_mode(&self) -> ResponseMode {
        self.response_mode
    }
    /// The requested `max_age`, in seconds.
    pub fn max_age(&self) -> Option<u64> {
        self.max_age
    }
    /// When the request was built.
    pub fn created_at(&self) -> UnixTime {
        self.created_at
    }
    /// The typed `claims` request sent with
    /// [`AuthorizationRequestBuilder::claims_request`], if any.
    pub fn claims_request(&self) -> Option<&ClaimsRequest> {
        self.claims_request.as_deref()
    }
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub(crate) fn pkce_challenge(verifier: &PkceVerifier) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.secret().as_bytes());
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// Parameters the SDK sets itself; extra parameters may not override them.
const RESERVED: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "prompt",
    "max_age",
    "acr_values",
    "claims",
    "login_hint",
    "ui_locales",
    "completion_mode",
];

/// What an authentication request needs from the client that sends it: the
/// OP's metadata, the client's registration, randomness and the time.
#[derive(Clone, Copy)]
pub(crate) struct AuthorizeContext<'a> {
    pub(crate) metadata: &'a ProviderMetadata,
    pub(crate) client_id: &'a str,
    pub(crate) redirect_uri: &'a Url,
    pub(crate) rng: &'a dyn RandomSource,
    pub(crate) now: UnixTime,
    /// The client's profile: IETF requests `response_type=code`.
    pub(crate) profile: crate::proto::profile::Profile,
    /// Whether IETF requests carry the `completion_mode=deferred` hint.
    pub(crate) completion_mode_hint: bool,
}

/// Builds an Authentication Request. Get one from
/// [`DtrClient::authorize`](crate::DtrClient::authorize).
///
/// `state`, `nonce` and a PKCE S256 challenge are always generated fresh;
/// `scope` always contains `openid`.
#[must_use = "call .build() to get the URL"]
pub struct AuthorizationRequestBuilder<'a> {
    ctx: AuthorizeContext<'a>,
    scopes: Vec<String>,
    response_type: ResponseType,
    response_mode: ResponseMode,
    prompt: Option<String>,
    max_age: Option<u64>,
    acr_values: Option<String>,
    claims: Option<serde_json::Value>,
    claims_request: Option<ClaimsRequest>,
    login_hint: Option<String>,
    ui_locales: Option<String>,
    extra: Vec<(String, String)>,
    completion_mode_hint: bool,
}

impl fmt::Debug for AuthorizationRequestBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationRequestBuilder")
            .field("scopes", &self.scopes)
            .field("response_type", &self.response_type)
            .field("response_mode", &self.response_mode)
            .finish_non_exhaustive()
    }
}

impl<'a> AuthorizationRequestBuilder<'a> {
    pub(crate) fn new(ctx: AuthorizeContext<'a>) -> Self {
        let ietf = ctx.profile == crate::proto::profile::Profile::Ietf;
        AuthorizationRequestBuilder {
            ctx,
            scopes: vec!["openid".to_owned()],
            response_type: if ietf {
                ResponseType::Code
            } else {
                ResponseType::default()
            },
            completion_mode_hint: ietf && ctx.completion_mode_hint,
            response_mode: ResponseMode::default(),
            prompt: None,
            max_age: None,
            acr_values: None,
            claims: None,
            claims_request: None,
            login_hint: None,
            ui_locales: None,
            extra: Vec::new(),
        }
    }

    /// Adds scopes (space-separated); `openid` is always present and
    /// duplicates are dropped.
    pub fn scope(mut self, scope: &str) -> Self {
        for s in scope.split_ascii_whitespace() {
            if !self.scopes.iter().any(|have| have == s) {
                self.scopes.push(s.to_owned());
            }
        }
        self
    }

    /// Sends (or not) the IETF `completion_mode=deferred` hint with the
    /// request (default: on for IETF-profile clients, unless the builder's
    /// [`completion_mode_hint`](crate::DtrClientBuilder::completion_mode_hint)
    /// turned it off). The token request then must opt in as well, which
    /// [`DtrClient::redeem_code`](crate::DtrClient::redeem_code) does and
    /// [`DtrClient::exchange_code`](crate::DtrClient::exchange_code)
    /// refuses to skip.
    pub fn completion_mode_hint(mut self, hint: bool) -> Self {
        self.completion_mode_hint = hint;
        self
    }

    /// Sets the `response_type` (default `deferred_code`; `code` for an
    /// IETF-profile client).
    pub fn response_type(mut self, rt: ResponseType) -> Self {
        self.response_type = rt;
        self
    }

    /// Sets the `response_mode` (default `query`).
    pub fn response_mode(mut self, mode: ResponseMode) -> Self {
        self.response_mode = mode;
        self
    }

    /// Sets `prompt` (e.g. `"login"`, `"consent"`).
    pub fn prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }

    /// Sets `max_age` in seconds. The ID token's `auth_time` is then required
    /// and checked against it, relative to the time of this request.
    pub fn max_age(mut self, seconds: u64) -> Self {
        self.max_age = Some(seconds);
        self
    }

    /// Sets `acr_values` (space-separated, in order of preference).
    pub fn acr_values(mut self, acr: impl Into<String>) -> Self {
        self.acr_values = Some(acr.into());
        self
    }

    /// Sets the `claims` request parameter (OIDC Core §5.5), e.g. for
    /// `verified_claims` (OpenID Connect for Identity Assurance).
    pub fn claims(mut self, claims: serde_json::Value) -> Self {
        self.claims = Some(claims);
        self
    }

    /// Requests claims, verified claims (OpenID Connect for Identity
    /// Assurance 1.0) among them, with a typed [`ClaimsRequest`], sent as the
    /// `claims` parameter. At [`build`](Self::build) it is validated and
    /// checked against the OP's metadata (`claims_parameter_supported`,
    /// `verified_claims_supported`, `trust_frameworks_supported`,
    /// `evidence_supported`, `documents_supported`,
    /// `claims_in_verified_claims_supported`, ...):
    /// [`ConfigError::ClaimsRequest`] names what the OP does not support.
    /// The request is remembered through the flow, so that
    /// [`TokenSet::verified_claims`](crate::TokenSet::verified_claims) checks
    /// what comes back against it. Exclusive with [`claims`](Self::claims).
    pub fn claims_request(mut self, request: ClaimsRequest) -> Self {
        self.claims_request = Some(request);
        self
    }

    /// Sets `login_hint`.
    pub fn login_hint(mut self, hint: impl Into<String>) -> Self {
        self.login_hint = Some(hint.into());
        self
    }

    /// Sets `ui_locales` (space-separated BCP 47 tags).
    pub fn ui_locales(mut self, locales: impl Into<String>) -> Self {
        self.ui_locales = Some(locales.into());
        self
    }

    /// Adds any other parameter (e.g. `authorization_details` for RAR, or
    /// `resource`). Parameters the SDK sets itself are refused at `build`.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }

    /// Builds the URL to send the browser to and the state to keep.
    pub fn build(self) -> Result<(Url, PendingAuthorization), Error> {
        let inner = &self.ctx;
        for (name, _) in &self.extra {
            if RESERVED.contains(&name.as_str()) {
                return Err(ConfigError::ReservedParameter(name.clone()).into());
            }
        }
        if let Some(modes) = &inner.metadata.response_modes_supported
            && !modes.iter().any(|m| m == self.response_mode.as_str())
        {
            return Err(ConfigError::Invalid {
                field: "response_mode",
                reason: format!(
                    "the OP does not list `{}` in `response_modes_supported`",
                    self.response_mode.as_str()
                ),
            }
            .into());
        }
        let claims_param = match (&self.claims, &self.claims_request) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    field: "claims",
                    reason: "set either claims() or claims_request(), not both".to_owned(),
                }
                .into());
            }
            (Some(c), None) => Some(c.to_string()),
            (None, Some(r)) => {
                r.check_supported(&inner.metadata.additional)
                    .map_err(ConfigError::ClaimsRequest)?;
                Some(r.to_json_string().map_err(ConfigError::ClaimsRequest)?)
            }
            (None, None) => None,
        };
        let rng = inner.rng;
        let state = State::new(random_b64url(rng, RANDOM_BYTES)?);
        let nonce = Nonce::new(random_b64url(rng, RANDOM_BYTES)?);
        let pkce_verifier = PkceVerifier::new(random_b64url(rng, RANDOM_BYTES)?);

        let mut url = inner.metadata.authorization_endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", self.response_type.as_str())
                .append_pair("client_id", inner.client_id)
                .append_pair("redirect_uri", inner.redirect_uri.as_str())
                .append_pair("scope", &self.scopes.join(" "))
                .append_pair("state", state.secret())
                .append_pair("nonce", nonce.secret())
                .append_pair("code_challenge", &pkce_challenge(&pkce_verifier))
                .append_pair("code_challenge_method", "S256")
                .append_pair("response_mode", self.response_mode.as_str());
            if let Some(p) = &self.prompt {
                q.append_pair("prompt", p);
            }
            if let Some(m) = self.max_age {
                q.append_pair("max_age", &m.to_string());
            }
            if let Some(a) = &self.acr_values {
                q.append_pair("acr_values", a);
            }
            if let Some(c) = &claims_param {
                q.append_pair("claims", c);
            }
            if let Some(h) = &self.login_hint {
                q.append_pair("login_hint", h);
            }
            if let Some(l) = &self.ui_locales {
                q.append_pair("ui_locales", l);
            }
            if self.completion_mode_hint {
                q.append_pair(
                    "completion_mode",
                    crate::proto::ietf::COMPLETION_MODE_DEFERRED,
                );
            }
            for (k, v) in &self.extra {
                q.append_pair(k, v);
            }
        }
        let pending = PendingAuthorization {
            issuer: inner.metadata.issuer.clone(),
            client_id: inner.client_id.to_owned(),
            redirect_uri: inner.redirect_uri.clone(),
            state,
            nonce,
            pkce_verifier,
            response_type: self.response_type,
            response_mode: self.response_mode,
            max_age: self.max_age,
            created_at: inner.now,
            claims_request: self.claims_request.map(Box::new),
            completion_mode_hint: self.completion_mode_hint,
        };
        tracing::debug!(
            state = %pending.state.fingerprint(),
            response_type = pending.response_type.as_str(),
            "built authorization request"
        );
        Ok((url, pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc7636_appendix_b() {
        let v = PkceVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            pkce_challenge(&v),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn wire_values() {
        assert_eq!(
            ResponseType::DeferredCodeOrCode.as_str(),
            "deferred_code code"
        );
        assert_eq!(
            serde_json::to_string(&ResponseType::DeferredCodeOrCode).unwrap(),
            "\"deferred_code code\""
        );
        assert_eq!(
            serde_json::to_string(&ResponseMode::FormPost).unwrap(),
            "\"form_post\""
        );
    }
}
