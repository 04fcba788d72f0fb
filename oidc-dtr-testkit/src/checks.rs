//! What a strict OP checks on credentials: DPoP proofs (RFC 9449 §4.3) and
//! JWT client assertions (RFC 7523 §3). Verified with the crate's own JOSE
//! code over aws-lc-rs, independent of how the client built them.

use serde_json::Value;

use oidc_dtr::{
    UnixTime,
    jose::{Algorithm, KeySet},
};

use crate::{b64, b64_decode};

/// A decoded compact JWS whose signature has been verified.
pub(crate) struct Verified {
    pub claims: Value,
}

fn split(token: &str) -> Result<(Value, Value, Vec<u8>, &str), String> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS".into());
    };
    let json = |part: &str, what: &str| -> Result<Value, String> {
        let bytes = b64_decode(part).ok_or_else(|| format!("{what} is not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|_| format!("{what} is not JSON"))
    };
    let sig = b64_decode(s).ok_or("signature is not base64url")?;
    let input_len = h.len() + 1 + p.len();
    Ok((
        json(h, "header")?,
        json(p, "payload")?,
        sig,
        &token[..input_len],
    ))
}

/// Verifies a JWS against public JWKs (any that fits `alg`/`kid`).
pub(crate) fn verify_with_jwks(token: &str, jwks: &[Value]) -> Result<Verified, String> {
    let (header, claims, sig, input) = split(token)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Algorithm::parse)
        .ok_or("unsupported alg")?;
    if alg.is_hmac() {
        return Err("an HMAC alg where a public key is expected".into());
    }
    let set = KeySet::from_keys(jwks.iter().cloned(), &[alg]);
    let kid = header.get("kid").and_then(Value::as_str);
    set.verify(kid, alg, input.as_bytes(), &sig)
        .map_err(|e| e.to_string())?;
    Ok(Verified { claims })
}

/// Verifies an HS256/384/512 JWS with a shared secret.
pub(crate) fn verify_hmac(token: &str, secret: &[u8]) -> Result<Verified, String> {
    let (header, claims, sig, input) = split(token)?;
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("HS256") => aws_lc_rs::hmac::HMAC_SHA256,
        Some("HS384") => aws_lc_rs::hmac::HMAC_SHA384,
        Some("HS512") => aws_lc_rs::hmac::HMAC_SHA512,
        _ => return Err("not an HMAC alg".into()),
    };
    let key = aws_lc_rs::hmac::Key::new(alg, secret);
    aws_lc_rs::hmac::verify(&key, input.as_bytes(), &sig)
        .map_err(|_| "bad signature".to_string())?;
    Ok(Verified { claims })
}

/// A DPoP proof that passed RFC 9449 §4.3.
pub(crate) struct Proof {
    pub jkt: String,
    pub jti: String,
    pub nonce: Option<String>,
    /// The access token hash (`ath`), on proofs presented with a token.
    pub ath: Option<String>,
}

/// Checks a DPoP proof's structure, signature, `htm`, `htu` and `iat`
/// (±`skew` around `now`). Replay and nonce checks are the caller's.
pub(crate) fn check_dpop_proof(
    proof: &str,
    method: &str,
    htu: &str,
    now: UnixTime,
    skew_secs: u64,
) -> Result<Proof, String> {
    let (header, _, _, _) = split(proof)?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err("typ is not dpop+jwt".into());
    }
    let jwk = header.get("jwk").ok_or("no jwk header")?;
    if jwk.get("d").is_some() || jwk.get("k").is_some() {
        return Err("the jwk header holds private key material".into());
    }
    let v = verify_with_jwks(proof, std::slice::from_ref(jwk))?;
    let claim = |k: &str| v.claims.get(k).and_then(Value::as_str).map(str::to_owned);
    let jti = claim("jti").filter(|j| !j.is_empty()).ok_or("no jti")?;
    if claim("htm").as_deref() != Some(method) {
        return Err("htm does not match".into());
    }
    if claim("htu").as_deref() != Some(htu) {
        return Err("htu does not match".into());
    }
    let iat = v
        .claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or("no iat")?;
    let now = now.as_secs();
    if iat + skew_secs < now || iat > now + skew_secs {
        return Err("iat out of range".into());
    }
    let jkt = jwk_thumbprint(jwk).ok_or("unusable jwk")?;
    Ok(Proof {
        jkt,
        jti,
        nonce: claim("nonce"),
        ath: claim("ath"),
    })
}

/// Checks a client assertion's claims (RFC 7523 §3); `Ok(jti)`.
pub(crate) fn check_assertion_claims(
    v: &Verified,
    client_id: &str,
    audiences: &[&str],
    now: UnixTime,
) -> Result<String, String> {
    let c = &v.claims;
    let s = |k: &str| c.get(k).and_then(Value::as_str);
    if s("iss") != Some(client_id) || s("sub") != Some(client_id) {
        return Err("iss and sub must be the client id".into());
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => audiences.contains(&a.as_str()),
        Some(Value::Array(a)) => a
            .iter()
            .any(|x| x.as_str().is_some_and(|x| audiences.contains(&x))),
        _ => false,
    };
    if !aud_ok {
        return Err("aud does not name this OP".into());
    }
    let exp = c.get("exp").and_then(Value::as_u64).ok_or("no exp")?;
    if exp <= now.as_secs() {
        return Err("assertion expired".into());
    }
    s("jti")
        .filter(|j| !j.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| "no jti".into())
}

/// The RFC 7638 thumbprint of a public JWK, computed here independently of
/// the SDK's own: the required members in a `serde_json::Map` (which keeps
/// its keys sorted), serialised without whitespace, SHA-256, base64url.
pub(crate) fn jwk_thumbprint(jwk: &Value) -> Option<String> {
    let required: &[&str] = match jwk.get("kty")?.as_str()? {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut m = serde_json::Map::new();
    for k in required {
        m.insert(
            (*k).to_owned(),
            Value::String(jwk.get(*k)?.as_str()?.to_owned()),
        );
    }
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        Value::Object(m).to_string().as_bytes(),
    );
    Some(b64(d.as_ref()))
}
