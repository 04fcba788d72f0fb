//! ID token validation, the JWKS cache and the plain-code fallback, end to
//! end against the testkit OP.

use std::sync::Arc;
use std::time::Duration;

use oidc_dtr::error::{ConfigError, ValidationError};
use oidc_dtr::jose::SigningKey;
use oidc_dtr::secret::RawJwt;
use oidc_dtr::{
    CallbackResponse, DeferredAuthentication, DtrClient, DtrClientBuilder, Error, TokenSet,
    client::ResponseType,
    jose::Algorithm,
    tokens::{JwksConfig, TokenResponse, ValidationContext, ValidationOptions},
};
use oidc_dtr::{
    UnixTime,
    time::{Clock, ManualClock},
};
use oidc_dtr_testkit::{AuthorizeOutcome, Endpoint, IdTokenFault, MockOp};
use serde_json::json;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const GRANT_DEFERRED: &str = "urn:openid:params:grant-type:deferred";

fn builder(op: &MockOp) -> DtrClientBuilder {
    DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
}

async fn client(op: &MockOp) -> DtrClient {
    builder(op).build().await.unwrap()
}

/// A mock OP and a client sharing one manual clock.
async fn with_clock(
    config: impl FnOnce(DtrClientBuilder) -> DtrClientBuilder,
) -> (MockOp, DtrClient, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(UnixTime::from_secs(1_900_000_000)));
    let op = MockOp::builder()
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let client = config(builder(&op).clock(clock.clone()))
        .build()
        .await
        .unwrap();
    (op, client, clock)
}

/// Runs `deferred_code code` with an OP that answers a plain `code`, and
/// redeems it: the plain-code fallback.
async fn code_flow(op: &MockOp, client: &DtrClient) -> Result<TokenSet, Error> {
    code_flow_with(op, client, |b| b).await
}

async fn code_flow_with(
    op: &MockOp,
    client: &DtrClient,
    f: impl FnOnce(
        oidc_dtr::client::AuthorizationRequestBuilder<'_>,
    ) -> oidc_dtr::client::AuthorizationRequestBuilder<'_>,
) -> Result<TokenSet, Error> {
    op.configure(|c| c.authorize_outcome = AuthorizeOutcome::Code);
    let (url, pending) = f(client
        .authorize()
        .response_type(ResponseType::DeferredCodeOrCode))
    .build()
    .unwrap();
    let cb = op.browse(&url).await.unwrap();
    let CallbackResponse::Code(code) = client.callback(&pending, cb.query()).unwrap() else {
        panic!("expected a plain code")
    };
    client.exchange_code(code).await
}

/// Starts a deferred authentication and exchanges its code.
async fn deferred(op: &MockOp, client: &DtrClient) -> Result<DeferredAuthentication, Error> {
    op.configure(|c| c.authorize_outcome = AuthorizeOutcome::Defer);
    let (url, pending) = client.authorize().build().unwrap();
    let cb = op.browse(&url).await.unwrap();
    let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, cb.query()).unwrap()
    else {
        panic!("expected an acknowledgment")
    };
    client.exchange(ack).await
}

/// One poll, by hand (the poll engine is another module's job).
async fn poll_once(op: &MockOp, auth: &DeferredAuthentication) -> TokenResponse {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", GRANT_DEFERRED)
        .append_pair("deferred_auth_id", auth.id().secret())
        .finish();
    let resp = reqwest::Client::new()
        .post(op.url("/token"))
        .basic_auth(MockOp::CLIENT_ID, Some(MockOp::CLIENT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    TokenResponse::from_json(&resp.bytes().await.unwrap()).unwrap()
}

fn jwks_hits(op: &MockOp) -> usize {
    op.requests_to(Endpoint::Jwks).len()
}

fn validation_error(r: Result<impl std::fmt::Debug, Error>) -> ValidationError {
    match r {
        Err(Error::Validation(e)) => e,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[tokio::test]
async fn code_fallback_end_to_end() {
    let op = MockOp::start().await.unwrap();
    let client = client(&op).await;
    let before = client.metadata().issuer.clone();
    let tokens = code_flow(&op, &client).await.unwrap();
    assert_eq!(before, op.issuer());
    let claims = tokens.claims();
    assert_eq!(claims.issuer(), op.issuer());
    assert_eq!(claims.audiences(), [MockOp::CLIENT_ID]);
    assert!(claims.subject().starts_with("user-"));
    assert!(claims.access_token_hash().is_some(), "at_hash was checked");
    assert!(tokens.is_bearer());
    assert_eq!(
        tokens.expires_at(),
        Some(
            tokens
                .received_at()
                .saturating_add(Duration::from_secs(3600))
        )
    );
    assert!(tokens.refresh_token().is_some());
    assert_eq!(tokens.scope(), Some("openid"));

    // The token request on the wire: the authorization code grant with the
    // PKCE verifier and the redirect URI.
    let req = op.requests_to(Endpoint::Token).pop().unwrap();
    assert_eq!(req.param("grant_type"), Some("authorization_code"));
    assert!(req.param("code").is_some());
    assert_eq!(req.param("redirect_uri"), Some(REDIRECT));
    assert_eq!(req.param("code_verifier").map(str::len), Some(43));
    assert!(req.header("authorization").unwrap().starts_with("Basic "));
    assert_eq!(req.status, 200);
    assert_eq!(jwks_hits(&op), 1);

    // A second flow reuses the cached JWK Set.
    code_flow(&op, &client).await.unwrap();
    assert_eq!(jwks_hits(&op), 1);
}

#[tokio::test]
async fn code_is_single_use_and_bound_to_its_client() {
    let op = MockOp::start().await.unwrap();
    let client = client(&op).await;
    op.configure(|c| c.authorize_outcome = AuthorizeOutcome::Code);
    let (url, pending) = client
        .authorize()
        .response_type(ResponseType::DeferredCodeOrCode)
        .build()
        .unwrap();
    let cb = op.browse(&url).await.unwrap();
    let CallbackResponse::Code(code) = client.callback(&pending, cb.query()).unwrap() else {
        panic!()
    };
    let other = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::PUBLIC_CLIENT_ID)
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap();
    assert!(matches!(
        other.exchange_code(code.clone()).await,
        Err(Error::Callback(oidc_dtr::error::CallbackError::WrongClient))
    ));
    client.exchange_code(code.clone()).await.unwrap();
    let err = client.exchange_code(code).await.unwrap_err();
    assert_eq!(
        err.oauth().unwrap().code,
        oidc_dtr::error::ErrorCode::InvalidGrant
    );
}

/// Every check of the validator, fed a token that breaks exactly that
/// check, through the code fallback.
#[tokio::test]
async fn each_broken_id_token_fails_its_own_check() {
    let op = MockOp::start().await.unwrap();
    let client = client(&op).await;
    let trusting = builder(&op)
        .validation(ValidationOptions::default().trust_audience("https://other.example/api"))
        .build()
        .await
        .unwrap();
    type Check = fn(&ValidationError) -> bool;
    let cases: Vec<(IdTokenFault, &DtrClient, Check)> = vec![
        (IdTokenFault::BadSignature, &client, |e| {
            *e == ValidationError::Signature
        }),
        (
            IdTokenFault::WrongIssuer,
            &client,
            |e| matches!(e, ValidationError::Issuer { found, .. } if found == "https://evil.example"),
        ),
        (IdTokenFault::WrongAudience, &client, |e| {
            matches!(e, ValidationError::Audience { .. })
        }),
        (
            IdTokenFault::ExtraAudience { azp: true },
            &client,
            |e| matches!(e, ValidationError::UntrustedAudience { audience } if audience == "https://other.example/api"),
        ),
        (IdTokenFault::ExtraAudience { azp: false }, &trusting, |e| {
            *e == ValidationError::MissingAzp
        }),
        (IdTokenFault::WrongAzp, &client, |e| {
            matches!(e, ValidationError::Azp { .. })
        }),
        (IdTokenFault::MissingNonce, &client, |e| {
            *e == ValidationError::MissingNonce
        }),
        (IdTokenFault::WrongNonce, &client, |e| {
            *e == ValidationError::Nonce
        }),
        (IdTokenFault::Expired, &client, |e| {
            matches!(e, ValidationError::Expired { .. })
        }),
        (IdTokenFault::NotYetValid, &client, |e| {
            matches!(e, ValidationError::NotYetValid { .. })
        }),
        (IdTokenFault::IssuedInFuture, &client, |e| {
            matches!(e, ValidationError::IssuedInFuture { .. })
        }),
        (
            IdTokenFault::AlgNone,
            &client,
            |e| matches!(e, ValidationError::AlgorithmNotAllowed { alg } if alg == "none"),
        ),
        (IdTokenFault::WrongAtHash, &client, |e| {
            *e == ValidationError::AtHash
        }),
        (IdTokenFault::UnknownKid, &client, |e| {
            matches!(e, ValidationError::UnknownKid { .. })
        }),
        (IdTokenFault::CritHeader, &client, |e| {
            matches!(e, ValidationError::CritHeader { .. })
        }),
        (IdTokenFault::Jwe, &client, |e| *e == ValidationError::Jwe),
        (IdTokenFault::MissingIdToken, &client, |e| {
            *e == ValidationError::MissingIdToken
        }),
    ];
    for (fault, c, check) in cases {
        op.configure(|cfg| cfg.id_token_fault = Some(fault.clone()));
        let e = validation_error(code_flow(&op, c).await);
        assert!(check(&e), "{fault:?} gave {e:?}");
        // The message names the check and leaks no token.
        assert!(!e.to_string().is_empty());
    }
    // The same OP, unbroken, is fine; and trusted extra audiences with azp pass.
    op.configure(|cfg| cfg.id_token_fault = None);
    code_flow(&op, &client).await.unwrap();
    op.configure(|cfg| cfg.id_token_fault = Some(IdTokenFault::ExtraAudience { azp: true }));
    let t = code_flow(&op, &trusting).await.unwrap();
    assert_eq!(t.claims().authorized_party(), Some(MockOp::CLIENT_ID));
    // A token without kid is checked against the single key.
    op.configure(|cfg| cfg.id_token_fault = Some(IdTokenFault::NoKid));
    code_flow(&op, &client).await.unwrap();
}

#[tokio::test]
async fn max_age_is_checked_against_the_request_time() {
    let op = MockOp::start().await.unwrap();
    let client = client(&op).await;
    op.configure(|c| c.id_token_fault = Some(IdTokenFault::OldAuthTime(Duration::from_secs(3600))));
    let e = validation_error(code_flow_with(&op, &client, |b| b.max_age(600)).await);
    assert!(
        matches!(e, ValidationError::MaxAgeExceeded { max_age: 600, .. }),
        "{e:?}"
    );
    // Without max_age, an old auth_time is fine.
    code_flow(&op, &client).await.unwrap();
    op.configure(|c| c.id_token_fault = Some(IdTokenFault::MissingAuthTime));
    assert_eq!(
        validation_error(code_flow_with(&op, &client, |b| b.max_age(600)).await),
        ValidationError::MissingAuthTime
    );
    op.configure(|c| c.id_token_fault = None);
    code_flow_with(&op, &client, |b| b.max_age(600))
        .await
        .unwrap();
}

#[tokio::test]
async fn deferred_flow_validates_interim_and_final_tokens() {
    let op = MockOp::start().await.unwrap();
    op.configure(|c| c.interim_id_token = true);
    let client = client(&op).await;
    let auth = deferred(&op, &client).await.unwrap();
    let interim = auth.interim_claims().expect("validated interim claims");
    let sub = auth.interim_subject().unwrap().to_owned();
    assert_eq!(interim.subject(), sub);
    assert_eq!(interim.issuer(), op.issuer());
    // The validated interim claims survive a serde round trip.
    let back: DeferredAuthentication =
        serde_json::from_str(&serde_json::to_string(&auth).unwrap()).unwrap();
    assert_eq!(back, auth);

    op.approve(auth.id());
    let resp = poll_once(&op, &auth).await;
    let ctx = ValidationContext::from(&auth);
    assert_eq!(ctx.expected_subject(), Some(sub.as_str()));
    let client_clock_now = oidc_dtr::time::SystemClock.now();
    let tokens = client
        .validate_token_response(&ctx, resp, client_clock_now)
        .await
        .unwrap();
    assert_eq!(tokens.claims().subject(), sub);
}

/// The check a rejected interim ID token failed (no cancellation endpoint
/// is configured: the authentication is still live at the OP).
fn interim_rejected(r: Result<impl std::fmt::Debug, Error>) -> ValidationError {
    match r {
        Err(Error::InterimIdTokenRejected {
            source,
            live_authentication,
        }) if live_authentication.is_live_at_op() => source,
        other => panic!("expected a rejected interim ID token, got {other:?}"),
    }
}

#[tokio::test]
async fn broken_interim_tokens_fail_the_exchange() {
    let op = MockOp::start().await.unwrap();
    op.configure(|c| c.interim_id_token = true);
    let client = client(&op).await;
    for (fault, want) in [
        (IdTokenFault::WrongNonce, ValidationError::Nonce),
        (IdTokenFault::MissingNonce, ValidationError::MissingNonce),
        (IdTokenFault::BadSignature, ValidationError::Signature),
        (IdTokenFault::Jwe, ValidationError::Jwe),
    ] {
        op.configure(|c| c.interim_id_token_fault = Some(fault.clone()));
        assert_eq!(
            interim_rejected(deferred(&op, &client).await),
            want,
            "{fault:?}"
        );
    }
    op.configure(|c| c.interim_id_token_fault = Some(IdTokenFault::Expired));
    assert!(matches!(
        interim_rejected(deferred(&op, &client).await),
        ValidationError::Expired { .. }
    ));
}

#[tokio::test]
async fn final_subject_must_match_the_interim_one() {
    let op = MockOp::start().await.unwrap();
    op.configure(|c| {
        c.interim_id_token = true;
        c.id_token_fault = Some(IdTokenFault::OtherSubject);
    });
    let strict = client(&op).await;
    let lax = builder(&op)
        .validation(ValidationOptions::default().require_same_subject(false))
        .build()
        .await
        .unwrap();
    for (client, ok) in [(&strict, false), (&lax, true)] {
        let auth = deferred(&op, client).await.unwrap();
        op.approve(auth.id());
        let resp = poll_once(&op, &auth).await;
        let r = client
            .validate_token_response(
                &ValidationContext::from(&auth),
                resp,
                oidc_dtr::time::SystemClock.now(),
            )
            .await;
        if ok {
            let t = r.unwrap();
            assert_ne!(Some(t.claims().subject()), auth.interim_subject());
        } else {
            assert_eq!(validation_error(r), ValidationError::SubjectChanged);
        }
    }
}

#[tokio::test]
async fn other_signing_algorithms_end_to_end() {
    for alg in [
        Algorithm::ES256,
        Algorithm::PS256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let op = MockOp::builder().signing_alg(alg).start().await.unwrap();
        // The default allow-list (RS256) refuses them.
        let default = client(&op).await;
        assert_eq!(
            validation_error(code_flow(&op, &default).await),
            ValidationError::AlgorithmNotAllowed {
                alg: alg.as_str().into()
            },
        );
        let client = builder(&op)
            .validation(ValidationOptions::default().algorithms([Algorithm::RS256, alg]))
            .build()
            .await
            .unwrap();
        let t = code_flow(&op, &client).await.unwrap();
        assert!(t.claims().access_token_hash().is_some(), "{alg}");
        op.configure(|c| c.id_token_fault = Some(IdTokenFault::BadSignature));
        assert_eq!(
            validation_error(code_flow(&op, &client).await),
            ValidationError::Signature,
            "{alg}"
        );
    }
}

#[tokio::test]
async fn algorithm_configuration_is_checked_at_build() {
    let op = MockOp::start().await.unwrap();
    // Not in the OP's id_token_signing_alg_values_supported.
    let e = builder(&op)
        .validation(ValidationOptions::default().algorithms([Algorithm::PS512]))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Config(ConfigError::Invalid { .. })),
        "{e}"
    );
    // HMAC without a client secret.
    let mut md =
        oidc_dtr::ProviderMetadata::from_json(op.metadata_json().to_string().as_bytes()).unwrap();
    md.id_token_signing_alg_values_supported = None;
    let e = DtrClient::builder()
        .metadata(md)
        .client_id(MockOp::PUBLIC_CLIENT_ID)
        .redirect_uri(REDIRECT)
        .validation(ValidationOptions::default().algorithms([Algorithm::HS256]))
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("client secret"), "{e}");
    let e = builder(&op)
        .jwks_config(
            JwksConfig::default().ttl_bounds(Duration::from_secs(100), Duration::from_secs(10)),
        )
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
}

#[tokio::test]
async fn key_rotation_mid_flow_needs_no_restart() {
    let op = MockOp::start().await.unwrap();
    op.configure(|c| c.interim_id_token = true);
    let client = client(&op).await;
    let old_kid = op.signing_kid();

    // The interim ID token is signed with the old key.
    let auth = deferred(&op, &client).await.unwrap();
    assert_eq!(jwks_hits(&op), 1);

    // While the OP decides, it rotates its key and retires the old one.
    let new_kid = op.rotate_key();
    assert_ne!(new_kid, old_kid);
    op.retire_old_keys();

    // The final ID token is signed with the new key: one forced refresh.
    op.approve(auth.id());
    let resp = poll_once(&op, &auth).await;
    let tokens = client
        .validate_token_response(
            &ValidationContext::from(&auth),
            resp,
            oidc_dtr::time::SystemClock.now(),
        )
        .await
        .unwrap();
    assert_eq!(tokens.claims().subject(), auth.interim_subject().unwrap());
    let hits = op.requests_to(Endpoint::Jwks);
    assert_eq!(hits.len(), 2);
    assert_eq!(
        hits[1].header("cache-control"),
        Some("no-cache"),
        "a forced refresh bypasses caches"
    );
    assert_eq!(hits[0].header("cache-control"), None);

    // And later flows keep working without another fetch.
    code_flow(&op, &client).await.unwrap();
    assert_eq!(jwks_hits(&op), 2);
    let kids: Vec<String> = client
        .export_jwks()
        .unwrap()
        .keys
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kids, [new_kid]);
}

#[tokio::test]
async fn old_keys_retire_after_the_configured_delay() {
    let clock = Arc::new(ManualClock::new(UnixTime::from_secs(1_900_000_000)));
    let op = MockOp::builder()
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    op.configure(|c| c.key_retire_delay = Some(Duration::from_secs(3600)));
    let first = op.signing_kid();
    let second = op.rotate_key();
    let kids = |op: &MockOp| -> Vec<String> {
        op.jwks_json()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(kids(&op), [second.clone(), first]);
    clock.advance(Duration::from_secs(3601));
    assert_eq!(kids(&op), [second]);
}

/// Tokens with kids the OP never published, all valid otherwise in shape.
fn forged_tokens(op: &MockOp, n: usize, tag: &str) -> Vec<RawJwt> {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    (0..n)
        .map(|i| {
            let mut h = serde_json::Map::new();
            h.insert("kid".into(), json!(format!("forged-{tag}-{i}")));
            // ES256 signatures, but an RS256 header: the header decides the
            // key lookup, which is what is under test.
            h.insert("alg".into(), json!("RS256"));
            let claims = json!({"iss": op.issuer(), "sub": "x", "aud": MockOp::CLIENT_ID,
                                "exp": 4_000_000_000u64, "iat": 1_900_000_000u64});
            RawJwt::new(key.sign_jwt(h, &claims).unwrap())
        })
        .collect()
}

// Two worker threads, so the concurrent flood really runs in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_flood_fetches_at_most_once_per_cooldown() {
    let (op, client, clock) = with_clock(|b| {
        b.jwks_config(JwksConfig::default().refresh_cooldown(Duration::from_secs(60)))
    })
    .await;
    let ctx = ValidationContext::new(
        oidc_dtr::secret::Nonce::new("n"),
        UnixTime::from_secs(1_900_000_000),
    );
    // Warm the cache with a real flow.
    code_flow(&op, &client).await.unwrap();
    assert_eq!(jwks_hits(&op), 1);

    // A flood of forged kids: one refresh, then nothing for the cooldown.
    for t in forged_tokens(&op, 200, "a") {
        let e = validation_error(client.validate_id_token(&ctx, &t, None, clock.now()).await);
        assert!(matches!(e, ValidationError::UnknownKid { .. }), "{e:?}");
    }
    assert_eq!(jwks_hits(&op), 2);

    // Concurrent floods are single-flight too.
    clock.advance(Duration::from_secs(61));
    let tasks: Vec<_> = forged_tokens(&op, 50, "b")
        .into_iter()
        .map(|t| {
            let client = client.clone();
            let ctx = ctx.clone();
            let now = clock.now();
            tokio::spawn(async move { client.validate_id_token(&ctx, &t, None, now).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(
            t.await.unwrap(),
            Err(Error::Validation(ValidationError::UnknownKid { .. }))
        ));
    }
    assert_eq!(jwks_hits(&op), 3);

    // The same kid again after the cooldown is remembered only for the
    // cooldown, so it may trigger one more refresh, not more.
    clock.advance(Duration::from_secs(61));
    for t in forged_tokens(&op, 100, "a") {
        let _ = client.validate_id_token(&ctx, &t, None, clock.now()).await;
    }
    assert_eq!(jwks_hits(&op), 4);

    // Real tokens kept validating from the cache all along.
    code_flow(&op, &client).await.unwrap();
    assert_eq!(jwks_hits(&op), 4);
}

#[tokio::test]
async fn cache_control_max_age_is_honoured() {
    let (op, client, clock) = with_clock(|b| b).await;
    op.configure(|c| c.jwks_max_age = Some(3600));
    code_flow(&op, &client).await.unwrap();
    assert_eq!(jwks_hits(&op), 1);
    let snap = client.export_jwks().unwrap();
    assert_eq!(
        snap.fresh_until,
        snap.fetched_at.saturating_add(Duration::from_secs(3600))
    );
    clock.advance(Duration::from_secs(1800));
    code_flow(&op, &client).await.unwrap();
    assert_eq!(jwks_hits(&op), 1, "still fresh");
    clock.advance(Duration::from_secs(1801));
    code_flow(&op, &client).await.unwrap();
    assert_eq!(jwks_hits(&op), 2, "expired, refetched");
    // Not forced: no `no-cache`.
    assert_eq!(
        op.requests_to(Endpoint::Jwks)[1].header("cache-control"),
        None
    );
}

#[tokio::test]
async fn stale_if_error() {
    let (op, client, clock) = with_clock(|b| {
        b.jwks_config(
            JwksConfig::default()
                .refresh_cooldown(Duration::from_secs(60))
                .error_retry(Duration::from_secs(10))
                .max_stale(Duration::from_secs(3600)),
        )
    })
    .await;
    op.configure(|c| c.jwks_max_age = Some(60));
    code_flow(&op, &client).await.unwrap();

    // The JWKS endpoint goes down and the cached set expires.
    op.configure(|c| c.jwks_unavailable = true);
    clock.advance(Duration::from_secs(120));
    code_flow(&op, &client).await.unwrap();
    let hits = op.requests_to(Endpoint::Jwks);
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[1].status, 503);
    // No retry within `error_retry`.
    code_flow(&op, &client).await.unwrap();
    assert_eq!(jwks_hits(&op), 2);

    // A rotation during the outage cannot be followed: the tokens are
    // kept (a retryable error says where), not dropped.
    op.rotate_key();
    let (handle, e) = held_code_flow(&op, &client, &clock).await;
    assert!(
        matches!(e, ValidationError::JwksUnavailable { ref reason } if reason.contains("503")),
        "{e:?}"
    );
    assert!(e.is_retryable());

    // The outage ends: the held tokens are validated and delivered, and
    // the new key serves new flows.
    op.configure(|c| c.jwks_unavailable = false);
    assert!(matches!(
        held_outcome(&client, &clock, &handle).await,
        oidc_dtr::Outcome::Tokens(_)
    ));
    code_flow(&op, &client).await.unwrap();

    // Stale beyond `max_stale`: refused rather than trusted forever (the
    // tokens of the flow are kept until the keys can be fetched again).
    op.configure(|c| c.jwks_unavailable = true);
    clock.advance(Duration::from_secs(60 + 3601));
    let (_, e) = held_code_flow(&op, &client, &clock).await;
    assert!(
        matches!(e, ValidationError::JwksUnavailable { .. }),
        "{e:?}"
    );
}

/// [`code_flow`] while the JWK Set cannot be fetched: virtual time moves
/// through the quick retries, and the tokens come back held.
async fn held_code_flow(
    op: &MockOp,
    client: &DtrClient,
    clock: &ManualClock,
) -> (oidc_dtr::DeferredId, ValidationError) {
    let (op2, client2) = (op.clone(), client.clone());
    let call = tokio::spawn(async move { code_flow(&op2, &client2).await });
    for _ in 0..600 {
        if call.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        clock.advance(Duration::from_secs(1));
    }
    match call.await.unwrap() {
        Err(Error::TokensHeld { handle, source }) => (handle, source),
        other => panic!("expected held tokens, got {other:?}"),
    }
}

/// The outcome of held tokens, moving virtual time until it is there.
async fn held_outcome(
    client: &DtrClient,
    clock: &ManualClock,
    handle: &oidc_dtr::DeferredId,
) -> oidc_dtr::Outcome {
    for _ in 0..600 {
        if client.poll_status(handle).await.is_some_and(|s| s.finished) {
            return client.wait(handle).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        clock.advance(Duration::from_secs(1));
    }
    panic!("the held tokens were never validated");
}

#[tokio::test]
async fn jwks_export_import_warms_another_client() {
    let op = MockOp::start().await.unwrap();
    let a = client(&op).await;
    code_flow(&op, &a).await.unwrap();
    let snap = a.export_jwks().unwrap();
    let json = serde_json::to_string(&snap).unwrap();

    let b = client(&op).await;
    b.import_jwks(serde_json::from_str(&json).unwrap()).unwrap();
    code_flow(&op, &b).await.unwrap();
    assert_eq!(jwks_hits(&op), 1, "the second client never fetched");
}

#[tokio::test]
async fn claims_api() {
    let op = MockOp::start().await.unwrap();
    op.configure(|c| {
        c.subject = Some("248289761001".into());
        c.extra_claims = json!({
            "name": "Jane Doe",
            "email": "janedoe@example.com",
            "email_verified": true,
            "birthdate": "1990-12-31",
            "verified_claims": {
                "verification": {"trust_framework": "de_aml", "time": "2026-01-01T10:00Z"},
                "claims": {"given_name": "Jane", "family_name": "Doe"}
            },
            "tenant": {"id": 7}
        })
        .as_object()
        .unwrap()
        .clone();
    });
    let client = client(&op).await;
    let t = code_flow(&op, &client).await.unwrap();
    let c = t.claims();
    assert_eq!(c.subject(), "248289761001");
    assert_eq!(c.name(), Some("Jane Doe"));
    assert_eq!(c.email(), Some("janedoe@example.com"));
    assert_eq!(c.email_verified(), Some(true));
    assert_eq!(c.birthdate(), Some("1990-12-31"));
    assert_eq!(
        c.verified_claims().unwrap()["verification"]["trust_framework"],
        "de_aml"
    );
    assert_eq!(c.claim("tenant").unwrap()["id"], 7);

    #[derive(serde::Deserialize)]
    struct Mine {
        sub: String,
        verified_claims: VerifiedClaims,
    }
    #[derive(serde::Deserialize)]
    struct VerifiedClaims {
        claims: Names,
    }
    #[derive(serde::Deserialize)]
    struct Names {
        given_name: String,
    }
    let mine: Mine = t.id_token().claims_as().unwrap();
    assert_eq!(mine.sub, "248289761001");
    assert_eq!(mine.verified_claims.claims.given_name, "Jane");
    let mine: Mine = c.deserialize_into().unwrap();
    assert_eq!(mine.verified_claims.claims.given_name, "Jane");

    // TokenSet persists and prints no secret.
    let json = serde_json::to_string(&t).unwrap();
    let back: TokenSet = serde_json::from_str(&json).unwrap();
    assert_eq!(back, t);
    let dbg = format!("{t:?}");
    for secret in [
        t.access_token().secret(),
        t.refresh_token().unwrap().secret(),
        t.id_token().raw().secret(),
        "248289761001",
        "janedoe@example.com",
        "Jane Doe",
    ] {
        assert!(!dbg.contains(secret), "{dbg}");
    }
}

#[tokio::test]
async fn op_without_jwks_uri_uses_imported_keys() {
    let op = MockOp::start().await.unwrap();
    let mut md =
        oidc_dtr::ProviderMetadata::from_json(op.metadata_json().to_string().as_bytes()).unwrap();
    md.jwks_uri = None;
    let client = DtrClient::builder()
        .metadata(md)
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap();
    assert_eq!(
        validation_error(code_flow(&op, &client).await),
        ValidationError::NoJwks
    );
    client
        .import_jwks(oidc_dtr::tokens::JwksSnapshot::new(
            None,
            op.jwks_json()["keys"].as_array().unwrap().clone(),
            UnixTime::EPOCH,
            UnixTime::EPOCH,
        ))
        .unwrap();
    code_flow(&op, &client).await.unwrap();
    assert_eq!(jwks_hits(&op), 0);
}

#[test]
fn validation_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let op = MockOp::start().await.unwrap();
        let client = client(&op).await;
        let ctx = ValidationContext::new(oidc_dtr::secret::Nonce::new("n"), UnixTime::EPOCH);
        let raw = RawJwt::new("a.b.c");
        let resp = TokenResponse::new(oidc_dtr::secret::AccessToken::new("x"), "Bearer");
        is_send(&client.validate_id_token(&ctx, &raw, None, UnixTime::EPOCH));
        is_send(&client.validate_token_response(&ctx, resp, UnixTime::EPOCH));
    });
}
