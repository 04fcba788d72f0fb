//! Mounting the Ping Callback receiver with no framework at all: a bare
//! hyper/1 server whose service calls `PingReceiver::handle`. (For a
//! framework with its own request types, such as actix-web, pass the method,
//! the `Content-Type` and `Authorization` headers and the body bytes to
//! `PingReceiver::handle_raw` and answer with the status it returns.)
//!
//! The mock OP decides after two seconds and pings; the ping wakes the poller,
//! which fetches the tokens with a single request.
//!
//! ```sh
//! cargo run -p oidc-dtr --example hyper_ping
//! ```
//!
//! Against a real OP (variables: `examples/common/mod.rs`), the receiver
//! listens on `DTR_BIND` (default `127.0.0.1:0`) and the OP pings
//! `DTR_NOTIFICATION_ENDPOINT`, which must reach it:
//!
//! ```sh
//! DTR_ISSUER=https://op.example DTR_CLIENT_ID=rp DTR_CLIENT_SECRET=... \
//!   DTR_REDIRECT_URI=https://rp.example/callback DTR_BIND=0.0.0.0:8443 \
//!   DTR_NOTIFICATION_ENDPOINT=https://rp.example/dtr/ping \
//!   cargo run -p oidc-dtr --example hyper_ping
//! ```

use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use oidc_dtr::Outcome;
use oidc_dtr::{CallbackResponse, Profile};
use oidc_dtr_testkit::{AutoApprove, OpConfig, RegisteredClient};

mod common;
use common::{Op, Result};

#[tokio::main]
async fn main() -> Result<()> {
    run().await
}

/// Receives the OP's ping on a bare hyper server, until the outcome.
pub async fn run() -> Result<()> {
    // The RP's notification endpoint: bind first, so the URL is known.
    let bind = common::var("DTR_BIND").unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let local_url = format!("http://{}/dtr/ping", listener.local_addr()?);

    let mut config = OpConfig::default();
    config.interval = Some(1);
    config.auto_approve = AutoApprove::AfterDelay(Duration::from_secs(2));
    let registered =
        RegisteredClient::confidential("rp", "rp-secret").with_notification_endpoint(&local_url);
    let op = Op::start(config, registered, Profile::Oidc).await?;
    let ping_url = op.notification_endpoint.clone().unwrap_or(local_url);
    let client = op
        .client_builder()
        .redirect_uri(
            op.redirect_uri
                .as_deref()
                .unwrap_or("http://127.0.0.1:9/callback"),
        )
        .notification_endpoint(&ping_url)
        .build()
        .await?;

    // Serve the receiver: one `service_fn`, no framework.
    let receiver = client.ping_receiver();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let receiver = receiver.clone();
                    async move { Ok::<_, std::convert::Infallible>(receiver.handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    println!("notification endpoint: {ping_url}");

    let (url, pending) = client.authorize().build()?;
    let query = op.user_signs_in(&url).await?;
    let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, &query)? else {
        return Err("expected a deferred_code".into());
    };
    let auth = client.exchange(ack).await?;
    println!("exchanged; waiting for the OP's ping...");
    let outcome = client.wait(auth.id()).await?;
    for p in op.mock.iter().flat_map(|m| m.pings()) {
        println!("the OP pinged; the RP answered HTTP {:?}", p.status);
    }
    match outcome {
        Outcome::Tokens(t) => println!("verified: sub {}", t.claims().subject()),
        other => println!("ended: {}", other.kind()),
    }
    Ok(())
}
