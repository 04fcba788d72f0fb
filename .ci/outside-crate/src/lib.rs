//! The quickstart's calls, written against oidc-dtr's public API only.

use oidc_dtr::{CallbackResponse, DtrClient, Error, Outcome};

/// What the flow ended with.
pub async fn run(
    issuer: &str,
    client_id: &str,
    secret: &str,
    browse: impl AsyncFnOnce(&str) -> String,
    decide: impl FnOnce(&oidc_dtr::DeferredId),
) -> Result<String, Error> {
    let client = DtrClient::builder()
        .issuer(issuer)
        .client_id(client_id)
        .client_secret(secret)
        .redirect_uri("http://127.0.0.1:9/callback")
        .build()
        .await?;
    let (url, pending) = client.authorize().scope("profile").build()?;
    let query = browse(url.as_str()).await;
    let ack = match client.callback(&pending, &query)? {
        CallbackResponse::Acknowledgment(ack) => ack,
        other => return Ok(format!("unexpected callback: {other:?}")),
    };
    let auth = client.exchange(ack).await?;
    decide(auth.id());
    let outcome = client.wait(auth.id()).await?;
    client.shutdown().await;
    Ok(match outcome {
        Outcome::Tokens(tokens) => format!("tokens for {}", tokens.claims().subject()),
        other => format!("no tokens: {}", other.kind()),
    })
}
