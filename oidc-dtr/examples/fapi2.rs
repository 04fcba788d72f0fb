//! A FAPI 2.0 client: discovery, `.fapi2()`, pushed authorization requests
//! (PAR), `private_key_jwt` with an ES256 key, DPoP-bound tokens, PKCE S256
//! (the SDK's only method) and a signed request object (JAR); with
//! `--mtls`, the mutual-TLS variant: `tls_client_auth` with a client
//! certificate, and tokens bound to that certificate instead of DPoP.
//!
//! ```sh
//! cargo run -p oidc-dtr --example fapi2
//! cargo run -p oidc-dtr --example fapi2 -- --mtls
//! ```
//!
//! By default it runs against the in-process mock OP in FAPI 2.0 mode (PAR
//! and DPoP required, ES256 ID tokens), which decides after a few seconds.
//! The mock speaks plain HTTP on loopback: with `--mtls` the certificate
//! (made here) is configured and the authentication bound to it, but no
//! TLS handshake presents it. Against a real FAPI 2.0 OP (variables:
//! `examples/common/mod.rs`), with a PS256, ES256 or EdDSA key registered
//! for the client:
//!
//! ```sh
//! DTR_ISSUER=https://op.example DTR_CLIENT_ID=rp DTR_CLIENT_KEY=rp-es256.pem \
//!   DTR_REDIRECT_URI=https://rp.example/callback \
//!   cargo run -p oidc-dtr --example fapi2
//! ```
//!
//! Mutual TLS at a real OP (`DTR_CLIENT_KEY` then signs the request
//! objects only; `DTR_CA` when the OP's mTLS endpoints use a private CA):
//!
//! ```sh
//! DTR_ISSUER=https://op.example DTR_CLIENT_ID=rp DTR_CLIENT_KEY=rp-es256.pem \
//!   DTR_CLIENT_CERT=rp.crt DTR_CLIENT_CERT_KEY=rp.key DTR_CA=op-ca.pem \
//!   DTR_REDIRECT_URI=https://rp.example/callback \
//!   cargo run -p oidc-dtr --example fapi2
//! ```

use std::time::Duration;

use oidc_dtr::client::{ClientIdentity, DpopConfig, HttpConfig};
use oidc_dtr::jose::{Algorithm, SigningKey};
use oidc_dtr::{ClientAuth, DtrClient, DtrClientBuilder, Outcome, Profile, Redemption, TokenSet};
use oidc_dtr_testkit::{AutoApprove, OpConfig, RegisteredClient};

mod common;
use common::{Op, Result};

/// The client id registered at the mock OP.
const CLIENT_ID: &str = "fapi2-rp";

#[tokio::main]
async fn main() -> Result<()> {
    let mtls = std::env::args().any(|a| a == "--mtls") || common::var("DTR_CLIENT_CERT").is_some();
    let outcome = run(mtls).await?;
    common::print_outcome(&outcome);
    Ok(())
}

/// The mock OP's FAPI 2.0 mode: every authorization request pushed, DPoP
/// proofs required (unless the client authenticates with a certificate),
/// and an approval a few seconds after the exchange.
fn fapi2_op(mtls: bool) -> OpConfig {
    let mut config = OpConfig::default();
    config.require_pushed_authorization_requests = true;
    config.require_dpop = !mtls;
    config.interval = Some(1);
    config.auto_approve = AutoApprove::AfterDelay(Duration::from_secs(3));
    config.progress = "A reviewer is checking your documents".into();
    config
}

/// The FAPI 2.0 client with `private_key_jwt` (`builder` has the issuer
/// and the client id): `key` (PS256, ES256 or EdDSA) signs the client
/// assertions and the request objects. `.fapi2()` turns on PAR and DPoP
/// and refuses at build what the profile forbids (client secrets, RS256,
/// DPoP disabled, an OP without a PAR endpoint).
pub fn private_key_jwt_client(
    builder: DtrClientBuilder,
    key: SigningKey,
    redirect_uri: &str,
) -> DtrClientBuilder {
    builder
        .fapi2()
        .client_auth(ClientAuth::private_key_jwt(key.clone()))
        .request_object_signing_key(key)
        .redirect_uri(redirect_uri)
}

/// The mutual-TLS variant: the client certificate authenticates
/// (`tls_client_auth`, RFC 8705 §2) and the OP binds the tokens to it
/// (§3), so DPoP may be off; back-channel calls go to the OP's
/// `mtls_endpoint_aliases`. `request_object_key` still signs the request
/// objects; `ca_pem` adds the OP's private CA to the trust roots.
pub fn mtls_client(
    builder: DtrClientBuilder,
    cert_pem: &str,
    key_pem: &str,
    ca_pem: Option<&str>,
    request_object_key: SigningKey,
    redirect_uri: &str,
) -> Result<DtrClientBuilder> {
    let mut http =
        HttpConfig::default().client_identity(ClientIdentity::from_pem(cert_pem, key_pem)?);
    if let Some(ca) = ca_pem {
        http = http.add_root_certificates_pem(ca)?;
    }
    Ok(builder
        .fapi2()
        .client_auth(ClientAuth::TlsClientAuth)
        .http_config(http)
        .dpop(DpopConfig::disabled())
        .request_object_signing_key(request_object_key)
        .redirect_uri(redirect_uri))
}

/// A PEM key file with an algorithm FAPI 2.0 allows (RSA: PS256).
fn load_fapi2_key(path: &str) -> Result<SigningKey> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    [Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA]
        .into_iter()
        .find_map(|alg| SigningKey::from_pem(alg, &pem).ok())
        .ok_or_else(|| format!("{path}: not an RSA, EC P-256 or Ed25519 private key").into())
}

/// A self-signed client certificate for the mock OP (a real OP's comes
/// from its CA, or is registered with it).
fn self_signed_certificate() -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let cert =
        rcgen::CertificateParams::new(vec!["fapi2-rp.example".to_owned()])?.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The whole flow under FAPI 2.0: `private_key_jwt` and DPoP, or (with
/// `mtls`) `tls_client_auth` and certificate-bound tokens.
pub async fn run(mtls: bool) -> Result<Outcome<TokenSet>> {
    // The client's signing key: made here and registered at the mock OP,
    // or DTR_CLIENT_KEY for a real OP.
    let key = SigningKey::generate(Algorithm::ES256)?.with_kid("fapi2-rp-1");
    let jwk = key.public_jwk().ok_or("no public key")?;
    let registered = RegisteredClient::private_key_jwt(CLIENT_ID, vec![jwk]);
    let op = Op::start_signing(fapi2_op(mtls), registered, Profile::Oidc, Algorithm::ES256).await?;
    let key = match (op.is_mock(), common::var("DTR_CLIENT_KEY")) {
        (true, _) => key,
        (false, Some(path)) => load_fapi2_key(&path)?,
        (false, None) => {
            return Err("FAPI 2.0 needs DTR_CLIENT_KEY (a PS256, ES256 or EdDSA key)".into());
        }
    };
    let redirect_uri = op
        .redirect_uri
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:8080/callback".to_owned());

    // 1. Discovery and the build-time checks of the FAPI 2.0 mode.
    let client: DtrClient = if mtls {
        let (cert, cert_key, ca) = match (common::var("DTR_CLIENT_CERT"), op.is_mock()) {
            (Some(cert), false) => {
                let key_path = common::var("DTR_CLIENT_CERT_KEY")
                    .ok_or("DTR_CLIENT_CERT needs DTR_CLIENT_CERT_KEY")?;
                let ca = match common::var("DTR_CA") {
                    Some(p) => Some(std::fs::read_to_string(p)?),
                    None => None,
                };
                (
                    std::fs::read_to_string(cert)?,
                    std::fs::read_to_string(key_path)?,
                    ca,
                )
            }
            _ => {
                let (cert, key) = self_signed_certificate()?;
                (cert, key, None)
            }
        };
        mtls_client(
            op.client_builder(),
            &cert,
            &cert_key,
            ca.as_deref(),
            key,
            &redirect_uri,
        )?
        .build()
        .await?
    } else {
        private_key_jwt_client(op.client_builder(), key, &redirect_uri)
            .build()
            .await?
    };
    println!(
        "1. FAPI 2.0 client for {} (pushes its requests: {})",
        client.issuer(),
        client.pushes_requests()
    );

    // 2. The request is pushed (PAR): signed as a request object, with
    //    PKCE S256 and, without mTLS, `dpop_jkt`. The browser gets only
    //    the client id and the `request_uri`.
    let (url, pending) = client.authorize().scope("profile").push().await?;
    println!("2. Pushed; the browser goes to {}", url.as_str());

    // 3. The user at the OP; the redirect back carries `iss` (required
    //    under FAPI 2.0) and a deferred code.
    let query = op.user_signs_in(&url).await?;
    let auth = match common::redeem(&client, &pending, &query).await? {
        Redemption::Deferred(auth) => *auth,
        Redemption::Tokens(tokens) => return Ok(Outcome::Tokens(*tokens)),
        _ => return Err("a response this version does not know".into()),
    };
    match auth.client_cert_thumbprint() {
        Some(x5t) => println!("3. Deferred; bound to the client certificate x5t#S256 {x5t}"),
        None => println!("3. Deferred; its polls carry DPoP proofs of the same key"),
    }

    // 4. The decision, later: sender-constrained tokens.
    let outcome = common::wait_with_progress(&client, &auth).await?;
    if let Outcome::Tokens(tokens) = &outcome {
        println!(
            "4. Tokens: {} ({})",
            tokens.token_type(),
            if tokens.is_dpop() {
                "DPoP-bound"
            } else {
                "certificate-bound"
            }
        );
    }
    client.shutdown().await;
    Ok(outcome)
}
