//! Invariant 8: no secret ever reaches `Debug`, `Display`, an error or a log.
//! A full flow runs with every log event (all levels, all fields) captured;
//! then no client secret, code, `deferred_auth_id`, notification token,
//! token, `state`, `nonce`, PKCE verifier or DPoP private key may appear in
//! the logs, in the `Debug` of any value the application holds, or in the
//! errors it sees.

use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::support::flow::*;
use oidc_dtr::Outcome;
use oidc_dtr::{CallbackResponse, ClientAuth, DtrClient};
use oidc_dtr_testkit::{AutoApprove, Endpoint, OpConfig, RegisteredClient};
use tracing::field::{Field, Visit};

/// Every event and span field, formatted, of every test in this binary.
fn logs() -> &'static Mutex<String> {
    static LOGS: OnceLock<Mutex<String>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(String::new()))
}

struct Capture;

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut s = format!("\nspan {}", span.metadata().name());
        span.record(&mut Fields(&mut s));
        logs().lock().unwrap().push_str(&s);
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut s = String::new();
        values.record(&mut Fields(&mut s));
        logs().lock().unwrap().push_str(&s);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut s = String::from("\n");
        event.record(&mut Fields(&mut s));
        logs().lock().unwrap().push_str(&s);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn assert_clean(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(s.len() >= 8, "a secret too short to search for: {s:?}");
        assert!(
            !text.contains(s.as_str()),
            "{what} contains a secret ({} chars)",
            s.len()
        );
    }
}

#[tokio::test]
async fn no_secret_reaches_logs_debug_or_errors() {
    let _ = tracing::subscriber::set_global_default(Capture);
    let (listener, ping_url) = crate::support::rp::bind().await;
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(2);
    cfg.interim_id_token = true;
    cfg.require_dpop_nonce = true;
    let u = ping_url.clone();
    let s = setup_with(cfg, move |b| {
        b.client_id("rp")
            .client_secret("rp-client-secret-0123456789")
            .notification_endpoint(u)
            .dpop(oidc_dtr::client::DpopConfig::enabled())
    })
    .await;
    s.op.register_client(
        RegisteredClient::confidential("rp", "rp-client-secret-0123456789")
            .with_notification_endpoint(ping_url),
    );
    crate::support::rp::serve(listener, s.client.ping_receiver());
    let mut events = s.client.subscribe();

    let (url, pending) = s.client.authorize().max_age(3600).build().unwrap();
    let cb = s.op.browse(&url).await.unwrap();
    let CallbackResponse::Acknowledgment(ack) = s.client.callback(&pending, cb.query()).unwrap()
    else {
        panic!()
    };
    let mut debug = format!(
        "{:?} {:?} {:?} {:?}",
        s.client,
        pending,
        ack,
        url.as_str().len()
    );
    // A callback with a wrong state, and an exchange with a wrong secret.
    let mut errors = String::new();
    let forged = cb.query().replace("state=", "state=x");
    errors += &format!(
        "{:?} {}",
        s.client.callback(&pending, &forged).unwrap_err(),
        s.client.callback(&pending, &forged).unwrap_err()
    );
    let bad = DtrClient::builder()
        .issuer(s.op.issuer())
        .client_id("rp")
        .client_auth(ClientAuth::ClientSecretPost(
            "wrong-secret-0123456789".into(),
        ))
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap();
    let e = bad.exchange(ack.clone()).await.unwrap_err();
    errors += &format!(" {e:?} {e}");

    let auth = s.client.exchange(ack.clone()).await.unwrap();
    // A ping (its body carries the deferred_auth_id) and a forged one.
    assert_eq!(s.op.send_ping(auth.id()).await, Some(204));
    assert_eq!(
        s.op.send_forged_ping(auth.id(), "not-the-notification-token")
            .await,
        Some(401)
    );
    debug += &format!(" {auth:?}");
    let outcome = run_to_outcome(
        &s,
        auth.id(),
        Duration::from_secs(1),
        Duration::from_secs(120),
    )
    .await;
    let Outcome::Tokens(tokens) = &outcome else {
        panic!("{outcome:?}")
    };
    debug += &format!(" {outcome:?} {tokens:?} {:?}", tokens.claims());
    while let Ok(e) = events.try_recv() {
        debug += &format!(" {e:?}");
    }
    // An exchange replayed: invalid_grant, as an error value.
    let e = s.client.exchange(ack).await.unwrap_err();
    errors += &format!(" {e:?} {e}");
    debug += &format!(" {:?}", s.client.snapshot(auth.id()).await);

    // The secrets of this flow.
    let snap = s.op.authentication(auth.id()).unwrap();
    let exchange =
        s.op.requests_to(Endpoint::Token)
            .into_iter()
            .find_map(|r| r.param("deferred_code").map(str::to_owned))
            .unwrap();
    let dpop_pkcs8 = serde_json::to_value(auth.dpop_key().unwrap()).unwrap()["pkcs8"]
        .as_str()
        .unwrap()
        .to_owned();
    let secrets = vec![
        "rp-client-secret-0123456789".to_owned(),
        "wrong-secret-0123456789".to_owned(),
        exchange,
        auth.id().secret().to_owned(),
        snap.notification_token.unwrap(),
        pending.state().secret().to_owned(),
        pending.nonce().secret().to_owned(),
        pending.pkce_verifier().secret().to_owned(),
        tokens.access_token().secret().to_owned(),
        tokens.refresh_token().unwrap().secret().to_owned(),
        tokens.id_token().raw().secret().to_owned(),
        auth.interim_id_token().unwrap().secret().to_owned(),
        dpop_pkcs8[..40].to_owned(),
    ];
    let logs = logs().lock().unwrap().clone();
    assert!(
        logs.contains("deferred code exchanged"),
        "the capture works"
    );
    assert_clean("the logs", &logs, &secrets);
    // The spans were there to be searched: exchange, poll, ping, JWKS fetch,
    // each naming its authentication by fingerprint only.
    for span in ["dtr.exchange", "dtr.poll", "dtr.ping", "dtr.jwks_fetch"] {
        assert!(logs.contains(&format!("span {span}")), "no `{span}` span");
    }
    assert!(
        logs.contains("deferred_auth_id="),
        "spans name the authentication"
    );
    assert_clean("a Debug output", &debug, &secrets);
    assert_clean("an error", &errors, &secrets);
}
