//! Round-trips of the specification's own example requests and responses
//! (vendored under tests/data/ida/examples, see tests/data/ida/README.md).

use std::fs;
use std::path::PathBuf;

use oidc_dtr::assurance::{
    AssuranceLimits, Attachment, ClaimsRequest, ClaimsTarget, Evidence, ReceivedClaims,
};
use serde_json::Value;

fn examples(kind: &str) -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ida/examples")
        .join(kind);
    let mut out: Vec<(String, Value)> = fs::read_dir(&dir)
        .expect("examples dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = fs::read_to_string(&p).expect("read example");
            let v: Value = serde_json::from_str(&text).expect("example is JSON");
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_request_example_round_trips() {
    let all = examples("request");
    assert!(
        all.len() >= 20,
        "expected the spec's request examples, found {}",
        all.len()
    );
    for (name, original) in all {
        let parsed: ClaimsRequest =
            serde_json::from_value(original.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        parsed.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = parsed.to_json().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, original, "{name}: members lost or changed");
        let vc_count = [ClaimsTarget::IdToken, ClaimsTarget::UserInfo]
            .iter()
            .map(|t| parsed.verified_claims(*t).len())
            .sum::<usize>();
        assert!(vc_count >= 1, "{name}: no verified_claims request parsed");
    }
}

#[test]
fn every_response_example_round_trips() {
    let all = examples("response");
    assert!(
        all.len() >= 25,
        "expected the spec's response examples, found {}",
        all.len()
    );
    let mut typed_elements = 0;
    for (name, original) in all {
        let Value::Object(map) = &original else {
            panic!("{name}: not an object")
        };
        let received = ReceivedClaims::from_claims(map, &AssuranceLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if map.contains_key("verified_claims") {
            assert!(
                !received.verified.is_empty(),
                "{name}: verified_claims not parsed"
            );
        }
        typed_elements += received.verified.len();
        let back = Value::Object(received.to_json().unwrap_or_else(|e| panic!("{name}: {e}")));
        assert_eq!(back, original, "{name}: members lost or changed");
        // Element by element too, through the public Serialize/Deserialize impls.
        for vc in &received.verified {
            let v = serde_json::to_value(vc).expect("serialise");
            let again: oidc_dtr::assurance::VerifiedClaims =
                serde_json::from_value(v.clone()).expect("reparse");
            assert_eq!(&again, vc, "{name}");
        }
    }
    assert!(
        typed_elements >= 25,
        "only {typed_elements} verified_claims elements parsed"
    );
}

/// The examples exercise every evidence type and both attachment forms; make sure they land in
/// the typed variants, not in `Other`.
#[test]
fn examples_cover_every_evidence_type_typed() {
    let mut seen = std::collections::BTreeSet::new();
    for (name, original) in examples("response") {
        let Value::Object(map) = &original else {
            continue;
        };
        let received =
            ReceivedClaims::from_claims(map, &AssuranceLimits::default()).expect("parses");
        for vc in &received.verified {
            for ev in vc.verification.evidence.iter().flatten() {
                let kind = match ev {
                    Evidence::Document(d) => {
                        if let Some(dd) = &d.document_details {
                            assert!(!dd.document_type.is_empty(), "{name}");
                        }
                        "document"
                    }
                    Evidence::ElectronicRecord(_) => "electronic_record",
                    Evidence::Vouch(_) => "vouch",
                    Evidence::ElectronicSignature(_) => "electronic_signature",
                    _ => "other",
                };
                seen.insert(kind.to_owned());
                for a in ev.attachments() {
                    seen.insert(
                        match a {
                            Attachment::Embedded(_) => "embedded",
                            Attachment::External(_) => "external",
                            _ => "other attachment",
                        }
                        .to_owned(),
                    );
                }
            }
        }
    }
    for want in [
        "document",
        "electronic_record",
        "vouch",
        "electronic_signature",
        "embedded",
        "external",
    ] {
        assert!(
            seen.contains(want),
            "no {want} evidence/attachment typed; saw {seen:?}"
        );
    }
    assert!(
        !seen.contains("other"),
        "an example's evidence fell into Other: {seen:?}"
    );
}

#[test]
fn external_attachment_token_is_typed_and_redacted() {
    let text = fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/ida/examples/response/external_attachments.json"),
    )
    .unwrap();
    let received = ReceivedClaims::from_json_str(&text, &AssuranceLimits::default()).unwrap();
    let ev = &received.verified[0].verification.evidence.as_ref().unwrap()[0];
    let Attachment::External(first) = &ev.attachments()[0] else {
        panic!("not external")
    };
    assert_eq!(first.access_token.as_ref().unwrap().secret(), "ksj3n283dke");
    assert_eq!(first.digest.alg, "sha-256");
    assert_eq!(first.exp, Some(1_676_552_089));
    let debug = format!("{received:?}");
    assert!(
        !debug.contains("ksj3n283dke"),
        "access token leaked into Debug"
    );
    assert!(debug.contains("<redacted>"));
    // The third attachment has "access_token": null, which must survive as a null.
    let Attachment::External(third) = &ev.attachments()[2] else {
        panic!("not external")
    };
    assert!(third.access_token.is_none());
    assert_eq!(third.other.get("access_token"), Some(&Value::Null));
}

#[test]
fn eidas_example_reads_typed() {
    let text = fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/ida/examples/response/eidas.json"),
    )
    .unwrap();
    let received = ReceivedClaims::from_json_str(&text, &AssuranceLimits::default()).unwrap();
    let v = &received.verified[0].verification;
    assert_eq!(v.trust_framework, "eidas");
    assert_eq!(v.assurance_level.as_deref(), Some("substantial"));
}
