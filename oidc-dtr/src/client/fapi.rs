//! The FAPI 2.0 Security Profile mode of the builder: what it refuses when
//! the client is built, and what it turns on.
//!
//! Sections cited are those of the FAPI 2.0 Security Profile:
//! §5.3.3.1 (requirements for clients, general: sender-constrained access
//! tokens by mTLS or DPoP, client authentication by mTLS or
//! `private_key_jwt`, the issuer as the `aud` of client assertions, sent as
//! a string), §5.3.3.2 (requirements for clients, authorization code flow:
//! PAR, PKCE with S256, the `iss` authorization response parameter of
//! RFC 9207, only `client_id` and `request_uri` at the authorization
//! endpoint) and §5.4 (cryptography and secrets: PS256, ES256 and EdDSA
//! with Ed25519 only, never `none`).

use crate::client::DpopConfig;
use crate::error::ConfigError;
use crate::jose::Algorithm;
use crate::proto::client_auth::{AssertionAudience, ClientAuth};
use crate::proto::discovery::ProviderMetadata;
use crate::proto::id_token::ValidationOptions;

/// The security profile a client follows.
///
/// ```
/// use oidc_dtr::DtrClient;
/// use oidc_dtr::client::SecurityProfile;
///
/// let profile = SecurityProfile::Fapi2; // e.g. from the deployment's configuration
/// let builder = DtrClient::builder().security_profile(profile);
/// match profile {
///     SecurityProfile::Default => println!("the SDK's defaults"),
///     SecurityProfile::Fapi2 => println!("FAPI 2.0: PAR, PKCE, sender-constrained tokens"),
///     _ => println!("another profile"),
/// }
/// # let _ = builder;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SecurityProfile {
    /// The SDK's own defaults (secure, but not restricted to a profile).
    #[default]
    Default,
    /// The FAPI 2.0 Security Profile (see
    /// [`DtrClientBuilder::fapi2`](crate::DtrClientBuilder::fapi2)).
    Fapi2,
}

/// The only signature algorithms FAPI 2.0 allows (§5.4, cryptography and
/// secrets).
pub const FAPI2_ALGORITHMS: [Algorithm; 3] = [Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA];

const CLIENTS: &str = "§5.3.3.1";
const CODE_FLOW: &str = "§5.3.3.2";
const ALGORITHMS: &str = "§5.4";

fn refuse(
    section: &'static str,
    forbidden: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Fapi2 {
        section,
        forbidden: forbidden.into(),
        fix: fix.into(),
    }
}

fn check_alg(alg: Algorithm, what: &str) -> Result<(), ConfigError> {
    if FAPI2_ALGORITHMS.contains(&alg) {
        return Ok(());
    }
    Err(refuse(
        ALGORITHMS,
        format!("{alg} for {what}"),
        "use a PS256, ES256 or EdDSA (Ed25519) key",
    ))
}

/// The client assertion's algorithm and audience under FAPI 2.0.
fn check_assertion(alg: Algorithm, audience: AssertionAudience) -> Result<(), ConfigError> {
    check_alg(alg, "the client assertion (private_key_jwt)")?;
    if audience != AssertionAudience::Issuer {
        return Err(refuse(
            CLIENTS,
            "a client assertion `aud` other than the issuer alone",
            "use AssertionAudience::Issuer (the default of ClientAuth::private_key_jwt)",
        ));
    }
    Ok(())
}

/// What the FAPI 2.0 mode checks and adjusts at build time.
pub(crate) struct Fapi2Settings<'a> {
    pub auth: &'a ClientAuth,
    pub dpop: &'a mut DpopConfig,
    pub validation: &'a mut ValidationOptions,
    pub request_object_alg: Option<Algorithm>,
    pub metadata: &'a ProviderMetadata,
}

/// Refuses what FAPI 2.0 forbids (each with what to change) and turns on
/// what it requires: DPoP (unless refused), ID tokens signed with PS256,
/// ES256 or EdDSA only.
pub(crate) fn apply(s: Fapi2Settings<'_>) -> Result<(), ConfigError> {
    match s.auth {
        ClientAuth::None => {
            return Err(refuse(
                CLIENTS,
                "a public client (client authentication `none`)",
                "FAPI 2.0 clients are confidential: authenticate with ClientAuth::private_key_jwt",
            ));
        }
        ClientAuth::ClientSecretBasic(_)
        | ClientAuth::ClientSecretPost(_)
        | ClientAuth::ClientSecretJwt { .. } => {
            return Err(refuse(
                CLIENTS,
                format!("client secrets (`{}`)", s.auth.method_name()),
                "authenticate with ClientAuth::private_key_jwt and a PS256, ES256 or EdDSA key",
            ));
        }
        // Mutual TLS client authentication (RFC 8705 §2) is one of the two
        // methods FAPI 2.0 allows, and binds tokens to the certificate.
        ClientAuth::TlsClientAuth | ClientAuth::SelfSignedTlsClientAuth => {}
        ClientAuth::PrivateKeyJwt { key, audience } => {
            check_assertion(key.algorithm(), *audience)?;
        }
        ClientAuth::PrivateKeyJwtSigner { signer, audience } => {
            check_assertion(signer.algorithm(), *audience)?;
        }
    }
    match s.dpop.enabled {
        // Certificate-bound tokens (RFC 8705 §3) are the sender constraint.
        _ if s.auth.is_mutual_tls() => {}
        Some(false) => {
            return Err(refuse(
                CLIENTS,
                "access tokens without a sender constraint (DPoP disabled, no mTLS)",
                "leave DPoP on (DpopConfig::enabled())",
            ));
        }
        _ => s.dpop.enabled = Some(true),
    }
    check_alg(s.dpop.algorithm, "DPoP proofs")?;
    if let Some(alg) = s.request_object_alg {
        check_alg(alg, "request objects")?;
    }
    if s.validation.algorithms == ValidationOptions::default().algorithms {
        // The SDK's default (RS256, OpenID Connect's) gives way to FAPI's.
        s.validation.algorithms = FAPI2_ALGORITHMS.to_vec();
    } else {
        for &alg in &s.validation.algorithms {
            check_alg(alg, "ID tokens (validation.algorithms)")?;
        }
    }
    if s.metadata.pushed_authorization_request_endpoint.is_none() {
        return Err(refuse(
            CODE_FLOW,
            "authorization requests without PAR (the OP publishes no pushed_authorization_request_endpoint)",
            "use an OP with a PAR endpoint, or give it in the metadata",
        ));
    }
    Ok(())
}
