//! The receiver for the OP's pings: the RP's notification endpoint
//! (`deferred_client_notification_endpoint`), with no web framework.
//!
//! When the client has a notification endpoint, the OP may call it the
//! moment a decision is ready, and the engine polls at once instead of
//! waiting for the next scheduled poll. A ping only wakes the poller: it
//! never carries or completes a result; tokens come only from the token
//! endpoint.
//!
//! [`DtrClient::ping_receiver`](crate::DtrClient::ping_receiver) gives a
//! [`PingReceiver`]. Mount it at the notification endpoint's path in any
//! server: it is a `tower::Service` over `http` requests (axum, hyper,
//! tonic), and [`PingReceiver::handle_raw`] takes plain method, header and
//! body values for anything else. It answers with a [`PingReply`]:
//!
//! | request | answer ([`PingReplyKind`]) |
//! |---|---|
//! | not `POST` | 405 |
//! | not `application/json` | 415 |
//! | body over the cap ([`PingReceiver::max_body`]) | 413 |
//! | malformed body | 400 |
//! | missing or wrong bearer token, *or* an unknown id | 401, identical |
//! | right token, live authentication | 204, the poller wakes |
//! | right token, authentication already ended | 204, nothing wakes |
//!
//! The 401 for an unknown id is the same, byte for byte and in the work
//! done, as the one for a wrong token, so the endpoint is no oracle for
//! which ids exist; tokens are compared as hashes, in constant time. The
//! [pings guide](crate::guide::pings) shows it mounted in axum and hyper.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::proto::profile::Profile;
use crate::secret::DeferredId;
use crate::time::{Clock, SystemClock};

mod mtls;
mod x509;

pub(crate) use mtls::fuzz_peer_certificate;
pub use mtls::{CertificateSubject, PeerCertificate, PingMtls};

/// A boxed, sendable future (what [`PingSink`] returns).
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the driver made of a ping's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PingVerdict {
    /// Unknown id, no token bound, or a wrong token: all alike.
    Rejected,
    /// Correct, and the authentication was woken.
    Woken,
    /// Correct, but the authentication had already ended: nothing woken.
    AlreadyFinished,
}

/// The body of a ping reply: always empty (RFC 6750 error details travel in
/// `WWW-Authenticate`). An `http_body::Body` of [`Bytes`], so it fits hyper,
/// axum (`route_service`) and any server that speaks `http` 1.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct PingBody {}

impl PingBody {
    fn empty() -> Self {
        PingBody {}
    }
}

impl http_body::Body for PingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(0)
    }
}

/// The default body cap.
pub(crate) const DEFAULT_MAX_BODY: usize = 4 * 1024;

/// Checks a ping's credentials and wakes the poller (the driver does both
/// in one step).
pub(crate) trait PingSink: Send + Sync + 'static {
    fn ping(&self, id: DeferredId, token: Vec<u8>) -> BoxFuture<PingVerdict>;

    /// A callback without a bearer token (IETF, advisory): wakes the
    /// authentication if the application opted in and it is eligible.
    fn advisory(&self, _id: DeferredId) -> BoxFuture<PingVerdict> {
        Box::pin(async { PingVerdict::Rejected })
    }

    /// A ping without a bearer token from a peer whose client certificate
    /// was accepted (see [`PingMtls`]): wakes the authentication if it is
    /// known and pending.
    fn transport_authenticated(&self, _id: DeferredId) -> BoxFuture<PingVerdict> {
        Box::pin(async { PingVerdict::Rejected })
    }
}

/// The answer to a ping, independent of any HTTP library.
///
/// ```
/// use oidc_dtr::DtrClient;
/// use oidc_dtr_testkit::MockOp;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let op = MockOp::start().await?;
/// # let client = DtrClient::builder()
/// #     .issuer(op.issuer())
/// #     .client_id(MockOp::CLIENT_ID)
/// #     .client_secret(MockOp::CLIENT_SECRET)
/// #     .redirect_uri("http://127.0.0.1:9/callback")
/// #     .build()
/// #     .await?;
/// let reply = client.ping_receiver().handle_raw("GET", None, None, b"").await;
/// assert_eq!(reply.status, 405);
/// assert_eq!(reply.headers(), &[("allow", "POST")]);
/// let response = reply.into_response(); // an `http::Response` to send back
/// assert_eq!(response.status(), 405);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "the reply must be sent to the OP"]
pub struct PingReply {
    /// The HTTP status to answer with.
    pub status: u16,
    /// What happened, for logs and metrics.
    pub kind: PingReplyKind,
}

/// What a ping amounted to.
///
/// ```
/// use oidc_dtr::ping::{PingReply, PingReplyKind};
///
/// /// A metrics label per reply.
/// fn label(reply: &PingReply) -> &'static str {
///     match reply.kind {
///         PingReplyKind::Woken | PingReplyKind::Advisory => "woken",
///         PingReplyKind::AlreadyFinished => "late",
///         PingReplyKind::Unauthorized => "unauthorized",
///         PingReplyKind::MethodNotAllowed
///         | PingReplyKind::UnsupportedMediaType
///         | PingReplyKind::PayloadTooLarge
///         | PingReplyKind::BadRequest => "malformed",
///         _ => "other",
///     }
/// }
/// # let _ = label;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PingReplyKind {
    /// Authenticated; the authentication was woken.
    Woken,
    /// Authenticated; the authentication had already ended.
    AlreadyFinished,
    /// An IETF callback without a bearer token, accepted as advisory (the
    /// application opted in): it woke the authentication, nothing more.
    Advisory,
    /// Missing or wrong token, or an unknown id (indistinguishable).
    Unauthorized,
    /// Not a `POST`.
    MethodNotAllowed,
    /// Not JSON.
    UnsupportedMediaType,
    /// Too large.
    PayloadTooLarge,
    /// Not a JSON object with a string `deferred_auth_id`.
    BadRequest,
}

impl PingReply {
    fn of(kind: PingReplyKind) -> Self {
        let status = match kind {
            PingReplyKind::Woken | PingReplyKind::AlreadyFinished | PingReplyKind::Advisory => 204,
            PingReplyKind::Unauthorized => 401,
            PingReplyKind::MethodNotAllowed => 405,
            PingReplyKind::UnsupportedMediaType => 415,
            PingReplyKind::PayloadTooLarge => 413,
            PingReplyKind::BadRequest => 400,
        };
        PingReply { status, kind }
    }

    /// The headers to send with the status.
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self.kind {
            PingReplyKind::Unauthorized => &[("www-authenticate", "Bearer")],
            PingReplyKind::MethodNotAllowed => &[("allow", "POST")],
            _ => &[],
        }
    }

    /// As an `http::Response` with an empty body.
    #[must_use = "the reply must be sent to the OP"]
    pub fn into_response(self) -> http::Response<PingBody> {
        let mut r = http::Response::new(PingBody::empty());
        *r.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        match self.kind {
            PingReplyKind::Unauthorized => {
                r.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            PingReplyKind::MethodNotAllowed => {
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("POST"));
            }
            _ => {}
        }
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        r
    }
}

/// The notification endpoint. Get one from
/// [`DtrClient::ping_receiver`](crate::DtrClient::ping_receiver); clones
/// share the client.
///
/// ```
/// use oidc_dtr::DtrClient;
/// use oidc_dtr::ping::PingReplyKind;
/// use oidc_dtr_testkit::MockOp;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let op = MockOp::start().await?;
/// # let client = DtrClient::builder()
/// #     .issuer(op.issuer())
/// #     .client_id(MockOp::CLIENT_ID)
/// #     .client_secret(MockOp::CLIENT_SECRET)
/// #     .redirect_uri("http://127.0.0.1:9/callback")
/// #     .notification_endpoint("http://127.0.0.1:9/dtr/ping")
/// #     .build()
/// #     .await?;
/// let receiver = client.ping_receiver();
/// // In the web framework's handler for the notification endpoint:
/// let body = br#"{"deferred_auth_id":"not-one-of-ours"}"#;
/// let reply = receiver
///     .handle_raw("POST", Some("application/json"), Some("Bearer wrong"), body)
///     .await;
/// assert_eq!((reply.status, reply.kind), (401, PingReplyKind::Unauthorized));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PingReceiver {
    sink: Arc<dyn PingSink>,
    max_body: usize,
    mtls: Option<Arc<PingMtls>>,
    /// Checks the validity period of CA-issued peer certificates.
    clock: Arc<dyn Clock>,
    warnings: Arc<std::sync::Mutex<WarnGate>>,
}

/// At most this many "ping rejected" WARN lines per [`WARN_WINDOW`]: the
/// pings are unauthenticated, so anyone could otherwise flood the log.
const WARN_BURST: u32 = 5;
/// The window [`WARN_BURST`] counts in.
const WARN_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Rate-limits the WARN lines about rejected pings; the rejections not
/// logged are counted and reported with the next line that is.
#[derive(Debug, Default)]
struct WarnGate {
    window_start: Option<std::time::Instant>,
    emitted: u32,
    suppressed: u64,
}

impl WarnGate {
    /// `Some(n)`: log now, saying that `n` rejections went unlogged since
    /// the last line; `None`: stay quiet (counted).
    fn admit(&mut self, now: std::time::Instant) -> Option<u64> {
        if self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= WARN_WINDOW)
        {
            self.window_start = Some(now);
            self.emitted = 0;
        }
        if self.emitted < WARN_BURST {
            self.emitted += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

impl fmt::Debug for PingReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingReceiver")
            .field("max_body", &self.max_body)
            .field("mtls", &self.mtls)
            .finish()
    }
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(crate::proto::message::is_json_media_type)
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(authorization: Option<&str>) -> Option<&str> {
    let v = authorization?.trim();
    let (scheme, token) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// The handle of a callback body and the profile its key belongs to:
/// `deferred_auth_id` (OIDC) or `deferral_code` (IETF), exactly one.
fn handle_of(body: &[u8]) -> Option<(String, Profile)> {
    // The strict reader: a body with a duplicate member is refused.
    let mut obj = crate::json::JsonObject::parse(body, "ping").ok()?;
    let oidc = obj.map.remove(Profile::Oidc.handle_name());
    let ietf = obj.map.remove(Profile::Ietf.handle_name());
    let (value, profile) = match (oidc, ietf) {
        (Some(v), None) => (v, Profile::Oidc),
        (None, Some(v)) => (v, Profile::Ietf),
        _ => return None,
    };
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some((s, profile)),
        _ => None,
    }
}

impl PingReceiver {
    pub(crate) fn new(sink: Arc<dyn PingSink>) -> Self {
        PingReceiver {
            sink,
            max_body: DEFAULT_MAX_BODY,
            mtls: None,
            clock: Arc::new(SystemClock),
            warnings: Arc::default(),
        }
    }

    /// The clock peer certificates' validity is checked with (the
    /// client's).
    pub(crate) fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Requires mutual TLS from the OP (see [`PingMtls`]): pings are then
    /// accepted only with a trusted peer certificate, handed over through
    /// [`handle_raw_with_peer`](Self::handle_raw_with_peer) or the
    /// [`PeerCertificate`] extension of the request given to
    /// [`handle`](Self::handle); [`handle_raw`](Self::handle_raw) and
    /// [`handle_parts`](Self::handle_parts), which have no peer
    /// certificate, then answer every ping with `401`.
    pub fn mtls(mut self, config: PingMtls) -> Self {
        self.mtls = Some(Arc::new(config));
        self
    }

    /// Sets the body cap (default 4 KiB).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The framework-neutral core: the method, the `Content-Type` and
    /// `Authorization` headers, and the body, in; the reply out.
    ///
    /// Cancel safety: safe. A dropped call has at most woken an
    /// authentication early, which a later poll would do anyway.
    pub async fn handle_raw(
        &self,
        method: &str,
        content_type: Option<&str>,
        authorization: Option<&str>,
        body: &[u8],
    ) -> PingReply {
        self.handle_raw_with_peer(method, content_type, authorization, body, None)
            .await
    }

    /// [`handle_raw`](Self::handle_raw) with the peer's TLS client
    /// certificate (DER of the leaf, from the TLS terminator), for an
    /// endpoint protected by mutual TLS (see [`PingMtls`]). Without
    /// [`mtls`](Self::mtls) configured, `peer_certificate` is ignored.
    /// With intermediates to hand over too, see
    /// [`handle_raw_with_peer_certificate`](Self::handle_raw_with_peer_certificate).
    ///
    /// Cancel safety: safe, as [`handle_raw`](Self::handle_raw).
    pub async fn handle_raw_with_peer(
        &self,
        method: &str,
        content_type: Option<&str>,
        authorization: Option<&str>,
        body: &[u8],
        peer_certificate: Option<&[u8]>,
    ) -> PingReply {
        use tracing::Instrument as _;
        let span = tracing::info_span!("dtr.ping", deferred_auth_id = tracing::field::Empty);
        self.check(
            method,
            content_type,
            authorization,
            body,
            peer_certificate,
            &[],
        )
        .instrument(span)
        .await
    }

    /// [`handle_raw_with_peer`](Self::handle_raw_with_peer) with the whole
    /// [`PeerCertificate`]: the leaf and the intermediates the peer sent,
    /// for a CA trusted with [`PingMtls::trust_ca_pem`].
    ///
    /// Cancel safety: safe, as [`handle_raw`](Self::handle_raw).
    pub async fn handle_raw_with_peer_certificate(
        &self,
        method: &str,
        content_type: Option<&str>,
        authorization: Option<&str>,
        body: &[u8],
        peer: Option<&PeerCertificate>,
    ) -> PingReply {
        use tracing::Instrument as _;
        let span = tracing::info_span!("dtr.ping", deferred_auth_id = tracing::field::Empty);
        let intermediates: Vec<&[u8]> = peer
            .map(|p| p.intermediates().collect())
            .unwrap_or_default();
        self.check(
            method,
            content_type,
            authorization,
            body,
            peer.map(PeerCertificate::der),
            &intermediates,
        )
        .instrument(span)
        .await
    }

    async fn check(
        &self,
        method: &str,
        content_type: Option<&str>,
        authorization: Option<&str>,
        body: &[u8],
        peer_certificate: Option<&[u8]>,
        intermediates: &[&[u8]],
    ) -> PingReply {
        if !method.eq_ignore_ascii_case("POST") {
            return PingReply::of(PingReplyKind::MethodNotAllowed);
        }
        if !is_json(content_type) {
            return PingReply::of(PingReplyKind::UnsupportedMediaType);
        }
        if body.len() > self.max_body {
            return PingReply::of(PingReplyKind::PayloadTooLarge);
        }
        let Some((id, profile)) = handle_of(body) else {
            return PingReply::of(PingReplyKind::BadRequest);
        };
        let id = DeferredId::new(id);
        if let Some(mtls) = &self.mtls {
            if !mtls.accepts(peer_certificate, intermediates, || self.clock.now()) {
                tracing::debug!("ping rejected: no trusted client certificate");
                return PingReply::of(PingReplyKind::Unauthorized);
            }
            if authorization.is_none() && mtls.allow_without_bearer {
                tracing::Span::current().record(
                    "deferred_auth_id",
                    tracing::field::display(id.fingerprint()),
                );
                let kind = match self.sink.transport_authenticated(id.clone()).await {
                    PingVerdict::Woken => PingReplyKind::Woken,
                    PingVerdict::AlreadyFinished => PingReplyKind::AlreadyFinished,
                    PingVerdict::Rejected => PingReplyKind::Unauthorized,
                };
                return PingReply::of(kind);
            }
        }
        let Some(token) = bearer(authorization) else {
            // The IETF draft: without a notification token the AS omits the
            // header; such a callback is advisory at most.
            if profile == Profile::Ietf && authorization.is_none() {
                tracing::Span::current().record(
                    "deferred_auth_id",
                    tracing::field::display(id.fingerprint()),
                );
                if self.sink.advisory(id.clone()).await == PingVerdict::Woken {
                    tracing::debug!(deferral_code = %id.fingerprint(), "advisory callback without a bearer token: poll woken");
                    return PingReply::of(PingReplyKind::Advisory);
                }
            }
            return PingReply::of(PingReplyKind::Unauthorized);
        };
        tracing::Span::current().record(
            "deferred_auth_id",
            tracing::field::display(id.fingerprint()),
        );
        let verdict = self.sink.ping(id.clone(), token.as_bytes().to_vec()).await;
        let kind = match verdict {
            PingVerdict::Woken => PingReplyKind::Woken,
            PingVerdict::AlreadyFinished => PingReplyKind::AlreadyFinished,
            PingVerdict::Rejected => {
                let admitted = match self.warnings.lock() {
                    Ok(mut g) => g.admit(std::time::Instant::now()),
                    Err(_) => None,
                };
                match admitted {
                    Some(0) => {
                        tracing::warn!(deferred_auth_id = %id.fingerprint(), "ping rejected (wrong token or unknown id)");
                    }
                    Some(not_logged) => {
                        tracing::warn!(deferred_auth_id = %id.fingerprint(), not_logged, "ping rejected (wrong token or unknown id); {not_logged} more rejected since the last such line");
                    }
                    None => {
                        tracing::debug!(deferred_auth_id = %id.fingerprint(), "ping rejected (wrong token or unknown id)");
                    }
                }
                PingReplyKind::Unauthorized
            }
        };
        PingReply::of(kind)
    }

    /// The same over `http` types, with the body already read.
    ///
    /// Cancel safety: safe, as [`handle_raw`](Self::handle_raw).
    #[must_use = "the reply must be sent to the OP"]
    pub async fn handle_parts(
        &self,
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
    ) -> PingReply {
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        self.handle_raw(
            method.as_str(),
            header(CONTENT_TYPE),
            header(AUTHORIZATION),
            body,
        )
        .await
    }

    /// Handles an `http::Request` whose body is any `http_body::Body`,
    /// reading at most the body cap.
    ///
    /// Cancel safety: safe, as [`handle_raw`](Self::handle_raw).
    #[must_use = "the reply must be sent to the OP"]
    pub async fn handle<B>(&self, req: http::Request<B>) -> http::Response<PingBody>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        // Cheap rejections before reading anything.
        let early = self.handle_raw(
            parts.method.as_str(),
            parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            None,
            b"",
        );
        let early = early.await;
        if matches!(
            early.kind,
            PingReplyKind::MethodNotAllowed | PingReplyKind::UnsupportedMediaType
        ) {
            return early.into_response();
        }
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return PingReply::of(PingReplyKind::PayloadTooLarge).into_response();
        }
        let bytes = match Limited::new(body, self.max_body).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                let kind = if e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    PingReplyKind::PayloadTooLarge
                } else {
                    PingReplyKind::BadRequest
                };
                return PingReply::of(kind).into_response();
            }
        };
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let peer = parts.extensions.get::<PeerCertificate>();
        self.handle_raw_with_peer_certificate(
            parts.method.as_str(),
            header(CONTENT_TYPE),
            header(AUTHORIZATION),
            &bytes,
            peer,
        )
        .await
        .into_response()
    }
}

impl<B> tower_service::Service<http::Request<B>> for PingReceiver
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<PingBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

#[cfg(test)]
mod tests;
