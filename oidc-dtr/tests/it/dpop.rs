//! Sender-constrained and stronger clients against the testkit OP: DPoP
//! (with server nonces, restarts and downgrades), `private_key_jwt`,
//! `client_secret_jwt`, and cancellation.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::flow::*;
use oidc_dtr::client::DpopConfig;
use oidc_dtr::client::{CancelEncoding, CancellationConfig};
use oidc_dtr::error::{ConfigError, ErrorCode};
use oidc_dtr::jose::{Algorithm, SigningKey};
use oidc_dtr::{ClientAuth, DtrClient, Error, error::ValidationError};
use oidc_dtr::{Outcome, poll::PollFailure};
use oidc_dtr_testkit::{
    AuthState, AutoApprove, Endpoint, LoggedRequest, MockOp, OpConfig, RegisteredClient,
};
use serde_json::Value;

const S: Duration = Duration::from_secs(1);

fn strict_dpop() -> OpConfig {
    let mut cfg = OpConfig::default();
    cfg.require_dpop = true;
    cfg.require_dpop_nonce = true;
    cfg.auto_approve = AutoApprove::AfterPolls(2);
    cfg
}

async fn public(cfg: OpConfig) -> Setup {
    setup_with(cfg, |b| {
        b.client_id(MockOp::PUBLIC_CLIENT_ID)
            .client_auth(ClientAuth::None)
    })
    .await
}

fn claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let p = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

fn token_requests(op: &MockOp) -> Vec<LoggedRequest> {
    op.requests_to(Endpoint::Token)
}

#[tokio::test]
async fn a_public_client_completes_with_dpop_and_a_server_nonce() {
    let s = public(strict_dpop()).await;
    let auth = start(&s.op, &s.client).await;
    let key = auth.dpop_key().expect("public clients use DPoP by default");
    assert_eq!(
        s.op.dpop_binding(auth.id()).as_deref(),
        Some(key.thumbprint())
    );
    let Outcome::Tokens(tokens) = run_to_outcome(&s, auth.id(), S, Duration::from_secs(120)).await
    else {
        panic!()
    };
    assert!(tokens.is_dpop());
    assert_eq!(tokens.dpop_key().unwrap().thumbprint(), key.thumbprint());

    let reqs = token_requests(&s.op);
    // The exchange was refused for want of a nonce and retried at once.
    assert_eq!(reqs[0].status, 400);
    assert_eq!(reqs[1].status, 200);
    assert_eq!(reqs[0].at, reqs[1].at);
    // Every request carried a fresh proof: no jti twice, htm/htu right.
    let mut jtis = HashSet::new();
    for r in &reqs {
        let proof = r.header("dpop").expect("a proof on every request");
        let c = claims(proof);
        assert!(
            jtis.insert(c["jti"].as_str().unwrap().to_owned()),
            "replayed jti"
        );
        assert_eq!(c["htm"], "POST");
        assert_eq!(c["htu"], format!("{}/token", s.op.issuer()));
    }
    assert_eq!(jtis.len(), reqs.len());
    // The resource-server proof carries ath.
    let url = "https://api.example/me".parse().unwrap();
    let proof = s
        .client
        .resource_proof(&tokens, &http::Method::GET, &url, None)
        .unwrap()
        .unwrap();
    assert_eq!(
        claims(&proof)["ath"],
        crate::support::ath(tokens.access_token().secret())
    );
}

#[tokio::test]
async fn the_nonce_retry_does_not_consume_an_interval() {
    let s = public(strict_dpop()).await;
    let auth = start(&s.op, &s.client).await;
    let nonce_before = s.op.rotate_dpop_nonce();
    assert!(!nonce_before.is_empty());
    let outcome = run_to_outcome(&s, auth.id(), S, Duration::from_secs(120)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)));
    let polls: Vec<LoggedRequest> = token_requests(&s.op)
        .into_iter()
        .filter(|r| r.param("deferred_auth_id").is_some())
        .collect();
    // poll 1: use_dpop_nonce, retried at once; poll 2 one interval later.
    assert_eq!(
        polls.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![400, 400, 200]
    );
    assert_eq!(polls[0].at, polls[1].at, "the retry is immediate");
    assert_eq!(
        polls[2].at.saturating_duration_since(polls[1].at),
        Duration::from_secs(5)
    );
    assert_eq!(
        s.client.poll_status(auth.id()).await.unwrap().polls,
        2,
        "the retry is not a poll"
    );
    assert_eq!(s.op.authentication(auth.id()).unwrap().slow_downs, 0);
}

#[tokio::test]
async fn a_restart_keeps_the_dpop_key_and_the_op_accepts_the_next_poll() {
    let s = public(strict_dpop()).await;
    let auth = start(&s.op, &s.client).await;
    let (saved, state) = s.client.snapshot(auth.id()).await.unwrap();
    let json = serde_json::to_string(&saved).unwrap();
    assert!(!format!("{saved:?}").contains("pkcs8"));
    assert!(s.client.cancel_locally(auth.id()).await, "it was pending");

    let client = DtrClient::builder()
        .issuer(s.op.issuer())
        .client_id(MockOp::PUBLIC_CLIENT_ID)
        .redirect_uri(REDIRECT)
        .clock(s.clock.clone())
        .build()
        .await
        .unwrap();
    let back: oidc_dtr::DeferredAuthentication = serde_json::from_str(&json).unwrap();
    assert_eq!(
        back.dpop_key().unwrap().thumbprint(),
        auth.dpop_key().unwrap().thumbprint()
    );
    client.resume(back, Some(state)).await.unwrap();
    let s2 = Setup {
        op: s.op.clone(),
        client,
        clock: s.clock.clone(),
    };
    let Outcome::Tokens(tokens) = run_to_outcome(&s2, auth.id(), S, Duration::from_secs(120)).await
    else {
        panic!()
    };
    assert_eq!(
        tokens.dpop_key().unwrap().thumbprint(),
        auth.dpop_key().unwrap().thumbprint()
    );
}

#[tokio::test]
async fn a_proof_from_the_wrong_key_gets_one_retry_then_ends() {
    let s = public(strict_dpop()).await;
    let auth = start(&s.op, &s.client).await;
    let (saved, _) = s.client.snapshot(auth.id()).await.unwrap();
    assert!(s.client.cancel_locally(auth.id()).await, "it was pending");
    // Swap the key, as a broken persistence layer might.
    let mut json: Value = serde_json::to_value(&saved).unwrap();
    let other = oidc_dtr::jose::DpopKey::generate(Algorithm::ES256).unwrap();
    json["dpop_key"] = serde_json::to_value(&other).unwrap();
    let tampered: oidc_dtr::DeferredAuthentication = serde_json::from_value(json).unwrap();
    let client = DtrClient::builder()
        .issuer(s.op.issuer())
        .client_id(MockOp::PUBLIC_CLIENT_ID)
        .redirect_uri(REDIRECT)
        .clock(s.clock.clone())
        .build()
        .await
        .unwrap();
    client.resume(tampered, None).await.unwrap();
    let s2 = Setup {
        op: s.op.clone(),
        client,
        clock: s.clock.clone(),
    };
    match run_to_outcome(&s2, auth.id(), S, Duration::from_secs(120)).await {
        Outcome::Rejected(PollFailure::OAuth(e)) => assert_eq!(e.code, ErrorCode::InvalidDpopProof),
        other => panic!("{other:?}"),
    }
    let rejected = token_requests(&s.op)
        .iter()
        .filter(|r| r.param("deferred_auth_id").is_some() && r.status == 400)
        .count();
    assert!(rejected >= 2, "one retry with a fresh proof");
}

#[tokio::test]
async fn a_bearer_downgrade_is_refused_unless_allowed() {
    let mut cfg = strict_dpop();
    cfg.dpop_downgrade = true;
    let s = public(cfg.clone()).await;
    let auth = start(&s.op, &s.client).await;
    match run_to_outcome(&s, auth.id(), S, Duration::from_secs(120)).await {
        Outcome::Rejected(PollFailure::InvalidTokens(ValidationError::DpopDowngrade {
            token_type,
        })) => {
            assert_eq!(token_type, "Bearer")
        }
        other => panic!("{other:?}"),
    }
    let s = setup_with(cfg, |b| {
        b.client_id(MockOp::PUBLIC_CLIENT_ID)
            .client_auth(ClientAuth::None)
            .dpop(DpopConfig::enabled().allow_bearer_downgrade())
    })
    .await;
    let auth = start(&s.op, &s.client).await;
    assert!(matches!(
        run_to_outcome(&s, auth.id(), S, Duration::from_secs(120)).await,
        Outcome::Tokens(_)
    ));
}

#[tokio::test]
async fn private_key_jwt_and_client_secret_jwt_clients_complete() {
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("rp-key-1");
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(3);
    let jwk = key.public_jwk().unwrap();
    let s = setup_with(cfg.clone(), |b| {
        b.client_id("pkjwt")
            .client_auth(ClientAuth::private_key_jwt(key))
    })
    .await;
    s.op.register_client(RegisteredClient::private_key_jwt("pkjwt", vec![jwk]));
    let auth = start(&s.op, &s.client).await;
    assert!(matches!(
        run_to_outcome(&s, auth.id(), S, Duration::from_secs(120)).await,
        Outcome::Tokens(_)
    ));
    let reqs = token_requests(&s.op);
    assert_eq!(reqs.len(), 4);
    let jtis: HashSet<String> = reqs
        .iter()
        .map(|r| {
            claims(r.param("client_assertion").unwrap())["jti"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(jtis.len(), 4, "a new assertion for every request");
    assert!(reqs.iter().all(|r| r.status != 401));

    let s = setup_with(cfg, |b| {
        b.client_id("csjwt")
            .client_auth(ClientAuth::client_secret_jwt(
                "shared-secret-0123456789abcdef",
            ))
    })
    .await;
    s.op.register_client(RegisteredClient::confidential(
        "csjwt",
        "shared-secret-0123456789abcdef",
    ));
    let auth = start(&s.op, &s.client).await;
    assert!(matches!(
        run_to_outcome(&s, auth.id(), S, Duration::from_secs(120)).await,
        Outcome::Tokens(_)
    ));
}

#[tokio::test]
async fn a_wrong_private_key_is_invalid_client() {
    let registered = SigningKey::generate(Algorithm::ES256).unwrap();
    let used = SigningKey::generate(Algorithm::ES256).unwrap();
    let s = setup_with(OpConfig::default(), |b| {
        b.client_id("pkjwt")
            .client_auth(ClientAuth::private_key_jwt(used))
    })
    .await;
    s.op.register_client(RegisteredClient::private_key_jwt(
        "pkjwt",
        vec![registered.public_jwk().unwrap()],
    ));
    let (url, pending) = s.client.authorize().build().unwrap();
    let cb = s.op.browse(&url).await.unwrap();
    let oidc_dtr::CallbackResponse::Acknowledgment(ack) =
        s.client.callback(&pending, cb.query()).unwrap()
    else {
        panic!()
    };
    let err = s.client.exchange(ack).await.unwrap_err();
    assert_eq!(err.oauth().unwrap().code, ErrorCode::InvalidClient);
}

#[tokio::test]
async fn cancellation_end_to_end_then_a_late_ping() {
    let (listener, ping_url) = crate::support::rp::bind().await;
    let s = {
        let u = ping_url.clone();
        let clock = std::sync::Arc::new(oidc_dtr::time::ManualClock::new(T0));
        let op = op(OpConfig::default(), &clock).await;
        let cancel = CancellationConfig::new(op.url("/df-authentication/cancel").as_str()).unwrap();
        let client = DtrClient::builder()
            .issuer(op.issuer())
            .client_id("rp")
            .client_secret("rp-secret")
            .redirect_uri(REDIRECT)
            .notification_endpoint(u)
            .cancellation(cancel)
            .clock(clock.clone())
            .build()
            .await
            .unwrap();
        op.register_client(
            RegisteredClient::confidential("rp", "rp-secret")
                .with_notification_endpoint(ping_url.clone()),
        );
        Setup { op, client, clock }
    };
    crate::support::rp::serve(listener, s.client.ping_receiver());
    let auth = start(&s.op, &s.client).await;
    assert_eq!(
        s.client.cancel(auth.id()).await.unwrap(),
        oidc_dtr::CancelResult::ToldOp
    );
    assert_eq!(s.client.wait(auth.id()).await.unwrap(), Outcome::Cancelled);
    assert_eq!(
        s.op.authentication(auth.id()).unwrap().state,
        AuthState::Cancelled
    );
    let reqs = s.op.requests_to(Endpoint::Cancel);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].status, 200);
    assert_eq!(reqs[0].param("deferred_auth_id"), Some(auth.id().secret()));
    assert!(
        reqs[0]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );
    assert_eq!(
        reqs[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // A ping that arrives after the cancellation: 204, and nothing polls.
    assert_eq!(s.op.send_ping(auth.id()).await, Some(204));
    pass(&s, Duration::from_secs(30), S).await;
    assert!(
        token_requests(&s.op)
            .iter()
            .all(|r| r.param("deferred_auth_id").is_none())
    );
    // Cancelling again sends nothing.
    let again = s.client.cancel(auth.id()).await.unwrap();
    assert!(!again.op_told(), "{again:?}");
    assert_eq!(s.op.requests_to(Endpoint::Cancel).len(), 1);
}

#[tokio::test]
async fn json_cancellation_and_dpop_bound_cancellation() {
    // JSON needs header-based client authentication.
    let plain_op = MockOp::start().await.unwrap();
    let json = CancellationConfig::new(plain_op.url("/df-authentication/cancel").as_str())
        .unwrap()
        .encoding(CancelEncoding::Json);
    let err = DtrClient::builder()
        .issuer(plain_op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_auth(ClientAuth::ClientSecretPost(MockOp::CLIENT_SECRET.into()))
        .redirect_uri(REDIRECT)
        .cancellation(json.clone())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Config(ConfigError::Invalid {
            field: "cancellation",
            ..
        })
    ));

    let s = setup_with(OpConfig::default(), |b| b).await;
    let json = CancellationConfig::new(s.op.url("/df-authentication/cancel").as_str())
        .unwrap()
        .encoding(CancelEncoding::Json);
    let s = Setup {
        client: DtrClient::builder()
            .issuer(s.op.issuer())
            .client_id(MockOp::CLIENT_ID)
            .client_secret(MockOp::CLIENT_SECRET)
            .redirect_uri(REDIRECT)
            .cancellation(json)
            .clock(s.clock.clone())
            .build()
            .await
            .unwrap(),
        ..s
    };
    let auth = start(&s.op, &s.client).await;
    assert!(s.client.cancel(auth.id()).await.unwrap().op_told());
    let r = &s.op.requests_to(Endpoint::Cancel)[0];
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.param("deferred_auth_id"), Some(auth.id().secret()));
    assert_eq!(
        s.op.authentication(auth.id()).unwrap().state,
        AuthState::Cancelled
    );

    // A public DPoP client: the cancellation carries a proof from the
    // authentication's key (the OP checks the binding).
    let s = {
        let clock = std::sync::Arc::new(oidc_dtr::time::ManualClock::new(T0));
        let op = op(strict_dpop(), &clock).await;
        let cancel = CancellationConfig::new(op.url("/df-authentication/cancel").as_str()).unwrap();
        let client = DtrClient::builder()
            .issuer(op.issuer())
            .client_id(MockOp::PUBLIC_CLIENT_ID)
            .redirect_uri(REDIRECT)
            .cancellation(cancel)
            .clock(clock.clone())
            .build()
            .await
            .unwrap();
        Setup { op, client, clock }
    };
    let auth = start(&s.op, &s.client).await;
    assert!(s.client.cancel(auth.id()).await.unwrap().op_told());
    let reqs = s.op.requests_to(Endpoint::Cancel);
    assert_eq!(reqs.last().unwrap().status, 200);
    let proof = claims(reqs.last().unwrap().header("dpop").unwrap());
    assert_eq!(
        proof["htu"],
        format!("{}/df-authentication/cancel", s.op.issuer())
    );
    assert_eq!(
        s.op.authentication(auth.id()).unwrap().state,
        AuthState::Cancelled
    );
    assert_eq!(s.client.wait(auth.id()).await.unwrap(), Outcome::Cancelled);
}
