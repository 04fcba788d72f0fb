//! What the mock OP checks on a signed request object (JAR, RFC 9101), at
//! the authorization endpoint (by value, `request`) and at the PAR endpoint:
//! the signature against the client's registered JWKS (asymmetric
//! algorithms only: `none` and HMAC are refused), `typ`
//! `oauth-authz-req+jwt` (RFC 9101 §4), `iss` = `client_id` = the client,
//! `aud` naming the issuer, `exp` in the future, `nbf` not in the future,
//! a lifetime of at most 60 minutes (FAPI 2.0 Message Signing), and a
//! `jti` never seen before. Any failure is `invalid_request_object`
//! (RFC 9101 §6.3).

use serde_json::Value;

use crate::checks;
use crate::op::OpState;

/// The JWT claims that are not authorization parameters.
const JWT_CLAIMS: &[&str] = &["iss", "aud", "exp", "nbf", "iat", "jti", "sub"];

/// The `typ` RFC 9101 §4 asks for.
pub(crate) const TYP: &str = "oauth-authz-req+jwt";

/// Checks a request object of `client_id` and returns the authorization
/// parameters it carries (`client_id` included); `Err` is the
/// `error_description` of an `invalid_request_object` answer.
pub(crate) fn verify(
    st: &mut OpState,
    client_id: &str,
    jwt: &str,
) -> Result<Vec<(String, String)>, String> {
    let header = jwt
        .split('.')
        .next()
        .and_then(crate::b64_decode)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .ok_or("the request object is not a JWS")?;
    if header.get("typ").and_then(Value::as_str) != Some(TYP) {
        return Err(format!("typ must be {TYP}"));
    }
    let client = st.clients.get(client_id).ok_or("unknown client")?;
    if client.jwks.is_empty() {
        return Err("the client registered no keys for request objects".into());
    }
    let verified = checks::verify_with_jwks(jwt, &client.jwks)?;
    let c = &verified.claims;
    let s = |k: &str| c.get(k).and_then(Value::as_str);
    if s("iss") != Some(client_id) {
        return Err("iss must be the client id".into());
    }
    if s("client_id").is_some_and(|id| id != client_id) {
        return Err("client_id does not match".into());
    }
    let issuer = st.issuer.as_str();
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == issuer,
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(issuer)),
        _ => false,
    };
    if !aud_ok {
        return Err("aud does not name this OP".into());
    }
    let now = st.now().as_secs();
    let exp = c.get("exp").and_then(Value::as_u64).ok_or("no exp")?;
    let nbf = c.get("nbf").and_then(Value::as_u64).ok_or("no nbf")?;
    if exp <= now {
        return Err("the request object expired".into());
    }
    if nbf > now + 60 {
        return Err("the request object is not valid yet".into());
    }
    if exp.saturating_sub(nbf) > 3600 {
        return Err("the request object lives longer than 60 minutes".into());
    }
    let jti = s("jti").filter(|j| !j.is_empty()).ok_or("no jti")?;
    if !st.used_jtis.insert(format!("request_object:{jti}")) {
        return Err("replayed request object (jti)".into());
    }
    let Value::Object(map) = c else {
        return Err("the payload is not a JSON object".into());
    };
    let mut params = vec![("client_id".to_owned(), client_id.to_owned())];
    for (k, v) in map {
        if JWT_CLAIMS.contains(&k.as_str()) || k == "client_id" {
            continue;
        }
        if k == "request" || k == "request_uri" {
            return Err(format!("a request object must not contain {k}"));
        }
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        params.push((k.clone(), v));
    }
    Ok(params)
}

/// The `redirect_uri` and `state` of a request object, unverified: where
/// an `invalid_request_object` error may be sent back when the
/// `redirect_uri` is one the client registered.
pub(crate) fn unverified_redirect(jwt: &str) -> Option<(String, Option<String>)> {
    let payload = jwt.split('.').nth(1).and_then(crate::b64_decode)?;
    let v: Value = serde_json::from_slice(&payload).ok()?;
    let redirect = v.get("redirect_uri")?.as_str()?.to_owned();
    let state = v.get("state").and_then(Value::as_str).map(str::to_owned);
    Some((redirect, state))
}
