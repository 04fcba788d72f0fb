//! The typed builder produces exactly the spec's example requests; purpose and other request
//! rules; the check against OP metadata.

use std::path::PathBuf;

use oidc_dtr::assurance::{
    AssuranceError, AssuranceUnsupported, ClaimConstraint, ClaimsRequest, ClaimsTarget,
    ElementRequest, EvidenceRequest, VerifiedClaimsRequest,
};
use serde_json::{Map, Value, json};

fn example(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ida/examples/request")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn pid() -> VerifiedClaimsRequest {
    VerifiedClaimsRequest::new()
        .claim("given_name")
        .claim("family_name")
        .claim("birthdate")
}

#[test]
fn builds_spec_example_verification_aml() {
    let req = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::UserInfo,
        pid().trust_framework("de_aml").evidence(
            EvidenceRequest::document()
                .check_methods(["pipp"])
                .document_types(["idcard", "passport"]),
        ),
    );
    assert_eq!(req.to_json().unwrap(), example("verification_aml.json"));
}

#[test]
fn builds_spec_example_max_age() {
    let req = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::UserInfo,
        pid().trust_framework("jp_aml").max_age(63_113_852),
    );
    assert_eq!(req.to_json().unwrap(), example("verification_max_age.json"));
}

#[test]
fn builds_spec_example_essential() {
    let req = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::UserInfo,
        VerifiedClaimsRequest::new()
            .essential_claim("given_name")
            .essential_claim("family_name")
            .claim("birthdate"),
    );
    assert_eq!(req.to_json().unwrap(), example("essential.json"));
}

#[test]
fn builds_spec_example_array_of_requests() {
    let req = ClaimsRequest::new()
        .verified_claims_in(
            ClaimsTarget::UserInfo,
            VerifiedClaimsRequest::new()
                .trust_framework("gold")
                .evidence(EvidenceRequest::document())
                .claim("given_name")
                .claim("family_name"),
        )
        .verified_claims_in(
            ClaimsTarget::UserInfo,
            VerifiedClaimsRequest::new()
                .trust_frameworks(["silver", "bronze"])
                .evidence(EvidenceRequest::electronic_record())
                .claim("given_name")
                .claim("family_name"),
        );
    assert_eq!(
        req.to_json().unwrap(),
        example("verification_claims_by_trust_frameworks_same_claims.json")
    );
}

#[test]
fn builds_spec_example_id_token_with_plain_claim() {
    let req = ClaimsRequest::new()
        .claim_in(ClaimsTarget::IdToken, "given_name", ElementRequest::Null)
        .verified_claims_in(
            ClaimsTarget::IdToken,
            VerifiedClaimsRequest::new().claim("family_name"),
        );
    assert_eq!(req.to_json().unwrap(), example("simple_id_token.json"));
    // The string form is what goes into the `claims` parameter.
    let s = req.to_json_string().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&s).unwrap(),
        example("simple_id_token.json")
    );
}

#[test]
fn purpose_length_rule() {
    assert!(matches!(
        VerifiedClaimsRequest::new().with_purpose("ab"),
        Err(AssuranceError::PurposeLength { chars: 2, .. })
    ));
    assert!(matches!(
        VerifiedClaimsRequest::new().with_purpose("x".repeat(301)),
        Err(AssuranceError::PurposeLength { chars: 301, .. })
    ));
    // Counted in characters, not bytes: 300 three-byte characters are fine.
    let ok = VerifiedClaimsRequest::new()
        .with_purpose("€".repeat(300))
        .unwrap();
    assert_eq!(ok.purpose.as_deref().map(|p| p.chars().count()), Some(300));
    VerifiedClaimsRequest::new().with_purpose("abc").unwrap();
    assert!(ClaimConstraint::default().with_purpose("no").is_err());
    let c = ClaimConstraint::default()
        .with_purpose("To open your account")
        .unwrap();
    let req = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::UserInfo,
        VerifiedClaimsRequest::new().claim_with("given_name", ElementRequest::ClaimConstraint(c)),
    );
    assert_eq!(
        req.to_json().unwrap()["userinfo"]["verified_claims"]["claims"]["given_name"],
        json!({"purpose": "To open your account"})
    );
}

#[test]
fn parsed_request_with_bad_purpose_fails_validation_naming_the_path() {
    let req: ClaimsRequest = serde_json::from_value(json!({
        "id_token": {"verified_claims": {
            "verification": {"trust_framework": null},
            "claims": {"given_name": {"purpose": "x"}}
        }}
    }))
    .unwrap();
    match req.to_json() {
        Err(AssuranceError::PurposeLength { path, chars }) => {
            assert_eq!(path, "id_token.verified_claims.claims.given_name.purpose");
            assert_eq!(chars, 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn evidence_type_must_be_a_single_value() {
    let req: ClaimsRequest = serde_json::from_value(json!({
        "userinfo": {"verified_claims": {
            "verification": {"trust_framework": null,
                "evidence": [{"type": {"values": ["document", "vouch"]}}]},
            "claims": {"given_name": null}
        }}
    }))
    .unwrap();
    assert_eq!(
        req.validate(),
        Err(AssuranceError::EvidenceTypeFilter {
            path: "userinfo.verified_claims.verification.evidence[0].type".into()
        })
    );
}

#[test]
fn empty_values_refused() {
    let req = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::UserInfo,
        VerifiedClaimsRequest::new()
            .trust_frameworks(Vec::<String>::new())
            .claim("given_name"),
    );
    assert!(matches!(
        req.validate(),
        Err(AssuranceError::EmptyValues { .. })
    ));
}

fn metadata() -> Map<String, Value> {
    match json!({
        "claims_parameter_supported": true,
        "verified_claims_supported": true,
        "trust_frameworks_supported": ["de_aml", "eidas"],
        "evidence_supported": ["document", "electronic_record"],
        "documents_supported": ["idcard", "passport"],
        "electronic_records_supported": ["population_register"],
        "claims_in_verified_claims_supported": ["given_name", "family_name", "birthdate"]
    }) {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn aml() -> ClaimsRequest {
    ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::UserInfo,
        pid()
            .trust_framework("de_aml")
            .evidence(EvidenceRequest::document().document_types(["idcard", "passport"])),
    )
}

#[test]
fn metadata_supports_the_request() {
    aml().check_supported(&metadata()).unwrap();
    // Language-tagged claim names are supported when the base claim is.
    ClaimsRequest::new()
        .verified_claims_in(
            ClaimsTarget::IdToken,
            VerifiedClaimsRequest::new().claim("given_name#de"),
        )
        .check_supported(&metadata())
        .unwrap();
}

#[test]
fn metadata_names_what_is_unsupported() {
    let unsupported = |md: Map<String, Value>, req: ClaimsRequest| match req.check_supported(&md) {
        Err(AssuranceError::Unsupported(u)) => u,
        other => panic!("{other:?}"),
    };
    let mut md = metadata();
    md.insert("claims_parameter_supported".into(), json!(false));
    assert_eq!(
        unsupported(md, aml()),
        AssuranceUnsupported::ClaimsParameter
    );

    let mut md = metadata();
    md.remove("verified_claims_supported");
    assert_eq!(unsupported(md, aml()), AssuranceUnsupported::VerifiedClaims);

    let req = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::UserInfo,
        pid().trust_frameworks(["eidas", "uk_tfida"]),
    );
    assert_eq!(
        unsupported(metadata(), req),
        AssuranceUnsupported::TrustFramework("uk_tfida".into())
    );

    let req = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::UserInfo,
        pid().evidence(EvidenceRequest::vouch()),
    );
    assert_eq!(
        unsupported(metadata(), req),
        AssuranceUnsupported::EvidenceType("vouch".into())
    );

    let req = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::UserInfo,
        pid().evidence(EvidenceRequest::document().document_types(["driving_permit"])),
    );
    assert_eq!(
        unsupported(metadata(), req),
        AssuranceUnsupported::DocumentType("driving_permit".into())
    );

    let req = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::UserInfo,
        pid().evidence(EvidenceRequest::electronic_record().record_types(["bank_account"])),
    );
    assert_eq!(
        unsupported(metadata(), req),
        AssuranceUnsupported::ElectronicRecordType("bank_account".into())
    );

    let req = ClaimsRequest::new()
        .verified_claims_in(ClaimsTarget::IdToken, pid().claim("nationalities"));
    assert_eq!(
        unsupported(metadata(), req),
        AssuranceUnsupported::ClaimInVerifiedClaims("nationalities".into())
    );

    let mut md = metadata();
    md.insert("documents_check_methods_supported".into(), json!(["pipp"]));
    let req = ClaimsRequest::new().verified_claims_in(
        ClaimsTarget::UserInfo,
        pid().evidence(EvidenceRequest::document().check_methods(["sripp"])),
    );
    assert_eq!(
        unsupported(md, req),
        AssuranceUnsupported::CheckMethod("sripp".into())
    );

    // The Display names the metadata member.
    let e = AssuranceError::Unsupported(AssuranceUnsupported::DocumentType("x".into())).to_string();
    assert!(e.contains("documents_supported"), "{e}");
}

#[test]
fn metadata_missing_or_malformed() {
    let mut md = metadata();
    md.remove("trust_frameworks_supported");
    assert_eq!(
        aml().check_supported(&md),
        Err(AssuranceError::MetadataMissing {
            member: "trust_frameworks_supported"
        })
    );
    let mut md = metadata();
    md.insert("documents_supported".into(), json!("idcard"));
    assert_eq!(
        aml().check_supported(&md),
        Err(AssuranceError::MetadataMalformed {
            member: "documents_supported"
        })
    );
    // An unrestricted trust framework needs no list.
    let mut md = metadata();
    md.remove("trust_frameworks_supported");
    ClaimsRequest::new()
        .verified_claims_in(ClaimsTarget::UserInfo, pid())
        .check_supported(&md)
        .unwrap();
}

#[test]
fn deeply_nested_request_is_an_error() {
    let mut v = Value::Null;
    for _ in 0..100 {
        v = json!({ "a": v });
    }
    let r: Result<ClaimsRequest, _> = serde_json::from_value(json!({
        "userinfo": {"verified_claims": {
            "verification": {"trust_framework": null, "evidence": [{"type": {"value": "document"}, "document_details": v}]},
            "claims": {"given_name": null}
        }}
    }));
    assert!(r.is_err());
    let big: Vec<Value> = (0..10_000).map(Value::from).collect();
    let r: Result<ClaimsRequest, _> = serde_json::from_value(json!({
        "id_token": {"given_name": {"values": big}}
    }));
    assert!(r.is_err());
}
