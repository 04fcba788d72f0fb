//! Requests to the token endpoint (and the cancellation endpoint): client
//! authentication, DPoP proofs and server nonces, then the poll itself.
//!
//! Every request is built fresh: a new client assertion (JWT methods) and a
//! new DPoP proof (new `jti`, `iat`). A `use_dpop_nonce` answer, or any answer
//! with a new `DPoP-Nonce`, updates the nonce remembered for that server; a
//! `use_dpop_nonce` error is retried once at once with the new nonce. That
//! retry is part of the same exchange: it does not count as a poll and does
//! not wait for the floor.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method};
use serde_json::json;
use url::Url;

use crate::client::ClientInner;
use crate::engine::driver::{BoxFuture, Poller};
use crate::engine::outcome_map::poll_result_of;
use crate::error::{Error, ErrorCode, SharedError, ValidationError};
use crate::jose::dpop::{DpopRef, FlowDpop};
use crate::proto::cancel::{CancelEncoding, CancellationConfig};
use crate::proto::exchange::{DeferredAuthentication, IetfOrigin};
use crate::proto::message::{
    HttpRequest, HttpResponse, error_for_status, form_encode, is_pending_answer, parse_oauth_error,
    pending_answer,
};
use crate::proto::poll::{Outcome, PollFailure, PollMachine, PollResult};
use crate::proto::profile::Profile;
use crate::proto::token::{self, HeldTokens, TokenSet, ValidationContext};
use crate::random::random_b64url;
use crate::secret::DeferredId;
use crate::store::{Record, StoreError, StoredOutcome};
use crate::time::UnixTime;

/// Quick attempts at validating tokens whose JWK Set could not be fetched,
/// and the pause between them (growing: 2, 4, 6 s), before the tokens are
/// kept for a later validation. The tokens are in hand and the OP will not
/// issue them again.
pub(crate) const JWKS_RETRIES: u32 = 4;
pub(crate) const JWKS_RETRY_PAUSE: Duration = Duration::from_secs(2);

/// Attempts at storing an outcome before it is handed over regardless.
const OUTCOME_STORE_RETRIES: u32 = 5;

/// The same for a fleet member (about two minutes): its outcomes are only
/// delivered from the shared store.
const FLEET_OUTCOME_STORE_RETRIES: u32 = 60;

/// `scheme://host:port`: DPoP nonces are remembered per server.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

impl ClientInner {
    /// Remembers a `DPoP-Nonce` from any response. True if it changed.
    pub(crate) fn remember_dpop_nonce(&self, url: &Url, resp: &HttpResponse) -> bool {
        let Some(nonce) = resp.header("dpop-nonce") else {
            return false;
        };
        // RFC 9449 §8.1: NQCHAR; anything else is ignored.
        if nonce.is_empty()
            || nonce.len() > 512
            || !nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
        {
            return false;
        }
        let mut nonces = self.dpop_nonces.lock().unwrap_or_else(|p| p.into_inner());
        let key = origin(url);
        if nonces.get(&key).map(String::as_str) == Some(nonce) {
            return false;
        }
        // Bounded: one entry per server this client talks to.
        if nonces.len() >= 16 && !nonces.contains_key(&key) {
            nonces.clear();
        }
        nonces.insert(key, nonce.to_owned());
        true
    }

    /// Sends a request built by `build` (called once per attempt, so every
    /// attempt gets fresh credentials), adding a DPoP proof when a key is
    /// given, and retrying once at once on `use_dpop_nonce`; with the
    /// current client certificate when mutual TLS is configured.
    pub(crate) async fn send_with_dpop<F>(
        &self,
        dpop: Option<DpopRef<'_>>,
        build: impl Fn() -> F,
    ) -> Result<HttpResponse, Error>
    where
        F: std::future::Future<Output = Result<HttpRequest, Error>>,
    {
        self.send_with_dpop_as(None, dpop, build).await
    }

    /// [`send_with_dpop`](Self::send_with_dpop) presenting the client
    /// certificate whose thumbprint is `identity` (`None`: the current
    /// one). A certificate no longer configured is
    /// [`ConfigError::ClientIdentityNotConfigured`](crate::error::ConfigError::ClientIdentityNotConfigured):
    /// nothing is sent. Every attempt (the `use_dpop_nonce` retry too) gets
    /// a proof signed afresh, by the external signer when the key is one's;
    /// a signer that fails, or is not configured, sends nothing.
    pub(crate) async fn send_with_dpop_as<F>(
        &self,
        identity: Option<&str>,
        dpop: Option<DpopRef<'_>>,
        build: impl Fn() -> F,
    ) -> Result<HttpResponse, Error>
    where
        F: std::future::Future<Output = Result<HttpRequest, Error>>,
    {
        let mut retried = false;
        loop {
            let mut req = build().await?;
            if let Some(key) = dpop {
                let proof = self.dpop_proof(key, &req.method, &req.url, None).await?;
                req.headers.insert("dpop", proof);
            }
            let url = req.url.clone();
            let resp = self.http.send_as(identity, req).await?;
            let new_nonce = self.remember_dpop_nonce(&url, &resp);
            // A pending answer (the common one) is told apart without
            // parsing the body as a whole.
            let wants_nonce = dpop.is_some()
                && !resp.status.is_success()
                && !is_pending_answer(&resp)
                && parse_oauth_error(&resp).is_some_and(|e| e.code == ErrorCode::UseDpopNonce);
            if wants_nonce && new_nonce && !retried {
                tracing::debug!(endpoint = %crate::proto::message::endpoint_label(&url), "retrying with the server's DPoP nonce");
                retried = true;
                continue;
            }
            return Ok(resp);
        }
    }

    /// A token-endpoint request with fresh client authentication and DPoP
    /// (and the current client certificate, under mutual TLS).
    pub(crate) async fn send_token_request(
        &self,
        params: &[(&'static str, String)],
        dpop: Option<DpopRef<'_>>,
    ) -> Result<HttpResponse, Error> {
        self.send_with_dpop(dpop, || self.token_request(params.to_vec()))
            .await
    }

    /// Reads a token response in hand and validates it: token type against
    /// the DPoP expectation, then the ID token through
    /// [`validate_in_hand`](Self::validate_in_hand) (the one
    /// validate-with-retry of every path that receives tokens: `attempts`
    /// in all while the JWK Set is unreachable, one forced refresh for an
    /// unknown `kid`), checked as of `received_at`; attaches the DPoP key
    /// and the client certificate (`identity`; `None`: the current one)
    /// the tokens were requested with.
    /// Tokens whose validation cannot finish now come back as
    /// [`InHand::Held`], for the caller to keep.
    pub(crate) async fn receive_tokens(
        &self,
        resp: &HttpResponse,
        received_at: UnixTime,
        ctx: &ValidationContext,
        dpop: Option<DpopRef<'_>>,
        identity: Option<&str>,
        attempts: u32,
    ) -> Result<InHand, Error> {
        let parsed = token::parse_token_response(resp, &self.metadata.token_endpoint)?;
        if dpop.is_some() && !parsed.is_dpop() && self.dpop.reject_downgrade {
            return Err(ValidationError::DpopDowngrade {
                token_type: crate::error::sanitize(&parsed.token_type, 40),
            }
            .into());
        }
        let Some(raw) = parsed.id_token.clone() else {
            tracing::warn!("token response without id_token");
            return Err(ValidationError::MissingIdToken.into());
        };
        match self
            .validate_in_hand(&raw, ctx, Some(&parsed.access_token), received_at, attempts)
            .await
        {
            Ok(id_token) => {
                tracing::debug!(id_token = %raw.fingerprint(), "ID token validated");
                let tokens = TokenSet::new(parsed, id_token, received_at)
                    .with_claims_request_of(ctx)
                    .with_dpop(dpop.map(DpopRef::to_owned_dpop))
                    .with_client_cert(identity.or_else(|| self.http.current_identity()));
                Ok(InHand::Tokens(Box::new(tokens)))
            }
            Err(e) if e.is_retryable() => match HeldTokens::new(&resp.body, received_at) {
                Some(tokens) => Ok(InHand::Held { tokens, reason: e }),
                None => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Tokens answered at once (the plain-code fallback, an IETF
    /// redemption, the device flow), validated with the quick retries.
    /// When their validation cannot finish now (the JWK Set is
    /// unreachable), they are not dropped: they are stored under a new
    /// handle (durably where a store is configured) and handed to the
    /// engine, which validates them once the keys can be fetched; the
    /// caller gets [`Error::TokensHeld`] with the handle to `wait` on.
    pub(crate) async fn tokens_answered_at_once(
        &self,
        resp: &HttpResponse,
        ctx: &ValidationContext,
        dpop: Option<FlowDpop>,
        origin: IetfOrigin,
        profile: crate::proto::profile::Profile,
    ) -> Result<TokenSet, Error> {
        let received_at = self.clock.now();
        let (tokens, reason) = match self
            .receive_tokens(
                resp,
                received_at,
                ctx,
                dpop.as_ref().map(FlowDpop::as_ref),
                None,
                JWKS_RETRIES,
            )
            .await?
        {
            InHand::Tokens(t) => return Ok(*t),
            InHand::Held { tokens, reason } => (tokens, reason),
        };
        let handle = DeferredId::new(format!("held-{}", random_b64url(self.rng.as_ref(), 32)?));
        let mut auth =
            DeferredAuthentication::holding(origin, handle.clone(), received_at, profile);
        auth.client_cert_thumbprint = self.http.current_identity().map(Box::from);
        auth.set_dpop(dpop);
        let machine = PollMachine::new(&auth, self.poll_config.clone()).holding(
            tokens,
            reason.to_string(),
            self.clock.now(),
        );
        let stored = self.store_and_track(&auth, machine).await;
        if let Err(e) = &stored {
            // Still tracked in this process (see `store_and_track`).
            tracing::error!(handle = %handle.fingerprint(), error = %e, "held tokens could not be stored; they are kept in memory only");
        }
        Err(Error::TokensHeld {
            handle,
            source: reason,
        })
    }
}

/// What became of a token response in hand.
pub(crate) enum InHand {
    /// Validated (boxed: a token set is large).
    Tokens(Box<TokenSet>),
    /// Its ID token could not be validated now (the JWK Set was
    /// unreachable after the retries): kept, to be validated later.
    Held {
        /// The token response as received.
        tokens: HeldTokens,
        /// The last validation error (retryable).
        reason: ValidationError,
    },
}

impl Poller for ClientInner {
    type Tokens = TokenSet;

    fn persist_state(
        self: Arc<Self>,
        auth: DeferredAuthentication,
        machine: PollMachine,
    ) -> BoxFuture<()> {
        Box::pin(async move {
            let leased = self
                .fleet
                .as_ref()
                .and_then(|f| Some((f.clone(), f.lease(auth.id())?)));
            let Some((f, lease)) = leased else {
                if self.fleet.is_some() {
                    // No lease any more (lost meanwhile): nothing to write.
                    return;
                }
                if let Err(e) = self.store.update_state(auth.id(), machine).await {
                    tracing::debug!(deferred_auth_id = %auth.id().fingerprint(), error = %e, "poll state not stored");
                }
                return;
            };
            // The driver runs state writes concurrently (bounded by
            // `DriverConfig::max_queued_writes`, and a full backlog holds new
            // polls back); a fleet member also bounds how many hold a
            // database connection at once. Never skipped: the floor a
            // `slow_down` raised, the DPoP nonce and the schedule must reach
            // whoever takes over.
            let Ok(slot) = f.write_slots.clone().acquire_owned().await else {
                return;
            };
            // The write renews the lease where the store can (see
            // `Fleet::renewed`): counted, like a renewal, from when it is sent.
            let sent = std::time::Instant::now();
            let written = self
                .store
                .update_state_renewing(auth.id(), machine, f.owner(), lease, f.config().lease_ttl)
                .await;
            drop(slot);
            match written {
                Ok(true) => f.renewed(auth.id(), lease, sent),
                Ok(false) => {}
                Err(StoreError::LeaseLost { .. }) => self.lease_lost(&auth),
                Err(e) => {
                    tracing::debug!(deferred_auth_id = %auth.id().fingerprint(), error = %e, "poll state not stored");
                }
            }
        })
    }

    fn persist_outcome(
        self: Arc<Self>,
        auth: DeferredAuthentication,
        machine: PollMachine,
        outcome: Outcome<TokenSet>,
        finished_at: UnixTime,
    ) -> BoxFuture<bool> {
        Box::pin(async move {
            let mut attempt = 0u32;
            let lease = self
                .fleet
                .as_ref()
                .and_then(|f| Some((f.clone(), f.lease(auth.id())?)));
            // A fleet member keeps trying while the store is unreachable
            // (its outcome is only delivered from the store), until the
            // lease is known lost.
            let retries = if lease.is_some() {
                FLEET_OUTCOME_STORE_RETRIES
            } else {
                OUTCOME_STORE_RETRIES
            };
            if self.fleet.is_some() && lease.is_none() {
                // The lease was lost while the answer was on its way.
                return self
                    .outcome_without_lease(&auth, machine, outcome, finished_at)
                    .await;
            }
            loop {
                let stored = StoredOutcome::new(finished_at, outcome.clone());
                let written = match &lease {
                    Some((f, l)) => {
                        self.store
                            .finish_leased(auth.id(), machine.clone(), stored, f.owner(), *l)
                            .await
                    }
                    None => self.store.finish(auth.id(), machine.clone(), stored).await,
                };
                match written {
                    Ok(()) => {
                        if let Some((f, _)) = &lease {
                            f.drop_lease(auth.id());
                        }
                        return true;
                    }
                    Err(StoreError::LeaseLost { .. }) if lease.is_some() => {
                        return self
                            .outcome_without_lease(&auth, machine, outcome, finished_at)
                            .await;
                    }
                    Err(StoreError::AlreadyFinished { .. }) if lease.is_some() => {
                        tracing::warn!(deferred_auth_id = %auth.id().fingerprint(), outcome = outcome.kind(), "another instance stored this authentication's outcome first");
                        self.lease_lost(&auth);
                        return false;
                    }
                    // Not in this store (tracked with `resume` before a
                    // store was configured, say): add it, finished.
                    Err(StoreError::NotFound { .. }) if attempt == 0 => {
                        let mut r =
                            Record::new(DeferredAuthentication::clone(&auth), machine.clone());
                        r.outcome = Some(StoredOutcome::new(finished_at, outcome.clone()));
                        if self.store.insert(r).await.is_ok() {
                            return true;
                        }
                    }
                    Err(e) if attempt < retries => {
                        tracing::warn!(deferred_auth_id = %auth.id().fingerprint(), error = %e, attempt, "storing the outcome failed; retrying");
                    }
                    Err(e) => {
                        tracing::error!(
                            deferred_auth_id = %auth.id().fingerprint(),
                            error = %e,
                            "the outcome could not be stored; handing it over anyway (a crash before the application acknowledges it would lose it)"
                        );
                        return true;
                    }
                }
                attempt += 1;
                let until = self
                    .clock
                    .now()
                    .saturating_add(Duration::from_millis(200) * attempt.min(10));
                self.clock.sleep_until(until).await;
            }
        })
    }

    fn validate_held(
        self: Arc<Self>,
        auth: DeferredAuthentication,
        tokens: HeldTokens,
    ) -> BoxFuture<PollResult<TokenSet>> {
        Box::pin(async move {
            let ctx = ValidationContext::from(&auth);
            let resp = tokens.response();
            // One attempt: the engine's schedule is the backoff.
            match self
                .receive_tokens(
                    &resp,
                    tokens.received_at(),
                    &ctx,
                    auth.dpop(),
                    auth.client_cert_thumbprint(),
                    1,
                )
                .await
            {
                Ok(InHand::Tokens(t)) => {
                    tracing::info!(deferred_auth_id = %auth.id().fingerprint(), "held tokens validated");
                    PollResult::Tokens(*t)
                }
                Ok(InHand::Held { tokens, reason }) => PollResult::Held {
                    tokens,
                    reason: reason.to_string(),
                },
                Err(Error::Validation(v)) => PollResult::Permanent(PollFailure::InvalidTokens(v)),
                Err(e) => PollResult::Permanent(PollFailure::TokensRefused {
                    reason: e.to_string(),
                    cause: Some(SharedError::new(e)),
                }),
            }
        })
    }

    fn may_poll(&self, id: &crate::secret::DeferredId) -> bool {
        self.fleet.as_ref().is_none_or(|f| f.may_poll(id))
    }

    fn purge_stored(self: Arc<Self>, before: UnixTime) -> BoxFuture<()> {
        Box::pin(async move {
            if let Err(e) = self.store.purge(before).await {
                tracing::warn!(error = %e, "purging finished authentications failed");
            }
        })
    }

    fn poll(self: Arc<Self>, auth: DeferredAuthentication) -> BoxFuture<PollResult<TokenSet>> {
        let span = tracing::info_span!(
            "dtr.poll",
            deferred_auth_id = %auth.id().fingerprint(),
            profile = auth.profile().as_str(),
        );
        Box::pin(tracing::Instrument::instrument(
            async move {
                let profile = auth.profile();
                match self.poll_once(&auth).await {
                    PollResult::OAuth(e) => profile.classify(e),
                    other => other,
                }
            },
            span,
        ))
    }
}

/// What every poll request of a client shares: the token endpoint (under
/// mutual TLS its alias), parsed once for the HTTP stack, and the headers
/// and form parameters of client authentication when they are the same for
/// every request (no assertion to mint).
pub(crate) struct PollTemplate {
    /// Shared with every request (no copy per poll).
    url: Arc<Url>,
    uri: http::Uri,
    /// `Content-Type`, `Accept`, `User-Agent` and `Host`, and
    /// `Authorization` for `client_secret_basic`.
    headers: http::HeaderMap,
    /// `&client_id=...` (and the secret for `client_secret_post`), form
    /// encoded; `None` when client authentication is minted per request.
    static_form: Option<zeroize::Zeroizing<String>>,
    /// The form before the handle, encoded, per profile:
    /// `grant_type=...&deferred_auth_id=` and `grant_type=...&deferral_code=`.
    oidc_prefix: String,
    ietf_prefix: String,
}

impl ClientInner {
    /// The poll template, prepared at the first poll.
    fn poll_template(&self) -> Result<&PollTemplate, Error> {
        if let Some(t) = self.poll_template.get() {
            return Ok(t);
        }
        let url =
            Arc::new(self.back_channel_endpoint("token_endpoint", &self.metadata.token_endpoint));
        let invalid = || crate::error::ConfigError::InvalidUrl {
            field: "token_endpoint",
            reason: "not a URI the HTTP stack takes".into(),
        };
        let uri = url.as_str().parse::<http::Uri>().map_err(|_| invalid())?;
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        // Those the edge sets, already in place (a copy of this map then
        // takes them without growing).
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(http::header::USER_AGENT, self.http.user_agent().clone());
        // `Host` as the HTTP stack would write it, built once instead of
        // per request.
        headers.insert(
            http::header::HOST,
            crate::engine::transport::host_header(&uri).ok_or_else(invalid)?,
        );
        let static_form = if self.auth.is_static() {
            let ctx = crate::proto::client_auth::AuthContext {
                client_id: &self.client_id,
                issuer: &self.metadata.issuer,
                endpoint: &url,
                now: self.clock.now(),
                rng: self.rng.as_ref(),
            };
            let mut params = Vec::new();
            // Static methods never hand back an assertion to sign.
            let _ = self.auth.apply(&ctx, &mut headers, &mut params)?;
            let mut form = zeroize::Zeroizing::new(String::new());
            for (k, mut v) in params {
                form.push('&');
                form.push_str(&zeroize::Zeroizing::new(form_encode([(k, v.as_str())])));
                zeroize::Zeroize::zeroize(&mut v);
            }
            Some(form)
        } else {
            None
        };
        let prefix = |p: Profile| {
            let mut form =
                form_encode([("grant_type", p.poll_grant_type()), (p.handle_name(), "")]);
            debug_assert!(form.ends_with('='));
            form.shrink_to_fit();
            form
        };
        let _ = self.poll_template.set(PollTemplate {
            url,
            uri,
            headers,
            static_form,
            oidc_prefix: prefix(Profile::Oidc),
            ietf_prefix: prefix(Profile::Ietf),
        });
        Ok(self.poll_template.get().unwrap_or_else(|| unreachable!()))
    }

    /// A poll request: the profile's form, with client authentication
    /// (static parts prepared once, an assertion minted fresh each time).
    async fn poll_request(&self, auth: &DeferredAuthentication) -> Result<HttpRequest, Error> {
        let t = self.poll_template()?;
        let profile = auth.profile();
        let id = auth.id().secret();
        let suffix = t.static_form.as_ref().map_or("", |f| f.as_str());
        let prefix = match profile {
            Profile::Oidc => &t.oidc_prefix,
            Profile::Ietf => &t.ietf_prefix,
        };
        // Sized exactly for a static client authentication: the body then
        // becomes the request's buffer as it is (no second allocation).
        let encoded_id = || url::form_urlencoded::byte_serialize(id.as_bytes());
        let len = prefix.len() + encoded_id().map(str::len).sum::<usize>() + suffix.len();
        let mut body = String::with_capacity(len);
        body.push_str(prefix);
        body.extend(encoded_id());
        // Built with room for what the edge and the HTTP stack add
        // (`Content-Length`, a DPoP proof), so that no insert grows it: a
        // copy of the template would be sized exactly and grow at once.
        let mut headers = http::HeaderMap::with_capacity(t.headers.len() + 4);
        for (name, value) in &t.headers {
            headers.append(name.clone(), value.clone());
        }
        if t.static_form.is_some() {
            body.push_str(suffix);
        } else {
            let mut params = Vec::new();
            self.apply_client_auth(&t.url, &mut headers, &mut params)
                .await?;
            for (k, v) in &params {
                body.push('&');
                body.push_str(&form_encode([(*k, v.as_str())]));
            }
        }
        Ok(HttpRequest {
            method: Method::POST,
            url: t.url.clone(),
            uri: Some(t.uri.clone()),
            headers,
            body: body.into_bytes(),
        })
    }

    /// One poll: the profile's form, then the answer validated as tokens
    /// or classified as an error.
    async fn poll_once(&self, auth: &DeferredAuthentication) -> PollResult<TokenSet> {
        let dpop = auth.dpop();
        let resp = match self
            .send_with_dpop_as(auth.client_cert_thumbprint(), dpop, || {
                self.poll_request(auth)
            })
            .await
        {
            Ok(r) => r,
            Err(e) => return poll_result_of(e),
        };
        // The answer of most polls (`authorization_pending`, `slow_down`),
        // read without the general error machinery; the same result.
        if let Some(e) = pending_answer(&resp) {
            return PollResult::OAuth(e);
        }
        // Error statuses come back from the token-response parser as
        // OAuth or HTTP errors and are classified below.
        let ctx = ValidationContext::from(auth);
        let received_at = self.clock.now();
        match self
            .receive_tokens(
                &resp,
                received_at,
                &ctx,
                dpop,
                auth.client_cert_thumbprint(),
                JWKS_RETRIES,
            )
            .await
        {
            Ok(InHand::Tokens(tokens)) => PollResult::Tokens(*tokens),
            // The OP redeemed the id and answered with tokens that cannot
            // be validated now: the machine keeps them.
            Ok(InHand::Held { tokens, reason }) => PollResult::Held {
                tokens,
                reason: reason.to_string(),
            },
            // A 2xx JSON object that is not an OAuth error: the OP
            // answered with tokens and has redeemed the id. Polling
            // again would only earn `invalid_grant`: the tokens were
            // received, and are refused for the rule they break.
            Err(Error::Response(r)) if is_success_json_object(&resp) => {
                tracing::error!(
                    deferred_auth_id = %auth.id().fingerprint(),
                    error = %r,
                    "tokens received but refused: the token response breaks a rule"
                );
                PollResult::Permanent(PollFailure::TokensRefused {
                    reason: r.to_string(),
                    cause: Some(SharedError::new(r)),
                })
            }
            // A 2xx that is not JSON at all (a proxy page): the OP may
            // not have redeemed anything; poll again (its fate is
            // unknown, so a later `invalid_grant` says so).
            Err(e @ (Error::Response(_) | Error::OAuth(_))) => poll_result_of(e),
            // Tokens that fail validation end the authentication: the id
            // is spent and the tokens are not to be trusted.
            Err(Error::Validation(v)) => PollResult::Permanent(PollFailure::InvalidTokens(v)),
            Err(e) => poll_result_of(e),
        }
    }
}

/// Whether a response is a 2xx whose body is a JSON object (a token
/// response, well-formed or not; OAuth error bodies are handled before).
fn is_success_json_object(resp: &HttpResponse) -> bool {
    resp.status.is_success()
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&resp.body).is_ok()
}

impl ClientInner {
    /// Another instance took the authentication over: stop here.
    /// An outcome reached after this instance lost the lease. Anything but
    /// an answer that redeemed the id (tokens, or tokens refused) is
    /// dropped: the new owner polls again and reaches its own answer.
    /// Those are different: the OP has redeemed the id, so the new
    /// owner's poll can only get `invalid_grant`. They are stored unless
    /// an outcome already is (an unfenced write that never replaces one:
    /// the store refuses with `AlreadyFinished`, and the new owner's fenced
    /// write of a later answer is refused the same way once this one is in).
    async fn outcome_without_lease(
        &self,
        auth: &DeferredAuthentication,
        machine: PollMachine,
        outcome: Outcome<TokenSet>,
        finished_at: UnixTime,
    ) -> bool {
        if crate::engine::driver::redeemed_the_id(&outcome) {
            let stored = StoredOutcome::new(finished_at, outcome);
            for _ in 0..FLEET_OUTCOME_STORE_RETRIES {
                match self
                    .store
                    .finish(auth.id(), machine.clone(), stored.clone())
                    .await
                {
                    Ok(()) => {
                        tracing::info!(deferred_auth_id = %auth.id().fingerprint(), "the lease was lost but the tokens were stored");
                        if let Some(f) = &self.fleet {
                            f.drop_lease(auth.id());
                        }
                        return true;
                    }
                    Err(e) if e.is_retryable() => {
                        let until = self.clock.now().saturating_add(Duration::from_millis(200));
                        self.clock.sleep_until(until).await;
                    }
                    Err(_) => break,
                }
            }
        }
        tracing::warn!(deferred_auth_id = %auth.id().fingerprint(), "the lease was lost before the outcome was stored; another instance carries on");
        self.lease_lost(auth);
        false
    }

    fn lease_lost(&self, auth: &DeferredAuthentication) {
        tracing::info!(deferred_auth_id = %auth.id().fingerprint(), "lease lost: another instance polls this authentication now");
        if let Some(f) = &self.fleet {
            f.drop_lease(auth.id());
        }
        self.driver.forget(auth.id());
    }

    async fn cancel_request(
        &self,
        cfg: &CancellationConfig,
        auth: &DeferredAuthentication,
    ) -> Result<HttpRequest, Error> {
        match cfg.encoding {
            CancelEncoding::Form => {
                self.authed_form(
                    &cfg.endpoint,
                    vec![("deferred_auth_id", auth.id().secret().to_owned())],
                )
                .await
            }
            CancelEncoding::Json => {
                // Header-based authentication only (checked at build), so
                // no body parameter is produced.
                let mut headers = http::HeaderMap::new();
                self.apply_client_auth(&cfg.endpoint, &mut headers, &mut Vec::new())
                    .await?;
                let mut req = HttpRequest::post_json(
                    cfg.endpoint.clone(),
                    &json!({ "deferred_auth_id": auth.id().secret() }),
                );
                req.headers.extend(headers);
                Ok(req)
            }
        }
    }

    /// Cancels an IETF authentication by RFC 7009 revocation of its
    /// deferral code (as the IETF draft asks), with client authentication and, when the code
    /// is DPoP-bound, a proof from its key. Any 2xx is success.
    pub(crate) async fn send_revocation(
        &self,
        endpoint: &Url,
        auth: &DeferredAuthentication,
    ) -> Result<(), Error> {
        let resp = self
            .send_with_dpop_as(auth.client_cert_thumbprint(), auth.dpop(), || {
                self.authed_form(
                    endpoint,
                    crate::proto::ietf::revocation_params(auth.id().secret()),
                )
            })
            .await?;
        error_for_status(&resp, endpoint)
    }

    /// Sends the cancellation request (with client authentication and, when
    /// the authentication uses DPoP, a proof from its key).
    pub(crate) async fn send_cancel(
        &self,
        cfg: &CancellationConfig,
        auth: &DeferredAuthentication,
    ) -> Result<(), Error> {
        let resp = self
            .send_with_dpop_as(auth.client_cert_thumbprint(), auth.dpop(), || {
                self.cancel_request(cfg, auth)
            })
            .await?;
        error_for_status(&resp, &cfg.endpoint)
    }
}
