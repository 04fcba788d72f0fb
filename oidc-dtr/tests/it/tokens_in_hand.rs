//! Tokens in hand are never lost: every path that receives tokens from the
//! OP (a deferred poll, the plain-code fallback, an IETF redemption answered
//! at once, the device flow, and the interim ID token of an exchange) keeps
//! them through a JWK Set outage longer than the quick retries, with a real
//! network failure (the `jwks_uri` port refuses connections), and delivers
//! them once the keys are reachable, across a restart too when a FileStore
//! is configured. And tokens naming a new `kid` force one refresh at once,
//! whatever the unknown-`kid` cooldown.

use std::sync::Arc;
use std::time::Duration;

use oidc_dtr::{
    CallbackResponse, DeferredId, DtrClient, Error, Outcome, PollEvent, Redemption, TokenSet,
    client::ResponseType,
    error::ValidationError,
    time::{Clock, ManualClock},
    tokens::JwksConfig,
};
use oidc_dtr_testkit::{AuthorizeOutcome, Endpoint, IdTokenFault, JwksPort, MockOp, OpConfig};

use crate::support::TempPath;
use crate::support::flow::{REDIRECT, T0, ietf_config, op, poll_requests, settle};

const S: Duration = Duration::from_secs(1);

/// The paths by which tokens reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The engine's poll of a deferred authentication.
    Poll,
    /// The engine's poll of an IETF deferral (`redeem_code` deferred).
    IetfPoll,
    /// `exchange_code` (OIDC `deferred_code code`, answered with a code).
    ExchangeCode,
    /// `redeem_code` answered at once (IETF).
    RedeemCode,
    /// `device_token` answered at once.
    DeviceToken,
    /// The interim ID token of `exchange`, then the poll's final tokens.
    Interim,
}

const PATHS: [Path; 6] = [
    Path::Poll,
    Path::IetfPoll,
    Path::ExchangeCode,
    Path::RedeemCode,
    Path::DeviceToken,
    Path::Interim,
];

fn config(path: Path) -> OpConfig {
    let mut c = match path {
        Path::RedeemCode | Path::DeviceToken | Path::IetfPoll => ietf_config(),
        _ => OpConfig::default(),
    };
    match path {
        Path::ExchangeCode | Path::RedeemCode | Path::DeviceToken => {
            c.authorize_outcome = AuthorizeOutcome::Code;
        }
        Path::Interim => c.interim_id_token = true,
        Path::Poll | Path::IetfPoll => {}
    }
    c
}

async fn build(op: &MockOp, clock: &Arc<ManualClock>, store: Option<&TempPath>) -> DtrClient {
    let mut b = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .clock(clock.clone());
    if let Some(path) = store {
        b = b.store(oidc_dtr::store::FileStore::open(&path.0).unwrap());
    }
    b.build().await.unwrap()
}

/// Advances virtual time a second at a time (letting the client and the OP
/// work at each instant) until `done` holds; at most `max` of virtual time.
async fn drive_until(clock: &ManualClock, max: Duration, mut done: impl AsyncFnMut() -> bool) {
    let until = clock.now().saturating_add(max);
    loop {
        settle().await;
        if done().await {
            return;
        }
        assert!(
            clock.now() < until,
            "not reached within {max:?} of virtual time"
        );
        clock.advance(S);
    }
}

/// Runs a spawned call to its end, moving virtual time meanwhile.
async fn drive_call<T: Send + 'static>(clock: &ManualClock, call: tokio::task::JoinHandle<T>) -> T {
    let mut call = Some(call);
    let mut out = None;
    drive_until(clock, Duration::from_secs(600), async || {
        if call.as_ref().is_some_and(|c| c.is_finished()) {
            out = Some(call.take().unwrap().await.unwrap());
        }
        out.is_some()
    })
    .await;
    out.unwrap()
}

/// The handle that `wait` delivers the tokens on, once the path has hit the
/// outage (its tokens, or its interim token, not validated).
async fn start(path: Path, op: &MockOp, client: &DtrClient, clock: &ManualClock) -> DeferredId {
    let code = || async {
        let mut req = client.authorize();
        if client.profile() == oidc_dtr::Profile::Oidc {
            req = req.response_type(ResponseType::DeferredCodeOrCode);
        }
        let (url, pending) = req.build().unwrap();
        let cb = op.browse(&url).await.unwrap();
        match client.callback(&pending, cb.query()).unwrap() {
            CallbackResponse::Code(c) => c,
            other => panic!("{other:?}"),
        }
    };
    let held = |r: Result<TokenSet, Error>| match r {
        Err(Error::TokensHeld { handle, source }) => {
            assert!(source.is_retryable(), "{source:?}");
            handle
        }
        other => panic!("{path:?}: expected TokensHeld, got {other:?}"),
    };
    match path {
        Path::Poll | Path::Interim => {
            let (url, pending) = client.authorize().build().unwrap();
            let cb = op.browse(&url).await.unwrap();
            let CallbackResponse::Acknowledgment(ack) =
                client.callback(&pending, cb.query()).unwrap()
            else {
                panic!("expected an acknowledgment")
            };
            let c = client.clone();
            let r = drive_call(clock, tokio::spawn(async move { c.exchange(ack).await })).await;
            let id = match (path, r) {
                (Path::Poll, Ok(auth)) => auth.id().clone(),
                (Path::Interim, Err(Error::InterimIdTokenUnverified { id, source })) => {
                    assert!(source.is_retryable(), "{source:?}");
                    id
                }
                (_, other) => panic!("{path:?}: {other:?}"),
            };
            // Tracked, whatever the interim check said.
            assert!(client.poll_status(&id).await.is_some(), "{path:?}");
            assert!(op.approve(&id));
            id
        }
        Path::ExchangeCode => {
            let code = code().await;
            let c = client.clone();
            held(
                drive_call(
                    clock,
                    tokio::spawn(async move { c.exchange_code(code).await }),
                )
                .await,
            )
        }
        Path::IetfPoll => {
            let code = code().await;
            let c = client.clone();
            let r = drive_call(
                clock,
                tokio::spawn(async move { c.redeem_code(code).await }),
            )
            .await;
            let Ok(Redemption::Deferred(auth)) = r else {
                panic!("{path:?}: {r:?}")
            };
            assert!(op.approve(auth.id()));
            auth.id().clone()
        }
        Path::RedeemCode => {
            let code = code().await;
            let c = client.clone();
            let r = drive_call(
                clock,
                tokio::spawn(async move { c.redeem_code(code).await }),
            )
            .await;
            held(r.map(|r| match r {
                Redemption::Tokens(t) => *t,
                other => panic!("{other:?}"),
            }))
        }
        Path::DeviceToken => {
            let device = client.device_authorization("").await.unwrap();
            assert!(op.complete_device(device.user_code()));
            let c = client.clone();
            let r = drive_call(
                clock,
                tokio::spawn(async move { c.device_token(&device).await }),
            )
            .await;
            held(r.map(|r| match r {
                Redemption::Tokens(t) => *t,
                other => panic!("{other:?}"),
            }))
        }
    }
}

/// The outcome of `id`, moving virtual time until it is there.
async fn outcome(client: &DtrClient, clock: &ManualClock, id: &DeferredId) -> Outcome {
    let mut out = None;
    drive_until(clock, Duration::from_secs(600), async || {
        if client.poll_status(id).await.is_some_and(|s| s.finished) {
            out = Some(client.wait(id).await.unwrap());
        }
        out.is_some()
    })
    .await;
    out.unwrap()
}

/// Token requests that redeemed something (a code, a device code or a
/// deferred id): each answered 200 once.
fn redemptions(op: &MockOp) -> usize {
    op.requests_to(Endpoint::Token)
        .iter()
        .filter(|r| r.status == 200 && r.param("deferred_code").is_none())
        .count()
}

async fn outage_loses_nothing(path: Path, restart: bool) {
    let store = restart.then(|| TempPath::new("tokens-in-hand"));
    let clock = Arc::new(ManualClock::new(T0));
    let op = op(config(path), &clock).await;
    // The OP's keys live behind a port that refuses connections.
    let port = JwksPort::new(&op).await.unwrap();
    let mut client = build(&op, &clock, store.as_ref()).await;
    let mut events = client.subscribe();

    let id = start(path, &op, &client, &clock).await;
    if path != Path::Interim {
        // The tokens are held: the engine says so.
        let mut held = false;
        drive_until(&clock, Duration::from_secs(120), async || {
            while let Ok(ev) = events.try_recv() {
                if let PollEvent::TokensHeld { id: got, reason } = ev {
                    assert_eq!(&got, &id);
                    assert!(!reason.is_empty());
                    held = true;
                }
            }
            held
        })
        .await;
    }
    // The outage lasts long past the quick retries.
    let before = poll_requests(&op).len();
    for _ in 0..120 {
        clock.advance(S);
        settle().await;
    }
    assert!(
        !client.poll_status(&id).await.is_some_and(|s| s.finished),
        "{path:?}: ended during the outage"
    );
    if path != Path::Interim {
        assert_eq!(
            poll_requests(&op).len(),
            before,
            "{path:?}: held tokens are validated, never polled for again"
        );
    }
    if restart {
        client.shutdown().await;
        drop(client);
        client = build(&op, &clock, store.as_ref()).await;
        for _ in 0..30 {
            clock.advance(S);
            settle().await;
        }
    }
    assert_eq!(port.served(), 0);
    port.open().await.unwrap();
    let got = outcome(&client, &clock, &id).await;
    let Outcome::Tokens(tokens) = got else {
        panic!("{path:?} (restart {restart}): {got:?}")
    };
    assert_eq!(tokens.claims().issuer(), op.issuer());
    assert!(port.served() >= 1);
    // Redeemed once at the OP: nothing was asked for twice.
    assert_eq!(redemptions(&op), 1, "{path:?}");
    client.shutdown().await;
}

#[tokio::test]
async fn a_jwks_outage_loses_no_tokens_on_any_path() {
    for path in PATHS {
        outage_loses_nothing(path, false).await;
    }
}

#[tokio::test]
async fn held_tokens_survive_a_restart_during_the_outage() {
    for path in PATHS {
        outage_loses_nothing(path, true).await;
    }
}

/// Two key rotations inside the unknown-`kid` cooldown: the second one's
/// tokens force a refresh at once instead of waiting out the cooldown.
#[tokio::test]
async fn a_second_rotation_inside_the_cooldown_delays_nothing() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut cfg = OpConfig::default();
    cfg.authorize_outcome = AuthorizeOutcome::Code;
    let op = op(cfg, &clock).await;
    let client = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .clock(clock.clone())
        .jwks_config(JwksConfig::default().refresh_cooldown(Duration::from_secs(60)))
        .build()
        .await
        .unwrap();
    let jwks = |op: &MockOp| op.requests_to(Endpoint::Jwks).len();
    let flow = |client: &DtrClient| {
        let client = client.clone();
        let op = op.clone();
        tokio::spawn(async move {
            let (url, pending) = client
                .authorize()
                .response_type(ResponseType::DeferredCodeOrCode)
                .build()
                .unwrap();
            let cb = op.browse(&url).await.unwrap();
            let CallbackResponse::Code(code) = client.callback(&pending, cb.query()).unwrap()
            else {
                panic!("expected a code")
            };
            client.exchange_code(code).await
        })
    };
    // Virtual time never moves below: a call that waited for the cooldown
    // would never return, so the bound is on real time only.
    let finish = |call: tokio::task::JoinHandle<Result<TokenSet, Error>>| async move {
        tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("the tokens waited for the virtual clock")
            .unwrap()
    };
    finish(flow(&client)).await.unwrap();
    assert_eq!(jwks(&op), 1);
    // First rotation: a forced refresh starts the cooldown.
    op.rotate_key();
    finish(flow(&client)).await.unwrap();
    assert_eq!(jwks(&op), 2);
    // Five seconds later, inside the cooldown, a second rotation.
    clock.advance(Duration::from_secs(5));
    op.rotate_key();
    let start = clock.now();
    finish(flow(&client)).await.unwrap();
    assert_eq!(jwks(&op), 3, "exactly one more fetch");
    assert_eq!(clock.now(), start, "delivered without waiting on the clock");
}

/// A token response naming a `kid` the OP never published costs one
/// forced fetch, inside the cooldown too, and no more: then it is refused.
#[tokio::test]
async fn an_unknown_kid_costs_one_fetch_per_token_response() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut cfg = OpConfig::default();
    cfg.authorize_outcome = AuthorizeOutcome::Code;
    let op = op(cfg, &clock).await;
    let client = build(&op, &clock, None).await;
    let flow = || async {
        let (url, pending) = client
            .authorize()
            .response_type(ResponseType::DeferredCodeOrCode)
            .build()
            .unwrap();
        let cb = op.browse(&url).await.unwrap();
        let CallbackResponse::Code(code) = client.callback(&pending, cb.query()).unwrap() else {
            panic!("expected a code")
        };
        client.exchange_code(code).await
    };
    flow().await.unwrap();
    let jwks = |op: &MockOp| op.requests_to(Endpoint::Jwks).len();
    assert_eq!(jwks(&op), 1);
    op.configure(|c| c.id_token_fault = Some(IdTokenFault::UnknownKid));
    for n in 1..=3 {
        let r = flow().await;
        assert!(
            matches!(
                r,
                Err(Error::Validation(ValidationError::UnknownKid { .. }))
            ),
            "{r:?}"
        );
        assert_eq!(jwks(&op), 1 + n, "one forced fetch per response");
    }
}
