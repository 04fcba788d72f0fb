//! The Authentication Request (draft §"Authentication Request"): the URL the
//! browser is sent to, and the [`PendingAuthorization`] the RP keeps until
//! the browser comes back.

use std::fmt;
use std::future::Future;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{ConfigError, Error, ParError};
use crate::jose::dpop::{DpopRef, FlowDpop};
use crate::jose::signer::UnsignedJws;
use crate::jose::{Algorithm, DpopKey};
use crate::proto::assurance::ClaimsRequest;
use crate::proto::discovery::ProviderMetadata;
use crate::proto::par::{ParRequest, PushTransport};
use crate::proto::request_object::RequestObjectSigning;
use crate::random::RandomSource;
use crate::random::random_b64url;
use crate::secret::{Nonce, PkceVerifier, State};
use crate::time::UnixTime;

/// Bytes of randomness in `state`, `nonce` and the PKCE verifier (256 bits;
/// the draft and RFC 6749 ask for at least 128).
pub(crate) const RANDOM_BYTES: usize = 32;

/// The `response_type` of the request.
///
/// ```
/// use oidc_dtr::client::ResponseType;
///
/// // Let the OP answer at once with a plain `code` when it can.
/// let rt = ResponseType::DeferredCodeOrCode;
/// assert_eq!(rt.as_str(), "deferred_code code");
/// match rt {
///     ResponseType::DeferredCode => println!("always deferred"),
///     ResponseType::DeferredCodeOrCode => println!("deferred, or a code at once"),
///     ResponseType::Code => println!("the IETF profile's plain code flow"),
///     _ => println!("a newer response type"),
/// }
/// ```
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
///
/// ```
/// use oidc_dtr::client::ResponseMode;
///
/// let mode = ResponseMode::FormPost; // parameters in a POST body, not the URL
/// assert_eq!(mode.as_str(), "form_post");
/// assert_eq!(ResponseMode::Query.as_str(), "query");
/// ```
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
///
/// ```
/// use oidc_dtr::{DtrClient, PendingAuthorization};
/// use oidc_dtr_testkit::MockOp;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let op = MockOp::start().await?;
/// # let client = DtrClient::builder()
/// #     .issuer(op.issuer())
/// #     .client_id(MockOp::CLIENT_ID)
/// #     .client_secret(MockOp::CLIENT_SECRET)
/// #     .redirect_uri("http://127.0.0.1:9/callback")
/// #     .build()
/// #     .await?;
/// let (_url, pending) = client.authorize().build()?;
/// // Kept in the user's (server-side or encrypted) session until the redirect returns.
/// let session_value = serde_json::to_string(&pending)?;
/// let restored: PendingAuthorization = serde_json::from_str(&session_value)?;
/// assert_eq!(restored, pending);
/// # Ok(()) }
/// ```
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
    /// A pushed request (RFC 9126): until when its `request_uri` is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) request_uri_expires_at: Option<UnixTime>,
    /// A DPoP-bound pushed request (RFC 9449 §10): the key whose thumbprint
    /// was sent as `dpop_jkt`. The OP binds the code to it, so the token
    /// requests of this flow are signed with it. A private key: keep the
    /// pending authorization server-side or encrypted, as its other
    /// secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dpop_key: Option<Box<DpopKey>>,
    /// A pushed request bound to the key of an external DPoP signer
    /// ([`DpopConfig::signer`](crate::client::DpopConfig::signer)): its
    /// thumbprint, sent as `dpop_jkt` (the private key stays with the
    /// signer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dpop_signer_jkt: Option<Box<str>>,
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
            .field("request_uri_expires_at", &self.request_uri_expires_at)
            .field("dpop_jkt", &self.dpop_jkt())
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
    /// Whether the request was pushed (RFC 9126).
    pub fn is_pushed(&self) -> bool {
        self.request_uri_expires_at.is_some()
    }
    /// For a pushed request: until when the redirect URL (its
    /// `request_uri`, from the OP's `expires_in`, RFC 9126 §2.2) is valid.
    /// A browser that reaches the OP later gets an error: push again (a
    /// `request_uri` is never reused).
    pub fn request_uri_expires_at(&self) -> Option<UnixTime> {
        self.request_uri_expires_at
    }
    /// For a DPoP-bound pushed request: the thumbprint sent as `dpop_jkt`
    /// (RFC 9449 §10), which the code is bound to.
    pub fn dpop_jkt(&self) -> Option<&str> {
        self.dpop().map(DpopRef::thumbprint)
    }

    /// The DPoP key a pushed request bound its code to, as kept.
    pub(crate) fn dpop(&self) -> Option<DpopRef<'_>> {
        DpopRef::from_stored(self.dpop_key.as_deref(), self.dpop_signer_jkt.as_deref())
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
    "request",
    "request_uri",
    "dpop_jkt",
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
    /// Whether requests must be pushed (the builder's setting, FAPI 2.0, or
    /// the OP's `require_pushed_authorization_requests`).
    pub(crate) par_required: bool,
    /// Sends pushed requests (the client layer).
    pub(crate) pusher: Option<&'a dyn PushTransport>,
    /// Who signs request objects (JAR), and their lifetime.
    pub(crate) request_object: Option<&'a RequestObjectSigning>,
    /// The DPoP algorithm, when the client uses DPoP: a pushed request is
    /// then bound to a fresh key (`dpop_jkt`).
    pub(crate) dpop_algorithm: Option<Algorithm>,
    /// The thumbprint of the external DPoP signer, when one is configured:
    /// a pushed request is then bound to its key instead.
    pub(crate) dpop_signer_jkt: Option<&'a str>,
}

/// A push, checked and ready to be signed and sent.
struct ReadyPush<'a> {
    pusher: &'a dyn PushTransport,
    endpoint: Url,
    params: Vec<(String, String)>,
    /// The request object to sign, and its signer.
    unsigned: Option<(UnsignedJws, &'a dyn crate::jose::Signer)>,
    pending: PendingAuthorization,
    key: Option<FlowDpop>,
    authorization_endpoint: Url,
    now: UnixTime,
}

/// The parameters of a request, before they are put in a URL, a request
/// object or a push.
struct Prepared {
    params: Vec<(String, String)>,
    pending: PendingAuthorization,
}

/// Builds an Authentication Request. Get one from
/// [`DtrClient::authorize`](crate::DtrClient::authorize).
///
/// `state`, `nonce` and a PKCE S256 challenge are always generated fresh;
/// `scope` always contains `openid`.
///
/// ```
/// use oidc_dtr::DtrClient;
/// use oidc_dtr::client::ResponseType;
/// use oidc_dtr_testkit::MockOp;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let op = MockOp::start().await?;
/// # let client = DtrClient::builder()
/// #     .issuer(op.issuer())
/// #     .client_id(MockOp::CLIENT_ID)
/// #     .client_secret(MockOp::CLIENT_SECRET)
/// #     .redirect_uri("http://127.0.0.1:9/callback")
/// #     .build()
/// #     .await?;
/// let (url, pending) = client
///     .authorize()
///     .scope("profile email")
///     .response_type(ResponseType::DeferredCodeOrCode)
///     .max_age(3_600)
///     .login_hint("alice@example.com")
///     .build()?;
/// assert!(url.query().unwrap().contains("scope=openid+profile+email"));
/// assert_eq!(pending.max_age(), Some(3_600));
/// # Ok(()) }
/// ```
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

    /// Builds the URL to send the browser to and the state to keep: every
    /// parameter in the query, or, when the client signs request objects
    /// (JAR, RFC 9101), a `request` parameter holding them all.
    ///
    /// When the client pushes its requests (the builder's
    /// [`pushed_authorization_requests`](crate::DtrClientBuilder::pushed_authorization_requests),
    /// [`fapi2`](crate::DtrClientBuilder::fapi2), or an OP that says
    /// `require_pushed_authorization_requests`), this is refused with
    /// [`ConfigError::Invalid`] (field `pushed_authorization_requests`):
    /// use [`push`](Self::push) or [`build_or_push`](Self::build_or_push).
    pub fn build(self) -> Result<(Url, PendingAuthorization), Error> {
        if self.ctx.par_required {
            return Err(ConfigError::Invalid {
                field: "pushed_authorization_requests",
                reason: "this client pushes its authorization requests (PAR, RFC 9126): use push().await or build_or_push().await".into(),
            }
            .into());
        }
        let ctx = self.ctx;
        let Prepared { params, pending } = self.prepare()?;
        let jwt = match ctx.request_object {
            None => None,
            Some(ro) => {
                let unsigned = signed_request(&ctx, ro, &params)?;
                let ready = if ro.in_process {
                    unsigned.sign_now(ro.signer.as_ref())
                } else {
                    None
                };
                match ready {
                    Some(r) => Some(r?),
                    None => {
                        return Err(ConfigError::Invalid {
                            field: "request_object",
                            reason: "the request-object signer is asynchronous (a key outside the process): use build_or_push().await".into(),
                        }
                        .into());
                    }
                }
            }
        };
        Ok((front_channel_url(&ctx, &params, jwt.as_deref()), pending))
    }

    /// [`build`](Self::build), awaiting the request-object signer.
    async fn build_awaiting_signer(self) -> Result<(Url, PendingAuthorization), Error> {
        let ctx = self.ctx;
        let Prepared { params, pending } = self.prepare()?;
        let jwt = match ctx.request_object {
            None => None,
            Some(ro) => Some(
                signed_request(&ctx, ro, &params)?
                    .sign_with(ro.signer.as_ref())
                    .await?,
            ),
        };
        Ok((front_channel_url(&ctx, &params, jwt.as_deref()), pending))
    }

    /// Pushes the request to the OP's `pushed_authorization_request_endpoint`
    /// (PAR, RFC 9126 §2) and returns the URL to send the browser to, which
    /// carries only `client_id` and the one-time `request_uri` (RFC 9126 §4),
    /// and the state to keep.
    ///
    /// The push is authenticated as the token endpoint's requests are. With
    /// a request-object key, the pushed form holds one signed `request`
    /// (RFC 9126 §3). When the client uses DPoP, a fresh key is generated,
    /// its thumbprint is sent as `dpop_jkt` and the push carries a DPoP
    /// proof of it (RFC 9449 §10): the OP binds the code to that key, which
    /// the [`PendingAuthorization`] keeps for the token requests of this
    /// flow.
    ///
    /// Every call pushes again: a `request_uri` is never reused. How long
    /// the URL stays valid is
    /// [`PendingAuthorization::request_uri_expires_at`].
    ///
    /// Errors: [`ParError`] (no endpoint, an OAuth error such as
    /// `invalid_request_object`, a status other than `201`, no
    /// `request_uri`), or the usual HTTP errors.
    ///
    /// Cancel safety: safe; dropped, the pushed request is simply never
    /// used (it expires at the OP).
    ///
    /// ```no_run
    /// # async fn demo(client: oidc_dtr::DtrClient) -> Result<(), oidc_dtr::Error> {
    /// let (url, pending) = client.authorize().scope("profile").push().await?;
    /// // Send the browser to `url` (only `client_id` and `request_uri`) before
    /// // `pending.request_uri_expires_at()`; keep `pending` in the session.
    /// # let _ = (url, pending); Ok(()) }
    /// ```
    pub fn push(
        self,
    ) -> impl Future<Output = Result<(Url, PendingAuthorization), Error>> + Send + 'a {
        let ready = self.prepare_push();
        async move {
            let ReadyPush {
                pusher,
                endpoint,
                params,
                unsigned,
                mut pending,
                key,
                authorization_endpoint,
                now,
            } = ready?;
            // A request object is signed (and, by an external signer,
            // awaited) before anything is sent: a failing signer gives
            // `Error::Signer` and the builder's inputs can be pushed again.
            let request_object = match unsigned {
                None => None,
                Some((unsigned, signer)) => Some(unsigned.sign_with(signer).await?),
            };
            let request = ParRequest {
                endpoint: endpoint.clone(),
                params: crate::proto::par::par_form(&params, request_object),
            };
            let resp = pusher
                .send_par(request, key.as_ref().map(FlowDpop::as_ref))
                .await?;
            let answer = crate::proto::par::parse_par_response(&resp, &endpoint)?;
            pending.request_uri_expires_at = Some(now.saturating_add(answer.expires_in));
            (pending.dpop_key, pending.dpop_signer_jkt) = FlowDpop::into_stored(key);
            let url = crate::proto::par::redirect_url(
                &authorization_endpoint,
                &pending.client_id,
                &answer.request_uri,
            );
            tracing::debug!(
                state = %pending.state.fingerprint(),
                expires_in_secs = answer.expires_in.as_secs(),
                "pushed authorization request"
            );
            Ok((url, pending))
        }
    }

    /// [`push`](Self::push) when the client pushes its requests,
    /// [`build`](Self::build) otherwise.
    pub async fn build_or_push(self) -> Result<(Url, PendingAuthorization), Error> {
        if self.ctx.par_required {
            self.push().await
        } else {
            self.build_awaiting_signer().await
        }
    }

    /// Everything a push needs, checked before anything is sent.
    fn prepare_push(self) -> Result<ReadyPush<'a>, Error> {
        let ctx = self.ctx;
        let endpoint = ctx
            .metadata
            .pushed_authorization_request_endpoint
            .clone()
            .ok_or(ParError::NoEndpoint)?;
        let pusher = ctx.pusher.ok_or(ParError::NoEndpoint)?;
        let Prepared {
            mut params,
            pending,
        } = self.prepare()?;
        let key = match (ctx.dpop_algorithm, ctx.dpop_signer_jkt) {
            (None, _) => None,
            (Some(_), Some(jkt)) => Some(FlowDpop::Signer(jkt.to_owned())),
            (Some(alg), None) => Some(FlowDpop::Key(Box::new(DpopKey::generate(alg).map_err(
                |e| ConfigError::Invalid {
                    field: "dpop",
                    reason: e.to_string(),
                },
            )?))),
        };
        if let Some(key) = &key {
            params.push(("dpop_jkt".to_owned(), key.thumbprint().to_owned()));
        }
        let unsigned = match ctx.request_object {
            None => None,
            Some(ro) => Some((signed_request(&ctx, ro, &params)?, ro.signer.as_ref())),
        };
        Ok(ReadyPush {
            pusher,
            endpoint,
            params,
            unsigned,
            pending,
            key,
            authorization_endpoint: ctx.metadata.authorization_endpoint.clone(),
            now: ctx.now,
        })
    }

    /// The parameters and the state to keep, checked.
    fn prepare(self) -> Result<Prepared, Error> {
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

        let mut params: Vec<(String, String)> = Vec::with_capacity(16);
        {
            let mut q = |k: &str, v: &str| params.push((k.to_owned(), v.to_owned()));
            q("response_type", self.response_type.as_str());
            q("client_id", inner.client_id);
            q("redirect_uri", inner.redirect_uri.as_str());
            q("scope", &self.scopes.join(" "));
            q("state", state.secret());
            q("nonce", nonce.secret());
            q("code_challenge", &pkce_challenge(&pkce_verifier));
            q("code_challenge_method", "S256");
            q("response_mode", self.response_mode.as_str());
            if let Some(p) = &self.prompt {
                q("prompt", p);
            }
            if let Some(m) = self.max_age {
                q("max_age", &m.to_string());
            }
            if let Some(a) = &self.acr_values {
                q("acr_values", a);
            }
            if let Some(c) = &claims_param {
                q("claims", c);
            }
            if let Some(h) = &self.login_hint {
                q("login_hint", h);
            }
            if let Some(l) = &self.ui_locales {
                q("ui_locales", l);
            }
            if self.completion_mode_hint {
                q(
                    "completion_mode",
                    crate::proto::ietf::COMPLETION_MODE_DEFERRED,
                );
            }
            for (k, v) in &self.extra {
                q(k, v);
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
            request_uri_expires_at: None,
            dpop_key: None,
            dpop_signer_jkt: None,
        };
        tracing::debug!(
            state = %pending.state.fingerprint(),
            response_type = pending.response_type.as_str(),
            "built authorization request"
        );
        Ok(Prepared { params, pending })
    }
}

/// The request object (RFC 9101) holding `params`, to be signed.
fn signed_request(
    ctx: &AuthorizeContext<'_>,
    ro: &RequestObjectSigning,
    params: &[(String, String)],
) -> Result<UnsignedJws, Error> {
    use crate::proto::request_object::{
        RequestObjectContext, request_object_claims, unsigned_request_object,
    };
    let claims = request_object_claims(
        params,
        &RequestObjectContext {
            client_id: ctx.client_id,
            issuer: &ctx.metadata.issuer,
            now: ctx.now,
            lifetime: ro.lifetime,
            jti: random_b64url(ctx.rng, 16)?,
        },
    )?;
    unsigned_request_object(ro.signer.as_ref(), &claims)
}

/// The URL of a front-channel request: every parameter in the query, or,
/// with a signed request object, `client_id`, `response_type`, `scope` and
/// `request`.
fn front_channel_url(
    ctx: &AuthorizeContext<'_>,
    params: &[(String, String)],
    jwt: Option<&str>,
) -> Url {
    let mut url = ctx.metadata.authorization_endpoint.clone();
    match jwt {
        None => {
            url.query_pairs_mut().extend_pairs(params.iter());
        }
        Some(jwt) => {
            // RFC 9101 §5 keeps `client_id` outside; OpenID Connect
            // Core §6.1 also requires `response_type` and a `scope`
            // with `openid` there, matching the request object's.
            let outer = |name: &str| {
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or_default()
            };
            url.query_pairs_mut()
                .append_pair("client_id", ctx.client_id)
                .append_pair("response_type", outer("response_type"))
                .append_pair("scope", outer("scope"))
                .append_pair("request", jwt);
        }
    }
    url
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
