//! A client whose private keys never enter the process: the
//! `private_key_jwt` client assertions and the DPoP proofs are signed by a
//! remote KMS (two keys), through the `oidc_dtr::jose::Signer` trait.
//!
//! The "KMS" here is simulated: it answers after some latency and can be
//! switched off (as an outage or throttling would). While it is down, the
//! engine cannot sign its polls, so it sends nothing and retries with
//! backoff, as after a network failure; the authentication is not ended,
//! and once the KMS is back it finishes with tokens. The authentication's
//! record and the tokens keep only the DPoP key's thumbprint: a restart
//! finds the signer again by it.
//!
//! ```sh
//! cargo run --example remote_signer
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use oidc_dtr::client::DpopConfig;
use oidc_dtr::jose::{Algorithm, SignFuture, Signer, SignerError, SigningKey};
use oidc_dtr::poll::PollConfig;
use oidc_dtr::{CallbackResponse, ClientAuth, DtrClient, Outcome};
use oidc_dtr_testkit::{AutoApprove, MockOp, OpConfig, RegisteredClient};
use serde_json::Value;

/// Stands for a KMS client: `sign` would send the signing input to the
/// service and return its signature. Only the public key is known here.
struct RemoteKms {
    /// The key "in the KMS" (a real client holds only a key id).
    remote_key: SigningKey,
    latency: Duration,
    down: AtomicBool,
    failures: AtomicUsize,
}

impl Signer for RemoteKms {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }

    fn key_id(&self) -> Option<&str> {
        self.remote_key.kid()
    }

    fn public_jwk(&self) -> Option<Value> {
        self.remote_key.public_jwk()
    }

    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> SignFuture<'a> {
        Box::pin(async move {
            // The round trip to the service.
            tokio::time::sleep(self.latency).await;
            if self.down.load(Ordering::SeqCst) {
                self.failures.fetch_add(1, Ordering::SeqCst);
                // Retryable: the engine backs off and tries again.
                return Err(SignerError::retryable("KMS throttled the request"));
            }
            // A KMS returns ECDSA signatures in DER: a real client converts
            // them to the JWS form (R || S) here.
            self.remote_key
                .sign(signing_input)
                .map_err(|e| SignerError::permanent(e.to_string()))
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kms = Arc::new(RemoteKms {
        remote_key: SigningKey::generate(Algorithm::ES256)?.with_kid("kms-key-2026"),
        latency: Duration::from_millis(50),
        down: AtomicBool::new(false),
        failures: AtomicUsize::new(0),
    });
    // A second KMS key proves possession of the access token (DPoP). Its
    // `kid` is not used: a proof carries the public key itself.
    let dpop_kms = Arc::new(RemoteKms {
        remote_key: SigningKey::generate(Algorithm::ES256)?.with_kid("kms-dpop-2026"),
        latency: Duration::from_millis(50),
        down: AtomicBool::new(false),
        failures: AtomicUsize::new(0),
    });
    let set_down = |down: bool| {
        kms.down.store(down, Ordering::SeqCst);
        dpop_kms.down.store(down, Ordering::SeqCst);
    };

    // The OP knows the client by its public key (its registered JWKS).
    let mut config = OpConfig::default();
    config.interval = Some(1);
    config.auto_approve = AutoApprove::AfterDelay(Duration::from_secs(2));
    let public_jwk = kms.public_jwk().ok_or("the KMS key has no public JWK")?;
    let op = MockOp::builder()
        .config(config)
        .client(RegisteredClient::private_key_jwt(
            "kms-rp",
            vec![public_jwk],
        ))
        .start()
        .await?;

    let signer: Arc<dyn Signer> = kms.clone();
    let dpop_signer: Arc<dyn Signer> = dpop_kms.clone();
    let client = DtrClient::builder()
        .issuer(op.issuer())
        .client_id("kms-rp")
        .client_auth(ClientAuth::private_key_jwt_signer(signer))
        // DPoP proofs from the KMS too (after a key rotation, add the old
        // signer with `previous_signer` while authentications bound to it
        // are pending or their tokens in use).
        .dpop(DpopConfig::default().signer(dpop_signer))
        .redirect_uri("http://127.0.0.1:9/callback")
        // Short backoff, so that the demo recovers quickly.
        .poll_config(PollConfig::default().backoff_base(Duration::from_millis(250)))
        .build()
        .await?;

    let (url, pending) = client.authorize().build()?;
    let back = op.browse(&url).await?;
    let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, back.query())? else {
        return Err("expected a deferred_code".into());
    };

    // The KMS is down at the exchange: a typed error, and the
    // acknowledgment is still good for another try.
    set_down(true);
    match client.exchange(ack.clone()).await {
        Err(oidc_dtr::Error::Signer(e)) => println!("exchange: {e} (retrying)"),
        other => return Err(format!("expected a signer error, got {other:?}").into()),
    }
    set_down(false);
    let auth = client.exchange(ack).await?;
    println!(
        "exchanged with an assertion and a DPoP proof signed by the KMS (DPoP key {}); polling...",
        auth.dpop_jkt().unwrap_or("none")
    );

    // Down again for a few seconds while the authentication is polled.
    set_down(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "the KMS failed {} times; the authentication is still pending: {}",
        kms.failures.load(Ordering::SeqCst) + dpop_kms.failures.load(Ordering::SeqCst),
        client
            .poll_status(auth.id())
            .await
            .is_some_and(|s| !s.finished)
    );
    set_down(false);

    match client.wait(auth.id()).await? {
        Outcome::Tokens(t) => {
            println!(
                "tokens for {} (signed by a key outside the process), bound to DPoP key {}",
                t.claims().subject(),
                t.dpop_jkt().unwrap_or("none")
            );
            // The DPoP-bound access token at UserInfo: the proof is
            // signed by the KMS as well.
            let info = client.userinfo(&t).await?;
            println!("UserInfo for {}", info.subject());
        }
        other => println!("ended without tokens: {other:?}"),
    }
    Ok(())
}
