//! The device authorization grant (RFC 8628) with a deferred token response
//! (IETF draft): for a CLI or a device without a browser. The user enters a
//! code at a URL on another device; once they are done there, the AS may
//! still take its time (an identity review), and the client waits.
//!
//! ```sh
//! cargo run -p oidc-dtr --example device_flow
//! ```
//!
//! By default the in-process mock OP plays the user (who "enters the code"
//! two seconds later) and approves after a few seconds more. Against a real
//! AS that publishes a `device_authorization_endpoint` (variables:
//! `examples/common/mod.rs`; the draft is always IETF here):
//!
//! ```sh
//! DTR_ISSUER=https://as.example DTR_CLIENT_ID=my-device \
//!   cargo run -p oidc-dtr --example device_flow
//! ```

use std::time::{Duration, SystemTime};

use oidc_dtr::{DeviceAuthorization, Outcome, Profile, Redemption, TokenSet, UnixTime};
use oidc_dtr_testkit::{AutoApprove, OpConfig, RegisteredClient};

mod common;
use common::{Op, Result};

#[tokio::main]
async fn main() -> Result<()> {
    let outcome = run().await?;
    common::print_outcome(&outcome);
    Ok(())
}

/// Runs the device flow and returns how it ended.
pub async fn run() -> Result<Outcome<TokenSet>> {
    let mut config = OpConfig::default();
    config.interval = Some(1);
    config.auto_approve = AutoApprove::AfterDelay(Duration::from_secs(2));
    config.progress = "Your documents are being reviewed".into();
    let op = Op::start(config, RegisteredClient::public("device"), Profile::Ietf).await?;
    let client = op
        .client_builder()
        // The device flow has no redirect; the builder still wants a URI.
        .redirect_uri(
            op.redirect_uri
                .as_deref()
                .unwrap_or("http://127.0.0.1/unused"),
        )
        .profile(Profile::Ietf)
        .build()
        .await?;

    let device = client.device_authorization("profile").await?;
    println!(
        "On your phone or computer, go to:\n  {}",
        device.verification_uri()
    );
    println!("and enter the code:  {}", device.user_code());
    if let Some(complete) = device.verification_uri_complete() {
        println!("(or open {complete})");
    }
    if let Some(mock) = op.mock.clone() {
        // The mock plays the user, who types the code two seconds later.
        let code = device.user_code().to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            mock.complete_device(&code);
        });
    }

    // Poll the device code, with a countdown to its expiry meanwhile.
    let redeem = client.device_token(&device);
    tokio::pin!(redeem);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let redemption = loop {
        tokio::select! {
            r = &mut redeem => break r?,
            _ = tick.tick() => println!("   waiting for you; the code expires in {} s", left(&device)),
        }
    };
    let auth = match redemption {
        Redemption::Deferred(auth) => auth,
        Redemption::Tokens(tokens) => return Ok(Outcome::Tokens(*tokens)),
        _ => return Err("an answer this version does not know".into()),
    };
    println!("You are signed in; the provider is now reviewing (the answer was deferred).");
    let outcome = common::wait_with_progress(&client, &auth).await?;
    client.shutdown().await;
    Ok(outcome)
}

/// Seconds until the device code expires.
fn left(device: &DeviceAuthorization) -> u64 {
    let now = UnixTime::from_system_time(SystemTime::now());
    device.expires_at().saturating_duration_since(now).as_secs()
}
