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
mod config;
pub mod conformance;
mod device;
mod helpers;
mod jwks_port;
mod op;
mod pages;
mod par;
mod request_object;
mod server;

pub use assurance::AssuranceFault;
pub use config::{
    AuthorizeOutcome, AutoApprove, Fault, IdTokenFault, OpConfig, OpProfiles, RegisteredClient,
};
pub(crate) use helpers::*;
pub use jwks_port::JwksPort;
pub use op::{FlightReport, FloorViolation, PingRecord};

use op::OpState;

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
            last_access_token: None,
            cert_bound: std::collections::HashMap::new(),
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
    ///
    /// A ping is recorded once the RP's answer has been read, which can be
    /// after the poll it woke has brought the tokens: right after an
    /// outcome, use [`pings_at_least`](Self::pings_at_least).
    pub fn pings(&self) -> Vec<PingRecord> {
        self.lock().pings.clone()
    }

    /// The pings sent so far, once at least `n` of them are recorded
    /// (waiting up to five seconds, then returning what there is).
    pub async fn pings_at_least(&self, n: usize) -> Vec<PingRecord> {
        for _ in 0..100 {
            let pings = self.pings();
            if pings.len() >= n {
                return pings;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.pings()
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
