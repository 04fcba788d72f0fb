//! Cancelling a deferred authentication, and token revocation.

use super::*;

/// The Authentication Cancellation Endpoint: form or JSON body, client
/// authentication, DPoP binding; always 200 for a well-formed request.
pub(super) fn cancel(
    st: &mut OpState,
    req: &Incoming,
) -> (Vec<(String, String)>, http::Response<Full<Bytes>>) {
    let is_json = req
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let (params, id) = if is_json {
        let id = serde_json::from_slice::<Value>(&req.body)
            .ok()
            .and_then(|v| {
                v.get("deferred_auth_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        (Vec::new(), id)
    } else {
        match parse_params(&req.body) {
            Ok(p) => {
                let id = param(&p, "deferred_auth_id").map(str::to_owned);
                (p, id)
            }
            Err(_) => {
                return (
                    Vec::new(),
                    oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        Some("repeated parameter"),
                    ),
                );
            }
        }
    };
    let mut logged = params.clone();
    if is_json && let Some(id) = &id {
        logged.push(("deferred_auth_id".into(), id.clone()));
    }
    let client_id = match authenticate(st, req, &params) {
        Ok(c) => c,
        Err(r) => return (logged, r),
    };
    let proof = match check_dpop(st, req, "/df-authentication/cancel") {
        Ok(p) => p,
        Err(r) => return (logged, r),
    };
    let Some(id) = id else {
        return (
            logged,
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("missing deferred_auth_id"),
            ),
        );
    };
    if let Some(rec) = st.auths.get_mut(&id)
        && rec.client_id == client_id
    {
        if let Err(r) = check_binding(rec.jkt.as_deref(), proof.as_ref()) {
            return (logged, r);
        }
        if matches!(rec.state, AuthState::Pending | AuthState::Approved) {
            rec.state = AuthState::Cancelled;
        }
    }
    let mut r = respond(StatusCode::OK, "application/json", "");
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (logged, r)
}

/// RFC 7009 revocation of a deferral code (B.8): client authentication,
/// DPoP binding; always 200 for a well-formed request, and a known pending
/// code moves to cancelled.
pub(super) fn revoke(
    st: &mut OpState,
    req: &Incoming,
) -> (Vec<(String, String)>, http::Response<Full<Bytes>>) {
    let params = match super::form_params(&req.body) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    let client_id = match authenticate(st, req, &params) {
        Ok(c) => c,
        Err(r) => return (params, r),
    };
    let proof = match check_dpop(st, req, "/revoke") {
        Ok(p) => p,
        Err(r) => return (params, r),
    };
    let Some(token) = param(&params, "token").map(str::to_owned) else {
        return (
            params,
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("missing token"),
            ),
        );
    };
    let supports = st.config.advertise_deferral_revocation;
    if supports
        && let Some(rec) = st.auths.get_mut(&token)
        && rec.ietf
        && rec.client_id == client_id
    {
        if let Err(r) = check_binding(rec.jkt.as_deref(), proof.as_ref()) {
            return (params, r);
        }
        if matches!(rec.state, AuthState::Pending | AuthState::Approved) {
            rec.state = AuthState::Cancelled;
        }
    }
    (params, respond(StatusCode::OK, "text/plain", ""))
}
