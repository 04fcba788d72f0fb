//! ID token validation through the client's JWKS cache.

use super::ClientInner;
use crate::client::back_channel::JWKS_RETRY_PAUSE;
use crate::error::{Error, ValidationError};
use crate::jose::jws::{self, JwsBuf};
use crate::proto::token::{IdToken, TokenResponse, TokenSet, ValidationContext};
use crate::secret::{AccessToken, RawJwt};
use crate::time::UnixTime;

impl ClientInner {
    /// See [`DtrClient::validate_token_response`](super::DtrClient::validate_token_response).
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

    /// Validates an ID token the SDK holds from the token endpoint (final or
    /// interim): the OP will not issue it again, so this tries harder than
    /// [`validate_jwt`](Self::validate_jwt). The one validate-with-retry of
    /// every path that receives tokens:
    ///
    /// - a `kid` the cached set lacks gets one forced JWK Set refresh, at
    ///   once, whatever the unknown-`kid` cooldown (one per call, that is
    ///   per token response: a made-up `kid` costs the OP one fetch);
    /// - a JWK Set that cannot be fetched is retried up to `attempts` times
    ///   in all, with growing pauses on the client's clock; the last
    ///   error is then returned (retryable: [`ValidationError::is_retryable`]),
    ///   and the caller keeps the tokens for later.
    ///
    /// Times are checked at `received_at`, when the tokens arrived.
    pub(crate) async fn validate_in_hand(
        &self,
        raw: &RawJwt,
        ctx: &ValidationContext,
        access_token: Option<&AccessToken>,
        received_at: UnixTime,
        attempts: u32,
    ) -> Result<IdToken, ValidationError> {
        let mut attempt = 0;
        let mut kid_refreshed = false;
        loop {
            let generation = self.jwks.generation();
            let result = match self.validate_jwt(raw, ctx, access_token, received_at).await {
                Err(ValidationError::UnknownKid { .. }) if !kid_refreshed => {
                    match self
                        .jwks
                        .refresh_for_tokens(&self.http, self.clock.as_ref(), generation)
                        .await
                    {
                        Ok(()) => {
                            kid_refreshed = true;
                            continue;
                        }
                        // Unreachable: retried like any unreachable set,
                        // and the forced refresh is still owed.
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
            match result {
                Err(e) if e.is_retryable() && attempt + 1 < attempts => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "tokens in hand: the JWK Set is unavailable; retrying validation");
                    let until = self.clock.now().saturating_add(JWKS_RETRY_PAUSE * attempt);
                    self.clock.sleep_until(until).await;
                }
                Err(e) => {
                    tracing::warn!(id_token = %raw.fingerprint(), error = %e, "ID token not validated");
                    return Err(e);
                }
                Ok(t) => return Ok(t),
            }
        }
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
        let parts = jws::split(raw.secret())?;
        // A header the current key set has seen on a verified token passes
        // the same checks with the same result (it depends on its text
        // alone): its decoding and parsing are skipped. The key is looked up
        // as always, which keeps the JWK Set's refresh rules.
        let current = self.jwks.current();
        let known = current
            .as_deref()
            .and_then(|keys| keys.known_header(parts.header));
        let mut buf = JwsBuf::new();
        let jws = match known {
            Some(k) => jws::decode_known(parts, k.alg, k.kid.as_deref(), &mut buf)?,
            None => jws::decode_parts(parts, &mut buf)?,
        };
        self.validator.check_alg(jws.alg)?;
        if jws.alg.is_hmac() {
            self.validator.verify_hmac(&jws)?;
        } else {
            let key = self
                .jwks
                .resolve(&self.http, self.clock.as_ref(), jws.kid.as_deref(), jws.alg)
                .await?;
            key.verify(jws.signing_input, jws.signature)?;
            if known.is_none() {
                key.remember_header(parts.header);
            }
        }
        let claims = self.validator.check_claims(&jws, ctx, access_token, now)?;
        Ok(IdToken::new(raw.clone(), claims))
    }
}
