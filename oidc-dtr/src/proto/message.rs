//! HTTP messages as data, and the rules for reading them.
//!
//! The protocol core builds [`HttpRequest`] values and interprets
//! [`HttpResponse`] values; it never sends anything. Sending is the engine's
//! job (`engine::transport`). What lives here is what every endpoint of the
//! draft shares: URL rules (https only, loopback excepted), the OAuth error
//! body (RFC 6749 §5.2), `Retry-After`, JSON media types, and the rule that a
//! success is a JSON object.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use http::{Method, StatusCode};
use url::Url;

use crate::error::{ConfigError, Error, ErrorCode, OAuthError, ResponseError, RetryAfter};
use crate::json::JsonObject;
use crate::time::UnixTime;

/// An HTTP request, as data.
#[derive(Clone)]
pub(crate) struct HttpRequest {
    /// The method.
    pub method: Method,
    /// The URL, shared: a request sent often (a poll) takes it from what
    /// its builder prepared once, without a copy, and so does the DPoP
    /// nonce bookkeeping after the send.
    pub url: Arc<Url>,
    /// The same URL as the HTTP stack takes it, when the request's builder
    /// keeps one parsed (requests sent often); else the edge parses `url`.
    pub uri: Option<http::Uri>,
    /// The headers (the edge adds `Accept` and `User-Agent`).
    pub headers: HeaderMap,
    /// The body (empty for GET).
    pub body: Vec<u8>,
}

impl std::fmt::Debug for HttpRequest {
    // Bodies and headers carry credentials: show only the shape.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("endpoint", &endpoint_label(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl HttpRequest {
    /// A GET request.
    pub(crate) fn get(url: impl Into<Arc<Url>>) -> Self {
        HttpRequest {
            method: Method::GET,
            url: url.into(),
            uri: None,
            headers: HeaderMap::new(),
            body: Vec::new(),
        }
    }

    /// A POST with an `application/x-www-form-urlencoded` body.
    pub(crate) fn post_form<'a>(
        url: impl Into<Arc<Url>>,
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let body = form_encode(params).into_bytes();
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        HttpRequest {
            method: Method::POST,
            url: url.into(),
            uri: None,
            headers,
            body,
        }
    }

    /// A POST with an `application/json` body.
    pub(crate) fn post_json(url: impl Into<Arc<Url>>, body: &serde_json::Value) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        HttpRequest {
            method: Method::POST,
            url: url.into(),
            uri: None,
            headers,
            body: body.to_string().into_bytes(),
        }
    }

    /// The form parameters of the body (for tests and logging of names only).
    #[cfg(test)]
    pub(crate) fn form_params(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

/// Encodes `application/x-www-form-urlencoded`.
pub(crate) fn form_encode<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// An HTTP response, as data.
#[derive(Clone)]
pub(crate) struct HttpResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body (at most the configured cap).
    pub body: Bytes,
}

impl std::fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("content_type", &self.content_type())
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl HttpResponse {
    /// A response with a JSON body (for tests and custom transports).
    #[cfg(test)]
    pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        HttpResponse {
            status,
            headers,
            body: Bytes::from(body.to_string()),
        }
    }

    /// The `Content-Type` header as text.
    pub(crate) fn content_type(&self) -> Option<&str> {
        self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
    }

    /// Whether the `Content-Type` is JSON (`application/json` or `*/*+json`).
    pub(crate) fn is_json(&self) -> bool {
        self.content_type().is_some_and(is_json_media_type)
    }

    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Retry-After` header, if present and well-formed.
    pub(crate) fn retry_after(&self) -> Option<RetryAfter> {
        parse_retry_after(self.headers.get(RETRY_AFTER)?.to_str().ok()?)
    }
}

pub(crate) fn is_json_media_type(ct: &str) -> bool {
    // Compared without case and without allocating (this runs on every
    // response).
    let essence = ct.split(';').next().unwrap_or("").trim().as_bytes();
    essence.eq_ignore_ascii_case(b"application/json")
        || (essence.len() >= 12
            && essence[..12].eq_ignore_ascii_case(b"application/")
            && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// Parses `Retry-After`: delta-seconds or an HTTP-date.
pub(crate) fn parse_retry_after(v: &str) -> Option<RetryAfter> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Absurd values saturate instead of failing.
        let secs = v.parse::<u64>().unwrap_or(u64::MAX);
        return Some(RetryAfter::Delay(Duration::from_secs(secs)));
    }
    httpdate::parse_http_date(v)
        .ok()
        .map(|t| RetryAfter::At(UnixTime::from_system_time(t)))
}

/// `scheme://host[:port]/path` of a URL: how endpoints appear in errors and
/// logs (query and fragment could carry secrets).
pub(crate) fn endpoint_label(url: &Url) -> String {
    let mut s = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(p) = url.port() {
        s.push_str(&format!(":{p}"));
    }
    s.push_str(url.path());
    s
}

/// Whether the URL's host is a loopback address (`127.0.0.0/8`, `::1`) or
/// `localhost`.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Checks that a configured or discovered URL is one the SDK will talk to.
pub(crate) fn check_url(url: &Url, field: &'static str) -> Result<(), ConfigError> {
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(url) => {}
        "http" => return Err(ConfigError::InsecureUrl { field }),
        other => {
            return Err(ConfigError::InvalidUrl {
                field,
                reason: format!("unsupported scheme `{other}`"),
            });
        }
    }
    if url.host().is_none() {
        return Err(ConfigError::InvalidUrl {
            field,
            reason: "no host".into(),
        });
    }
    if url.fragment().is_some() {
        return Err(ConfigError::InvalidUrl {
            field,
            reason: "must not have a fragment".into(),
        });
    }
    Ok(())
}

/// Parses and checks a URL setting.
pub(crate) fn parse_url(s: &str, field: &'static str) -> Result<Url, ConfigError> {
    let url = Url::parse(s).map_err(|e| ConfigError::InvalidUrl {
        field,
        reason: e.to_string(),
    })?;
    check_url(&url, field)?;
    Ok(url)
}

/// Parses an OAuth error body (`error`, `error_description`, `error_uri`)
/// from a response with a JSON content type. `None` if it is not one, or is
/// one that breaks a rule (see [`read_oauth_error`]).
///
/// A body sent as `text/plain` (or with no `Content-Type`) is read too, as
/// some servers label their JSON errors so: only a JSON object with a
/// non-empty string `error` counts, so an HTML or text page never does.
pub(crate) fn parse_oauth_error(resp: &HttpResponse) -> Option<OAuthError> {
    read_oauth_error(resp)?.ok()
}

/// [`parse_oauth_error`], telling a malformed OAuth error body (an `error`
/// code with control characters, an `interval` that is not a positive
/// integer) apart from a body that is not an OAuth error at all.
pub(crate) fn read_oauth_error(resp: &HttpResponse) -> Option<Result<OAuthError, ResponseError>> {
    if !oauth_error_readable(resp) {
        return None;
    }
    oauth_error_from_body(resp)
}

/// Whether an error body may be read as an OAuth error: a JSON content
/// type, `text/plain`, or none.
fn oauth_error_readable(resp: &HttpResponse) -> bool {
    resp.is_json()
        || resp.content_type().is_none_or(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("text/plain")
        })
}

/// The largest body [`pending_answer`] reads; a longer one takes the
/// general path.
const PENDING_FAST_MAX_BODY: usize = 4096;

/// The fast reading of the answer most polls get: HTTP 400 with a small
/// OAuth error body whose `error` is `authorization_pending` or
/// `slow_down`. Gives exactly the [`OAuthError`] the general path
/// ([`status_error`]) gives for the same response, or `None` when the
/// response is anything else or has any feature this reader does not take
/// on (escapes, other members, other value types, duplicate members, a
/// body over 4 KiB, ...): the caller then takes the general path, which
/// keeps every refusal of malformed bodies.
pub(crate) fn pending_answer(resp: &HttpResponse) -> Option<OAuthError> {
    let (code, body) = scan_pending(resp)?;
    Some(OAuthError {
        code,
        description: body.description.map(crate::error::clean_op_text),
        uri: body.uri.and_then(crate::error::clean_op_uri),
        status: Some(resp.status),
        retry_after: resp.retry_after(),
        dpop_nonce: resp.header("dpop-nonce").map(str::to_owned),
        interval: body.interval,
        interaction_uri: None,
    })
}

/// Whether [`pending_answer`] takes the response on (without building the
/// error).
pub(crate) fn is_pending_answer(resp: &HttpResponse) -> bool {
    scan_pending(resp).is_some()
}

fn scan_pending(resp: &HttpResponse) -> Option<(ErrorCode, FlatErrorBody<'_>)> {
    if resp.status != StatusCode::BAD_REQUEST
        || resp.body.len() > PENDING_FAST_MAX_BODY
        || !oauth_error_readable(resp)
    {
        return None;
    }
    let body = FlatErrorBody::scan(&resp.body)?;
    let code = match body.error? {
        "authorization_pending" => ErrorCode::AuthorizationPending,
        "slow_down" => ErrorCode::SlowDown,
        _ => return None,
    };
    Some((code, body))
}

/// The members of a flat OAuth error object, as borrowed text: only
/// `error`, `error_description` and `error_uri` (strings without escapes
/// or control characters) and `interval` (a positive integer of at most
/// 18 digits, no fraction or exponent), each at most once, with JSON
/// whitespace around the tokens. Anything else is not this shape.
#[derive(Default)]
struct FlatErrorBody<'a> {
    error: Option<&'a str>,
    description: Option<&'a str>,
    uri: Option<&'a str>,
    interval: Option<u64>,
}

impl<'a> FlatErrorBody<'a> {
    fn scan(b: &'a [u8]) -> Option<Self> {
        let mut out = FlatErrorBody::default();
        let mut i = skip_json_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        i = skip_json_ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                let (name, next) = plain_json_string(b, i)?;
                i = skip_json_ws(b, next);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                i = skip_json_ws(b, i + 1);
                let next = if name == "interval" {
                    let (n, next) = positive_json_int(b, i)?;
                    if out.interval.replace(n).is_some() {
                        return None;
                    }
                    next
                } else {
                    let slot = match name {
                        "error" => &mut out.error,
                        "error_description" => &mut out.description,
                        "error_uri" => &mut out.uri,
                        _ => return None,
                    };
                    let (value, next) = plain_json_string(b, i)?;
                    if slot.replace(value).is_some() {
                        return None;
                    }
                    next
                };
                i = skip_json_ws(b, next);
                match b.get(i) {
                    Some(b',') => i = skip_json_ws(b, i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        (skip_json_ws(b, i) == b.len()).then_some(out)
    }
}

fn skip_json_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// A JSON string at `i` without escapes or control characters, and the
/// index after its closing quote.
fn plain_json_string(b: &[u8], i: usize) -> Option<(&str, usize)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let rest = b.get(i + 1..)?;
    let len = rest
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    if rest[len] != b'"' {
        return None;
    }
    let s = std::str::from_utf8(&rest[..len]).ok()?;
    Some((s, i + 1 + len + 1))
}

/// A positive JSON integer at `i` (no sign, no leading zero, at most 18
/// digits, not followed by a fraction or an exponent), and the index after
/// it.
fn positive_json_int(b: &[u8], i: usize) -> Option<(u64, usize)> {
    let rest = b.get(i..)?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 18 || rest[0] == b'0' {
        return None;
    }
    if matches!(rest.get(digits), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    let n = rest[..digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some((n, i + digits))
}

/// An OAuth error from the body, whatever the `Content-Type`: `None` when
/// the body is not a JSON object with a non-empty string `error`.
fn oauth_error_from_body(resp: &HttpResponse) -> Option<Result<OAuthError, ResponseError>> {
    let obj = JsonObject::parse(&resp.body, "error response").ok()?;
    let code = match obj.get("error") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.as_str(),
        _ => return None,
    };
    if let Err(problem) = crate::error::check_error_code(code) {
        return Some(Err(obj.err("error", problem)));
    }
    let interval = match obj.optional_positive_int("interval") {
        Ok(i) => i,
        Err(e) => return Some(Err(e)),
    };
    let text = |k: &str| match obj.get(k) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    Some(Ok(OAuthError {
        code: ErrorCode::from(code),
        description: text("error_description").map(|d| crate::error::clean_op_text(&d)),
        uri: text("error_uri").and_then(|u| crate::error::clean_op_uri(&u)),
        status: Some(resp.status),
        retry_after: resp.retry_after(),
        dpop_nonce: resp.header("dpop-nonce").map(str::to_owned),
        interval,
        interaction_uri: text("interaction_uri").filter(|u| u.len() <= 2048),
    }))
}

/// Whether an OAuth error code says "not yet, ask again": the answers that
/// keep a poll going or start a deferral.
pub(crate) fn is_pending_code(code: &ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::AuthorizationPending | ErrorCode::SlowDown | ErrorCode::InteractionRequired
    )
}

/// At most `max` printable characters of a body, for error messages about
/// non-OAuth error responses (never used on success bodies).
fn body_preview(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(max * 4)]);
    let collapsed: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    crate::error::sanitize(&collapsed, max)
}

/// Turns any non-2xx response into the matching error: a redirect, an OAuth
/// error (JSON with `error`, whatever the 4xx/5xx status), or a non-OAuth
/// status error with a short preview.
///
/// A pending answer (`authorization_pending`, `slow_down`,
/// `interaction_required`) counts as one only with HTTP 400 (RFC 6749
/// §5.2): with another error status (a 500 from a failing server, a 403
/// from a proxy) it is [`crate::error::HttpError::PendingWithErrorStatus`], a failure
/// that may go away, never a pending answer or a deferral. A malformed
/// OAuth error body is a [`ResponseError`] naming the member.
pub(crate) fn error_for_status(resp: &HttpResponse, endpoint: &Url) -> Result<(), Error> {
    if resp.status.is_success() {
        return Ok(());
    }
    Err(status_error(resp, endpoint))
}

/// The error a non-2xx response stands for (see [`error_for_status`]).
pub(crate) fn status_error(resp: &HttpResponse, endpoint: &Url) -> Error {
    let status = resp.status;
    if status.is_redirection() {
        return Error::redirect(status, endpoint_label(endpoint));
    }
    if status.is_client_error() || status.is_server_error() {
        match read_oauth_error(resp) {
            Some(Ok(e)) if is_pending_code(&e.code) && status != StatusCode::BAD_REQUEST => {
                return Error::pending_with_error_status(
                    status,
                    endpoint_label(endpoint),
                    e.code,
                    e.retry_after,
                );
            }
            Some(Ok(e)) => return e.into(),
            Some(Err(malformed)) => return malformed.into(),
            None => {}
        }
    }
    Error::http_status(
        status,
        endpoint_label(endpoint),
        resp.content_type().map(|s| crate::error::sanitize(s, 100)),
        body_preview(&resp.body, 200),
        resp.retry_after(),
    )
}

/// Reads a 2xx JSON object. A 2xx body that is an OAuth error (has `error`
/// and lacks `required_member`) is reported as that OAuth error, as some
/// servers answer errors with 200.
pub(crate) fn success_object(
    resp: &HttpResponse,
    endpoint: &Url,
    context: &'static str,
    required_member: &str,
) -> Result<JsonObject, Error> {
    error_for_status(resp, endpoint)?;
    let obj = JsonObject::parse(&resp.body, context)?;
    if !obj.map.contains_key(required_member)
        && let Some(e) = oauth_error_from_body(resp)
    {
        return Err(match e {
            Ok(e) => e.into(),
            Err(malformed) => malformed.into(),
        });
    }
    Ok(obj)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::HttpError;

    fn resp(status: u16, ct: Option<&str>, body: &str) -> HttpResponse {
        let mut headers = HeaderMap::new();
        if let Some(ct) = ct {
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        HttpResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::from(body.to_owned()),
        }
    }

    fn url() -> Url {
        Url::parse("https://op.example/token?x=secret").unwrap()
    }

    #[test]
    fn loopback_and_https_rules() {
        let ok = [
            "https://op.example/x",
            "http://127.0.0.1:8080/x",
            "http://127.5.0.1/x",
            "http://[::1]:9/x",
            "http://localhost:3000/cb",
        ];
        for u in ok {
            assert!(parse_url(u, "f").is_ok(), "{u}");
        }
        assert_eq!(
            parse_url("http://op.example/x", "f"),
            Err(ConfigError::InsecureUrl { field: "f" })
        );
        assert!(matches!(
            parse_url("http://10.0.0.1/x", "f"),
            Err(ConfigError::InsecureUrl { .. })
        ));
        assert!(matches!(
            parse_url("ftp://op.example/x", "f"),
            Err(ConfigError::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse_url("https://op.example/x#frag", "f"),
            Err(ConfigError::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse_url("not a url", "f"),
            Err(ConfigError::InvalidUrl { .. })
        ));
        // "localhost.evil.com" is not loopback.
        assert!(parse_url("http://localhost.evil.example/x", "f").is_err());
    }

    #[test]
    fn endpoint_label_drops_query() {
        assert_eq!(endpoint_label(&url()), "https://op.example/token");
    }

    #[test]
    fn oauth_error_from_any_error_status_with_json() {
        for status in [400, 401, 403, 500, 503] {
            let r = resp(
                status,
                Some("application/json; charset=utf-8"),
                r#"{"error":"invalid_grant","error_description":"nope","error_uri":"https://x"}"#,
            );
            match error_for_status(&r, &url()) {
                Err(Error::OAuth(e)) => {
                    assert_eq!(e.code, ErrorCode::InvalidGrant);
                    assert_eq!(e.description.as_deref(), Some("nope"));
                    assert_eq!(e.uri.as_deref(), Some("https://x"));
                    assert_eq!(e.status.unwrap().as_u16(), status);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn oauth_error_text_is_capped_cleaned_and_uri_https_only() {
        let body = serde_json::json!({
            "error": "authorization_pending",
            "error_description": format!("a\r\nb\u{202E}{}", "x".repeat(1_000_000)),
            "error_uri": "javascript:alert(1)",
        })
        .to_string();
        let r = resp(400, Some("application/json"), &body);
        match error_for_status(&r, &url()) {
            Err(Error::OAuth(e)) => {
                let d = e.description.unwrap();
                assert!(d.starts_with("a  bx"), "{:?}", &d[..10]);
                assert_eq!(d.chars().count(), crate::error::MAX_OP_TEXT_CHARS + 1);
                assert_eq!(e.uri, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn problem_json_counts_as_json() {
        let r = resp(
            400,
            Some("application/problem+json"),
            r#"{"error":"slow_down"}"#,
        );
        assert!(matches!(error_for_status(&r, &url()), Err(Error::OAuth(_))));
    }

    #[test]
    fn html_error_page_is_a_status_error_with_preview() {
        let page = format!(
            "<html><body>\n<h1>502 Bad Gateway</h1>{}</body></html>",
            "x".repeat(5000)
        );
        let r = resp(502, Some("text/html"), &page);
        match error_for_status(&r, &url()) {
            Err(Error::Http(HttpError::Status {
                status,
                body_preview,
                endpoint,
                ..
            })) => {
                assert_eq!(status.as_u16(), 502);
                assert!(body_preview.contains("502 Bad Gateway"));
                assert!(body_preview.chars().count() <= 201);
                assert_eq!(endpoint, "https://op.example/token");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Issue 11, item 6: a valid OAuth error body sent as `text/plain` (or
    /// without a content type) is the error it is; an HTML page is not.
    #[test]
    fn oauth_error_body_as_text_plain_is_oauth_but_not_as_html() {
        for ct in [Some("text/plain"), Some("text/plain; charset=utf-8"), None] {
            let r = resp(400, ct, r#"{"error":"invalid_grant"}"#);
            match error_for_status(&r, &url()) {
                Err(Error::OAuth(e)) => assert_eq!(e.code, ErrorCode::InvalidGrant),
                other => panic!("{ct:?}: {other:?}"),
            }
        }
        let r = resp(400, Some("text/html"), r#"{"error":"invalid_grant"}"#);
        assert!(matches!(
            error_for_status(&r, &url()),
            Err(Error::Http(HttpError::Status { .. }))
        ));
        let r = resp(400, Some("text/plain"), "Bad Request");
        assert!(matches!(
            error_for_status(&r, &url()),
            Err(Error::Http(HttpError::Status { .. }))
        ));
        let r = resp(400, Some("application/json"), r#"{"error":42}"#);
        assert!(matches!(
            error_for_status(&r, &url()),
            Err(Error::Http(HttpError::Status { .. }))
        ));
        let r = resp(400, Some("application/json"), "not json at all \u{0}\u{1}");
        assert!(matches!(
            error_for_status(&r, &url()),
            Err(Error::Http(HttpError::Status { .. }))
        ));
    }

    #[test]
    fn redirect_is_an_error() {
        let mut r = resp(302, None, "");
        r.headers.insert(
            "location",
            HeaderValue::from_static("https://evil.example/"),
        );
        match error_for_status(&r, &url()) {
            Err(Error::Http(HttpError::Redirect { status, .. })) => {
                assert_eq!(status.as_u16(), 302)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn binary_garbage_never_panics() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        for status in [200, 302, 400, 500] {
            for ct in [None, Some("application/json"), Some("text/html")] {
                let mut r = resp(status, ct, "");
                r.body = Bytes::from(bytes.clone());
                let _ = error_for_status(&r, &url());
                let _ = success_object(&r, &url(), "ctx", "x");
            }
        }
    }

    #[test]
    fn error_in_a_200_body_is_an_oauth_error() {
        let r = resp(
            200,
            Some("application/json"),
            r#"{"error":"invalid_grant"}"#,
        );
        assert!(matches!(
            success_object(&r, &url(), "ctx", "deferred_auth_id"),
            Err(Error::OAuth(_))
        ));
        let r = resp(
            200,
            Some("application/json"),
            r#"{"deferred_auth_id":"x","error":"y"}"#,
        );
        assert!(success_object(&r, &url(), "ctx", "deferred_auth_id").is_ok());
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after("120"),
            Some(RetryAfter::Delay(Duration::from_secs(120)))
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999"),
            Some(RetryAfter::Delay(Duration::from_secs(u64::MAX)))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(RetryAfter::At(UnixTime::from_secs(784111777)))
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after(""), None);
    }

    /// Issue 22: a 500 (any error status but 400) with a pending body was
    /// read as a pending answer, so a failing server looked like "keep
    /// waiting at the floor" (and the IETF initial answer as a deferral).
    #[test]
    fn a_pending_body_with_an_error_status_other_than_400_is_a_transient_failure() {
        for code in ["authorization_pending", "slow_down", "interaction_required"] {
            for status in [500, 502, 503, 401, 403, 429] {
                let r = resp(
                    status,
                    Some("application/json"),
                    &format!(r#"{{"error":"{code}","deferral_code":"dc"}}"#),
                );
                let e = error_for_status(&r, &url()).unwrap_err();
                match &e {
                    Error::Http(h @ HttpError::PendingWithErrorStatus { .. }) => {
                        assert_eq!(h.status().map(|s| s.as_u16()), Some(status));
                        assert!(h.is_transient());
                        let text = h.to_string();
                        assert!(
                            text.contains(code) && text.contains("HTTP 400 only"),
                            "{text}"
                        );
                    }
                    other => panic!("{code} {status}: {other:?}"),
                }
                assert!(e.is_retryable(), "{code} {status}");
            }
            // With 400 it is the pending answer it says.
            let r = resp(
                400,
                Some("application/json"),
                &format!(r#"{{"error":"{code}"}}"#),
            );
            assert!(matches!(error_for_status(&r, &url()), Err(Error::OAuth(_))));
        }
        // Other codes keep their meaning whatever the status.
        let r = resp(500, Some("application/json"), r#"{"error":"server_error"}"#);
        assert!(matches!(error_for_status(&r, &url()), Err(Error::OAuth(_))));
        // The Retry-After of the failing answer is kept.
        let mut r = resp(
            503,
            Some("application/json"),
            r#"{"error":"authorization_pending"}"#,
        );
        r.headers.insert(RETRY_AFTER, HeaderValue::from_static("9"));
        match error_for_status(&r, &url()) {
            Err(Error::Http(h)) => assert_eq!(
                h.retry_after(),
                Some(RetryAfter::Delay(Duration::from_secs(9)))
            ),
            other => panic!("{other:?}"),
        }
    }

    /// Issue 22: an `error` code with CR/LF (or `"`, `\`, non-ASCII) was
    /// kept raw in the OAuth error; `interval: 1e300` on `slow_down` was
    /// dropped silently instead of refused.
    #[test]
    fn a_malformed_oauth_error_body_is_a_typed_response_error() {
        for (body, field) in [
            (r#"{"error":"slow_down\r\nSet-Cookie: x"}"#, "error"),
            (r#"{"error":"a\"b"}"#, "error"),
            (r#"{"error":"a\\b"}"#, "error"),
            (r#"{"error":"caf\u00e9"}"#, "error"),
            (r#"{"error":"x\u0000"}"#, "error"),
            (r#"{"error":"slow_down","interval":1e300}"#, "interval"),
            (r#"{"error":"slow_down","interval":7.0}"#, "interval"),
            (r#"{"error":"slow_down","interval":-5}"#, "interval"),
        ] {
            for status in [400, 200] {
                let r = resp(status, Some("application/json"), body);
                let e = if status == 200 {
                    success_object(&r, &url(), "ctx", "access_token")
                        .err()
                        .unwrap()
                } else {
                    error_for_status(&r, &url()).unwrap_err()
                };
                match e {
                    Error::Response(e) => {
                        assert_eq!(e.field, Some(field), "{body}");
                        assert!(!e.to_string().contains('\r'), "{e}");
                        assert!(!e.to_string().contains("Set-Cookie"), "{e}");
                    }
                    other => panic!("{body} {status}: {other:?}"),
                }
            }
            assert!(parse_oauth_error(&resp(400, Some("application/json"), body)).is_none());
        }
        // Every character RFC 6749 §5.2 allows is kept.
        let allowed: String = (0x20u8..=0x7e)
            .filter(|b| *b != b'"' && *b != b'\\')
            .map(char::from)
            .collect();
        let body = serde_json::json!({"error": allowed, "interval": 12}).to_string();
        let e = parse_oauth_error(&resp(400, Some("application/json"), &body)).unwrap();
        assert_eq!(e.code.as_str(), allowed);
        assert_eq!(e.interval, Some(12));
    }

    #[test]
    fn form_encoding_escapes() {
        let r = HttpRequest::post_form(url(), [("a", "b c&d=e"), ("k", "ü")]);
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            "a=b+c%26d%3De&k=%C3%BC"
        );
        assert_eq!(r.form_params()[0], ("a".to_owned(), "b c&d=e".to_owned()));
    }
}
