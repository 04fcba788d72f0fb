//! The FAPI 2.0 mode: what it refuses at build time (each with what to
//! change) and what it enforces at run time.

use std::sync::Arc;
use std::time::Duration;

use oidc_dtr::{
    CallbackResponse, ClientAuth, DtrClient, DtrClientBuilder, Error, Outcome, ProviderMetadata,
    client::{AssertionAudience, DpopConfig, ResponseType},
    error::{CallbackError, ConfigError},
    jose::{Algorithm, SigningKey},
    time::ManualClock,
    tokens::ValidationOptions,
};
use oidc_dtr_testkit::{
    AuthorizeOutcome, AutoApprove, Endpoint, MockOp, OpConfig, RegisteredClient,
};

use crate::support::flow::{REDIRECT, T0, run_to_outcome};

const CLIENT: &str = "fapi-client";

async fn op_with(config: OpConfig, alg: Algorithm, clock: &Arc<ManualClock>) -> MockOp {
    MockOp::builder()
        .config(config)
        .clock(clock.clone())
        .signing_alg(alg)
        .start()
        .await
        .unwrap()
}

fn base(op: &MockOp, clock: &Arc<ManualClock>) -> DtrClientBuilder {
    DtrClient::builder()
        .issuer(op.issuer())
        .client_id(CLIENT)
        .redirect_uri(REDIRECT)
        .clock(clock.clone())
        .fapi2()
}

fn es256() -> SigningKey {
    SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("fapi-1")
}

async fn refusal(b: DtrClientBuilder) -> (String, String) {
    match b.build().await {
        Err(Error::Config(e @ ConfigError::Fapi2 { .. })) => {
            let ConfigError::Fapi2 { section, .. } = &e else {
                unreachable!()
            };
            (section.to_string(), e.to_string())
        }
        other => panic!("expected a FAPI 2.0 refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn fapi2_refuses_what_the_profile_forbids_at_build_time() {
    let clock = Arc::new(ManualClock::new(T0));
    let op = op_with(OpConfig::default(), Algorithm::ES256, &clock).await;

    let (section, msg) = refusal(base(&op, &clock).client_secret("s3cret")).await;
    assert_eq!(section, "§5.3.3.1");
    assert!(
        msg.contains("client secrets") && msg.contains("private_key_jwt"),
        "{msg}"
    );

    let (_, msg) = refusal(base(&op, &clock).client_auth(ClientAuth::ClientSecretPost(
        oidc_dtr::secret::ClientSecret::new("s3cret"),
    )))
    .await;
    assert!(msg.contains("client_secret_post"), "{msg}");

    let (_, msg) = refusal(base(&op, &clock)).await;
    assert!(
        msg.contains("public client") && msg.contains("private_key_jwt"),
        "{msg}"
    );

    let rs = SigningKey::generate(Algorithm::RS256).unwrap();
    let (section, msg) =
        refusal(base(&op, &clock).client_auth(ClientAuth::private_key_jwt(rs.clone()))).await;
    assert_eq!(section, "§5.4");
    assert!(
        msg.contains("RS256") && msg.contains("PS256, ES256 or EdDSA"),
        "{msg}"
    );

    let (_, msg) = refusal(base(&op, &clock).client_auth(ClientAuth::PrivateKeyJwt {
        key: es256(),
        audience: AssertionAudience::Both,
    }))
    .await;
    assert!(
        msg.contains("aud") && msg.contains("AssertionAudience::Issuer"),
        "{msg}"
    );

    let (_, msg) = refusal(
        base(&op, &clock)
            .client_auth(ClientAuth::private_key_jwt(es256()))
            .dpop(DpopConfig::disabled()),
    )
    .await;
    assert!(
        msg.contains("sender constraint") && msg.contains("DPoP"),
        "{msg}"
    );

    let (_, msg) = refusal(
        base(&op, &clock)
            .client_auth(ClientAuth::private_key_jwt(es256()))
            .request_object_signing_key(rs),
    )
    .await;
    assert!(msg.contains("RS256 for request objects"), "{msg}");

    let (_, msg) = refusal(
        base(&op, &clock)
            .client_auth(ClientAuth::private_key_jwt(es256()))
            .validation(
                ValidationOptions::default().algorithms([Algorithm::RS256, Algorithm::ES256]),
            ),
    )
    .await;
    assert!(msg.contains("RS256 for ID tokens"), "{msg}");

    let (_, msg) = refusal(
        base(&op, &clock)
            .client_auth(ClientAuth::private_key_jwt(es256()))
            .dpop(DpopConfig::enabled().algorithm(Algorithm::RS256)),
    )
    .await;
    assert!(msg.contains("RS256 for DPoP"), "{msg}");

    // An OP without a PAR endpoint.
    let md = ProviderMetadata::new(op.issuer(), op.url("/authorize"), op.url("/token"))
        .with_response_types(["deferred_code"])
        .with_grant_types(["urn:openid:params:grant-type:deferred"])
        .with_jwks_uri(op.url("/jwks"));
    let (section, msg) = refusal(
        base(&op, &clock)
            .metadata(md)
            .client_auth(ClientAuth::private_key_jwt(es256())),
    )
    .await;
    assert_eq!(section, "§5.3.3.2");
    assert!(msg.contains("PAR"), "{msg}");
}

async fn fapi_client(op: &MockOp, clock: &Arc<ManualClock>) -> DtrClient {
    let key = es256();
    op.register_client(RegisteredClient::private_key_jwt(
        CLIENT,
        vec![key.public_jwk().unwrap()],
    ));
    base(op, clock)
        .client_auth(ClientAuth::private_key_jwt(key.clone()))
        .request_object_signing_key(key)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_fapi2_client_pushes_signed_dpop_bound_requests_and_completes() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    let op = op_with(cfg, Algorithm::ES256, &clock).await;
    let client = fapi_client(&op, &clock).await;
    assert!(client.pushes_requests());
    // PAR always: the front-channel URL is refused.
    assert!(client.authorize().build().is_err());
    let (url, pending) = client.authorize().push().await.unwrap();
    assert!(
        pending.dpop_jkt().is_some(),
        "FAPI 2.0 tokens are DPoP-bound"
    );
    let p = &op.requests_to(Endpoint::PushedAuthorization)[0];
    assert!(p.param("request").is_some() && p.param("client_assertion").is_some());
    assert!(p.header("dpop").is_some());
    let cb = op.browse(&url).await.unwrap();
    let ack = match client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Acknowledgment(a) => a,
        other => panic!("{other:?}"),
    };
    let auth = client.exchange(ack).await.unwrap();
    // The client assertion's aud is the issuer, as a single string.
    let token = &op.requests_to(Endpoint::Token)[0];
    let assertion = token.param("client_assertion").unwrap();
    let payload = assertion.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], serde_json::json!(op.issuer()));
    let s = crate::support::flow::Setup { op, client, clock };
    match run_to_outcome(
        &s,
        auth.id(),
        Duration::from_secs(5),
        Duration::from_secs(60),
    )
    .await
    {
        Outcome::Tokens(t) => assert!(t.is_dpop()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_response_without_iss_is_refused_in_fapi2_mode() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut cfg = OpConfig::default();
    cfg.include_iss = false;
    cfg.advertise_iss_parameter = false;
    let op = op_with(cfg, Algorithm::ES256, &clock).await;
    let client = fapi_client(&op, &clock).await;
    let (url, pending) = client.authorize().push().await.unwrap();
    let cb = op.browse(&url).await.unwrap();
    match client.callback(&pending, cb.query()) {
        Err(Error::Callback(CallbackError::MissingIssuer)) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_rs256_id_token_is_refused_in_fapi2_mode() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut cfg = OpConfig::default();
    cfg.authorize_outcome = AuthorizeOutcome::Code;
    let op = op_with(cfg, Algorithm::RS256, &clock).await;
    let client = fapi_client(&op, &clock).await;
    let (url, pending) = client
        .authorize()
        .response_type(ResponseType::DeferredCodeOrCode)
        .push()
        .await
        .unwrap();
    let cb = op.browse(&url).await.unwrap();
    let code = match client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Code(c) => c,
        other => panic!("{other:?}"),
    };
    let e = client.exchange_code(code).await.unwrap_err();
    match e.validation() {
        Some(oidc_dtr::error::ValidationError::AlgorithmNotAllowed { alg, .. }) => {
            assert_eq!(alg, "RS256")
        }
        other => panic!("{other:?} / {e:?}"),
    }
}

/// The mock OP's FAPI 2.0 switch plays a strict authorization server: a
/// `.fapi2()` client runs the deferred flow end to end through it, and
/// what the profile forbids comes back as typed refusals, nothing lost.
#[tokio::test]
async fn the_mock_ops_fapi2_switch_accepts_a_fapi2_client_and_refuses_the_rest() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut cfg = OpConfig::fapi2();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    let op = op_with(cfg, Algorithm::ES256, &clock).await;
    let md = op.metadata_json();
    assert_eq!(
        md["token_endpoint_auth_methods_supported"],
        serde_json::json!([
            "private_key_jwt",
            "tls_client_auth",
            "self_signed_tls_client_auth"
        ])
    );

    // A FAPI 2.0 client: PAR + JAR + DPoP + private_key_jwt (ES256).
    let client = fapi_client(&op, &clock).await;
    let (url, pending) = client.authorize().push().await.unwrap();
    let cb = op.browse(&url).await.unwrap();
    let ack = match client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Acknowledgment(a) => a,
        other => panic!("{other:?}"),
    };
    let auth = client.exchange(ack).await.unwrap();
    let s = crate::support::flow::Setup {
        op,
        client,
        clock: clock.clone(),
    };
    match run_to_outcome(
        &s,
        auth.id(),
        Duration::from_secs(5),
        Duration::from_secs(60),
    )
    .await
    {
        Outcome::Tokens(t) => assert!(t.is_dpop()),
        other => panic!("{other:?}"),
    }
    let op = s.op;

    // Outside FAPI 2.0 mode, a client secret: the push is refused.
    op.register_client(RegisteredClient::confidential("secret-client", "s3cret"));
    let secret = DtrClient::builder()
        .issuer(op.issuer())
        .client_id("secret-client")
        .client_secret("s3cret")
        .redirect_uri(REDIRECT)
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let pushes = op.request_count(Endpoint::PushedAuthorization);
    let err = secret.authorize().push().await.unwrap_err();
    assert!(matches!(err, Error::PushedAuthorization(_)), "{err:?}");
    assert_eq!(
        err.oauth().map(|o| o.code.clone()),
        Some(oidc_dtr::error::ErrorCode::InvalidClient)
    );
    assert_eq!(op.request_count(Endpoint::PushedAuthorization), pushes + 1);

    // An RS256 client assertion: refused too.
    let rs256 = SigningKey::generate(Algorithm::RS256)
        .unwrap()
        .with_kid("rs-1");
    op.register_client(RegisteredClient::private_key_jwt(
        "rs256-client",
        vec![rs256.public_jwk().unwrap()],
    ));
    let weak = DtrClient::builder()
        .issuer(op.issuer())
        .client_id("rs256-client")
        .client_auth(ClientAuth::private_key_jwt(rs256))
        .redirect_uri(REDIRECT)
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let err = weak.authorize().push().await.unwrap_err();
    assert!(matches!(err, Error::PushedAuthorization(_)), "{err:?}");
    assert_eq!(
        err.oauth().map(|o| o.code.clone()),
        Some(oidc_dtr::error::ErrorCode::InvalidClient)
    );

    // private_key_jwt (ES256) without DPoP and without a certificate: the
    // push goes through, the exchange is refused (tokens must be
    // sender-constrained) and says so.
    let key = es256();
    op.register_client(RegisteredClient::private_key_jwt(
        "unbound-client",
        vec![key.public_jwk().unwrap()],
    ));
    let unbound = DtrClient::builder()
        .issuer(op.issuer())
        .client_id("unbound-client")
        .client_auth(ClientAuth::private_key_jwt(key))
        .dpop(DpopConfig::disabled())
        .redirect_uri(REDIRECT)
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let (url, pending) = unbound.authorize().push().await.unwrap();
    let cb = op.browse(&url).await.unwrap();
    let ack = match unbound.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Acknowledgment(a) => a,
        other => panic!("{other:?}"),
    };
    let err = unbound.exchange(ack).await.unwrap_err();
    let oauth = err.oauth().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(
        oauth.code,
        oidc_dtr::error::ErrorCode::InvalidRequest,
        "{oauth:?}"
    );
}
