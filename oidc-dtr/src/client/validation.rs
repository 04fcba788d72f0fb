//! ID token validation through the client's JWKS cache.

use super::ClientInner;
use crate::error::{Error, ValidationError};
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
}
