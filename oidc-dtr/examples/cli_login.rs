//! A command-line login with no web framework: the redirect comes back to a
//! loopback listener (RFC 8252 §7.3), then the OP takes its time and the
//! CLI waits, printing the OP's progress.
//!
//! ```sh
//! cargo run -p oidc-dtr --example cli_login
//! DTR_DRAFT=ietf cargo run -p oidc-dtr --example cli_login
//! ```
//!
//! By default the in-process mock OP plays the browser and approves after a
//! few seconds. Against a real OP (variables: `examples/common/mod.rs`),
//! open the printed URL in a browser; the client is usually public (no
//! secret) and the OP must accept `http://127.0.0.1:<any port>/callback`
//! (or set `DTR_REDIRECT_URI` to a fixed loopback URI):
//!
//! ```sh
//! DTR_ISSUER=https://op.example DTR_CLIENT_ID=my-cli \
//!   cargo run -p oidc-dtr --example cli_login
//! ```

use std::time::Duration;

use oidc_dtr::{Outcome, Profile, Redemption, TokenSet};
use oidc_dtr_testkit::{AutoApprove, OpConfig, RegisteredClient};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

mod common;
use common::{Op, Result};

#[tokio::main]
async fn main() -> Result<()> {
    let outcome = run(common::draft()?).await?;
    common::print_outcome(&outcome);
    Ok(())
}

/// Logs in, in the draft `profile`, and returns how it ended.
pub async fn run(profile: Profile) -> Result<Outcome<TokenSet>> {
    // The loopback listener first: its port goes into the redirect URI.
    let fixed = common::var("DTR_REDIRECT_URI")
        .map(|u| url::Url::parse(&u))
        .transpose()?;
    let bind = match &fixed {
        Some(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or("127.0.0.1"),
            u.port().unwrap_or(80)
        ),
        None => "127.0.0.1:0".to_owned(),
    };
    let listener = TcpListener::bind(bind).await?;
    let redirect_uri = match fixed {
        Some(u) => u.to_string(),
        None => format!("http://{}/callback", listener.local_addr()?),
    };

    let mut config = OpConfig::default();
    config.interval = Some(1);
    config.auto_approve = AutoApprove::AfterDelay(Duration::from_secs(3));
    config.progress_script = vec![
        "Waiting for a reviewer".into(),
        "A reviewer is checking your documents".into(),
    ];
    // A CLI is a public client: it keeps no secret.
    let op = Op::start(config, RegisteredClient::public("cli"), profile).await?;
    let client = op
        .client_builder()
        .redirect_uri(&redirect_uri)
        .profile(profile)
        .build()
        .await?;

    let (url, pending) = client.authorize().scope("profile").build()?;
    println!("Open this URL in your browser to sign in:\n  {url}");
    if let Some(mock) = op.mock.clone() {
        // The mock OP's simulated browser, sent back to our listener.
        tokio::spawn(async move {
            if let Ok(back) = mock.browse(&url).await {
                let _ = reqwest::get(back.url).await;
            }
        });
    }

    println!("Waiting for the browser on {redirect_uri} ...");
    let query = receive_callback(&listener).await?;
    let auth = match common::redeem(&client, &pending, &query).await? {
        Redemption::Deferred(auth) => auth,
        Redemption::Tokens(tokens) => return Ok(Outcome::Tokens(*tokens)),
        _ => return Err("an answer this version does not know".into()),
    };
    println!(
        "Signed in; the provider is reviewing (checking every {} s at most)...",
        auth.interval().as_secs()
    );
    let outcome = common::wait_with_progress(&client, &auth).await?;
    client.shutdown().await;
    Ok(outcome)
}

/// Accepts connections on the loopback listener until the browser comes
/// back to `/callback`; returns the query. Plain HTTP/1.1, one request per
/// connection: all a redirect needs.
async fn receive_callback(listener: &TcpListener) -> Result<String> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        // "GET /callback?code=...&state=... HTTP/1.1"
        let line = String::from_utf8_lossy(&head);
        let target = line.split_ascii_whitespace().nth(1).unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path != "/callback" {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        let page = "<h1>Signed in</h1><p>You can close this window and return to the terminal.</p>";
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        return Ok(query.to_owned());
    }
}
