//! The token endpoint: client authentication (secret, private key JWT,
//! DPoP proofs and binding) and the dispatch by grant type.

use super::*;

/// Client authentication: Basic header, or `client_id` (+ `client_secret`)
/// in the body. `Err` is the `invalid_client` response.
pub(crate) fn authenticate(
    st: &mut OpState,
    req: &Incoming,
    params: &[(String, String)],
) -> Result<String, http::Response<Full<Bytes>>> {
    let unauthorized = |why: &str| {
        let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", Some(why));
        r.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"mock-op\""),
        );
        r
    };
    if st.config.fapi2 {
        fapi2_client_auth(st, req, params).map_err(|why| unauthorized(&why))?;
    }
    if let Some(kind) = param(params, "client_assertion_type") {
        return authenticate_assertion(st, kind, params).map_err(|why| unauthorized(&why));
    }
    let basic = req
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    let (id, secret) = if let Some(b) = basic {
        if param(params, "client_secret").is_some() {
            return Err(unauthorized("more than one authentication method"));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
        let dec = |s: &str| -> String {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        (dec(id), Some(dec(secret)))
    } else {
        let id =
            param(params, "client_id").ok_or_else(|| unauthorized("no client authentication"))?;
        (
            id.to_owned(),
            param(params, "client_secret").map(str::to_owned),
        )
    };
    let client = st
        .clients
        .get(&id)
        .ok_or_else(|| unauthorized("unknown client"))?;
    match (&client.secret, secret) {
        (None, None) => Ok(id),
        (Some(want), Some(got)) if ct_eq(want.as_bytes(), got.as_bytes()) => Ok(id),
        _ => Err(unauthorized("client authentication failed")),
    }
}

/// The client authentication FAPI 2.0 allows (Security Profile §5.3.2.1):
/// `private_key_jwt` signed with PS256, ES256 or EdDSA, or mutual TLS.
fn fapi2_client_auth(
    st: &OpState,
    req: &Incoming,
    params: &[(String, String)],
) -> Result<(), String> {
    if req.headers.contains_key(AUTHORIZATION) || param(params, "client_secret").is_some() {
        return Err("FAPI 2.0: client secrets are not allowed".into());
    }
    if let Some(jwt) = param(params, "client_assertion") {
        let alg = jwt
            .split('.')
            .next()
            .and_then(|h| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(h)
                    .ok()
            })
            .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
            .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(str::to_owned))
            .unwrap_or_default();
        return match alg.as_str() {
            "PS256" | "ES256" | "EdDSA" => Ok(()),
            other => Err(format!(
                "FAPI 2.0: a client assertion signed with {other:?} is not allowed"
            )),
        };
    }
    if client_cert(st, req).is_none() {
        return Err("FAPI 2.0: authenticate with private_key_jwt or a client certificate".into());
    }
    Ok(())
}

pub(super) fn invalid_dpop(why: &str) -> http::Response<Full<Bytes>> {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", Some(why))
}

/// RFC 9449 §4.3 on a request to `path`: `Ok(None)` without a proof (when
/// none is required), `Err` with the error answer.
pub(crate) fn check_dpop(
    st: &mut OpState,
    req: &Incoming,
    path: &str,
) -> Result<Option<checks::Proof>, http::Response<Full<Bytes>>> {
    let Some(header) = req.headers.get("dpop").and_then(|v| v.to_str().ok()) else {
        if st.config.require_dpop {
            return Err(invalid_dpop("a DPoP proof is required"));
        }
        return Ok(None);
    };
    let htu = format!("{}{path}", st.issuer);
    let proof = checks::check_dpop_proof(header, req.method.as_str(), &htu, st.now(), 60)
        .map_err(|e| invalid_dpop(&e))?;
    if st.config.require_dpop_nonce && proof.nonce.as_deref() != Some(st.dpop_nonce.as_str()) {
        let mut r = oauth_error(
            StatusCode::BAD_REQUEST,
            "use_dpop_nonce",
            Some("use the DPoP-Nonce"),
        );
        if let Ok(v) = HeaderValue::from_str(&st.dpop_nonce) {
            r.headers_mut().insert("dpop-nonce", v);
        }
        return Err(r);
    }
    if !st.used_jtis.insert(proof.jti.clone()) {
        return Err(invalid_dpop("replayed jti"));
    }
    Ok(Some(proof))
}

/// The key binding of an authentication: a bound one needs a proof from the
/// same key on every later request.
pub(super) fn check_binding(
    bound: Option<&str>,
    proof: Option<&checks::Proof>,
) -> Result<(), http::Response<Full<Bytes>>> {
    match (bound, proof) {
        (Some(_), None) => Err(invalid_dpop("this authentication is bound to a DPoP key")),
        (Some(b), Some(p)) if p.jkt != b => Err(invalid_dpop("proof from another key")),
        _ => Ok(()),
    }
}

/// `private_key_jwt` / `client_secret_jwt` (RFC 7523 §2.2, §3).
pub(super) fn authenticate_assertion(
    st: &mut OpState,
    kind: &str,
    params: &[(String, String)],
) -> Result<String, String> {
    if kind != JWT_BEARER_ASSERTION {
        return Err("unsupported client_assertion_type".into());
    }
    if param(params, "client_secret").is_some() {
        return Err("more than one authentication method".into());
    }
    let jwt = param(params, "client_assertion").ok_or("missing client_assertion")?;
    let id = param(params, "client_id").ok_or("missing client_id")?;
    let client = st.clients.get(id).ok_or("unknown client")?;
    let verified = if !client.jwks.is_empty() {
        checks::verify_with_jwks(jwt, &client.jwks)?
    } else if let Some(secret) = &client.secret {
        checks::verify_hmac(jwt, secret.as_bytes())?
    } else {
        return Err("the client has no key for assertions".into());
    };
    let token_url = format!("{}/token", st.issuer);
    let cancel_url = format!("{}/df-authentication/cancel", st.issuer);
    let jti = checks::check_assertion_claims(
        &verified,
        id,
        &[&st.issuer, &token_url, &cancel_url],
        st.now(),
    )?;
    if !st.used_jtis.insert(format!("assertion:{jti}")) {
        return Err("replayed client assertion".into());
    }
    Ok(id.to_owned())
}

pub(super) fn token(
    st: &mut OpState,
    req: &Incoming,
    params: &[(String, String)],
    effects: &mut Vec<Effect>,
) -> http::Response<Full<Bytes>> {
    st.last_access_token = None;
    let resp = token_unbound(st, req, params, effects);
    // Under mutual TLS the access token is bound to the certificate the
    // TLS front verified (RFC 8705 §3).
    if let Some(at) = st.last_access_token.take()
        && let Some(thumbprint) = client_cert(st, req)
    {
        st.cert_bound.insert(at, thumbprint);
    }
    resp
}

/// The `x5t#S256` of the client certificate a TLS front verified, when
/// the OP is configured to read it
/// ([`OpConfig::client_cert_header`](crate::OpConfig::client_cert_header)).
pub(super) fn client_cert(st: &OpState, req: &Incoming) -> Option<String> {
    let name = st.config.client_cert_header.as_deref()?;
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn token_unbound(
    st: &mut OpState,
    req: &Incoming,
    params: &[(String, String)],
    effects: &mut Vec<Effect>,
) -> http::Response<Full<Bytes>> {
    let client_id = match authenticate(st, req, params) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let proof = match check_dpop(st, req, "/token") {
        Ok(p) => p,
        Err(r) => return r,
    };
    if st.config.fapi2 && proof.is_none() && client_cert(st, req).is_none() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("FAPI 2.0: access tokens are sender-constrained (DPoP or mutual TLS)"),
        );
    }
    if let Err(r) = crate::par::check_code_binding(st, params, proof.as_ref()) {
        return r;
    }
    match param(params, "grant_type") {
        Some(GRANT_TYPE_DEFERRED) => match (
            param(params, "deferred_code"),
            param(params, "deferred_auth_id"),
        ) {
            (Some(code), None) => exchange(st, &client_id, code, params, proof.as_ref(), effects),
            (None, Some(id)) => poll_as(st, &client_id, id, proof.as_ref(), false),
            _ => oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("exactly one of deferred_code and deferred_auth_id is required"),
            ),
        },
        Some(GRANT_TYPE_IETF_DEFERRED) if st.config.profiles.ietf() => {
            if param(params, "completion_mode").is_some() {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some("polling requests must not carry completion_mode"),
                );
            }
            match param(params, "deferral_code") {
                Some(code) => poll_as(st, &client_id, code, proof.as_ref(), true),
                None => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some("missing deferral_code"),
                ),
            }
        }
        Some(GRANT_TYPE_DEVICE_CODE) if st.config.profiles.ietf() => {
            crate::device::device_token(st, &client_id, params, proof.as_ref(), effects)
        }
        Some("authorization_code") => code_grant(st, &client_id, params, proof.as_ref(), effects),
        Some(_) => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", None),
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("missing grant_type"),
        ),
    }
}
