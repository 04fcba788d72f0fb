//! ID token validation throughput with a warm JWKS cache, RS256 and ES256.
//!
//! Run: `cargo bench --bench id_token` (figures in BENCHMARKS.md).
//!
//! Three measurements per algorithm:
//!
//! - `aws-lc-rs verify`: the signature check alone, with a pre-parsed key:
//!   the floor no validator can beat;
//! - `validator`: the sans-IO [`IdTokenValidator`] with a parsed
//!   [`KeySet`]: JWS decoding, header checks, key lookup, signature, claims;
//! - `client (warm cache)`: the same through
//!   [`DtrClient::validate_id_token`], i.e. with the JWKS cache lookup, on a
//!   current-thread tokio runtime.
//!
//! And `id_token/HS256/validator`: an HMAC-signed token, whose signature
//! check costs well under a microsecond, so the figure is close to the
//! validator's own cost (decoding, header, claims, `at_hash`) on top of any
//! signature check.

use std::hint::black_box;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use oidc_dtr::UnixTime;
use oidc_dtr::secret::{AccessToken, ClientSecret, Nonce, RawJwt};
use oidc_dtr::{
    DtrClient, ProviderMetadata,
    jose::Algorithm,
    tokens::{JwksSnapshot, ValidationContext, ValidationOptions},
};
use oidc_dtr::{
    jose::{KeySet, SigningKey},
    tokens::IdTokenValidator,
};
use serde_json::{Map, Value, json};

const ISS: &str = "https://op.example.com";
const CLIENT: &str = "s6BhdRkqt3";
const NONCE: &str = "n-0S6_WzA2Mj-8fFzQ3uVhg7kXbLpT2aYcRd5eW1oN4";
const ACCESS_TOKEN: &str = "SlAV32hkKG.jHkWEdUXMU1BwAsC4vtUsZwnNHy1Pr3X";
const NOW: u64 = 1_900_000_000;

struct Fixture {
    alg: Algorithm,
    token: RawJwt,
    keys: KeySet,
    jwk: Value,
    raw_key: ParsedPublicKey,
}

fn fixture(alg: Algorithm) -> Fixture {
    let key = SigningKey::generate(alg).unwrap().with_kid("2026-11-key-1");
    let claims = json!({
        "iss": ISS,
        "sub": "248289761001",
        "aud": CLIENT,
        "exp": NOW + 3600,
        "iat": NOW,
        "auth_time": NOW - 120,
        "nonce": NONCE,
        "at_hash": half_hash(alg, ACCESS_TOKEN),
        "acr": "urn:mace:incommon:iap:silver",
        "amr": ["pwd", "otp"],
        "name": "Jane Doe",
        "email": "janedoe@example.com",
        "email_verified": true,
    });
    let token = RawJwt::new(key.sign_jwt(Map::new(), &claims).unwrap());
    let jwk = key.public_jwk().unwrap();
    // A realistic set: the signing key plus a second one (a rotation).
    let other = SigningKey::generate(alg)
        .unwrap()
        .with_kid("2026-08-key-0")
        .public_jwk()
        .unwrap();
    let keys = KeySet::from_keys([other.clone(), jwk.clone()], &[alg]);
    let b64 = |v: &Value| URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap();
    let raw_key = match alg {
        Algorithm::RS256 => RsaPublicKeyComponents {
            n: b64(&jwk["n"]),
            e: b64(&jwk["e"]),
        }
        .to_parsed_public_key(&sig::RSA_PKCS1_2048_8192_SHA256)
        .unwrap(),
        Algorithm::ES256 => {
            let mut point = vec![4u8];
            point.extend(b64(&jwk["x"]));
            point.extend(b64(&jwk["y"]));
            ParsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point).unwrap()
        }
        _ => unreachable!(),
    };
    Fixture {
        alg,
        token,
        keys,
        jwk: json!([other, jwk]),
        raw_key,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ctx = ValidationContext::new(Nonce::new(NONCE), UnixTime::from_secs(NOW - 300));
    let at = AccessToken::new(ACCESS_TOKEN);
    let now = UnixTime::from_secs(NOW);

    for alg in [Algorithm::RS256, Algorithm::ES256] {
        let f = fixture(alg);
        let validator = IdTokenValidator::new(
            ISS,
            CLIENT,
            ValidationOptions::default().algorithms([f.alg]),
            None,
            None,
        )
        .unwrap();
        // Sanity: the token is valid.
        validator
            .validate(&f.token, &f.keys, &ctx, Some(&at), now)
            .unwrap();

        let md = ProviderMetadata::new(
            ISS,
            "https://op.example.com/authorize".parse().unwrap(),
            "https://op.example.com/token".parse().unwrap(),
        )
        .with_jwks_uri("https://op.example.com/jwks".parse().unwrap());
        let client = rt
            .block_on(
                DtrClient::builder()
                    .metadata(md)
                    .client_id(CLIENT)
                    .redirect_uri("https://rp.example.com/cb")
                    .allow_unadvertised_dtr()
                    .validation(ValidationOptions::default().algorithms([f.alg]))
                    .build(),
            )
            .unwrap();
        client
            // Fresh for the whole run (the client reads the system clock
            // for cache freshness).
            .import_jwks(JwksSnapshot::new(
                Some("https://op.example.com/jwks".parse().unwrap()),
                f.jwk.as_array().unwrap().clone(),
                now,
                UnixTime::MAX,
            ))
            .unwrap();
        rt.block_on(client.validate_id_token(&ctx, &f.token, Some(&at), now))
            .unwrap();

        let (input, sig_b64) = f.token.secret().rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(sig_b64).unwrap();

        let mut g = c.benchmark_group(format!("id_token/{alg}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("aws-lc-rs verify", |b| {
            b.iter(|| {
                f.raw_key
                    .verify_sig(black_box(input.as_bytes()), black_box(&signature))
                    .unwrap()
            })
        });
        g.bench_function("validator", |b| {
            b.iter(|| {
                validator
                    .validate(black_box(&f.token), &f.keys, &ctx, Some(&at), now)
                    .unwrap()
            })
        });
        g.bench_function("client (warm cache)", |b| {
            b.iter(|| {
                rt.block_on(client.validate_id_token(&ctx, black_box(&f.token), Some(&at), now))
                    .unwrap()
            })
        });
        g.finish();
    }

    // The validator's own cost: an HS256 token (HMAC check ≈ 0.3 µs).
    let secret = "a-client-secret-of-reasonable-length";
    let hmac = SigningKey::hmac(Algorithm::HS256, secret.as_bytes()).unwrap();
    let mut claims =
        serde_json::from_slice::<Value>(&payload_of(&fixture(Algorithm::ES256).token)).unwrap();
    claims["at_hash"] = json!(half_hash(Algorithm::HS256, ACCESS_TOKEN));
    let token = RawJwt::new(hmac.sign_jwt(Map::new(), &claims).unwrap());
    let validator = IdTokenValidator::new(
        ISS,
        CLIENT,
        ValidationOptions::default().algorithms([Algorithm::HS256]),
        None,
        Some(&ClientSecret::new(secret)),
    )
    .unwrap();
    let empty = KeySet::empty();
    validator
        .validate(&token, &empty, &ctx, Some(&at), now)
        .unwrap();
    let mut g = c.benchmark_group("id_token/HS256");
    g.throughput(Throughput::Elements(1));
    g.bench_function("validator", |b| {
        b.iter(|| {
            validator
                .validate(black_box(&token), &empty, &ctx, Some(&at), now)
                .unwrap()
        })
    });
    g.finish();
}

fn payload_of(token: &RawJwt) -> Vec<u8> {
    let payload = token.secret().split('.').nth(1).unwrap();
    URL_SAFE_NO_PAD.decode(payload).unwrap()
}

criterion_group!(benches, bench);
criterion_main!(benches);

/// `at_hash` (OIDC Core §3.1.3.6), computed here for the fixtures.
fn half_hash(alg: Algorithm, value: &str) -> String {
    use aws_lc_rs::digest;
    use base64::Engine as _;
    let d = match alg {
        Algorithm::ES384 | Algorithm::RS384 | Algorithm::PS384 | Algorithm::HS384 => {
            digest::digest(&digest::SHA384, value.as_bytes())
        }
        Algorithm::EdDSA | Algorithm::RS512 | Algorithm::PS512 | Algorithm::HS512 => {
            digest::digest(&digest::SHA512, value.as_bytes())
        }
        _ => digest::digest(&digest::SHA256, value.as_bytes()),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d.as_ref()[..d.as_ref().len() / 2])
}
