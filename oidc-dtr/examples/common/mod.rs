//! What every example shares: which OpenID Provider to talk to.
//!
//! By default an example starts the in-process mock OP of
//! `oidc-dtr-testkit`, which decides on its own after a few seconds, so the
//! example runs to its end with nothing to set up. With these variables it
//! talks to a real OP instead:
//!
//! | variable | meaning |
//! | --- | --- |
//! | `DTR_ISSUER` | the OP's issuer identifier (discovery starts there) |
//! | `DTR_CLIENT_ID` | the client registered at that OP |
//! | `DTR_CLIENT_SECRET` | its secret (`client_secret_basic` or `_post`) |
//! | `DTR_CLIENT_KEY` | or: a PEM private key file, for `private_key_jwt` (RSA: RS256, EC: ES256/ES384, Ed25519: EdDSA) |
//! | `DTR_REDIRECT_URI` | the redirect URI registered for the client (where an example needs one) |
//! | `DTR_NOTIFICATION_ENDPOINT` | the ping URL the OP can reach (examples with a Ping Callback receiver) |
//! | `DTR_DRAFT` | `oidc` (default) or `ietf`: which Deferred Token Response draft to speak |
//! | `DTR_CLIENT_CERT`, `DTR_CLIENT_CERT_KEY` | a PEM client certificate chain and its key, for mutual TLS (the `fapi2` example) |
//! | `DTR_CA` | PEM trust roots added to the platform's (an OP with a private CA) |
//!
//! With neither `DTR_CLIENT_SECRET` nor `DTR_CLIENT_KEY`, the client is
//! public (`none`). Under `cargo test` the examples always use the mock OP.

// Each example uses a part of this module.
#![allow(dead_code)]

use std::error::Error;

use oidc_dtr::{CallbackResponse, PendingAuthorization, Redemption};
use oidc_dtr::{
    ClientAuth, DtrClient, DtrClientBuilder, client::AssertionAudience, jose::Algorithm,
};
use oidc_dtr::{DeferredAuthentication, Outcome, PollEvent, Profile, TokenSet, jose::SigningKey};
use oidc_dtr_testkit::{MockOp, OpConfig, OpProfiles, RegisteredClient};

/// The result type of the examples.
pub(crate) type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// How the client authenticates (no `Debug`: it holds a secret).
#[derive(Clone)]
enum Credentials {
    /// A client secret; the method is picked from the OP's metadata.
    Secret(String),
    /// Any other method (`private_key_jwt`, `none`).
    Auth(ClientAuth),
}

/// The OP an example talks to: the mock one, or a real one.
#[derive(Clone)]
pub(crate) struct Op {
    /// The mock OP, when no real OP is configured (the example plays the
    /// user's part at it); `None` for a real OP.
    pub(crate) mock: Option<MockOp>,
    issuer: String,
    client_id: String,
    credentials: Credentials,
    /// `DTR_REDIRECT_URI`, for a real OP.
    pub(crate) redirect_uri: Option<String>,
    /// `DTR_NOTIFICATION_ENDPOINT`, for a real OP.
    pub(crate) notification_endpoint: Option<String>,
}

impl Op {
    /// The real OP of the environment when `DTR_ISSUER` is set; otherwise a
    /// new mock OP with `config`, on which `client` is registered (and which
    /// speaks the draft `profile`).
    pub(crate) async fn start(
        config: OpConfig,
        client: RegisteredClient,
        profile: Profile,
    ) -> Result<Op> {
        Self::start_signing(config, client, profile, Algorithm::RS256).await
    }

    /// [`Op::start`], with a mock OP that signs its ID tokens with `alg`
    /// (FAPI 2.0 allows only PS256, ES256 and EdDSA).
    pub(crate) async fn start_signing(
        mut config: OpConfig,
        client: RegisteredClient,
        profile: Profile,
        alg: Algorithm,
    ) -> Result<Op> {
        if let Some(op) = Self::from_env()? {
            return Ok(op);
        }
        if profile == Profile::Ietf {
            config.profiles = OpProfiles::Ietf;
        }
        let credentials = credentials_of(&client);
        let client_id = client.client_id.clone();
        let mock = MockOp::builder()
            .config(config)
            .client(client)
            .signing_alg(alg)
            .start()
            .await?;
        Ok(Op {
            issuer: mock.issuer().to_owned(),
            mock: Some(mock),
            client_id,
            credentials,
            redirect_uri: None,
            notification_endpoint: None,
        })
    }

    /// The real OP of the environment when `DTR_ISSUER` is set; otherwise
    /// the mock OP that another process started at `issuer`, on which
    /// `client` is registered.
    pub(crate) fn at(issuer: String, client: &RegisteredClient) -> Result<Op> {
        if let Some(op) = Self::from_env()? {
            return Ok(op);
        }
        Ok(Op {
            mock: None,
            issuer,
            client_id: client.client_id.clone(),
            credentials: credentials_of(client),
            redirect_uri: None,
            notification_endpoint: None,
        })
    }

    /// A client builder with the issuer and the client's credentials set.
    pub(crate) fn client_builder(&self) -> DtrClientBuilder {
        let builder = DtrClient::builder()
            .issuer(&self.issuer)
            .client_id(&self.client_id);
        match &self.credentials {
            Credentials::Secret(s) => builder.client_secret(s),
            Credentials::Auth(a) => builder.client_auth(a.clone()),
        }
    }

    /// The OP's issuer identifier.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Whether this is the mock OP.
    pub(crate) fn is_mock(&self) -> bool {
        self.mock.is_some()
    }

    /// Sends the user to `url` and returns the query of the redirect back
    /// to the RP. The mock OP's simulated browser does it at once; for a
    /// real OP the user opens the URL and pastes where the browser landed.
    pub(crate) async fn user_signs_in(&self, url: &url::Url) -> Result<String> {
        if let Some(mock) = &self.mock {
            return Ok(mock.browse(url).await?.query().to_owned());
        }
        println!("Open this URL in a browser and sign in:\n  {url}");
        println!("Then paste the URL the browser was sent back to:");
        let line = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        })
        .await??;
        let back = url::Url::parse(line.trim())?;
        Ok(back.query().unwrap_or("").to_owned())
    }

    /// The real OP from `DTR_ISSUER` and friends; `None` when `DTR_ISSUER`
    /// is not set (and always under `cargo test`).
    fn from_env() -> Result<Option<Op>> {
        if cfg!(test) {
            return Ok(None);
        }
        let Some(issuer) = var("DTR_ISSUER") else {
            return Ok(None);
        };
        let client_id = var("DTR_CLIENT_ID").ok_or("DTR_ISSUER is set but DTR_CLIENT_ID is not")?;
        let credentials = match (var("DTR_CLIENT_SECRET"), var("DTR_CLIENT_KEY")) {
            (Some(secret), _) => Credentials::Secret(secret),
            (None, Some(path)) => Credentials::Auth(ClientAuth::PrivateKeyJwt {
                key: load_key(&path)?,
                audience: AssertionAudience::Issuer,
            }),
            (None, None) => Credentials::Auth(ClientAuth::None),
        };
        Ok(Some(Op {
            mock: None,
            issuer,
            client_id,
            credentials,
            redirect_uri: var("DTR_REDIRECT_URI"),
            notification_endpoint: var("DTR_NOTIFICATION_ENDPOINT"),
        }))
    }
}

/// The draft to speak: `DTR_DRAFT` (`oidc` or `ietf`), or `ietf` when the
/// command line has `--ietf`.
pub(crate) fn draft() -> Result<Profile> {
    if std::env::args().any(|a| a == "--ietf") {
        return Ok(Profile::Ietf);
    }
    match var("DTR_DRAFT").as_deref().map(str::to_ascii_lowercase) {
        None => Ok(Profile::Oidc),
        Some(d) if d == "oidc" => Ok(Profile::Oidc),
        Some(d) if d == "ietf" => Ok(Profile::Ietf),
        Some(d) => Err(format!("DTR_DRAFT={d}: expected `oidc` or `ietf`").into()),
    }
}

/// Takes the redirect back to the RP (its `query`) to a deferral or to
/// tokens, in either draft: OIDC acknowledges with a `deferred_code`, which
/// is exchanged; IETF sends a plain `code`, redeemed with
/// `completion_mode=deferred`.
pub(crate) async fn redeem(
    client: &DtrClient,
    pending: &PendingAuthorization,
    query: &str,
) -> Result<Redemption> {
    match client.callback(pending, query)? {
        CallbackResponse::Acknowledgment(ack) => {
            Ok(Redemption::Deferred(Box::new(client.exchange(ack).await?)))
        }
        CallbackResponse::Code(code) => Ok(client.redeem_code(code).await?),
        CallbackResponse::Error(e) => Err(e.into()),
        _ => Err("a response this version does not know".into()),
    }
}

/// Waits for the OP's decision on `auth`, printing its progress texts.
pub(crate) async fn wait_with_progress(
    client: &DtrClient,
    auth: &DeferredAuthentication,
) -> Result<Outcome<TokenSet>> {
    let mut events = client.subscribe();
    let id = auth.id().clone();
    let progress = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                PollEvent::Progress {
                    id: of,
                    description,
                } if of == id => println!("   progress: {description}"),
                PollEvent::Finished { id: of, .. } if of == id => break,
                _ => {}
            }
        }
    });
    let outcome = client.wait(auth.id()).await;
    progress.abort();
    let outcome = outcome?;
    // Taken: acknowledge it, so that it is not handed over again after a
    // restart.
    client.ack(auth.id()).await?;
    Ok(outcome)
}

/// Prints how an authentication ended.
pub(crate) fn print_outcome(outcome: &Outcome<TokenSet>) {
    match outcome {
        Outcome::Tokens(tokens) => println!(
            "Approved: user (sub) {}, token type {}",
            tokens.claims().subject(),
            tokens.token_type()
        ),
        Outcome::Denied { description } => println!("Denied: {description:?}"),
        other => println!("Ended without tokens: {}", other.kind()),
    }
}

/// A non-empty environment variable.
pub(crate) fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// How a registered mock client authenticates.
fn credentials_of(client: &RegisteredClient) -> Credentials {
    match &client.secret {
        Some(s) => Credentials::Secret(s.clone()),
        None => Credentials::Auth(ClientAuth::None),
    }
}

/// Loads the PEM private key at `path`, with the algorithm its kind takes.
fn load_key(path: &str) -> Result<SigningKey> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("DTR_CLIENT_KEY {path}: {e}"))?;
    [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ]
    .into_iter()
    .find_map(|alg| SigningKey::from_pem(alg, &pem).ok())
    .ok_or_else(|| format!("DTR_CLIENT_KEY {path}: not an RSA, EC or Ed25519 private key").into())
}
