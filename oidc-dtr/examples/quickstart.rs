//! The Deferred Token Response flow, end to end, against the in-process mock
//! OP of `oidc-dtr-testkit` (a dev-dependency: nothing to enable).
//!
//! ```sh
//! cargo run -p oidc-dtr --example quickstart
//! ```
//!
//! Against a real OP (see `examples/common/mod.rs` for every variable): the
//! example prints the authorization URL and asks for the URL the browser
//! was sent back to.
//!
//! ```sh
//! DTR_ISSUER=https://op.example DTR_CLIENT_ID=rp DTR_CLIENT_SECRET=... \
//!   DTR_REDIRECT_URI=https://rp.example/callback \
//!   cargo run -p oidc-dtr --example quickstart
//! ```
//!
//! With `-- --restart`, the pending authentication is kept in a store file,
//! and the client is stopped and rebuilt halfway, as a deployment or a
//! crash would: the new client resumes it and finishes with tokens.
//!
//! With `-- --ietf` (or `DTR_DRAFT=ietf`), the same flow runs under the
//! IETF OAuth Deferred Token Response profile: a plain `code` comes back,
//! and the token request with `completion_mode=deferred` is deferred; the
//! same engine polls the `deferral_code` and validates the same tokens.

use std::time::Duration;

use oidc_dtr::assurance::{ClaimsRequest, ClaimsTarget, EvidenceRequest, VerifiedClaimsRequest};
use oidc_dtr::store::FileStore;
use oidc_dtr::{CallbackResponse, DtrClient, Profile, Redemption};
use oidc_dtr::{Outcome, PollEvent};
use oidc_dtr_testkit::{AutoApprove, MockOp, OpConfig, RegisteredClient};

mod common;
use common::{Op, Result};

/// The client of this example, on a store file when one is given.
async fn build_client(
    op: &Op,
    store: Option<&std::path::Path>,
    profile: Profile,
) -> Result<DtrClient> {
    let redirect_uri = op
        .redirect_uri
        .as_deref()
        .unwrap_or("http://127.0.0.1:8080/callback");
    let mut builder = op
        .client_builder()
        .redirect_uri(redirect_uri)
        .profile(profile);
    if let Some(path) = store {
        // `DtrClient::shutdown` released the file, so this open succeeds.
        builder = builder.store(FileStore::open(path)?);
    }
    Ok(builder.build().await?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let restart = std::env::args().any(|a| a == "--restart");
    run(common::draft()?, restart).await
}

/// The whole flow, in the draft `profile`; with `restart`, on a store file,
/// with the client stopped and rebuilt halfway.
pub async fn run(profile: Profile, restart: bool) -> Result<()> {
    println!("oidc-dtr quickstart: a Relying Party asks an OpenID Provider to verify a user,");
    println!("and the Provider may take hours or days to decide. (Here: a few seconds.)\n");

    // 0. An OpenID Provider. Here it is a mock running inside this process;
    //    in production it is your identity-verification provider. This one
    //    reviews documents for five seconds, then approves.
    // The one option: which draft the Provider and the client speak.
    let mut config = OpConfig::default();
    config.interval = Some(2);
    config.auto_approve = AutoApprove::AfterDelay(Duration::from_secs(5));
    config.progress_script = vec![
        "Documents received; waiting for a reviewer".into(),
        "A reviewer is checking your passport".into(),
        "Checking the selfie against the passport photo".into(),
    ];
    let registered = RegisteredClient::confidential(MockOp::CLIENT_ID, MockOp::CLIENT_SECRET);
    let op = Op::start(config, registered, profile).await?;
    if op.is_mock() {
        println!("0. A mock OpenID Provider is listening at {}", op.issuer());
    } else {
        println!("0. The OpenID Provider is {}", op.issuer());
    }

    // 1. The client: it reads the Provider's metadata (discovery) and checks
    //    that the Provider supports Deferred Token Response.
    let store_path = restart.then(|| {
        std::env::temp_dir().join(format!("oidc-dtr-quickstart-{}.redb", std::process::id()))
    });
    let mut client = build_client(&op, store_path.as_deref(), profile).await?;
    println!(
        "1. Discovered the Provider: token endpoint {} (profile: {})",
        client.metadata().token_endpoint,
        client.profile()
    );

    // 2. The authentication request: a URL to send the user's browser to.
    //    `pending` holds the state, nonce and PKCE verifier; a web app keeps it
    //    in the user's session until the browser comes back.
    //    It asks for *verified* claims (OpenID Connect for Identity Assurance):
    //    a name and birthdate checked against an identity document under
    //    German AML rules within the last year. The builder checks the request
    //    against what the Provider's metadata says it supports.
    let verified = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::IdToken,
        VerifiedClaimsRequest::new()
            .trust_framework("de_aml")
            .max_age(365 * 86_400)
            .evidence(EvidenceRequest::document().document_types(["idcard", "passport"]))
            .essential_claim("given_name")
            .claim("family_name")
            .claim("birthdate"),
    );
    let (url, pending) = client
        .authorize()
        .scope("profile email")
        .claims_request(verified)
        .build()?;
    println!(
        "2. Sending the user to the Provider:\n   {}",
        shorten(url.as_str())
    );

    // 3. The user uploads documents at the Provider. The mock skips that and
    //    redirects the browser straight back to our redirect URI.
    let query = op.user_signs_in(&url).await?;
    println!("3. The browser came back to the redirect URI");

    // 4. Validate that redirect: state, issuer, and the code itself.
    //    OIDC profile: a deferred_code. IETF profile: a plain code.
    let mut events = client.subscribe();
    let auth = match client.callback(&pending, &query)? {
        CallbackResponse::Acknowledgment(ack) => {
            println!(
                "4. The Provider acknowledged the request: it will decide later (deferred_code received)"
            );
            // 5. Exchange the one-time deferred_code for a deferred_auth_id:
            //    the handle the SDK polls with until the Provider has decided.
            let auth = client.exchange(ack).await?;
            println!("5. Deferred code exchanged. The Provider is now reviewing the user.");
            auth
        }
        CallbackResponse::Code(code) => {
            println!("4. The Provider sent a plain authorization code");
            // 5. Redeem it with completion_mode=deferred: the Provider may
            //    answer with tokens at once, or defer with a deferral_code.
            match client.redeem_code(code).await? {
                Redemption::Deferred(auth) => {
                    println!(
                        "5. The token request was deferred (deferral_code received). The Provider is now reviewing the user."
                    );
                    *auth
                }
                Redemption::Tokens(tokens) => {
                    println!(
                        "5. The Provider answered at once; user (sub): {}",
                        tokens.claims().subject()
                    );
                    return Ok(());
                }
                _ => return Err("an answer this version does not know".into()),
            }
        }
        CallbackResponse::Error(e) => return Err(e.into()),
        _ => return Err("a response this version does not know".into()),
    };
    // The handle is a secret in production (the SDK never logs it); the
    // demo prints its fingerprint to show what came back.
    println!(
        "   polling handle: (secret; its fingerprint is {:?})",
        auth.id().fingerprint()
    );
    println!(
        "   the SDK polls no faster than every {} s",
        auth.interval().as_secs()
    );
    if let Some(deadline) = auth.expires_at() {
        let left = deadline.saturating_duration_since(auth.issued_at());
        println!(
            "   the Provider gives itself {} s to decide",
            left.as_secs()
        );
    }

    // (With --restart) the process stops and a new one takes over, on the
    // same store file: the pending authentication survives, with its
    // deadline and poll interval.
    if let Some(path) = &store_path {
        client.shutdown().await;
        println!("   -- the client is stopped, as in a redeploy --");
        client = build_client(&op, Some(path), profile).await?;
        events = client.subscribe();
        let status = client.poll_status(auth.id()).await.ok_or("not resumed")?;
        println!(
            "   -- a new client resumed it from {}: same deadline, polls every {} s --",
            path.display(),
            status.floor.as_secs()
        );
    }

    // 6. The SDK polls in the background. Progress texts from the Provider
    //    arrive as events; the outcome arrives once, validated.
    println!("6. Waiting for the decision...");
    let progress = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                PollEvent::Progress { description, .. } => println!("   progress: {description}"),
                PollEvent::Finished { .. } => break,
                _ => {}
            }
        }
    });
    let outcome = client.wait(auth.id()).await?;
    let _ = progress.await;
    match outcome {
        Outcome::Tokens(tokens) => {
            let claims = tokens.claims();
            println!(
                "7. Approved. The ID token was validated (signature against the Provider's keys,"
            );
            println!("   issuer, audience, expiry, and the nonce sent in step 2).");
            println!("   user (sub): {}", claims.subject());
            println!("   token type: {}", tokens.token_type());
            // The verified claims, checked against what step 2 asked for
            // (trust framework, max_age, evidence). A failed check leaves
            // the tokens valid; it is reported here, as a typed error.
            match tokens.verified_claims() {
                Ok(checked) => {
                    for element in &checked.requested {
                        let v = &element.verification;
                        println!(
                            "   verified under `{}` at {}:",
                            v.trust_framework,
                            v.time.as_deref().unwrap_or("(no time)")
                        );
                        for (name, value) in &element.claims {
                            println!("     {name}: {value}");
                        }
                    }
                }
                Err(e) => println!("   verified claims rejected: {e}"),
            }
        }
        Outcome::Denied { description } => println!("7. Denied: {description:?}"),
        other => println!("7. Ended without tokens: {}", other.kind()),
    }
    // The application has taken the outcome: acknowledge it, so that it is
    // not handed over again after a restart.
    client.ack(auth.id()).await?;
    client.shutdown().await;
    if let Some(path) = store_path {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    if s.len() > 110 {
        format!("{}...", &s[..110])
    } else {
        s.to_owned()
    }
}
