//! The mock OP's RFC 8628 device authorization grant, with the IETF
//! `completion_mode=deferred` opt-in (the IETF draft: the hint may come
//! on the device authorization request, and the device-code token request
//! may be deferred like any originating grant).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use serde_json::json;

use super::op::{Effect, Grant, OpState, completion_mode_deferred, defer, oauth_error, param};
use super::server::Incoming;
use super::{AuthorizeOutcome, checks};
use oidc_dtr::UnixTime;

/// How long a device code lives.
const DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(600);

/// One device authorization.
pub(crate) struct DeviceRecord {
    pub client_id: String,
    pub user_code: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub hinted: bool,
    /// The user finished at the verification URI.
    pub completed: bool,
    pub used: bool,
    pub created_at: UnixTime,
    /// The interval it enforces in strict mode (seconds; raised by 5 on
    /// each `slow_down`).
    pub interval: u64,
}

/// `POST /device_authorization` (RFC 8628 §3.1–3.2).
pub(crate) fn device_authorization(
    st: &mut OpState,
    req: &Incoming,
) -> (Vec<(String, String)>, http::Response<Full<Bytes>>) {
    let params = match crate::op::form_params(&req.body) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    let client_id = match super::op::authenticate(st, req, &params) {
        Ok(c) => c,
        Err(r) => return (params, r),
    };
    let scope = param(&params, "scope").unwrap_or("").to_owned();
    if !scope.split(' ').any(|s| s == "openid") {
        return (
            params,
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                Some("scope must contain openid"),
            ),
        );
    }
    let device_code = st.random(32);
    let user_code = st.random(6).to_uppercase().replace(['-', '_'], "X");
    let now = st.now();
    let interval = st.config.interval.unwrap_or(5);
    st.flights.mark_answer(&device_code);
    st.devices.insert(
        device_code.clone(),
        DeviceRecord {
            client_id,
            user_code: user_code.clone(),
            scope,
            nonce: param(&params, "nonce").map(str::to_owned),
            hinted: completion_mode_deferred(&params),
            completed: false,
            used: false,
            created_at: now,
            interval,
        },
    );
    let verification_uri = format!("{}/device", st.issuer);
    let body = json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": format!("{verification_uri}?user_code={user_code}"),
        "expires_in": DEVICE_CODE_LIFETIME.as_secs(),
        "interval": interval,
    });
    (params, super::op::json_response(StatusCode::OK, &body))
}

/// The device-code token request (RFC 8628 §3.4–3.5), deferred when it
/// opts in and the user has finished.
pub(crate) fn device_token(
    st: &mut OpState,
    client_id: &str,
    params: &[(String, String)],
    proof: Option<&checks::Proof>,
    effects: &mut Vec<Effect>,
) -> http::Response<Full<Bytes>> {
    let now = st.now();
    let opted_in = completion_mode_deferred(params);
    let Some(code) = param(params, "device_code") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("missing device_code"),
        );
    };
    let Some(rec) = st.devices.get_mut(code) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("unknown device_code"),
        );
    };
    if rec.client_id != client_id || rec.used {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None);
    }
    // Strict interval: from the moment the device authorization answer (then
    // each answer to this device code) left, no tolerance (RFC 8628 §3.5).
    if st.config.strict_interval && st.flights.strict_early(code, now, rec.interval) {
        rec.interval = rec.interval.saturating_add(5);
        st.flights.slow_down();
        st.flights.mark_answer(code);
        return oauth_error(StatusCode::BAD_REQUEST, "slow_down", None);
    }
    st.flights.mark_answer(code);
    if now > rec.created_at.saturating_add(DEVICE_CODE_LIFETIME) {
        return oauth_error(StatusCode::BAD_REQUEST, "expired_token", None);
    }
    if rec.hinted && !opted_in {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(
                "the device authorization request hinted completion_mode=deferred; the token request must opt in too",
            ),
        );
    }
    if !rec.completed {
        return oauth_error(StatusCode::BAD_REQUEST, "authorization_pending", None);
    }
    rec.used = true;
    let (nonce, scope, auth_time) = (rec.nonce.clone(), rec.scope.clone(), now);
    let grant: Grant = st.seed_grant(nonce, auth_time);
    let grant = Grant { scope, ..grant };
    if opted_in && st.config.authorize_outcome != AuthorizeOutcome::Code {
        return defer(st, client_id, grant, params, proof, effects);
    }
    super::op::token_response(st, client_id, &grant, proof)
}
