//! The mock OP's protocol logic: the server side of the OpenID Connect
//! Deferred Token Response draft (discovery, the authorization endpoint, the
//! Deferred Code Exchange, polling and its errors).
//!
//! Every handler takes the locked state and an [`Incoming`] request and
//! returns a [`Reply`]; nothing here blocks or awaits while holding the lock.

// Handlers return the error response itself as `Err`: its size does not
// matter in a test double.
#![allow(clippy::result_large_err)]

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
use oidc_dtr::{Algorithm, Clock, KeyError, SigningKey, UnixTime};

use super::{
    DEFERRAL_CODE_TOKEN_TYPE, GRANT_TYPE_DEFERRED, GRANT_TYPE_DEVICE_CODE,
    GRANT_TYPE_IETF_DEFERRED, JWT_BEARER_ASSERTION, b64, ct_eq, half_hash,
};

/// How long codes (deferred or plain) stay redeemable.
const CODE_LIFETIME: Duration = Duration::from_secs(600);

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeKind {
    Deferred,
    Plain,
}

pub(crate) struct CodeRecord {
    pub kind: CodeKind,
    pub client_id: String,
    pub redirect_uri: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub scope: String,
    /// The `claims` request parameter, as sent.
    pub claims: Option<String>,
    pub auth_time: UnixTime,
    pub created_at: UnixTime,
    pub used: bool,
    /// The authorization request carried `completion_mode=deferred`.
    pub completion_mode_hint: bool,
    /// The `dpop_jkt` of the request (RFC 9449 §10): the code is bound to it.
    pub dpop_jkt: Option<String>,
}

/// Who authenticated and what was asked: the input of an ID token.
#[derive(Clone)]
pub(crate) struct Grant {
    pub nonce: Option<String>,
    pub scope: String,
    pub auth_time: UnixTime,
    pub subject: String,
    /// The `claims` request parameter of the authentication request.
    pub claims: Option<String>,
}

pub(crate) struct AuthRecord {
    pub client_id: String,
    pub grant: Grant,
    pub created_at: UnixTime,
    pub expires_at: Option<UnixTime>,
    pub interval: u64,
    pub last_poll: Option<UnixTime>,
    pub polls: u32,
    pub slow_downs: u32,
    pub state: AuthState,
    pub progress: String,
    pub notification_token: Option<String>,
    /// The DPoP key thumbprint bound at the exchange.
    pub jkt: Option<String>,
    /// The token response issued for it, and when.
    pub issued: Option<(UnixTime, Value)>,
    /// An IETF deferral (`deferral_code`) rather than an OIDC one.
    pub ietf: bool,
    /// IETF: pending polls answer `interaction_required` at this URI.
    pub interaction_uri: Option<String>,
}

/// One Ping Callback the OP sent.
#[derive(Debug, Clone)]
pub struct PingRecord {
    /// The `deferred_auth_id` in the body.
    pub deferred_auth_id: String,
    /// Whether the bearer token was deliberately wrong.
    pub forged: bool,
    /// The status the RP answered; `None` if the request failed.
    pub status: Option<u16>,
}

pub(crate) struct OpState {
    pub issuer: String,
    pub clock: Arc<dyn Clock>,
    pub key: SigningKey,
    /// Rotated-out keys, still published until the instant (if any).
    pub old_keys: Vec<(SigningKey, Option<UnixTime>)>,
    pub clients: HashMap<String, RegisteredClient>,
    pub codes: HashMap<String, CodeRecord>,
    pub auths: HashMap<String, AuthRecord>,
    pub log: Vec<LoggedRequest>,
    pub config: OpConfig,
    pub next_subject: u64,
    pub token_faults: std::collections::VecDeque<Fault>,
    /// `jti`s of DPoP proofs and client assertions seen (replay detection).
    pub used_jtis: HashSet<String>,
    /// The current server DPoP nonce.
    pub dpop_nonce: String,
    /// Pings sent.
    pub pings: Vec<PingRecord>,
    /// The body of the last token response built (picked up by the caller).
    pub last_token_body: Option<Value>,
    /// Access tokens issued, for the UserInfo endpoint: the grant and the
    /// DPoP key thumbprint the token is bound to.
    pub access_tokens: HashMap<String, (Grant, Option<String>)>,
    /// The client pings are sent with (one per OP, so connections are kept
    /// alive as a real OP's would be; it never follows redirects).
    pub ping_http: reqwest::Client,
    /// What the optional HTML pages remember.
    pub pages: super::pages::PagesState,
    /// Device authorizations (RFC 8628), by device code.
    pub devices: HashMap<String, super::device::DeviceRecord>,
    /// Deferred polls in flight and their timing, per id.
    pub flights: Flights,
    /// Pushed authorization requests (RFC 9126).
    pub par: super::par::ParState,
}

/// The OP's side of single flight and the floor, per `deferred_auth_id`
/// (from [`MockOp::flight_report`](crate::MockOp::flight_report)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlightReport {
    /// Deferred polls received.
    pub polls: u64,
    /// Ids that had a poll arrive while another of theirs was in flight,
    /// once per such arrival.
    pub overlaps: Vec<String>,
    /// Polls that came sooner than the floor after the previous answer.
    /// With [`OpConfig::strict_interval`](crate::OpConfig::strict_interval):
    /// every poll (and device-code token request) answered `slow_down`
    /// because it came sooner than the interval after the answer the OP
    /// counts from.
    pub floor_violations: Vec<FloorViolation>,
    /// `slow_down` answers given (all ids; polls and device-code token
    /// requests).
    pub slow_downs: u64,
    /// The most polls (all ids) in flight at once.
    pub max_in_flight: usize,
}

/// A poll that came too soon.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FloorViolation {
    /// The `deferred_auth_id`.
    pub deferred_auth_id: String,
    /// Time from the OP's previous answer to this poll's arrival.
    pub gap: Duration,
    /// The interval the OP enforced at its previous answer.
    pub floor: Duration,
}

#[derive(Default)]
pub(crate) struct Flights {
    in_flight: HashMap<String, u32>,
    total_in_flight: usize,
    /// Per id: when the OP last answered it, and the interval then.
    last_answer: HashMap<String, (UnixTime, u64)>,
    /// Strict interval: per id (or device code), when the answer the
    /// interval counts from left the OP (the exchange's, the IETF initial
    /// token request's, the device authorization's, then each poll's).
    answered: HashMap<String, UnixTime>,
    /// The id whose answer the request being routed is (set while it is
    /// routed, under the lock; taken by `route`).
    marked: Option<String>,
    report: FlightReport,
}

impl Flights {
    pub(crate) fn report(&self) -> FlightReport {
        self.report.clone()
    }

    /// The request being routed answers `key` (an id or a device code): in
    /// strict interval mode, the next request for it counts from the moment
    /// this answer leaves.
    pub(crate) fn mark_answer(&mut self, key: &str) {
        self.marked = Some(key.to_owned());
    }

    /// Strict interval: a request for `key` arrived at `now`; the OP's
    /// interval for it is `interval` seconds. Records and returns the
    /// violation when it came sooner than that after the counted answer.
    pub(crate) fn strict_early(&mut self, key: &str, now: UnixTime, interval: u64) -> bool {
        let Some(at) = self.answered.get(key).copied() else {
            return false;
        };
        let floor = Duration::from_secs(interval);
        if now >= at.saturating_add(floor) {
            return false;
        }
        self.report.floor_violations.push(FloorViolation {
            deferred_auth_id: key.to_owned(),
            gap: now.saturating_duration_since(at),
            floor,
        });
        true
    }

    /// A `slow_down` was answered.
    pub(crate) fn slow_down(&mut self) {
        self.report.slow_downs += 1;
    }
}

/// The answer of a request routed with a mark (see
/// [`Flights::mark_answer`]) left the OP (or its connection was dropped).
pub(crate) fn answer_left(state: &Mutex<OpState>, key: &str) {
    let mut st = lock(state);
    let now = st.now();
    st.flights.answered.insert(key.to_owned(), now);
}

/// A deferred poll arrived (before it is processed).
pub(crate) fn flight_begin(state: &Mutex<OpState>, id: &str) {
    let mut st = lock(state);
    let now = st.now();
    let strict = st.config.strict_interval;
    let f = &mut st.flights;
    f.report.polls += 1;
    let n = f.in_flight.entry(id.to_owned()).or_default();
    if *n > 0 {
        f.report.overlaps.push(id.to_owned());
    }
    *n += 1;
    f.total_in_flight += 1;
    f.report.max_in_flight = f.report.max_in_flight.max(f.total_in_flight);
    // In strict mode the poll handler checks (and records) the floor itself,
    // from the answer the OP counts from.
    if !strict && let Some((at, interval)) = f.last_answer.get(id).copied() {
        let floor = Duration::from_secs(interval);
        let gap = now.saturating_duration_since(at);
        if gap < floor {
            f.report.floor_violations.push(FloorViolation {
                deferred_auth_id: id.to_owned(),
                gap,
                floor,
            });
        }
    }
}

/// Its answer left (or the connection was dropped).
pub(crate) fn flight_end(state: &Mutex<OpState>, id: &str) {
    let mut st = lock(state);
    let now = st.now();
    let interval = st.auths.get(id).map_or(0, |r| r.interval);
    let f = &mut st.flights;
    if let Some(n) = f.in_flight.get_mut(id) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            f.in_flight.remove(id);
        }
    }
    f.total_in_flight = f.total_in_flight.saturating_sub(1);
    f.last_answer.insert(id.to_owned(), (now, interval));
}

impl OpState {
    pub(crate) fn now(&self) -> UnixTime {
        self.clock.now()
    }

    fn grant(&mut self, nonce: Option<String>, scope: String, auth_time: UnixTime) -> Grant {
        self.next_subject += 1;
        let subject = self
            .config
            .subject
            .clone()
            .unwrap_or_else(|| format!("user-{}", self.next_subject));
        Grant {
            nonce,
            scope,
            auth_time,
            subject,
            claims: None,
        }
    }

    pub(crate) fn seed_grant(&mut self, nonce: Option<String>, auth_time: UnixTime) -> Grant {
        self.grant(nonce, "openid".into(), auth_time)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub(crate) fn metadata(&self) -> Value {
        let cfg = &self.config;
        let mut response_types = vec!["code"];
        let mut grant_types = vec!["authorization_code"];
        if cfg.advertise_dtr && cfg.profiles.oidc() {
            response_types.extend(["deferred_code", "deferred_code code"]);
            grant_types.push(GRANT_TYPE_DEFERRED);
        }
        if cfg.advertise_dtr && cfg.profiles.ietf() {
            grant_types.extend([GRANT_TYPE_IETF_DEFERRED, GRANT_TYPE_DEVICE_CODE]);
        }
        let mut md = json!({
            "issuer": cfg.metadata_issuer.clone().unwrap_or_else(|| self.issuer.clone()),
            "authorization_endpoint": self.url("/authorize"),
            "token_endpoint": self.url("/token"),
            "userinfo_endpoint": self.url("/userinfo"),
            "jwks_uri": cfg.jwks_uri.clone().unwrap_or_else(|| self.url("/jwks")),
            "response_types_supported": response_types,
            "response_modes_supported": ["query", "form_post"],
            "grant_types_supported": grant_types,
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "ES384", "EdDSA"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": cfg.advertise_iss_parameter,
        });
        if cfg.identity_assurance {
            crate::assurance::advertise(&mut md);
        }
        if cfg.profiles.ietf() {
            md["deferred_token_response_supported"] = json!(cfg.advertise_dtr);
            md["revocation_endpoint"] = json!(self.url("/revoke"));
            md["device_authorization_endpoint"] = json!(self.url("/device_authorization"));
            let mut types = vec!["access_token", "refresh_token"];
            if cfg.advertise_deferral_revocation {
                types.push(DEFERRAL_CODE_TOKEN_TYPE);
            }
            md["revocation_endpoint_token_type_values_supported"] = json!(types);
        }
        super::par::advertise(self, &mut md);
        md
    }

    pub(crate) fn jwks(&self) -> Value {
        let now = self.now();
        let keys: Vec<Value> = std::iter::once(&self.key)
            .chain(
                self.old_keys
                    .iter()
                    .filter(|(_, retire_at)| retire_at.is_none_or(|t| now < t))
                    .map(|(k, _)| k),
            )
            .filter_map(SigningKey::public_jwk)
            .collect();
        json!({ "keys": keys })
    }

    pub(crate) fn random(&self, n: usize) -> String {
        let mut b = vec![0u8; n];
        // The OS generator does not fail in practice; a zeroed value would
        // still be a valid (if guessable) test identifier.
        let _ = aws_lc_rs::rand::fill(&mut b);
        b64(&b)
    }

    fn log(
        &mut self,
        req: &Incoming,
        endpoint: Endpoint,
        params: &[(String, String)],
        status: u16,
    ) {
        let entry = LoggedRequest {
            at: self.now(),
            method: req.method.to_string(),
            endpoint,
            path: req.path.clone(),
            params: params.to_vec(),
            headers: req
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            status,
        };
        self.log.push(entry);
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
                    let r = match super::par::resolve(st, params.clone()) {
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
            let (params, r) = super::par::endpoint(st, req);
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

// ---------------------------------------------------------------- /authorize

fn bad_request_page(msg: &str) -> http::Response<Full<Bytes>> {
    respond(
        StatusCode::BAD_REQUEST,
        "text/html",
        format!(
            "<html><body><h1>Bad request</h1><p>{}</p></body></html>",
            html_escape(msg)
        ),
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Sends the browser back to the RP with `params` in the requested mode.
pub(crate) fn redirect_back(
    redirect_uri: &str,
    form_post: bool,
    params: &[(&str, String)],
) -> http::Response<Full<Bytes>> {
    if form_post {
        let inputs: String = params
            .iter()
            .map(|(k, v)| {
                format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\"/>",
                    html_escape(k),
                    html_escape(v)
                )
            })
            .collect();
        let page = format!(
            "<html><head><title>Submit This Form</title></head><body onload=\"javascript:document.forms[0].submit()\"><form method=\"post\" action=\"{}\">{inputs}</form></body></html>",
            html_escape(redirect_uri)
        );
        let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", page);
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    let mut url = match Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => return bad_request_page("invalid redirect_uri"),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    let mut r = respond(StatusCode::FOUND, "text/html", "");
    if let Ok(v) = HeaderValue::from_str(url.as_str()) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

pub(super) fn authorize(
    st: &mut OpState,
    params: &[(String, String)],
) -> http::Response<Full<Bytes>> {
    let now = st.now();
    let Some(client_id) = param(params, "client_id") else {
        return bad_request_page("missing client_id");
    };
    let Some(client) = st.clients.get(client_id).cloned() else {
        return bad_request_page("unknown client_id");
    };
    let Some(redirect_uri) = param(params, "redirect_uri").map(str::to_owned) else {
        return bad_request_page("missing redirect_uri");
    };
    if !client.redirect_uris.is_empty() && !client.redirect_uris.contains(&redirect_uri) {
        return bad_request_page("redirect_uri is not registered");
    }
    let form_post = match param(params, "response_mode") {
        None | Some("query") => false,
        Some("form_post") => true,
        Some(_) => return bad_request_page("unsupported response_mode"),
    };
    let state = param(params, "state").map(str::to_owned);
    let iss = st.issuer.clone();
    let include_iss = st.config.include_iss;
    let error = |code: &str, desc: &str| {
        let mut p = vec![
            ("error", code.to_owned()),
            ("error_description", desc.to_owned()),
        ];
        if let Some(s) = &state {
            p.push(("state", s.clone()));
        }
        if include_iss {
            p.push(("iss", iss.clone()));
        }
        redirect_back(&redirect_uri, form_post, &p)
    };
    let mut rt: Vec<&str> = param(params, "response_type")
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    rt.sort_unstable();
    let ietf_code = rt.as_slice() == ["code"] && st.config.profiles.ietf();
    let allows_code = match rt.as_slice() {
        ["deferred_code"] if st.config.profiles.oidc() => false,
        ["code", "deferred_code"] if st.config.profiles.oidc() => true,
        ["code"] if ietf_code => true,
        _ => {
            return error(
                "unsupported_response_type",
                "response_type must be deferred_code or deferred_code code",
            );
        }
    };
    let scope = param(params, "scope").unwrap_or("").to_owned();
    if !scope.split(' ').any(|s| s == "openid") {
        return error("invalid_scope", "scope must contain openid");
    }
    let code_challenge = param(params, "code_challenge").map(str::to_owned);
    if st.config.require_pkce
        && (code_challenge.is_none() || param(params, "code_challenge_method") != Some("S256"))
    {
        return error("invalid_request", "PKCE with S256 is required");
    }
    let outcome = st.config.authorize_outcome.clone();
    let kind = match outcome {
        AuthorizeOutcome::Error {
            error: code,
            description,
        } => return error(&code, &description),
        _ if ietf_code => CodeKind::Plain,
        AuthorizeOutcome::Code if allows_code => CodeKind::Plain,
        AuthorizeOutcome::Code | AuthorizeOutcome::Defer => CodeKind::Deferred,
    };
    let code = st.random(20);
    st.codes.insert(
        code.clone(),
        CodeRecord {
            kind,
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.clone(),
            nonce: param(params, "nonce").map(str::to_owned),
            code_challenge,
            scope,
            claims: param(params, "claims").map(str::to_owned),
            auth_time: now,
            created_at: now,
            used: false,
            completion_mode_hint: completion_mode_deferred(params),
            dpop_jkt: param(params, "dpop_jkt").map(str::to_owned),
        },
    );
    let name = if kind == CodeKind::Deferred {
        "deferred_code"
    } else {
        "code"
    };
    let mut p = vec![(name, code)];
    if let Some(s) = &state {
        p.push(("state", s.clone()));
    }
    if include_iss {
        p.push(("iss", iss));
    }
    redirect_back(&redirect_uri, form_post, &p)
}

// -------------------------------------------------------------------- /token

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

fn invalid_dpop(why: &str) -> http::Response<Full<Bytes>> {
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
fn check_binding(
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
fn authenticate_assertion(
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

fn token(
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
    if let Err(r) = super::par::check_code_binding(st, params, proof.as_ref()) {
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

/// The Authentication Cancellation Endpoint: form or JSON body, client
/// authentication, DPoP binding; always 200 for a well-formed request.
fn cancel(
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

/// Looks up an unused, unexpired code of `kind` issued to `client_id`, and
/// marks it used.
fn redeem_code(
    st: &mut OpState,
    client_id: &str,
    code: &str,
    kind: CodeKind,
) -> Result<CodeRecordSnapshot, http::Response<Full<Bytes>>> {
    let now = st.now();
    let invalid = |why: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", Some(why));
    let rec = st
        .codes
        .get_mut(code)
        .ok_or_else(|| invalid("unknown code"))?;
    if rec.kind != kind {
        return Err(invalid("wrong kind of code"));
    }
    if rec.client_id != client_id {
        return Err(invalid("code was issued to another client"));
    }
    if rec.used {
        return Err(invalid("code already used"));
    }
    if now > rec.created_at.saturating_add(CODE_LIFETIME) {
        return Err(invalid("code expired"));
    }
    rec.used = true;
    Ok(CodeRecordSnapshot {
        redirect_uri: rec.redirect_uri.clone(),
        nonce: rec.nonce.clone(),
        code_challenge: rec.code_challenge.clone(),
        scope: rec.scope.clone(),
        auth_time: rec.auth_time,
        claims: rec.claims.clone(),
    })
}

struct CodeRecordSnapshot {
    redirect_uri: String,
    nonce: Option<String>,
    code_challenge: Option<String>,
    scope: String,
    auth_time: UnixTime,
    claims: Option<String>,
}

fn exchange(
    st: &mut OpState,
    client_id: &str,
    code: &str,
    params: &[(String, String)],
    proof: Option<&checks::Proof>,
    effects: &mut Vec<Effect>,
) -> http::Response<Full<Bytes>> {
    let rec = match redeem_code(st, client_id, code, CodeKind::Deferred) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let now = st.now();
    let id = st.random(32);
    let cfg = &st.config;
    let interval = cfg.interval.unwrap_or(5);
    let expires_in = cfg.expires_in;
    let interim = cfg.interim_id_token;
    let grant = Grant {
        claims: rec.claims,
        ..st.grant(rec.nonce, rec.scope, rec.auth_time)
    };
    let record = AuthRecord {
        client_id: client_id.to_owned(),
        grant,
        created_at: now,
        expires_at: expires_in.map(|s| now.saturating_add(Duration::from_secs(s))),
        interval,
        last_poll: None,
        polls: 0,
        slow_downs: 0,
        state: AuthState::Pending,
        progress: st.config.progress.clone(),
        notification_token: param(params, "deferred_notification_token").map(str::to_owned),
        jkt: proof.map(|p| p.jkt.clone()),
        issued: None,
        ietf: false,
        interaction_uri: None,
    };
    if let AutoApprove::AfterDelay(d) = st.config.auto_approve {
        effects.push(Effect::ApproveAt(id.clone(), now.saturating_add(d)));
    }
    let mut body = Map::new();
    body.insert("deferred_auth_id".into(), Value::String(id.clone()));
    if let Some(e) = expires_in {
        body.insert("expires_in".into(), json!(e));
    }
    if let Some(i) = st.config.interval {
        body.insert("interval".into(), json!(i));
    }
    if interim {
        let fault = st.config.interim_id_token_fault.clone();
        match issue_id_token(st, client_id, &record.grant, None, now, fault.as_ref()) {
            Ok(Some(jwt)) => {
                body.insert("interim_id_token".into(), Value::String(jwt));
            }
            Ok(None) => {}
            Err(_) => return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        }
    }
    st.flights.mark_answer(&id);
    st.auths.insert(id, record);
    json_response(StatusCode::OK, &Value::Object(body))
}

fn id_token_claims(
    st: &OpState,
    client_id: &str,
    grant: &Grant,
    access_token: Option<&str>,
    now: UnixTime,
) -> Value {
    let mut c = json!({
        "iss": st.issuer,
        "sub": grant.subject,
        "aud": client_id,
        "exp": now.as_secs() + 600,
        "iat": now.as_secs(),
        "auth_time": grant.auth_time.as_secs(),
    });
    if let Some(n) = &grant.nonce {
        c["nonce"] = Value::String(n.clone());
    }
    if let Some(at) = access_token {
        c["at_hash"] = Value::String(half_hash(st.key.algorithm(), at));
    }
    if let Some(obj) = c.as_object_mut() {
        for (k, v) in &st.config.extra_claims {
            obj.insert(k.clone(), v.clone());
        }
    }
    if st.config.identity_assurance {
        let fault = st.config.assurance_fault;
        crate::assurance::insert(&mut c, grant.claims.as_deref(), "id_token", now, fault);
    }
    super::pages::add_claims(st, grant, &mut c);
    c
}

/// A compact JWS with exactly `header` as its header.
fn sign_compact(key: &SigningKey, header: &Value, claims: &Value) -> Result<String, KeyError> {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64(&sig)))
}

/// Issues an ID token, broken as `fault` says. `Ok(None)`: no ID token at
/// all ([`IdTokenFault::MissingIdToken`]).
fn issue_id_token(
    st: &OpState,
    client_id: &str,
    grant: &Grant,
    access_token: Option<&str>,
    now: UnixTime,
    fault: Option<&IdTokenFault>,
) -> Result<Option<String>, KeyError> {
    let mut c = id_token_claims(st, client_id, grant, access_token, now);
    let secs = now.as_secs();
    let alg = st.key.algorithm();
    let mut header = json!({"alg": alg.as_str()});
    if let Some(kid) = st.key.kid() {
        header["kid"] = Value::String(kid.to_owned());
    }
    let mut key = st.key.clone();
    match fault {
        None | Some(IdTokenFault::BadSignature) => {}
        Some(IdTokenFault::WrongIssuer) => c["iss"] = json!("https://evil.example"),
        Some(IdTokenFault::WrongAudience) => c["aud"] = json!("someone-else"),
        Some(IdTokenFault::ExtraAudience { azp }) => {
            c["aud"] = json!([client_id, "https://other.example/api"]);
            if *azp {
                c["azp"] = json!(client_id);
            }
        }
        Some(IdTokenFault::WrongAzp) => c["azp"] = json!("https://other.example/api"),
        Some(IdTokenFault::MissingNonce) => {
            if let Some(o) = c.as_object_mut() {
                o.remove("nonce");
            }
        }
        Some(IdTokenFault::WrongNonce) => c["nonce"] = json!("not-the-nonce-you-sent"),
        Some(IdTokenFault::Expired) => {
            c["exp"] = json!(secs.saturating_sub(3600));
            c["iat"] = json!(secs.saturating_sub(7200));
        }
        Some(IdTokenFault::NotYetValid) => c["nbf"] = json!(secs + 3600),
        Some(IdTokenFault::IssuedInFuture) => {
            c["iat"] = json!(secs + 3600);
            c["exp"] = json!(secs + 7200);
        }
        Some(IdTokenFault::AlgNone) => {
            let input = format!(
                "{}.{}.",
                b64(br#"{"alg":"none"}"#),
                b64(c.to_string().as_bytes())
            );
            return Ok(Some(input));
        }
        Some(IdTokenFault::WrongAtHash) => {
            c["at_hash"] = json!(half_hash(alg, "some-other-access-token"))
        }
        Some(IdTokenFault::UnknownKid) => {
            key = new_key(alg)?;
            header["kid"] = json!(key.kid().unwrap_or("stray"));
        }
        Some(IdTokenFault::NoKid) => {
            if let Some(o) = header.as_object_mut() {
                o.remove("kid");
            }
        }
        Some(IdTokenFault::CritHeader) => header["crit"] = json!(["exp"]),
        Some(IdTokenFault::Jwe) => {
            let h = b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#);
            return Ok(Some(format!("{h}.a2V5.aXY.Y2lwaGVy.dGFn")));
        }
        Some(IdTokenFault::MissingAuthTime) => {
            if let Some(o) = c.as_object_mut() {
                o.remove("auth_time");
            }
        }
        Some(IdTokenFault::OldAuthTime(d)) => {
            c["auth_time"] = json!(secs.saturating_sub(d.as_secs()))
        }
        Some(IdTokenFault::OtherSubject) => c["sub"] = json!(format!("{}-impostor", grant.subject)),
        Some(IdTokenFault::MissingIdToken) => return Ok(None),
    }
    let mut jwt = sign_compact(&key, &header, &c)?;
    if fault == Some(&IdTokenFault::BadSignature) {
        // Change the first signature character: the signature no longer
        // verifies, and the token still decodes.
        if let Some(dot) = jwt.rfind('.') {
            let first = jwt.as_bytes().get(dot + 1).copied();
            let swapped = if first == Some(b'A') { "B" } else { "A" };
            jwt.replace_range(dot + 1..dot + 2, swapped);
        }
    }
    Ok(Some(jwt))
}

/// The final token response: access token, ID token, refresh token.
pub(crate) fn token_response(
    st: &mut OpState,
    client_id: &str,
    grant: &Grant,
    proof: Option<&checks::Proof>,
) -> http::Response<Full<Bytes>> {
    let dpop = proof.is_some();
    let now = st.now();
    let access_token = st.random(32);
    let fault = st.config.id_token_fault.clone();
    let Ok(id_token) = issue_id_token(
        st,
        client_id,
        grant,
        Some(&access_token),
        now,
        fault.as_ref(),
    ) else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None);
    };
    let refresh = st.random(32);
    let mut body = json!({
        "access_token": access_token,
        "token_type": if dpop && !st.config.dpop_downgrade { "DPoP" } else { "Bearer" },
        "expires_in": 3600,
        "refresh_token": refresh,
        "scope": grant.scope,
    });
    if let Some(t) = id_token {
        body["id_token"] = Value::String(t);
    }
    let jkt = proof
        .filter(|_| !st.config.dpop_downgrade)
        .map(|p| p.jkt.clone());
    st.access_tokens.insert(access_token, (grant.clone(), jkt));
    let resp = json_response(StatusCode::OK, &body);
    st.last_token_body = Some(body);
    resp
}

/// The UserInfo endpoint (OIDC Core §5.3): a bearer token, or a DPoP-bound
/// one with a proof from its key carrying its `ath` (RFC 9449 §7).
fn userinfo(st: &mut OpState, req: &Incoming) -> http::Response<Full<Bytes>> {
    let unauthorized = |scheme: &str, error: &str| {
        let mut r = respond(StatusCode::UNAUTHORIZED, "text/plain", "");
        if let Ok(v) = HeaderValue::from_str(&format!("{scheme} error=\"{error}\"")) {
            r.headers_mut().insert("www-authenticate", v);
        }
        r
    };
    let header = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some((scheme, token)) = header.split_once(' ') else {
        return unauthorized("Bearer", "invalid_request");
    };
    let Some((grant, jkt)) = st.access_tokens.get(token).cloned() else {
        return unauthorized("Bearer", "invalid_token");
    };
    match (jkt, scheme.to_ascii_lowercase().as_str()) {
        (None, "bearer") => {}
        (Some(jkt), "dpop") => {
            let Some(proof_header) = req.headers.get("dpop").and_then(|v| v.to_str().ok()) else {
                return unauthorized("DPoP", "invalid_dpop_proof");
            };
            let htu = format!("{}/userinfo", st.issuer);
            let Ok(proof) =
                checks::check_dpop_proof(proof_header, req.method.as_str(), &htu, st.now(), 60)
            else {
                return unauthorized("DPoP", "invalid_dpop_proof");
            };
            let ath = b64(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
            );
            if proof.jkt != jkt || proof.ath.as_deref() != Some(ath.as_str()) {
                return unauthorized("DPoP", "invalid_dpop_proof");
            }
            if st.config.require_dpop_nonce
                && proof.nonce.as_deref() != Some(st.dpop_nonce.as_str())
            {
                let mut r = unauthorized("DPoP", "use_dpop_nonce");
                if let Ok(v) = HeaderValue::from_str(&st.dpop_nonce) {
                    r.headers_mut().insert("dpop-nonce", v);
                }
                return r;
            }
            if !st.used_jtis.insert(proof.jti) {
                return unauthorized("DPoP", "invalid_dpop_proof");
            }
        }
        (Some(_), _) => return unauthorized("DPoP", "invalid_token"),
        (None, _) => return unauthorized("Bearer", "invalid_token"),
    }
    let now = st.now();
    let fault = st.config.assurance_fault;
    let mut body = json!({"sub": grant.subject, "given_name": "Maxi"});
    if st.config.identity_assurance {
        crate::assurance::insert(&mut body, grant.claims.as_deref(), "userinfo", now, fault);
    }
    match fault {
        Some(crate::AssuranceFault::UserInfoOtherSubject) => {
            body["sub"] = json!(format!("{}-impostor", grant.subject));
        }
        Some(crate::AssuranceFault::UserInfoAsJwt) => {
            let h = json!({"alg": st.key.algorithm().as_str()});
            return match sign_compact(&st.key, &h, &body) {
                Ok(jwt) => respond(StatusCode::OK, "application/jwt", jwt),
                Err(_) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
            };
        }
        _ => {}
    }
    json_response(StatusCode::OK, &body)
}

/// A poll under one profile: a handle of the other profile is unknown here.
fn poll_as(
    st: &mut OpState,
    client_id: &str,
    id: &str,
    proof: Option<&checks::Proof>,
    ietf: bool,
) -> http::Response<Full<Bytes>> {
    if st.auths.get(id).is_some_and(|r| r.ietf != ietf) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("unknown deferral"),
        );
    }
    poll(st, client_id, id, proof)
}

fn poll(
    st: &mut OpState,
    client_id: &str,
    id: &str,
    proof: Option<&checks::Proof>,
) -> http::Response<Full<Bytes>> {
    let now = st.now();
    let auto = st.config.auto_approve;
    let enforce = st.config.enforce_interval;
    let expire = st.config.expire_authentications;
    let redelivery = st.config.redelivery_window;
    let script = st.config.progress_script.clone();
    let strict = st.config.strict_interval;
    let Some(rec) = st.auths.get_mut(id) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("unknown deferred_auth_id"),
        );
    };
    if rec.client_id != client_id {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("unknown deferred_auth_id"),
        );
    }
    if let Err(r) = check_binding(rec.jkt.as_deref(), proof) {
        return r;
    }
    // A poll of this authentication, processed: in strict mode the next one
    // counts from the moment this answer leaves.
    st.flights.mark_answer(id);
    if expire && rec.state == AuthState::Pending && rec.expires_at.is_some_and(|e| now >= e) {
        rec.state = AuthState::Expired;
    }
    match rec.state {
        AuthState::Expired => return oauth_error(StatusCode::BAD_REQUEST, "expired_token", None),
        AuthState::Redeemed => {
            // An OP with an idempotent re-delivery window answers a repeat
            // of the redeeming request with the same tokens.
            if let (Some(grace), Some((at, body))) = (redelivery, &rec.issued)
                && now < at.saturating_add(grace)
            {
                return json_response(StatusCode::OK, body);
            }
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                Some("already redeemed"),
            );
        }
        AuthState::Cancelled => {
            return oauth_error(StatusCode::BAD_REQUEST, "access_denied", Some("cancelled"));
        }
        _ => {}
    }
    let early = if strict {
        // From the moment the OP's previous answer (the exchange's or
        // initial token request's, then each poll's) left, no tolerance.
        st.flights.strict_early(id, now, rec.interval)
    } else {
        enforce
            && rec
                .last_poll
                .is_some_and(|last| now < last.saturating_add(Duration::from_secs(rec.interval)))
    };
    if early {
        rec.interval = rec.interval.saturating_add(5);
        rec.slow_downs += 1;
        rec.last_poll = Some(now);
        st.flights.slow_down();
        return oauth_error(StatusCode::BAD_REQUEST, "slow_down", None);
    }
    rec.last_poll = Some(now);
    rec.polls += 1;
    if rec.state == AuthState::Pending {
        let approve = match auto {
            AutoApprove::Never => false,
            AutoApprove::AfterPolls(n) => rec.polls >= n,
            AutoApprove::AfterDelay(d) => now >= rec.created_at.saturating_add(d),
        };
        if approve {
            rec.state = AuthState::Approved;
        }
    }
    match rec.state.clone() {
        AuthState::Pending => {
            let n = rec.polls as usize;
            let progress = script
                .get(n.saturating_sub(1))
                .or(script.last())
                .cloned()
                .unwrap_or_else(|| rec.progress.clone());
            match &rec.interaction_uri {
                Some(uri) if rec.ietf => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({
                        "error": "interaction_required",
                        "error_description": progress,
                        "interaction_uri": uri,
                    }),
                ),
                _ => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "authorization_pending",
                    Some(&progress),
                ),
            }
        }
        AuthState::Denied { description } => oauth_error(
            StatusCode::BAD_REQUEST,
            "access_denied",
            description.as_deref(),
        ),
        AuthState::Approved => {
            rec.state = AuthState::Redeemed;
            let grant = rec.grant.clone();
            let resp = token_response(st, client_id, &grant, proof);
            if let (Some(body), Some(rec)) = (st.last_token_body.take(), st.auths.get_mut(id)) {
                rec.issued = Some((now, body));
            }
            resp
        }
        AuthState::Expired | AuthState::Redeemed | AuthState::Cancelled => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None)
        }
    }
}

/// Whether `completion_mode` lists `deferred` (space-separated; unknown
/// values are ignored, as the IETF draft says).
pub(crate) fn completion_mode_deferred(params: &[(String, String)]) -> bool {
    param(params, "completion_mode").is_some_and(|m| m.split(' ').any(|v| v == "deferred"))
}

fn code_grant(
    st: &mut OpState,
    client_id: &str,
    params: &[(String, String)],
    proof: Option<&checks::Proof>,
    effects: &mut Vec<Effect>,
) -> http::Response<Full<Bytes>> {
    let opted_in = completion_mode_deferred(params);
    if st.config.profiles.ietf()
        && !opted_in
        && let Some(code) = param(params, "code")
        && st.codes.get(code).is_some_and(|c| c.completion_mode_hint)
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(
                "the authorization request hinted completion_mode=deferred; the token request must opt in too",
            ),
        );
    }
    let Some(code) = param(params, "code") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("missing code"),
        );
    };
    let rec = match redeem_code(st, client_id, code, CodeKind::Plain) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if param(params, "redirect_uri") != Some(rec.redirect_uri.as_str()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("redirect_uri mismatch"),
        );
    }
    if let Some(challenge) = &rec.code_challenge {
        let ok = param(params, "code_verifier").is_some_and(|v| {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v.as_bytes());
            b64(d.as_ref()) == *challenge
        });
        if !ok {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                Some("PKCE verification failed"),
            );
        }
    }
    let grant = Grant {
        claims: rec.claims,
        ..st.grant(rec.nonce, rec.scope, rec.auth_time)
    };
    if opted_in
        && st.config.profiles.ietf()
        && st.config.authorize_outcome != AuthorizeOutcome::Code
    {
        return defer(st, client_id, grant, params, proof, effects);
    }
    token_response(st, client_id, &grant, proof)
}

/// The IETF deferred response: a new deferral, HTTP 400 with
/// `authorization_pending` (or `interaction_required`), `deferral_code`,
/// `expires_in` and `interval`.
pub(crate) fn defer(
    st: &mut OpState,
    client_id: &str,
    grant: Grant,
    params: &[(String, String)],
    proof: Option<&checks::Proof>,
    effects: &mut Vec<Effect>,
) -> http::Response<Full<Bytes>> {
    let now = st.now();
    let code = st.random(32);
    let interval = st.config.interval.unwrap_or(5);
    let expires_in = st.config.expires_in.unwrap_or(3600);
    let interaction_uri = st.config.interaction_uri.clone();
    let progress = st.config.progress.clone();
    st.auths.insert(
        code.clone(),
        AuthRecord {
            client_id: client_id.to_owned(),
            grant,
            created_at: now,
            expires_at: Some(now.saturating_add(Duration::from_secs(expires_in))),
            interval,
            last_poll: None,
            polls: 0,
            slow_downs: 0,
            state: AuthState::Pending,
            progress: progress.clone(),
            notification_token: param(params, "client_notification_token").map(str::to_owned),
            jkt: proof.map(|p| p.jkt.clone()),
            issued: None,
            ietf: true,
            interaction_uri: interaction_uri.clone(),
        },
    );
    if let AutoApprove::AfterDelay(d) = st.config.auto_approve {
        effects.push(Effect::ApproveAt(code.clone(), now.saturating_add(d)));
    }
    st.flights.mark_answer(&code);
    let mut body = json!({
        "error": if interaction_uri.is_some() { "interaction_required" } else { "authorization_pending" },
        "error_description": progress,
        "deferral_code": code,
        "expires_in": expires_in,
        "interval": interval,
    });
    if let Some(u) = interaction_uri {
        body["interaction_uri"] = Value::String(u);
    }
    json_response(StatusCode::BAD_REQUEST, &body)
}

/// RFC 7009 revocation of a deferral code (B.8): client authentication,
/// DPoP binding; always 200 for a well-formed request, and a known pending
/// code moves to cancelled.
fn revoke(
    st: &mut OpState,
    req: &Incoming,
) -> (Vec<(String, String)>, http::Response<Full<Bytes>>) {
    let params = match parse_params(&req.body) {
        Ok(p) => p,
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

/// A fresh key with a random `kid`.
pub(crate) fn new_key(alg: Algorithm) -> Result<SigningKey, KeyError> {
    let mut kid = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut kid);
    Ok(SigningKey::generate(alg)?.with_kid(b64(&kid)))
}

/// Approves `id` at `at` (by the OP's clock), then pings.
fn schedule_approval(state: Arc<Mutex<OpState>>, id: String, at: UnixTime) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let clock = lock(&state).clock.clone();
    rt.spawn(async move {
        clock.sleep_until(at).await;
        let approved = {
            let mut st = lock(&state);
            match st.auths.get_mut(&id) {
                Some(r) if r.state == AuthState::Pending => {
                    r.state = AuthState::Approved;
                    true
                }
                _ => false,
            }
        };
        if approved {
            notify(&state, &id);
        }
    });
}

pub(crate) fn lock(state: &Mutex<OpState>) -> std::sync::MutexGuard<'_, OpState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where and how to ping for `id`.
struct PingTarget {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
    /// The body member: `deferred_auth_id` or (IETF) `deferral_code`.
    key: &'static str,
}

fn ping_target(st: &OpState, id: &str) -> Option<PingTarget> {
    let rec = st.auths.get(id)?;
    let endpoint = st
        .clients
        .get(&rec.client_id)?
        .notification_endpoint
        .clone()?;
    Some(PingTarget {
        http: st.ping_http.clone(),
        endpoint,
        token: rec.notification_token.clone(),
        key: if rec.ietf {
            "deferral_code"
        } else {
            "deferred_auth_id"
        },
    })
}

/// Sends the Ping Callback for a finished authentication, in the
/// background, when the client registered an endpoint.
pub(crate) fn notify(state: &Arc<Mutex<OpState>>, id: &str) {
    let target = {
        let st = lock(state);
        if !st.config.send_pings {
            return;
        }
        ping_target(&st, id)
    };
    let Some(t) = target else {
        return;
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let state = state.clone();
    let id = id.to_owned();
    rt.spawn(async move {
        let status = send_ping(&t.http, &t.endpoint, t.key, &id, t.token.as_deref()).await;
        lock(&state).pings.push(PingRecord {
            deferred_auth_id: id,
            forged: false,
            status,
        });
    });
}

/// Sends a ping now (early, duplicate or forged), returning the RP's status.
pub(crate) async fn ping_now(
    state: &Arc<Mutex<OpState>>,
    id: &str,
    forged_token: Option<&str>,
) -> Option<u16> {
    let t = ping_target(&lock(state), id)?;
    let token = forged_token.map(str::to_owned).or(t.token);
    let status = send_ping(&t.http, &t.endpoint, t.key, id, token.as_deref()).await;
    lock(state).pings.push(PingRecord {
        deferred_auth_id: id.to_owned(),
        forged: forged_token.is_some(),
        status,
    });
    status
}

/// POSTs `{key: id}` with the bearer token (none when the client sent
/// none: the IETF AS then omits the header); never follows a redirect.
async fn send_ping(
    http: &reqwest::Client,
    endpoint: &str,
    key: &str,
    id: &str,
    token: Option<&str>,
) -> Option<u16> {
    let mut body = Map::new();
    body.insert(key.to_owned(), Value::String(id.to_owned()));
    let mut req = http
        .post(endpoint)
        .header("content-type", "application/json")
        .body(Value::Object(body).to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.send().await.ok().map(|r| r.status().as_u16())
}
