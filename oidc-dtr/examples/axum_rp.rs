//! A small Relying Party web app on axum: a "verify my identity" link, the
//! callback, the Ping Callback endpoint (the SDK's `PingReceiver` mounted as
//! a tower service), and a status page. The OpenID Provider is the testkit's
//! mock, which takes two seconds to decide and then pings.
//!
//! Run it, then open the printed URL in a browser:
//!
//! ```sh
//! cargo run -p oidc-dtr --example axum_rp
//! ```
//!
//! Against a real OP (variables: `examples/common/mod.rs`), with the RP on
//! `DTR_BIND`; the OP must know `DTR_REDIRECT_URI` (default
//! `http://<bind>/callback`) and reach `DTR_NOTIFICATION_ENDPOINT`
//! (default `http://<bind>/dtr/ping`):
//!
//! ```sh
//! DTR_ISSUER=https://op.example DTR_CLIENT_ID=rp DTR_CLIENT_SECRET=... \
//!   DTR_BIND=127.0.0.1:3000 cargo run -p oidc-dtr --example axum_rp
//! ```
//!
//! With `-- --self-test` it plays the browser itself and exits when the
//! identity is verified.
//!
//! # Two replicas on one PostgreSQL
//!
//! With the `postgres` feature, `DTR_DATABASE_URL` puts the pending
//! authentications in PostgreSQL, shared by every replica (a fleet: each
//! authentication is polled by one replica at a time, pings and status
//! pages work on any). The first replica starts the mock OP; the second
//! one uses it (`DTR_OP_ISSUER`, printed by the first):
//!
//! ```sh
//! export DTR_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test
//! DTR_BIND=127.0.0.1:3000 cargo run -p oidc-dtr --example axum_rp --features postgres
//! # another terminal, with the OP address the first one printed:
//! DTR_BIND=127.0.0.1:3001 DTR_OP_ISSUER=http://127.0.0.1:PORT \
//!   cargo run -p oidc-dtr --example axum_rp --features postgres
//! ```
//!
//! axum is a dev-dependency only: the SDK itself depends on no web framework.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use oidc_dtr::Profile;
use oidc_dtr::{CallbackResponse, DeferredId, DtrClient, PendingAuthorization};
use oidc_dtr::{Outcome, PollEvent};
use oidc_dtr_testkit::{AutoApprove, MockOp, OpConfig, RegisteredClient};

mod common;
use common::Op;

/// What the status page shows for one verification.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Status {
    /// "pending", "verified", "denied", "expired", "cancelled" or "failed".
    pub state: &'static str,
    /// The OP's latest progress text.
    pub progress: Option<String>,
    /// The verified subject, once verified.
    pub subject: Option<String>,
}

/// The app's state: the SDK client and two small in-memory maps. A real app
/// keeps `PendingAuthorization` in the user's (server-side or encrypted)
/// session, and verifications in its database.
#[derive(Clone)]
pub struct App {
    client: DtrClient,
    /// Pending authorizations by their `state` value (the browser brings it
    /// back; the SDK then compares it in constant time).
    pending: Arc<Mutex<HashMap<String, PendingAuthorization>>>,
    /// Verification number -> deferred_auth_id and status.
    verifications: Arc<Mutex<Vec<(DeferredId, Status)>>>,
}

/// A running demo: the mock OP, the RP's address, and the app.
pub struct Demo {
    /// The mock OP (`None` when another replica's is used).
    pub op: Option<MockOp>,
    /// Where the RP listens.
    pub addr: SocketAddr,
    /// The app.
    pub app: App,
}

/// Starts the mock OP and the RP on `bind` (port 0 picks one).
pub async fn start(bind: SocketAddr) -> Result<Demo, Box<dyn std::error::Error>> {
    start_replica(bind, None, None).await
}

/// Starts a replica: with `op_issuer`, on another replica's mock OP
/// instead of a new one; with `database_url` (feature `postgres`), on the
/// fleet's shared PostgreSQL instead of memory.
pub async fn start_replica(
    bind: SocketAddr,
    op_issuer: Option<String>,
    database_url: Option<String>,
) -> Result<Demo, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let shared = database_url.is_some();

    let mut config = OpConfig::default();
    config.interval = Some(1);
    config.auto_approve = AutoApprove::AfterDelay(Duration::from_secs(2));
    config.progress = "A reviewer is looking at your documents".into();
    let mut registered = RegisteredClient::confidential("axum-rp", "axum-rp-secret")
        .with_notification_endpoint(format!("{base}/dtr/ping"));
    if !shared {
        // Replicas each have their own callback address; one alone is pinned.
        registered = registered.with_redirect_uri(format!("{base}/callback"));
    }
    let op = match op_issuer {
        Some(issuer) => Op::at(issuer, &registered)?,
        None => Op::start(config, registered, Profile::Oidc).await?,
    };
    let redirect_uri = op
        .redirect_uri
        .clone()
        .unwrap_or_else(|| format!("{base}/callback"));
    let ping_url = op
        .notification_endpoint
        .clone()
        .unwrap_or_else(|| format!("{base}/dtr/ping"));
    let mut builder = op
        .client_builder()
        .redirect_uri(redirect_uri)
        .notification_endpoint(ping_url);
    if let Some(url) = database_url {
        builder = with_database(builder, &url).await?;
    }
    let client = builder.build().await?;

    let app = App {
        client: client.clone(),
        pending: Default::default(),
        verifications: Default::default(),
    };
    tokio::spawn(track_events(app.clone()));

    let router = Router::new()
        .route("/", get(home))
        .route("/verify", get(verify))
        .route("/callback", get(callback))
        .route("/status/{n}", get(status_page))
        .route("/status/{n}/json", get(status_json))
        // The notification endpoint: the SDK's receiver, as a tower service.
        .route_service("/dtr/ping", client.ping_receiver())
        .with_state(app.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(Demo {
        op: op.mock,
        addr,
        app,
    })
}

/// The fleet's shared store (the one environment variable:
/// `DTR_DATABASE_URL`).
#[cfg(feature = "postgres")]
async fn with_database(
    builder: oidc_dtr::DtrClientBuilder,
    url: &str,
) -> Result<oidc_dtr::DtrClientBuilder, Box<dyn std::error::Error>> {
    Ok(builder.store(oidc_dtr::store::PostgresStore::connect(url).await?))
}

#[cfg(not(feature = "postgres"))]
async fn with_database(
    _builder: oidc_dtr::DtrClientBuilder,
    _url: &str,
) -> Result<oidc_dtr::DtrClientBuilder, Box<dyn std::error::Error>> {
    Err("DTR_DATABASE_URL needs the `postgres` feature".into())
}

fn status_of_outcome(outcome: Outcome<oidc_dtr::TokenSet>) -> (&'static str, Option<String>) {
    match outcome {
        Outcome::Tokens(t) => ("verified", Some(t.claims().subject().to_owned())),
        Outcome::Denied { .. } => ("denied", None),
        Outcome::ExpiredByOp | Outcome::DeadlineReached { .. } => ("expired", None),
        Outcome::Cancelled => ("cancelled", None),
        _ => ("failed", None),
    }
}

/// Keeps the status of every verification up to date from the SDK's events.
async fn track_events(app: App) {
    let mut events = app.client.subscribe();
    while let Ok(event) = events.recv().await {
        let mut v = app.verifications.lock().unwrap();
        match event {
            PollEvent::Progress { id, description } => {
                if let Some((_, s)) = v.iter_mut().find(|(i, _)| *i == id) {
                    s.progress = Some(description);
                }
            }
            PollEvent::Finished { id, outcome, .. } => {
                if let Some((_, s)) = v.iter_mut().find(|(i, _)| *i == id) {
                    (s.state, s.subject) = status_of_outcome(outcome);
                }
            }
            _ => {}
        }
    }
}

async fn home() -> Html<&'static str> {
    Html(
        "<h1>Example RP</h1><p>To open an account we need to verify your identity. \
         The provider may take a while.</p><p><a href=\"/verify\">Verify my identity</a></p>",
    )
}

async fn verify(State(app): State<App>) -> Response {
    match app.client.authorize().scope("profile").build() {
        Ok((url, pending)) => {
            let key = pending.state().secret().to_owned();
            app.pending.lock().unwrap().insert(key, pending);
            Redirect::to(url.as_str()).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn callback(State(app): State<App>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let state = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let Some(pending) = app.pending.lock().unwrap().remove(&state) else {
        return (StatusCode::BAD_REQUEST, "unknown or used state").into_response();
    };
    let ack = match app.client.callback(&pending, &query) {
        Ok(CallbackResponse::Acknowledgment(ack)) => ack,
        Ok(CallbackResponse::Error(e)) => {
            return (StatusCode::FORBIDDEN, e.to_string()).into_response();
        }
        Ok(_) => {
            return (StatusCode::BAD_REQUEST, "unexpected code").into_response();
        }
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let auth = match app.client.exchange(ack).await {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let n = {
        let mut v = app.verifications.lock().unwrap();
        v.push((
            auth.id().clone(),
            Status {
                state: "pending",
                ..Default::default()
            },
        ));
        v.len()
    };
    // Events come from the replica that polls; `wait` answers on any (in
    // a fleet, from the shared store).
    let (client, verifications, id) = (
        app.client.clone(),
        app.verifications.clone(),
        auth.id().clone(),
    );
    tokio::spawn(async move {
        if let Ok(outcome) = client.wait(&id).await
            && let Some((_, s)) = verifications.lock().unwrap().get_mut(n - 1)
        {
            (s.state, s.subject) = status_of_outcome(outcome);
        }
    });
    Redirect::to(&format!("/status/{n}")).into_response()
}

fn status_of(app: &App, n: usize) -> Option<Status> {
    let v = app.verifications.lock().unwrap();
    v.get(n.checked_sub(1)?).map(|(_, s)| s.clone())
}

async fn status_page(State(app): State<App>, Path(n): Path<usize>) -> Response {
    let Some(s) = status_of(&app, n) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = match s.state {
        "pending" => format!(
            "<meta http-equiv=\"refresh\" content=\"1\"><h1>Verification in progress</h1><p>{}</p>",
            html_escape(
                s.progress
                    .as_deref()
                    .unwrap_or("Waiting for the provider...")
            )
        ),
        "verified" => format!(
            "<h1>Identity verified</h1><p>Welcome, {}.</p>",
            html_escape(s.subject.as_deref().unwrap_or(""))
        ),
        other => format!("<h1>Verification ended: {other}</h1>"),
    };
    Html(body).into_response()
}

async fn status_json(State(app): State<App>, Path(n): Path<usize>) -> Response {
    match status_of(&app, n) {
        Some(s) => axum::Json(s).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Plays the user's browser: follows the link, the OP's redirect and the
/// RP's redirect, then watches the status until it is no longer pending.
pub async fn self_test(demo: &Demo) -> Result<Status, Box<dyn std::error::Error>> {
    let browser = reqwest::Client::builder().build()?; // follows redirects, like a browser
    let landed = browser
        .get(format!("http://{}/verify", demo.addr))
        .send()
        .await?;
    let page = landed.url().path().to_owned();
    println!("browser landed on {page}");
    for _ in 0..100 {
        let body = browser
            .get(format!("http://{}{page}/json", demo.addr))
            .send()
            .await?
            .bytes()
            .await?;
        let s: serde_json::Value = serde_json::from_slice(&body)?;
        if s["state"] != "pending" {
            return Ok(Status {
                state: if s["state"] == "verified" {
                    "verified"
                } else {
                    "failed"
                },
                progress: s["progress"].as_str().map(str::to_owned),
                subject: s["subject"].as_str().map(str::to_owned),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("no decision within 10 s".into())
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind = std::env::var("DTR_BIND").unwrap_or_else(|_| "127.0.0.1:0".into());
    let demo = start_replica(
        bind.parse()?,
        std::env::var("DTR_OP_ISSUER").ok(),
        std::env::var("DTR_DATABASE_URL").ok(),
    )
    .await?;
    match &demo.op {
        Some(op) => println!(
            "Example RP on http://{}  (mock OP at {}; another replica: DTR_OP_ISSUER={})",
            demo.addr,
            op.issuer(),
            op.issuer()
        ),
        None => println!("Example RP on http://{}", demo.addr),
    }
    if std::env::args().any(|a| a == "--self-test") {
        let s = self_test(&demo).await?;
        println!("verification ended: {} (sub {:?})", s.state, s.subject);
        return Ok(());
    }
    println!("Open it in a browser and click \"Verify my identity\". Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
