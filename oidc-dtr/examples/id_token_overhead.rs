//! The ID token validator's overhead over the bare signature check, on a
//! shared machine (see BENCHMARKS.md, "ID token validation").
//!
//! `cargo run --release -p oidc-dtr --example id_token_overhead` alternates
//! batches of 50 bare aws-lc-rs verifications and 50 validations of the
//! same token (the fixture of `benches/id_token.rs`) and keeps the fastest
//! batch of each: a busy neighbour slows some batches, not the minimum.
//!
//! Instruction counts, independent of the load: `ALG=RS256` (or `ES256`)
//! and the argument `both N` run N verifications then N validations, each in
//! its own function (`verify_loop`, `validate_loop`); under
//! `valgrind --tool=callgrind`, the difference of their inclusive costs
//! divided by N is the validator's work outside the signature check.
use std::hint::black_box;
use std::time::Instant;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oidc_dtr::{
    UnixTime,
    tokens::{ValidationContext, ValidationOptions},
};
use oidc_dtr::{
    jose::{Algorithm, KeySet, SigningKey},
    secret::{AccessToken, Nonce, RawJwt},
    tokens::IdTokenValidator,
};
use serde_json::{Map, json};

const ISS: &str = "https://op.example.com";
const CLIENT: &str = "s6BhdRkqt3";
const NONCE: &str = "n-0S6_WzA2Mj-8fFzQ3uVhg7kXbLpT2aYcRd5eW1oN4";
const ACCESS_TOKEN: &str = "SlAV32hkKG.jHkWEdUXMU1BwAsC4vtUsZwnNHy1Pr3X";
const NOW: u64 = 1_900_000_000;

fn half_hash(value: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
    URL_SAFE_NO_PAD.encode(&d.as_ref()[..16])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("time");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    for alg in [Algorithm::RS256, Algorithm::ES256] {
        if std::env::var("ALG").is_ok_and(|a| a != alg.as_str()) {
            continue;
        }
        let key = SigningKey::generate(alg).unwrap().with_kid("2026-11-key-1");
        let claims = json!({
            "iss": ISS, "sub": "248289761001", "aud": CLIENT, "exp": NOW + 3600, "iat": NOW,
            "auth_time": NOW - 120, "nonce": NONCE, "at_hash": half_hash(ACCESS_TOKEN),
            "acr": "urn:mace:incommon:iap:silver", "amr": ["pwd", "otp"], "name": "Jane Doe",
            "email": "janedoe@example.com", "email_verified": true,
        });
        let token = RawJwt::new(key.sign_jwt(Map::new(), &claims).unwrap());
        let jwk = key.public_jwk().unwrap();
        let other = SigningKey::generate(alg)
            .unwrap()
            .with_kid("2026-08-key-0")
            .public_jwk()
            .unwrap();
        let keys = KeySet::from_keys([other, jwk.clone()], &[alg]);
        let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap();
        let raw_key = match alg {
            Algorithm::RS256 => RsaPublicKeyComponents {
                n: b64(&jwk["n"]),
                e: b64(&jwk["e"]),
            }
            .to_parsed_public_key(&sig::RSA_PKCS1_2048_8192_SHA256)
            .unwrap(),
            _ => {
                let mut p = vec![4u8];
                p.extend(b64(&jwk["x"]));
                p.extend(b64(&jwk["y"]));
                ParsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, p).unwrap()
            }
        };
        let v = IdTokenValidator::new(
            ISS,
            CLIENT,
            ValidationOptions::default().algorithms([alg]),
            None,
            None,
        )
        .unwrap();
        let ctx = ValidationContext::new(Nonce::new(NONCE), UnixTime::from_secs(NOW - 300));
        let at = AccessToken::new(ACCESS_TOKEN);
        let now = UnixTime::from_secs(NOW);
        let (input, s) = token.secret().rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(s).unwrap();
        let verify = || {
            raw_key
                .verify_sig(black_box(input.as_bytes()), black_box(&signature))
                .unwrap()
        };
        let validate = || {
            black_box(
                v.validate(black_box(&token), &keys, &ctx, Some(&at), now)
                    .unwrap(),
            );
        };
        match mode {
            "verify" => verify_loop(n, &verify),
            "validate" => validate_loop(n, &validate),
            "both" => {
                verify_loop(n, &verify);
                validate_loop(n, &validate);
            }
            "none" => {}
            _ => {
                let batch = 50;
                let (mut bv, mut bw) = (f64::MAX, f64::MAX);
                for _ in 0..n {
                    let t = Instant::now();
                    (0..batch).for_each(|_| verify());
                    bv = bv.min(t.elapsed().as_secs_f64() / batch as f64);
                    let t = Instant::now();
                    (0..batch).for_each(|_| validate());
                    bw = bw.min(t.elapsed().as_secs_f64() / batch as f64);
                }
                println!(
                    "{alg}: verify {:.2} us, validator {:.2} us, ratio {:.1} %, overhead {:.2} us",
                    bv * 1e6,
                    bw * 1e6,
                    100.0 * bv / bw,
                    (bw - bv) * 1e6
                );
            }
        }
    }
}

/// N bare signature checks (a function of its own, for callgrind).
#[inline(never)]
fn verify_loop(n: usize, f: &dyn Fn()) {
    (0..n).for_each(|_| f())
}

/// N validations (a function of its own, for callgrind).
#[inline(never)]
fn validate_loop(n: usize, f: &dyn Fn()) {
    (0..n).for_each(|_| f())
}
