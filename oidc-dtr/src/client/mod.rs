//! [`DtrClient`]: one Relying Party's view of one OpenID Provider.

mod back_channel;
mod userinfo;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::HeaderMap;
use tracing::Instrument as _;
use url::Url;

use crate::client::back_channel::{JWKS_RETRIES, JWKS_RETRY_PAUSE};
use crate::engine::driver::{DriverConfig, DriverHandle, PollEvent, PollStatus, WaitError};
use crate::engine::jwks_cache::{JwksCache, JwksConfig, JwksSnapshot};
use crate::engine::transport::{HttpConfig, HttpEdge};
use crate::error::{
    CallbackError, ConfigError, DiscoveryError, Error, LiveAuthentication, NotCancelledReason,
    ValidationError,
};
use crate::jose::{Algorithm, DpopKey};
use crate::ping::PingReceiver;
use crate::proto::authorize::{
    AuthorizationRequestBuilder, AuthorizeContext, PendingAuthorization, ResponseMode,
};
use crate::proto::callback::{self, Acknowledgment, CallbackResponse, CodeResponse};
use crate::proto::cancel::{CancelResult, CancellationConfig};
use crate::proto::client_auth::ClientAuth;
use crate::proto::discovery::ProviderMetadata;
use crate::proto::exchange::{self, Compat, DeferredAuthentication, NOTIFICATION_TOKEN_BYTES};
use crate::proto::id_token::{IdTokenValidator, ValidationOptions};
use crate::proto::message::{HttpRequest, check_url, parse_url};
use crate::proto::poll::{Outcome, PollConfig, PollMachine};
use crate::proto::token::{IdToken, TokenResponse, TokenSet, ValidationContext};
use crate::random::{RandomSource, SystemRandom, random_b64url};
use crate::secret::DeferredAuthId;
use crate::secret::{AccessToken, ClientSecret, DeferredNotificationToken, RawJwt};
use crate::store::{MemoryStore, Record, Store, StoreError};
use crate::time::{Clock, SystemClock, UnixTime};

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
    /// The latest `DPoP-Nonce` per server (`scheme://host:port`).
    pub(crate) dpop_nonces: Mutex<HashMap<String, String>>,
    pub(crate) cancellation: Option<CancellationConfig>,
    pub(crate) poll_config: PollConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) driver: DriverHandle<TokenSet>,
}

/// DPoP (RFC 9449) settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DpopConfig {
    /// Use DPoP: `None` decides by client type (public clients use it,
    /// confidential ones do not).
    pub enabled: Option<bool>,
    /// The algorithm of the per-authentication key (default ES256).
    pub algorithm: Algorithm,
    /// Refuse a `Bearer` token when DPoP was used (default true).
    pub reject_downgrade: bool,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            enabled: None,
            algorithm: Algorithm::ES256,
            reject_downgrade: true,
        }
    }
}

impl DpopConfig {
    /// DPoP on, whatever the client type.
    pub fn enabled() -> Self {
        DpopConfig {
            enabled: Some(true),
            ..Default::default()
        }
    }

    /// DPoP off, whatever the client type.
    pub fn disabled() -> Self {
        DpopConfig {
            enabled: Some(false),
            ..Default::default()
        }
    }

    /// Sets the key algorithm (ES256, ES384, EdDSA, RS256, PS256, ...).
    pub fn algorithm(mut self, alg: Algorithm) -> Self {
        self.algorithm = alg;
        self
    }

    /// Accepts a `Bearer` token even though DPoP was used.
    pub fn allow_bearer_downgrade(mut self) -> Self {
        self.reject_downgrade = false;
        self
    }
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

    /// The notification endpoint, when pings are wanted.
    pub fn notification_endpoint(&self) -> Option<&Url> {
        self.inner.notification_endpoint.as_ref()
    }

    /// Starts an Authentication Request.
    pub fn authorize(&self) -> AuthorizationRequestBuilder<'_> {
        let inner = &self.inner;
        AuthorizationRequestBuilder::new(AuthorizeContext {
            metadata: &inner.metadata,
            client_id: &inner.client_id,
            redirect_uri: &inner.redirect_uri,
            rng: inner.rng.as_ref(),
            now: inner.clock.now(),
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
                iss_required: md.authorization_response_iss_parameter_supported,
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
    /// generated for this authentication process and kept in the result.
    ///
    /// The authentication is then handed to the poll engine: get its
    /// outcome with [`wait`](Self::wait) or [`subscribe`](Self::subscribe).
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
        let key = self.inner.new_dpop_key()?;
        let span = exchange_span(&ack);
        self.exchange_inner(ack, key).instrument(span).await
    }

    /// [`exchange`](Self::exchange) with a caller-supplied DPoP key (from an
    /// HSM, say) instead of a generated one.
    ///
    /// Cancel safety: as [`exchange`](Self::exchange).
    pub async fn exchange_with_dpop_key(
        &self,
        ack: Acknowledgment,
        key: DpopKey,
    ) -> Result<DeferredAuthentication, Error> {
        let span = exchange_span(&ack);
        self.exchange_inner(ack, Some(key)).instrument(span).await
    }

    async fn exchange_inner(
        &self,
        ack: Acknowledgment,
        dpop_key: Option<DpopKey>,
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
    /// Cancel safety: not cancel safe: the code is single-use and spent
    /// once the request is sent.
    pub async fn exchange_code(&self, code: CodeResponse) -> Result<TokenSet, Error> {
        let inner = &self.inner;
        if code.pending.issuer != inner.metadata.issuer || code.pending.client_id != inner.client_id
        {
            return Err(CallbackError::WrongClient.into());
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
        let dpop_key = inner.new_dpop_key()?;
        let resp = inner.send_token_request(&params, dpop_key.as_ref()).await?;
        let ctx = ValidationContext::from(&code);
        match inner
            .finish_token_response(&resp, &ctx, dpop_key.as_ref())
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
    /// ([`DriverConfig::finished_retention`]).
    pub async fn wait(&self, id: &DeferredAuthId) -> Result<Outcome<TokenSet>, Error> {
        Ok(self.inner.driver.wait(id).await?)
    }

    /// Progress descriptions and outcomes of every authentication, as they
    /// happen. A subscriber that falls far behind misses events; outcomes
    /// stay available through [`wait`](Self::wait).
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
        if auth.issuer != self.inner.metadata.issuer || auth.client_id != self.inner.client_id {
            return Err(CallbackError::WrongClient.into());
        }
        let machine =
            state.unwrap_or_else(|| PollMachine::new(&auth, self.inner.poll_config.clone()));
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
    pub async fn ack(&self, id: &DeferredAuthId) -> Result<bool, Error> {
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
    pub async fn undelivered(&self) -> Vec<crate::engine::driver::Delivery<TokenSet>> {
        self.inner.driver.undelivered().await
    }

    /// The authentication and its poll state, to keep across a restart
    /// (serialise both; hand them to [`resume`](Self::resume) later). With a
    /// durable store configured, the SDK does this itself.
    ///
    /// Cancel safety: safe (it only reads).
    pub async fn snapshot(
        &self,
        id: &DeferredAuthId,
    ) -> Option<(DeferredAuthentication, PollMachine)> {
        let t = self.inner.driver.get(id).await?;
        Some((DeferredAuthentication::clone(&t.auth), t.machine))
    }

    /// Where polling of an authentication stands.
    ///
    /// Cancel safety: safe (it only reads).
    pub async fn poll_status(&self, id: &DeferredAuthId) -> Option<PollStatus> {
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
    pub async fn wake(&self, id: &DeferredAuthId) -> bool {
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
    /// If the OP refuses or cannot be reached, the error is returned and
    /// polling goes on: retry, or stop locally with
    /// [`cancel_locally`](Self::cancel_locally).
    pub async fn cancel(&self, id: &DeferredAuthId) -> Result<CancelResult, Error> {
        let inner = &self.inner;
        let Some(tracked) = inner.driver.get(id).await else {
            return Err(WaitError::Unknown.into());
        };
        if tracked.finished {
            return Ok(CancelResult::AlreadyFinished);
        }
        let auth = tracked.auth;
        let result = match &inner.cancellation {
            Some(cfg) => {
                inner.send_cancel(cfg, &auth).await.inspect_err(|e| {
                    tracing::warn!(deferred_auth_id = %id.fingerprint(), error = %e, "cancellation request failed");
                })?;
                tracing::info!(deferred_auth_id = %id.fingerprint(), "cancelled at the OP");
                CancelResult::ToldOp
            }
            None => {
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
    pub async fn cancel_locally(&self, id: &DeferredAuthId) -> bool {
        self.inner.driver.cancel(id).await
    }

    /// The Ping Callback receiver for this client's notification endpoint:
    /// a `tower::Service` and plain handler that checks each ping's bearer
    /// token and wakes the poller. See [`PingReceiver`].
    pub fn ping_receiver(&self) -> PingReceiver {
        PingReceiver::new(Arc::new(self.inner.driver.clone()))
    }

    /// Whether the poll engine is idle right now: no poll in flight, none
    /// due, no outcome being stored. (For graceful shutdowns, and for tests
    /// that move a virtual clock.)
    ///
    /// Cancel safety: safe (it only reads).
    pub async fn is_idle(&self) -> bool {
        self.inner.driver.idle().await
    }

    /// Authentications without a stored outcome (being polled, or with an
    /// outcome still on its way to the store), and polls in flight. O(1):
    /// read from counters, without asking the driver task.
    ///
    /// Cancel safety: safe (it only reads).
    pub async fn pending_count(&self) -> (usize, usize) {
        self.inner.driver.counts()
    }

    /// The engine's counters: pending, in flight, unstored outcomes, store
    /// queue depth, polls, `slow_down`s, pings accepted and refused, the
    /// worst poll lateness. The same figures go to the [`metrics`] facade
    /// (names in the crate docs of `EngineStats`); no label holds a secret.
    ///
    /// [`metrics`]: https://docs.rs/metrics
    pub fn stats(&self) -> crate::EngineStats {
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
    /// [`IdTokenValidator`](crate::IdTokenValidator)) at time `now`.
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
    pub fn export_jwks(&self) -> Option<JwksSnapshot> {
        self.inner.jwks.export()
    }

    /// Loads an exported JWK Set into the cache. A snapshot past its
    /// freshness is used (within [`JwksConfig::max_stale`]) until the next
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
    /// [`FileStore`]: crate::FileStore
    pub async fn shutdown(&self) {
        self.inner.driver.shutdown().await;
        if let Err(e) = self.inner.store.close().await {
            tracing::warn!(error = %e, "closing the store at shutdown failed");
        }
    }

    /// A DPoP proof for presenting `tokens`' access token to a resource
    /// server (RFC 9449 §7), with the client's clock and random source: see
    /// [`TokenSet::resource_proof_at`]. `None` for bearer tokens.
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
        dpop_key: Option<DpopKey>,
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
        let issued_at = inner.clock.now();
        let resp = inner.send_token_request(&params, dpop_key.as_ref()).await?;
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
        let mut auth =
            DeferredAuthentication::new(ack, parsed, issued_at, notification_token.as_ref());
        auth.dpop_key = dpop_key.map(Box::new);
        // PROTOCOL.md A.7: validate the interim ID token like the final one;
        // its nonce is the request's, and it comes with no access token.
        if let Some(raw) = &interim {
            match inner.validate_interim(raw, &ctx).await {
                Ok(t) => auth.interim_claims = Some(Box::new(t.into_parts().1)),
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
        // Durable before the application hears of it (invariant 6).
        if let Err(e) = inner
            .store
            .insert(Record::new(auth.clone(), machine.clone()))
            .await
        {
            tracing::error!(
                deferred_auth_id = %auth.id.fingerprint(),
                error = %e,
                "the authentication could not be stored; it is polled in this process only"
            );
            inner.driver.track(auth, machine).await?;
            return Err(e.into());
        }
        inner.driver.track(auth.clone(), machine).await?;
        Ok(auth)
    }

    /// Validates the interim ID token. The code is spent and the OP holds a
    /// live `deferred_auth_id`, so this tries as hard as for final tokens:
    /// an unknown `kid` gets a refresh (waiting out the cooldown if needed),
    /// and a JWK Set that cannot be fetched is retried with the same pauses.
    async fn validate_interim(
        &self,
        raw: &RawJwt,
        ctx: &ValidationContext,
    ) -> Result<IdToken, ValidationError> {
        let mut attempt = 0;
        let mut kid_refreshed = false;
        loop {
            let started = self.clock.now();
            let result = match self.validate_jwt(raw, ctx, None, started).await {
                Err(ValidationError::UnknownKid { .. }) if !kid_refreshed => {
                    kid_refreshed = true;
                    match self
                        .jwks
                        .refresh_for_tokens(&self.http, self.clock.as_ref(), started)
                        .await
                    {
                        Ok(()) => continue,
                        Err(e) => {
                            kid_refreshed = false;
                            Err(e)
                        }
                    }
                }
                other => other,
            };
            match result {
                Err(e) if e.is_retryable() && attempt + 1 < JWKS_RETRIES => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "interim ID token: the JWK Set is unavailable; retrying");
                    let until = self.clock.now().saturating_add(JWKS_RETRY_PAUSE * attempt);
                    self.clock.sleep_until(until).await;
                }
                other => return other,
            }
        }
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

    /// See [`DtrClient::validate_token_response`].
    pub(crate) async fn validate_tokens(
        &self,
        ctx: &ValidationContext,
        resp: TokenResponse,
        received_at: UnixTime,
    ) -> Result<TokenSet, Error> {
        let Some(raw) = resp.id_token.clone() else {
            tracing::warn!("token response without id_token");
            return Err(ValidationError::MissingIdToken.into());
        };
        let id_token = match self
            .validate_jwt(&raw, ctx, Some(&resp.access_token), received_at)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(id_token = %raw.fingerprint(), error = %e, "ID token rejected");
                return Err(e.into());
            }
        };
        tracing::debug!(id_token = %raw.fingerprint(), "ID token validated");
        Ok(TokenSet::new(resp, id_token, received_at).with_claims_request_of(ctx))
    }

    /// Validates a JWT: header and `alg`, key (through the JWKS cache),
    /// signature, then claims.
    pub(crate) async fn validate_jwt(
        &self,
        raw: &RawJwt,
        ctx: &ValidationContext,
        access_token: Option<&AccessToken>,
        now: UnixTime,
    ) -> Result<IdToken, ValidationError> {
        let jws = self.validator.decode(raw.secret())?;
        if jws.alg.is_hmac() {
            self.validator.verify_hmac(&jws)?;
        } else {
            let key = self
                .jwks
                .resolve(&self.http, self.clock.as_ref(), jws.kid.as_deref(), jws.alg)
                .await?;
            key.verify(jws.signing_input, &jws.signature)?;
        }
        let claims = self.validator.check_claims(&jws, ctx, access_token, now)?;
        Ok(IdToken::new(raw.clone(), claims))
    }

    /// A token-endpoint request with client authentication applied.
    pub(crate) fn token_request(
        &self,
        params: Vec<(&'static str, String)>,
    ) -> Result<HttpRequest, Error> {
        self.authed_form(&self.metadata.token_endpoint, params)
    }

    /// Adds fresh client credentials for a request to `endpoint`.
    pub(crate) fn apply_client_auth(
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
        self.auth.apply(&ctx, headers, params)
    }

    /// A form POST to `endpoint` with client authentication applied.
    pub(crate) fn authed_form(
        &self,
        endpoint: &Url,
        mut params: Vec<(&'static str, String)>,
    ) -> Result<HttpRequest, Error> {
        let mut headers = HeaderMap::new();
        self.apply_client_auth(endpoint, &mut headers, &mut params)?;
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

    /// A fresh DPoP key for a new authentication process, when DPoP is on.
    pub(crate) fn new_dpop_key(&self) -> Result<Option<DpopKey>, Error> {
        if !self.uses_dpop() {
            return Ok(None);
        }
        DpopKey::generate(self.dpop.algorithm)
            .map(Some)
            .map_err(|e| {
                ConfigError::Invalid {
                    field: "dpop",
                    reason: e.to_string(),
                }
                .into()
            })
    }
}

/// Attempts at cancelling, at the OP, an authentication whose interim ID
/// token was rejected, when the cancellation request fails transiently.
const CANCEL_RETRIES: u32 = 3;

/// The poll cadence while pings are expected, unless configured otherwise
/// (see [`DtrClientBuilder::notified_poll_cadence`]).
pub const DEFAULT_NOTIFIED_CADENCE: Duration = Duration::from_secs(60);

/// The method for a client that gave only a secret: `client_secret_basic`
/// if the OP lists it or lists nothing (RFC 8414 §2 default), else
/// `client_secret_post` if it lists that.
fn secret_method_from_metadata(metadata: &ProviderMetadata, secret: ClientSecret) -> ClientAuth {
    let listed = |m: &str| {
        metadata
            .token_endpoint_auth_methods_supported
            .as_ref()
            .is_some_and(|l| l.iter().any(|x| x == m))
    };
    match &metadata.token_endpoint_auth_methods_supported {
        Some(_) if !listed("client_secret_basic") && listed("client_secret_post") => {
            ClientAuth::ClientSecretPost(secret)
        }
        Some(_) if !listed("client_secret_basic") => {
            tracing::warn!(
                "the OP lists neither client_secret_basic nor client_secret_post; using client_secret_basic"
            );
            ClientAuth::ClientSecretBasic(secret)
        }
        _ => ClientAuth::ClientSecretBasic(secret),
    }
}

/// Configures a [`DtrClient`].
#[derive(Default)]
#[must_use]
pub struct DtrClientBuilder {
    issuer: Option<String>,
    metadata: Option<ProviderMetadata>,
    client_id: Option<String>,
    auth: Option<ClientAuth>,
    /// Only a secret was given (no method): the method comes from the
    /// OP's metadata.
    secret_only: bool,
    redirect_uri: Option<String>,
    notification_endpoint: Option<String>,
    /// The poll cadence while pings are expected, when set explicitly.
    notified_cadence: Option<Option<Duration>>,
    clock: Option<Arc<dyn Clock>>,
    rng: Option<Arc<dyn RandomSource>>,
    http: HttpConfig,
    allow_unadvertised: bool,
    compat: Compat,
    validation: ValidationOptions,
    jwks: JwksConfig,
    dpop: DpopConfig,
    cancellation: Option<CancellationSetting>,
    poll: Option<PollConfig>,
    driver: DriverConfig,
    store: Option<Arc<dyn Store>>,
}

/// The cancellation endpoint, given or named in the metadata.
enum CancellationSetting {
    Given(CancellationConfig),
    FromMetadata(String, crate::proto::cancel::CancelEncoding),
}

impl fmt::Debug for DtrClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtrClientBuilder")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl DtrClientBuilder {
    /// The issuer identifier. Without [`metadata`](Self::metadata), `build`
    /// discovers the metadata from `{issuer}/.well-known/openid-configuration`
    /// (then RFC 8414's location) and requires its `issuer` to equal this
    /// value exactly.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Explicit metadata, for OPs without discovery. No request is made.
    pub fn metadata(mut self, metadata: ProviderMetadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The client identifier.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// A client secret. The method is chosen from the OP's
    /// `token_endpoint_auth_methods_supported`: `client_secret_basic` when
    /// it is listed (or the list is absent: RFC 8414's default), else
    /// `client_secret_post` when that is listed. To choose the method
    /// yourself, use [`client_auth`](Self::client_auth).
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.auth = Some(ClientAuth::ClientSecretBasic(ClientSecret::new(secret)));
        self.secret_only = true;
        self
    }

    /// The client authentication method (default: `none`, a public client,
    /// unless [`client_secret`](Self::client_secret) was given).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = Some(auth);
        self.secret_only = false;
        self
    }

    /// The redirect URI registered for this client.
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uri = Some(uri.into());
        self
    }

    /// The RP's `deferred_client_notification_endpoint`, when it wants Ping
    /// Callbacks. A fresh notification token is then sent at every exchange.
    pub fn notification_endpoint(mut self, uri: impl Into<String>) -> Self {
        self.notification_endpoint = Some(uri.into());
        self
    }

    /// The clock (default: the system clock). For tests.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The random source (default: the OS CSPRNG). For tests only.
    pub fn random(mut self, rng: Arc<dyn RandomSource>) -> Self {
        self.rng = Some(rng);
        self
    }

    /// HTTP timeouts and body cap.
    pub fn http_config(mut self, cfg: HttpConfig) -> Self {
        self.http = cfg;
        self
    }

    /// Accept an OP whose metadata does not advertise `deferred_code` and the
    /// deferred grant type (some deployments enable DTR per client without
    /// advertising it). Off by default.
    pub fn allow_unadvertised_dtr(mut self) -> Self {
        self.allow_unadvertised = true;
        self
    }

    /// Compatibility switches for OPs built on earlier draft snapshots.
    pub fn compat(mut self, compat: Compat) -> Self {
        self.compat = compat;
        self
    }

    /// ID token validation settings: allowed algorithms (default `RS256`,
    /// intersected with the OP's list), leeways, trusted audiences, the
    /// interim/final `sub` rule, the `max_age` check.
    pub fn validation(mut self, options: ValidationOptions) -> Self {
        self.validation = options;
        self
    }

    /// JWKS cache settings: freshness bounds, unknown-`kid` cooldown,
    /// stale-if-error.
    pub fn jwks_config(mut self, config: JwksConfig) -> Self {
        self.jwks = config;
        self
    }

    /// DPoP settings (default: on for public clients, off otherwise; ES256;
    /// a `Bearer` downgrade is refused).
    pub fn dpop(mut self, config: DpopConfig) -> Self {
        self.dpop = config;
        self
    }

    /// The OP's cancellation endpoint (the draft defines no metadata name
    /// for it).
    pub fn cancellation(mut self, config: CancellationConfig) -> Self {
        self.cancellation = Some(CancellationSetting::Given(config));
        self
    }

    /// Reads the cancellation endpoint from a metadata member of your
    /// choosing (an OP-specific name), sending bodies as `encoding`.
    pub fn cancellation_from_metadata(
        mut self,
        member: impl Into<String>,
        encoding: crate::proto::cancel::CancelEncoding,
    ) -> Self {
        self.cancellation = Some(CancellationSetting::FromMetadata(member.into(), encoding));
        self
    }

    /// The poll schedule's tuning: backoff, final-poll margin, maximum
    /// lifetime (default: [`PollConfig::default`]). The cadence while pings
    /// are expected is set with
    /// [`notified_poll_cadence`](Self::notified_poll_cadence), not here,
    /// unless this config sets one (`PollConfig::notified_cadence(Some(..))`).
    pub fn poll_config(mut self, config: PollConfig) -> Self {
        self.poll = Some(config);
        self
    }

    /// How often to poll while pings are expected (only with a
    /// [`notification_endpoint`](Self::notification_endpoint)): polling is
    /// then a safety net, and a ping brings the next poll back to the
    /// OP's interval. Default: 60 s ([`DEFAULT_NOTIFIED_CADENCE`]), or the
    /// `notified_cadence` of the [`poll_config`](Self::poll_config) if it
    /// sets one. `None` polls at the OP's interval, as without pings.
    /// Without a notification endpoint, polls are always at the interval.
    pub fn notified_poll_cadence(mut self, cadence: Option<Duration>) -> Self {
        self.notified_cadence = Some(cadence);
        self
    }

    /// Where pending authentications and their outcomes are kept (default:
    /// [`MemoryStore`], lost on restart). With a durable store, such as
    /// [`FileStore`](crate::store::FileStore), a new client on the same
    /// store resumes every pending authentication where it was and hands
    /// over outcomes that were received but not acknowledged.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// [`store`](Self::store), with a shared store.
    pub fn store_arc(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The poll driver's tuning (requests in flight, outcome retention,
    /// event channel capacity).
    pub fn driver_config(mut self, config: DriverConfig) -> Self {
        self.driver = config;
        self
    }

    /// Builds the client, discovering the metadata if none was given.
    ///
    /// Must run inside a tokio runtime: the client's poll driver is spawned
    /// on it.
    ///
    /// Cancel safety: safe. Dropped, nothing was started (discovery
    /// requests are simply abandoned).
    pub async fn build(self) -> Result<DtrClient, Error> {
        let client_id = self.client_id.ok_or(ConfigError::Missing("client_id"))?;
        if client_id.is_empty() {
            return Err(ConfigError::Missing("client_id").into());
        }
        let redirect_uri = self
            .redirect_uri
            .ok_or(ConfigError::Missing("redirect_uri"))?;
        let redirect_uri = parse_redirect_uri(&redirect_uri)?;
        let notification_endpoint = self
            .notification_endpoint
            .map(|u| parse_url(&u, "notification_endpoint"))
            .transpose()?;
        let http = HttpEdge::new(&self.http)?;
        let metadata = match (self.metadata, self.issuer) {
            (Some(md), issuer) => {
                if let Some(issuer) = issuer
                    && issuer != md.issuer
                {
                    return Err(DiscoveryError::IssuerMismatch {
                        expected: issuer,
                        found: md.issuer,
                    }
                    .into());
                }
                parse_url(&md.issuer, "issuer")?;
                md.check_urls()?;
                md
            }
            (None, Some(issuer)) => crate::engine::discovery::discover(&http, &issuer).await?,
            (None, None) => return Err(ConfigError::Missing("issuer").into()),
        };
        if !self.allow_unadvertised {
            metadata.check_dtr_support()?;
        }
        let auth = match self.auth {
            Some(ClientAuth::ClientSecretBasic(secret)) if self.secret_only => {
                secret_method_from_metadata(&metadata, secret)
            }
            Some(a) => a,
            None => ClientAuth::None,
        };
        let secret = auth.client_secret();
        let validator = IdTokenValidator::new(
            metadata.issuer.clone(),
            client_id.clone(),
            self.validation,
            metadata.id_token_signing_alg_values_supported.as_deref(),
            secret,
        )?;
        self.jwks.check()?;
        let jwks = JwksCache::new(
            metadata.jwks_uri.clone(),
            self.jwks,
            validator.allowed_algorithms(),
        );
        let cancellation = match self.cancellation {
            None => None,
            Some(CancellationSetting::Given(c)) => Some(c),
            Some(CancellationSetting::FromMetadata(member, encoding)) => {
                let url = metadata
                    .additional
                    .get(&member)
                    .and_then(|v| v.as_str())
                    .ok_or(ConfigError::Invalid {
                        field: "cancellation",
                        reason: format!("the metadata has no string member `{member}`"),
                    })?;
                Some(CancellationConfig::new(url)?.encoding(encoding))
            }
        };
        if let Some(c) = &cancellation {
            c.check(&auth)?;
        }
        // The cadence is explicit: the builder's setting, else the poll
        // config's, else the default; and only when pings can arrive.
        let mut poll_config = self.poll.unwrap_or_default();
        poll_config.notified_cadence = match &notification_endpoint {
            None => None,
            Some(_) => match self.notified_cadence {
                Some(explicit) => explicit,
                None => poll_config
                    .notified_cadence
                    .or(Some(DEFAULT_NOTIFIED_CADENCE)),
            },
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::Invalid {
            field: "runtime",
            reason: "DtrClient::build must run inside a tokio runtime".into(),
        })?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let rng: Arc<dyn RandomSource> = self.rng.unwrap_or_else(|| Arc::new(SystemRandom));
        let driver_config = self.driver;
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        store.bind(&metadata.issuer, &client_id).await?;
        let records = store.load_active().await?;
        let retention = driver_config.finished_retention;
        let inner = Arc::new_cyclic(|weak| ClientInner {
            metadata,
            client_id,
            auth,
            redirect_uri,
            notification_endpoint,
            http,
            clock: clock.clone(),
            rng: rng.clone(),
            compat: self.compat,
            validator,
            jwks,
            dpop: self.dpop,
            dpop_nonces: Mutex::new(HashMap::new()),
            cancellation,
            poll_config,
            store: store.clone(),
            driver: DriverHandle::spawn(weak.clone(), clock.clone(), rng, driver_config, &runtime),
        });
        // Resume: pending authentications poll again (a full floor from
        // now), received-but-unacknowledged outcomes wait to be handed over.
        let (mut pending, mut finished) = (0usize, 0usize);
        for r in records {
            let outcome = r.outcome.map(|o| (o.outcome, o.finished_at));
            if outcome.is_some() {
                finished += 1;
            } else {
                pending += 1;
            }
            inner.driver.restore(r.auth, r.machine, outcome).await?;
        }
        if pending + finished > 0 {
            tracing::info!(pending, finished, "resumed from the store");
        }
        let _ = store.purge(clock.now().saturating_sub(retention)).await;
        Ok(DtrClient { inner })
    }
}

/// Redirect URIs: absolute, no fragment, and not plain http to a remote host
/// (https, loopback http, or a private-use scheme for native apps).
fn parse_redirect_uri(s: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(s).map_err(|e| ConfigError::InvalidUrl {
        field: "redirect_uri",
        reason: e.to_string(),
    })?;
    if url.fragment().is_some() {
        return Err(ConfigError::InvalidUrl {
            field: "redirect_uri",
            reason: "must not have a fragment".into(),
        });
    }
    match url.scheme() {
        "https" | "http" => check_url(&url, "redirect_uri")?,
        _ => {}
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        assert!(parse_redirect_uri("https://rp.example/cb").is_ok());
        assert!(parse_redirect_uri("http://127.0.0.1:8080/cb").is_ok());
        assert!(parse_redirect_uri("com.example.app:/oauth2redirect").is_ok());
        assert!(matches!(
            parse_redirect_uri("http://rp.example/cb"),
            Err(ConfigError::InsecureUrl { .. })
        ));
        assert!(parse_redirect_uri("https://rp.example/cb#x").is_err());
        assert!(parse_redirect_uri("/relative").is_err());
    }
}
