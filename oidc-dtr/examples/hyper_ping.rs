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
//! cargo run --example hyper_ping --features testkit
//! ```

use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use oidc_dtr::Outcome;
use oidc_dtr::{CallbackResponse, DtrClient};
use oidc_dtr_testkit::{AutoApprove, MockOp, OpConfig, RegisteredClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The RP's notification endpoint: bind first, so the URL is known.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ping_url = format!("http://{}/dtr/ping", listener.local_addr()?);

    let mut config = OpConfig::default();
    config.interval = Some(1);
    config.auto_approve = AutoApprove::AfterDelay(Duration::from_secs(2));
    let op = MockOp::builder()
        .config(config)
        .client(
            RegisteredClient::confidential("rp", "rp-secret").with_notification_endpoint(&ping_url),
        )
        .start()
        .await?;
    let client = DtrClient::builder()
        .issuer(op.issuer())
        .client_id("rp")
        .client_secret("rp-secret")
        .redirect_uri("http://127.0.0.1:9/callback")
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
    let back = op.browse(&url).await?;
    let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, back.query())? else {
        return Err("expected a deferred_code".into());
    };
    let auth = client.exchange(ack).await?;
    println!("exchanged; waiting for the OP's ping...");
    let outcome = client.wait(auth.id()).await?;
    for p in op.pings() {
        println!("the OP pinged; the RP answered HTTP {:?}", p.status);
    }
    match outcome {
        Outcome::Tokens(t) => println!("verified: sub {}", t.claims().subject()),
        other => println!("ended: {}", other.kind()),
    }
    Ok(())
}
