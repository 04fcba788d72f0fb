//! An in-process mock OpenID Provider that speaks the server side of the
//! Deferred Token Response draft, for the tests of oidc-dtr and yours
//! (add this crate as a dev-dependency), and the store conformance suite
//! ([`conformance`]) for your own `Store`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use oidc_dtr_testkit::MockOp;
//! use oidc_dtr::{CallbackResponse, DtrClient};
//!
//! let op = MockOp::start().await?;
//! let client = DtrClient::builder()
//!     .issuer(op.issuer())
//!     .client_id(MockOp::CLIENT_ID)
//!     .client_secret(MockOp::CLIENT_SECRET)
//!     .redirect_uri("http://127.0.0.1:9/callback")
//!     .build()
//!     .await?;
//! let (url, pending) = client.authorize().build()?;
//! let cb = op.browse(&url).await?;           // the user "completes" the OP's UI
//! let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, cb.query())? else {
//!     unreachable!()
//! };
//! let auth = client.exchange(ack).await?;
//! op.approve(auth.id());                      // the OP decides
//! # Ok(()) }
//! ```
//!
//! What it does:
//!
//! - discovery at both well-known locations (each can be switched off), and
//!   a JWKS;
//! - `/authorize` completes the "user interaction" at once and redirects
//!   (query) or auto-posts (`form_post`) the `deferred_code` (or, for
//!   `deferred_code code` with [`AuthorizeOutcome::Code`], a plain `code`),
//!   `state` and `iss`; or an error;
//! - `/token`: client authentication (Basic, post, public), the Deferred Code
//!   Exchange (single-use codes), polling (`authorization_pending` with a
//!   progress text, `slow_down` with +5 s when polled faster than the
//!   interval, `expired_token`, `access_denied`, `invalid_grant`), real
//!   signed ID tokens (`iss`, `sub`, `aud`, `exp`, `iat`, `nonce`,
//!   `auth_time`, `at_hash`) with RS256, PS256, ES256, ES384 or EdDSA, and
//!   the plain authorization code grant with PKCE;
//! - `/jwks` with `Cache-Control: max-age` ([`OpConfig::jwks_max_age`]),
//!   key rotation ([`rotate_key`](MockOp::rotate_key): the new key signs, the
//!   old one stays published until [`retire_old_keys`](MockOp::retire_old_keys)
//!   or [`OpConfig::key_retire_delay`]), and an outage switch
//!   ([`OpConfig::jwks_unavailable`]), or served from a port of its own
//!   that can be closed and opened ([`JwksPort`]: real connection failures);
//! - broken ID tokens on demand ([`OpConfig::id_token_fault`],
//!   [`OpConfig::interim_id_token_fault`]: see [`IdTokenFault`]);
//! - optional HTML pages for people ([`OpConfig::interactive_pages`]): a
//!   "submit your documents" form at `/authorize` and a reviewer's list at
//!   `/review` with approve / deny buttons;
//! - control handles ([`approve`](MockOp::approve), [`deny`](MockOp::deny),
//!   [`expire`](MockOp::expire), ...) and a request log
//!   ([`requests`](MockOp::requests)).
//!
//! It is a test double: it keeps everything in memory and logs secrets.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use url::Url;

use oidc_dtr::{
    DeferredId, UnixTime,
    jose::Algorithm,
    time::{Clock, SystemClock},
};

pub mod assurance;
mod checks;
pub mod conformance;
mod device;
mod jwks_port;
mod op;
mod pages;
mod par;
mod request_object;
mod server;

pub use assurance::AssuranceFault;
pub use jwks_port::JwksPort;
pub use op::{FlightReport, FloorViolation, PingRecord};

use op::OpState;

/// What `/authorize` answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuthorizeOutcome {
    /// A `deferred_code` (the default).
    #[default]
    Defer,
    /// A plain `code` when the request allowed it (`deferred_code code`),
    /// else a `deferred_code`.
    Code,
    /// An error redirect.
    Error {
        /// The `error` code.
        error: String,
        /// The `error_description`.
        description: String,
    },
}

/// A way to break the ID tokens the mock OP issues, to test the RP's
/// validation: each fault breaks exactly one rule and leaves the token
/// otherwise valid.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdTokenFault {
    /// The signature does not verify (one bit flipped).
    BadSignature,
    /// `iss` names another issuer.
    WrongIssuer,
    /// `aud` names another client only.
    WrongAudience,
    /// `aud` has the client and `"https://other.example/api"`; with `azp` set
    /// to the client id when `azp` is true.
    ExtraAudience {
        /// Whether to add `azp` (= the client id).
        azp: bool,
    },
    /// `azp` names another party (one audience).
    WrongAzp,
    /// No `nonce`.
    MissingNonce,
    /// A `nonce` other than the request's.
    WrongNonce,
    /// Expired an hour ago.
    Expired,
    /// `nbf` an hour from now.
    NotYetValid,
    /// `iat` an hour from now.
    IssuedInFuture,
    /// `alg: none` and no signature.
    AlgNone,
    /// `at_hash` of another access token.
    WrongAtHash,
    /// Signed by a key the JWKS does not publish, with a fresh `kid`.
    UnknownKid,
    /// Signed by the current key, but without `kid` in the header.
    NoKid,
    /// A `crit` header (`["exp"]`).
    CritHeader,
    /// A five-part (JWE-shaped) token.
    Jwe,
    /// No `auth_time`.
    MissingAuthTime,
    /// `auth_time` this long before the token was issued.
    OldAuthTime(Duration),
    /// `sub` differs from the authentication's subject (so the final ID
    /// token disagrees with the interim one).
    OtherSubject,
    /// The token response has no `id_token` (final tokens only).
    MissingIdToken,
}

/// Which Deferred Token Response profiles the mock OP serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OpProfiles {
    /// The OpenID Connect draft only (the default): `deferred_code`, the
    /// exchange, `deferred_auth_id`.
    #[default]
    Oidc,
    /// The IETF OAuth draft only: `response_type=code`,
    /// `completion_mode=deferred` on the token request, `deferral_code`,
    /// revocation at `/revoke`, `deferred_token_response_supported`.
    Ietf,
    /// Both at once (an OP that ships both drafts).
    Both,
}

impl OpProfiles {
    pub(crate) fn oidc(self) -> bool {
        matches!(self, OpProfiles::Oidc | OpProfiles::Both)
    }
    pub(crate) fn ietf(self) -> bool {
        matches!(self, OpProfiles::Ietf | OpProfiles::Both)
    }
}

/// When a pending authentication approves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoApprove {
    /// Only through [`MockOp::approve`] (the default).
    #[default]
    Never,
    /// On the n-th accepted poll (polls answered `slow_down` do not count).
    AfterPolls(u32),
    /// Once this long has passed since the exchange.
    AfterDelay(Duration),
}

/// The mock OP's behaviour switches. Change them at any time with
/// [`MockOp::configure`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpConfig {
    /// Which profiles are served (default OIDC only).
    pub profiles: OpProfiles,
    /// What `/authorize` answers. In the IETF profile (`response_type=code`
    /// always gets a `code`), `Code` makes the token endpoint answer with
    /// tokens at once despite `completion_mode=deferred`; `Defer` (the
    /// default) defers.
    pub authorize_outcome: AuthorizeOutcome,
    /// IETF: list `urn:ietf:params:oauth:token-type:deferral-code` in
    /// `revocation_endpoint_token_type_values_supported`. Default true
    /// (false plays an AS that answers 200 to any revocation without
    /// supporting deferral codes).
    pub advertise_deferral_revocation: bool,
    /// IETF: new deferrals start as `interaction_required` at this URI
    /// (change it per authentication with [`MockOp::set_interaction`]).
    /// Default `None` (`authorization_pending`).
    pub interaction_uri: Option<String>,
    /// Put `iss` in authorization responses (RFC 9207). Default true.
    pub include_iss: bool,
    /// Advertise `authorization_response_iss_parameter_supported`. Default true.
    pub advertise_iss_parameter: bool,
    /// Advertise `deferred_code` and the deferred grant type. Default true.
    pub advertise_dtr: bool,
    /// Serve `/.well-known/openid-configuration`. Default true.
    pub serve_openid_configuration: bool,
    /// Serve `/.well-known/oauth-authorization-server`. Default true.
    pub serve_oauth_metadata: bool,
    /// Put another `issuer` in the metadata (to test the mix-up check).
    pub metadata_issuer: Option<String>,
    /// Require PKCE S256 at `/authorize`. Default true.
    pub require_pkce: bool,
    /// `expires_in` of new authentications (seconds). Default 3600.
    pub expires_in: Option<u64>,
    /// `interval` of new authentications (seconds); `None` sends none and
    /// enforces 5 s. Default 5.
    pub interval: Option<u64>,
    /// Send an `interim_id_token` in exchange responses. Default false.
    pub interim_id_token: bool,
    /// When pending authentications approve themselves.
    pub auto_approve: AutoApprove,
    /// Answer `slow_down` to polls faster than the interval. Default true.
    pub enforce_interval: bool,
    /// The `error_description` of `authorization_pending` answers.
    pub progress: String,
    /// The `sub` of issued ID tokens (default: `user-<n>`).
    pub subject: Option<String>,
    /// Break the final ID tokens (poll and code grant) this way.
    pub id_token_fault: Option<IdTokenFault>,
    /// Break the interim ID tokens this way.
    pub interim_id_token_fault: Option<IdTokenFault>,
    /// Extra claims for every ID token (e.g. `name`, `email`,
    /// `verified_claims`).
    pub extra_claims: serde_json::Map<String, serde_json::Value>,
    /// `Cache-Control: max-age` of `/jwks`, in seconds; `None` sends no
    /// cache headers. Default 300.
    pub jwks_max_age: Option<u64>,
    /// Answer `/jwks` with 503 (an outage). Default false.
    pub jwks_unavailable: bool,
    /// The `jwks_uri` the metadata advertises instead of the OP's own
    /// `/jwks` (e.g. a [`JwksPort`], whose port can be closed to refuse
    /// connections). Default `None`.
    pub jwks_uri: Option<String>,
    /// After [`MockOp::rotate_key`], how long the old key stays published;
    /// `None` (the default) keeps it until [`MockOp::retire_old_keys`].
    pub key_retire_delay: Option<Duration>,
    /// Progress texts for `authorization_pending`, one per accepted poll (the
    /// last one repeats); empty uses [`progress`](Self::progress).
    pub progress_script: Vec<String>,
    /// Expire authentications at their `expires_in` (answering
    /// `expired_token`). Default true; false keeps answering pending, as an
    /// OP that never expires anything.
    pub expire_authentications: bool,
    /// Require a DPoP proof on every token request. Default false (a proof
    /// is then checked when present, and binds the authentication).
    pub require_dpop: bool,
    /// Require the server's DPoP nonce in proofs (answering
    /// `use_dpop_nonce` with a `DPoP-Nonce` header otherwise). Default false.
    pub require_dpop_nonce: bool,
    /// Answer `token_type: Bearer` even to DPoP-proved requests (a
    /// downgrade, to test that clients refuse it). Default false.
    pub dpop_downgrade: bool,
    /// Ping the client's notification endpoint when an authentication
    /// finishes. Default true.
    pub send_pings: bool,
    /// Answer a repeated poll of an id that was just redeemed with the same
    /// token response, for this long (some OPs keep token endpoints
    /// idempotent for retries). Default `None`: `invalid_grant`, as the
    /// draft says. With it, a client that crashed after the OP sent the
    /// tokens but before it stored them can still get them.
    pub redelivery_window: Option<Duration>,
    /// Advertise identity assurance (OpenID Connect for Identity Assurance
    /// 1.0) in the metadata (`verified_claims_supported`,
    /// `trust_frameworks_supported`, ...: see [`assurance`]) and answer a
    /// `claims` request's `verified_claims`. Default `true`.
    pub identity_assurance: bool,
    /// Break a rule of identity assurance in the `verified_claims` returned.
    /// Default `None`.
    pub assurance_fault: Option<AssuranceFault>,
    /// Serve HTML pages for people (demos, browser tests): `/authorize`
    /// shows a "submit your documents" form instead of redirecting back at
    /// once, and `/review` lists authentications with approve / deny
    /// buttons. Default false ([`MockOp::browse`] needs the immediate
    /// redirect).
    pub interactive_pages: bool,
    /// How long the token endpoint takes to answer a deferred poll (the
    /// request counts as in flight at the OP meanwhile; see
    /// [`MockOp::flight_report`]). Default `None`: at once.
    pub poll_latency: Option<Duration>,
    /// How long the OP takes to answer a request that starts or leads to a
    /// deferral: the OIDC exchange (`deferred_code`), the IETF initial token
    /// request (authorization code or device code) and the device
    /// authorization request. The request is processed when it arrives; the
    /// answer leaves this much later (what a slow OP does). Default `None`:
    /// at once.
    pub exchange_latency: Option<Duration>,
    /// Count the interval the way a strict OP does: from the moment the OP
    /// *answered* the request before (the exchange, the IETF initial token
    /// request or the device authorization for the first poll; then each
    /// poll, `slow_down` answers included), with no tolerance. A poll (or
    /// device-code token request) that arrives sooner gets `slow_down`
    /// (the interval rises by 5 s) and is recorded in
    /// [`FlightReport::floor_violations`]. Replaces the lenient check of
    /// [`enforce_interval`](Self::enforce_interval) (which counts from the
    /// previous poll's arrival). Default false.
    pub strict_interval: bool,
    /// Accept authorization requests only through PAR (RFC 9126 §5,
    /// advertised as `require_pushed_authorization_requests`). The PAR
    /// endpoint (`/par`) is always served. Default false.
    pub require_pushed_authorization_requests: bool,
    /// The lifetime of a pushed request's `request_uri`, in seconds (the
    /// `expires_in` of the PAR answer). Default 60.
    pub par_lifetime: u64,
}

impl Default for OpConfig {
    fn default() -> Self {
        OpConfig {
            profiles: OpProfiles::Oidc,
            advertise_deferral_revocation: true,
            interaction_uri: None,
            authorize_outcome: AuthorizeOutcome::Defer,
            include_iss: true,
            advertise_iss_parameter: true,
            advertise_dtr: true,
            serve_openid_configuration: true,
            serve_oauth_metadata: true,
            metadata_issuer: None,
            require_pkce: true,
            expires_in: Some(3600),
            interval: Some(5),
            interim_id_token: false,
            auto_approve: AutoApprove::Never,
            enforce_interval: true,
            progress: "Your identity documents are in the review queue".into(),
            subject: None,
            id_token_fault: None,
            interim_id_token_fault: None,
            extra_claims: serde_json::Map::new(),
            jwks_max_age: Some(300),
            jwks_unavailable: false,
            jwks_uri: None,
            key_retire_delay: None,
            progress_script: Vec::new(),
            expire_authentications: true,
            require_dpop: false,
            require_dpop_nonce: false,
            dpop_downgrade: false,
            send_pings: true,
            redelivery_window: None,
            identity_assurance: true,
            assurance_fault: None,
            interactive_pages: false,
            poll_latency: None,
            exchange_latency: None,
            strict_interval: false,
            require_pushed_authorization_requests: false,
            par_lifetime: 60,
        }
    }
}

/// A failure the mock OP plays on a token request instead of (or around)
/// its normal behaviour. Queue them with [`MockOp::inject_faults`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this status, headers and body; the request is not
    /// processed.
    Respond {
        /// The HTTP status.
        status: u16,
        /// Headers to send.
        headers: Vec<(String, String)>,
        /// The body.
        body: String,
    },
    /// Process the request normally, but answer after this delay.
    Delay(Duration),
    /// Close the connection without answering; the request is not processed.
    Reset,
    /// Process the request, then close the connection without answering:
    /// the OP's state changed (a success redeemed the id) but the client
    /// never hears of it.
    LostResponse,
}

impl Fault {
    /// An empty answer with `status`.
    pub fn status(status: u16) -> Self {
        Fault::Respond {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// 503 with `Retry-After: <secs>`.
    pub fn service_unavailable(retry_after_secs: u64) -> Self {
        Fault::Respond {
            status: 503,
            headers: vec![("retry-after".into(), retry_after_secs.to_string())],
            body: String::new(),
        }
    }

    /// 429 with `Retry-After: <secs>`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Fault::Respond {
            status: 429,
            headers: vec![("retry-after".into(), retry_after_secs.to_string())],
            body: String::new(),
        }
    }

    /// An HTML error page with `status` (what a proxy in front of the OP
    /// sends).
    pub fn html(status: u16) -> Self {
        Fault::Respond {
            status,
            headers: vec![("content-type".into(), "text/html".into())],
            body: format!(
                "<html><body><h1>{status} Error</h1><p>upstream unavailable</p></body></html>"
            ),
        }
    }

    /// A truncated JSON body with a JSON content type.
    pub fn malformed_json(status: u16) -> Self {
        Fault::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: r#"{"error":"authorization_pen"#.into(),
        }
    }

    /// A JSON content type with an empty body.
    pub fn empty_json(status: u16) -> Self {
        Fault::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: String::new(),
        }
    }
}

/// A client the mock OP knows.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RegisteredClient {
    /// The client id.
    pub client_id: String,
    /// The secret (`client_secret_basic`, `_post`, `_jwt`); `None` for a
    /// public client or one using `private_key_jwt`.
    pub secret: Option<String>,
    /// Allowed redirect URIs (exact match); empty allows any.
    pub redirect_uris: Vec<String>,
    /// Public keys for `private_key_jwt` client assertions.
    pub jwks: Vec<serde_json::Value>,
    /// The `deferred_client_notification_endpoint`, for Ping Callbacks.
    pub notification_endpoint: Option<String>,
}

impl RegisteredClient {
    /// A confidential client (accepts `client_secret_basic` and `_post`).
    pub fn confidential(client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        RegisteredClient {
            client_id: client_id.into(),
            secret: Some(secret.into()),
            redirect_uris: Vec::new(),
            jwks: Vec::new(),
            notification_endpoint: None,
        }
    }

    /// A client authenticating with `private_key_jwt`, with these public
    /// keys.
    pub fn private_key_jwt(client_id: impl Into<String>, jwks: Vec<serde_json::Value>) -> Self {
        RegisteredClient {
            client_id: client_id.into(),
            secret: None,
            redirect_uris: Vec::new(),
            jwks,
            notification_endpoint: None,
        }
    }

    /// Registers a notification endpoint: the OP pings it when an
    /// authentication of this client finishes.
    pub fn with_notification_endpoint(mut self, url: impl Into<String>) -> Self {
        self.notification_endpoint = Some(url.into());
        self
    }

    /// A public client.
    pub fn public(client_id: impl Into<String>) -> Self {
        RegisteredClient {
            client_id: client_id.into(),
            secret: None,
            redirect_uris: Vec::new(),
            jwks: Vec::new(),
            notification_endpoint: None,
        }
    }

    /// Restricts the redirect URIs.
    pub fn with_redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uris.push(uri.into());
        self
    }
}

/// Which endpoint a logged request hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// Either well-known metadata location.
    Discovery,
    /// The JWKS.
    Jwks,
    /// The authorization endpoint.
    Authorize,
    /// The token endpoint.
    Token,
    /// The cancellation endpoint (`/df-authentication/cancel`).
    Cancel,
    /// The UserInfo endpoint (`/userinfo`).
    UserInfo,
    /// The revocation endpoint (`/revoke`, RFC 7009; IETF cancellation).
    Revocation,
    /// The device authorization endpoint (`/device_authorization`,
    /// RFC 8628).
    DeviceAuthorization,
    /// The pushed authorization request endpoint (`/par`, RFC 9126).
    PushedAuthorization,
    /// Anything else.
    Other,
}

/// One request the mock OP received.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// When it arrived (by the OP's clock).
    pub at: UnixTime,
    /// The method.
    pub method: String,
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The path.
    pub path: String,
    /// Query or form parameters.
    pub params: Vec<(String, String)>,
    /// Headers (names lower-case).
    pub headers: Vec<(String, String)>,
    /// The status answered (0 when the connection was dropped on purpose).
    pub status: u16,
}

impl LoggedRequest {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Where an authentication stands at the mock OP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthState {
    /// Still being decided.
    Pending,
    /// Approved; the next poll gets the tokens.
    Approved,
    /// Denied; polls get `access_denied`.
    Denied {
        /// The `error_description` polls get.
        description: Option<String>,
    },
    /// Expired; polls get `expired_token`.
    Expired,
    /// Cancelled; polls get `access_denied`.
    Cancelled,
    /// The tokens were handed out; polls get `invalid_grant`.
    Redeemed,
}

/// A snapshot of one authentication at the mock OP.
#[derive(Debug, Clone)]
pub struct AuthSnapshot {
    /// The `deferred_auth_id`.
    pub deferred_auth_id: String,
    /// The client.
    pub client_id: String,
    /// Its state.
    pub state: AuthState,
    /// Polls accepted (not counting `slow_down` answers).
    pub polls: u32,
    /// `slow_down` answers given.
    pub slow_downs: u32,
    /// The interval it currently enforces (seconds).
    pub interval: u64,
    /// When it expires.
    pub expires_at: Option<UnixTime>,
    /// The `deferred_notification_token` the client sent, if any.
    pub notification_token: Option<String>,
    /// The subject the tokens will name.
    pub subject: String,
}

/// Something that names an authentication: a `&str`, `String` or
/// [`DeferredId`].
pub trait AuthIdRef {
    /// The id as text.
    fn id_str(&self) -> &str;
}

impl AuthIdRef for str {
    fn id_str(&self) -> &str {
        self
    }
}
impl AuthIdRef for String {
    fn id_str(&self) -> &str {
        self
    }
}
impl AuthIdRef for DeferredId {
    fn id_str(&self) -> &str {
        self.secret()
    }
}

/// Where the simulated browser was sent back to.
#[derive(Debug, Clone)]
pub struct SimulatedCallback {
    /// The redirect URI (with the query, for `query` mode).
    pub url: Url,
    /// The auto-posted body, for `form_post` mode.
    pub form_body: Option<String>,
}

impl SimulatedCallback {
    /// The query string (empty for `form_post`).
    pub fn query(&self) -> &str {
        self.url.query().unwrap_or("")
    }
}

/// The simulated browser could not complete the round trip.
#[derive(Debug, thiserror::Error)]
#[error("simulated browser: {0}")]
pub struct BrowseError(String);

struct Inner {
    state: Arc<Mutex<OpState>>,
    addr: SocketAddr,
    issuer: String,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shutdown.lock()
            && let Some(tx) = s.take()
        {
            let _ = tx.send(());
        }
    }
}

/// A running mock OP on `127.0.0.1:<random port>`. Clones share the server;
/// it stops when the last clone is dropped.
#[derive(Clone)]
pub struct MockOp {
    inner: Arc<Inner>,
}

impl fmt::Debug for MockOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockOp")
            .field("issuer", &self.inner.issuer)
            .finish()
    }
}

/// Configures a [`MockOp`] before it starts.
#[must_use]
pub struct MockOpBuilder {
    clock: Arc<dyn Clock>,
    config: OpConfig,
    clients: Vec<RegisteredClient>,
    alg: Algorithm,
}

impl fmt::Debug for MockOpBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockOpBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MockOpBuilder {
    /// The OP's clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Initial behaviour switches.
    pub fn config(mut self, config: OpConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers another client.
    pub fn client(mut self, client: RegisteredClient) -> Self {
        self.clients.push(client);
        self
    }

    /// The ID-token signing algorithm (default RS256; RS*, PS*, ES256,
    /// ES384 and EdDSA work).
    pub fn signing_alg(mut self, alg: Algorithm) -> Self {
        self.alg = alg;
        self
    }

    /// Starts the server.
    pub async fn start(self) -> std::io::Result<MockOp> {
        let (listener, addr) = server::bind().await?;
        let issuer = format!("http://{addr}");
        let key = op::new_key(self.alg).map_err(std::io::Error::other)?;
        let mut clients = std::collections::HashMap::new();
        for c in [
            RegisteredClient::confidential(MockOp::CLIENT_ID, MockOp::CLIENT_SECRET),
            RegisteredClient::public(MockOp::PUBLIC_CLIENT_ID),
        ]
        .into_iter()
        .chain(self.clients)
        {
            clients.insert(c.client_id.clone(), c);
        }
        let state = Arc::new(Mutex::new(OpState {
            issuer: issuer.clone(),
            clock: self.clock,
            key,
            old_keys: Vec::new(),
            clients,
            codes: Default::default(),
            auths: Default::default(),
            log: Vec::new(),
            config: self.config,
            next_subject: 0,
            token_faults: Default::default(),
            used_jtis: Default::default(),
            dpop_nonce: random_nonce(),
            pings: Vec::new(),
            last_token_body: None,
            access_tokens: std::collections::HashMap::new(),
            ping_http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(std::io::Error::other)?,
            pages: Default::default(),
            devices: Default::default(),
            flights: Default::default(),
            par: Default::default(),
        }));
        let (tx, rx) = oneshot::channel();
        server::spawn(listener, state.clone(), rx);
        Ok(MockOp {
            inner: Arc::new(Inner {
                state,
                addr,
                issuer,
                shutdown: Mutex::new(Some(tx)),
            }),
        })
    }
}

impl MockOp {
    /// The confidential client every mock OP knows.
    pub const CLIENT_ID: &'static str = "dtr-test-client";
    /// Its secret.
    pub const CLIENT_SECRET: &'static str = "dtr-test-secret";
    /// The public client every mock OP knows.
    pub const PUBLIC_CLIENT_ID: &'static str = "dtr-public-client";

    /// Starts a mock OP with the default configuration.
    pub async fn start() -> std::io::Result<MockOp> {
        MockOp::builder().start().await
    }

    /// Configures one before starting it.
    pub fn builder() -> MockOpBuilder {
        MockOpBuilder {
            clock: Arc::new(SystemClock),
            config: OpConfig::default(),
            clients: Vec::new(),
            alg: Algorithm::RS256,
        }
    }

    fn lock(&self) -> MutexGuard<'_, OpState> {
        match self.inner.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The issuer identifier (`http://127.0.0.1:<port>`).
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// A URL on the OP.
    pub fn url(&self, path: &str) -> Url {
        Url::parse(&format!("{}{path}", self.inner.issuer)).expect("the issuer is a valid base URL")
    }

    /// The metadata document it serves.
    pub fn metadata_json(&self) -> serde_json::Value {
        self.lock().metadata()
    }

    /// Changes behaviour switches.
    pub fn configure(&self, f: impl FnOnce(&mut OpConfig)) {
        f(&mut self.lock().config);
    }

    /// Registers (or replaces) a client.
    pub fn register_client(&self, client: RegisteredClient) {
        self.lock().clients.insert(client.client_id.clone(), client);
    }

    /// Rotates the signing key: a new key (same algorithm, new `kid`) signs
    /// from now on; the old one stays in the JWKS until
    /// [`retire_old_keys`](Self::retire_old_keys), or for
    /// [`OpConfig::key_retire_delay`]. Returns the new `kid`.
    pub fn rotate_key(&self) -> String {
        let mut st = self.lock();
        let alg = st.key.algorithm();
        // Key generation does not fail for the algorithms the builder takes.
        let Ok(new) = op::new_key(alg) else {
            return st.key.kid().unwrap_or_default().to_owned();
        };
        let retire_at = st
            .config
            .key_retire_delay
            .map(|d| st.clock.now().saturating_add(d));
        let old = std::mem::replace(&mut st.key, new);
        st.old_keys.push((old, retire_at));
        st.key.kid().unwrap_or_default().to_owned()
    }

    /// Removes every key but the current one from the JWKS.
    pub fn retire_old_keys(&self) {
        self.lock().old_keys.clear();
    }

    /// The `kid` of the current signing key.
    pub fn signing_kid(&self) -> String {
        self.lock().key.kid().unwrap_or_default().to_owned()
    }

    /// The JWKS document `/jwks` serves now.
    pub fn jwks_json(&self) -> serde_json::Value {
        self.lock().jwks()
    }

    fn snapshot(id: &str, r: &op::AuthRecord) -> AuthSnapshot {
        AuthSnapshot {
            deferred_auth_id: id.to_owned(),
            client_id: r.client_id.clone(),
            state: r.state.clone(),
            polls: r.polls,
            slow_downs: r.slow_downs,
            interval: r.interval,
            expires_at: r.expires_at,
            notification_token: r.notification_token.clone(),
            subject: r.grant.subject.clone(),
        }
    }

    /// Every authentication, in no particular order.
    pub fn authentications(&self) -> Vec<AuthSnapshot> {
        self.lock()
            .auths
            .iter()
            .map(|(id, r)| Self::snapshot(id, r))
            .collect()
    }

    /// One authentication.
    pub fn authentication(&self, id: &(impl AuthIdRef + ?Sized)) -> Option<AuthSnapshot> {
        let st = self.lock();
        st.auths
            .get(id.id_str())
            .map(|r| Self::snapshot(id.id_str(), r))
    }

    fn set_state(&self, id: &str, f: impl FnOnce(&mut op::AuthRecord)) -> bool {
        match self.lock().auths.get_mut(id) {
            Some(r) => {
                f(r);
                true
            }
            None => false,
        }
    }

    /// Approves a pending authentication: the next poll gets the tokens.
    /// The client's notification endpoint, if registered, is pinged (in the
    /// background, on the current tokio runtime). Returns false for an
    /// unknown id.
    pub fn approve(&self, id: &(impl AuthIdRef + ?Sized)) -> bool {
        let mut changed = false;
        let known = self.set_state(id.id_str(), |r| {
            if r.state == AuthState::Pending {
                r.state = AuthState::Approved;
                changed = true;
            }
        });
        if changed {
            op::notify(&self.inner.state, id.id_str());
        }
        known
    }

    /// Denies it: polls get `access_denied` with `description`. Pings like
    /// [`approve`](Self::approve).
    pub fn deny(&self, id: &(impl AuthIdRef + ?Sized), description: Option<&str>) -> bool {
        let description = description.map(str::to_owned);
        let known = self.set_state(id.id_str(), |r| r.state = AuthState::Denied { description });
        if known {
            op::notify(&self.inner.state, id.id_str());
        }
        known
    }

    /// Creates `n` pending authentications of `client` directly, without
    /// browser or exchange, and returns them as the client would have them
    /// (for load tests: hand each to [`DtrClient::resume`](oidc_dtr::DtrClient::resume)). Their
    /// `expires_in` and `interval` follow the OP's configuration.
    pub fn seed_pending(
        &self,
        client: &oidc_dtr::DtrClient,
        n: usize,
    ) -> Vec<oidc_dtr::DeferredAuthentication> {
        let mut st = self.lock();
        let now = st.clock.now();
        let (expires_in, interval) = (st.config.expires_in, st.config.interval.unwrap_or(5));
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let id = random_nonce() + &random_nonce();
            let nonce = random_nonce();
            let grant = st.seed_grant(Some(nonce.clone()), now);
            let progress = st.config.progress.clone();
            st.auths.insert(
                id.clone(),
                op::AuthRecord {
                    client_id: client.client_id().to_owned(),
                    grant,
                    created_at: now,
                    expires_at: expires_in.map(|s| now.saturating_add(Duration::from_secs(s))),
                    interval,
                    last_poll: None,
                    polls: 0,
                    slow_downs: 0,
                    state: AuthState::Pending,
                    progress,
                    notification_token: None,
                    jkt: None,
                    issued: None,
                    ietf: false,
                    interaction_uri: None,
                },
            );
            out.push(oidc_dtr::DeferredAuthentication::seeded(
                DeferredId::new(id),
                st.issuer.clone(),
                client.client_id().to_owned(),
                now,
                expires_in,
                interval,
                oidc_dtr::secret::Nonce::new(nonce),
            ));
        }
        out
    }

    /// Sends a Ping Callback for `id` now, whatever its state (an early or
    /// duplicate ping), and returns the status the RP answered (`None` when
    /// the request failed or the client has no notification endpoint).
    pub async fn send_ping(&self, id: &(impl AuthIdRef + ?Sized)) -> Option<u16> {
        op::ping_now(&self.inner.state, id.id_str(), None).await
    }

    /// Sends a ping for `id` with a wrong bearer token.
    pub async fn send_forged_ping(
        &self,
        id: &(impl AuthIdRef + ?Sized),
        token: &str,
    ) -> Option<u16> {
        op::ping_now(&self.inner.state, id.id_str(), Some(token)).await
    }

    /// The pings sent so far, oldest first.
    pub fn pings(&self) -> Vec<PingRecord> {
        self.lock().pings.clone()
    }

    /// Replaces the server's DPoP nonce (clients must pick up the new one).
    pub fn rotate_dpop_nonce(&self) -> String {
        let n = random_nonce();
        self.lock().dpop_nonce = n.clone();
        n
    }

    /// The DPoP key thumbprint an authentication is bound to, if any.
    pub fn dpop_binding(&self, id: &(impl AuthIdRef + ?Sized)) -> Option<String> {
        self.lock()
            .auths
            .get(id.id_str())
            .and_then(|r| r.jkt.clone())
    }

    /// Expires it: polls get `expired_token`.
    pub fn expire(&self, id: &(impl AuthIdRef + ?Sized)) -> bool {
        self.set_state(id.id_str(), |r| r.state = AuthState::Expired)
    }

    /// IETF: makes polls of `id` answer `interaction_required` with this
    /// `interaction_uri` (`Some`), or plain `authorization_pending` again
    /// (`None`). False for an unknown id.
    pub fn set_interaction(&self, id: &(impl AuthIdRef + ?Sized), uri: Option<&str>) -> bool {
        let uri = uri.map(str::to_owned);
        self.set_state(id.id_str(), |r| r.interaction_uri = uri)
    }

    /// Plays the user finishing the device flow at the verification URI
    /// for `user_code` (RFC 8628 §3.3): the next device-code token request
    /// gets tokens, or (with `completion_mode=deferred`) a deferral. False
    /// for an unknown code.
    pub fn complete_device(&self, user_code: &str) -> bool {
        let mut st = self.lock();
        match st.devices.values_mut().find(|d| d.user_code == user_code) {
            Some(d) => {
                d.completed = true;
                true
            }
            None => false,
        }
    }

    /// Whether `id` is an IETF deferral (`deferral_code`) rather than an
    /// OIDC `deferred_auth_id`; `None` for an unknown id.
    pub fn is_ietf(&self, id: &(impl AuthIdRef + ?Sized)) -> Option<bool> {
        self.lock().auths.get(id.id_str()).map(|r| r.ietf)
    }

    /// Sets the progress text `authorization_pending` answers carry.
    pub fn set_progress(&self, id: &(impl AuthIdRef + ?Sized), text: &str) -> bool {
        let text = text.to_owned();
        self.set_state(id.id_str(), |r| r.progress = text)
    }

    /// Queues faults for the next token requests, one per request, in order.
    pub fn inject_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().token_faults.extend(faults);
    }

    /// Faults still queued.
    pub fn pending_faults(&self) -> usize {
        self.lock().token_faults.len()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    /// The requests to one endpoint.
    pub fn requests_to(&self, endpoint: Endpoint) -> Vec<LoggedRequest> {
        self.lock()
            .log
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .cloned()
            .collect()
    }

    /// How many requests an endpoint received (cheaper than
    /// [`requests_to`](Self::requests_to) for load tests).
    pub fn request_count(&self, endpoint: Endpoint) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }

    /// What the OP saw of deferred polls (OIDC `deferred_auth_id` and IETF
    /// `deferral_code`), per id, across every client instance: polls that
    /// arrived while another poll of the same id was still being answered
    /// (two requests in flight), polls that arrived sooner after the OP's
    /// previous answer for that id than the interval it enforced then
    /// (faster than the floor; with [`OpConfig::strict_interval`], counted
    /// from the exchange's answer too, and device-code requests included),
    /// and the `slow_down` answers given.
    pub fn flight_report(&self) -> FlightReport {
        self.lock().flights.report()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }

    /// Plays the user's browser: opens `authorization_url`, lets the OP
    /// "complete" its UI, and returns where the browser is sent back to,
    /// without contacting the RP.
    pub async fn browse(&self, authorization_url: &Url) -> Result<SimulatedCallback, BrowseError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BrowseError(e.to_string()))?;
        let resp = http
            .get(authorization_url.clone())
            .send()
            .await
            .map_err(|e| BrowseError(e.to_string()))?;
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| BrowseError("redirect without Location".into()))?;
            let url = Url::parse(loc).map_err(|e| BrowseError(e.to_string()))?;
            return Ok(SimulatedCallback {
                url,
                form_body: None,
            });
        }
        let body = resp.text().await.map_err(|e| BrowseError(e.to_string()))?;
        if status.is_success() {
            let (action, params) =
                parse_auto_post_form(&body).ok_or_else(|| BrowseError("no form in page".into()))?;
            let url = Url::parse(&action).map_err(|e| BrowseError(e.to_string()))?;
            let form_body = form_encode(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            return Ok(SimulatedCallback {
                url,
                form_body: Some(form_body),
            });
        }
        Err(BrowseError(format!(
            "the OP answered HTTP {status}: {body}"
        )))
    }
}

/// Serves a [`PingReceiver`](oidc_dtr::ping::PingReceiver) on `listener` with a
/// bare hyper/1 server, in the background: the RP side of Ping Callbacks for
/// tests. (`examples/hyper_ping.rs` shows the same few lines for production
/// use.)
pub fn serve_ping_receiver(
    listener: tokio::net::TcpListener,
    receiver: oidc_dtr::ping::PingReceiver,
) {
    server::serve_receiver(listener, receiver);
}

fn random_nonce() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b64(&b)
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Reads the action and hidden inputs of the mock OP's own `form_post` page.
fn parse_auto_post_form(page: &str) -> Option<(String, Vec<(String, String)>)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let start = tag.find(&key)? + key.len();
        let end = tag[start..].find('"')? + start;
        Some(html_unescape(&tag[start..end]))
    };
    let form_start = page.find("<form")?;
    let form_tag_end = page[form_start..].find('>')? + form_start;
    let action = attr(&page[form_start..form_tag_end], "action")?;
    let mut params = Vec::new();
    let mut rest = &page[form_tag_end..];
    while let Some(i) = rest.find("<input") {
        let end = rest[i..].find('>')? + i;
        let tag = &rest[i..end];
        params.push((attr(tag, "name")?, attr(tag, "value")?));
        rest = &rest[end..];
    }
    Some((action, params))
}

/// The grant type of a DTR poll (draft §"Token Request").
pub(crate) const GRANT_TYPE_DEFERRED: &str = "urn:openid:params:grant-type:deferred";
/// The IETF polling grant type.
pub(crate) const GRANT_TYPE_IETF_DEFERRED: &str = "urn:ietf:params:oauth:grant-type:deferred";
/// The IETF deferral-code token type (revocation hint).
pub(crate) const DEFERRAL_CODE_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:deferral-code";
/// The RFC 8628 device grant type.
pub(crate) const GRANT_TYPE_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// `client_assertion_type` of the JWT client authentication methods (RFC 7523).
pub(crate) const JWT_BEARER_ASSERTION: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// base64url without padding.
pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

/// The left half of the hash of `value` with the hash of `alg`, base64url
/// (`at_hash`, `c_hash`: OIDC Core §3.1.3.6).
pub(crate) fn half_hash(alg: Algorithm, value: &str) -> String {
    use aws_lc_rs::digest;
    let d = match alg {
        Algorithm::HS384 | Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => {
            digest::digest(&digest::SHA384, value.as_bytes())
        }
        Algorithm::HS512 | Algorithm::RS512 | Algorithm::PS512 | Algorithm::EdDSA => {
            digest::digest(&digest::SHA512, value.as_bytes())
        }
        _ => digest::digest(&digest::SHA256, value.as_bytes()),
    };
    b64(&d.as_ref()[..d.as_ref().len() / 2])
}

/// Constant-time equality (a mock, but it should not teach timing oracles).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// `application/x-www-form-urlencoded`.
pub(crate) fn form_encode<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}
