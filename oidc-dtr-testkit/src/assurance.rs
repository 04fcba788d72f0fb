//! Identity assurance (OpenID Connect for Identity Assurance 1.0) on the mock
//! OP: the metadata it advertises, the `verified_claims` it returns for a
//! `claims` request (shaped like the specification's examples), and the ways
//! it can misbehave ([`AssuranceFault`]).
//!
//! The request is read as plain JSON here, not with the SDK's own types, so
//! that a bug in the SDK's request model does not cancel out in the tests.

use serde_json::{Map, Value, json};

use oidc_dtr::UnixTime;

/// The trust frameworks the mock OP supports (`trust_frameworks_supported`).
pub const TRUST_FRAMEWORKS: &[&str] = &["de_aml", "eidas", "uk_tfida", "nist_800_63A"];
/// The evidence types it supports (`evidence_supported`).
pub const EVIDENCE: &[&str] = &["document", "electronic_record"];
/// The document types it supports (`documents_supported`).
pub const DOCUMENTS: &[&str] = &["idcard", "passport", "driving_permit"];
/// The electronic record types it supports (`electronic_records_supported`).
pub const ELECTRONIC_RECORDS: &[&str] = &["population_register", "bank_account"];
/// The claims it can return verified (`claims_in_verified_claims_supported`).
pub const CLAIMS: &[&str] = &[
    "given_name",
    "family_name",
    "birthdate",
    "place_of_birth",
    "nationalities",
    "address",
];
/// How long ago (seconds) the mock OP says the user was verified.
pub const VERIFIED_AGO_SECS: u64 = 86_400;

/// A way for the mock OP to break the rules an RP checks in `verified_claims`
/// ([`OpConfig::assurance_fault`](crate::OpConfig::assurance_fault)). Applied
/// to the first element returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AssuranceFault {
    /// `trust_framework` is one the request did not allow (`xx_unrequested`).
    DisallowedTrustFramework,
    /// `verification.time` is a day older than the requested `max_age`
    /// (ten years old without one).
    StaleVerification,
    /// A verified claim the request did not ask for is added.
    UnrequestedClaims,
    /// `verified_claims` also appears nested inside `address`, where the
    /// specification does not allow it.
    MisplacedVerifiedClaims,
    /// The UserInfo response names another `sub` than the ID token.
    UserInfoOtherSubject,
    /// The UserInfo response is a signed JWT (`application/jwt`).
    UserInfoAsJwt,
}

/// Adds the identity assurance members to the OP metadata.
pub(crate) fn advertise(md: &mut Value) {
    if let Some(m) = md.as_object_mut() {
        m.insert("claims_parameter_supported".into(), json!(true));
        m.insert("verified_claims_supported".into(), json!(true));
        m.insert("trust_frameworks_supported".into(), json!(TRUST_FRAMEWORKS));
        m.insert("evidence_supported".into(), json!(EVIDENCE));
        m.insert("documents_supported".into(), json!(DOCUMENTS));
        m.insert(
            "documents_check_methods_supported".into(),
            json!(["vpip", "vri", "pvp"]),
        );
        m.insert(
            "electronic_records_supported".into(),
            json!(ELECTRONIC_RECORDS),
        );
        m.insert("claims_in_verified_claims_supported".into(), json!(CLAIMS));
    }
}

/// The verified values of the persona every verification is about.
fn persona(name: &str) -> Option<Value> {
    Some(match name {
        "given_name" => json!("Max"),
        "family_name" => json!("Meier"),
        "birthdate" => json!("1956-01-28"),
        "place_of_birth" => json!({"country": "DE", "locality": "Musterstadt"}),
        "nationalities" => json!(["DE"]),
        "address" => json!({
            "locality": "Maxstadt", "postal_code": "12344", "country": "DE",
            "street_address": "An der Weide 22"
        }),
        _ => return None,
    })
}

/// `{"value": x}` / `{"values": [..]}` → the allowed strings (`None`: any).
fn allowed(req: Option<&Value>) -> Option<Vec<String>> {
    let r = req?.as_object()?;
    if let Some(v) = r.get("value").and_then(Value::as_str) {
        return Some(vec![v.to_owned()]);
    }
    let vs = r.get("values")?.as_array()?;
    Some(
        vs.iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
    )
}

/// RFC 3339 (UTC, seconds) of Unix seconds.
fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One `verified_claims` element answering one request element.
fn answer(req: &Value, now: UnixTime) -> Value {
    let ver = req.get("verification");
    let tf = allowed(ver.and_then(|v| v.get("trust_framework")))
        .and_then(|a| {
            a.into_iter()
                .find(|t| TRUST_FRAMEWORKS.contains(&t.as_str()))
        })
        .unwrap_or_else(|| "de_aml".to_owned());
    let level =
        allowed(ver.and_then(|v| v.get("assurance_level"))).and_then(|a| a.first().cloned());
    let wanted_evidence = ver
        .and_then(|v| v.get("evidence"))
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|e| allowed(e.get("type")))
        .and_then(|a| a.first().cloned());
    let electronic = match wanted_evidence.as_deref() {
        Some(t) => t == "electronic_record",
        None => tf == "eidas",
    };
    let evidence = if electronic {
        json!({
            "type": "electronic_record",
            "check_details": [{"check_method": "data", "organization": "TheCheckers"}],
            "time": rfc3339(now.as_secs().saturating_sub(VERIFIED_AGO_SECS)),
            "record": {
                "type": "population_register",
                "source": {"name": "Skatteverket", "country_code": "SWE"},
                "personal_number": "4901224131",
                "created_at": "1979-01-22"
            }
        })
    } else {
        json!({
            "type": "document",
            "check_details": [{"check_method": "vpip", "organization": "TheCheckers",
                "txn": "DE-TXN-1234567890"}],
            "method": "pipp",
            "time": rfc3339(now.as_secs().saturating_sub(VERIFIED_AGO_SECS)),
            "document_details": {
                "type": "idcard",
                "issuer": {"name": "Stadt Augsburg", "country": "DE"},
                "document_number": "53554554",
                "date_of_issuance": "2010-03-23",
                "date_of_expiry": "2030-03-22"
            }
        })
    };
    let mut verification = json!({
        "trust_framework": tf,
        "time": rfc3339(now.as_secs().saturating_sub(VERIFIED_AGO_SECS)),
        "verification_process": "f24c6f-6d3f-4ec5-973e-b0d8506f3bc7",
        "evidence": [evidence],
    });
    if let Some(l) = level {
        verification["assurance_level"] = json!(l);
    }
    let claims: Map<String, Value> = req
        .get("claims")
        .and_then(Value::as_object)
        .map(|c| {
            c.keys()
                .filter_map(|k| persona(k).map(|v| (k.clone(), v)))
                .collect()
        })
        .unwrap_or_default();
    json!({"verification": verification, "claims": claims})
}

/// The `verified_claims` to put in `target` (`id_token` or `userinfo`) for
/// the `claims` request parameter, `None` when none was asked for there.
pub(crate) fn verified_claims(
    claims_param: Option<&str>,
    target: &str,
    now: UnixTime,
    fault: Option<AssuranceFault>,
) -> Option<Value> {
    let req: Value = serde_json::from_str(claims_param?).ok()?;
    let vc = req.get(target)?.get("verified_claims")?;
    let (requests, as_array) = match vc {
        Value::Array(a) => (a.clone(), true),
        Value::Object(_) => (vec![vc.clone()], false),
        _ => return None,
    };
    let mut out: Vec<Value> = requests.iter().map(|r| answer(r, now)).collect();
    if let (Some(fault), Some(first), Some(req0)) = (fault, out.first_mut(), requests.first()) {
        match fault {
            AssuranceFault::DisallowedTrustFramework => {
                first["verification"]["trust_framework"] = json!("xx_unrequested");
            }
            AssuranceFault::StaleVerification => {
                let max_age = req0
                    .pointer("/verification/time/max_age")
                    .and_then(Value::as_u64)
                    .unwrap_or(10 * 365 * 86_400);
                let t = now.as_secs().saturating_sub(max_age + 86_400);
                first["verification"]["time"] = json!(rfc3339(t));
            }
            AssuranceFault::UnrequestedClaims => {
                if let Some(c) = first.get_mut("claims").and_then(Value::as_object_mut)
                    && let Some(extra) = CLAIMS.iter().find(|n| !c.contains_key(**n))
                    && let Some(v) = persona(extra)
                {
                    c.insert((*extra).to_owned(), v);
                }
            }
            AssuranceFault::MisplacedVerifiedClaims
            | AssuranceFault::UserInfoOtherSubject
            | AssuranceFault::UserInfoAsJwt => {}
        }
    }
    Some(if as_array {
        Value::Array(out)
    } else {
        out.into_iter().next().unwrap_or(Value::Null)
    })
}

/// Puts `verified_claims` into a claims object (ID token or UserInfo), and
/// misplaces a copy when `fault` says so.
pub(crate) fn insert(
    claims: &mut Value,
    claims_param: Option<&str>,
    target: &str,
    now: UnixTime,
    fault: Option<AssuranceFault>,
) {
    let Some(vc) = verified_claims(claims_param, target, now, fault) else {
        return;
    };
    if fault == Some(AssuranceFault::MisplacedVerifiedClaims) {
        let mut address = persona("address").unwrap_or_else(|| json!({}));
        address["verified_claims"] = vc.clone();
        claims["address"] = address;
    }
    claims["verified_claims"] = vc;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_620_743_340), "2021-05-11T14:29:00Z");
    }
}
