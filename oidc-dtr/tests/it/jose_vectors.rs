//! The JOSE layer against published vectors, not against its own signer: the
//! JWS examples of RFC 7515 appendix A and RFC 8037, and a subset of
//! Wycheproof (vendored under `tests/data/wycheproof/`). Everything goes
//! through the public `KeySet` (and `IdTokenValidator` for the header rules).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oidc_dtr::{
    UnixTime,
    error::ValidationError,
    jose::{Algorithm, KeySet},
    secret::{Nonce, RawJwt},
    tokens::{IdTokenValidator, ValidationContext, ValidationOptions},
};
use serde_json::{Value, json};

const ALL: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// RFC 7515 A.2 / RFC 7517 A.1: the RSA public key.
const RFC7515_RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
/// The payload of every RFC 7515 appendix A example.
const RFC7515_PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
/// RFC 7515 A.1 (HS256).
const RFC7515_A1: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
/// RFC 7515 A.2 (RS256).
const RFC7515_A2_SIG: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
/// RFC 7515 A.3 (ES256).
const RFC7515_A3_SIG: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
/// RFC 8037 A.4 (Ed25519) and its key (A.1/A.2).
const RFC8037_A4: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

fn split(token: &str) -> (&str, Vec<u8>) {
    let (input, sig) = token.rsplit_once('.').unwrap();
    (input, URL_SAFE_NO_PAD.decode(sig).unwrap())
}

fn verify(jwk: Value, alg: Algorithm, token: &str) -> Result<(), ValidationError> {
    let set = KeySet::from_keys([jwk], ALL);
    assert_eq!(set.len(), 1, "the vector's key is usable");
    let (input, sig) = split(token);
    set.verify(None, alg, input.as_bytes(), &sig)
}

/// Flips one bit of the signature.
fn tampered(token: &str) -> String {
    let (input, mut sig) = split(token);
    sig[10] ^= 1;
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[test]
fn rfc7515_a2_rs256_verifies() {
    let jwk = json!({"kty": "RSA", "n": RFC7515_RSA_N, "e": "AQAB"});
    let token = format!("eyJhbGciOiJSUzI1NiJ9.{RFC7515_PAYLOAD}.{RFC7515_A2_SIG}");
    verify(jwk.clone(), Algorithm::RS256, &token).unwrap();
    assert_eq!(
        verify(jwk.clone(), Algorithm::RS256, &tampered(&token)),
        Err(ValidationError::Signature)
    );
    // The same key and signature under PS256 do not verify.
    assert!(verify(jwk, Algorithm::PS256, &token).is_err());
}

#[test]
fn rfc7515_a3_es256_verifies() {
    let jwk = json!({
        "kty": "EC", "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    });
    let token = format!("eyJhbGciOiJFUzI1NiJ9.{RFC7515_PAYLOAD}.{RFC7515_A3_SIG}");
    verify(jwk.clone(), Algorithm::ES256, &token).unwrap();
    assert_eq!(
        verify(jwk, Algorithm::ES256, &tampered(&token)),
        Err(ValidationError::Signature)
    );
}

#[test]
fn rfc8037_a4_ed25519_verifies() {
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X});
    verify(jwk.clone(), Algorithm::EdDSA, RFC8037_A4).unwrap();
    assert_eq!(
        verify(jwk, Algorithm::EdDSA, &tampered(RFC8037_A4)),
        Err(ValidationError::Signature)
    );
}

fn validator() -> IdTokenValidator {
    IdTokenValidator::new(
        "joe",
        "client",
        ValidationOptions::default().algorithms(ALL.iter().copied()),
        None,
        None,
    )
    .unwrap()
}

fn validate(token: &str, keys: &KeySet) -> Result<oidc_dtr::tokens::IdToken, ValidationError> {
    let ctx = ValidationContext::new(Nonce::new("n"), UnixTime::from_secs(1_300_819_000));
    validator().validate(
        &RawJwt::new(token),
        keys,
        &ctx,
        None,
        UnixTime::from_secs(1_300_819_000),
    )
}

#[test]
fn rfc7515_examples_through_the_id_token_validator() {
    // A.2 and A.3 pass the signature check and fail later, on the claims
    // (no `aud`): the failure names a claim, not the signature.
    let rsa = KeySet::from_keys(
        [json!({"kty": "RSA", "n": RFC7515_RSA_N, "e": "AQAB"})],
        ALL,
    );
    let token = format!("eyJhbGciOiJSUzI1NiJ9.{RFC7515_PAYLOAD}.{RFC7515_A2_SIG}");
    let e = validate(&token, &rsa).unwrap_err();
    assert!(
        !matches!(
            e,
            ValidationError::Signature | ValidationError::Malformed { .. }
        ),
        "{e:?}"
    );
    assert_eq!(
        validate(&tampered(&token), &rsa).unwrap_err(),
        ValidationError::Signature
    );
    // A.1 (HS256): no client secret is configured, so HMAC is refused.
    let e = validate(RFC7515_A1, &rsa).unwrap_err();
    assert!(
        matches!(e, ValidationError::AlgorithmNotAllowed { .. }),
        "{e:?}"
    );
    // A.4 (ES512) is not supported; A.5 (`none`) never is.
    for token in [
        format!("eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.{RFC7515_A3_SIG}"),
        format!("eyJhbGciOiJub25lIn0.{RFC7515_PAYLOAD}."),
    ] {
        let e = validate(&token, &rsa).unwrap_err();
        assert!(
            matches!(
                e,
                ValidationError::AlgorithmNotAllowed { .. } | ValidationError::Malformed { .. }
            ),
            "{token}: {e:?}"
        );
    }
    // An oct JWK never enters a key set.
    let oct = KeySet::from_keys(
        [
            json!({"kty": "oct", "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}),
        ],
        ALL,
    );
    assert!(oct.is_empty());
}

// --- Wycheproof ---------------------------------------------------------

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn load(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/wycheproof")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Runs every test of a vendored Wycheproof file: `valid` must verify,
/// `invalid` must not (`acceptable` may go either way). A key the set
/// refuses counts as "does not verify". Returns (verified, refused).
fn run_wycheproof(name: &str, alg: Algorithm, jwk_of: impl Fn(&Value) -> Value) -> (usize, usize) {
    let doc = load(name);
    let (mut ok, mut refused) = (0, 0);
    for group in doc["testGroups"].as_array().unwrap() {
        let set = KeySet::from_keys([jwk_of(&group["publicKey"])], &[alg]);
        for t in group["tests"].as_array().unwrap() {
            let msg = hex(t["msg"].as_str().unwrap());
            let sig = hex(t["sig"].as_str().unwrap());
            let verified = set.verify(None, alg, &msg, &sig).is_ok();
            let id = &t["tcId"];
            match t["result"].as_str().unwrap() {
                "valid" => assert!(verified, "{name} tcId {id} ({}) must verify", t["comment"]),
                "invalid" => {
                    assert!(
                        !verified,
                        "{name} tcId {id} ({}) must not verify",
                        t["comment"]
                    )
                }
                _ => {}
            }
            if verified {
                ok += 1;
            } else {
                refused += 1;
            }
        }
    }
    (ok, refused)
}

fn ec_jwk(crv: &str, len: usize) -> impl Fn(&Value) -> Value + '_ {
    move |pk| {
        let point = hex(pk["uncompressed"].as_str().unwrap());
        assert_eq!(point.len(), 1 + 2 * len);
        json!({"kty": "EC", "crv": crv, "x": b64(&point[1..1 + len]), "y": b64(&point[1 + len..])})
    }
}

fn rsa_jwk(pk: &Value) -> Value {
    let n = hex(pk["modulus"].as_str().unwrap());
    let e = hex(pk["publicExponent"].as_str().unwrap());
    json!({"kty": "RSA", "n": b64(&n), "e": b64(&e)})
}

#[test]
fn wycheproof_ecdsa_p256_p1363() {
    let (ok, refused) = run_wycheproof(
        "ecdsa_secp256r1_sha256_p1363_test.json",
        Algorithm::ES256,
        ec_jwk("P-256", 32),
    );
    assert!(ok > 50 && refused > 50, "{ok} {refused}");
}

#[test]
fn wycheproof_ecdsa_p384_p1363() {
    let (ok, refused) = run_wycheproof(
        "ecdsa_secp384r1_sha384_p1363_test.json",
        Algorithm::ES384,
        ec_jwk("P-384", 48),
    );
    assert!(ok > 20 && refused > 20, "{ok} {refused}");
}

#[test]
fn wycheproof_rsa_pkcs1_v15_2048_sha256() {
    let (ok, refused) = run_wycheproof(
        "rsa_signature_2048_sha256_test.json",
        Algorithm::RS256,
        rsa_jwk,
    );
    assert!(ok >= 7 && refused > 50, "{ok} {refused}");
}

#[test]
fn wycheproof_rsa_pss_2048_sha256_salt32() {
    let (ok, refused) = run_wycheproof(
        "rsa_pss_2048_sha256_mgf1_32_test.json",
        Algorithm::PS256,
        rsa_jwk,
    );
    assert!(ok > 20 && refused > 5, "{ok} {refused}");
}

#[test]
fn wycheproof_ed25519() {
    let (ok, refused) = run_wycheproof(
        "ed25519_test.json",
        Algorithm::EdDSA,
        |pk| json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&hex(pk["pk"].as_str().unwrap()))}),
    );
    assert!(ok > 50 && refused > 50, "{ok} {refused}");
}

/// RFC 7520 §4 (the JOSE cookbook): §4.1 RS256 and §4.2 PS384 verify with
/// the public half of the cookbook's RSA key; §4.3 (ES512, P-521) and §4.4
/// (HS256 with an `oct` key) are refused cleanly: neither key enters a key
/// set, and the algorithms are not verifiable with one.
#[test]
fn rfc7520_section_4_examples() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc7520/jws.json");
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for (section, alg) in [("4.1", Algorithm::RS256), ("4.2", Algorithm::PS384)] {
        let case = &v[section];
        let token = case["compact"].as_str().unwrap();
        let kid = case["key"]["kid"].as_str();
        let set = KeySet::from_keys([case["key"].clone()], ALL);
        assert_eq!(set.len(), 1, "§{section}: the key is usable");
        let (input, sig) = split(token);
        assert_eq!(
            set.verify(kid, alg, input.as_bytes(), &sig),
            Ok(()),
            "§{section} verifies"
        );
        let bad = tampered(token);
        let (input, sig) = split(&bad);
        assert!(
            set.verify(kid, alg, input.as_bytes(), &sig).is_err(),
            "§{section} tampered"
        );
    }
    for section in ["4.3", "4.4"] {
        let case = &v[section];
        let set = KeySet::from_keys([case["key"].clone()], ALL);
        assert!(set.is_empty(), "§{section}: the key is not usable");
        let token = case["compact"].as_str().unwrap();
        let (input, sig) = split(token);
        for alg in ALL {
            assert!(set.verify(None, *alg, input.as_bytes(), &sig).is_err());
        }
        // Through the ID token validator: refused with an error, no panic.
        assert!(validate(token, &set).is_err(), "§{section}");
    }
}
