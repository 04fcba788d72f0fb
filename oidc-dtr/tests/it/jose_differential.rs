//! Differential tests against an independent JOSE implementation
//! (`jsonwebtoken`, a dev-dependency): tokens it signs verify here, tokens
//! and DPoP proofs signed here verify there, and both compute the same JWK
//! thumbprints (RFC 7638). A misunderstanding shared by our signer and our
//! verifier cannot hide from this.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken as jwt;
use oidc_dtr::{
    UnixTime,
    jose::{Algorithm, DpopKey, KeySet, SigningKey},
    secret::{Nonce, RawJwt},
    tokens::{IdTokenValidator, ValidationContext, ValidationOptions},
};
use serde_json::{Map, Value, json};

const NOW: u64 = 1_800_000_000;

const PAIRS: &[(Algorithm, jwt::Algorithm)] = &[
    (Algorithm::RS256, jwt::Algorithm::RS256),
    (Algorithm::PS256, jwt::Algorithm::PS256),
    (Algorithm::ES256, jwt::Algorithm::ES256),
    (Algorithm::ES384, jwt::Algorithm::ES384),
    (Algorithm::EdDSA, jwt::Algorithm::EdDSA),
];

fn pem(der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

fn their_encoding_key(ours: &SigningKey) -> jwt::EncodingKey {
    let pem = pem(&ours.to_pkcs8_der().unwrap());
    match ours.algorithm() {
        Algorithm::ES256 | Algorithm::ES384 => jwt::EncodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => jwt::EncodingKey::from_ed_pem(pem.as_bytes()),
        _ => jwt::EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .unwrap()
}

fn their_decoding_key(jwk: &Value) -> jwt::DecodingKey {
    let jwk: jwt::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    jwt::DecodingKey::from_jwk(&jwk).unwrap()
}

fn claims() -> Value {
    json!({
        "iss": "https://op.example",
        "sub": "user-1",
        "aud": "client",
        "exp": NOW + 600,
        "iat": NOW,
        "nonce": "n-0S6_WzA2Mj",
    })
}

fn validator(alg: Algorithm) -> IdTokenValidator {
    IdTokenValidator::new(
        "https://op.example",
        "client",
        ValidationOptions::default().algorithms([alg]),
        None,
        None,
    )
    .unwrap()
}

#[test]
fn tokens_they_sign_verify_here() {
    for &(ours, theirs) in PAIRS {
        let key = SigningKey::generate(ours).unwrap().with_kid("k1");
        let mut header = jwt::Header::new(theirs);
        header.kid = Some("k1".into());
        let token = jwt::encode(&header, &claims(), &their_encoding_key(&key)).unwrap();
        let keys = KeySet::from_keys([key.public_jwk().unwrap()], &[ours]);
        let ctx = ValidationContext::new(Nonce::new("n-0S6_WzA2Mj"), UnixTime::from_secs(NOW));
        let t = validator(ours)
            .validate(
                &RawJwt::new(&token),
                &keys,
                &ctx,
                None,
                UnixTime::from_secs(NOW),
            )
            .unwrap_or_else(|e| panic!("{ours}: {e}"));
        assert_eq!(t.claims().subject(), "user-1", "{ours}");
        // One flipped signature bit: refused here too.
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        sig[3] ^= 0x40;
        let bad = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
        assert!(
            validator(ours)
                .validate(
                    &RawJwt::new(&bad),
                    &keys,
                    &ctx,
                    None,
                    UnixTime::from_secs(NOW)
                )
                .is_err(),
            "{ours}"
        );
    }
}

#[test]
fn tokens_we_sign_verify_there() {
    for &(ours, theirs) in PAIRS {
        let key = SigningKey::generate(ours).unwrap().with_kid("k1");
        let mut header = Map::new();
        header.insert("typ".into(), json!("JWT"));
        let token = key.sign_jwt(header, &claims()).unwrap();
        let mut v = jwt::Validation::new(theirs);
        v.set_audience(&["client"]);
        v.set_issuer(&["https://op.example"]);
        v.validate_exp = false;
        let data =
            jwt::decode::<Value>(&token, &their_decoding_key(&key.public_jwk().unwrap()), &v)
                .unwrap_or_else(|e| panic!("{ours}: {e}"));
        assert_eq!(data.claims["sub"], "user-1");
        assert_eq!(data.header.alg, theirs);
        assert_eq!(data.header.kid.as_deref(), Some("k1"));
    }
}

#[test]
fn dpop_proofs_verify_there_and_thumbprints_agree() {
    let mut checked = 0;
    for alg in [
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::PS256,
    ] {
        let Ok(dpop) = DpopKey::generate(alg) else {
            continue;
        };
        let url = url::Url::parse("https://op.example/token?x=1").unwrap();
        let proof = dpop
            .proof(
                &http::Method::POST,
                &url,
                UnixTime::from_secs(NOW),
                "jti-1",
                Some("nonce-1"),
                None,
            )
            .unwrap();
        let header = jwt::decode_header(&proof).unwrap();
        assert_eq!(header.typ.as_deref(), Some("dpop+jwt"));
        let jwk = header.jwk.expect("the proof carries its public key");
        let mut v = jwt::Validation::new(header.alg);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        let data = jwt::decode::<Value>(&proof, &jwt::DecodingKey::from_jwk(&jwk).unwrap(), &v)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(data.claims["htm"], "POST");
        assert_eq!(data.claims["htu"], "https://op.example/token");
        assert_eq!(data.claims["nonce"], "nonce-1");
        assert_eq!(
            jwk.thumbprint(jwt::jwk::ThumbprintHash::SHA256),
            dpop.thumbprint(),
            "{alg}"
        );
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} DPoP algorithms checked");
}

#[test]
fn thumbprints_of_every_key_type_agree() {
    let mut checked = 0;
    for &(ours, _) in PAIRS {
        let key = SigningKey::generate(ours).unwrap();
        let theirs: jwt::jwk::Jwk = serde_json::from_value(key.public_jwk().unwrap()).unwrap();
        let Ok(dpop) = DpopKey::from_signing_key(key) else {
            continue;
        };
        assert_eq!(
            theirs.thumbprint(jwt::jwk::ThumbprintHash::SHA256),
            dpop.thumbprint(),
            "{ours}"
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} key types checked");
}
