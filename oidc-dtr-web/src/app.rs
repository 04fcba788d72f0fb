//! The Relying-Party app: routes, the session, and the verifications' live
//! state fed by the SDK's events.

// Size note: Kept whole (~900 lines): the routes share the session and the live-state
// types, and reading one page's handler next to the others is the point.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Form, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use tokio::sync::{broadcast, watch};
use tower_sessions::cookie::{Cookie, CookieJar, Key, SameSite};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

use oidc_dtr::{
    CallbackResponse, DeferredId, DtrClient, Outcome, OutcomeId, PendingAuthorization, PollEvent,
    client::ResponseMode, error::CallbackError,
};

use crate::html;
use crate::sessions::BoundedStore;
use crate::view::View;

/// Session keys.
const PENDING: &str = "pending_authorization";
const VERIFICATION: &str = "verification";
const CSRF: &str = "csrf";
/// The signed cookie that carries the start page's CSRF token before the
/// visitor has a session (double submit: the form echoes it).
const CSRF_COOKIE: &str = "rp_csrf";

/// How long a cancellation waits for the engine's final word before the
/// page is shown anyway.
const CANCEL_SETTLE: Duration = Duration::from_secs(3);

/// Options of the app's HTTP side.
#[derive(Clone)]
#[non_exhaustive]
pub struct AppOptions {
    /// Mark the session cookie `Secure` (true whenever the app is served
    /// over https; browsers also accept it on `http://localhost`).
    pub secure_cookie: bool,
    /// The key that signs session cookies (keep it stable across restarts
    /// in production; generated at random by default).
    pub session_key: Key,
    /// The session cookie's name.
    pub cookie_name: String,
    /// The most sessions kept at once; when full, the session idle the
    /// longest is dropped.
    pub max_sessions: usize,
    /// How long a session lives without a request.
    pub session_idle: Duration,
    /// Sessions read from and mirrored to a directory (see
    /// [`AppOptions::persistent`]).
    sessions: Option<BoundedStore>,
}

impl std::fmt::Debug for AppOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppOptions")
            .field("secure_cookie", &self.secure_cookie)
            .field("cookie_name", &self.cookie_name)
            .field("max_sessions", &self.max_sessions)
            .field("session_idle", &self.session_idle)
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

impl AppOptions {
    /// Options with a fresh random signing key.
    pub fn new(secure_cookie: bool) -> Self {
        AppOptions {
            secure_cookie,
            session_key: Key::generate(),
            cookie_name: "rp_session".into(),
            max_sessions: 10_000,
            session_idle: Duration::from_secs(7 * 24 * 3600),
            sessions: None,
        }
    }

    /// Options that keep sessions across restarts: each session is
    /// mirrored to a file (owner-only) in `dir/sessions`, and the key that
    /// signs the cookies is kept in `dir/session.key` (created on first
    /// use). Sessions hold the pending authorization's secrets (PKCE
    /// verifier, `state`, `nonce`): protect the directory accordingly.
    pub fn persistent(secure_cookie: bool, dir: &Path) -> std::io::Result<Self> {
        let mut o = AppOptions::new(secure_cookie);
        std::fs::create_dir_all(dir)?;
        o.session_key = load_or_create_key(&dir.join("session.key"))?;
        o.sessions = Some(BoundedStore::in_dir(o.max_sessions, &dir.join("sessions"))?);
        Ok(o)
    }
}

/// Writes `bytes` to `path` (owner-only), replacing it atomically.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

fn load_or_create_key(path: &Path) -> std::io::Result<Key> {
    match std::fs::read(path) {
        Ok(bytes) => Key::try_from(bytes.as_slice()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not hold a session key", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Key::generate();
            write_private(path, key.master())?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// What the CSRF cookie needs: its signing key and whether it is `Secure`.
#[derive(Clone)]
struct CsrfCookie {
    key: Key,
    secure: bool,
}

/// One verification the app follows.
struct Entry {
    id: DeferredId,
    view: watch::Sender<View>,
}

struct Inner {
    client: DtrClient,
    /// By outcome id (not secret, unlike the `deferred_auth_id`).
    verifications: Mutex<HashMap<OutcomeId, Entry>>,
    /// Where the verifications are kept across restarts, if anywhere.
    state_file: Option<PathBuf>,
    /// Serialises writes of the state file.
    writing: Mutex<()>,
}

/// One verification as kept in the state file.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    outcome_id: OutcomeId,
    id: DeferredId,
    view: View,
}

/// The app: the SDK client and the state of every verification. Cheap to
/// clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("issuer", &self.inner.client.issuer())
            .finish_non_exhaustive()
    }
}

impl App {
    /// The app around a configured client (its redirect URI must be this
    /// app's `/callback`, its notification endpoint this app's `/dtr/ping`).
    /// Starts following the client's events; call it inside a tokio
    /// runtime.
    pub fn new(client: DtrClient) -> App {
        App::start(client, HashMap::new(), None)
    }

    /// Like [`App::new`], keeping the verifications' states in
    /// `dir/verifications.json` (owner-only; it holds the
    /// `deferred_auth_id`s) so that a restart keeps what each session
    /// shows. A verification that was pending and that the client no longer
    /// polls after the restart (it has no durable store, or the OP forgot
    /// it) is shown as failed, with a way to start again.
    pub async fn with_state_dir(client: DtrClient, dir: &Path) -> std::io::Result<App> {
        std::fs::create_dir_all(dir)?;
        let file = dir.join("verifications.json");
        let saved: Vec<Saved> = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut map = HashMap::new();
        for s in saved {
            let mut view = s.view;
            if !view.is_final() && client.poll_status(&s.id).await.is_none() {
                view = View::Failed {
                    reason: "This verification was lost when the app restarted.".into(),
                };
            }
            map.insert(
                s.outcome_id,
                Entry {
                    id: s.id,
                    view: watch::channel(view).0,
                },
            );
        }
        let app = App::start(client, map, Some(file));
        app.persist();
        Ok(app)
    }

    fn start(
        client: DtrClient,
        verifications: HashMap<OutcomeId, Entry>,
        state_file: Option<PathBuf>,
    ) -> App {
        let app = App {
            inner: Arc::new(Inner {
                client,
                verifications: Mutex::new(verifications),
                state_file,
                writing: Mutex::new(()),
            }),
        };
        // Subscribe before anything can happen, so no event is missed.
        let events = app.inner.client.subscribe();
        tokio::spawn(app.clone().track(events));
        app
    }

    /// Writes the state file (if any) with every verification.
    fn persist(&self) {
        let Some(file) = &self.inner.state_file else {
            return;
        };
        let _writing = self.inner.writing.lock().unwrap_or_else(|p| p.into_inner());
        let saved: Vec<Saved> = self
            .lock()
            .iter()
            .map(|(oid, e)| Saved {
                outcome_id: oid.clone(),
                id: e.id.clone(),
                view: e.view.borrow().clone(),
            })
            .collect();
        let result = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|b| write_private(file, &b));
        if let Err(e) = result {
            tracing::error!(error = %e, "could not save the verifications' states");
        }
    }

    /// The SDK client.
    pub fn client(&self) -> &DtrClient {
        &self.inner.client
    }

    /// The state of a verification, by its outcome id.
    pub fn view(&self, outcome_id: &OutcomeId) -> Option<View> {
        self.lock().get(outcome_id).map(|e| e.view.borrow().clone())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<OutcomeId, Entry>> {
        self.inner
            .verifications
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Starts following an authentication (idempotent: events may have
    /// created the entry already).
    fn register(&self, id: &DeferredId) -> OutcomeId {
        let oid = OutcomeId::of(id);
        let mut added = false;
        self.lock().entry(oid.clone()).or_insert_with(|| {
            added = true;
            Entry {
                id: id.clone(),
                view: watch::channel(View::Pending {
                    progress: None,
                    retrying: None,
                })
                .0,
            }
        });
        if added {
            self.persist();
        }
        oid
    }

    /// Sets a view; a final view is never replaced.
    fn set(&self, id: &DeferredId, view: View) {
        let oid = self.register(id);
        let now_final = view.is_final();
        let changed = self.lock().get(&oid).is_some_and(|e| {
            e.view.send_if_modified(|current| {
                if current.is_final() || *current == view {
                    false
                } else {
                    *current = view;
                    true
                }
            })
        });
        if changed && now_final {
            self.persist();
        }
    }

    async fn finish(&self, id: &DeferredId, outcome: &Outcome) {
        self.set(id, View::of_outcome(outcome));
        // The app has taken the outcome (a real app commits it to its
        // database first): the SDK need not hand it over again.
        if let Err(e) = self.inner.client.ack(id).await {
            tracing::warn!(error = %e, "could not acknowledge an outcome");
        }
    }

    /// Changes the progress text and the retry line of a pending view (a
    /// final view stays as it is).
    fn update_pending(
        &self,
        id: &DeferredId,
        f: impl FnOnce(&mut Option<String>, &mut Option<String>),
    ) {
        let current = self
            .lock()
            .get(&OutcomeId::of(id))
            .map(|e| e.view.borrow().clone());
        let (mut progress, mut retrying) = match current {
            Some(View::Pending { progress, retrying }) => (progress, retrying),
            Some(_) => return,
            None => (None, None),
        };
        f(&mut progress, &mut retrying);
        self.set(id, View::Pending { progress, retrying });
    }

    /// While a verification shows a retry, asks the SDK every second
    /// whether the OP has answered since (a pending answer without a new
    /// text raises no event), and then takes the retry line away.
    async fn watch_retry(self, id: DeferredId) {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            match self.inner.client.poll_status(&id).await {
                Some(st) if !st.finished && st.last_failure.is_some() => {}
                _ => break,
            }
        }
        self.update_pending(&id, |_, retrying| *retrying = None);
    }

    /// Keeps the views up to date from the SDK's events.
    async fn track(self, mut events: broadcast::Receiver<PollEvent>) {
        // Outcomes a previous process received but never acknowledged (with a
        // durable store).
        for d in self.inner.client.undelivered().await {
            self.finish(&d.id, &d.outcome).await;
        }
        loop {
            match events.recv().await {
                Ok(PollEvent::Progress { id, description }) => {
                    // The OP answered: no longer retrying.
                    self.update_pending(&id, |progress, retrying| {
                        *progress = Some(description);
                        *retrying = None;
                    });
                }
                Ok(PollEvent::Retrying { id, cause, .. }) => {
                    let mut started = false;
                    self.update_pending(&id, |_, retrying| {
                        started = retrying.is_none();
                        *retrying = Some(cause.to_string());
                    });
                    if started {
                        tokio::spawn(self.clone().watch_retry(id));
                    }
                }
                Ok(PollEvent::Finished { id, outcome, .. }) => self.finish(&id, &outcome).await,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Outcomes stay available through `wait`.
                    tracing::warn!(missed, "fell behind the SDK's events");
                    let open: Vec<DeferredId> = self
                        .lock()
                        .values()
                        .filter(|e| !e.view.borrow().is_final())
                        .map(|e| e.id.clone())
                        .collect();
                    for id in open {
                        let app = self.clone();
                        tokio::spawn(async move {
                            if let Ok(outcome) = app.inner.client.wait(&id).await {
                                app.finish(&id, &outcome).await;
                            }
                        });
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// The app's routes, including the ping endpoint.
    pub fn router(&self, options: AppOptions) -> Router {
        let store = match options.sessions {
            Some(store) => store.with_cap(options.max_sessions),
            None => BoundedStore::in_memory(options.max_sessions),
        };
        let idle =
            time::Duration::try_from(options.session_idle).unwrap_or(time::Duration::days(7));
        let csrf_cookie = CsrfCookie {
            key: options.session_key.clone(),
            secure: options.secure_cookie,
        };
        let sessions = SessionManagerLayer::new(store)
            .with_name(options.cookie_name)
            .with_http_only(true)
            .with_same_site(SameSite::Lax)
            .with_secure(options.secure_cookie)
            .with_expiry(Expiry::OnInactivity(idle))
            // Every request of a session moves its idle expiry on.
            .with_always_save(true)
            .with_signed(options.session_key);
        let pages = Router::new()
            .route("/", get(start_page))
            .route("/verify", post(verify))
            .route("/callback", get(callback_query).post(callback_form_post))
            .route("/verification", get(verification_page))
            .route("/verification/events", get(events))
            .route("/verification/cancel", post(cancel))
            .route("/signout", post(sign_out))
            .layer(sessions)
            .layer(Extension(csrf_cookie));
        Router::new()
            .merge(pages)
            .route("/static/style.css", get(style))
            .route("/static/live.js", get(live_js))
            .route("/static/continue.js", get(continue_js))
            // The notification endpoint: the SDK's receiver as a tower service.
            .route_service("/dtr/ping", self.inner.client.ping_receiver())
            .layer(axum::middleware::map_response(security_headers))
            .with_state(self.clone())
    }
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; object-src 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // No powerful feature is used: deny them all to this page and any frame.
    h.insert(
        header::HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static(
            "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), \
             microphone=(), payment=(), usb=()",
        ),
    );
    // A cross-origin window this page opens, or that opens it, gets no
    // handle on it.
    h.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

// ------------------------------------------------------------------ helpers

/// An error page.
fn fail(status: StatusCode, title: &str, message: &str) -> Response {
    (status, Html(html::error(title, message))).into_response()
}

fn session_failed(e: tower_sessions::session::Error) -> Response {
    tracing::error!(error = %e, "session store failed");
    fail(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "Your session could not be read or saved. Please try again.",
    )
}

/// A fresh random token (hex); `None` without randomness.
fn random_token() -> Option<String> {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn no_randomness() -> Response {
    fail(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "No randomness available.",
    )
}

/// The session's CSRF token, created on first use.
async fn csrf_token(session: &Session) -> Result<String, Response> {
    if let Some(t) = session.get::<String>(CSRF).await.map_err(session_failed)? {
        return Ok(t);
    }
    let t = random_token().ok_or_else(no_randomness)?;
    session.insert(CSRF, &t).await.map_err(session_failed)?;
    Ok(t)
}

/// The token of the signed CSRF cookie the request carries, if valid.
fn cookie_csrf(headers: &HeaderMap, cfg: &CsrfCookie) -> Option<String> {
    let mut jar = CookieJar::new();
    for h in headers.get_all(header::COOKIE) {
        let Ok(h) = h.to_str() else { continue };
        for part in h.split(';') {
            if let Ok(c) = Cookie::parse(part.trim().to_owned()) {
                jar.add_original(c);
            }
        }
    }
    jar.signed(&cfg.key)
        .get(CSRF_COOKIE)
        .map(|c| c.value().to_owned())
}

/// The `Set-Cookie` value of a signed CSRF cookie carrying `token`.
fn csrf_set_cookie(cfg: &CsrfCookie, token: &str) -> Option<HeaderValue> {
    let mut jar = CookieJar::new();
    jar.signed_mut(&cfg.key).add(
        Cookie::build((CSRF_COOKIE, token.to_owned()))
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(cfg.secure)
            .path("/"),
    );
    let c = jar.get(CSRF_COOKIE)?;
    HeaderValue::from_str(&c.to_string()).ok()
}

fn same(a: &str, b: &str) -> bool {
    !a.is_empty()
        && aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

fn form_expired() -> Response {
    fail(
        StatusCode::FORBIDDEN,
        "Please try again",
        "This form has expired. Go back to the start and try again.",
    )
}

/// Checks a form's CSRF token against the session's (constant time).
async fn check_csrf(session: &Session, sent: &str) -> Result<(), Response> {
    let have = session
        .get::<String>(CSRF)
        .await
        .map_err(session_failed)?
        .unwrap_or_default();
    if same(&have, sent) {
        Ok(())
    } else {
        Err(form_expired())
    }
}

/// This session's verification: its outcome id.
async fn current(session: &Session) -> Result<Option<OutcomeId>, Response> {
    session
        .get::<OutcomeId>(VERIFICATION)
        .await
        .map_err(session_failed)
}

// ------------------------------------------------------------------- routes

/// The start page. A visitor without a session gets none here: the form's
/// CSRF token travels in a signed cookie instead (double submit), and the
/// session is created by `POST /verify`.
async fn start_page(
    session: Session,
    Extension(cfg): Extension<CsrfCookie>,
    headers: HeaderMap,
) -> Response {
    let in_session = match session.get::<String>(CSRF).await {
        Ok(t) => t,
        Err(e) => return session_failed(e),
    };
    let has = matches!(current(&session).await, Ok(Some(_)));
    if let Some(t) = in_session {
        return Html(html::start(&t, has)).into_response();
    }
    if let Some(t) = cookie_csrf(&headers, &cfg) {
        return Html(html::start(&t, has)).into_response();
    }
    let Some(t) = random_token() else {
        return no_randomness();
    };
    let mut res = Html(html::start(&t, has)).into_response();
    if let Some(v) = csrf_set_cookie(&cfg, &t) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

#[derive(serde::Deserialize)]
struct VerifyForm {
    csrf: String,
    response_mode: Option<String>,
}

async fn verify(
    State(app): State<App>,
    session: Session,
    Extension(cfg): Extension<CsrfCookie>,
    headers: HeaderMap,
    Form(form): Form<VerifyForm>,
) -> Response {
    let by_cookie = cookie_csrf(&headers, &cfg).is_some_and(|t| same(&t, &form.csrf));
    if !by_cookie && let Err(r) = check_csrf(&session, &form.csrf).await {
        return r;
    }
    // One verification at a time: while this session's is pending, a second
    // one would hide the first one's result.
    match current(&session).await {
        Ok(Some(oid)) if app.view(&oid).is_some_and(|v| !v.is_final()) => {
            return Redirect::to("/verification").into_response();
        }
        Ok(_) => {}
        Err(r) => return r,
    }
    let mode = match form.response_mode.as_deref() {
        Some("form_post") => ResponseMode::FormPost,
        _ => ResponseMode::Query,
    };
    let (url, pending) = match app
        .client()
        .authorize()
        .scope("profile")
        .response_mode(mode)
        .build()
    {
        Ok(x) => x,
        Err(e) => {
            return fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Could not start the verification",
                &e.to_string(),
            );
        }
    };
    if let Err(e) = session.insert(PENDING, &pending).await {
        return session_failed(e);
    }
    Redirect::to(url.as_str()).into_response()
}

/// What both callback routes do once the response is validated.
async fn complete(
    app: &App,
    session: &Session,
    validated: Result<CallbackResponse, oidc_dtr::Error>,
) -> Response {
    let ack = match validated {
        Ok(CallbackResponse::Acknowledgment(ack)) => ack,
        Ok(CallbackResponse::Error(e)) => {
            return fail(
                StatusCode::FORBIDDEN,
                "The provider did not start the verification",
                &e.to_string(),
            );
        }
        Ok(_) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "Unexpected answer",
                "The provider answered with something this app did not ask for.",
            );
        }
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "The provider's answer was refused",
                &e.to_string(),
            );
        }
    };
    let auth = match app.client().exchange(ack).await {
        Ok(a) => a,
        Err(e) => {
            return fail(
                StatusCode::BAD_GATEWAY,
                "The provider could not be reached",
                &e.to_string(),
            );
        }
    };
    let oid = app.register(auth.id());
    // A new privilege level: a new session id (no session fixation).
    if let Err(e) = session.cycle_id().await {
        return session_failed(e);
    }
    if let Err(e) = session.insert(VERIFICATION, &oid).await {
        return session_failed(e);
    }
    Redirect::to("/verification").into_response()
}

fn no_pending() -> Response {
    fail(
        StatusCode::BAD_REQUEST,
        "No verification was started here",
        "This browser has no verification waiting for the provider's answer (it may \
         have been completed already). Start again from the first page.",
    )
}

/// Whether a callback was refused before its `state` matched this
/// session's pending authorization: then it is not the answer to it (a
/// forged or stale request, e.g. a cross-site page posting to `/callback`)
/// and must not use it up.
fn not_for_this_session(r: &Result<CallbackResponse, oidc_dtr::Error>) -> bool {
    matches!(
        r,
        Err(oidc_dtr::Error::Callback(
            CallbackError::Malformed
                | CallbackError::TooLarge { .. }
                | CallbackError::RepeatedParameter(_)
                | CallbackError::MissingState
                | CallbackError::StateMismatch
                | CallbackError::WrongClient
                | CallbackError::WrongResponseMode { .. }
        ))
    )
}

fn not_for_this_session_page() -> Response {
    fail(
        StatusCode::BAD_REQUEST,
        "This answer is not for your verification",
        "This browser received an answer that does not belong to the verification it \
         started (it may come from another site). Your verification was not affected: \
         finish it at the provider's page.",
    )
}

/// Validates a callback against the session's pending authorization; the
/// pending authorization is used up only by an answer whose `state`
/// matches (single use), whatever the answer then says.
async fn validate_and_complete(
    app: &App,
    session: &Session,
    validate: impl FnOnce(&PendingAuthorization) -> Result<CallbackResponse, oidc_dtr::Error>,
) -> Response {
    let pending = match session.get::<PendingAuthorization>(PENDING).await {
        Ok(Some(p)) => p,
        Ok(None) => return no_pending(),
        Err(e) => return session_failed(e),
    };
    let validated = validate(&pending);
    if not_for_this_session(&validated) {
        tracing::info!("a callback that does not match the pending authorization was ignored");
        return not_for_this_session_page();
    }
    if let Err(e) = session.remove::<PendingAuthorization>(PENDING).await {
        return session_failed(e);
    }
    complete(app, session, validated).await
}

async fn callback_query(
    State(app): State<App>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    validate_and_complete(&app, &session, |p| app.client().callback(p, &query)).await
}

async fn callback_form_post(State(app): State<App>, session: Session, body: Bytes) -> Response {
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .filter(|(k, _)| k != "rp_reposted")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let reposted = url::form_urlencoded::parse(&body).any(|(k, _)| k == "rp_reposted");
    match session.get::<PendingAuthorization>(PENDING).await {
        Ok(Some(_)) => {}
        // A cross-site POST carries no SameSite=Lax cookie: post it again
        // from our own origin, once.
        Ok(None) if !reposted => return Html(html::repost(&fields)).into_response(),
        Ok(None) => return no_pending(),
        Err(e) => return session_failed(e),
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&fields)
        .finish();
    validate_and_complete(&app, &session, |p| {
        app.client().callback_form(p, body.as_bytes())
    })
    .await
}

async fn verification_page(State(app): State<App>, session: Session) -> Response {
    let oid = match current(&session).await {
        Ok(Some(oid)) => oid,
        Ok(None) => return Redirect::to("/").into_response(),
        Err(r) => return r,
    };
    let csrf = match csrf_token(&session).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match app.view(&oid) {
        Some(view) => Html(html::verification(&view, &csrf)).into_response(),
        None => fail(
            StatusCode::NOT_FOUND,
            "Verification not found",
            "This app no longer knows your verification (it may have restarted). Start again.",
        ),
    }
}

async fn events(State(app): State<App>, session: Session) -> Response {
    let oid = match current(&session).await {
        Ok(Some(oid)) => oid,
        // 204 tells EventSource not to reconnect.
        Ok(None) => return StatusCode::NO_CONTENT.into_response(),
        Err(r) => return r,
    };
    let csrf = match csrf_token(&session).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(rx) = app.lock().get(&oid).map(|e| e.view.subscribe()) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    // The current state first, then every change; the stream ends after the
    // final state.
    let stream = futures_util::stream::unfold(
        (rx, csrf, true, false),
        |(mut rx, csrf, first, done)| async move {
            if done {
                return None;
            }
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let view = rx.borrow_and_update().clone();
            let is_final = view.is_final();
            let event = Event::default()
                .event(view.kind())
                .data(html::status_inner(&view, &csrf));
            Some((Ok::<_, Infallible>(event), (rx, csrf, false, is_final)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(serde::Deserialize)]
struct CancelForm {
    csrf: String,
}

/// Ends the session (the verification's result stays with the app).
async fn sign_out(session: Session, Form(form): Form<CancelForm>) -> Response {
    if let Err(r) = check_csrf(&session, &form.csrf).await {
        return r;
    }
    if let Err(e) = session.flush().await {
        return session_failed(e);
    }
    Redirect::to("/").into_response()
}

async fn cancel(
    State(app): State<App>,
    session: Session,
    Form(form): Form<CancelForm>,
) -> Response {
    if let Err(r) = check_csrf(&session, &form.csrf).await {
        return r;
    }
    let oid = match current(&session).await {
        Ok(Some(oid)) => oid,
        Ok(None) => return Redirect::to("/").into_response(),
        Err(r) => return r,
    };
    let Some(id) = app.lock().get(&oid).map(|e| e.id.clone()) else {
        return Redirect::to("/").into_response();
    };
    if let Err(e) = app.client().cancel(&id).await {
        return fail(
            StatusCode::BAD_GATEWAY,
            "Could not cancel",
            &format!("The provider did not accept the cancellation ({e}). Try again later."),
        );
    }
    // The engine delivers the final outcome (normally `Cancelled`; the
    // tokens if a poll in flight brought them): show the page after it.
    if let Ok(Ok(outcome)) = tokio::time::timeout(CANCEL_SETTLE, app.client().wait(&id)).await {
        app.finish(&id, &outcome).await;
    }
    Redirect::to("/verification").into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    )
}

async fn live_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../static/live.js"),
    )
}

async fn continue_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../static/continue.js"),
    )
}
