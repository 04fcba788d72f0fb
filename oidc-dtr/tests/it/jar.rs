//! Signed request objects (JAR, RFC 9101): by value in the URL and inside
//! a push; the mock OP checks the signature against the client's JWKS,
//! `typ`, `aud`, `exp`/`nbf` and `jti` replay; a refusal comes back as
//! `invalid_request_object`.

use std::time::Duration;

use oidc_dtr::{
    CallbackResponse, Error,
    error::{ConfigError, ErrorCode, ParError},
    jose::{Algorithm, SigningKey},
};
use oidc_dtr_testkit::{Endpoint, MockOp, OpConfig, RegisteredClient};
use serde_json::Value;
use url::Url;

use crate::support::flow::{Setup, T0, setup_with};

fn claims_of(jwt: &str) -> (Value, Value) {
    use base64::Engine as _;
    let dec = |p: &str| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .unwrap(),
        )
        .unwrap()
    };
    let mut parts = jwt.split('.');
    (dec(parts.next().unwrap()), dec(parts.next().unwrap()))
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A confidential client (Basic) that signs request objects with `key`;
/// the OP knows `registered` as its JWKS.
async fn jar_setup(key: SigningKey, registered: &SigningKey, par: bool) -> Setup {
    let s = setup_with(OpConfig::default(), |b| {
        b.request_object_signing_key(key)
            .pushed_authorization_requests(par)
    })
    .await;
    let mut client = RegisteredClient::confidential(MockOp::CLIENT_ID, MockOp::CLIENT_SECRET);
    client.jwks = vec![registered.public_jwk().unwrap()];
    s.op.register_client(client);
    s
}

fn key(alg: Algorithm) -> SigningKey {
    SigningKey::generate(alg).unwrap().with_kid("ro-1")
}

#[tokio::test]
async fn a_request_object_by_value_carries_every_parameter_and_the_op_accepts_it() {
    for alg in [
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::RS256,
    ] {
        let k = key(alg);
        let s = jar_setup(k.clone(), &k, false).await;
        let (url, pending) = s
            .client
            .authorize()
            .scope("profile")
            .max_age(600)
            .build()
            .unwrap();
        // Outside: client_id, and what OIDC Core §6.1 requires there.
        let names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        assert_eq!(names, ["client_id", "response_type", "scope", "request"]);
        assert_eq!(param(&url, "scope").as_deref(), Some("openid profile"));
        let jwt = param(&url, "request").unwrap();
        let (header, c) = claims_of(&jwt);
        assert_eq!(header["typ"], "oauth-authz-req+jwt");
        assert_eq!(header["alg"], alg.as_str());
        assert_eq!(c["iss"], MockOp::CLIENT_ID);
        assert_eq!(c["client_id"], MockOp::CLIENT_ID);
        assert_eq!(c["aud"], s.op.issuer());
        assert_eq!(c["iat"], T0.as_secs());
        assert_eq!(c["nbf"], T0.as_secs());
        assert_eq!(c["exp"], T0.as_secs() + 300);
        assert!(c["jti"].as_str().is_some_and(|j| j.len() >= 16));
        assert_eq!(c["state"], pending.state().secret());
        assert_eq!(c["nonce"], pending.nonce().secret());
        assert_eq!(c["response_type"], "deferred_code");
        assert_eq!(c["redirect_uri"], pending.redirect_uri().as_str());
        assert_eq!(c["code_challenge_method"], "S256");
        assert!(c["code_challenge"].is_string());
        assert_eq!(c["max_age"], 600);
        // The OP verified it and used its parameters: state and PKCE hold.
        let cb = s.op.browse(&url).await.unwrap();
        let ack = match s.client.callback(&pending, cb.query()).unwrap() {
            CallbackResponse::Acknowledgment(a) => a,
            other => panic!("{alg}: {other:?}"),
        };
        s.client.exchange(ack).await.unwrap();
    }
}

#[tokio::test]
async fn jti_replay_and_a_wrong_key_are_invalid_request_object() {
    let k = key(Algorithm::ES256);
    let s = jar_setup(k.clone(), &k, false).await;
    let (url, pending) = s.client.authorize().build().unwrap();
    s.op.browse(&url).await.unwrap();
    // The same request object again: its jti was seen.
    let cb = s.op.browse(&url).await.unwrap();
    match s.client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Error(e) => {
            assert_eq!(e.code, ErrorCode::InvalidRequestObject);
            assert!(e.description.unwrap_or_default().contains("jti"));
        }
        other => panic!("{other:?}"),
    }
    // Signed with a key the OP does not know.
    let s = jar_setup(key(Algorithm::ES256), &k, false).await;
    let (url, pending) = s.client.authorize().build().unwrap();
    let cb = s.op.browse(&url).await.unwrap();
    match s.client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Error(e) => assert_eq!(e.code, ErrorCode::InvalidRequestObject),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_expired_request_object_is_refused() {
    let k = key(Algorithm::PS256);
    let s = setup_with(OpConfig::default(), |b| {
        b.request_object_signing_key(k.clone())
            .request_object_lifetime(Duration::from_secs(30))
    })
    .await;
    let mut client = RegisteredClient::confidential(MockOp::CLIENT_ID, MockOp::CLIENT_SECRET);
    client.jwks = vec![k.public_jwk().unwrap()];
    s.op.register_client(client);
    let (url, pending) = s.client.authorize().build().unwrap();
    s.clock.advance(Duration::from_secs(31));
    let cb = s.op.browse(&url).await.unwrap();
    match s.client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Error(e) => {
            assert_eq!(e.code, ErrorCode::InvalidRequestObject);
            assert!(e.description.unwrap_or_default().contains("expired"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_request_object_inside_a_push() {
    let k = key(Algorithm::ES256);
    let s = jar_setup(k.clone(), &k, true).await;
    let (url, pending) = s.client.authorize().push().await.unwrap();
    let names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    assert_eq!(names, ["client_id", "request_uri"]);
    let p = &s.op.requests_to(Endpoint::PushedAuthorization)[0];
    // RFC 9126 §3: the parameters are in the request object only.
    assert!(p.param("state").is_none() && p.param("response_type").is_none());
    let (_, c) = claims_of(p.param("request").unwrap());
    assert_eq!(c["state"], pending.state().secret());
    let cb = s.op.browse(&url).await.unwrap();
    assert!(matches!(
        s.client.callback(&pending, cb.query()).unwrap(),
        CallbackResponse::Acknowledgment(_)
    ));

    // A key the OP does not know: the push is refused, typed.
    let s = jar_setup(key(Algorithm::ES256), &k, true).await;
    let e = s.client.authorize().push().await.unwrap_err();
    match &e {
        Error::PushedAuthorization(ParError::Refused { error, .. }) => {
            assert_eq!(error.code, ErrorCode::InvalidRequestObject)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn hmac_keys_and_long_lifetimes_are_refused_at_build() {
    let s = setup_with(OpConfig::default(), |b| b).await;
    let mac = SigningKey::hmac(Algorithm::HS256, &[1u8; 32]).unwrap();
    let r = oidc_dtr::DtrClient::builder()
        .issuer(s.op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(crate::support::flow::REDIRECT)
        .request_object_signing_key(mac)
        .build()
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Config(ConfigError::Invalid {
                field: "request_object",
                ..
            }))
        ),
        "{r:?}"
    );
    let r = oidc_dtr::DtrClient::builder()
        .issuer(s.op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(crate::support::flow::REDIRECT)
        .request_object_signing_key(key(Algorithm::ES256))
        .request_object_lifetime(Duration::from_secs(3601))
        .build()
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Config(ConfigError::Invalid {
                field: "request_object_lifetime",
                ..
            }))
        ),
        "{r:?}"
    );
}
