//! The mock OP's Pushed Authorization Request endpoint (RFC 9126) at
//! `/par`, and what the authorization endpoint does with a `request_uri` or
//! a `request` (JAR, RFC 9101) before the usual processing.
//!
//! - `/par`: client authentication and DPoP as at the token endpoint; the
//!   form's parameters, or the ones of its signed `request` (checked as in
//!   [`crate::request_object`]); `dpop_jkt` must match the proof's key when
//!   both are present, and a proof alone binds to its key (RFC 9449 §10.1);
//!   the answer is `201` with a one-time `request_uri` and `expires_in`.
//! - `/authorize` with `request_uri`: the pushed parameters are used (once:
//!   the entry is removed), the outer `client_id` must match; with
//!   [`OpConfig::require_pushed_authorization_requests`](crate::OpConfig::require_pushed_authorization_requests)
//!   a request that was not pushed is refused.
//! - The token endpoint: a code issued for a request with `dpop_jkt` is
//!   redeemed only with a DPoP proof of that key.

// Handlers answer with a full response on error, as in `op`.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use oidc_dtr::UnixTime;

use crate::checks;
use crate::op::{OpState, authenticate, check_dpop, json_response, oauth_error, param};
use crate::server::Incoming;

/// The prefix of the mock's request URIs (RFC 9126 §2.2).
const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// One pushed request, until used or expired.
pub(crate) struct Pushed {
    client_id: String,
    params: Vec<(String, String)>,
    expires_at: UnixTime,
}

/// The pushed requests, by `request_uri`.
#[derive(Default)]
pub(crate) struct ParState {
    pushed: HashMap<String, Pushed>,
}

/// Adds the PAR members to the metadata (RFC 9126 §5) and the request
/// object algorithms (RFC 9101 §10.5 / OIDC Discovery).
pub(crate) fn advertise(st: &OpState, md: &mut Value) {
    md["pushed_authorization_request_endpoint"] = json!(format!("{}/par", st.issuer));
    md["require_pushed_authorization_requests"] =
        json!(st.config.require_pushed_authorization_requests);
    md["request_object_signing_alg_values_supported"] = json!(["PS256", "ES256", "EdDSA", "RS256"]);
    md["request_parameter_supported"] = json!(true);
}

fn invalid_request_object(why: &str) -> http::Response<Full<Bytes>> {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request_object", Some(why))
}

/// `POST /par`.
pub(crate) fn endpoint(
    st: &mut OpState,
    req: &Incoming,
) -> (Vec<(String, String)>, http::Response<Full<Bytes>>) {
    let params = match crate::op::form_params(&req.body) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    let r = push(st, req, &params);
    let mut r = r;
    if st.config.require_dpop_nonce
        && let Ok(v) = HeaderValue::from_str(&st.dpop_nonce)
    {
        r.headers_mut().insert("dpop-nonce", v);
    }
    (params, r)
}

fn push(
    st: &mut OpState,
    req: &Incoming,
    params: &[(String, String)],
) -> http::Response<Full<Bytes>> {
    let client_id = match authenticate(st, req, params) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let proof = match check_dpop(st, req, "/par") {
        Ok(p) => p,
        Err(r) => return r,
    };
    if param(params, "request_uri").is_some() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("request_uri is not allowed in a pushed request"),
        );
    }
    let mut pushed: Vec<(String, String)> = match param(params, "request") {
        Some(jwt) => match crate::request_object::verify(st, &client_id, jwt) {
            Ok(p) => p,
            Err(why) => return invalid_request_object(&why),
        },
        None => {
            let mut p: Vec<(String, String)> = params
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "client_id"
                            | "client_secret"
                            | "client_assertion"
                            | "client_assertion_type"
                    )
                })
                .cloned()
                .collect();
            p.push(("client_id".into(), client_id.clone()));
            p
        }
    };
    let jkt = pushed
        .iter()
        .find(|(k, _)| k == "dpop_jkt")
        .map(|(_, v)| v.clone());
    match (&jkt, &proof) {
        (Some(j), Some(p)) if *j != p.jkt => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_dpop_proof",
                Some("dpop_jkt does not match the DPoP proof's key"),
            );
        }
        (None, Some(p)) => pushed.push(("dpop_jkt".into(), p.jkt.clone())),
        _ => {}
    }
    let lifetime = st.config.par_lifetime.max(1);
    let request_uri = format!("{REQUEST_URI_PREFIX}{}", st.random(24));
    let expires_at = st.now().saturating_add(Duration::from_secs(lifetime));
    // Expired entries go as new ones come.
    let now = st.now();
    st.par.pushed.retain(|_, p| p.expires_at > now);
    st.par.pushed.insert(
        request_uri.clone(),
        Pushed {
            client_id,
            params: pushed,
            expires_at,
        },
    );
    json_response(
        StatusCode::CREATED,
        &json!({ "request_uri": request_uri, "expires_in": lifetime }),
    )
}

fn bad_request(msg: &str) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from(format!(
        "<html><body><h1>Bad request</h1><p>{}</p></body></html>",
        msg.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    ))));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/html"));
    r
}

/// The parameters `/authorize` processes: the pushed ones for a
/// `request_uri` (used once), the signed ones of a `request`, else the
/// query's own (refused when PAR is required). `Err` is the answer.
pub(crate) fn resolve(
    st: &mut OpState,
    outer: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, http::Response<Full<Bytes>>> {
    let client_id = param(&outer, "client_id").map(str::to_owned);
    if let Some(uri) = param(&outer, "request_uri") {
        let Some(entry) = st.par.pushed.remove(uri) else {
            return Err(bad_request(
                "invalid_request_uri: unknown, expired or already used request_uri",
            ));
        };
        if client_id.as_deref() != Some(entry.client_id.as_str()) {
            return Err(bad_request("invalid_request_uri: client_id does not match"));
        }
        if st.now() >= entry.expires_at {
            return Err(bad_request("invalid_request_uri: expired"));
        }
        return Ok(entry.params);
    }
    if st.config.require_pushed_authorization_requests {
        return Err(bad_request(
            "invalid_request: this OP accepts pushed authorization requests only",
        ));
    }
    let Some(jwt) = param(&outer, "request").map(str::to_owned) else {
        return Ok(outer);
    };
    let Some(client_id) = client_id else {
        return Err(bad_request("missing client_id"));
    };
    match crate::request_object::verify(st, &client_id, &jwt) {
        Ok(inner) => {
            // OIDC Core §6.1: the outer response_type must match.
            if let Some(rt) = param(&outer, "response_type")
                && param(&inner, "response_type") != Some(rt)
            {
                return Err(bad_request(
                    "invalid_request: response_type differs from the request object's",
                ));
            }
            Ok(inner)
        }
        Err(why) => {
            // RFC 9101 §6.3: the error goes back to the redirect URI, when
            // it is one the client registered.
            let registered = st.clients.get(&client_id).map(|c| c.redirect_uris.clone());
            match (crate::request_object::unverified_redirect(&jwt), registered) {
                (Some((redirect, state)), Some(uris))
                    if uris.is_empty() || uris.contains(&redirect) =>
                {
                    let mut p = vec![
                        ("error", "invalid_request_object".to_owned()),
                        ("error_description", why),
                    ];
                    if let Some(s) = state {
                        p.push(("state", s));
                    }
                    if st.config.include_iss {
                        p.push(("iss", st.issuer.clone()));
                    }
                    let form_post = false;
                    Err(crate::op::redirect_back(&redirect, form_post, &p))
                }
                _ => Err(bad_request(&format!("invalid_request_object: {why}"))),
            }
        }
    }
}

/// At the token endpoint: a code issued for a DPoP-bound request
/// (`dpop_jkt`) needs a proof of that key. `Err` is the answer.
pub(crate) fn check_code_binding(
    st: &OpState,
    params: &[(String, String)],
    proof: Option<&checks::Proof>,
) -> Result<(), http::Response<Full<Bytes>>> {
    let code = param(params, "code").or_else(|| param(params, "deferred_code"));
    let Some(bound) = code
        .and_then(|c| st.codes.get(c))
        .and_then(|c| c.dpop_jkt.as_deref())
    else {
        return Ok(());
    };
    match proof {
        Some(p) if p.jkt == bound => Ok(()),
        _ => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("the code is bound to another DPoP key (dpop_jkt)"),
        )),
    }
}
