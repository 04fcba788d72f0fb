//! Pushed Authorization Requests (RFC 9126): every response type the SDK
//! sends is pushed, the browser gets only `client_id` and `request_uri`, a
//! DPoP-bound push sends `dpop_jkt` and a proof of the same key, a
//! `request_uri` is never reused, and the PAR endpoint's failures are typed.

use std::time::Duration;

use oidc_dtr::{
    CallbackResponse, DtrClient, Error, ProviderMetadata, Redemption,
    client::{DpopConfig, ResponseType},
    error::{ConfigError, ErrorCode, ParError},
};
use oidc_dtr_testkit::{AuthorizeOutcome, Endpoint, MockOp, OpConfig};
use url::Url;

use crate::support::flow::{REDIRECT, T0, ietf_config, setup, setup_with};
use crate::support::{Canned, CannedServer, json_response};

fn query_names(url: &Url) -> Vec<String> {
    url.query_pairs().map(|(k, _)| k.into_owned()).collect()
}

fn par_requests(op: &MockOp) -> Vec<oidc_dtr_testkit::LoggedRequest> {
    op.requests_to(Endpoint::PushedAuthorization)
}

#[tokio::test]
async fn deferred_code_is_pushed_and_the_redirect_carries_only_the_request_uri() {
    let s = setup_with(OpConfig::default(), |b| {
        b.pushed_authorization_requests(true)
    })
    .await;
    assert!(s.client.pushes_requests());
    let (url, pending) = s.client.authorize().scope("profile").push().await.unwrap();
    assert_eq!(query_names(&url), ["client_id", "request_uri"]);
    assert!(
        url.query_pairs()
            .any(|(k, v)| k == "request_uri" && v.starts_with("urn:ietf:params:oauth:request_uri:"))
    );
    assert!(pending.is_pushed());
    // The mock's `expires_in` is 60 s, counted from the request.
    assert_eq!(
        pending.request_uri_expires_at(),
        Some(T0.saturating_add(Duration::from_secs(60)))
    );
    let pushed = par_requests(&s.op);
    assert_eq!(pushed.len(), 1);
    let p = &pushed[0];
    assert_eq!(p.param("response_type"), Some("deferred_code"));
    assert_eq!(p.param("state"), Some(pending.state().secret()));
    assert_eq!(p.param("code_challenge_method"), Some("S256"));
    assert_eq!(p.param("scope"), Some("openid profile"));
    // Authenticated as at the token endpoint (Basic).
    assert!(
        p.header("authorization")
            .is_some_and(|h| h.starts_with("Basic "))
    );
    // The OP processed the pushed parameters: the flow completes.
    let cb = s.op.browse(&url).await.unwrap();
    let ack = match s.client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Acknowledgment(a) => a,
        other => panic!("{other:?}"),
    };
    let auth = s.client.exchange(ack).await.unwrap();
    assert!(s.op.authentication(auth.id()).is_some());
}

#[tokio::test]
async fn deferred_code_or_code_is_pushed() {
    let mut cfg = OpConfig::default();
    cfg.authorize_outcome = AuthorizeOutcome::Code;
    let s = setup_with(cfg, |b| b.pushed_authorization_requests(true)).await;
    let (url, pending) = s
        .client
        .authorize()
        .response_type(ResponseType::DeferredCodeOrCode)
        .push()
        .await
        .unwrap();
    assert_eq!(query_names(&url), ["client_id", "request_uri"]);
    assert_eq!(
        par_requests(&s.op)[0].param("response_type"),
        Some("deferred_code code")
    );
    let cb = s.op.browse(&url).await.unwrap();
    let code = match s.client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Code(c) => c,
        other => panic!("{other:?}"),
    };
    let tokens = s.client.exchange_code(code).await.unwrap();
    assert!(!tokens.claims().subject().is_empty());
}

#[tokio::test]
async fn the_ietf_code_request_is_pushed() {
    let s = setup_with(ietf_config(), |b| b.pushed_authorization_requests(true)).await;
    let (url, pending) = s.client.authorize().build_or_push().await.unwrap();
    assert_eq!(query_names(&url), ["client_id", "request_uri"]);
    let p = &par_requests(&s.op)[0];
    assert_eq!(p.param("response_type"), Some("code"));
    assert_eq!(p.param("completion_mode"), Some("deferred"));
    let cb = s.op.browse(&url).await.unwrap();
    let code = match s.client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Code(c) => c,
        other => panic!("{other:?}"),
    };
    match s.client.redeem_code(code).await.unwrap() {
        Redemption::Deferred(_) | Redemption::Tokens(_) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_dpop_bound_push_sends_dpop_jkt_and_the_code_is_bound_to_that_key() {
    let s = setup_with(OpConfig::default(), |b| {
        b.pushed_authorization_requests(true)
            .dpop(DpopConfig::enabled())
    })
    .await;
    let (url, pending) = s.client.authorize().push().await.unwrap();
    let jkt = pending.dpop_jkt().expect("a DPoP-bound push").to_owned();
    let p = &par_requests(&s.op)[0];
    assert_eq!(p.param("dpop_jkt"), Some(jkt.as_str()));
    assert!(p.header("dpop").is_some(), "the push carries a DPoP proof");
    // The pending authorization (kept in the session) keeps the key; its
    // Debug shows the thumbprint, never the private key.
    let json = serde_json::to_string(&pending).unwrap();
    let stored = serde_json::to_value(&pending).unwrap()["dpop_key"].clone();
    let debug = format!("{pending:?}");
    assert!(debug.contains(&jkt), "{debug}");
    let private: Vec<String> = match &stored {
        serde_json::Value::Object(m) => m
            .values()
            .filter_map(|v| v.as_str())
            .filter(|v| v.len() > 60)
            .map(str::to_owned)
            .collect(),
        other => panic!("{other:?}"),
    };
    assert!(!private.is_empty(), "{stored}");
    assert!(private.iter().all(|p| !debug.contains(p.as_str())));
    let pending: oidc_dtr::PendingAuthorization = serde_json::from_str(&json).unwrap();
    assert_eq!(pending.dpop_jkt(), Some(jkt.as_str()));
    let cb = s.op.browse(&url).await.unwrap();
    let ack = match s.client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Acknowledgment(a) => a,
        other => panic!("{other:?}"),
    };
    // The exchange is signed with the bound key (the OP refuses any other).
    let auth = s.client.exchange(ack).await.unwrap();
    assert_eq!(s.op.dpop_binding(auth.id()).as_deref(), Some(jkt.as_str()));
}

#[tokio::test]
async fn a_request_uri_is_never_reused() {
    let s = setup_with(OpConfig::default(), |b| {
        b.pushed_authorization_requests(true)
    })
    .await;
    let (url1, _) = s.client.authorize().push().await.unwrap();
    let (url2, _) = s.client.authorize().push().await.unwrap();
    assert_ne!(url1, url2, "each authorization request pushes again");
    assert_eq!(par_requests(&s.op).len(), 2);
    s.op.browse(&url1).await.unwrap();
    // The OP accepts a request_uri once.
    let again = s.op.browse(&url1).await;
    assert!(again.is_err(), "{again:?}");
}

#[tokio::test]
async fn an_op_that_requires_par_makes_the_client_push() {
    let mut cfg = OpConfig::default();
    cfg.require_pushed_authorization_requests = true;
    let s = setup(cfg).await;
    assert!(s.client.metadata().require_pushed_authorization_requests);
    assert!(s.client.pushes_requests());
    match s.client.authorize().build() {
        Err(Error::Config(ConfigError::Invalid { field, .. })) => {
            assert_eq!(field, "pushed_authorization_requests")
        }
        other => panic!("{other:?}"),
    }
    let (url, _) = s.client.authorize().build_or_push().await.unwrap();
    assert_eq!(query_names(&url), ["client_id", "request_uri"]);
    // The OP refuses a request that was not pushed.
    let s2 = setup(OpConfig::default()).await;
    let (front, _) = s2.client.authorize().build().unwrap();
    s.op.configure(|c| c.require_pushed_authorization_requests = true);
    let direct = front.as_str().replace(s2.op.issuer(), s.op.issuer());
    assert!(s.op.browse(&Url::parse(&direct).unwrap()).await.is_err());
}

/// A client whose metadata sends pushes to a canned server.
async fn client_with_par_endpoint(par: &CannedServer) -> DtrClient {
    let md = ProviderMetadata::new(
        "https://op.example",
        Url::parse("https://op.example/authorize").unwrap(),
        Url::parse("https://op.example/token").unwrap(),
    )
    .with_response_types(["deferred_code"])
    .with_grant_types(["urn:openid:params:grant-type:deferred"])
    .with_pushed_authorization_request_endpoint(Url::parse(&par.url("/par")).unwrap(), false);
    DtrClient::builder()
        .metadata(md)
        .client_id("c1")
        .client_secret("s3cret")
        .redirect_uri(REDIRECT)
        .pushed_authorization_requests(true)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn par_failures_are_typed() {
    // 201 without request_uri.
    let par = CannedServer::start(vec![Canned::Raw(json_response(
        "201 Created",
        r#"{"expires_in":60}"#,
    ))])
    .await;
    let client = client_with_par_endpoint(&par).await;
    match client.authorize().push().await {
        Err(Error::PushedAuthorization(ParError::Malformed { reason, .. })) => {
            assert!(reason.contains("request_uri"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // The push was a form POST with the client's authentication.
    let raw = par.requests.lock().unwrap()[0].clone();
    assert!(raw.starts_with("POST /par"), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("authorization: basic "),
        "{raw}"
    );
    assert!(raw.contains("response_type=deferred_code"), "{raw}");

    // 200 instead of 201.
    let par = CannedServer::start(vec![Canned::Raw(json_response(
        "200 OK",
        r#"{"request_uri":"urn:x","expires_in":60}"#,
    ))])
    .await;
    let client = client_with_par_endpoint(&par).await;
    match client.authorize().push().await {
        Err(Error::PushedAuthorization(ParError::UnexpectedStatus { status, .. })) => {
            assert_eq!(status, 200)
        }
        other => panic!("{other:?}"),
    }

    // An OAuth error.
    let par = CannedServer::start(vec![Canned::Raw(json_response(
        "400 Bad Request",
        r#"{"error":"invalid_request","error_description":"bad scope"}"#,
    ))])
    .await;
    let client = client_with_par_endpoint(&par).await;
    let e = client.authorize().push().await.unwrap_err();
    match &e {
        Error::PushedAuthorization(ParError::Refused { error, endpoint }) => {
            assert_eq!(error.code, ErrorCode::InvalidRequest);
            assert!(endpoint.ends_with("/par"), "{endpoint}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.is_retryable());
    assert_eq!(e.oauth().unwrap().code, ErrorCode::InvalidRequest);
}

#[tokio::test]
async fn pushing_without_an_endpoint_is_refused() {
    let md = ProviderMetadata::new(
        "https://op.example",
        Url::parse("https://op.example/authorize").unwrap(),
        Url::parse("https://op.example/token").unwrap(),
    )
    .with_response_types(["deferred_code"])
    .with_grant_types(["urn:openid:params:grant-type:deferred"]);
    let client = DtrClient::builder()
        .metadata(md)
        .client_id("c1")
        .client_secret("s3cret")
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap();
    assert!(!client.pushes_requests());
    assert!(matches!(
        client.authorize().push().await,
        Err(Error::PushedAuthorization(ParError::NoEndpoint))
    ));
    // Without PAR, build_or_push is build.
    let (url, pending) = client.authorize().build_or_push().await.unwrap();
    assert!(url.query_pairs().any(|(k, _)| k == "state"));
    assert!(!pending.is_pushed());
}
