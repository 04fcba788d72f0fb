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

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, CONTENT_LENGTH, HeaderValue, USER_AGENT};
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::{ConfigError, HttpError, SharedError, TransportErrorKind};
use crate::proto::message::{HttpRequest, HttpResponse, endpoint_label, is_loopback};

/// A client certificate chain and its private key, for mutual TLS at the
/// OP's back-channel endpoints (RFC 8705).
///
/// Built from PEM ([`from_pem`](Self::from_pem)); no type of the TLS stack
/// appears in the API. Its [`thumbprint`](Self::thumbprint) is the
/// `x5t#S256` of the leaf certificate (RFC 8705 §3.1): the value an OP
/// binds certificate-bound access tokens to, and the one a
/// [`DeferredAuthentication`](crate::DeferredAuthentication) remembers so
/// that it is always polled with the certificate it started with.
///
/// `Debug` shows the thumbprint only; the key never leaves this value.
///
/// ```
/// use oidc_dtr::client::{ClientIdentity, HttpConfig};
///
/// # let key = rcgen::KeyPair::generate().unwrap();
/// # let cert = rcgen::CertificateParams::new(vec!["rp.example".to_owned()])
/// #     .unwrap()
/// #     .self_signed(&key)
/// #     .unwrap();
/// # let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
/// // The certificate chain and its key, as PEM (e.g. read from files).
/// let identity = ClientIdentity::from_pem(&cert_pem, &key_pem)?;
/// assert_eq!(identity.thumbprint().len(), 43); // base64url of a SHA-256
/// assert!(!format!("{identity:?}").contains("PRIVATE KEY"));
/// let http = HttpConfig::default().client_identity(identity);
/// # let _ = http;
/// # Ok::<(), oidc_dtr::error::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ClientIdentity {
    /// The chain then the key, as PEM, for the TLS stack.
    pem: zeroize::Zeroizing<Vec<u8>>,
    thumbprint: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("x5t#S256", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.thumbprint == other.thumbprint
    }
}

impl ClientIdentity {
    /// A certificate chain (leaf first, PEM `CERTIFICATE` blocks) and its
    /// private key (PEM: PKCS#8 `PRIVATE KEY`, `RSA PRIVATE KEY` or
    /// `EC PRIVATE KEY`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] (field `client_identity`) when the chain
    /// has no certificate, the key is missing or not one of those forms,
    /// or the TLS stack refuses the pair.
    pub fn from_pem(
        cert_chain_pem: impl AsRef<[u8]>,
        private_key_pem: impl AsRef<[u8]>,
    ) -> Result<Self, ConfigError> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid = |reason: &str| ConfigError::Invalid {
            field: "client_identity",
            reason: reason.to_owned(),
        };
        let chain = cert_chain_pem.as_ref();
        let leaf = CertificateDer::pem_slice_iter(chain)
            .next()
            .ok_or_else(|| invalid("the certificate chain has no PEM certificate"))?
            .map_err(|_| invalid("the certificate chain is not valid PEM"))?;
        PrivateKeyDer::from_pem_slice(private_key_pem.as_ref())
            .map_err(|_| invalid("no PEM private key (PKCS#8, PKCS#1 or SEC1) was found"))?;
        let mut pem = zeroize::Zeroizing::new(Vec::with_capacity(
            chain.len() + private_key_pem.as_ref().len() + 1,
        ));
        // Only the certificates and the key: no other PEM block.
        for cert in CertificateDer::pem_slice_iter(chain) {
            let cert = cert.map_err(|_| invalid("the certificate chain is not valid PEM"))?;
            pem.extend_from_slice(pem_block("CERTIFICATE", &cert).as_bytes());
        }
        pem.extend_from_slice(private_key_pem.as_ref());
        pem.push(b'\n');
        if !tls_accepts_identity(&pem) {
            return Err(invalid("the TLS stack refuses this certificate and key"));
        }
        Ok(ClientIdentity {
            pem,
            thumbprint: cert_thumbprint(&leaf),
        })
    }

    /// The `x5t#S256` of the leaf certificate: base64url (no padding) of
    /// the SHA-256 of its DER (RFC 8705 §3.1).
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }
}

/// `x5t#S256` (RFC 8705 §3.1) of a DER certificate.
pub(crate) fn cert_thumbprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    crate::jose::b64(digest.as_ref())
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

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
    pub(crate) client_identity: Option<ClientIdentity>,
    pub(crate) previous_client_identities: Vec<ClientIdentity>,
    pub(crate) extra_root_certificates: Vec<Vec<u8>>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            user_agent: concat!("oidc-dtr/", env!("CARGO_PKG_VERSION")).to_owned(),
            client_identity: None,
            previous_client_identities: Vec::new(),
            extra_root_certificates: Vec::new(),
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

    /// The client certificate presented at the OP's back-channel endpoints
    /// (mutual TLS, RFC 8705): every token, device-authorization,
    /// revocation, cancellation and UserInfo request then goes to the
    /// endpoint's `mtls_endpoint_aliases` entry when the OP publishes one
    /// (RFC 8705 §5), and new authentications are bound to it. Default:
    /// none.
    #[must_use]
    pub fn client_identity(mut self, identity: ClientIdentity) -> Self {
        self.client_identity = Some(identity);
        self
    }

    /// An earlier client certificate still used by pending authentications
    /// (certificate rotation): each authentication keeps polling with the
    /// certificate it started with (RFC 8705 §3: its tokens are bound to
    /// that certificate) until it ends. Remove one only when no
    /// authentication started with it is pending: such an authentication
    /// then fails with
    /// [`ConfigError::ClientIdentityNotConfigured`] (never a silent switch
    /// to another certificate).
    ///
    /// ```
    /// # fn demo(new: oidc_dtr::client::ClientIdentity, old: oidc_dtr::client::ClientIdentity) {
    /// use oidc_dtr::client::HttpConfig;
    /// // New authentications use `new`; those started with `old` keep it.
    /// let http = HttpConfig::default()
    ///     .client_identity(new)
    ///     .previous_client_identity(old);
    /// # drop(http); }
    /// ```
    #[must_use]
    pub fn previous_client_identity(mut self, identity: ClientIdentity) -> Self {
        self.previous_client_identities.push(identity);
        self
    }

    /// Adds trust anchors (PEM `CERTIFICATE` blocks) to the platform's,
    /// e.g. the private CA of an OP's mTLS endpoints.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] (field `root_certificates`) when `pem`
    /// holds no certificate or is not valid PEM.
    pub fn add_root_certificates_pem(mut self, pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let invalid = |reason: &str| ConfigError::Invalid {
            field: "root_certificates",
            reason: reason.to_owned(),
        };
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_ref()) {
            let cert = cert.map_err(|_| invalid("not valid PEM"))?;
            self.extra_root_certificates.push(cert.to_vec());
            n += 1;
        }
        if n == 0 {
            return Err(invalid("no PEM certificate was found"));
        }
        Ok(self)
    }
}

/// The `Host` header of a request to `uri`, as the HTTP stack writes it
/// when a request has none (the host, and the port when it is not the
/// scheme's default): for a request sent often, built once.
pub(crate) fn host_header(uri: &http::Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let secure = matches!(uri.scheme_str(), Some("https" | "wss"));
    let value = match uri.port_u16() {
        Some(443) if secure => HeaderValue::from_str(host),
        Some(80) if !secure => HeaderValue::from_str(host),
        Some(port) => HeaderValue::from_str(&format!("{host}:{port}")),
        None => HeaderValue::from_str(host),
    };
    value.ok()
}

/// `Content-Length` values of the small bodies (polls, most back-channel
/// requests), each made once per process: the HTTP stack would otherwise
/// format one for every request.
static CONTENT_LENGTHS: [std::sync::OnceLock<HeaderValue>; 1024] =
    [const { std::sync::OnceLock::new() }; 1024];

/// The `Content-Length` header for a body of `len` bytes.
fn content_length(len: usize) -> HeaderValue {
    match CONTENT_LENGTHS.get(len) {
        Some(cell) => cell.get_or_init(|| HeaderValue::from(len)).clone(),
        None => HeaderValue::from(len),
    }
}

/// The body type of outgoing requests.
type ReqBody = http_body_util::Full<bytes::Bytes>;
/// TCP (with the connect timeout), then TLS for `https`.
type Connector = TimedConnector<hyper_rustls::HttpsConnector<HttpConnector>>;
/// A pooled HTTP/1.1 client on kept-alive connections.
type Hyper = hyper_util::client::legacy::Client<Connector, ReqBody>;

/// The HTTP client, with the secure defaults described in the module docs:
/// hyper's pooled client on kept-alive connections, TLS through rustls
/// (the platform's trust anchors plus the configured ones), no redirects
/// followed, no retries, connect and total timeouts, capped bodies.
#[derive(Clone)]
pub(crate) struct HttpEdge {
    /// Without a client certificate (discovery, JWK Sets).
    client: Hyper,
    /// One client per configured certificate, the current one first
    /// (thumbprint, client).
    mtls: Vec<(String, Hyper)>,
    max_body: usize,
    timeout: Duration,
    /// `User-Agent`, built once.
    user_agent: HeaderValue,
}

impl std::fmt::Debug for HttpEdge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEdge")
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// The crypto provider: the process default when the application installed
/// one, else aws-lc-rs.
fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// The certificate chain and private key of an identity's PEM.
fn identity_parts(
    pem: &[u8],
) -> Option<(
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
)> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_slice(pem).ok()?;
    (!certs.is_empty()).then_some((certs, key))
}

/// Whether the TLS stack takes a certificate chain and key as a client
/// identity.
fn tls_accepts_identity(pem: &[u8]) -> bool {
    let Some((certs, key)) = identity_parts(pem) else {
        return false;
    };
    rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_client_auth_cert(certs, key)
                .is_ok()
        })
        .unwrap_or(false)
}

impl HttpEdge {
    pub(crate) fn new(cfg: &HttpConfig) -> Result<Self, ConfigError> {
        let client_err = |e: &dyn std::fmt::Display| {
            ConfigError::HttpClient(SharedError::new(std::io::Error::other(e.to_string())))
        };
        let build = |identity: Option<&ClientIdentity>| -> Result<Hyper, ConfigError> {
            let provider = crypto_provider();
            let verifier = if cfg.extra_root_certificates.is_empty() {
                rustls_platform_verifier::Verifier::new(provider.clone())
            } else {
                rustls_platform_verifier::Verifier::new_with_extra_roots(
                    cfg.extra_root_certificates
                        .iter()
                        .map(|der| rustls::pki_types::CertificateDer::from(der.clone())),
                    provider.clone(),
                )
            }
            .map_err(|e| client_err(&e))?;
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| client_err(&e))?
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(verifier));
            let tls = match identity {
                Some(id) => {
                    let (certs, key) = identity_parts(&id.pem)
                        .ok_or_else(|| client_err(&"the client identity is not valid PEM"))?;
                    builder
                        .with_client_auth_cert(certs, key)
                        .map_err(|e| client_err(&e))?
                }
                None => builder.with_no_client_auth(),
            };
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(cfg.connect_timeout));
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http);
            let connector = TimedConnector {
                inner: https,
                timeout: cfg.connect_timeout,
            };
            Ok(
                hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    // A request is resent by the pool only when not one
                    // byte of it was written (a kept-alive connection the
                    // OP had closed while idle): the OP never saw it, so
                    // this is no retry of a request it may have acted on.
                    // Every other retry is the SDK's decision, with fresh
                    // credentials.
                    .retry_canceled_requests(true)
                    .build(connector),
            )
        };
        let mut mtls = Vec::new();
        for id in cfg
            .client_identity
            .iter()
            .chain(&cfg.previous_client_identities)
        {
            if !mtls.iter().any(|(t, _)| t == id.thumbprint()) {
                mtls.push((id.thumbprint().to_owned(), build(Some(id))?));
            }
        }
        if cfg.client_identity.is_none() && !mtls.is_empty() {
            return Err(ConfigError::Invalid {
                field: "client_identity",
                reason: "previous client identities are given but no current one".into(),
            });
        }
        let user_agent =
            HeaderValue::from_str(&cfg.user_agent).map_err(|_| ConfigError::Invalid {
                field: "user_agent",
                reason: "is not a valid header value".into(),
            })?;
        Ok(HttpEdge {
            client: build(None)?,
            mtls,
            max_body: cfg.max_body_bytes,
            timeout: cfg.timeout,
            user_agent,
        })
    }

    /// The `User-Agent` header every request carries.
    pub(crate) fn user_agent(&self) -> &HeaderValue {
        &self.user_agent
    }

    /// The thumbprint of the current client certificate, when mutual TLS
    /// is configured.
    pub(crate) fn current_identity(&self) -> Option<&str> {
        self.mtls.first().map(|(t, _)| t.as_str())
    }

    /// Sends a request and reads the (capped) response, without a client
    /// certificate.
    pub(crate) async fn send(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.send_with(&self.client, req).await
    }

    /// Sends a back-channel request with the client certificate whose
    /// thumbprint is `identity` (RFC 8705): `None` is the current one (or
    /// none, when mutual TLS is not configured).
    pub(crate) async fn send_as(
        &self,
        identity: Option<&str>,
        req: HttpRequest,
    ) -> Result<HttpResponse, crate::error::Error> {
        let client = match identity {
            None => self.mtls.first().map_or(&self.client, |(_, c)| c),
            Some(t) => match self.mtls.iter().find(|(x, _)| x == t) {
                Some((_, c)) => c,
                None => {
                    return Err(ConfigError::ClientIdentityNotConfigured {
                        thumbprint: t.to_owned(),
                    }
                    .into());
                }
            },
        };
        Ok(self.send_with(client, req).await?)
    }

    async fn send_with(&self, client: &Hyper, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let HttpRequest {
            method,
            url,
            uri,
            mut headers,
            body,
        } = req;
        if url.scheme() != "https" && !(url.scheme() == "http" && is_loopback(&url)) {
            return Err(HttpError::InsecureUrl {
                endpoint: endpoint_label(&url),
            });
        }
        // The URL as hyper takes it: parsed once by whoever built the
        // request when it is sent often (the token endpoint), else here.
        let uri = match uri {
            Some(u) => u,
            None => url
                .as_str()
                .parse::<http::Uri>()
                .map_err(|e| HttpError::Transport {
                    kind: TransportErrorKind::Other,
                    endpoint: endpoint_label(&url),
                    source: SharedError::new(e),
                })?,
        };
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if !headers.contains_key(USER_AGENT) {
            headers.insert(USER_AGENT, self.user_agent.clone());
        }
        // The length the HTTP stack would write for this body (a body
        // carries one only when it is not empty), without formatting it
        // anew for each request.
        if !body.is_empty() {
            headers.insert(CONTENT_LENGTH, content_length(body.len()));
        }
        let mut request = http::Request::new(http_body_util::Full::new(Bytes::from(body)));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let exchange = async {
            let resp = client.request(request).await.map_err(|e| {
                let connecting = e.is_connect();
                transport_error(e, connecting, &url)
            })?;
            let (parts, mut incoming) = resp.into_parts();
            if http_body::Body::size_hint(&incoming)
                .exact()
                .is_some_and(|len| len > self.max_body as u64)
            {
                return Err(HttpError::BodyTooLarge {
                    limit: self.max_body,
                    endpoint: endpoint_label(&url),
                });
            }
            // Most answers come in one frame: kept as it is, no copy.
            let mut first: Option<Bytes> = None;
            let mut rest: Option<BytesMut> = None;
            let mut len = 0usize;
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| transport_error(e, false, &url))?;
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                len += chunk.len();
                if len > self.max_body {
                    return Err(HttpError::BodyTooLarge {
                        limit: self.max_body,
                        endpoint: endpoint_label(&url),
                    });
                }
                match (&mut first, &mut rest) {
                    (None, _) => first = Some(chunk),
                    (Some(f), None) => {
                        let mut b = BytesMut::with_capacity(f.len() + chunk.len());
                        b.extend_from_slice(f);
                        b.extend_from_slice(&chunk);
                        rest = Some(b);
                    }
                    (Some(_), Some(b)) => b.extend_from_slice(&chunk),
                }
            }
            let body = match (first, rest) {
                (_, Some(b)) => b.freeze(),
                (Some(f), None) => f,
                (None, None) => Bytes::new(),
            };
            Ok(HttpResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Transport {
                kind: TransportErrorKind::Timeout,
                endpoint: endpoint_label(&url),
                source: SharedError::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request timed out",
                )),
            }),
        }
    }
}

/// A connector that gives up after the connect timeout: TCP connection and
/// TLS handshake together.
#[derive(Clone)]
struct TimedConnector<C> {
    inner: C,
    timeout: Duration,
}

impl<C> tower_service::Service<http::Uri> for TimedConnector<C>
where
    C: tower_service::Service<http::Uri> + Send,
    C::Future: Send + 'static,
    C::Response: Send + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Bare<C::Response>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let timeout = self.timeout;
        // Once per new connection, not per request.
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(r) => r.map(Bare).map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )) as Self::Error),
            }
        })
    }
}

/// A connection as the connector made it, described to the pool without
/// the peer's addresses: the TCP connector attaches them to the
/// connection, and the pool then copies them into the extensions of every
/// response (three allocations per request), where nothing reads them. The
/// rest is the same: HTTP/1.1 only (no ALPN to report), never through a
/// proxy.
struct Bare<T>(T);

impl<T> hyper_util::client::legacy::connect::Connection for Bare<T> {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Bare<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Bare<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}

/// Classifies an HTTP client error by walking its cause chain for the
/// types that say what happened: `std::io::Error` kinds (a reset or an
/// early end of stream is transient, even in the middle of a TLS
/// handshake), a `rustls::Error` (a TLS failure proper: certificate,
/// protocol), hyper's timeouts. Only DNS failures have no type of their own
/// in the chain (hyper-util wraps the resolver's `io::Error` in a private
/// type whose message says "dns error"), so that one case reads the
/// message.
fn transport_error<E>(e: E, connecting: bool, url: &url::Url) -> HttpError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let kind = classify(&e, connecting);
    HttpError::Transport {
        kind,
        endpoint: endpoint_label(url),
        source: SharedError::new(e),
    }
}

fn classify(e: &(dyn std::error::Error + 'static), connecting: bool) -> TransportErrorKind {
    use std::io::ErrorKind as Io;
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
    } else if connecting {
        TransportErrorKind::Connect
    } else {
        TransportErrorKind::Io
    }
}
