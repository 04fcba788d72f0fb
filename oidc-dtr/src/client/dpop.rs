//! DPoP proofs (RFC 9449) of the client: the key of each flow (generated,
//! or an external signer named by its thumbprint), and proofs signed by it
//! with the server's remembered nonce.
//!
//! A flow bound to an external signer's key keeps only its thumbprint; the
//! signer is looked up among the configured ones (current and previous) at
//! every proof. One that is not configured any more signs nothing:
//! [`ConfigError::DpopKeyNotConfigured`], and nothing is sent.

use http::{HeaderValue, Method};
use url::Url;

use crate::client::{ClientInner, DtrClient};
use crate::error::{ConfigError, Error};
use crate::jose::DpopKey;
use crate::jose::dpop::{DpopRef, FlowDpop, ProofClaims, unsigned_proof};
use crate::proto::authorize::PendingAuthorization;
use crate::proto::token::TokenSet;
use crate::random::random_b64url;

impl ClientInner {
    /// A fresh DPoP proof for a request to `url` (with `ath`, the access
    /// token hash, for a resource request), with the nonce remembered for
    /// that server. An external signer is awaited; its failure is
    /// [`Error::Signer`].
    pub(crate) async fn dpop_proof_jws(
        &self,
        dpop: DpopRef<'_>,
        method: &Method,
        url: &Url,
        ath: Option<&str>,
    ) -> Result<String, Error> {
        let nonce = self.dpop_nonce_for(url);
        self.sign_proof(dpop, method, url, nonce.as_deref(), ath)
            .await
    }

    /// A proof with the given nonce, signed by the flow's key.
    async fn sign_proof(
        &self,
        dpop: DpopRef<'_>,
        method: &Method,
        url: &Url,
        nonce: Option<&str>,
        ath: Option<&str>,
    ) -> Result<String, Error> {
        let jti = random_b64url(self.rng.as_ref(), 16)?;
        let claims = ProofClaims {
            method,
            url,
            now: self.clock.now(),
            jti: &jti,
            nonce,
            ath,
        };
        match dpop {
            DpopRef::Key(key) => {
                let unsigned = unsigned_proof(key.algorithm(), key.public_jwk(), claims);
                key.signing_key()
                    .sign(unsigned.signing_input())
                    .map(|sig| unsigned.complete(&sig))
                    .map_err(|e| {
                        ConfigError::Invalid {
                            field: "dpop",
                            reason: e.to_string(),
                        }
                        .into()
                    })
            }
            DpopRef::Signer(jkt) => {
                let Some(s) = self.dpop_signers.find(jkt) else {
                    tracing::warn!(
                        jkt,
                        "the DPoP signer of this key is not configured; nothing is sent"
                    );
                    return Err(ConfigError::DpopKeyNotConfigured {
                        thumbprint: jkt.to_owned(),
                    }
                    .into());
                };
                unsigned_proof(s.signer.algorithm(), &s.jwk, claims)
                    .sign_with(s.signer.as_ref())
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, jkt, "the signer could not sign the DPoP proof");
                        Error::Signer(e)
                    })
            }
        }
    }

    /// [`dpop_proof_jws`](Self::dpop_proof_jws) as a header value.
    pub(crate) async fn dpop_proof(
        &self,
        dpop: DpopRef<'_>,
        method: &Method,
        url: &Url,
        ath: Option<&str>,
    ) -> Result<HeaderValue, Error> {
        let proof = self.dpop_proof_jws(dpop, method, url, ath).await?;
        HeaderValue::from_str(&proof).map_err(|_| {
            ConfigError::Invalid {
                field: "dpop",
                reason: "proof is not a valid header value".into(),
            }
            .into()
        })
    }

    /// The `DPoP-Nonce` remembered for the server of `url`.
    pub(crate) fn dpop_nonce_for(&self, url: &Url) -> Option<String> {
        self.dpop_nonces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&url.origin().ascii_serialization())
            .cloned()
    }

    /// The DPoP key of the token requests of a flow: the key a pushed
    /// request bound its code to (`dpop_jkt`, RFC 9449 §10), else a new
    /// one when DPoP is on.
    pub(crate) fn flow_dpop(
        &self,
        pending: &PendingAuthorization,
    ) -> Result<Option<FlowDpop>, Error> {
        match pending.dpop() {
            Some(d) => Ok(Some(d.to_owned_dpop())),
            None => self.new_flow_dpop(),
        }
    }

    /// The DPoP key of a new authentication process, when DPoP is on: the
    /// current external signer's, else a fresh key.
    pub(crate) fn new_flow_dpop(&self) -> Result<Option<FlowDpop>, Error> {
        if !self.uses_dpop() {
            return Ok(None);
        }
        if let Some(s) = &self.dpop_signers.current {
            return Ok(Some(FlowDpop::Signer(s.thumbprint.clone())));
        }
        DpopKey::generate(self.dpop.algorithm)
            .map(|k| Some(FlowDpop::Key(Box::new(k))))
            .map_err(|e| {
                ConfigError::Invalid {
                    field: "dpop",
                    reason: e.to_string(),
                }
                .into()
            })
    }

    /// The thumbprint of the external signer new pushed requests are bound
    /// to, when DPoP is on and one is configured.
    pub(crate) fn dpop_signer_jkt(&self) -> Option<&str> {
        self.dpop_signers
            .current
            .as_ref()
            .filter(|_| self.uses_dpop())
            .map(|s| s.thumbprint.as_str())
    }
}

impl DtrClient {
    /// A DPoP proof for presenting `tokens`' access token to a resource
    /// server (RFC 9449 §7): `htm`/`htu` of the request, a fresh `jti`,
    /// `iat` now and `ath`, the hash of the access token, plus `nonce` when
    /// given (else the nonce last remembered for that server). Send it in
    /// the `DPoP` header with `Authorization: DPoP <access token>`.
    /// `Ok(None)` for tokens not bound to a DPoP key.
    ///
    /// Unlike [`resource_proof`](Self::resource_proof), this works for
    /// tokens bound to an external signer's key
    /// ([`DpopConfig::signer`](crate::client::DpopConfig::signer)), whose
    /// signature is awaited.
    ///
    /// # Errors
    ///
    /// [`Error::Signer`] when the external signer fails;
    /// [`ConfigError::DpopKeyNotConfigured`] when the tokens are bound to a
    /// signer this client is not configured with.
    pub async fn sign_resource_proof(
        &self,
        tokens: &TokenSet,
        method: &Method,
        url: &Url,
        nonce: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let Some(dpop) = tokens.dpop() else {
            return Ok(None);
        };
        let ath = crate::jose::dpop::ath(tokens.access_token().secret());
        let inner = &self.inner;
        let remembered = match nonce {
            Some(_) => None,
            None => inner.dpop_nonce_for(url),
        };
        inner
            .sign_proof(
                dpop,
                method,
                url,
                nonce.or(remembered.as_deref()),
                Some(&ath),
            )
            .await
            .map(Some)
    }
}
