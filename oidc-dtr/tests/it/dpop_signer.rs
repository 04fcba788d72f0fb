//! DPoP proofs signed by a key outside the process (`DpopConfig::signer`):
//! records and token sets keep the key's thumbprint, never a private key;
//! a pending authentication keeps its key across a restart and a signer
//! rotation; a failing signer sends nothing and ends nothing; a key no
//! longer configured holds the authentication until its signer is back;
//! records written with an embedded key still load and keep it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use oidc_dtr::client::DpopConfig;
use oidc_dtr::error::ConfigError;
use oidc_dtr::jose::{
    Algorithm, DpopKey, SignFuture, Signer, SignerError, SigningKey, jwk_thumbprint,
};
use oidc_dtr::{ClientAuth, DeferredAuthentication, DtrClient, Error, Outcome, TokenSet};
use oidc_dtr_testkit::{AutoApprove, Endpoint, LoggedRequest, MockOp, OpConfig};
use serde_json::Value;

use crate::support::flow::*;

const S: Duration = Duration::from_secs(1);

const OK: u8 = 0;
const DOWN: u8 = 1;
const BROKEN: u8 = 2;

/// A signer standing for a KMS-held DPoP key: it can fail its next `n`
/// calls, be down (retryable failures) or broken (permanent ones).
struct Kms {
    key: SigningKey,
    mode: AtomicU8,
    fail_next: AtomicUsize,
    calls: AtomicUsize,
    failures: AtomicUsize,
}

impl Kms {
    fn new() -> Arc<Self> {
        Arc::new(Kms {
            key: SigningKey::generate(Algorithm::ES256)
                .unwrap()
                .with_kid("kms-dpop"),
            mode: AtomicU8::new(OK),
            fail_next: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
        })
    }

    fn jkt(&self) -> String {
        jwk_thumbprint(&self.key.public_jwk().unwrap()).unwrap()
    }

    fn signer(self: &Arc<Self>) -> Arc<dyn Signer> {
        self.clone()
    }
}

impl Signer for Kms {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }

    fn key_id(&self) -> Option<&str> {
        Some("kms-dpop")
    }

    fn public_jwk(&self) -> Option<Value> {
        // With `kid` and `use`: only the key's own members may reach a proof.
        self.key.public_jwk()
    }

    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> SignFuture<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            let take = self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let mode = self.mode.load(Ordering::SeqCst);
            if take || mode == DOWN {
                self.failures.fetch_add(1, Ordering::SeqCst);
                return Err(SignerError::retryable("KMS unavailable (simulated)"));
            }
            if mode == BROKEN {
                self.failures.fetch_add(1, Ordering::SeqCst);
                return Err(SignerError::permanent("the KMS key is disabled"));
            }
            self.key
                .sign(signing_input)
                .map_err(|e| SignerError::permanent(e.to_string()))
        })
    }
}

fn strict_dpop() -> OpConfig {
    let mut cfg = OpConfig::default();
    cfg.require_dpop = true;
    cfg.require_dpop_nonce = true;
    cfg.auto_approve = AutoApprove::AfterPolls(2);
    cfg
}

async fn public_with(cfg: OpConfig, dpop: DpopConfig) -> Setup {
    setup_with(cfg, |b| {
        b.client_id(MockOp::PUBLIC_CLIENT_ID)
            .client_auth(ClientAuth::None)
            .dpop(dpop)
    })
    .await
}

/// Another client of the same OP and clock (a restart).
async fn restarted(s: &Setup, dpop: DpopConfig) -> Setup {
    let client = DtrClient::builder()
        .issuer(s.op.issuer())
        .client_id(MockOp::PUBLIC_CLIENT_ID)
        .client_auth(ClientAuth::None)
        .redirect_uri(REDIRECT)
        .dpop(dpop)
        .clock(s.clock.clone())
        .build()
        .await
        .unwrap();
    Setup {
        op: s.op.clone(),
        client,
        clock: s.clock.clone(),
    }
}

/// Moves a pending authentication from `from` to `to`, as a restart does.
async fn hand_over(from: &Setup, to: &Setup, auth: &DeferredAuthentication) -> String {
    let (saved, state) = from.client.snapshot(auth.id()).await.unwrap();
    let json = serde_json::to_string(&saved).unwrap();
    assert!(
        from.client.cancel_locally(auth.id()).await,
        "it was pending"
    );
    let back: DeferredAuthentication = serde_json::from_str(&json).unwrap();
    to.client.resume(back, Some(state)).await.unwrap();
    json
}

fn part(jwt: &str, i: usize) -> Value {
    use base64::Engine as _;
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(i).unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// The thumbprint of the key a proof names, and its `jti`.
fn proof_key(r: &LoggedRequest) -> (String, String) {
    let proof = r.header("dpop").expect("a proof");
    let h = part(proof, 0);
    assert_eq!(h["typ"], "dpop+jwt");
    assert!(h.get("kid").is_none(), "a proof has no kid");
    assert!(h["jwk"].get("kid").is_none() && h["jwk"].get("d").is_none());
    (
        jwk_thumbprint(&h["jwk"]).unwrap(),
        part(proof, 1)["jti"].as_str().unwrap().to_owned(),
    )
}

fn polls_of(op: &MockOp, auth: &DeferredAuthentication) -> Vec<LoggedRequest> {
    op.requests_to(Endpoint::Token)
        .into_iter()
        .filter(|r| r.param("deferred_auth_id") == Some(auth.id().secret()))
        .collect()
}

#[tokio::test]
async fn an_external_signer_signs_every_proof_across_a_restart_and_a_rotation() {
    let kms1 = Kms::new();
    let s = public_with(strict_dpop(), DpopConfig::default().signer(kms1.signer())).await;
    let auth = start(&s.op, &s.client).await;
    assert!(auth.dpop_key().is_none(), "no private key in the record");
    assert_eq!(auth.dpop_jkt(), Some(kms1.jkt().as_str()));
    assert_eq!(s.op.dpop_binding(auth.id()), Some(kms1.jkt()));
    // The exchange was refused for want of a nonce, and the retry was
    // signed afresh by the signer.
    let exchange = s.op.requests_to(Endpoint::Token);
    assert_eq!(
        exchange.iter().map(|r| r.status).collect::<Vec<_>>(),
        [400, 200]
    );
    let (k0, j0) = proof_key(&exchange[0]);
    let (k1, j1) = proof_key(&exchange[1]);
    assert_eq!((k0.as_str(), k1.as_str()), (&*kms1.jkt(), &*kms1.jkt()));
    assert_ne!(j0, j1);
    assert_eq!(kms1.calls.load(Ordering::SeqCst), 2);

    // Restart, with the signer rotated: kms2 is current, kms1 previous.
    let kms2 = Kms::new();
    let s2 = restarted(
        &s,
        DpopConfig::default()
            .signer(kms2.signer())
            .previous_signer(kms1.signer()),
    )
    .await;
    let json = hand_over(&s, &s2, &auth).await;
    let stored: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(stored["dpop_signer_jkt"], kms1.jkt());
    assert!(stored["dpop_key"].is_null());
    assert!(!json.contains("pkcs8"));
    let Outcome::Tokens(tokens) = run_to_outcome(&s2, auth.id(), S, Duration::from_secs(120)).await
    else {
        panic!("no tokens")
    };
    let polls = polls_of(&s.op, &auth);
    assert!(!polls.is_empty());
    for p in &polls {
        assert_eq!(proof_key(p).0, kms1.jkt(), "polled with its own key");
    }
    assert_eq!(kms2.calls.load(Ordering::SeqCst), 0);

    // The tokens name the key, and UserInfo (with a fresh server nonce: the
    // retry is signed again) works through the signer.
    assert!(tokens.is_dpop());
    assert!(tokens.dpop_key().is_none());
    assert_eq!(tokens.dpop_jkt(), Some(kms1.jkt().as_str()));
    let kept = serde_json::to_string(&tokens).unwrap();
    assert!(!kept.contains("pkcs8"));
    let tokens: TokenSet = serde_json::from_str(&kept).unwrap();
    s.op.rotate_dpop_nonce();
    let before = kms1.calls.load(Ordering::SeqCst);
    s2.client.userinfo(&tokens).await.unwrap();
    let userinfo = s.op.requests_to(Endpoint::UserInfo);
    assert_eq!(
        userinfo.iter().map(|r| r.status).collect::<Vec<_>>(),
        [401, 200]
    );
    assert_eq!(kms1.calls.load(Ordering::SeqCst), before + 2);
    for r in &userinfo {
        assert_eq!(proof_key(r).0, kms1.jkt());
    }

    // A resource-server proof: awaited from the signer, with `ath`.
    let url = "https://api.example/me".parse().unwrap();
    let proof = s2
        .client
        .sign_resource_proof(&tokens, &http::Method::GET, &url, Some("rs-nonce"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        part(&proof, 1)["ath"],
        crate::support::ath(tokens.access_token().secret())
    );
    assert_eq!(part(&proof, 1)["nonce"], "rs-nonce");
    assert_eq!(jwk_thumbprint(&part(&proof, 0)["jwk"]), Some(kms1.jkt()));
    // The synchronous form cannot await a signer: it says so.
    assert!(matches!(
        s2.client
            .resource_proof(&tokens, &http::Method::GET, &url, None),
        Some(Err(_))
    ));

    // New authentications use the current signer.
    let next = start(&s2.op, &s2.client).await;
    assert_eq!(next.dpop_jkt(), Some(kms2.jkt().as_str()));
    assert_eq!(s.op.dpop_binding(next.id()), Some(kms2.jkt()));
}

#[tokio::test]
async fn a_signer_failing_a_few_times_while_polling_loses_nothing() {
    let kms = Kms::new();
    let s = public_with(strict_dpop(), DpopConfig::default().signer(kms.signer())).await;
    let auth = start(&s.op, &s.client).await;
    kms.fail_next.store(3, Ordering::SeqCst);
    pass(&s, Duration::from_secs(6), S).await;
    let st = s.client.poll_status(auth.id()).await.unwrap();
    assert!(!st.finished && st.next_poll.is_some(), "still scheduled");
    assert!(kms.failures.load(Ordering::SeqCst) >= 1);
    assert!(polls_of(&s.op, &auth).is_empty(), "nothing reached the OP");
    assert!(matches!(
        run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await,
        Outcome::Tokens(_)
    ));
    assert_eq!(kms.failures.load(Ordering::SeqCst), 3);
    // AfterPolls(2): one pending answer, one with tokens; the failed
    // attempts were never sent.
    let polls = polls_of(&s.op, &auth);
    assert_eq!(
        polls.iter().map(|r| r.status).collect::<Vec<_>>(),
        [400, 200]
    );
    for p in &polls {
        assert_eq!(proof_key(p).0, kms.jkt());
    }
}

#[tokio::test]
async fn a_signer_down_for_good_holds_to_the_deadline_and_a_disabled_key_ends_it() {
    // Down (retryable) for good: nothing is sent, nothing ends before the
    // deadline, which ends it with the signer's error as the cause.
    let kms = Kms::new();
    let mut cfg = strict_dpop();
    cfg.expires_in = Some(120);
    let s = public_with(cfg.clone(), DpopConfig::default().signer(kms.signer())).await;
    let auth = start(&s.op, &s.client).await;
    kms.mode.store(DOWN, Ordering::SeqCst);
    pass(&s, Duration::from_secs(60), S).await;
    assert!(!s.client.poll_status(auth.id()).await.unwrap().finished);
    match run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await {
        outcome @ Outcome::DeadlineReached { .. } => {
            let cause = outcome.cause().expect("a typed cause");
            let e = cause
                .downcast_ref::<SignerError>()
                .expect("the signer's error");
            assert!(e.retryable);
        }
        other => panic!("{other:?}"),
    }
    assert!(polls_of(&s.op, &auth).is_empty(), "nothing reached the OP");
    assert!(kms.failures.load(Ordering::SeqCst) >= 2, "it kept trying");

    // A permanent failure (the key is disabled): the authentication ends
    // at once with a typed cause; nothing reached the OP.
    let kms = Kms::new();
    let s = public_with(cfg, DpopConfig::default().signer(kms.signer())).await;
    let auth = start(&s.op, &s.client).await;
    kms.mode.store(BROKEN, Ordering::SeqCst);
    match run_to_outcome(&s, auth.id(), S, Duration::from_secs(60)).await {
        Outcome::Rejected(failure) => match failure.cause().and_then(|c| c.downcast_ref::<Error>())
        {
            Some(Error::Signer(e)) => assert!(!e.retryable),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(polls_of(&s.op, &auth).is_empty());
}

#[tokio::test]
async fn a_key_no_longer_configured_holds_the_authentication_until_its_signer_is_back() {
    let kms1 = Kms::new();
    let mut cfg = strict_dpop();
    cfg.expires_in = Some(300);
    let s = public_with(cfg, DpopConfig::default().signer(kms1.signer())).await;
    let auth = start(&s.op, &s.client).await;
    let other = start(&s.op, &s.client).await;

    // Restarted without kms1 (removed too early).
    let kms2 = Kms::new();
    let s2 = restarted(&s, DpopConfig::default().signer(kms2.signer())).await;
    hand_over(&s, &s2, &auth).await;
    hand_over(&s, &s2, &other).await;
    pass(&s2, Duration::from_secs(60), S).await;
    for a in [&auth, &other] {
        let st = s2.client.poll_status(a.id()).await.unwrap();
        assert!(!st.finished && st.next_poll.is_some(), "held, not ended");
        assert!(polls_of(&s.op, a).is_empty(), "nothing was sent");
    }
    assert_eq!(kms2.calls.load(Ordering::SeqCst), 0, "never another key");

    // Its signer is configured again: it finishes.
    let s3 = restarted(
        &s,
        DpopConfig::default()
            .signer(kms2.signer())
            .previous_signer(kms1.signer()),
    )
    .await;
    hand_over(&s2, &s3, &auth).await;
    assert!(matches!(
        run_to_outcome(&s3, auth.id(), S, Duration::from_secs(600)).await,
        Outcome::Tokens(_)
    ));
    for p in polls_of(&s.op, &auth) {
        assert_eq!(proof_key(&p).0, kms1.jkt());
    }

    // The other one, never given its signer back, ends at its deadline
    // with the typed cause; nothing was ever sent for it.
    let step = Duration::from_secs(10);
    match run_to_outcome(&s2, other.id(), step, Duration::from_secs(900)).await {
        outcome @ Outcome::DeadlineReached { .. } => {
            match outcome
                .cause()
                .and_then(|c| c.downcast_ref::<ConfigError>())
            {
                Some(ConfigError::DpopKeyNotConfigured { thumbprint }) => {
                    assert_eq!(thumbprint, &kms1.jkt());
                }
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    assert!(polls_of(&s.op, &other).is_empty());
}

#[tokio::test]
async fn tokens_of_a_key_no_longer_configured_get_a_typed_error() {
    let kms1 = Kms::new();
    let mut cfg = strict_dpop();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    let s = public_with(cfg, DpopConfig::default().signer(kms1.signer())).await;
    let auth = start(&s.op, &s.client).await;
    let Outcome::Tokens(tokens) = run_to_outcome(&s, auth.id(), S, Duration::from_secs(120)).await
    else {
        panic!()
    };
    let other = restarted(&s, DpopConfig::default().signer(Kms::new().signer())).await;
    let before = s.op.requests_to(Endpoint::UserInfo).len();
    match other.client.userinfo(&tokens).await.unwrap_err() {
        Error::Config(ConfigError::DpopKeyNotConfigured { thumbprint }) => {
            assert_eq!(thumbprint, kms1.jkt());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.op.requests_to(Endpoint::UserInfo).len(), before);
    // A signer that fails: `Error::Signer`, retryable, nothing sent.
    kms1.fail_next.store(1, Ordering::SeqCst);
    match s.client.userinfo(&tokens).await.unwrap_err() {
        Error::Signer(e) => assert!(e.retryable),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.op.requests_to(Endpoint::UserInfo).len(), before);
    s.client.userinfo(&tokens).await.unwrap();
}

#[tokio::test]
async fn a_pushed_request_is_bound_to_the_signers_key() {
    let kms = Kms::new();
    let mut cfg = strict_dpop();
    cfg.require_pushed_authorization_requests = true;
    let s = setup_with(cfg, |b| {
        b.client_id(MockOp::PUBLIC_CLIENT_ID)
            .client_auth(ClientAuth::None)
            .dpop(DpopConfig::default().signer(kms.signer()))
            .pushed_authorization_requests(true)
    })
    .await;
    let (url, pending) = s.client.authorize().build_or_push().await.unwrap();
    assert_eq!(pending.dpop_jkt(), Some(kms.jkt().as_str()));
    let kept = serde_json::to_string(&pending).unwrap();
    assert!(!kept.contains("pkcs8"));
    let pending: oidc_dtr::PendingAuthorization = serde_json::from_str(&kept).unwrap();
    let push = s.op.requests_to(Endpoint::PushedAuthorization);
    assert_eq!(push.last().unwrap().param("dpop_jkt"), Some(&*kms.jkt()));
    assert_eq!(proof_key(push.last().unwrap()).0, kms.jkt());
    let cb = s.op.browse(&url).await.unwrap();
    let oidc_dtr::CallbackResponse::Acknowledgment(ack) =
        s.client.callback(&pending, cb.query()).unwrap()
    else {
        panic!()
    };
    let auth = s.client.exchange(ack).await.unwrap();
    assert_eq!(auth.dpop_jkt(), Some(kms.jkt().as_str()));
    assert!(matches!(
        run_to_outcome(&s, auth.id(), S, Duration::from_secs(120)).await,
        Outcome::Tokens(_)
    ));
}

/// A signer without a public key, or whose algorithm does not fit its key.
struct Odd {
    alg: Algorithm,
    jwk: Option<Value>,
}

impl Signer for Odd {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
    fn key_id(&self) -> Option<&str> {
        None
    }
    fn public_jwk(&self) -> Option<Value> {
        self.jwk.clone()
    }
    fn sign<'a>(&'a self, _: &'a [u8]) -> SignFuture<'a> {
        Box::pin(std::future::ready(Err(SignerError::permanent("unused"))))
    }
}

#[tokio::test]
async fn a_dpop_signer_without_a_usable_public_key_is_refused_at_build() {
    let ec = DpopKey::generate(Algorithm::ES256)
        .unwrap()
        .public_jwk()
        .clone();
    for (current, odd) in [
        (
            true,
            Odd {
                alg: Algorithm::ES256,
                jwk: None,
            },
        ),
        (
            false,
            Odd {
                alg: Algorithm::ES256,
                jwk: None,
            },
        ),
        (
            true,
            Odd {
                alg: Algorithm::RS256,
                jwk: Some(ec.clone()),
            },
        ),
        (
            true,
            Odd {
                alg: Algorithm::HS256,
                jwk: Some(ec.clone()),
            },
        ),
    ] {
        let odd: Arc<dyn Signer> = Arc::new(odd);
        let dpop = if current {
            DpopConfig::default().signer(odd)
        } else {
            DpopConfig::default().previous_signer(odd)
        };
        let op = MockOp::start().await.unwrap();
        let err = DtrClient::builder()
            .issuer(op.issuer())
            .client_id(MockOp::PUBLIC_CLIENT_ID)
            .client_auth(ClientAuth::None)
            .redirect_uri(REDIRECT)
            .dpop(dpop)
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Config(ConfigError::Invalid {
                    field: "dpop_signer",
                    ..
                })
            ),
            "{err:?}"
        );
    }
}

/// The `auth` member of a record written before external DPoP signers
/// existed: the key is embedded (PKCS#8), and there is no `dpop_signer_jkt`.
const AUTH_WITH_EMBEDDED_KEY: &str = r#"{
    "id": "df-written-before",
    "issuer": "https://op.example",
    "client_id": "public-client",
    "issued_at": 1900000000000,
    "answered_at": 1900000000000,
    "expires_at": 1900003600000,
    "interval_secs": 5,
    "nonce": "n-0123456789",
    "pkce_verifier": "v-0123456789012345678901234567890123456789012",
    "max_age": null,
    "requested_at": 1899999999000,
    "notification_token_hash": null,
    "interim_id_token": null,
    "interim_claims": null,
    "dpop_key": {
        "alg": "ES256",
        "pkcs8": "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgFaMphfe18z8_XV52tK5FeMeSUoadLx0LRHAPkoV9lqKhRANCAARU2mKQhRAaQPa3Z1OVleGHPnXuvo43JK5Mw6OFBURRg3YuT6k_K2q8iJaAyU0m8_13xwxLpvHfZAhSbNgGe16t"
    },
    "profile": "oidc"
}"#;

#[tokio::test]
async fn records_with_an_embedded_dpop_key_still_load_and_keep_their_key() {
    // The stored sample loads; the key is its own.
    let old: DeferredAuthentication = serde_json::from_str(AUTH_WITH_EMBEDDED_KEY).unwrap();
    let key = old.dpop_key().expect("the embedded key");
    assert_eq!(old.dpop_jkt(), Some(key.thumbprint()));
    assert_eq!(
        jwk_thumbprint(key.public_jwk()).as_deref(),
        Some(key.thumbprint())
    );
    let again = serde_json::to_value(&old).unwrap();
    assert!(again.get("dpop_signer_jkt").is_none(), "{again}");
    assert_eq!(
        serde_json::from_value::<DeferredAuthentication>(again)
            .unwrap()
            .dpop_jkt(),
        old.dpop_jkt()
    );

    // A pending authentication with an embedded key, resumed by a client
    // that now signs with an external signer: it keeps its own key.
    let s = public_with(strict_dpop(), DpopConfig::enabled()).await;
    let auth = start(&s.op, &s.client).await;
    let embedded = auth.dpop_key().unwrap().thumbprint().to_owned();
    let kms = Kms::new();
    let s2 = restarted(&s, DpopConfig::default().signer(kms.signer())).await;
    let json = hand_over(&s, &s2, &auth).await;
    assert!(json.contains("pkcs8") && !json.contains("dpop_signer_jkt"));
    let Outcome::Tokens(tokens) = run_to_outcome(&s2, auth.id(), S, Duration::from_secs(120)).await
    else {
        panic!()
    };
    for p in polls_of(&s.op, &auth) {
        assert_eq!(proof_key(&p).0, embedded);
    }
    assert_eq!(kms.calls.load(Ordering::SeqCst), 0);
    assert_eq!(tokens.dpop_key().unwrap().thumbprint(), embedded);
    s2.client.userinfo(&tokens).await.unwrap();

    // A token set stored before: an embedded key, no thumbprint members.
    let mut stored: Value = serde_json::to_value(&tokens).unwrap();
    let obj = stored.as_object_mut().unwrap();
    assert!(obj.get("dpop_signer_jkt").is_none());
    obj.remove("client_cert_thumbprint");
    let old_tokens: TokenSet = serde_json::from_value(stored).unwrap();
    assert_eq!(old_tokens.dpop_jkt(), Some(embedded.as_str()));
    assert_eq!(old_tokens.client_cert_thumbprint(), None);
    s2.client.userinfo(&old_tokens).await.unwrap();
}
