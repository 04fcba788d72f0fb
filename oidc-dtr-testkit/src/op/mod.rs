//! The mock OP's protocol logic: the server side of the OpenID Connect
//! Deferred Token Response draft (discovery, the authorization endpoint, the
//! Deferred Code Exchange, polling and its errors).
//!
//! Every handler takes the locked state and an [`Incoming`] request and
//! returns a [`Reply`]; nothing here blocks or awaits while holding the lock.
//!
//! This file routes requests (faults first, then by endpoint) and holds the
//! response helpers; each endpoint has its own file: `discovery`, `jwks`,
//! `authorize`, `token` (client authentication, dispatch by grant),
//! `exchange`, `poll`, `code`, `issue` (ID Tokens and token responses),
//! `cancel` (cancellation and revocation), `userinfo`, `notify` (pings);
//! `state` holds the shared state and the poll-flight bookkeeping. The
//! device authorization endpoint and the HTML pages live beside this
//! module (`device`, `pages`).

// Handlers return the error response itself as `Err`: its size does not
// matter in a test double.
#![allow(clippy::result_large_err)]

mod authorize;
mod cancel;
mod code;
mod discovery;
mod exchange;
mod issue;
mod jwks;
mod notify;
mod poll;
mod state;
mod token;
mod userinfo;

pub(crate) use authorize::*;
use cancel::*;
pub(crate) use code::*;
use exchange::*;
pub(crate) use issue::*;
pub(crate) use jwks::*;
pub(crate) use notify::*;
pub(crate) use poll::*;
pub(crate) use state::*;
pub use state::{FlightReport, FloorViolation, PingRecord};
pub(crate) use token::*;
use userinfo::*;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Value, json};
use url::Url;

use super::checks;
use super::server::Incoming;
use super::{
    AuthState, AuthorizeOutcome, AutoApprove, Endpoint, Fault, IdTokenFault, LoggedRequest,
    OpConfig, RegisteredClient,
};
use oidc_dtr::{
    UnixTime,
    jose::{Algorithm, KeyError, SigningKey},
    time::Clock,
};

use super::{
    DEFERRAL_CODE_TOKEN_TYPE, GRANT_TYPE_DEFERRED, GRANT_TYPE_DEVICE_CODE,
    GRANT_TYPE_IETF_DEFERRED, JWT_BEARER_ASSERTION, b64, ct_eq, half_hash,
};

/// What the server does with a request.
pub(crate) enum Reply {
    /// Answer (after an optional delay).
    Respond(http::Response<Full<Bytes>>, Option<Duration>),
    /// Close the connection without answering.
    Reset,
}

/// The connection was dropped on purpose (a [`Fault`]).
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

pub(crate) async fn finish(reply: Reply) -> Result<http::Response<Full<Bytes>>, Dropped> {
    match reply {
        Reply::Respond(r, delay) => {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            Ok(r)
        }
        Reply::Reset => Err(Dropped),
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn json_response(status: StatusCode, v: &Value) -> http::Response<Full<Bytes>> {
    let mut r = respond(status, "application/json", v.to_string());
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(crate) fn oauth_error(
    status: StatusCode,
    code: &str,
    description: Option<&str>,
) -> http::Response<Full<Bytes>> {
    let mut body = json!({ "error": code });
    if let Some(d) = description {
        body["error_description"] = Value::String(d.to_owned());
    }
    json_response(status, &body)
}

/// Parses form/query parameters; `Err(name)` on a repeated parameter.
pub(super) fn parse_params(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(bytes) {
        if out.iter().any(|(have, _)| *have == k) {
            return Err(k.into_owned());
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

/// A request's form parameters, or the answer to a form that repeats one
/// (with the empty parameter list the request log records for it).
pub(crate) type FormResult =
    Result<Vec<(String, String)>, (Vec<(String, String)>, http::Response<Full<Bytes>>)>;

/// [`parse_params`] for an endpoint: a repeated parameter is answered
/// `invalid_request` (RFC 6749 §3.1, §3.2).
pub(crate) fn form_params(bytes: &[u8]) -> FormResult {
    parse_params(bytes).map_err(|_| {
        (
            Vec::new(),
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("repeated parameter"),
            ),
        )
    })
}

pub(super) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Work to do after the state lock is released.
pub(crate) enum Effect {
    /// Approve this authentication at this time, then ping.
    ApproveAt(String, UnixTime),
    /// Ping the client about this (decided) authentication.
    Notify(String),
}

/// Routes a request: the reply, and the id (or device code) whose answer
/// it is, if the strict interval counts from it (call [`answer_left`] when
/// the answer leaves).
pub(crate) fn route(state: &Arc<Mutex<OpState>>, req: Incoming) -> (Reply, Option<String>) {
    let mut effects = Vec::new();
    let (reply, answered) = route_locked(state, req, &mut effects);
    for e in effects {
        match e {
            Effect::ApproveAt(id, at) => schedule_approval(state.clone(), id, at),
            Effect::Notify(id) => notify(state, &id),
        }
    }
    (reply, answered)
}

fn route_locked(
    state: &Mutex<OpState>,
    req: Incoming,
    effects: &mut Vec<Effect>,
) -> (Reply, Option<String>) {
    let mut st = match state.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    st.flights.marked = None;
    let reply = route_faulted(&mut st, req, effects);
    (reply, st.flights.marked.take())
}

fn route_faulted(st: &mut OpState, req: Incoming, effects: &mut Vec<Effect>) -> Reply {
    let fault = if req.method == Method::POST && req.path == "/token" {
        st.token_faults.pop_front()
    } else {
        None
    };
    match fault {
        None => {
            let (endpoint, params, response) = dispatch(st, &req, effects);
            st.log(&req, endpoint, &params, response.status().as_u16());
            Reply::Respond(response, None)
        }
        Some(Fault::Delay(d)) => {
            let (endpoint, params, response) = dispatch(st, &req, effects);
            st.log(&req, endpoint, &params, response.status().as_u16());
            Reply::Respond(response, Some(d))
        }
        Some(Fault::LostResponse) => {
            let (endpoint, params, _lost) = dispatch(st, &req, effects);
            st.log(&req, endpoint, &params, 0);
            Reply::Reset
        }
        Some(Fault::Reset) => {
            let params = parse_params(&req.body).unwrap_or_default();
            st.log(&req, Endpoint::Token, &params, 0);
            Reply::Reset
        }
        Some(Fault::Respond {
            status,
            headers,
            body,
        }) => {
            let params = parse_params(&req.body).unwrap_or_default();
            let mut r = http::Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    r.headers_mut().insert(k, v);
                }
            }
            st.log(&req, Endpoint::Token, &params, status);
            Reply::Respond(r, None)
        }
    }
}

/// Routes a request to its endpoint: (endpoint, parameters, response).
fn dispatch(
    st: &mut OpState,
    req: &Incoming,
    effects: &mut Vec<Effect>,
) -> (Endpoint, Vec<(String, String)>, http::Response<Full<Bytes>>) {
    if st.config.interactive_pages
        && let Some(routed) = super::pages::dispatch(st, req, effects)
    {
        return routed;
    }
    match (req.method.clone(), req.path.as_str()) {
        (Method::GET, "/.well-known/openid-configuration") => {
            let r = if st.config.serve_openid_configuration {
                json_response(StatusCode::OK, &st.metadata())
            } else {
                respond(StatusCode::NOT_FOUND, "text/html", "<h1>Not Found</h1>")
            };
            (Endpoint::Discovery, Vec::new(), r)
        }
        (Method::GET, "/.well-known/oauth-authorization-server") => {
            let r = if st.config.serve_oauth_metadata {
                json_response(StatusCode::OK, &st.metadata())
            } else {
                respond(StatusCode::NOT_FOUND, "text/html", "<h1>Not Found</h1>")
            };
            (Endpoint::Discovery, Vec::new(), r)
        }
        (Method::GET, "/jwks") => {
            let r = if st.config.jwks_unavailable {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/html",
                    "<h1>503 Service Unavailable</h1>",
                )
            } else {
                let mut r = respond(
                    StatusCode::OK,
                    "application/jwk-set+json",
                    st.jwks().to_string(),
                );
                if let Some(age) = st.config.jwks_max_age
                    && let Ok(v) = HeaderValue::from_str(&format!("public, max-age={age}"))
                {
                    r.headers_mut().insert(CACHE_CONTROL, v);
                }
                r
            };
            (Endpoint::Jwks, Vec::new(), r)
        }
        (Method::GET | Method::POST, "/authorize") => {
            let raw = if req.method == Method::GET {
                req.query.as_bytes().to_vec()
            } else {
                req.body.to_vec()
            };
            match parse_params(&raw) {
                Ok(params) => {
                    let r = match crate::par::resolve(st, params.clone()) {
                        Ok(resolved) => authorize(st, &resolved),
                        Err(r) => r,
                    };
                    (Endpoint::Authorize, params, r)
                }
                Err(name) => (
                    Endpoint::Authorize,
                    Vec::new(),
                    respond(
                        StatusCode::BAD_REQUEST,
                        "text/html",
                        format!("repeated parameter {name}"),
                    ),
                ),
            }
        }
        (Method::GET | Method::POST, "/userinfo") => {
            (Endpoint::UserInfo, Vec::new(), userinfo(st, req))
        }
        (Method::POST, "/df-authentication/cancel") => {
            let (params, r) = cancel(st, req);
            (Endpoint::Cancel, params, r)
        }
        (Method::POST, "/revoke") if st.config.profiles.ietf() => {
            let (params, r) = revoke(st, req);
            (Endpoint::Revocation, params, r)
        }
        (Method::POST, "/device_authorization") if st.config.profiles.ietf() => {
            let (params, r) = crate::device::device_authorization(st, req);
            (Endpoint::DeviceAuthorization, params, r)
        }
        (Method::POST, "/par") => {
            let (params, r) = crate::par::endpoint(st, req);
            (Endpoint::PushedAuthorization, params, r)
        }
        (Method::POST, "/token") => match parse_params(&req.body) {
            Ok(params) => {
                let mut r = token(st, req, &params, effects);
                if st.config.require_dpop_nonce
                    && let Ok(v) = HeaderValue::from_str(&st.dpop_nonce)
                {
                    r.headers_mut().insert("dpop-nonce", v);
                }
                (Endpoint::Token, params, r)
            }
            Err(_) => (
                Endpoint::Token,
                Vec::new(),
                oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some("repeated parameter"),
                ),
            ),
        },
        _ => (
            Endpoint::Other,
            Vec::new(),
            respond(StatusCode::NOT_FOUND, "text/plain", "not found"),
        ),
    }
}

pub(crate) fn lock(state: &Mutex<OpState>) -> std::sync::MutexGuard<'_, OpState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}
