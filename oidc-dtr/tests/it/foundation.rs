//! The first half of the flow (discovery, authorize, callback, exchange)
//! against the testkit OP.

use std::sync::Arc;
use std::time::Duration;

use oidc_dtr::error::{CallbackError, ConfigError, DiscoveryError, ErrorCode};
use oidc_dtr::secret::SecretHash;
use oidc_dtr::{
    CallbackResponse, ClientAuth, DtrClient, Error, ProviderMetadata,
    client::{Compat, ResponseMode, ResponseType},
};
use oidc_dtr::{UnixTime, time::ManualClock};
use oidc_dtr_testkit::{AuthorizeOutcome, Endpoint, MockOp, RegisteredClient};

const REDIRECT: &str = "http://127.0.0.1:9/callback";

async fn client(op: &MockOp) -> DtrClient {
    DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap()
}

async fn acknowledge(op: &MockOp, client: &DtrClient) -> oidc_dtr::Acknowledgment {
    let (url, pending) = client.authorize().build().unwrap();
    let cb = op.browse(&url).await.unwrap();
    match client.callback(&pending, cb.url.as_str()).unwrap() {
        CallbackResponse::Acknowledgment(a) => a,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn happy_path_query_mode() {
    let op = MockOp::start().await.unwrap();
    let client = client(&op).await;
    let (url, pending) = client
        .authorize()
        .scope("profile openid profile")
        .build()
        .unwrap();

    let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("response_type").as_deref(), Some("deferred_code"));
    assert_eq!(get("scope").as_deref(), Some("openid profile"));
    assert_eq!(get("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(get("state").unwrap().len(), 43);
    assert_eq!(get("nonce").unwrap().len(), 43);
    assert_eq!(get("response_mode").as_deref(), Some("query"));

    let cb = op.browse(&url).await.unwrap();
    let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, cb.query()).unwrap()
    else {
        panic!()
    };
    let auth = client.exchange(ack).await.unwrap();
    assert!(!auth.id().secret().is_empty());
    assert_eq!(auth.interval(), Duration::from_secs(5));
    assert_eq!(auth.nonce(), pending.nonce());
    assert_eq!(
        auth.expires_at(),
        Some(auth.issued_at().saturating_add(Duration::from_secs(3600)))
    );
    assert!(auth.notification_token_hash().is_none());

    let snap = op.authentication(auth.id()).unwrap();
    assert_eq!(snap.client_id, MockOp::CLIENT_ID);

    // The exchange request on the wire.
    let token_reqs = op.requests_to(Endpoint::Token);
    assert_eq!(token_reqs.len(), 1);
    let ex = &token_reqs[0];
    assert_eq!(
        ex.param("grant_type"),
        Some("urn:openid:params:grant-type:deferred")
    );
    assert!(ex.param("deferred_code").is_some());
    assert_eq!(
        ex.param("redirect_uri"),
        None,
        "not sent: not in the exchange"
    );
    assert_eq!(
        ex.param("code_verifier"),
        None,
        "not sent: not in the exchange"
    );
    assert_eq!(ex.param("client_secret"), None);
    assert!(ex.header("authorization").unwrap().starts_with("Basic "));
    assert_eq!(ex.header("accept"), Some("application/json"));
    assert_eq!(
        ex.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
}

#[tokio::test]
async fn happy_path_form_post() {
    let op = MockOp::start().await.unwrap();
    let client = client(&op).await;
    let (url, pending) = client
        .authorize()
        .response_mode(ResponseMode::FormPost)
        .build()
        .unwrap();
    let cb = op.browse(&url).await.unwrap();
    let body = cb.form_body.clone().expect("form_post body");
    // The query path refuses a form_post response.
    assert!(matches!(
        client.callback(&pending, &body),
        Err(Error::Callback(CallbackError::WrongResponseMode { .. }))
    ));
    let CallbackResponse::Acknowledgment(ack) =
        client.callback_form(&pending, body.as_bytes()).unwrap()
    else {
        panic!()
    };
    client.exchange(ack).await.unwrap();
}

#[tokio::test]
async fn client_secret_post_and_public_clients() {
    let op = MockOp::start().await.unwrap();
    let post = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_auth(ClientAuth::ClientSecretPost(MockOp::CLIENT_SECRET.into()))
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap();
    let ack = acknowledge(&op, &post).await;
    post.exchange(ack).await.unwrap();
    let r = op.requests_to(Endpoint::Token).pop().unwrap();
    assert_eq!(r.param("client_id"), Some(MockOp::CLIENT_ID));
    assert_eq!(r.param("client_secret"), Some(MockOp::CLIENT_SECRET));
    assert_eq!(r.header("authorization"), None);

    let public = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::PUBLIC_CLIENT_ID)
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap();
    let ack = acknowledge(&op, &public).await;
    public.exchange(ack).await.unwrap();
    let r = op.requests_to(Endpoint::Token).pop().unwrap();
    assert_eq!(r.param("client_id"), Some(MockOp::PUBLIC_CLIENT_ID));
    assert_eq!(r.param("client_secret"), None);
}

#[tokio::test]
async fn notification_token_is_fresh_strong_and_only_hashed() {
    let op = MockOp::start().await.unwrap();
    let client = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .notification_endpoint("http://127.0.0.1:9/dtr/ping")
        .build()
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let ack = acknowledge(&op, &client).await;
        let auth = client.exchange(ack).await.unwrap();
        let sent = op
            .authentication(auth.id())
            .unwrap()
            .notification_token
            .unwrap();
        assert!(sent.len() >= 43, "at least 256 bits, base64url");
        assert!(
            sent.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let hash = auth.notification_token_hash().unwrap();
        assert!(hash.matches(sent.as_bytes()));
        assert_ne!(*hash, SecretHash::of(b"something else"));
        // The token itself is not in the serialised authentication.
        let json = serde_json::to_string(&auth).unwrap();
        assert!(!json.contains(&sent));
        tokens.push(sent);
    }
    assert_ne!(tokens[0], tokens[1]);
}

#[tokio::test]
async fn compat_switches_send_redirect_uri_and_verifier() {
    let op = MockOp::start().await.unwrap();
    let compat = Compat::default()
        .exchange_send_redirect_uri(true)
        .exchange_send_code_verifier(true);
    let client = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .compat(compat)
        .build()
        .await
        .unwrap();
    let ack = acknowledge(&op, &client).await;
    let verifier = ack.pending().pkce_verifier().secret().to_owned();
    client.exchange(ack).await.unwrap();
    let r = op.requests_to(Endpoint::Token).pop().unwrap();
    assert_eq!(r.param("redirect_uri"), Some(REDIRECT));
    assert_eq!(r.param("code_verifier"), Some(verifier.as_str()));
}

#[tokio::test]
async fn deferred_code_is_single_use() {
    let op = MockOp::start().await.unwrap();
    let client = client(&op).await;
    let ack = acknowledge(&op, &client).await;
    client.exchange(ack.clone()).await.unwrap();
    let err = client.exchange(ack).await.unwrap_err();
    let e = err.oauth().expect("an OAuth error");
    assert_eq!(e.code, ErrorCode::InvalidGrant);
    assert_eq!(e.status.unwrap().as_u16(), 400);
}

#[tokio::test]
async fn wrong_secret_is_invalid_client() {
    let op = MockOp::start().await.unwrap();
    let good = client(&op).await;
    let ack = acknowledge(&op, &good).await;
    let bad = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret("wrong")
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap();
    let err = bad.exchange(ack).await.unwrap_err();
    assert_eq!(err.oauth().unwrap().code, ErrorCode::InvalidClient);
    assert_eq!(err.oauth().unwrap().status.unwrap().as_u16(), 401);
    assert!(!err.to_string().contains("wrong"));
}

#[tokio::test]
async fn code_of_another_client_is_invalid_grant() {
    let op = MockOp::builder()
        .client(RegisteredClient::confidential("other", "other-secret"))
        .start()
        .await
        .unwrap();
    let mine = client(&op).await;
    let ack = acknowledge(&op, &mine).await;
    // Replay the code under another client's credentials (the pending state
    // is rebuilt for that client to get past the SDK's own check).
    let other = DtrClient::builder()
        .issuer(op.issuer())
        .client_id("other")
        .client_secret("other-secret")
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap();
    let mut pending_json: serde_json::Value = serde_json::to_value(ack.pending()).unwrap();
    pending_json["client_id"] = "other".into();
    let pending: oidc_dtr::PendingAuthorization = serde_json::from_value(pending_json).unwrap();
    let q = format!(
        "deferred_code={}&state={}&iss={}",
        ack.deferred_code().secret(),
        pending.state().secret(),
        op.issuer()
    );
    let CallbackResponse::Acknowledgment(forged) = other.callback(&pending, &q).unwrap() else {
        panic!()
    };
    let err = other.exchange(forged).await.unwrap_err();
    assert_eq!(err.oauth().unwrap().code, ErrorCode::InvalidGrant);
    // And an acknowledgment for one client cannot be exchanged by another.
    let ack2 = acknowledge(&op, &mine).await;
    assert!(matches!(
        other.exchange(ack2).await,
        Err(Error::Callback(CallbackError::WrongClient))
    ));
}

#[tokio::test]
async fn op_error_redirect() {
    let op = MockOp::start().await.unwrap();
    op.configure(|c| {
        c.authorize_outcome = AuthorizeOutcome::Error {
            error: "access_denied".into(),
            description: "The user cancelled".into(),
        }
    });
    let client = client(&op).await;
    let (url, pending) = client.authorize().build().unwrap();
    let cb = op.browse(&url).await.unwrap();
    match client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Error(e) => {
            assert_eq!(e.code, ErrorCode::AccessDenied);
            assert_eq!(e.description.as_deref(), Some("The user cancelled"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn deferred_code_code_may_get_a_plain_code() {
    let op = MockOp::start().await.unwrap();
    let client = client(&op).await;
    op.configure(|c| c.authorize_outcome = AuthorizeOutcome::Code);
    let (url, pending) = client
        .authorize()
        .response_type(ResponseType::DeferredCodeOrCode)
        .build()
        .unwrap();
    assert!(
        url.query_pairs()
            .any(|(k, v)| k == "response_type" && v == "deferred_code code")
    );
    let cb = op.browse(&url).await.unwrap();
    assert!(matches!(
        client.callback(&pending, cb.query()).unwrap(),
        CallbackResponse::Code(_)
    ));
    // The same OP defers when only deferred_code was requested.
    let (url, pending) = client.authorize().build().unwrap();
    let cb = op.browse(&url).await.unwrap();
    assert!(matches!(
        client.callback(&pending, cb.query()).unwrap(),
        CallbackResponse::Acknowledgment(_)
    ));
}

#[tokio::test]
async fn iss_required_when_advertised() {
    let op = MockOp::start().await.unwrap();
    op.configure(|c| c.include_iss = false);
    let client = client(&op).await;
    let (url, pending) = client.authorize().build().unwrap();
    let cb = op.browse(&url).await.unwrap();
    assert!(matches!(
        client.callback(&pending, cb.query()),
        Err(Error::Callback(CallbackError::MissingIssuer))
    ));
    // Not advertised: absence is fine.
    op.configure(|c| c.advertise_iss_parameter = false);
    let client = self::client(&op).await;
    let (url, pending) = client.authorize().build().unwrap();
    let cb = op.browse(&url).await.unwrap();
    assert!(client.callback(&pending, cb.query()).is_ok());
}

#[tokio::test]
async fn callback_state_is_checked_against_the_session() {
    let op = MockOp::start().await.unwrap();
    let client = client(&op).await;
    let (url_a, _pending_a) = client.authorize().build().unwrap();
    let (_url_b, pending_b) = client.authorize().build().unwrap();
    let cb = op.browse(&url_a).await.unwrap();
    assert!(matches!(
        client.callback(&pending_b, cb.query()),
        Err(Error::Callback(CallbackError::StateMismatch))
    ));
}

#[tokio::test]
async fn discovery_falls_back_to_rfc8414() {
    let op = MockOp::start().await.unwrap();
    op.configure(|c| c.serve_openid_configuration = false);
    let client = client(&op).await;
    assert_eq!(client.issuer(), op.issuer());
    let paths: Vec<String> = op
        .requests_to(Endpoint::Discovery)
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        paths,
        [
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server"
        ]
    );
}

#[tokio::test]
async fn discovery_rejects_another_issuer() {
    let op = MockOp::start().await.unwrap();
    op.configure(|c| c.metadata_issuer = Some("https://evil.example".into()));
    let err = DtrClient::builder()
        .issuer(op.issuer())
        .client_id("c")
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap_err();
    match err {
        Error::Discovery(DiscoveryError::IssuerMismatch { found, .. }) => {
            assert_eq!(found, "https://evil.example")
        }
        other => panic!("{other:?}"),
    }
    // No fallback after a mismatch: one request only.
    assert_eq!(op.requests_to(Endpoint::Discovery).len(), 1);
}

#[tokio::test]
async fn discovery_with_nothing_served() {
    let op = MockOp::start().await.unwrap();
    op.configure(|c| {
        c.serve_openid_configuration = false;
        c.serve_oauth_metadata = false;
    });
    let err = DtrClient::builder()
        .issuer(op.issuer())
        .client_id("c")
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap_err();
    match &err {
        Error::Discovery(DiscoveryError::Unavailable { tried, .. }) => assert_eq!(tried.len(), 2),
        other => panic!("{other:?}"),
    }
    // The cause is the error's source, not repeated in its text.
    let source = std::error::Error::source(&err).expect("the last failure is the source");
    assert!(source.to_string().contains("404"), "{source}");
    assert!(!err.to_string().contains("404"), "{err}");
    // Errors are Clone (the cause is shared).
    let copy = err.clone();
    assert_eq!(copy.to_string(), err.to_string());
}

#[tokio::test]
async fn op_without_dtr_advertisement() {
    let op = MockOp::start().await.unwrap();
    op.configure(|c| c.advertise_dtr = false);
    let builder = || {
        DtrClient::builder()
            .issuer(op.issuer())
            .client_id(MockOp::CLIENT_ID)
            .client_secret(MockOp::CLIENT_SECRET)
            .redirect_uri(REDIRECT)
    };
    let err = builder().build().await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`deferred_code` in `response_types_supported`"),
        "{msg}"
    );
    assert!(
        msg.contains("`urn:openid:params:grant-type:deferred` in `grant_types_supported`"),
        "{msg}"
    );
    // The explicit opt-out.
    let client = builder().allow_unadvertised_dtr().build().await.unwrap();
    let ack = acknowledge(&op, &client).await;
    client.exchange(ack).await.unwrap();
}

#[tokio::test]
async fn explicit_metadata_skips_discovery() {
    let op = MockOp::start().await.unwrap();
    let md = ProviderMetadata::from_json(op.metadata_json().to_string().as_bytes()).unwrap();
    let client = DtrClient::builder()
        .metadata(md.clone())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap();
    assert!(op.requests_to(Endpoint::Discovery).is_empty());
    let ack = acknowledge(&op, &client).await;
    client.exchange(ack).await.unwrap();

    // Explicit metadata must not point at plain http on a remote host.
    let remote = ProviderMetadata::new(
        "https://op.example",
        "https://op.example/authorize".parse().unwrap(),
        "http://op.example/token".parse().unwrap(),
    );
    let err = DtrClient::builder()
        .metadata(remote)
        .client_id("c")
        .redirect_uri(REDIRECT)
        .allow_unadvertised_dtr()
        .build()
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Config(ConfigError::InsecureUrl {
            field: "token_endpoint"
        })
    ));
}

#[tokio::test]
async fn builder_reports_missing_settings() {
    let e = DtrClient::builder()
        .redirect_uri(REDIRECT)
        .issuer("https://x")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        Error::Config(ConfigError::Missing("client_id"))
    ));
    let e = DtrClient::builder()
        .client_id("c")
        .issuer("https://x")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        Error::Config(ConfigError::Missing("redirect_uri"))
    ));
    let e = DtrClient::builder()
        .client_id("c")
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Config(ConfigError::Missing("issuer"))));
    let e = DtrClient::builder()
        .client_id("c")
        .redirect_uri(REDIRECT)
        .issuer("http://op.example")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        Error::Config(ConfigError::InsecureUrl { field: "issuer" })
    ));
}

#[tokio::test]
async fn deadline_is_absolute_from_the_injected_clock() {
    let op = MockOp::start().await.unwrap();
    op.configure(|c| {
        c.expires_in = Some(86_400);
        c.interval = None;
    });
    let clock = Arc::new(ManualClock::new(UnixTime::from_secs(1_900_000_000)));
    let client = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let (url, pending) = client.authorize().max_age(600).build().unwrap();
    assert_eq!(pending.created_at(), UnixTime::from_secs(1_900_000_000));
    clock.advance(Duration::from_secs(30));
    let cb = op.browse(&url).await.unwrap();
    let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, cb.query()).unwrap()
    else {
        panic!()
    };
    let auth = client.exchange(ack).await.unwrap();
    assert_eq!(auth.issued_at(), UnixTime::from_secs(1_900_000_030));
    assert_eq!(
        auth.expires_at(),
        Some(UnixTime::from_secs(1_900_000_030 + 86_400))
    );
    assert_eq!(
        auth.interval(),
        Duration::from_secs(5),
        "default when the OP sends none"
    );
    assert_eq!(auth.max_age(), Some(600));
    assert_eq!(auth.requested_at(), UnixTime::from_secs(1_900_000_000));
    // Survives a serde round trip unchanged.
    let back: oidc_dtr::DeferredAuthentication =
        serde_json::from_str(&serde_json::to_string(&auth).unwrap()).unwrap();
    assert_eq!(back, auth);
}

#[tokio::test]
async fn debug_output_holds_no_secrets() {
    let op = MockOp::start().await.unwrap();
    let client = client(&op).await;
    let (_url, pending) = client.authorize().build().unwrap();
    let ack = acknowledge(&op, &client).await;
    let code = ack.deferred_code().secret().to_owned();
    let dbg_ack = format!("{ack:?}");
    let auth = client.exchange(ack).await.unwrap();
    for (dbg, secrets) in [
        (
            format!("{pending:?}"),
            vec![
                pending.state().secret(),
                pending.nonce().secret(),
                pending.pkce_verifier().secret(),
            ],
        ),
        (dbg_ack, vec![code.as_str()]),
        (
            format!("{auth:?}"),
            vec![auth.id().secret(), auth.nonce().secret()],
        ),
        (format!("{client:?}"), vec![MockOp::CLIENT_SECRET]),
    ] {
        for s in secrets {
            assert!(!dbg.contains(s), "{dbg} contains a secret");
        }
    }
}
