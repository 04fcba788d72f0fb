//! The one place that talks HTTP.
//!
//! The protocol core builds `HttpRequest` values and interprets
//! `HttpResponse` values (see `proto::message`); only the edge's `send` touches the network. The
//! edge has secure defaults that cannot be switched off:
//!
//! - it never follows redirects (a 3xx is an [`HttpError::Redirect`]);
//! - it refuses plain `http://` except to loopback hosts;
//! - it caps every response body (1 MiB by default) while reading it;
//! - it has connect and total timeouts;
//! - it sends `Accept: application/json` and never retries on its own (each
//!   retry is the SDK's decision, with fresh credentials).

use std::time::Duration;

use bytes::BytesMut;
use http::header::{ACCEPT, HeaderValue};

use crate::error::{ConfigError, HttpError, SharedError, TransportErrorKind};
use crate::proto::message::{HttpRequest, HttpResponse, endpoint_label, is_loopback};

/// Settings of the HTTP edge: [`HttpConfig::default`] and the setters,
/// handed to [`DtrClientBuilder::http_config`](crate::DtrClientBuilder::http_config).
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::client::HttpConfig;
///
/// let http = HttpConfig::default()
///     .connect_timeout(Duration::from_secs(5))
///     .timeout(Duration::from_secs(15))
///     .user_agent("my-rp/1.0");
/// # let _ = http;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_body_bytes: usize,
    pub(crate) user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            user_agent: concat!("oidc-dtr/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl HttpConfig {
    /// Time allowed to establish a connection. Default: 10 s.
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Time allowed for a whole request, body included. Default: 30 s.
    #[must_use]
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Largest response body accepted, in bytes. Default: 1 MiB.
    #[must_use]
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// The `User-Agent` header. Default: `oidc-dtr/` and this crate's
    /// version.
    #[must_use]
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }
}

/// The HTTP client, with the secure defaults described in the module docs.
#[derive(Clone)]
pub(crate) struct HttpEdge {
    client: reqwest::Client,
    max_body: usize,
}

impl std::fmt::Debug for HttpEdge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEdge")
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl HttpEdge {
    pub(crate) fn new(cfg: &HttpConfig) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            .user_agent(cfg.user_agent.clone())
            .build()
            .map_err(|e| ConfigError::HttpClient(SharedError::new(e)))?;
        Ok(HttpEdge {
            client,
            max_body: cfg.max_body_bytes,
        })
    }

    /// Sends a request and reads the (capped) response.
    pub(crate) async fn send(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let endpoint = endpoint_label(&req.url);
        if req.url.scheme() != "https" && !(req.url.scheme() == "http" && is_loopback(&req.url)) {
            return Err(HttpError::InsecureUrl { endpoint });
        }
        let mut headers = req.headers;
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let mut resp = self
            .client
            .request(req.method, req.url)
            .headers(headers)
            .body(req.body)
            .send()
            .await
            .map_err(|e| transport_error(e, &endpoint))?;
        let status = resp.status();
        if let Some(len) = resp.content_length()
            && len > self.max_body as u64
        {
            return Err(HttpError::BodyTooLarge {
                limit: self.max_body,
                endpoint,
            });
        }
        let headers = std::mem::take(resp.headers_mut());
        let mut body = BytesMut::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| transport_error(e, &endpoint))?
        {
            if body.len() + chunk.len() > self.max_body {
                return Err(HttpError::BodyTooLarge {
                    limit: self.max_body,
                    endpoint,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            headers,
            body: body.freeze(),
        })
    }
}

/// Classifies a reqwest error by walking its cause chain for the types
/// that say what happened: `std::io::Error` kinds (a reset or an early end
/// of stream is transient, even in the middle of a TLS handshake), a
/// `rustls::Error` (a TLS failure proper: certificate, protocol), hyper's
/// timeouts. Only DNS failures have no type of their own in the chain
/// (hyper-util wraps the resolver's `io::Error` in a private type whose
/// message says "dns error"), so that one case reads the message.
fn transport_error(e: reqwest::Error, endpoint: &str) -> HttpError {
    let kind = classify(&e);
    HttpError::Transport {
        kind,
        endpoint: endpoint.to_owned(),
        source: SharedError::new(e.without_url()),
    }
}

fn classify(e: &reqwest::Error) -> TransportErrorKind {
    use std::io::ErrorKind as Io;
    if e.is_timeout() {
        return TransportErrorKind::Timeout;
    }
    let mut io_kind = None;
    let mut tls = false;
    let mut dns = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
            // rustls reports through `io::Error::new(InvalidData, rustls::Error)`,
            // whose `source()` skips the wrapped error itself.
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                tls = true;
            }
        }
        if err.downcast_ref::<rustls::Error>().is_some() {
            tls = true;
        }
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_timeout())
        {
            return TransportErrorKind::Timeout;
        }
        if !dns && err.to_string().starts_with("dns error") {
            dns = true;
        }
        cur = err.source();
    }
    match io_kind {
        Some(Io::TimedOut) => return TransportErrorKind::Timeout,
        Some(Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe | Io::UnexpectedEof) => {
            return TransportErrorKind::Io;
        }
        _ => {}
    }
    if tls {
        TransportErrorKind::Tls
    } else if dns {
        TransportErrorKind::Dns
    } else if e.is_connect() {
        TransportErrorKind::Connect
    } else if e.is_request() || e.is_body() || e.is_decode() {
        TransportErrorKind::Io
    } else {
        TransportErrorKind::Other
    }
}
