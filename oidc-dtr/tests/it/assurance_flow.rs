//! Identity assurance in the flow, against the mock OP: the typed `claims`
//! request checked against the OP's metadata, sent, remembered across the
//! deferral (and a restart of the stored state), and the final ID token's
//! `verified_claims` checked against it: one test per check.

use std::time::Duration;

use crate::support::flow::*;
use oidc_dtr::{
    CallbackResponse, DeferredAuthentication, DtrClient, Error, Outcome, TokenSet,
    assurance::{
        AssuranceError, AssuranceUnsupported, ClaimsRequest, ClaimsTarget, Evidence,
        EvidenceRequest, VerifiedClaimsRequest,
    },
    error::{ConfigError, ValidationError},
};
use oidc_dtr_testkit::{AssuranceFault, AutoApprove, Endpoint, MockOp, OpConfig};
use serde_json::Value;

const S: Duration = Duration::from_secs(1);
const YEAR: u64 = 365 * 86_400;

fn config(fault: Option<AssuranceFault>) -> OpConfig {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    cfg.assurance_fault = fault;
    cfg
}

/// Identity documents under German AML rules, verified within a year.
fn aml_request() -> ClaimsRequest {
    ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::IdToken,
        VerifiedClaimsRequest::new()
            .trust_frameworks(["de_aml", "eidas"])
            .max_age(YEAR)
            .evidence(EvidenceRequest::document().document_types(["idcard", "passport"]))
            .essential_claim("given_name")
            .claim("family_name")
            .claim("birthdate"),
    )
}

/// authorize (with `req`) → browser → callback → exchange.
async fn start_with(op: &MockOp, client: &DtrClient, req: ClaimsRequest) -> DeferredAuthentication {
    let (url, pending) = client.authorize().claims_request(req).build().unwrap();
    let cb = op.browse(&url).await.unwrap();
    let ack = match client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Acknowledgment(a) => a,
        other => panic!("{other:?}"),
    };
    client.exchange(ack).await.unwrap()
}

async fn tokens_for(fault: Option<AssuranceFault>, req: ClaimsRequest) -> TokenSet {
    let s = setup(config(fault)).await;
    let auth = start_with(&s.op, &s.client, req).await;
    match run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await {
        Outcome::Tokens(t) => t,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_request_is_sent_and_the_verified_claims_come_back_typed_and_checked() {
    let s = setup(config(None)).await;
    let req = aml_request();
    let auth = start_with(&s.op, &s.client, req.clone()).await;
    // The typed request went out as the `claims` parameter, unchanged.
    let sent = s.op.requests_to(Endpoint::Authorize);
    let claims = sent[0].param("claims").expect("claims parameter sent");
    let sent: ClaimsRequest = serde_json::from_str(claims).unwrap();
    assert_eq!(sent, req);
    // Remembered through the deferral, also in the stored form.
    let stored: DeferredAuthentication =
        serde_json::from_str(&serde_json::to_string(&auth).unwrap()).unwrap();
    assert_eq!(stored, auth);
    assert_eq!(stored.claims_request(), Some(&req));

    let tokens = match run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await {
        Outcome::Tokens(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(tokens.claims_request(), Some(&req));
    let checked = tokens.verified_claims().unwrap();
    assert!(checked.unrequested.is_empty(), "{checked:?}");
    let (given, verification) = checked.get("given_name").unwrap();
    assert_eq!(given, "Max");
    assert_eq!(verification.trust_framework, "de_aml");
    assert!(matches!(
        verification.evidence.as_deref(),
        Some([Evidence::Document(_)])
    ));
    assert_eq!(checked.get("birthdate").unwrap().0, "1956-01-28");
    // Only what was asked for came back.
    assert!(checked.get("nationalities").is_none());
    // The token set keeps the request when stored (a restart keeps the check).
    let again: TokenSet = serde_json::from_str(&serde_json::to_string(&tokens).unwrap()).unwrap();
    assert_eq!(again.verified_claims().unwrap(), checked);
}

#[tokio::test]
async fn electronic_record_evidence_under_eidas() {
    let req = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::IdToken,
        VerifiedClaimsRequest::new()
            .trust_framework("eidas")
            .evidence(EvidenceRequest::electronic_record())
            .claim("family_name"),
    );
    let tokens = tokens_for(None, req).await;
    let checked = tokens.verified_claims().unwrap();
    let (name, verification) = checked.get("family_name").unwrap();
    assert_eq!(name, "Meier");
    assert_eq!(verification.trust_framework, "eidas");
    match verification.evidence.as_deref() {
        Some([Evidence::ElectronicRecord(e)]) => {
            assert_eq!(
                e.record.as_ref().unwrap().record_type,
                "population_register"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn two_requests_with_different_trust_frameworks_are_answered_apart() {
    let req = ClaimsRequest::new()
        .verified_claims_in(
            ClaimsTarget::IdToken,
            VerifiedClaimsRequest::new()
                .trust_framework("de_aml")
                .claim("given_name"),
        )
        .verified_claims_in(
            ClaimsTarget::IdToken,
            VerifiedClaimsRequest::new()
                .trust_framework("uk_tfida")
                .claim("birthdate"),
        );
    let tokens = tokens_for(None, req).await;
    let checked = tokens.verified_claims().unwrap();
    assert_eq!(checked.requested.len(), 2);
    assert_eq!(
        checked.get("given_name").unwrap().1.trust_framework,
        "de_aml"
    );
    assert_eq!(
        checked.get("birthdate").unwrap().1.trust_framework,
        "uk_tfida"
    );
}

#[tokio::test]
async fn a_trust_framework_the_request_did_not_allow_is_an_error_and_the_tokens_stay() {
    let tokens = tokens_for(
        Some(AssuranceFault::DisallowedTrustFramework),
        aml_request(),
    )
    .await;
    assert_eq!(
        tokens.verified_claims(),
        Err(AssuranceError::TrustFrameworkNotAllowed {
            index: 0,
            trust_framework: "xx_unrequested".into()
        })
    );
    // The authentication itself succeeded: the tokens are valid and usable.
    assert!(!tokens.access_token().secret().is_empty());
}

#[tokio::test]
async fn a_verification_older_than_max_age_is_an_error() {
    let err = tokens_for(Some(AssuranceFault::StaleVerification), aml_request())
        .await
        .verified_claims()
        .unwrap_err();
    match err {
        AssuranceError::VerificationTooOld {
            index: 0,
            age,
            max_age,
        } => {
            assert_eq!(max_age, YEAR);
            assert!(age > YEAR, "{age}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn verified_claims_that_were_not_requested_are_kept_apart() {
    let tokens = tokens_for(Some(AssuranceFault::UnrequestedClaims), aml_request()).await;
    let checked = tokens.verified_claims().unwrap();
    // Requested ones as usual; the extra one never among them.
    assert_eq!(checked.get("given_name").unwrap().0, "Max");
    assert!(checked.get("place_of_birth").is_none());
    assert_eq!(checked.unrequested.len(), 1);
    let extra = &checked.unrequested[0].claims;
    assert_eq!(extra.keys().collect::<Vec<_>>(), ["place_of_birth"]);
}

#[tokio::test]
async fn verified_claims_in_a_wrong_place_are_an_error() {
    let tokens = tokens_for(Some(AssuranceFault::MisplacedVerifiedClaims), aml_request()).await;
    assert_eq!(
        tokens.verified_claims(),
        Err(AssuranceError::MisplacedVerifiedClaims {
            path: "/address/verified_claims".into()
        })
    );
    assert!(tokens.received_claims().is_err());
}

#[tokio::test]
async fn verified_and_unverified_values_of_a_claim_stay_distinct() {
    let mut cfg = config(None);
    cfg.extra_claims
        .insert("given_name".into(), Value::String("Maxi".into()));
    let s = setup(cfg).await;
    let auth = start_with(&s.op, &s.client, aml_request()).await;
    let Outcome::Tokens(tokens) = run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await
    else {
        panic!("no tokens")
    };
    assert_eq!(tokens.claims().given_name(), Some("Maxi"));
    assert_eq!(
        tokens
            .verified_claims()
            .unwrap()
            .get("given_name")
            .unwrap()
            .0,
        "Max"
    );
    let received = tokens.received_claims().unwrap();
    assert_eq!(received.unverified_claim("given_name").unwrap(), "Maxi");
    assert_eq!(received.verified_claim("given_name").count(), 1);
}

#[tokio::test]
async fn the_builder_names_what_the_op_does_not_support() {
    let s = setup(config(None)).await;
    let unsupported_framework = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::IdToken,
        VerifiedClaimsRequest::new()
            .trust_framework("jp_aml")
            .claim("given_name"),
    );
    let err = s
        .client
        .authorize()
        .claims_request(unsupported_framework)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Config(ConfigError::ClaimsRequest(AssuranceError::Unsupported(
                AssuranceUnsupported::TrustFramework(t)
            ))) if t == "jp_aml"
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("jp_aml"), "{err}");

    let unsupported_claim = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::IdToken,
        VerifiedClaimsRequest::new()
            .trust_framework("de_aml")
            .claim("salary"),
    );
    let err = s
        .client
        .authorize()
        .claims_request(unsupported_claim)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Config(ConfigError::ClaimsRequest(AssuranceError::Unsupported(
                AssuranceUnsupported::ClaimInVerifiedClaims(c)
            ))) if c == "salary"
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_op_without_identity_assurance_is_refused_at_build() {
    let mut cfg = config(None);
    cfg.identity_assurance = false;
    let s = setup(cfg).await;
    let err = s
        .client
        .authorize()
        .claims_request(aml_request())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config(ConfigError::ClaimsRequest(AssuranceError::Unsupported(
                AssuranceUnsupported::ClaimsParameter
            )))
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn claims_and_claims_request_are_exclusive() {
    let s = setup(config(None)).await;
    let err = s
        .client
        .authorize()
        .claims(serde_json::json!({"id_token": {"email": null}}))
        .claims_request(aml_request())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config(ConfigError::Invalid {
                field: "claims",
                ..
            })
        ),
        "{err:?}"
    );
}

// ------------------------------------------------------------------ UserInfo

/// Verified claims asked for at the UserInfo endpoint.
fn userinfo_request() -> ClaimsRequest {
    ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::UserInfo,
        VerifiedClaimsRequest::new()
            .trust_framework("uk_tfida")
            .max_age(YEAR)
            .claim("given_name")
            .claim("birthdate"),
    )
}

async fn userinfo_setup(cfg: OpConfig, public: bool) -> (Setup, TokenSet) {
    let s = if public {
        setup_with(cfg, |b| {
            b.client_id(MockOp::PUBLIC_CLIENT_ID)
                .client_auth(oidc_dtr::ClientAuth::None)
        })
        .await
    } else {
        setup(cfg).await
    };
    let auth = start_with(&s.op, &s.client, userinfo_request()).await;
    let tokens = match run_to_outcome(&s, auth.id(), S, Duration::from_secs(600)).await {
        Outcome::Tokens(t) => t,
        other => panic!("{other:?}"),
    };
    (s, tokens)
}

#[tokio::test]
async fn userinfo_with_a_bearer_token_returns_checked_verified_claims() {
    let (s, tokens) = userinfo_setup(config(None), false).await;
    assert!(tokens.is_bearer());
    // Nothing verified in the ID token: it was asked for at UserInfo only.
    assert!(tokens.verified_claims().unwrap().requested.is_empty());
    let info = s.client.userinfo(&tokens).await.unwrap();
    assert_eq!(info.subject(), tokens.claims().subject());
    assert_eq!(info.claim("given_name").unwrap(), "Maxi");
    let (v, verification) = info.verified_claims().get("given_name").unwrap();
    assert_eq!(v, "Max");
    assert_eq!(verification.trust_framework, "uk_tfida");
    let req = &s.op.requests_to(Endpoint::UserInfo)[0];
    let auth = req.header("authorization").unwrap();
    assert!(auth.starts_with("Bearer "), "{auth}");
    assert!(req.header("dpop").is_none());
}

#[tokio::test]
async fn userinfo_with_a_dpop_bound_token_sends_a_bound_proof_and_the_server_nonce() {
    let mut cfg = config(None);
    cfg.require_dpop = true;
    cfg.require_dpop_nonce = true;
    let (s, tokens) = userinfo_setup(cfg, true).await;
    assert!(tokens.is_dpop());
    let info = s.client.userinfo(&tokens).await.unwrap();
    assert_eq!(
        info.verified_claims().get("birthdate").unwrap().0,
        "1956-01-28"
    );
    let reqs = s.op.requests_to(Endpoint::UserInfo);
    let last = reqs.last().unwrap();
    assert!(last.header("authorization").unwrap().starts_with("DPoP "));
    assert!(last.header("dpop").is_some());
}

#[tokio::test]
async fn userinfo_retries_once_with_a_new_dpop_nonce() {
    let mut cfg = config(None);
    cfg.require_dpop = true;
    cfg.require_dpop_nonce = true;
    let (s, tokens) = userinfo_setup(cfg, true).await;
    // The server's nonce changes after the tokens were issued: the first
    // UserInfo request is answered 401 use_dpop_nonce, the retry succeeds.
    s.op.rotate_dpop_nonce();
    let info = s.client.userinfo(&tokens).await.unwrap();
    assert_eq!(info.verified_claims().get("given_name").unwrap().0, "Max");
    let statuses: Vec<u16> =
        s.op.requests_to(Endpoint::UserInfo)
            .iter()
            .map(|r| r.status)
            .collect();
    assert_eq!(statuses, [401, 200]);
}

#[tokio::test]
async fn userinfo_with_another_sub_is_refused() {
    let (s, tokens) =
        userinfo_setup(config(Some(AssuranceFault::UserInfoOtherSubject)), false).await;
    let err = s.client.userinfo(&tokens).await.unwrap_err();
    match err {
        Error::Validation(ValidationError::UserInfoSubjectMismatch) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_signed_userinfo_response_is_refused_clearly() {
    let (s, tokens) = userinfo_setup(config(Some(AssuranceFault::UserInfoAsJwt)), false).await;
    let err = s.client.userinfo(&tokens).await.unwrap_err();
    assert!(matches!(err, Error::Response(_)), "{err:?}");
    assert!(err.to_string().contains("application/jwt"), "{err}");
}

#[tokio::test]
async fn userinfo_verified_claims_are_checked_like_the_id_tokens() {
    let (s, tokens) = userinfo_setup(
        config(Some(AssuranceFault::DisallowedTrustFramework)),
        false,
    )
    .await;
    let err = s.client.userinfo(&tokens).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Assurance(AssuranceError::TrustFrameworkNotAllowed { .. })
        ),
        "{err:?}"
    );
    let (s, tokens) =
        userinfo_setup(config(Some(AssuranceFault::MisplacedVerifiedClaims)), false).await;
    let err = s.client.userinfo(&tokens).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Assurance(AssuranceError::MisplacedVerifiedClaims { .. })
        ),
        "{err:?}"
    );
}
