use super::*;
use crate::jose::{SigningKey, b64, half_hash};
use crate::secret::Nonce;
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

const ISS: &str = "https://op.example";
const CLIENT: &str = "client-1";
const NONCE: &str = "n-0S6_WzA2Mj";
const NOW: u64 = 1_900_000_000;
const AT: &str = "jHkWEdUXMU1BwAsC4vtUsZwnNHy1Pr3X";

fn rsa() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| {
        SigningKey::generate(Algorithm::RS256)
            .unwrap()
            .with_kid("rsa-1")
    })
}

fn keys() -> KeySet {
    let ec = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("ec-1");
    KeySet::from_keys(
        [rsa().public_jwk().unwrap(), ec.public_jwk().unwrap()],
        &Algorithm::ALL,
    )
}

fn claims() -> Value {
    json!({
        "iss": ISS,
        "sub": "user-1",
        "aud": CLIENT,
        "exp": NOW + 600,
        "iat": NOW,
        "nonce": NONCE,
        "auth_time": NOW - 100,
        "at_hash": half_hash(Algorithm::RS256, AT),
    })
}

fn ctx() -> ValidationContext {
    ValidationContext::new(Nonce::new(NONCE), UnixTime::from_secs(NOW - 200))
}

fn validator(opts: ValidationOptions) -> IdTokenValidator {
    IdTokenValidator::new(ISS, CLIENT, opts, None, Some(&ClientSecret::new("s3cr3t"))).unwrap()
}

fn sign(c: &Value) -> RawJwt {
    RawJwt::new(rsa().sign_jwt(Map::new(), c).unwrap())
}

fn run_with(
    v: &IdTokenValidator,
    token: &RawJwt,
    ctx: &ValidationContext,
) -> Result<IdToken, ValidationError> {
    v.validate(
        token,
        &keys(),
        ctx,
        Some(&AccessToken::new(AT)),
        UnixTime::from_secs(NOW),
    )
}

fn run(token: &RawJwt) -> Result<IdToken, ValidationError> {
    run_with(&validator(ValidationOptions::default()), token, &ctx())
}

fn with(f: impl FnOnce(&mut Map<String, Value>)) -> RawJwt {
    let mut c = claims();
    f(c.as_object_mut().unwrap());
    sign(&c)
}

#[test]
fn a_good_token_validates() {
    let raw = sign(&claims());
    let t = run(&raw).unwrap();
    assert_eq!(t.claims().subject(), "user-1");
    assert_eq!(t.raw(), &raw);
}

/// Decoding the claim accepts exactly the one encoding of the half hash.
#[test]
fn at_hash_decoded_matches_only_the_encoding() {
    for alg in Algorithm::ALL {
        let good = half_hash(alg, AT);
        assert!(half_hash_matches(alg, AT, &good), "{alg}");
        assert!(!half_hash_matches(alg, "other", &good), "{alg}");
        let mut padded = good.clone();
        padded.push('=');
        assert!(!half_hash_matches(alg, AT, &padded), "{alg}");
        assert!(
            !half_hash_matches(alg, AT, &good[..good.len() - 1]),
            "{alg}"
        );
        assert!(!half_hash_matches(alg, AT, ""), "{alg}");
        // The last character carries unused low bits (16, 24 or 32 bytes
        // are not a multiple of 3): another character with the same top
        // bits decodes to the same bytes in a lax decoder, never here.
        let last = good.as_bytes()[good.len() - 1];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for &c in alphabet.iter().filter(|&&c| c != last) {
            let mut other = good.clone().into_bytes();
            *other.last_mut().unwrap() = c;
            let other = String::from_utf8(other).unwrap();
            assert!(!half_hash_matches(alg, AT, &other), "{alg} {other}");
        }
        let mut plus = good.clone().into_bytes();
        plus[0] = b'+';
        assert!(!half_hash_matches(
            alg,
            AT,
            std::str::from_utf8(&plus).unwrap()
        ));
    }
}

#[test]
fn jwe_is_refused() {
    let h = b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#);
    assert_eq!(
        run(&RawJwt::new(format!("{h}.a.b.c.d"))).unwrap_err(),
        ValidationError::Jwe
    );
}

#[test]
fn alg_none_is_refused() {
    let t = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(claims().to_string().as_bytes())
    );
    assert_eq!(
        run(&RawJwt::new(t)).unwrap_err(),
        ValidationError::AlgorithmNotAllowed { alg: "none".into() }
    );
}

#[test]
fn alg_outside_the_allow_list_is_refused() {
    // A valid ES256 token, but only RS256 is allowed.
    let ec = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("ec-x");
    let set = KeySet::from_keys([ec.public_jwk().unwrap()], &Algorithm::ALL);
    let t = RawJwt::new(ec.sign_jwt(Map::new(), &claims()).unwrap());
    let v = validator(ValidationOptions::default());
    assert_eq!(
        v.validate(&t, &set, &ctx(), None, UnixTime::from_secs(NOW))
            .unwrap_err(),
        ValidationError::AlgorithmNotAllowed {
            alg: "ES256".into()
        }
    );
    let v = validator(ValidationOptions::default().algorithms([Algorithm::ES256]));
    assert!(
        v.validate(&t, &set, &ctx(), None, UnixTime::from_secs(NOW))
            .is_ok()
    );
}

#[test]
fn allow_list_is_intersected_with_the_op_list() {
    let op = vec!["RS256".to_owned(), "ES256".to_owned()];
    let v = IdTokenValidator::new(
        ISS,
        CLIENT,
        ValidationOptions::default().algorithms([Algorithm::ES256, Algorithm::PS256]),
        Some(&op),
        None,
    )
    .unwrap();
    assert_eq!(v.allowed_algorithms(), [Algorithm::ES256]);
    let e = IdTokenValidator::new(
        ISS,
        CLIENT,
        ValidationOptions::default().algorithms([Algorithm::PS256]),
        Some(&op),
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("id_token_signing_alg_values_supported"),
        "{e}"
    );
    assert!(
        IdTokenValidator::new(
            ISS,
            CLIENT,
            ValidationOptions::default().algorithms([]),
            None,
            None
        )
        .is_err()
    );
}

#[test]
fn hmac_needs_a_secret_and_uses_it() {
    let e = IdTokenValidator::new(
        ISS,
        CLIENT,
        ValidationOptions::default().algorithms([Algorithm::HS256]),
        None,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("client secret"), "{e}");
    let v = validator(ValidationOptions::default().algorithms([Algorithm::HS256]));
    let mut c = claims();
    c["at_hash"] = json!(half_hash(Algorithm::HS256, AT));
    let good = SigningKey::hmac(Algorithm::HS256, b"s3cr3t").unwrap();
    let t = RawJwt::new(good.sign_jwt(Map::new(), &c).unwrap());
    assert!(run_with(&v, &t, &ctx()).is_ok());
    let bad = SigningKey::hmac(Algorithm::HS256, b"guess").unwrap();
    let t = RawJwt::new(bad.sign_jwt(Map::new(), &c).unwrap());
    assert_eq!(
        run_with(&v, &t, &ctx()).unwrap_err(),
        ValidationError::Signature
    );
    // HS256 is not in the default list: refused even with a secret.
    let t = RawJwt::new(good.sign_jwt(Map::new(), &c).unwrap());
    assert_eq!(
        run(&t).unwrap_err(),
        ValidationError::AlgorithmNotAllowed {
            alg: "HS256".into()
        }
    );
}

#[test]
fn bad_signature() {
    let t = sign(&claims());
    let (input, sig) = t.secret().rsplit_once('.').unwrap();
    let mut bytes = crate::jose::b64_decode(sig).unwrap();
    bytes[10] ^= 1;
    let forged = RawJwt::new(format!("{input}.{}", b64(&bytes)));
    assert_eq!(run(&forged).unwrap_err(), ValidationError::Signature);
    // A valid signature over other claims does not carry over.
    let other = with(|c| {
        c.insert("sub".into(), json!("admin"));
    });
    let (other_input, _) = other.secret().rsplit_once('.').unwrap();
    let spliced = RawJwt::new(format!("{other_input}.{sig}"));
    assert_eq!(run(&spliced).unwrap_err(), ValidationError::Signature);
}

#[test]
fn kid_selection() {
    // Unknown kid.
    let stranger = SigningKey::generate(Algorithm::RS256)
        .unwrap()
        .with_kid("rotated-away");
    let t = RawJwt::new(stranger.sign_jwt(Map::new(), &claims()).unwrap());
    assert_eq!(
        run(&t).unwrap_err(),
        ValidationError::UnknownKid {
            kid: "rotated-away".into()
        }
    );
    // No kid: the single RSA key of the set is used.
    let no_kid =
        SigningKey::from_pkcs8_der(Algorithm::RS256, &rsa().to_pkcs8_der().unwrap()).unwrap();
    let t = RawJwt::new(no_kid.sign_jwt(Map::new(), &claims()).unwrap());
    assert!(run(&t).is_ok());
    // No kid and two RSA keys: ambiguous.
    let two = KeySet::from_keys(
        [rsa().public_jwk().unwrap(), stranger.public_jwk().unwrap()],
        &Algorithm::ALL,
    );
    let v = validator(ValidationOptions::default());
    assert!(matches!(
        v.validate(&t, &two, &ctx(), None, UnixTime::from_secs(NOW)),
        Err(ValidationError::AmbiguousKey { candidates: 2, .. })
    ));
    // A kid naming a key of another type.
    let ec_kid = SigningKey::from_pkcs8_der(Algorithm::RS256, &rsa().to_pkcs8_der().unwrap())
        .unwrap()
        .with_kid("ec-1");
    let t = RawJwt::new(ec_kid.sign_jwt(Map::new(), &claims()).unwrap());
    assert!(matches!(
        run(&t).unwrap_err(),
        ValidationError::KeyMismatch { .. }
    ));
}

#[test]
fn crit_header_is_refused() {
    let mut h = Map::new();
    h.insert("crit".into(), json!(["b64"]));
    h.insert("b64".into(), json!(false));
    let t = RawJwt::new(rsa().sign_jwt(h, &claims()).unwrap());
    assert_eq!(
        run(&t).unwrap_err(),
        ValidationError::CritHeader {
            names: vec!["b64".into()]
        }
    );
}

#[test]
fn typ_of_another_token_is_refused() {
    let mut h = Map::new();
    h.insert("typ".into(), json!("at+jwt"));
    let t = RawJwt::new(rsa().sign_jwt(h, &claims()).unwrap());
    assert!(matches!(run(&t).unwrap_err(), ValidationError::Type { .. }));
    let mut h = Map::new();
    h.insert("typ".into(), json!("JWT"));
    assert!(run(&RawJwt::new(rsa().sign_jwt(h, &claims()).unwrap())).is_ok());
}

#[test]
fn issuer_must_match_exactly() {
    for iss in [
        "https://evil.example",
        "https://op.example/",
        "HTTPS://OP.EXAMPLE",
    ] {
        let t = with(|c| {
            c.insert("iss".into(), json!(iss));
        });
        assert_eq!(
            run(&t).unwrap_err(),
            ValidationError::Issuer {
                expected: ISS.into(),
                found: iss.into()
            }
        );
    }
}

#[test]
fn audience_must_contain_the_client() {
    let t = with(|c| {
        c.insert("aud".into(), json!("someone-else"));
    });
    assert_eq!(
        run(&t).unwrap_err(),
        ValidationError::Audience {
            client_id: CLIENT.into()
        }
    );
    let t = with(|c| {
        c.insert("aud".into(), json!(["x", "y"]));
    });
    assert!(matches!(
        run(&t).unwrap_err(),
        ValidationError::Audience { .. }
    ));
}

#[test]
fn other_audiences_must_be_trusted() {
    let t = with(|c| {
        c.insert("aud".into(), json!([CLIENT, "api://other"]));
        c.insert("azp".into(), json!(CLIENT));
    });
    assert_eq!(
        run(&t).unwrap_err(),
        ValidationError::UntrustedAudience {
            audience: "api://other".into()
        }
    );
    let v = validator(ValidationOptions::default().trust_audience("api://other"));
    assert!(run_with(&v, &t, &ctx()).is_ok());
}

#[test]
fn azp_rules() {
    let v = validator(ValidationOptions::default().trust_audience("api://other"));
    // Several audiences, no azp.
    let t = with(|c| {
        c.insert("aud".into(), json!([CLIENT, "api://other"]));
    });
    assert_eq!(
        run_with(&v, &t, &ctx()).unwrap_err(),
        ValidationError::MissingAzp
    );
    // azp present and wrong, with one audience.
    let t = with(|c| {
        c.insert("azp".into(), json!("api://other"));
    });
    assert_eq!(
        run_with(&v, &t, &ctx()).unwrap_err(),
        ValidationError::Azp {
            found: "api://other".into()
        }
    );
    // azp present and right, with one audience.
    let t = with(|c| {
        c.insert("azp".into(), json!(CLIENT));
    });
    assert!(run_with(&v, &t, &ctx()).is_ok());
}

#[test]
fn exp_with_leeway() {
    // Expired 30 s ago: inside the default 60 s leeway.
    let t = with(|c| {
        c.insert("exp".into(), json!(NOW - 30));
    });
    assert!(run(&t).is_ok());
    let t = with(|c| {
        c.insert("exp".into(), json!(NOW - 60));
    });
    assert_eq!(
        run(&t).unwrap_err(),
        ValidationError::Expired {
            exp: (NOW - 60) as i64,
            now: NOW as i64
        }
    );
    let strict = validator(ValidationOptions::default().exp_leeway(Duration::ZERO));
    let t = with(|c| {
        c.insert("exp".into(), json!(NOW));
    });
    assert!(matches!(
        run_with(&strict, &t, &ctx()).unwrap_err(),
        ValidationError::Expired { .. }
    ));
    // The exp leeway does not loosen iat (zitadel/oidc#740).
    let t = with(|c| {
        c.insert("iat".into(), json!(NOW + 120));
    });
    let loose_exp = validator(ValidationOptions::default().exp_leeway(Duration::from_secs(3600)));
    assert!(matches!(
        run_with(&loose_exp, &t, &ctx()).unwrap_err(),
        ValidationError::IssuedInFuture { .. }
    ));
}

#[test]
fn nbf_with_leeway() {
    let t = with(|c| {
        c.insert("nbf".into(), json!(NOW + 30));
    });
    assert!(run(&t).is_ok());
    let t = with(|c| {
        c.insert("nbf".into(), json!(NOW + 61));
    });
    assert_eq!(
        run(&t).unwrap_err(),
        ValidationError::NotYetValid {
            nbf: (NOW + 61) as i64,
            now: NOW as i64
        }
    );
}

#[test]
fn iat_far_in_the_past_is_refused() {
    let day = 24 * 3600;
    assert!(
        run(&with(|c| {
            c.insert("iat".into(), json!(NOW - day));
        }))
        .is_ok()
    );
    assert_eq!(
        run(&with(|c| {
            c.insert("iat".into(), json!(NOW - day - 1));
        }))
        .unwrap_err(),
        ValidationError::IssuedTooLongAgo {
            iat: (NOW - day - 1) as i64,
            now: NOW as i64,
        }
    );
}

#[test]
fn auth_time_in_the_future_is_refused() {
    assert!(
        run(&with(|c| {
            c.insert("auth_time".into(), json!(NOW + 60));
        }))
        .is_ok()
    );
    assert_eq!(
        run(&with(|c| {
            c.insert("auth_time".into(), json!(NOW + 61));
        }))
        .unwrap_err(),
        ValidationError::AuthTimeInFuture {
            auth_time: (NOW + 61) as i64,
            now: NOW as i64,
        }
    );
}

#[test]
fn iat_in_the_future() {
    let t = with(|c| {
        c.insert("iat".into(), json!(NOW + 60));
    });
    assert!(run(&t).is_ok());
    let t = with(|c| {
        c.insert("iat".into(), json!(NOW + 61));
    });
    assert_eq!(
        run(&t).unwrap_err(),
        ValidationError::IssuedInFuture {
            iat: (NOW + 61) as i64,
            now: NOW as i64
        }
    );
}

#[test]
fn nonce_missing_or_wrong() {
    let t = with(|c| {
        c.remove("nonce");
    });
    assert_eq!(run(&t).unwrap_err(), ValidationError::MissingNonce);
    for wrong in ["n-0S6_WzA2Mk", "n-0S6_WzA2M", "", "n-0S6_WzA2Mj "] {
        let t = with(|c| {
            c.insert("nonce".into(), json!(wrong));
        });
        assert_eq!(run(&t).unwrap_err(), ValidationError::Nonce, "{wrong:?}");
    }
}

#[test]
fn at_hash_checked_when_both_present() {
    let t = with(|c| {
        c.insert(
            "at_hash".into(),
            json!(half_hash(Algorithm::RS256, "other")),
        );
    });
    assert_eq!(run(&t).unwrap_err(), ValidationError::AtHash);
    // No access token (an interim ID token): at_hash is not checked.
    let v = validator(ValidationOptions::default());
    assert!(
        v.validate(&t, &keys(), &ctx(), None, UnixTime::from_secs(NOW))
            .is_ok()
    );
    // No at_hash: fine (the code flow's token-endpoint ID token).
    let t = with(|c| {
        c.remove("at_hash");
    });
    assert!(run(&t).is_ok());
}

#[test]
fn auth_time_and_max_age_relative_to_the_request() {
    let requested = UnixTime::from_secs(NOW - 86_400); // asked a day ago
    let ctx = ValidationContext::new(Nonce::new(NONCE), requested).with_max_age(Some(300));
    let v = validator(ValidationOptions::default());
    // Authenticated 100 s before the request: fine, though a day before now.
    let t = with(|c| {
        c.insert("auth_time".into(), json!(NOW - 86_400 - 100));
    });
    assert!(run_with(&v, &t, &ctx).is_ok());
    // Authenticated 400 s before the request (+60 s leeway still short).
    let t = with(|c| {
        c.insert("auth_time".into(), json!(NOW - 86_400 - 400));
    });
    assert_eq!(
        run_with(&v, &t, &ctx).unwrap_err(),
        ValidationError::MaxAgeExceeded {
            auth_time: (NOW - 86_400 - 400) as i64,
            max_age: 300,
            requested_at: (NOW - 86_400) as i64
        }
    );
    // Switched off.
    let off = validator(ValidationOptions::default().enforce_max_age(false));
    assert!(run_with(&off, &t, &ctx).is_ok());
    // Missing auth_time.
    let t = with(|c| {
        c.remove("auth_time");
    });
    assert_eq!(
        run_with(&v, &t, &ctx).unwrap_err(),
        ValidationError::MissingAuthTime
    );
    // Without max_age, auth_time is optional.
    assert!(run(&t).is_ok());
}

#[test]
fn subject_must_match_the_interim_token() {
    let ctx = ctx().with_expected_subject(Some("user-1".into()));
    let v = validator(ValidationOptions::default());
    assert!(run_with(&v, &sign(&claims()), &ctx).is_ok());
    let t = with(|c| {
        c.insert("sub".into(), json!("user-2"));
    });
    assert_eq!(
        run_with(&v, &t, &ctx).unwrap_err(),
        ValidationError::SubjectChanged
    );
    let off = validator(ValidationOptions::default().require_same_subject(false));
    assert!(run_with(&off, &t, &ctx).is_ok());
}

#[test]
fn missing_and_mistyped_claims_are_named() {
    let t = with(|c| {
        c.remove("exp");
    });
    assert_eq!(
        run(&t).unwrap_err(),
        ValidationError::MissingClaim {
            claim: "exp".into()
        }
    );
    let t = with(|c| {
        c.insert("iat".into(), json!("now"));
    });
    assert!(matches!(
        run(&t).unwrap_err(),
        ValidationError::InvalidClaim { claim, .. } if claim == "iat"
    ));
    // A payload that is not JSON, signed properly.
    let h = b64(br#"{"alg":"RS256","kid":"rsa-1"}"#);
    let input = format!("{h}.{}", b64(b"not json"));
    let sig = rsa().sign(input.as_bytes()).unwrap();
    let t = RawJwt::new(format!("{input}.{}", b64(&sig)));
    assert!(matches!(
        run(&t).unwrap_err(),
        ValidationError::Malformed { part, .. } if part == "claims"
    ));
}

/// Issue 22: a correctly signed ID token whose payload repeats a member
/// inside a non-registered claim or inside `verified_claims` was
/// accepted, the last one winning.
#[test]
fn duplicate_members_at_any_depth_fail_validation() {
    let good = claims().to_string();
    let head = &good[..good.len() - 1];
    for (extra, name) in [
        (r#""email":"a@x","email":"admin@x""#, "email"),
        (r#""address":{"country":"DE","country":"FR"}"#, "country"),
        (
            r#""verified_claims":{"verification":{"trust_framework":"de_aml"},"claims":{"given_name":"Max","given_name":"Eve"}}"#,
            "given_name",
        ),
        (
            r#""verified_claims":[{"verification":{"trust_framework":"de_aml","time":"2020-01-01","time":"2099-01-01"},"claims":{"x":1}}]"#,
            "time",
        ),
    ] {
        let payload = format!("{head},{extra}}}");
        let input = format!(
            "{}.{}",
            crate::jose::b64(br#"{"alg":"RS256","kid":"rsa-1"}"#),
            crate::jose::b64(payload.as_bytes())
        );
        let sig = rsa().sign(input.as_bytes()).unwrap();
        let token = RawJwt::new(format!("{input}.{}", crate::jose::b64(&sig)));
        assert_eq!(
            run(&token).unwrap_err(),
            ValidationError::malformed("claims", format!("the member `{name}` appears twice")),
            "{extra}"
        );
    }
}

#[test]
fn errors_hold_no_secret_claim_values() {
    let t = with(|c| {
        c.insert("nonce".into(), json!("attacker-nonce-value"));
        c.insert("sub".into(), json!("secret-subject"));
    });
    let e = run(&t).unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains("attacker-nonce-value") && !text.contains(NONCE),
        "{text}"
    );
    assert!(!text.contains("secret-subject"), "{text}");
    // Errors survive serde (the store persists failed outcomes).
    let back: ValidationError = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
    assert_eq!(back, e);
}

#[test]
fn hostile_tokens_never_panic() {
    let v = validator(ValidationOptions::default());
    let h = b64(br#"{"alg":"RS256","kid":"rsa-1"}"#);
    for t in [
        String::new(),
        "...".into(),
        format!("{h}.{}.", b64(&[0xff; 40])),
        format!("{h}.!!!.AAAA"),
        format!("{h}.e30.{}", "A".repeat(10_000)),
        format!("{}.e30.AA", b64(br#"{"alg":"RS256","kid":{"x":1}}"#)),
    ] {
        let _ = v.validate(
            &RawJwt::new(t),
            &keys(),
            &ctx(),
            None,
            UnixTime::from_secs(NOW),
        );
    }
}

/// The header segment of a compact token.
fn header_of(t: &RawJwt) -> &str {
    t.secret().split('.').next().unwrap()
}

/// A validated token's header is remembered by the key set that verified
/// it; a later token with the same header text takes the short path and
/// gets the answer the long path gives, success or refusal.
#[test]
fn known_headers_give_the_same_answers() {
    let ks = keys();
    let v = validator(ValidationOptions::default());
    let at = AccessToken::new(AT);
    let now = UnixTime::from_secs(NOW);
    let good = sign(&claims());
    assert!(ks.known_header(header_of(&good)).is_none());
    // A forged signature with this header: refused, and not remembered.
    let (input, _) = good.secret().rsplit_once('.').unwrap();
    let forged = RawJwt::new(format!("{input}.{}", b64(&[7u8; 256])));
    let fresh = keys();
    for ks in [&fresh, &ks] {
        assert_eq!(
            v.validate(&forged, ks, &ctx(), Some(&at), now).unwrap_err(),
            ValidationError::Signature
        );
    }
    assert!(ks.known_header(header_of(&good)).is_none());
    let first = v.validate(&good, &ks, &ctx(), Some(&at), now).unwrap();
    let known = ks.known_header(header_of(&good)).expect("remembered");
    assert_eq!(
        (known.alg, known.kid.as_deref()),
        (Algorithm::RS256, Some("rsa-1"))
    );
    // Another key set has not seen it.
    assert!(keys().known_header(header_of(&good)).is_none());

    // Through the short path: the same claims, and every refusal the
    // long path (a fresh key set) gives, in the same order.
    let second = v.validate(&good, &ks, &ctx(), Some(&at), now).unwrap();
    assert_eq!(first, second);
    let (h, rest) = good.secret().split_once('.').unwrap();
    let (p, _) = rest.split_once('.').unwrap();
    let cases = [
        forged.clone(),
        with(|c| {
            c.insert("iss".into(), json!("https://evil.example"));
        }),
        with(|c| {
            c.insert("exp".into(), json!(NOW - 3600));
        }),
        with(|c| {
            c.insert("nonce".into(), json!("other"));
        }),
        with(|c| {
            c.insert(
                "at_hash".into(),
                json!(half_hash(Algorithm::RS256, "other")),
            );
        }),
        with(|c| {
            c.insert("aud".into(), json!(1));
        }),
        RawJwt::new(format!("{h}.{p}.c2ln==")),
        RawJwt::new(format!("{h}.{p}.c2l+")),
        RawJwt::new(format!("{h}.{p}.c2ln.x")),
        RawJwt::new(format!("{h}.{p}.a.b.c")),
        RawJwt::new(format!("{h}.{p}")),
        RawJwt::new(format!("{h}.e30.{}", b64(&[1u8; 256]))),
        RawJwt::new(format!("{h}.!!!.{}", b64(&[1u8; 256]))),
    ];
    for t in &cases {
        assert!(ks.known_header(header_of(t)).is_some());
        let long = v.validate(t, &keys(), &ctx(), Some(&at), now);
        let short = v.validate(t, &ks, &ctx(), Some(&at), now);
        assert!(long.is_err(), "{t:?}");
        assert_eq!(short.unwrap_err(), long.unwrap_err(), "{t:?}");
    }
    // A validator that does not allow the header's `alg` refuses it, known
    // or not: the allow-list is the validator's, checked on every token.
    let es_only = validator(ValidationOptions::default().algorithms([Algorithm::ES256]));
    for ks in [&ks, &keys()] {
        assert_eq!(
            es_only
                .validate(&good, ks, &ctx(), Some(&at), now)
                .unwrap_err(),
            ValidationError::AlgorithmNotAllowed {
                alg: "RS256".into()
            }
        );
    }
    // A header that differs by one byte of its text is not the known one.
    let other = RawJwt::new(
        rsa()
            .sign_jwt(
                serde_json::from_value(json!({"typ": "JWT"})).unwrap(),
                &claims(),
            )
            .unwrap(),
    );
    assert!(ks.known_header(header_of(&other)).is_none());
    v.validate(&other, &ks, &ctx(), Some(&at), now).unwrap();
    assert!(ks.known_header(header_of(&other)).is_some());
}

/// A few slots, filled once; a header past them still validates (the long
/// way). Threads racing to remember headers leave each at most in the
/// slots, and every token validates.
#[test]
fn known_headers_are_bounded_and_thread_safe() {
    let ks = keys();
    let v = validator(ValidationOptions::default());
    let at = AccessToken::new(AT);
    let now = UnixTime::from_secs(NOW);
    let tokens: Vec<RawJwt> = (0..8)
        .map(|i| {
            let h = serde_json::from_value(json!({ "x": i })).unwrap();
            RawJwt::new(rsa().sign_jwt(h, &claims()).unwrap())
        })
        .collect();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for t in tokens.iter().chain(tokens.iter().rev()) {
                    v.validate(t, &ks, &ctx(), Some(&at), now).unwrap();
                }
            });
        }
    });
    let known = tokens
        .iter()
        .filter(|t| ks.known_header(header_of(t)).is_some())
        .count();
    assert!((1..=4).contains(&known), "{known}");
    for t in &tokens {
        v.validate(t, &ks, &ctx(), Some(&at), now).unwrap();
    }
    // A header too long to be an ordinary one is never remembered.
    let long = serde_json::from_value(json!({ "x": "y".repeat(600) })).unwrap();
    let t = RawJwt::new(rsa().sign_jwt(long, &claims()).unwrap());
    let fresh = keys();
    v.validate(&t, &fresh, &ctx(), Some(&at), now).unwrap();
    assert!(fresh.known_header(header_of(&t)).is_none());
}
