//! # oidc-dtr-web
//!
//! The reference Relying-Party web app for the OpenID Connect Deferred Token
//! Response flow, on axum: what an end user sees while an OpenID Provider
//! takes minutes or days to verify them.
//!
//! - `GET /`: "Verify my identity" (a form, `POST /verify`). It creates no
//!   session: until there is one, the form's CSRF token travels in a signed
//!   `SameSite=Strict` cookie (double submit).
//! - `POST /verify`: builds the authorization request, keeps the
//!   [`PendingAuthorization`](oidc_dtr::PendingAuthorization) in the user's
//!   server-side session (tower-sessions; the cookie is signed, `HttpOnly`
//!   and `SameSite=Lax`) and sends the browser to the OP. While the
//!   session's verification is pending, it leads to that one instead.
//! - `GET /callback` (`response_mode=query`) and `POST /callback`
//!   (`form_post`): validates the response against the session's pending
//!   authorization (used up only by an answer whose `state` matches: a
//!   forged callback leaves it intact), exchanges the `deferred_code`,
//!   remembers the authentication in the session, and redirects to the
//!   pending page.
//! - `GET /verification`: the state of *this session's* verification, as
//!   plain semantic HTML (a reload shows the current state; without
//!   JavaScript, a `<noscript>` refresh does it). With JavaScript, a small
//!   script listens to `GET /verification/events` (server-sent events fed by
//!   [`DtrClient::subscribe`](oidc_dtr::DtrClient::subscribe)) and replaces
//!   the `aria-live` status region as the OP's progress texts and finally
//!   its decision arrive.
//! - `POST /verification/cancel`: cancels at the OP and stops polling.
//! - `POST /signout`: ends the session.
//! - `POST /dtr/ping`: the notification endpoint, the SDK's
//!   [`PingReceiver`](oidc_dtr::ping::PingReceiver) mounted as a tower
//!   service.
//!
//! No URL names a verification: every page finds it through the session, so
//! one user's page never shows another user's authentication.
//!
//! Sessions are bounded ([`AppOptions::max_sessions`]; the longest idle goes
//! first) and expire after [`AppOptions::session_idle`] without a request.
//! With [`AppOptions::persistent`] and [`App::with_state_dir`] they, their
//! signing key and the verifications' states survive a restart.
//!
//! [`demo`] starts the app together with the testkit's mock OP (with its
//! HTML pages for the end user and a reviewer) in one process.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod app;
pub mod demo;
mod html;
mod sessions;
mod view;

pub use app::{App, AppOptions};
pub use view::View;
