//! The UserInfo call: the access token as a bearer or DPoP-bound token (a
//! proof with `ath`, the server's nonce remembered, one retry on
//! `use_dpop_nonce`), then the pure checks of `proto::userinfo`.

use http::Method;

use crate::client::DtrClient;
use crate::error::{ConfigError, Error};
use crate::proto::token::TokenSet;
use crate::proto::userinfo::{self, UserInfo};

impl DtrClient {
    /// Calls the OP's UserInfo endpoint (`userinfo_endpoint` of the
    /// metadata) with `tokens`' access token: `Bearer`, or `DPoP` with a
    /// fresh proof (bound to the access token, `ath`) when the token type is
    /// `DPoP`.
    ///
    /// The answer must be JSON (signed or encrypted `application/jwt`
    /// responses are refused with a [`ResponseError`](crate::error::ResponseError)
    /// saying so), its `sub` must equal the ID token's (else
    /// [`ValidationError::UserInfoSubjectMismatch`](crate::error::ValidationError::UserInfoSubjectMismatch)), and its `verified_claims` are parsed and
    /// checked against the flow's `claims` request for `userinfo`, as
    /// [`TokenSet::verified_claims`] does for the ID token; a failed check is
    /// [`Error::Assurance`]. The tokens are not affected: call again at will.
    ///
    /// Under mutual TLS ([`HttpConfig::client_identity`](crate::client::HttpConfig::client_identity))
    /// the call goes to the `userinfo_endpoint` of the OP's
    /// `mtls_endpoint_aliases` (RFC 8705 §5) with the client certificate
    /// the tokens were issued to ([`TokenSet::client_cert_thumbprint`]),
    /// which certificate-bound access tokens (RFC 8705 §3) are bound to:
    /// after a certificate rotation, that is the previous certificate
    /// ([`HttpConfig::previous_client_identity`](crate::client::HttpConfig::previous_client_identity)).
    /// A certificate no longer configured is
    /// [`ConfigError::ClientIdentityNotConfigured`], and nothing is sent.
    /// Token sets stored before this was recorded use the current one.
    ///
    /// DPoP-bound tokens whose key is held by an external signer
    /// ([`DpopConfig::signer`](crate::client::DpopConfig::signer)) are
    /// presented with a proof from that signer (current or previous); a
    /// failing signer is [`Error::Signer`], one no longer configured
    /// [`ConfigError::DpopKeyNotConfigured`].
    pub async fn userinfo(&self, tokens: &TokenSet) -> Result<UserInfo, Error> {
        let inner = &self.inner;
        let endpoint = userinfo::endpoint(&inner.metadata)?;
        // Under mutual TLS the access token is bound to the client
        // certificate (RFC 8705 §3): the call presents it, at the alias.
        let endpoint = inner.back_channel_endpoint("userinfo_endpoint", &endpoint);
        let key = match (tokens.is_dpop(), tokens.dpop()) {
            (true, Some(k)) => Some(k),
            (true, None) => {
                return Err(ConfigError::Invalid {
                    field: "userinfo",
                    reason: "the access token is DPoP-bound but the token set has no DPoP key"
                        .into(),
                }
                .into());
            }
            (false, _) => None,
        };
        let ath = key.map(|_| crate::jose::dpop::ath(tokens.access_token().secret()));
        let mut retried = false;
        loop {
            // A fresh proof per attempt (the nonce retry too), signed by the
            // tokens' key: a generated one, or the external signer of its
            // thumbprint (awaited; its failure is `Error::Signer`).
            let proof = match key {
                None => None,
                Some(k) => Some(
                    inner
                        .dpop_proof_jws(k, &Method::GET, &endpoint, ath.as_deref())
                        .await?,
                ),
            };
            let req = userinfo::request(&endpoint, tokens, proof.as_deref())?;
            // A certificate-bound access token (RFC 8705 §3) goes with
            // the certificate it was issued to, even after a rotation.
            let resp = inner
                .http
                .send_as(tokens.client_cert_thumbprint(), req)
                .await?;
            let new_nonce = inner.remember_dpop_nonce(&endpoint, &resp);
            if proof.is_some() && !retried && new_nonce && userinfo::wants_dpop_nonce(&resp) {
                retried = true;
                continue;
            }
            return userinfo::parse_response(&resp, &endpoint, tokens, inner.clock.now().as_secs());
        }
    }
}
