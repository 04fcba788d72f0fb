//! The Ping Callback receiver of oidc-dtr on actix-web. The receiver is
//! framework-free: the handler passes the method, the `Content-Type` and
//! `Authorization` headers and the body bytes to
//! `PingReceiver::handle_raw`, and answers with the status it returns.
//!
//! ```sh
//! cargo run -p oidc-dtr-example-actix
//! ```
//!
//! By default the in-process mock OP decides after two seconds and pings
//! the actix endpoint; the ping wakes the poller, which fetches the tokens,
//! and the program ends. Against a real OP (the variables of
//! `oidc-dtr/examples/common/mod.rs`), the endpoint listens on `DTR_BIND`
//! and the OP pings `DTR_NOTIFICATION_ENDPOINT`, which must reach it:
//!
//! ```sh
//! DTR_ISSUER=https://op.example DTR_CLIENT_ID=rp DTR_CLIENT_SECRET=... \
//!   DTR_REDIRECT_URI=https://rp.example/callback DTR_BIND=0.0.0.0:8443 \
//!   DTR_NOTIFICATION_ENDPOINT=https://rp.example/dtr/ping \
//!   cargo run -p oidc-dtr-example-actix
//! ```

use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use oidc_dtr::{CallbackResponse, Outcome, Profile, TokenSet, ping::PingReceiver};
use oidc_dtr_testkit::{AutoApprove, OpConfig, RegisteredClient};

// The examples' shared "mock or real OP" setup.
#[allow(unreachable_pub)]
#[path = "../../../oidc-dtr/examples/common/mod.rs"]
mod common;
use common::{Op, Result};

/// The notification endpoint: any method reaches the receiver, which
/// answers 405 to all but `POST`.
async fn ping(
    req: HttpRequest,
    body: web::Bytes,
    receiver: web::Data<PingReceiver>,
) -> HttpResponse {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let reply = receiver
        .handle_raw(
            req.method().as_str(),
            header(header::CONTENT_TYPE),
            header(header::AUTHORIZATION),
            &body,
        )
        .await;
    HttpResponse::new(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_REQUEST))
}

#[actix_web::main]
async fn main() -> Result<()> {
    let (outcome, _) = run().await?;
    common::print_outcome(&outcome);
    Ok(())
}

/// Serves the receiver on actix-web, runs one authentication to its end,
/// and returns the outcome with the statuses the endpoint answered the mock
/// OP's pings with (none for a real OP).
pub async fn run() -> Result<(Outcome<TokenSet>, Vec<Option<u16>>)> {
    let bind = common::var("DTR_BIND").unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = std::net::TcpListener::bind(bind)?;
    let local_url = format!("http://{}/dtr/ping", listener.local_addr()?);

    let mut config = OpConfig::default();
    config.interval = Some(1);
    config.auto_approve = AutoApprove::AfterDelay(Duration::from_secs(2));
    let registered = RegisteredClient::confidential("actix-rp", "actix-rp-secret")
        .with_notification_endpoint(&local_url);
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

    let receiver = web::Data::new(client.ping_receiver());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(receiver.clone())
            .route("/dtr/ping", web::route().to(ping))
    })
    .workers(1)
    .listen(listener)?
    .run();
    let server_handle = server.handle();
    actix_web::rt::spawn(server);
    println!("notification endpoint (actix-web): {ping_url}");

    let (url, pending) = client.authorize().build()?;
    let query = op.user_signs_in(&url).await?;
    let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, &query)? else {
        return Err("expected a deferred_code".into());
    };
    let auth = client.exchange(ack).await?;
    println!("exchanged; waiting for the OP's ping...");
    let outcome = common::wait_with_progress(&client, &auth).await?;
    // The mock OP records a ping once it has read the endpoint's answer,
    // which can be after the woken poll brought the tokens.
    let pings: Vec<_> = match &op.mock {
        Some(m) => m.pings_at_least(1).await.iter().map(|p| p.status).collect(),
        None => Vec::new(),
    };
    for status in &pings {
        println!("the OP pinged; the actix endpoint answered HTTP {status:?}");
    }
    client.shutdown().await;
    server_handle.stop(true).await;
    Ok((outcome, pings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn the_actix_endpoint_takes_the_ping_and_the_tokens_come() {
        let (outcome, pings) = run().await.unwrap();
        assert!(matches!(outcome, Outcome::Tokens(_)), "{}", outcome.kind());
        // The mock OP pinged the actix endpoint once, which answered 204.
        assert_eq!(pings, [Some(204)]);
    }
}
