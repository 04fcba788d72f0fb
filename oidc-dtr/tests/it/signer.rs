//! Keys outside the process: a [`Signer`] that stands for a remote KMS
//! signs the `private_key_jwt` client assertions and the request objects.
//! A signer that fails while an authentication is polled loses nothing
//! (the polls are retried with backoff, nothing reaches the OP meanwhile,
//! and the authentication ends once with tokens); a signer that fails at
//! the exchange gives `Error::Signer` and the exchange can be retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use oidc_dtr::jose::{Algorithm, SignFuture, Signer, SignerError, SigningKey};
use oidc_dtr::{CallbackResponse, ClientAuth, Error, Outcome, error::ConfigError};
use oidc_dtr_testkit::{AutoApprove, Endpoint, MockOp, OpConfig, RegisteredClient};
use serde_json::Value;

use crate::support::flow::*;

const S: Duration = Duration::from_secs(1);

/// A signer standing for a KMS: the key is "remote", and the service can
/// be made to fail (a retryable failure, as a timeout or throttling is).
struct FlakyKms {
    key: SigningKey,
    down: AtomicBool,
    calls: AtomicUsize,
    failures: AtomicUsize,
}

impl FlakyKms {
    fn new() -> Arc<Self> {
        Arc::new(FlakyKms {
            key: SigningKey::generate(Algorithm::ES256)
                .unwrap()
                .with_kid("kms-key-1"),
            down: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
        })
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

impl Signer for FlakyKms {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }

    fn key_id(&self) -> Option<&str> {
        Some("kms-key-1")
    }

    fn public_jwk(&self) -> Option<Value> {
        self.key.public_jwk()
    }

    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> SignFuture<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            // A real KMS call would be awaited here.
            tokio::task::yield_now().await;
            if self.down.load(Ordering::SeqCst) {
                self.failures.fetch_add(1, Ordering::SeqCst);
                return Err(SignerError::retryable("KMS unavailable (simulated)"));
            }
            self.key
                .sign(signing_input)
                .map_err(|e| SignerError::permanent(e.to_string()))
        })
    }
}

async fn kms_client(cfg: OpConfig, kms: &Arc<FlakyKms>) -> Setup {
    let signer: Arc<dyn Signer> = kms.clone();
    let s = setup_with(cfg, |b| {
        b.client_id("kms-client")
            .client_auth(ClientAuth::private_key_jwt_signer(signer))
    })
    .await;
    s.op.register_client(RegisteredClient::private_key_jwt(
        "kms-client",
        vec![kms.key.public_jwk().unwrap()],
    ));
    s
}

fn header_of(jwt: &str) -> Value {
    use base64::Engine as _;
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_signer_failing_while_polling_loses_nothing() {
    let kms = FlakyKms::new();
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(2);
    let s = kms_client(cfg, &kms).await;
    let auth = start(&s.op, &s.client).await;
    let exchange = s.op.requests_to(Endpoint::Token);
    assert_eq!(exchange.len(), 1);
    let assertion = exchange[0].param("client_assertion").unwrap();
    assert_eq!(header_of(assertion)["kid"], "kms-key-1");
    assert_eq!(header_of(assertion)["alg"], "ES256");

    // The KMS goes down: the polls cannot be signed, nothing is sent, and
    // the authentication is not ended.
    kms.set_down(true);
    pass(&s, Duration::from_secs(90), S).await;
    assert!(
        kms.failures.load(Ordering::SeqCst) >= 2,
        "the engine kept trying: {} failures",
        kms.failures.load(Ordering::SeqCst)
    );
    assert!(poll_requests(&s.op).is_empty(), "nothing reached the OP");
    let st = s.client.poll_status(auth.id()).await.unwrap();
    assert!(!st.finished, "a retryable signer failure ends nothing");

    // It comes back: the authentication finishes with tokens, once.
    kms.set_down(false);
    match run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await {
        Outcome::Tokens(_) => {}
        other => panic!("{other:?}"),
    }
    let polls = poll_requests(&s.op);
    assert_eq!(
        polls.len(),
        2,
        "AfterPolls(2): one pending, one with tokens"
    );
    assert_eq!(
        polls.iter().filter(|r| r.status == 200).count(),
        1,
        "exactly one answer with tokens"
    );
    assert!(polls.iter().all(|r| r.status != 401));
}

#[tokio::test]
async fn a_signer_failing_at_the_exchange_is_a_signer_error_and_a_retry_works() {
    let kms = FlakyKms::new();
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    let s = kms_client(cfg, &kms).await;
    let (url, pending) = s.client.authorize().build().unwrap();
    let cb = s.op.browse(&url).await.unwrap();
    let ack = match s.client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Acknowledgment(a) => a,
        other => panic!("{other:?}"),
    };
    kms.set_down(true);
    let err = s.client.exchange(ack.clone()).await.unwrap_err();
    match &err {
        Error::Signer(e) => {
            assert!(e.retryable);
            assert!(e.message.contains("KMS unavailable"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_retryable());
    assert!(
        s.op.requests_to(Endpoint::Token).is_empty(),
        "nothing was sent: the deferred code is unspent"
    );
    kms.set_down(false);
    let auth = s.client.exchange(ack).await.unwrap();
    assert!(matches!(
        run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await,
        Outcome::Tokens(_)
    ));
}

#[tokio::test]
async fn an_external_signer_signs_request_objects_by_value_and_pushed() {
    for par in [false, true] {
        let kms = FlakyKms::new();
        let signer: Arc<dyn Signer> = kms.clone();
        let s = setup_with(OpConfig::default(), |b| {
            b.request_object_signer(signer)
                .pushed_authorization_requests(par)
        })
        .await;
        let mut client = RegisteredClient::confidential(MockOp::CLIENT_ID, MockOp::CLIENT_SECRET);
        client.jwks = vec![kms.key.public_jwk().unwrap()];
        s.op.register_client(client);
        if !par {
            // The synchronous `build` cannot await the signer: it says so.
            match s.client.authorize().build() {
                Err(Error::Config(ConfigError::Invalid { field, reason })) => {
                    assert_eq!(field, "request_object");
                    assert!(reason.contains("build_or_push"));
                }
                other => panic!("{other:?}"),
            }
        }
        // A failing signer: nothing is sent.
        kms.set_down(true);
        assert!(matches!(
            s.client.authorize().build_or_push().await,
            Err(Error::Signer(_))
        ));
        assert!(s.op.requests_to(Endpoint::PushedAuthorization).is_empty());
        kms.set_down(false);
        let (url, pending) = s.client.authorize().build_or_push().await.unwrap();
        if !par {
            let jwt = url
                .query_pairs()
                .find(|(k, _)| k == "request")
                .map(|(_, v)| v.into_owned())
                .unwrap();
            assert_eq!(header_of(&jwt)["typ"], "oauth-authz-req+jwt");
            assert_eq!(header_of(&jwt)["kid"], "kms-key-1");
        }
        // The OP verified the signature against the registered key.
        let cb = s.op.browse(&url).await.unwrap();
        match s.client.callback(&pending, cb.query()).unwrap() {
            CallbackResponse::Acknowledgment(_) => {}
            other => panic!("par={par}: {other:?}"),
        }
    }
}
