//! `dtr demo`: the whole flow against the testkit's mock OP, started in
//! this process, with dtr's own loopback listener, store and progress.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

use crate::display::Ui;
use crate::error::{CliError, exit};
use crate::flow::{self, Browser, WaitOpts};
use crate::lib_api::{AutoApprove, MockOp, OpConfig, OpProfiles, Profile};
use crate::settings::{AssuranceSpec, Mode, VerifySettings};
use crate::state::{AuthSpec, ClientSpec, StateDir};

/// What the mock OP decides after its review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Approve (exit 0).
    Approve,
    /// Deny (exit 3).
    Deny,
    /// Let the verification expire at the OP (exit 4).
    Expire,
    /// Never decide: dtr's deadline passes (exit 5).
    None,
}

/// Runs the demo; the state lives in a temporary directory removed at the end.
pub(crate) async fn run(
    ui: Ui,
    approve_after: Duration,
    decision: Decision,
    draft: Option<Profile>,
    device: bool,
) -> Result<u8, CliError> {
    let draft = if device { Some(Profile::Ietf) } else { draft };
    let ietf = draft == Some(Profile::Ietf);
    let mut config = OpConfig::default();
    if ietf {
        config.profiles = OpProfiles::Ietf;
    }
    config.interval = Some(1);
    config.expires_in = Some(300);
    match decision {
        Decision::Approve => config.auto_approve = AutoApprove::AfterDelay(approve_after),
        Decision::Deny | Decision::Expire => config.auto_approve = AutoApprove::Never,
        Decision::None => {
            // The OP's own lifetime is the deadline; it never says expired_token.
            config.auto_approve = AutoApprove::Never;
            config.expires_in = Some(approve_after.as_secs().max(1));
            config.expire_authentications = false;
        }
    }
    config.require_dpop = true;
    config.progress_script = vec![
        "Documents received; waiting for a reviewer".into(),
        "A reviewer is checking the passport".into(),
        "Comparing the selfie with the passport photo".into(),
        "Final checks".into(),
    ];
    // The mock OP's identity-assurance support (on by default) answers the
    // typed verified-claims request below with its persona's verified
    // claims, under the trust framework and evidence asked for.
    config.identity_assurance = true;
    config.extra_claims = serde_json::json!({
        "name": "Max Meier",
        "email": "max@example.com",
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let op = MockOp::builder()
        .config(config)
        .start()
        .await
        .map_err(|e| {
            CliError::runtime(
                format!("starting the mock OP: {e}"),
                "check that 127.0.0.1 is usable",
            )
        })?;
    ui.say(format!(
        "dtr demo: a mock OpenID Provider is running at {} (in this process).\n\
         It asks for documents in the \"browser\", reviews them for {}, then {}.\n\
         The same steps run against a real OP with `dtr verify --issuer URL --client-id ID`.\n",
        op.issuer(),
        crate::display::fmt_duration(approve_after),
        match decision {
            Decision::Approve => "approves",
            Decision::Deny => "denies (exit 3)",
            Decision::Expire => "lets it expire (exit 4)",
            Decision::None => "never decides: the deadline passes (exit 5)",
        }
    ));
    if matches!(decision, Decision::Deny | Decision::Expire) {
        spawn_decision(op.clone(), approve_after, decision);
    }
    let dir = std::env::temp_dir().join(format!(
        "dtr-demo-{}-{}",
        std::process::id(),
        crate::display::now_secs()
    ));
    let state = StateDir::resolve(Some(dir.clone()))?;
    let settings = VerifySettings {
        client: ClientSpec {
            issuer: op.issuer().to_owned(),
            client_id: MockOp::PUBLIC_CLIENT_ID.to_owned(),
            auth: AuthSpec::None,
            dpop: true,
            // The IETF profile cancels at the AS's revocation endpoint,
            // found in its metadata.
            cancel_endpoint: (!ietf).then(|| op.url("/df-authentication/cancel").to_string()),
            redirect_uri: String::new(),
            draft,
            par: false,
            request_object_key: None,
            client_cert: None,
            ca: None,
            fapi2: false,
        },
        scope: Some("profile email".into()),
        claims: None,
        // As `--verified-claims given_name,family_name,birthdate
        // --trust-framework eidas --assurance-level substantial
        // --evidence electronic_record --verification-max-age 31536000`.
        assurance: Some(AssuranceSpec {
            claims: vec![
                "given_name".into(),
                "family_name".into(),
                "birthdate".into(),
            ],
            trust_frameworks: vec!["eidas".into()],
            assurance_level: Some("substantial".into()),
            max_age: Some(365 * 86_400),
            evidence: vec!["electronic_record".into()],
        }),
        acr_values: None,
        login_hint: None,
        max_age: None,
        authorization_details: None,
        response_mode: Mode::Query,
        redirect_port: 0,
    };
    let opts = WaitOpts {
        no_wait: false,
        ack: true,
        login_timeout: Duration::from_secs(60),
        state_flag: String::new(),
        device,
        open_browser: false,
    };
    let r = flow::verify(ui, &state, settings, None, Browser::Mock(op), &opts).await;
    let _ = std::fs::remove_dir_all(&dir);
    let code = r?;
    if code == exit::OK {
        ui.say("\ndtr demo: done. The ID token's signature, issuer, audience, expiry, nonce and DPoP binding were checked.");
    }
    Ok(code)
}

/// Denies or expires the demo's verification `after` its deferral began.
fn spawn_decision(op: MockOp, after: Duration, decision: Decision) {
    tokio::spawn(async move {
        let id = loop {
            if let Some(a) = op.authentications().into_iter().next() {
                break a.deferred_auth_id;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        tokio::time::sleep(after).await;
        if decision == Decision::Deny {
            op.deny(&id, Some("the mock OP's reviewer rejected the documents"));
        } else {
            op.expire(&id);
        }
    });
}

/// Plays the browser's last step: sends the OP's redirect (or auto-posted
/// form) to the loopback listener.
pub(crate) async fn deliver(target: &Url, form_body: Option<&str>) -> std::io::Result<()> {
    let host = target.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = target.port_or_known_default().unwrap_or(80);
    let mut path = target.path().to_owned();
    let req = match form_body {
        Some(body) => format!(
            "POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/x-www-form-urlencoded\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
        None => {
            if let Some(q) = target.query() {
                path.push('?');
                path.push_str(q);
            }
            format!("GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\nconnection: close\r\n\r\n")
        }
    };
    let mut s = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    s.write_all(req.as_bytes()).await?;
    let mut sink = Vec::new();
    s.read_to_end(&mut sink).await?;
    Ok(())
}
