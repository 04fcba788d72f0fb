//! The Relying-Party app: routes, the session, and the verifications' live
//! state fed by the SDK's events.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio::sync::{broadcast, watch};
use tower_sessions::cookie::{Key, SameSite};
use tower_sessions::{Expiry, MemoryStore, Session, SessionManagerLayer};

use oidc_dtr::{
    CallbackResponse, DeferredId, DtrClient, Outcome, OutcomeId, PendingAuthorization, PollEvent,
    client::ResponseMode,
};

use crate::html;
use crate::view::View;

/// Session keys.
const PENDING: &str = "pending_authorization";
const VERIFICATION: &str = "verification";
const CSRF: &str = "csrf";

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
}

impl std::fmt::Debug for AppOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppOptions")
            .field("secure_cookie", &self.secure_cookie)
            .field("cookie_name", &self.cookie_name)
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
        }
    }
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
        let app = App {
            inner: Arc::new(Inner {
                client,
                verifications: Mutex::new(HashMap::new()),
            }),
        };
        // Subscribe before anything can happen, so no event is missed.
        let events = app.inner.client.subscribe();
        tokio::spawn(app.clone().track(events));
        app
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
        self.lock().entry(oid.clone()).or_insert_with(|| Entry {
            id: id.clone(),
            view: watch::channel(View::Pending { progress: None }).0,
        });
        oid
    }

    /// Sets a view; a final view is never replaced.
    fn set(&self, id: &DeferredId, view: View) {
        let oid = self.register(id);
        if let Some(e) = self.lock().get(&oid) {
            e.view.send_if_modified(|current| {
                if current.is_final() || *current == view {
                    false
                } else {
                    *current = view;
                    true
                }
            });
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
                    self.set(
                        &id,
                        View::Pending {
                            progress: Some(description),
                        },
                    );
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
        let sessions = SessionManagerLayer::new(MemoryStore::default())
            .with_name(options.cookie_name)
            .with_http_only(true)
            .with_same_site(SameSite::Lax)
            .with_secure(options.secure_cookie)
            .with_expiry(Expiry::OnInactivity(time::Duration::days(7)))
            .with_signed(options.session_key);
        let pages = Router::new()
            .route("/", get(start_page))
            .route("/verify", post(verify))
            .route("/callback", get(callback_query).post(callback_form_post))
            .route("/verification", get(verification_page))
            .route("/verification/events", get(events))
            .route("/verification/cancel", post(cancel))
            .layer(sessions);
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

/// The session's CSRF token, created on first use.
async fn csrf_token(session: &Session) -> Result<String, Response> {
    if let Some(t) = session.get::<String>(CSRF).await.map_err(session_failed)? {
        return Ok(t);
    }
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "No randomness available.",
        )
    })?;
    let t: String = b.iter().map(|x| format!("{x:02x}")).collect();
    session.insert(CSRF, &t).await.map_err(session_failed)?;
    Ok(t)
}

/// Checks a form's CSRF token against the session's (constant time).
async fn check_csrf(session: &Session, sent: &str) -> Result<(), Response> {
    let have = session
        .get::<String>(CSRF)
        .await
        .map_err(session_failed)?
        .unwrap_or_default();
    if have.is_empty()
        || aws_lc_rs::constant_time::verify_slices_are_equal(have.as_bytes(), sent.as_bytes())
            .is_err()
    {
        return Err(fail(
            StatusCode::FORBIDDEN,
            "Please try again",
            "This form has expired. Go back to the start and try again.",
        ));
    }
    Ok(())
}

/// This session's verification: its outcome id.
async fn current(session: &Session) -> Result<Option<OutcomeId>, Response> {
    session
        .get::<OutcomeId>(VERIFICATION)
        .await
        .map_err(session_failed)
}

// ------------------------------------------------------------------- routes

async fn start_page(session: Session) -> Response {
    let csrf = match csrf_token(&session).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let has = matches!(current(&session).await, Ok(Some(_)));
    Html(html::start(&csrf, has)).into_response()
}

#[derive(serde::Deserialize)]
struct VerifyForm {
    csrf: String,
    response_mode: Option<String>,
}

async fn verify(
    State(app): State<App>,
    session: Session,
    Form(form): Form<VerifyForm>,
) -> Response {
    if let Err(r) = check_csrf(&session, &form.csrf).await {
        return r;
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

async fn callback_query(
    State(app): State<App>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Response {
    // Single use: taken out of the session whatever the answer.
    let pending = match session.remove::<PendingAuthorization>(PENDING).await {
        Ok(Some(p)) => p,
        Ok(None) => return no_pending(),
        Err(e) => return session_failed(e),
    };
    let query = query.unwrap_or_default();
    let validated = app.client().callback(&pending, &query);
    complete(&app, &session, validated).await
}

async fn callback_form_post(State(app): State<App>, session: Session, body: Bytes) -> Response {
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .filter(|(k, _)| k != "rp_reposted")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let reposted = url::form_urlencoded::parse(&body).any(|(k, _)| k == "rp_reposted");
    let pending = match session.remove::<PendingAuthorization>(PENDING).await {
        Ok(Some(p)) => p,
        // A cross-site POST carries no SameSite=Lax cookie: post it again
        // from our own origin, once.
        Ok(None) if !reposted => return Html(html::repost(&fields)).into_response(),
        Ok(None) => return no_pending(),
        Err(e) => return session_failed(e),
    };
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&fields)
        .finish();
    let validated = app.client().callback_form(&pending, body.as_bytes());
    complete(&app, &session, validated).await
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
