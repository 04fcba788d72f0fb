//! The client: one Relying Party's view of one OpenID Provider, and how
//! to configure it.
//!
//! [`DtrClient`] is built once per OP with [`DtrClientBuilder`] (usually
//! from the OP's discovery document) and shared: it is cheap to clone and
//! every method takes `&self`. An [`AuthHandle`] follows one pending
//! authentication.
//!
//! The configuration types the builder takes live here too:
//!
//! - [`HttpConfig`]: timeouts, body caps, extra trust roots of the one HTTP
//!   client the SDK uses (no redirects, https only except loopback);
//! - [`DpopConfig`]: sender-constrained tokens (RFC 9449), on by default for
//!   public clients;
//! - [`ClientAuth`] and [`AssertionAudience`]: how the
//!   client authenticates at the token endpoint;
//! - [`AuthorizationRequestBuilder`], [`ResponseType`] and [`ResponseMode`]:
//!   the authorization request;
//! - [`CancellationConfig`] and [`CancelEncoding`]: how the OP is told that
//!   the user gave up;
//! - [`Compat`]: tolerances for OPs that bend the draft.
//!
//! ```no_run
//! use oidc_dtr::DtrClient;
//! use oidc_dtr::client::HttpConfig;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), oidc_dtr::Error> {
//! let client = DtrClient::builder()
//!     .issuer("https://op.example")
//!     .client_id("my-rp")
//!     .redirect_uri("https://rp.example/callback")
//!     .http_config(HttpConfig::default())
//!     .build()
//!     .await?;
//! # let _ = client; Ok(())
//! # }
//! ```

// Size note: Kept whole (~1140 lines): this is the `DtrClient` type and its methods;
// the builder, the handle and the feature-specific methods live in sibling
// files already.

mod back_channel;
mod builder;
mod dpop;
mod fapi;
mod handle;
mod ietf;
mod par;
mod userinfo;
mod validation;

pub use builder::{DpopConfig, DtrClientBuilder};
pub use fapi::{FAPI2_ALGORITHMS, SecurityProfile};
pub use handle::AuthHandle;

pub use crate::engine::transport::{ClientIdentity, HttpConfig};
pub use crate::proto::authorize::{AuthorizationRequestBuilder, ResponseMode, ResponseType};
pub use crate::proto::cancel::{CancelEncoding, CancellationConfig};
pub use crate::proto::client_auth::AssertionAudience;
pub use crate::proto::exchange::Compat;
pub use crate::proto::request_object::{
    DEFAULT_REQUEST_OBJECT_LIFETIME, MAX_REQUEST_OBJECT_LIFETIME,
};

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use http::header::HeaderMap;
use tracing::Instrument as _;
use url::Url;

use crate::client::back_channel::{JWKS_RETRIES, JWKS_RETRY_PAUSE};
use crate::engine::driver::{DriverHandle, PollEvent, PollStatus, WaitError};
use crate::engine::jwks_cache::{JwksCache, JwksSnapshot};
use crate::engine::transport::HttpEdge;
use crate::error::{
    CallbackError, ConfigError, Error, LiveAuthentication, NotCancelledReason, ValidationError,
};
use crate::jose::DpopKey;
use crate::jose::dpop::FlowDpop;
use crate::ping::PingReceiver;
use crate::proto::authorize::{AuthorizeContext, PendingAuthorization};
use crate::proto::callback::{self, Acknowledgment, CallbackResponse, CodeResponse};
use crate::proto::cancel::CancelResult;
use crate::proto::client_auth::ClientAuth;
use crate::proto::discovery::ProviderMetadata;
use crate::proto::exchange::{self, DeferredAuthentication, NOTIFICATION_TOKEN_BYTES};
use crate::proto::id_token::{IdTokenValidator, ValidationOptions};
use crate::proto::message::HttpRequest;
use crate::proto::poll::{Outcome, PollConfig, PollMachine};
use crate::proto::profile::Profile;
use crate::proto::token::{IdToken, TokenResponse, TokenSet, ValidationContext};
use crate::random::{RandomSource, random_b64url};
use crate::secret::DeferredId;
use crate::secret::{AccessToken, DeferredNotificationToken, RawJwt};
use crate::store::{Record, Store, StoreError};
use crate::time::{Clock, UnixTime};

/// The span of one Deferred Code Exchange: the `state`'s fingerprint at
/// first, the new `deferred_auth_id`'s fingerprint once the OP answered.
fn exchange_span(ack: &Acknowledgment) -> tracing::Span {
    tracing::info_span!(
        "dtr.exchange",
        state = %ack.pending.state.fingerprint(),
        deferred_auth_id = tracing::field::Empty,
    )
}

/// A Relying Party's client for one OpenID Provider's Deferred Token
/// Response flow.
///
/// Cheap to clone (an `Arc`); share one per OP across the application.
///
/// ```no_run
/// # async fn demo() -> Result<(), oidc_dtr::Error> {
/// use oidc_dtr::{CallbackResponse, DtrClient};
///
/// let client = DtrClient::builder()
///     .issuer("https://op.example.com")
///     .client_id("s6BhdRkqt3")
///     .client_secret("7Fjfp0ZBr1KtDRbnfVdmIw")
///     .redirect_uri("https://rp.example.com/cb")
///     .build()
///     .await?;
///
/// let (url, pending) = client.authorize().scope("profile").build()?;
/// // ... send the browser to `url`, keep `pending` in the session ...
/// # let query = "";
/// match client.callback(&pending, query)? {
///     CallbackResponse::Acknowledgment(ack) => {
///         let auth = client.exchange(ack).await?;
///         println!("the OP is deciding; deadline {:?}", auth.expires_at());
///     }
///     CallbackResponse::Code(code) => {
///         // `deferred_code code` and the OP answered at once.
///         let tokens = client.exchange_code(code).await?;
///         println!("signed in: {}", tokens.claims().subject());
///     }
///     CallbackResponse::Error(e) => println!("the OP refused: {e}"),
///     _ => println!("a response this version does not know"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DtrClient {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub(crate) metadata: ProviderMetadata,
    pub(crate) client_id: String,
    pub(crate) auth: ClientAuth,
    pub(crate) redirect_uri: Url,
    pub(crate) notification_endpoint: Option<Url>,
    pub(crate) http: HttpEdge,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: Arc<dyn RandomSource>,
    pub(crate) compat: Compat,
    pub(crate) validator: IdTokenValidator,
    pub(crate) jwks: JwksCache,
    pub(crate) dpop: DpopConfig,
    /// The external DPoP signers, checked.
    pub(crate) dpop_signers: builder::DpopSigners,
    /// The latest `DPoP-Nonce` per server (`scheme://host:port`).
    pub(crate) dpop_nonces: Mutex<HashMap<String, String>>,
    pub(crate) cancellation: Option<CancellationConfig>,
    pub(crate) poll_config: PollConfig,
    pub(crate) store: Arc<dyn Store>,
    /// The profile new authentications start under.
    pub(crate) profile: Profile,
    /// The AS's `revocation_endpoint` (IETF cancellation).
    pub(crate) revocation_endpoint: Option<Url>,
    /// Whether IETF callbacks without a bearer token may wake a poll.
    pub(crate) accept_unauthenticated_callbacks: bool,
    /// Whether IETF authorization requests carry the hint.
    pub(crate) completion_mode_hint: bool,
    pub(crate) driver: DriverHandle<TokenSet>,
    /// Set when the store is shared by a fleet of instances.
    pub(crate) fleet: Option<Arc<crate::engine::fleet::Fleet>>,
    /// Whether authorization requests are pushed (PAR, RFC 9126).
    pub(crate) push_requests: bool,
    /// Who signs request objects (JAR), and their lifetime.
    pub(crate) request_object: Option<crate::proto::request_object::RequestObjectSigning>,
    /// FAPI 2.0 mode (run-time checks: `iss` required, ...).
    pub(crate) fapi2: bool,
    /// What every poll request of this client shares, prepared at the
    /// first poll.
    pub(crate) poll_template: std::sync::OnceLock<back_channel::PollTemplate>,
}

impl fmt::Debug for DtrClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("DtrClient")
            .field("issuer", &i.metadata.issuer)
            .field("client_id", &i.client_id)
            .field("auth", &i.auth)
            .field("redirect_uri", &i.redirect_uri.as_str())
            .field(
                "notification_endpoint",
                &i.notification_endpoint.as_ref().map(Url::as_str),
            )
            .finish_non_exhaustive()
    }
}

impl DtrClient {
    /// Starts configuring a client.
    pub fn builder() -> DtrClientBuilder {
        DtrClientBuilder::default()
    }

    /// The OP's metadata.
    pub fn metadata(&self) -> &ProviderMetadata {
        &self.inner.metadata
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.inner.metadata.issuer
    }

    /// The client identifier.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The redirect URI.
    pub fn redirect_uri(&self) -> &Url {
        &self.inner.redirect_uri
    }

    /// The Deferred Token Response profile this client speaks (asked for,
    /// or chosen from the OP's metadata).
    pub fn profile(&self) -> Profile {
        self.inner.profile
    }

    /// Whether authorization requests are pushed (PAR, RFC 9126): set on
    /// the builder, by FAPI 2.0 mode, or by the OP's
    /// `require_pushed_authorization_requests`.
    pub fn pushes_requests(&self) -> bool {
        self.inner.push_requests
    }

    /// The notification endpoint, when pings are wanted.
    pub fn notification_endpoint(&self) -> Option<&Url> {
        self.inner.notification_endpoint.as_ref()
    }

    /// Starts an Authentication Request. Finish it with
    /// [`build`](AuthorizationRequestBuilder::build) (the URL at once), or,
    /// when the client pushes its requests (PAR: the builder's
    /// [`pushed_authorization_requests`](DtrClientBuilder::pushed_authorization_requests),
    /// [`fapi2`](DtrClientBuilder::fapi2), or an OP that requires it; see
    /// [`pushes_requests`](Self::pushes_requests)), with
    /// [`push`](AuthorizationRequestBuilder::push)`.await`;
    /// [`build_or_push`](AuthorizationRequestBuilder::build_or_push)`.await`
    /// does whichever applies.
    pub fn authorize(&self) -> AuthorizationRequestBuilder<'_> {
        let inner = &self.inner;
        AuthorizationRequestBuilder::new(AuthorizeContext {
            metadata: &inner.metadata,
            client_id: &inner.client_id,
            redirect_uri: &inner.redirect_uri,
            rng: inner.rng.as_ref(),
            now: inner.clock.now(),
            profile: inner.profile,
            completion_mode_hint: inner.completion_mode_hint,
            par_required: inner.push_requests,
            pusher: Some(inner.as_ref()),
            request_object: inner.request_object.as_ref(),
            dpop_algorithm: inner.uses_dpop().then_some(inner.dpop.algorithm),
            dpop_signer_jkt: inner.dpop_signer_jkt(),
        })
    }

    /// Validates a redirect that arrived as a query string (`response_mode`
    /// `query`). `query` may start with `?`; a full URL is also accepted.
    pub fn callback(
        &self,
        pending: &PendingAuthorization,
        query: &str,
    ) -> Result<CallbackResponse, Error> {
        let q = callback::query_of(query);
        self.validate_callback(pending, q.as_bytes(), ResponseMode::Query)
    }

    /// Validates a redirect that arrived as a `form_post` body.
    pub fn callback_form(
        &self,
        pending: &PendingAuthorization,
        body: &[u8],
    ) -> Result<CallbackResponse, Error> {
        self.validate_callback(pending, body, ResponseMode::FormPost)
    }

    fn validate_callback(
        &self,
        pending: &PendingAuthorization,
        input: &[u8],
        mode: ResponseMode,
    ) -> Result<CallbackResponse, Error> {
        let md = &self.inner.metadata;
        let r = callback::validate(
            pending,
            input,
            callback::Expect {
                issuer: &md.issuer,
                client_id: &self.inner.client_id,
                // FAPI 2.0 Security Profile §5.3.3.2: the `iss` of RFC 9207 is required.
                iss_required: md.authorization_response_iss_parameter_supported || self.inner.fapi2,
                mode,
            },
        );
        match &r {
            Ok(CallbackResponse::Acknowledgment(a)) => {
                tracing::debug!(state = %pending.state.fingerprint(), deferred_code = %a.deferred_code.fingerprint(), "callback: acknowledgment");
            }
            Ok(CallbackResponse::Code(_)) => {
                tracing::debug!(state = %pending.state.fingerprint(), "callback: plain code")
            }
            Ok(CallbackResponse::Error(e)) => {
                tracing::info!(state = %pending.state.fingerprint(), error = %e.code, "callback: OP error")
            }
            Err(e) => {
                tracing::warn!(state = %pending.state.fingerprint(), error = %e, "callback rejected")
            }
        }
        Ok(r?)
    }

    /// The Deferred Code Exchange: trades the acknowledgment's `deferred_code`
    /// for a [`DeferredAuthentication`] (its `deferred_auth_id`, absolute
    /// deadline and interval). When a notification endpoint is configured, a
    /// fresh 256-bit `deferred_notification_token` is sent and only its hash
    /// is kept.
    ///
    /// When DPoP is in use (by default for public clients), a fresh key is
    /// generated for this authentication process and kept in the result;
    /// after a DPoP-bound pushed request, the key its `dpop_jkt` named
    /// (kept in the [`PendingAuthorization`]) is used instead.
    ///
    /// The authentication is then handed to the poll engine: get its
    /// outcome with [`wait`](Self::wait) or [`subscribe`](Self::subscribe).
    ///
    /// An interim ID token is validated like final tokens. If it is
    /// invalid, [`Error::InterimIdTokenRejected`]; if it cannot be checked
    /// because the OP's JWK Set stays unreachable through the retries, the
    /// authentication is still stored and tracked (the OP's id is never
    /// dropped) and [`Error::InterimIdTokenUnverified`] carries its id.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future before it completes does not lose the
    /// authentication: the request, the checks of the answer, the store
    /// insert and the hand-over to the poll engine run as a task of their
    /// own and complete regardless. The authentication can then be found in
    /// the store ([`pending_count`](Self::pending_count), events from
    /// [`subscribe`](Self::subscribe)); its outcome is delivered as usual.
    pub async fn exchange(&self, ack: Acknowledgment) -> Result<DeferredAuthentication, Error> {
        let key = self.inner.flow_dpop(&ack.pending)?;
        let span = exchange_span(&ack);
        self.exchange_inner(ack, key).instrument(span).await
    }

    /// [`exchange`](Self::exchange) with a caller-supplied DPoP key (from an
    /// HSM, say) instead of a generated one. After a DPoP-bound pushed
    /// request the code is bound to the key named by `dpop_jkt`: another
    /// key is refused ([`ConfigError::Invalid`], field `dpop`) before
    /// anything is sent.
    ///
    /// Cancel safety: as [`exchange`](Self::exchange).
    pub async fn exchange_with_dpop_key(
        &self,
        ack: Acknowledgment,
        key: DpopKey,
    ) -> Result<DeferredAuthentication, Error> {
        if let Some(bound) = ack.pending.dpop_jkt()
            && bound != key.thumbprint()
        {
            return Err(ConfigError::Invalid {
                field: "dpop",
                reason:
                    "the code is bound to the key of the pushed request (dpop_jkt); use exchange()"
                        .into(),
            }
            .into());
        }
        let span = exchange_span(&ack);
        self.exchange_inner(ack, Some(FlowDpop::Key(Box::new(key))))
            .instrument(span)
            .await
    }

    async fn exchange_inner(
        &self,
        ack: Acknowledgment,
        dpop_key: Option<FlowDpop>,
    ) -> Result<DeferredAuthentication, Error> {
        let inner = &self.inner;
        if ack.pending.issuer != inner.metadata.issuer || ack.pending.client_id != inner.client_id {
            return Err(CallbackError::WrongClient.into());
        }
        // Cancel safety: from the request on, the work runs as a task of
        // its own, so a caller that drops this future (a browser that
        // disconnects from the handler) does not lose the authentication:
        // the OP's answer is still checked, stored and tracked.
        let task = tokio::spawn(
            inner
                .clone()
                .exchange_and_track(ack, dpop_key)
                .instrument(tracing::Span::current()),
        );
        match task.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(WaitError::Stopped.into()),
        }
    }

    /// The plain-code fallback: when `deferred_code code` was requested and
    /// the OP answered at once with a `code`, finishes the authorization code
    /// flow (token request with the PKCE verifier and the redirect URI) and
    /// validates the tokens exactly as a deferred poll's, so the application
    /// handles both answers with one [`TokenSet`].
    ///
    /// When the OP's JWK Set stays unreachable through the quick retries,
    /// the tokens are kept, not dropped: [`Error::TokensHeld`] carries the
    /// handle to [`wait`](Self::wait) on for them once the keys are back.
    ///
    /// ```no_run
    /// # async fn at_the_callback(client: oidc_dtr::DtrClient, code: oidc_dtr::CodeResponse)
    /// # -> Result<(), oidc_dtr::Error> {
    /// use oidc_dtr::{Error, Outcome};
    /// let tokens = match client.exchange_code(code).await {
    ///     Ok(tokens) => tokens,
    ///     // The OP answered, but its keys are unreachable: the tokens are
    ///     // kept (in the store, if any) and validated when the keys are
    ///     // back. Tell the user "almost done", then:
    ///     Err(Error::TokensHeld { handle, .. }) => match client.wait(&handle).await? {
    ///         Outcome::Tokens(tokens) => tokens,
    ///         other => return Err(Error::from(oidc_dtr::error::ConfigError::Invalid {
    ///             field: "example",
    ///             reason: format!("no tokens: {}", other.kind()),
    ///         })),
    ///     },
    ///     Err(other) => return Err(other),
    /// };
    /// println!("signed in: {}", tokens.claims().subject());
    /// # Ok(()) }
    /// ```
    ///
    /// Cancel safety: not cancel safe: the code is single-use and spent
    /// once the request is sent.
    pub async fn exchange_code(&self, code: CodeResponse) -> Result<TokenSet, Error> {
        let inner = &self.inner;
        if code.pending.issuer != inner.metadata.issuer || code.pending.client_id != inner.client_id
        {
            return Err(CallbackError::WrongClient.into());
        }
        if code.pending.completion_mode_hint {
            // The IETF draft: after the hint, a token request without the opt-in
            // is refused by the AS (and the code would be spent for
            // nothing): refused here, before anything is sent.
            return Err(ConfigError::Invalid {
                field: "completion_mode",
                reason: "the authorization request hinted completion_mode=deferred, so the token request must opt in too: redeem this code with redeem_code".into(),
            }
            .into());
        }
        let params = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.code.secret().to_owned()),
            (
                "redirect_uri",
                code.pending.redirect_uri.as_str().to_owned(),
            ),
            (
                "code_verifier",
                code.pending.pkce_verifier.secret().to_owned(),
            ),
        ];
        // A DPoP-bound token from the code flow gets its own fresh key.
        let dpop_key = inner.flow_dpop(&code.pending)?;
        let resp = inner
            .send_token_request(&params, dpop_key.as_ref().map(FlowDpop::as_ref))
            .await?;
        let ctx = ValidationContext::from(&code);
        let origin = crate::proto::exchange::IetfOrigin::from(&code.pending);
        match inner
            .tokens_answered_at_once(&resp, &ctx, dpop_key, origin, Profile::Oidc)
            .await
        {
            Ok(t) => Ok(t),
            Err(e) => {
                tracing::warn!(code = %code.code.fingerprint(), error = %e, "authorization code exchange failed");
                Err(e)
            }
        }
    }

    /// Waits for the outcome of a deferred authentication (the simple
    /// one-flow case; for many, see [`subscribe`](Self::subscribe)).
    ///
    /// Cancel-safe: dropping the future loses nothing; the outcome stays
    /// available to later calls for the retention period
    /// ([`DriverConfig::finished_retention`](crate::poll::DriverConfig::finished_retention)).
    ///
    /// With a shared store (a fleet), the outcome is read from the store,
    /// whichever instance polled: this returns once it is stored there.
    pub async fn wait(&self, id: &DeferredId) -> Result<Outcome<TokenSet>, Error> {
        if self.inner.fleet.is_some() {
            return Ok(crate::engine::fleet::wait_in_store(&self.inner.store, id).await??);
        }
        Ok(self.inner.driver.wait(id).await?)
    }

    /// A handle to one authentication: its own events, its status, its
    /// outcome, its cancellation (see [`AuthHandle`]). For following one
    /// authentication, this replaces filtering [`subscribe`](Self::subscribe)
    /// by id and polling [`poll_status`](Self::poll_status).
    ///
    /// The handle subscribes to the events here, before anything can be
    /// read through it: no event fired after `watch` returns is missed, and
    /// a [`AuthHandle::status`] read afterwards leaves no gap. Call it right
    /// after [`exchange`](Self::exchange) (`client.watch(auth.id())`), or
    /// later, after a restart, with a kept id: an authentication that has
    /// already ended gives a stream with just its outcome.
    ///
    /// With a shared store (a fleet), events come only from the instance
    /// that polls the authentication; the outcome is read from the store.
    ///
    /// An id this client does not know gives a handle whose stream is
    /// empty and whose [`wait`](AuthHandle::wait) fails.
    #[must_use = "a handle does nothing unless its events or outcome are read"]
    pub fn watch(&self, id: &DeferredId) -> AuthHandle {
        AuthHandle::new(self, id)
    }

    /// Progress descriptions and outcomes of every authentication, as they
    /// happen. A subscriber that falls far behind misses events; outcomes
    /// stay available through [`wait`](Self::wait).
    #[must_use = "events are sent only to a receiver that is kept"]
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<PollEvent<TokenSet>> {
        self.inner.driver.subscribe()
    }

    /// Resumes polling an authentication kept from an earlier run (for
    /// example a serialised [`DeferredAuthentication`] and, if you kept it,
    /// its [`PollMachine`]): the deadline stays where the OP set it and the
    /// floor where it was. False if it is already being polled.
    ///
    /// Cancel safety: safe. Dropped before it returns, the authentication
    /// may or may not be tracked; calling it again is harmless.
    pub async fn resume(
        &self,
        auth: DeferredAuthentication,
        state: Option<PollMachine>,
    ) -> Result<bool, Error> {
        if auth.issuer() != self.inner.metadata.issuer || auth.client_id() != self.inner.client_id {
            return Err(CallbackError::WrongClient.into());
        }
        let machine =
            state.unwrap_or_else(|| PollMachine::new(&auth, self.inner.poll_config.clone()));
        if self.inner.fleet.is_some() {
            // A fleet polls what it claims from the store: insert, and the
            // instance that claims it polls it.
            return match self.inner.store.insert(Record::new(auth, machine)).await {
                Ok(()) => Ok(true),
                Err(StoreError::Duplicate { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            };
        }
        match self
            .inner
            .store
            .insert(Record::new(auth.clone(), machine.clone()))
            .await
        {
            Ok(()) | Err(StoreError::Duplicate { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(self.inner.driver.track(auth, machine).await?)
    }

    /// Acknowledges an outcome: the application has taken it (and, say,
    /// committed it to its own database). Until then, every outcome is
    /// handed over again after a restart (at least once delivery; the
    /// [`OutcomeId`](crate::engine::driver::OutcomeId) of a re-delivery is the same).
    /// False for an unknown or unfinished authentication.
    ///
    /// Cancel safety: safe. Dropped, the acknowledgment may or may not be
    /// recorded; acknowledging twice is harmless.
    ///
    /// With a shared store (a fleet), `Ok(true)` only for the one
    /// acknowledgment that marked the outcome delivered: a consumer whose
    /// claim ran out (see [`undelivered`](Self::undelivered)) and that
    /// acknowledges after another consumer did gets `Ok(false)` (a
    /// duplicate, with the same [`OutcomeId`](crate::engine::driver::OutcomeId)).
    pub async fn ack(&self, id: &DeferredId) -> Result<bool, Error> {
        if self.inner.fleet.is_some() {
            let first = self.inner.store.mark_delivered_once(id).await?;
            self.inner.driver.ack(id).await;
            return Ok(first);
        }
        let stored = self.inner.store.mark_delivered(id).await?;
        let in_memory = self.inner.driver.ack(id).await;
        Ok(stored || in_memory)
    }

    /// Outcomes that are stored but not yet acknowledged: after a restart,
    /// those the previous process received but the application never
    /// acknowledged. Call it at start-up and handle them like
    /// [`PollEvent::Finished`] events.
    ///
    /// Cancel safety: safe (it only reads).
    ///
    /// With a shared store (a fleet), outcomes come from the store, each
    /// to one consumer at a time: those returned here are hidden from other
    /// instances for [`FleetConfig::delivery_visibility`](crate::poll::FleetConfig::delivery_visibility),
    /// then handed out again unless acknowledged. A store error gives an
    /// empty list (logged); call again later.
    #[must_use = "these outcomes were never handed to the application"]
    pub async fn undelivered(&self) -> Vec<crate::engine::driver::Delivery<TokenSet>> {
        if let Some(f) = &self.inner.fleet {
            let visibility = f.config().delivery_visibility;
            return match crate::engine::fleet::claim_deliveries(&self.inner.store, visibility).await
            {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "undelivered: the store is unavailable");
                    Vec::new()
                }
            };
        }
        self.inner.driver.undelivered().await
    }

    /// The authentication and its poll state, to keep across a restart
    /// (serialise both; hand them to [`resume`](Self::resume) later). With a
    /// durable store configured, the SDK does this itself.
    ///
    /// Cancel safety: safe (it only reads).
    pub async fn snapshot(&self, id: &DeferredId) -> Option<(DeferredAuthentication, PollMachine)> {
        let t = self.inner.driver.get(id).await?;
        Some((DeferredAuthentication::clone(&t.auth), t.machine))
    }

    /// Where polling of an authentication stands.
    ///
    /// Cancel safety: safe (it only reads).
    #[must_use]
    pub async fn poll_status(&self, id: &DeferredId) -> Option<PollStatus> {
        self.inner.driver.status(id).await
    }

    /// Wakes the poller for an authentication, as a ping does: it polls at
    /// once if the floor has elapsed, else at the floor. False for an
    /// unknown or finished authentication. (The [`PingReceiver`] calls this
    /// after checking the ping's token; call it yourself only for pings you
    /// authenticated another way, e.g. with mTLS.)
    ///
    /// Cancel safety: safe. Dropped, the wake-up may or may not have been
    /// delivered.
    #[must_use = "false: no pending authentication has this id"]
    pub async fn wake(&self, id: &DeferredId) -> bool {
        self.inner.driver.wake(id).await
    }

    /// Cancels an authentication: sends the cancellation request to the OP
    /// when a cancellation endpoint is configured, then stops polling and
    /// delivers [`Outcome::Cancelled`] (unless a poll already in flight
    /// returns the tokens: those are delivered instead, as the OP will not
    /// issue them again).
    ///
    /// The result says whether the OP was told: [`CancelResult::ToldOp`],
    /// or [`CancelResult::LocalOnly`] when no cancellation endpoint is
    /// configured (polling stopped, the OP was not told), or
    /// [`CancelResult::AlreadyFinished`] (nothing sent).
    ///
    /// An IETF-profile authentication is cancelled by revoking its
    /// `deferral_code` at the AS's `revocation_endpoint` (RFC 7009, with a
    /// DPoP proof when the code is bound); when the AS does not list the
    /// deferral-code type in
    /// `revocation_endpoint_token_type_values_supported`, its 200 proves
    /// nothing and the result is [`CancelResult::SentUnconfirmed`].
    ///
    /// If the OP refuses or cannot be reached, the error is returned and
    /// polling goes on: retry, or stop locally with
    /// [`cancel_locally`](Self::cancel_locally).
    pub async fn cancel(&self, id: &DeferredId) -> Result<CancelResult, Error> {
        let inner = &self.inner;
        let Some(tracked) = inner.driver.get(id).await else {
            return Err(WaitError::Unknown.into());
        };
        if tracked.finished || tracked.machine.held_tokens().is_some() {
            // Held tokens: the OP has already answered with them (nothing
            // left to cancel there); they are delivered once validated.
            return Ok(CancelResult::AlreadyFinished);
        }
        let auth = tracked.auth;
        let result = match (
            auth.profile(),
            &inner.revocation_endpoint,
            &inner.cancellation,
        ) {
            (Profile::Ietf, Some(endpoint), _) => {
                inner.send_revocation(endpoint, &auth).await.inspect_err(|e| {
                    tracing::warn!(deferred_auth_id = %id.fingerprint(), error = %e, "revocation of the deferral code failed");
                })?;
                if crate::proto::profile::revocation_supports_deferral_code(&inner.metadata) {
                    tracing::info!(deferred_auth_id = %id.fingerprint(), "cancelled at the AS (revocation)");
                    CancelResult::ToldOp
                } else {
                    tracing::warn!(deferred_auth_id = %id.fingerprint(), "revocation sent, but the AS does not list the deferral-code token type: its 200 does not confirm the cancellation");
                    CancelResult::SentUnconfirmed
                }
            }
            (Profile::Ietf, None, _) => {
                tracing::info!(deferred_auth_id = %id.fingerprint(), "cancelled locally; the AS publishes no revocation_endpoint, so it was not told");
                CancelResult::LocalOnly
            }
            (_, _, Some(cfg)) => {
                inner.send_cancel(cfg, &auth).await.inspect_err(|e| {
                    tracing::warn!(deferred_auth_id = %id.fingerprint(), error = %e, "cancellation request failed");
                })?;
                tracing::info!(deferred_auth_id = %id.fingerprint(), "cancelled at the OP");
                CancelResult::ToldOp
            }
            (_, _, None) => {
                tracing::info!(deferred_auth_id = %id.fingerprint(), "cancelled locally; no cancellation endpoint is configured, so the OP was not told");
                CancelResult::LocalOnly
            }
        };
        if !inner.driver.cancel(id).await && result == CancelResult::LocalOnly {
            // It ended meanwhile (a poll in flight brought its outcome).
            return Ok(CancelResult::AlreadyFinished);
        }
        Ok(result)
    }

    /// Stops polling without telling the OP.
    ///
    /// Cancel safety: safe. Dropped, the cancellation may or may not have
    /// happened; [`poll_status`](Self::poll_status) tells.
    #[must_use = "false: no pending authentication had this id"]
    pub async fn cancel_locally(&self, id: &DeferredId) -> bool {
        self.inner.driver.cancel(id).await
    }

    /// The Ping Callback receiver for this client's notification endpoint:
    /// a `tower::Service` and plain handler that checks each ping's bearer
    /// token and wakes the poller. See [`PingReceiver`].
    ///
    /// With a shared store (a fleet), a ping for an authentication another
    /// instance polls is checked against the token hash in the store and
    /// passed on to that instance, which polls at once (floor permitting).
    #[must_use]
    pub fn ping_receiver(&self) -> PingReceiver {
        let receiver = if self.inner.fleet.is_some() {
            PingReceiver::new(Arc::new(crate::engine::fleet::FleetPingSink {
                driver: self.inner.driver.clone(),
                store: self.inner.store.clone(),
                accept_unauthenticated: self.inner.accept_unauthenticated_callbacks,
            }))
        } else {
            PingReceiver::new(Arc::new(ietf::ClientPings {
                driver: self.inner.driver.clone(),
                accept_unauthenticated: self.inner.accept_unauthenticated_callbacks,
            }))
        };
        receiver.with_clock(self.inner.clock.clone())
    }

    /// Whether the poll engine is idle right now: no poll in flight, none
    /// due, no outcome being stored. (For graceful shutdowns, and for tests
    /// that move a virtual clock.)
    ///
    /// Cancel safety: safe (it only reads).
    #[must_use]
    pub async fn is_idle(&self) -> bool {
        self.inner.driver.idle().await
    }

    /// Authentications without a stored outcome (being polled, or with an
    /// outcome still on its way to the store), and polls in flight. O(1):
    /// read from counters, without asking the driver task.
    ///
    /// Cancel safety: safe (it only reads).
    #[must_use]
    pub async fn pending_count(&self) -> (usize, usize) {
        self.inner.driver.counts()
    }

    /// The engine's counters: pending, in flight, unstored outcomes, store
    /// queue depth, polls, `slow_down`s, pings accepted and refused, the
    /// worst poll lateness. The same figures go to the [`metrics`] facade
    /// (names in the crate docs of `EngineStats`); no label holds a secret.
    ///
    /// [`metrics`]: https://docs.rs/metrics
    #[must_use]
    pub fn stats(&self) -> crate::engine::stats::EngineStats {
        self.inner.driver.stats()
    }

    /// Validates a token response (from a deferred poll or the code
    /// fallback) and assembles the [`TokenSet`]: the `id_token` is required
    /// and validated against the OP's JWK Set (fetched or refreshed through
    /// the client's shared cache as needed), `ctx`'s `nonce`, `max_age` and
    /// expected `sub`, and the access token (`at_hash`). Times are checked
    /// at `received_at`, which also anchors `expires_at`.
    ///
    /// Cancel safety: safe. Dropped, a JWKS fetch it started may still
    /// complete and fill the cache.
    pub async fn validate_token_response(
        &self,
        ctx: &ValidationContext,
        resp: TokenResponse,
        received_at: UnixTime,
    ) -> Result<TokenSet, Error> {
        self.inner.validate_tokens(ctx, resp, received_at).await
    }

    /// Validates one ID token (every check of
    /// [`IdTokenValidator`]) at time `now`.
    /// `access_token`, when given, is checked against `at_hash`.
    ///
    /// Cancel safety: safe, as
    /// [`validate_token_response`](Self::validate_token_response).
    pub async fn validate_id_token(
        &self,
        ctx: &ValidationContext,
        id_token: &RawJwt,
        access_token: Option<&AccessToken>,
        now: UnixTime,
    ) -> Result<IdToken, Error> {
        Ok(self
            .inner
            .validate_jwt(id_token, ctx, access_token, now)
            .await?)
    }

    /// The cached JWK Set, to warm another instance's cache (serverless cold
    /// starts, restarts). `None` before the first fetch.
    #[must_use]
    pub fn export_jwks(&self) -> Option<JwksSnapshot> {
        self.inner.jwks.export()
    }

    /// Loads an exported JWK Set into the cache. A snapshot past its
    /// freshness is used (within [`JwksConfig::max_stale`](crate::tokens::JwksConfig::max_stale)) until the next
    /// refresh succeeds. For an OP without `jwks_uri`, this is how its keys
    /// are given (they then never expire).
    pub fn import_jwks(&self, snapshot: JwksSnapshot) -> Result<(), Error> {
        Ok(self.inner.jwks.import(snapshot)?)
    }

    /// Stops this client's engine cleanly: no new polls are sent, polls
    /// already in flight finish and their results (tokens included) are
    /// stored, then the store is closed ([`Store::close`]: a [`FileStore`]
    /// releases its file, so a new client or process can open it at once).
    /// Pending authentications stay pending in the store, ready for
    /// [`resume`](Self::resume) by the next client.
    ///
    /// Waiters still blocked in [`wait`](Self::wait) get
    /// [`WaitError::Stopped`]. Calls after a shutdown fail the same way.
    ///
    /// Cancel safety: the shutdown is started by the first poll of this
    /// future; dropping it after that lets the shutdown complete in the
    /// background, but then nothing tells you when the file is released.
    ///
    /// [`FileStore`]: crate::store::FileStore
    pub async fn shutdown(&self) {
        self.inner.driver.shutdown().await;
        if let Some(f) = &self.inner.fleet {
            // Nothing in flight any more: hand the leases back at once.
            f.stop();
            f.release_all().await;
        }
        if let Err(e) = self.inner.store.close().await {
            tracing::warn!(error = %e, "closing the store at shutdown failed");
        }
    }

    /// A DPoP proof for presenting `tokens`' access token to a resource
    /// server (RFC 9449 §7), with the client's clock and random source: see
    /// [`TokenSet::resource_proof_at`]. `None` for bearer tokens. Tokens
    /// bound to an external signer's key need
    /// [`sign_resource_proof`](Self::sign_resource_proof), which awaits it.
    pub fn resource_proof(
        &self,
        tokens: &TokenSet,
        method: &http::Method,
        url: &Url,
        nonce: Option<&str>,
    ) -> Option<Result<String, crate::jose::KeyError>> {
        tokens.resource_proof_at(
            method,
            url,
            nonce,
            self.inner.clock.now(),
            self.inner.rng.as_ref(),
        )
    }

    /// The ID token validation options in force (the effective algorithm
    /// allow-list among them).
    pub fn validation_options(&self) -> &ValidationOptions {
        self.inner.validator.options()
    }
}

impl ClientInner {
    /// The exchange from the request on (see `DtrClient::exchange_inner`).
    async fn exchange_and_track(
        self: Arc<Self>,
        ack: Acknowledgment,
        dpop_key: Option<FlowDpop>,
    ) -> Result<DeferredAuthentication, Error> {
        let inner = &self;
        let notification_token = match inner.notification_endpoint {
            Some(_) => Some(DeferredNotificationToken::new(random_b64url(
                inner.rng.as_ref(),
                NOTIFICATION_TOKEN_BYTES,
            )?)),
            None => None,
        };
        let params = exchange::exchange_params(&ack, notification_token.as_ref(), &inner.compat);
        // The deadline counts from the send, the first poll's floor from
        // the answer's arrival (an OP may count the interval from its answer).
        let issued_at = inner.clock.now();
        let resp = inner
            .send_token_request(&params, dpop_key.as_ref().map(FlowDpop::as_ref))
            .await?;
        let answered_at = inner.clock.now();
        let parsed = exchange::parse_exchange_response(&resp, &inner.metadata.token_endpoint);
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(deferred_code = %ack.deferred_code.fingerprint(), error = %e, "deferred code exchange failed");
                return Err(e);
            }
        };
        let ctx = ValidationContext::from(&ack);
        let interim = parsed.interim_id_token.clone();
        let mut auth = DeferredAuthentication::new(
            ack,
            parsed,
            issued_at,
            answered_at,
            notification_token.as_ref(),
        );
        // Polled with the certificate the exchange was sent with.
        auth.client_cert_thumbprint = inner.http.current_identity().map(Box::from);
        auth.set_dpop(dpop_key);
        // The draft's interim ID token is validated like the final one
        // (OIDC Core §3.1.3.7); its nonce is the request's, and it comes
        // with no access token.
        let mut unverified = None;
        if let Some(raw) = &interim {
            match inner.validate_interim(raw, &ctx).await {
                Ok(t) => auth.interim_claims = Some(Box::new(t.into_parts().1)),
                // The keys are unreachable, however long: the id is live at
                // the OP and must not be dropped. Tracked as usual; the
                // caller hears that the interim token went unchecked.
                Err(e) if e.is_retryable() => {
                    tracing::warn!(deferred_auth_id = %auth.id.fingerprint(), error = %e, "the interim ID token could not be checked (the JWK Set is unreachable); the authentication is tracked regardless");
                    unverified = Some(e);
                }
                // Invalid: its identity cannot be trusted.
                Err(e) => return Err(inner.give_up_live(&auth, e).await),
            }
        }
        tracing::Span::current().record(
            "deferred_auth_id",
            tracing::field::display(auth.id.fingerprint()),
        );
        tracing::info!(
            deferred_auth_id = %auth.id.fingerprint(),
            expires_at = ?auth.expires_at,
            interval_secs = auth.interval_secs,
            "deferred code exchanged"
        );
        let machine = PollMachine::new(&auth, inner.poll_config.clone());
        inner.store_and_track(&auth, machine).await?;
        match unverified {
            Some(source) => Err(Error::InterimIdTokenUnverified {
                id: auth.id.clone(),
                source,
            }),
            None => Ok(auth),
        }
    }

    /// Validates the interim ID token. The code is spent and the OP holds a
    /// live `deferred_auth_id`, so this tries as hard as for final tokens
    /// (the same validate-with-retry): an unknown `kid` gets a forced
    /// refresh, and a JWK Set that cannot be fetched is retried with the
    /// same pauses. It comes with no access token; its nonce is the
    /// request's.
    async fn validate_interim(
        &self,
        raw: &RawJwt,
        ctx: &ValidationContext,
    ) -> Result<IdToken, ValidationError> {
        let received_at = self.clock.now();
        self.validate_in_hand(raw, ctx, None, received_at, JWKS_RETRIES)
            .await
    }

    /// `exchange` cannot take on an authentication the OP created (its
    /// interim ID token was rejected): cancels it at the OP when a
    /// cancellation endpoint is configured, and returns the error that says
    /// what became of it. The id is never dropped silently.
    async fn give_up_live(&self, auth: &DeferredAuthentication, source: ValidationError) -> Error {
        let id = auth.id.fingerprint();
        let live_authentication = match &self.cancellation {
            Some(cfg) => {
                let mut attempt = 0u32;
                loop {
                    match self.send_cancel(cfg, auth).await {
                        Ok(()) => {
                            tracing::warn!(deferred_auth_id = %id, error = %source, "interim ID token rejected; the authentication was cancelled at the OP");
                            break LiveAuthentication::CancelledAtOp;
                        }
                        Err(e) if e.is_retryable() && attempt + 1 < CANCEL_RETRIES => {
                            attempt += 1;
                            tracing::warn!(deferred_auth_id = %id, error = %e, attempt, "cancelling the rejected authentication failed; retrying");
                            let until = self.clock.now().saturating_add(JWKS_RETRY_PAUSE * attempt);
                            self.clock.sleep_until(until).await;
                        }
                        Err(e) => {
                            tracing::error!(deferred_auth_id = %id, error = %source, cancel_error = %e, "interim ID token rejected and the cancellation failed; the authentication is still live at the OP");
                            break LiveAuthentication::NotCancelled(
                                NotCancelledReason::CancellationFailed(Box::new(e)),
                            );
                        }
                    }
                }
            }
            None => {
                tracing::error!(deferred_auth_id = %id, error = %source, "interim ID token rejected; no cancellation endpoint is configured, so the authentication is still live at the OP");
                LiveAuthentication::NotCancelled(NotCancelledReason::NoCancellationEndpoint)
            }
        };
        Error::InterimIdTokenRejected {
            source,
            live_authentication,
        }
    }

    /// A token-endpoint request with client authentication applied.
    pub(crate) async fn token_request(
        &self,
        params: Vec<(&'static str, String)>,
    ) -> Result<HttpRequest, Error> {
        let endpoint = self.back_channel_endpoint("token_endpoint", &self.metadata.token_endpoint);
        self.authed_form(&endpoint, params).await
    }

    /// Where a back-channel request for the endpoint `name` (its metadata
    /// name) goes: under mutual TLS, the OP's `mtls_endpoint_aliases`
    /// entry when it publishes one (RFC 8705 §5), else `plain`.
    pub(crate) fn back_channel_endpoint(&self, name: &str, plain: &Url) -> Url {
        match self.http.current_identity() {
            Some(_) => self
                .metadata
                .mtls_endpoint_alias(name)
                .unwrap_or(plain)
                .clone(),
            None => plain.clone(),
        }
    }

    /// Adds fresh client credentials for a request to `endpoint`; an
    /// external signer's assertion is awaited here (its failure is
    /// [`Error::Signer`], and nothing is sent).
    pub(crate) async fn apply_client_auth(
        &self,
        endpoint: &Url,
        headers: &mut HeaderMap,
        params: &mut Vec<(&'static str, String)>,
    ) -> Result<(), Error> {
        let ctx = crate::proto::client_auth::AuthContext {
            client_id: &self.client_id,
            issuer: &self.metadata.issuer,
            endpoint,
            now: self.clock.now(),
            rng: self.rng.as_ref(),
        };
        if let Some(pending) = self.auth.apply(&ctx, headers, params)? {
            let signer = std::sync::Arc::clone(&pending.signer);
            let signature = signer.sign(pending.signing_input()).await.map_err(|e| {
                tracing::warn!(error = %e, "the signer could not sign the client assertion");
                Error::Signer(e)
            })?;
            pending.finish(&signature, params);
        }
        Ok(())
    }

    /// A form POST to `endpoint` with client authentication applied.
    pub(crate) async fn authed_form(
        &self,
        endpoint: &Url,
        mut params: Vec<(&'static str, String)>,
    ) -> Result<HttpRequest, Error> {
        let mut headers = HeaderMap::new();
        self.apply_client_auth(endpoint, &mut headers, &mut params)
            .await?;
        let mut req = HttpRequest::post_form(
            endpoint.clone(),
            params.iter().map(|(k, v)| (*k, v.as_str())),
        );
        req.headers.extend(headers);
        Ok(req)
    }

    /// Whether requests of this client carry DPoP proofs.
    pub(crate) fn uses_dpop(&self) -> bool {
        self.dpop.enabled.unwrap_or(self.auth.is_public())
    }
}

/// Attempts at cancelling, at the OP, an authentication whose interim ID
/// token was rejected, when the cancellation request fails transiently.
const CANCEL_RETRIES: u32 = 3;

impl ClientInner {
    /// Stores a new authentication, durably before the application hears of
    /// it (invariant 6), and hands it to the engine; a fleet member leaves
    /// it to the claim loop (whichever instance claims it polls it). If it
    /// cannot be stored it is still polled in this process, and the store's
    /// error is returned.
    pub(crate) async fn store_and_track(
        &self,
        auth: &DeferredAuthentication,
        machine: PollMachine,
    ) -> Result<(), Error> {
        if let Err(e) = self
            .store
            .insert(Record::new(auth.clone(), machine.clone()))
            .await
        {
            tracing::error!(
                deferred_auth_id = %auth.id.fingerprint(),
                error = %e,
                "the authentication could not be stored; it is polled in this process only"
            );
            self.driver.track(auth.clone(), machine).await?;
            return Err(e.into());
        }
        if self.fleet.is_none() {
            self.driver.track(auth.clone(), machine).await?;
        }
        Ok(())
    }
}
