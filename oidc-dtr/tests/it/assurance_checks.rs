//! One test per check of issue 18 item 3, plus the hostile-input properties.

use oidc_dtr::assurance::{
    AssuranceError, AssuranceLimits, EvidenceRequest, ReceivedClaims, VerifiedClaims,
    VerifiedClaimsRequest, check_verified_claims, find_misplaced_verified_claims,
    find_verified_claim, parse_verification_time, parse_verified_claims_value,
};
use serde_json::{Map, Value, json};

/// 2024-01-01T00:00:00Z
const NOW: u64 = 1_704_067_200;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn element(v: Value) -> VerifiedClaims {
    VerifiedClaims::from_value(v).unwrap()
}

fn gold_doc(time: &str) -> VerifiedClaims {
    element(json!({
        "verification": {
            "trust_framework": "gold",
            "assurance_level": "high",
            "time": time,
            "evidence": [{"type": "document", "document_details": {"type": "idcard"}}]
        },
        "claims": {"given_name": "Max", "family_name": "Meier"}
    }))
}

fn wants_gold() -> VerifiedClaimsRequest {
    VerifiedClaimsRequest::new()
        .trust_frameworks(["gold", "silver"])
        .claim("given_name")
        .claim("family_name")
}

#[test]
fn accepted_when_everything_matches() {
    let got =
        check_verified_claims(&[wants_gold()], &[gold_doc("2023-12-01T10:00:00Z")], NOW).unwrap();
    assert_eq!(got.requested.len(), 1);
    assert!(got.unrequested.is_empty());
    let (v, ver) = got.get("given_name").unwrap();
    assert_eq!(v, "Max");
    assert_eq!(ver.trust_framework, "gold");
}

#[test]
fn trust_framework_not_allowed() {
    let req = VerifiedClaimsRequest::new()
        .trust_framework("silver")
        .claim("given_name");
    assert_eq!(
        check_verified_claims(&[req], &[gold_doc("2023-12-01")], NOW),
        Err(AssuranceError::TrustFrameworkNotAllowed {
            index: 0,
            trust_framework: "gold".into()
        })
    );
    // `trust_framework: null` allows any framework.
    let any = VerifiedClaimsRequest::new().claim("given_name");
    check_verified_claims(&[any], &[gold_doc("2023-12-01")], NOW).unwrap();
}

#[test]
fn trust_framework_matched_against_each_request_of_an_array() {
    let silver = VerifiedClaimsRequest::new()
        .trust_framework("silver")
        .claim("family_name");
    let gold = VerifiedClaimsRequest::new()
        .trust_framework("gold")
        .claim("given_name");
    let got = check_verified_claims(&[silver, gold], &[gold_doc("2023-12-01")], NOW).unwrap();
    assert_eq!(got.requested[0].matched_requests, vec![1]);
    // Only the gold request's claim is requested; family_name was asked under silver only.
    assert_eq!(
        got.requested[0].claims.keys().collect::<Vec<_>>(),
        ["given_name"]
    );
    assert_eq!(
        got.unrequested[0].claims.keys().collect::<Vec<_>>(),
        ["family_name"]
    );
}

#[test]
fn verification_older_than_max_age() {
    let req = wants_gold().max_age(86_400 * 30);
    // 31 days and a bit before NOW.
    match check_verified_claims(
        std::slice::from_ref(&req),
        &[gold_doc("2023-11-30T23:00:00Z")],
        NOW,
    ) {
        Err(AssuranceError::VerificationTooOld {
            index: 0,
            age,
            max_age,
        }) => {
            assert_eq!(max_age, 86_400 * 30);
            assert_eq!(age, 86_400 * 31 + 3600);
        }
        other => panic!("{other:?}"),
    }
    // Exactly max_age old is still fine (last second of a minute-precision value counts).
    let last_second = parse_verification_time("2023-12-01T23:59Z").unwrap();
    assert_eq!(last_second, 1_701_475_199); // 2023-12-01T23:59:59Z
    let at = |t: i64| u64::try_from(t).unwrap();
    check_verified_claims(
        std::slice::from_ref(&req),
        &[gold_doc("2023-12-01T23:59Z")],
        at(last_second + 86_400 * 30),
    )
    .unwrap();
    assert!(matches!(
        check_verified_claims(
            std::slice::from_ref(&req),
            &[gold_doc("2023-12-01T23:59Z")],
            at(last_second + 86_400 * 30 + 1)
        ),
        Err(AssuranceError::VerificationTooOld { age: 2_592_001, .. })
    ));
    // A plain date counts from its last second: 2023-12-01 ends at 23:59:59Z too.
    check_verified_claims(
        std::slice::from_ref(&req),
        &[gold_doc("2023-12-01")],
        at(last_second + 86_400 * 30),
    )
    .unwrap();
    assert!(matches!(
        check_verified_claims(
            std::slice::from_ref(&req),
            &[gold_doc("2023-12-01")],
            at(last_second + 86_400 * 30 + 1)
        ),
        Err(AssuranceError::VerificationTooOld { .. })
    ));
    // A time with an offset is converted to UTC before comparing.
    check_verified_claims(
        &[wants_gold().max_age(3600)],
        &[gold_doc("2024-01-01T00:30:00+01:00")],
        NOW,
    )
    .unwrap();
    assert!(matches!(
        check_verified_claims(
            &[wants_gold().max_age(3600)],
            &[gold_doc("2024-01-01T00:30:00+02:00")],
            NOW
        ),
        Err(AssuranceError::VerificationTooOld { age: 5400, .. })
    ));
}

#[test]
fn max_age_requested_but_time_absent() {
    let vc = element(json!({
        "verification": {"trust_framework": "gold"},
        "claims": {"given_name": "Max"}
    }));
    assert_eq!(
        check_verified_claims(&[wants_gold().max_age(60)], &[vc], NOW),
        Err(AssuranceError::VerificationTimeMissing { index: 0 })
    );
}

#[test]
fn malformed_verification_time_is_refused_at_parse() {
    let err = VerifiedClaims::from_value(json!({
        "verification": {"trust_framework": "gold", "time": "yesterday"},
        "claims": {}
    }))
    .unwrap_err();
    assert!(
        matches!(err, AssuranceError::InvalidTime { ref path, .. } if path == "verified_claims.verification.time"),
        "{err:?}"
    );
    assert!(parse_verification_time("2023-02-29").is_err());
}

#[test]
fn assurance_level_not_allowed() {
    let req = wants_gold().assurance_levels(["substantial"]);
    assert_eq!(
        check_verified_claims(&[req], &[gold_doc("2023-12-01")], NOW),
        Err(AssuranceError::AssuranceLevelNotAllowed {
            index: 0,
            assurance_level: Some("high".into())
        })
    );
}

#[test]
fn evidence_type_not_requested() {
    let req = wants_gold().evidence(EvidenceRequest::electronic_record());
    assert_eq!(
        check_verified_claims(&[req], &[gold_doc("2023-12-01")], NOW),
        Err(AssuranceError::EvidenceTypeNotAllowed {
            index: 0,
            evidence_type: "document".into()
        })
    );
    let req = wants_gold()
        .evidence(EvidenceRequest::electronic_record())
        .evidence(EvidenceRequest::document());
    check_verified_claims(&[req], &[gold_doc("2023-12-01")], NOW).unwrap();
}

#[test]
fn unrequested_claims_are_kept_apart() {
    let only_given = VerifiedClaimsRequest::new()
        .trust_framework("gold")
        .claim("given_name");
    let got = check_verified_claims(&[only_given], &[gold_doc("2023-12-01")], NOW).unwrap();
    assert_eq!(got.requested[0].claims, obj(json!({"given_name": "Max"})));
    assert_eq!(got.unrequested.len(), 1);
    assert_eq!(
        got.unrequested[0].claims,
        obj(json!({"family_name": "Meier"}))
    );
    // The lookup helpers only see requested claims.
    assert!(got.get("family_name").is_none());
    assert_eq!(got.all("given_name").count(), 1);
}

#[test]
fn whole_elements_are_unrequested_when_nothing_was_requested_for_the_target() {
    let got = check_verified_claims(&[], &[gold_doc("2023-12-01")], NOW).unwrap();
    assert!(got.requested.is_empty());
    assert_eq!(got.unrequested.len(), 1);
    assert!(got.unrequested[0].matched_requests.is_empty());
    assert!(got.get("given_name").is_none());
}

#[test]
fn misplaced_verified_claims_are_refused() {
    let ok = obj(json!({
        "sub": "1",
        "verified_claims": {"verification": {"trust_framework": "x"}, "claims": {}},
        "_claim_names": {"verified_claims": ["src1"]},
        "_claim_sources": {"src1": {"JWT": "e30.e30.sig"}}
    }));
    find_misplaced_verified_claims(&ok, &AssuranceLimits::default()).unwrap();
    for (bad, where_) in [
        (
            json!({"address": {"verified_claims": {}}}),
            "/address/verified_claims",
        ),
        (
            json!({"verified_claims": {"verification": {"trust_framework": "x"},
                "claims": {"verified_claims": {"verification": {"trust_framework": "y"}, "claims": {}}}}}),
            "/verified_claims/claims/verified_claims",
        ),
        (
            json!({"x": [1, {"verified_claims": []}]}),
            "/x/1/verified_claims",
        ),
        (
            json!({"_claim_sources": {"s": {"verified_claims": {}}}}),
            "/_claim_sources/s/verified_claims",
        ),
        (
            json!({"_claim_names": {"given_name": {"verified_claims": 1}}}),
            "/_claim_names/given_name/verified_claims",
        ),
        (
            json!({"verified_claims": [{"verification": {"trust_framework": "x", "evidence": [{"type": "document", "verified_claims": 1}]}, "claims": {}}]}),
            "/verified_claims/0/verification/evidence/0/verified_claims",
        ),
    ] {
        let m = obj(bad);
        assert_eq!(
            find_misplaced_verified_claims(&m, &AssuranceLimits::default()),
            Err(AssuranceError::MisplacedVerifiedClaims {
                path: where_.into()
            })
        );
        assert!(matches!(
            ReceivedClaims::from_claims(&m, &AssuranceLimits::default()),
            Err(AssuranceError::MisplacedVerifiedClaims { .. })
        ));
    }
}

#[test]
fn verified_and_unverified_values_stay_distinct() {
    let claims = obj(json!({
        "sub": "248289761001",
        "given_name": "Maxi",
        "verified_claims": [
            {"verification": {"trust_framework": "gold"}, "claims": {"given_name": "Max"}},
            {"verification": {"trust_framework": "silver"}, "claims": {"given_name": "Maximilian", "birthdate": "1956-01-28"}}
        ]
    }));
    let r = ReceivedClaims::from_claims(&claims, &AssuranceLimits::default()).unwrap();
    assert_eq!(r.unverified_claim("given_name"), Some(&json!("Maxi")));
    assert!(r.unverified_claim("verified_claims").is_none());
    assert!(
        r.unverified_claim("birthdate").is_none(),
        "verified birthdate leaked to the top level"
    );
    let verified: Vec<(&Value, &str)> = r
        .verified_claim("given_name")
        .map(|(v, ver)| (v, ver.trust_framework.as_str()))
        .collect();
    assert_eq!(
        verified,
        [(&json!("Max"), "gold"), (&json!("Maximilian"), "silver")]
    );
    assert_eq!(find_verified_claim(&r.verified, "birthdate").count(), 1);
    assert_eq!(Value::Object(r.to_json().unwrap()), Value::Object(claims));
}

#[test]
fn parse_errors_name_the_field() {
    let cases = [
        (json!({"claims": {}}), "verified_claims.verification"),
        (
            json!({"verification": {"trust_framework": "x"}}),
            "verified_claims.claims",
        ),
        (
            json!({"verification": {"trust_framework": 5}, "claims": {}}),
            "verified_claims.verification.trust_framework",
        ),
        (
            json!({"verification": {"trust_framework": "x", "evidence": [{"type": "document", "check_details": [{"organization": "o"}]}]}, "claims": {}}),
            "verified_claims.verification.evidence[0].check_details[0].check_method",
        ),
        (
            json!({"verification": {"trust_framework": "x", "evidence": [{"type": "electronic_signature", "issuer": "ca", "serial_number": "1"}]}, "claims": {}}),
            "verified_claims.verification.evidence[0].signature_type",
        ),
        (
            json!({"verification": {"trust_framework": "x", "evidence": [{"type": "document", "attachments": [{"url": "https://a", "access_token": "t"}]}]}, "claims": {}}),
            "verified_claims.verification.evidence[0].attachments[0].digest",
        ),
    ];
    for (v, path) in cases {
        let err = VerifiedClaims::from_value(v).unwrap_err();
        let got = match &err {
            AssuranceError::Missing { path } | AssuranceError::WrongType { path, .. } => {
                path.clone()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(got, path);
        // No access token in any error text.
        assert!(!err.to_string().contains("\"t\""));
    }
}

#[test]
fn unknown_evidence_type_and_members_are_kept() {
    let v = json!({
        "verification": {"trust_framework": "x", "ext": {"a": [1, 2]},
            "evidence": [{"type": "biometric_scan", "score": 0.97}]},
        "claims": {"given_name": "Max"},
        "txn": "abc"
    });
    let vc = VerifiedClaims::from_value(v.clone()).unwrap();
    assert_eq!(
        vc.verification.evidence.as_ref().unwrap()[0].evidence_type(),
        "biometric_scan"
    );
    assert_eq!(vc.other.get("txn"), Some(&json!("abc")));
    assert_eq!(serde_json::to_value(&vc).unwrap(), v);
}

// ------------------------------------------------------------------------------------------
// Hostile input
// ------------------------------------------------------------------------------------------

fn nested(depth: usize) -> String {
    let mut s = String::new();
    for _ in 0..depth {
        s.push_str("{\"a\":");
    }
    s.push('1');
    for _ in 0..depth {
        s.push('}');
    }
    s
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    // Far beyond serde_json's own limit: refused by the JSON parser.
    let huge = format!(
        "{{\"verified_claims\":{{\"verification\":{{\"trust_framework\":\"x\"}},\"claims\":{{\"given_name\":{}}}}}}}",
        nested(100_000)
    );
    assert!(matches!(
        ReceivedClaims::from_json_str(&huge, &AssuranceLimits::default()),
        Err(AssuranceError::Json(_))
    ));
    // Within serde_json's limit but beyond ours: refused with the path.
    for depth in [20, 60, 120] {
        let text = format!(
            "{{\"verified_claims\":{{\"verification\":{{\"trust_framework\":\"x\"}},\"claims\":{{\"given_name\":{}}}}}}}",
            nested(depth)
        );
        match ReceivedClaims::from_json_str(&text, &AssuranceLimits::default()) {
            // The misplaced-member scan (limit 64) may stop it before the parser (limit 16).
            Err(AssuranceError::TooDeep { path, .. }) => assert!(
                path == "verified_claims.claims" || path.starts_with("/verified_claims/claims/"),
                "{path}"
            ),
            other => panic!("depth {depth}: {other:?}"),
        }
        // And in a place only the misplaced-scan looks at.
        let text = format!("{{\"x\":{}}}", nested(depth));
        let r = ReceivedClaims::from_json_str(&text, &AssuranceLimits::default());
        // 64: the default deepest scan.
        if depth > 64 {
            assert!(
                matches!(r, Err(AssuranceError::TooDeep { .. })),
                "depth {depth}: {r:?}"
            );
        } else {
            r.unwrap();
        }
    }
}

#[test]
fn huge_arrays_are_an_error() {
    let many: Vec<Value> = (0..10_000)
        .map(|_| json!({"verification": {"trust_framework": "x"}, "claims": {}}))
        .collect();
    assert!(matches!(
        parse_verified_claims_value(&Value::Array(many), &AssuranceLimits::default()),
        Err(AssuranceError::TooMany { ref path, .. }) if path == "verified_claims"
    ));
    let evidence: Vec<Value> = (0..10_000).map(|_| json!({"type": "document"})).collect();
    let v = json!({"verification": {"trust_framework": "x", "evidence": evidence}, "claims": {}});
    assert!(matches!(
        VerifiedClaims::from_value(v),
        Err(AssuranceError::TooMany { ref path, .. }) if path == "verified_claims.verification.evidence"
    ));
    let big: Vec<Value> = (0..10_000).map(Value::from).collect();
    let v = json!({"verification": {"trust_framework": "x"}, "claims": {"nationalities": big}});
    assert!(matches!(
        VerifiedClaims::from_value(v),
        Err(AssuranceError::TooMany { .. })
    ));
    let members: Map<String, Value> = (0..10_000)
        .map(|i| (format!("c{i}"), Value::Null))
        .collect();
    let v = json!({"verification": {"trust_framework": "x"}, "claims": members});
    assert!(matches!(
        VerifiedClaims::from_value(v),
        Err(AssuranceError::TooMany { .. })
    ));
}

#[test]
fn arbitrary_junk_never_panics() {
    // A small deterministic generator of odd shapes at every position of an element.
    let junk = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5),
        json!(""),
        json!("2021-01-01T00:00Z"),
        json!([]),
        json!({}),
        json!([null]),
        json!({"type": null}),
        json!({"type": "document"}),
        json!(u64::MAX),
        json!("\u{0000}"),
    ];
    let keys = [
        "trust_framework",
        "time",
        "evidence",
        "assurance_process",
        "assurance_level",
        "verification_process",
    ];
    for k in keys {
        for j in &junk {
            let mut verification = obj(json!({"trust_framework": "x"}));
            verification.insert(k.into(), j.clone());
            let _ = VerifiedClaims::from_value(json!({"verification": verification, "claims": {}}));
            let ev = json!({"type": "document", "check_details": j, "document_details": j, "attachments": [j]});
            let _ = VerifiedClaims::from_value(
                json!({"verification": {"trust_framework": "x", "evidence": [ev]}, "claims": {}}),
            );
            let _ = parse_verified_claims_value(j, &AssuranceLimits::default());
        }
    }
}

// ------------------------------------------------------------ issue 22, finding 9

/// A `verification.time` in the future passed `max_age` (its age counted as 0).
#[test]
fn verification_time_in_the_future_is_refused() {
    let skew = oidc_dtr::assurance::VERIFICATION_TIME_SKEW_SECS;
    assert_eq!(skew, 60);
    // An hour ahead: refused with and without max_age, and with no request at all.
    for requests in [vec![wants_gold().max_age(3600)], vec![wants_gold()], vec![]] {
        assert_eq!(
            check_verified_claims(&requests, &[gold_doc("2024-01-01T01:00:00Z")], NOW),
            Err(AssuranceError::VerificationInFuture {
                index: 0,
                ahead: 3600
            })
        );
    }
    // Far ahead (year 9999) does not overflow.
    assert!(matches!(
        check_verified_claims(&[wants_gold().max_age(60)], &[gold_doc("9999-12-31")], NOW),
        Err(AssuranceError::VerificationInFuture { .. })
    ));
    // Within the skew: accepted.
    check_verified_claims(
        &[wants_gold().max_age(3600)],
        &[gold_doc("2024-01-01T00:01:00Z")],
        NOW,
    )
    .unwrap();
    assert!(matches!(
        check_verified_claims(&[wants_gold()], &[gold_doc("2024-01-01T00:01:01Z")], NOW),
        Err(AssuranceError::VerificationInFuture { ahead: 61, .. })
    ));
    // A plain date of today, or a minute-precision time of this minute, covers
    // now: its first second counts, so it is not "in the future".
    check_verified_claims(&[wants_gold().max_age(60)], &[gold_doc("2024-01-01")], NOW).unwrap();
    check_verified_claims(
        &[wants_gold().max_age(60)],
        &[gold_doc("2024-01-01T00:00Z")],
        NOW,
    )
    .unwrap();
    // The second element is the one named.
    assert!(matches!(
        check_verified_claims(
            &[wants_gold()],
            &[gold_doc("2023-12-01"), gold_doc("2024-01-02")],
            NOW
        ),
        Err(AssuranceError::VerificationInFuture { index: 1, .. })
    ));
}

/// An element with `"claims": {}` satisfied a request.
#[test]
fn an_element_without_claims_satisfies_no_request() {
    let empty = element(json!({
        "verification": {"trust_framework": "gold", "time": "2023-12-01"},
        "claims": {}
    }));
    let err = check_verified_claims(
        &[wants_gold()],
        &[gold_doc("2023-12-01"), empty.clone()],
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        err,
        AssuranceError::EmptyClaims {
            path: "verified_claims[1].claims".into()
        }
    );
    assert!(
        err.to_string().contains("verified_claims[1].claims"),
        "{err}"
    );
    // With nothing requested it is reported as it came (the specification's
    // minimal example has one), satisfying nothing.
    let got = check_verified_claims(&[], &[empty], NOW).unwrap();
    assert!(got.requested.is_empty());
    assert!(got.unrequested[0].claims.is_empty());
    // An element none of whose claims was asked for satisfies no request either.
    let only_birthdate = element(json!({
        "verification": {"trust_framework": "gold"},
        "claims": {"birthdate": "1956-01-28"}
    }));
    let got = check_verified_claims(&[wants_gold()], &[only_birthdate], NOW).unwrap();
    assert!(got.requested.is_empty(), "{:?}", got.requested);
    assert_eq!(got.unrequested[0].claims.len(), 1);
    assert!(got.get("birthdate").is_none());
}

/// An evidence attachment `url` of `javascript:` was accepted.
#[test]
fn attachment_urls_must_be_https() {
    let with_url = |url: &str| {
        VerifiedClaims::from_value(json!({
            "verification": {"trust_framework": "x", "evidence": [{"type": "document",
                "attachments": [{"url": url, "access_token": "secret-at",
                    "digest": {"alg": "sha-256", "value": "qC1zE5AfxylOFLrCnOIURXJUvnZwSFe5uUj8t6hdQVM="}}]}]},
            "claims": {"given_name": "Max"}
        }))
    };
    with_url("https://op.example/attachments/1?t=2").unwrap();
    for bad in [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<script>1</script>",
        "http://op.example/a",
        "file:///etc/passwd",
        "ftp://op.example/a",
        "/relative/path",
        "https://op.example/a\nb",
        "https://op.example/\u{202E}a",
        "https://",
    ] {
        let err = with_url(bad).unwrap_err();
        assert_eq!(
            err,
            AssuranceError::InsecureAttachmentUrl {
                path: "verified_claims.verification.evidence[0].attachments[0].url".into()
            },
            "{bad:?}"
        );
        assert!(!err.to_string().contains("secret-at"), "{err}");
        assert!(!err.to_string().contains("javascript"), "{err}");
    }
}

/// Duplicate members inside `verified_claims` were accepted, the last one winning.
#[test]
fn duplicate_members_in_a_verified_claims_text_are_refused() {
    for text in [
        r#"{"sub":"1","verified_claims":{"verification":{"trust_framework":"gold"},"claims":{"given_name":"Max"},"claims":{}}}"#,
        r#"{"sub":"1","verified_claims":{"verification":{"trust_framework":"gold"},"claims":{"given_name":"Max","given_name":"Eve"}}}"#,
        r#"{"sub":"1","sub":"2"}"#,
    ] {
        assert!(
            matches!(
                ReceivedClaims::from_json_str(text, &AssuranceLimits::default()),
                Err(AssuranceError::DuplicateMember { .. })
            ),
            "{text}"
        );
    }
    let err = ReceivedClaims::from_json_str(
        r#"{"verified_claims":{"verification":{"trust_framework":"a","trust_framework":"b"},"claims":{"x":1}}}"#,
        &AssuranceLimits::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        AssuranceError::DuplicateMember {
            name: "trust_framework".into()
        }
    );
}
