//! The IETF profile's initiation (see `crate::guide::ietf`): the originating
//! grant's token request with `completion_mode=deferred`, and its two
//! outcomes (tokens at once, or a deferral code the engine then polls).

use std::sync::Arc;

use tracing::Instrument as _;

use super::{ClientInner, DtrClient};
use crate::engine::driver::WaitError;
use crate::error::{CallbackError, Error};
use crate::jose::dpop::FlowDpop;
use crate::proto::callback::CodeResponse;
use crate::proto::exchange::{DeferredAuthentication, IetfOrigin};
use crate::proto::ietf::{
    self, CLIENT_NOTIFICATION_TOKEN_BYTES, DeferredResponse, InitialAnswer, Redemption,
};
use crate::proto::poll::PollMachine;
use crate::proto::profile::Profile;
use crate::proto::token::ValidationContext;
use crate::random::random_b64url;
use crate::secret::SecretHash;

impl DtrClient {
    /// Redeems an authorization `code` with the IETF opt-in
    /// (`completion_mode=deferred`): the token request of
    /// the authorization code grant (with the PKCE verifier and the
    /// redirect URI), plus a fresh 256-bit `client_notification_token` when
    /// a notification endpoint is configured (only its hash is kept).
    ///
    /// The AS may answer at once: [`Redemption::Tokens`], validated exactly
    /// as a poll's (ID token, `nonce` included; if the AS's JWK Set stays
    /// unreachable, the tokens are kept and [`Error::TokensHeld`] says
    /// where to [`wait`](Self::wait) for them). Or it defers:
    /// [`Redemption::Deferred`], with the `deferral_code` as the handle and
    /// the `interval` of that answer remembered (later pending answers do
    /// not repeat it); the authentication is stored and polled by the
    /// engine like any other: [`wait`](Self::wait),
    /// [`subscribe`](Self::subscribe), [`cancel`](Self::cancel).
    ///
    /// Works whatever the client's profile, so an OIDC client whose OP
    /// answered a `deferred_code code` request with a plain `code` can
    /// still let an IETF-capable AS defer.
    ///
    /// # Cancel safety
    ///
    /// As [`exchange`](Self::exchange): from the request on, the work runs
    /// as a task of its own, so a deferral the AS created is never lost.
    pub async fn redeem_code(&self, code: CodeResponse) -> Result<Redemption, Error> {
        let inner = &self.inner;
        if code.pending.issuer != inner.metadata.issuer || code.pending.client_id != inner.client_id
        {
            return Err(CallbackError::WrongClient.into());
        }
        let key = inner.flow_dpop(&code.pending)?;
        let span = tracing::info_span!(
            "dtr.redeem",
            state = %code.pending.state.fingerprint(),
            deferral_code = tracing::field::Empty,
        );
        let task = tokio::spawn(inner.clone().redeem_and_track(code, key).instrument(span));
        match task.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(WaitError::Stopped.into()),
        }
    }
}

impl ClientInner {
    /// A fresh `client_notification_token` when pings are wanted.
    pub(crate) fn new_client_notification_token(&self) -> Result<Option<String>, Error> {
        match self.notification_endpoint {
            Some(_) => Ok(Some(random_b64url(
                self.rng.as_ref(),
                CLIENT_NOTIFICATION_TOKEN_BYTES,
            )?)),
            None => Ok(None),
        }
    }

    async fn redeem_and_track(
        self: Arc<Self>,
        code: CodeResponse,
        dpop_key: Option<FlowDpop>,
    ) -> Result<Redemption, Error> {
        let notification_token = self.new_client_notification_token()?;
        let mut params = vec![
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
        ietf::opt_in_params(&mut params, notification_token.as_deref());
        let issued_at = self.clock.now();
        let resp = self
            .send_token_request(&params, dpop_key.as_ref().map(FlowDpop::as_ref))
            .await
            .inspect_err(|e| {
                tracing::warn!(code = %code.code.fingerprint(), error = %e, "token request with completion_mode=deferred failed");
            })?;
        let answered_at = self.clock.now();
        let ctx = ValidationContext::from(&code);
        match ietf::parse_initial_answer(&resp, &self.metadata.token_endpoint)? {
            InitialAnswer::Tokens => {
                tracing::info!("the AS answered at once despite completion_mode=deferred");
                let origin = IetfOrigin::from(&code.pending);
                let tokens = self
                    .tokens_answered_at_once(&resp, &ctx, dpop_key, origin, Profile::Ietf)
                    .await?;
                Ok(Redemption::Tokens(Box::new(tokens)))
            }
            InitialAnswer::Deferred(d) => {
                let origin = IetfOrigin::from(&code.pending);
                let auth = self
                    .track_deferred(
                        origin,
                        d,
                        issued_at,
                        answered_at,
                        notification_token,
                        dpop_key,
                    )
                    .await?;
                Ok(Redemption::Deferred(Box::new(auth)))
            }
            InitialAnswer::DevicePending(e) => Err(crate::error::ResponseError::new(
                "deferred response",
                Some("deferral_code"),
                format!(
                    "`{}` without a deferral code answered an authorization code request",
                    e.code
                ),
            )
            .into()),
        }
    }

    /// Creates, stores and hands to the engine the authentication of a
    /// deferred response to a request sent at `issued_at` (the deadline's
    /// anchor) whose answer arrived at `answered_at` (the first poll's
    /// floor counts from it).
    pub(crate) async fn track_deferred(
        &self,
        origin: IetfOrigin,
        d: DeferredResponse,
        issued_at: crate::time::UnixTime,
        answered_at: crate::time::UnixTime,
        notification_token: Option<String>,
        dpop_key: Option<FlowDpop>,
    ) -> Result<DeferredAuthentication, Error> {
        let description = d.error.description.clone();
        let hash = notification_token.map(|t| SecretHash::of(t.as_bytes()));
        let mut auth = DeferredAuthentication::from_ietf(origin, d, issued_at, answered_at, hash);
        auth.client_cert_thumbprint = self.http.current_identity().map(Box::from);
        auth.set_dpop(dpop_key);
        tracing::Span::current().record(
            "deferral_code",
            tracing::field::display(auth.id.fingerprint()),
        );
        tracing::info!(
            deferral_code = %auth.id.fingerprint(),
            expires_at = ?auth.expires_at,
            interval_secs = auth.interval_secs,
            interaction = auth.initial_interaction_uri.is_some(),
            progress = description.as_deref().map(|d| crate::error::sanitize(d, 200)),
            "the AS deferred the token response"
        );
        let machine = PollMachine::new(&auth, self.poll_config.clone())
            .with_interaction(auth.initial_interaction_uri.as_deref().cloned());
        self.store_and_track(&auth, machine).await?;
        Ok(auth)
    }
}

/// The client's ping sink: bearer pings go to the driver's check; IETF
/// callbacks without a bearer wake an eligible authentication when the
/// application opted in.
pub(crate) struct ClientPings {
    pub(crate) driver: crate::engine::driver::DriverHandle<crate::proto::token::TokenSet>,
    pub(crate) accept_unauthenticated: bool,
}

impl crate::ping::PingSink for ClientPings {
    fn ping(
        &self,
        id: crate::secret::DeferredId,
        token: Vec<u8>,
    ) -> crate::ping::BoxFuture<crate::ping::PingVerdict> {
        let driver = self.driver.clone();
        Box::pin(async move { driver.ping(id, token).await })
    }

    fn advisory(
        &self,
        id: crate::secret::DeferredId,
    ) -> crate::ping::BoxFuture<crate::ping::PingVerdict> {
        use crate::ping::PingVerdict;
        let driver = self.driver.clone();
        let accept = self.accept_unauthenticated;
        Box::pin(async move {
            if !accept {
                return PingVerdict::Rejected;
            }
            // Only an IETF authentication that sent no notification token:
            // for one that did, a callback without it is not from the AS.
            let eligible = driver.get(&id).await.is_some_and(|t| {
                !t.finished
                    && t.auth.profile() == crate::proto::profile::Profile::Ietf
                    && t.auth.notification_token_hash().is_none()
            });
            if eligible && driver.wake(&id).await {
                PingVerdict::Woken
            } else {
                PingVerdict::Rejected
            }
        })
    }

    fn transport_authenticated(
        &self,
        id: crate::secret::DeferredId,
    ) -> crate::ping::BoxFuture<crate::ping::PingVerdict> {
        let driver = self.driver.clone();
        Box::pin(
            async move { crate::engine::driver::transport_authenticated_local(&driver, &id).await },
        )
    }
}

impl DtrClient {
    /// Starts the device authorization grant (RFC 8628 §3.1), for a CLI or
    /// device without a browser on the same machine: returns the
    /// [`DeviceAuthorization`](crate::DeviceAuthorization) whose user code
    /// and verification URI to show. The request carries `scope` (with
    /// `openid`), a fresh `nonce` (an AS that echoes it gets it checked;
    /// RFC 8628 defines none, so an ID token without one is accepted for
    /// this flow) and, unless turned off with
    /// [`completion_mode_hint`](crate::DtrClientBuilder::completion_mode_hint),
    /// the `completion_mode=deferred` hint. Needs the AS's
    /// `device_authorization_endpoint`.
    ///
    /// Cancel safety: safe (nothing is started at the AS that matters
    /// before the user acts).
    pub async fn device_authorization(
        &self,
        scope: &str,
    ) -> Result<crate::DeviceAuthorization, Error> {
        let inner = &self.inner;
        let endpoint = inner.metadata.device_authorization_endpoint().ok_or(
            crate::error::ConfigError::Invalid {
                field: "device_authorization_endpoint",
                reason: "the AS publishes no device_authorization_endpoint".into(),
            },
        )?;
        let endpoint = inner.back_channel_endpoint("device_authorization_endpoint", &endpoint);
        let mut scopes = vec!["openid".to_owned()];
        for s in scope.split_ascii_whitespace() {
            if !scopes.iter().any(|have| have == s) {
                scopes.push(s.to_owned());
            }
        }
        let nonce = crate::secret::Nonce::new(random_b64url(
            inner.rng.as_ref(),
            crate::proto::authorize::RANDOM_BYTES,
        )?);
        let hint = inner.completion_mode_hint;
        let mut params = vec![
            ("scope", scopes.join(" ")),
            ("nonce", nonce.secret().to_owned()),
        ];
        if hint {
            params.push(("completion_mode", ietf::COMPLETION_MODE_DEFERRED.to_owned()));
        }
        let requested_at = inner.clock.now();
        let req = inner.authed_form(&endpoint, params).await?;
        let resp = inner.http.send_as(None, req).await?;
        let answered_at = inner.clock.now();
        crate::proto::device::parse_device_authorization(
            &resp,
            &endpoint,
            crate::proto::device::DeviceRequest {
                issuer: inner.metadata.issuer.clone(),
                client_id: inner.client_id.clone(),
                nonce,
                requested_at,
                completion_mode_hint: hint,
            },
        )
        .map(|d| d.with_answered_at(answered_at))
    }

    /// Redeems a device authorization with `completion_mode=deferred`
    /// (the IETF opt-in, on the RFC 8628 grant): polls the device code at its interval (raised by
    /// 5 s on `slow_down`) while the AS answers the plain RFC 8628
    /// `authorization_pending` (the user has not finished at the
    /// verification URI), until the AS answers with tokens
    /// ([`Redemption::Tokens`], validated; or [`Error::TokensHeld`], kept
    /// for later, when the JWK Set is unreachable) or with a deferral
    /// ([`Redemption::Deferred`]: stored, and continued by the engine like
    /// any other). Fails with the AS's error (`access_denied`,
    /// `expired_token`, ...) or when the device code expires.
    ///
    /// Cancel safety: the polling runs as a task of its own; a deferral
    /// the AS creates is stored and tracked even if this future is
    /// dropped, but tokens answered at once would then be lost.
    pub async fn device_token(
        &self,
        device: &crate::DeviceAuthorization,
    ) -> Result<Redemption, Error> {
        let inner = &self.inner;
        if device.issuer != inner.metadata.issuer || device.client_id != inner.client_id {
            return Err(CallbackError::WrongClient.into());
        }
        let key = inner.new_flow_dpop()?;
        let span = tracing::info_span!("dtr.device", deferral_code = tracing::field::Empty,);
        let task = tokio::spawn(
            inner
                .clone()
                .device_poll(device.clone(), key)
                .instrument(span),
        );
        match task.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(WaitError::Stopped.into()),
        }
    }
}

impl ClientInner {
    async fn device_poll(
        self: Arc<Self>,
        device: crate::DeviceAuthorization,
        dpop_key: Option<FlowDpop>,
    ) -> Result<Redemption, Error> {
        let ctx = ValidationContext::new(device.nonce.clone(), device.requested_at)
            .with_optional_nonce(true);
        let mut interval = device.interval();
        // The first request waits the interval from the device authorization
        // answer's arrival, as an OP may count it from there.
        let mut last = device.answered_at();
        loop {
            let due = last.saturating_add(interval);
            if due >= device.expires_at() {
                return Err(
                    crate::error::OAuthError::new(crate::error::ErrorCode::ExpiredToken).into(),
                );
            }
            self.clock.sleep_until(due).await;
            // A fresh notification token per request (only the one of the
            // request that is deferred is bound).
            let notification_token = self.new_client_notification_token()?;
            let mut params = vec![
                ("grant_type", ietf::GRANT_TYPE_DEVICE_CODE.to_owned()),
                ("device_code", device.device_code().to_owned()),
            ];
            ietf::opt_in_params(&mut params, notification_token.as_deref());
            let issued_at = self.clock.now();
            let resp = self
                .send_token_request(&params, dpop_key.as_ref().map(FlowDpop::as_ref))
                .await?;
            // The next request waits the interval from this answer's
            // arrival (and so does the first poll of a deferral it creates).
            last = self.clock.now();
            match ietf::parse_initial_answer(&resp, &self.metadata.token_endpoint)? {
                InitialAnswer::Tokens => {
                    let tokens = self
                        .tokens_answered_at_once(
                            &resp,
                            &ctx,
                            dpop_key,
                            device.origin(),
                            Profile::Ietf,
                        )
                        .await?;
                    return Ok(Redemption::Tokens(Box::new(tokens)));
                }
                InitialAnswer::Deferred(d) => {
                    let auth = self
                        .track_deferred(
                            device.origin(),
                            d,
                            issued_at,
                            last,
                            notification_token,
                            dpop_key,
                        )
                        .await?;
                    return Ok(Redemption::Deferred(Box::new(auth)));
                }
                InitialAnswer::DevicePending(e) => {
                    if e.code == crate::error::ErrorCode::SlowDown {
                        interval = interval.saturating_add(crate::proto::poll::SLOW_DOWN_STEP);
                    }
                    tracing::debug!(error = %e.code, "device flow: the user has not finished yet");
                }
            }
        }
    }
}
