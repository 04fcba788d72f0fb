//! The machine's inputs ([`Event`]) and outputs ([`Step`], [`Action`],
//! [`InteractionChange`]).

use std::fmt;

use super::outcome::*;
use crate::error::{ErrorCode, HttpError, ResponseError, TransportErrorKind};
use crate::proto::ietf::{InteractionUri, InvalidInteractionUri};
use crate::time::UnixTime;

/// An input to the machine.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event<T = crate::proto::token::TokenSet> {
    /// A timer fired (or the driver simply asks what to do now).
    Timer,
    /// A ping arrived for this authentication.
    Wake,
    /// The application cancelled it.
    Cancel,
    /// The answer to the request in flight.
    Response(PollResult<T>),
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action<T> {
    /// Send a Token Request now (the machine is now in flight).
    SendPoll,
    /// Nothing to do before this instant (call again with [`Event::Timer`]
    /// then, or earlier on a wake-up).
    SleepUntil(UnixTime),
    /// A request is in flight: wait for its answer.
    AwaitResponse,
    /// The authentication has ended: deliver this outcome. Returned once.
    Deliver(Outcome<T>),
    /// The authentication ended earlier; nothing to do.
    Finished,
}

/// One step's result: the action, plus a progress text to surface when the
/// OP sent a new one with `authorization_pending` (or, IETF,
/// `interaction_required`), a change of the user interaction the AS waits
/// for (IETF `interaction_required`), an `interaction_uri` that was refused,
/// and the retry of a poll that failed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Step<T> {
    /// What to do.
    pub action: Action<T>,
    /// The OP's new progress description, if it changed.
    pub progress: Option<String>,
    /// The interaction the AS waits for, if that changed.
    pub interaction: Option<InteractionChange>,
    /// The AS sent an `interaction_uri` the SDK refuses (IETF
    /// `interaction_required`): why. Set on the first answer that carries a
    /// refused URI after one that did not; polling goes on.
    pub interaction_refused: Option<InvalidInteractionUri>,
    /// The answer was a failure that may go away (a transport failure, a
    /// 5xx or 429, a body that is not OAuth, `server_error` or
    /// `temporarily_unavailable`): the poll is retried at
    /// [`Retry::next_attempt`]. `None` when the failure leaves no attempt
    /// before the deadline.
    pub retry: Option<Retry>,
}

/// A failed poll the machine retries: why it failed, and when the next
/// attempt is due (the floor, the backoff with its jitter and any
/// `Retry-After`, as the machine decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retry {
    /// Why the poll failed.
    pub cause: RetryCause,
    /// When the next poll is due.
    pub next_attempt: UnixTime,
}

/// Why a poll failed in a way that is retried: a class, with nothing from
/// the OP's body and no secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryCause {
    /// The connection could not be established, or broke before the answer.
    Connect,
    /// The request timed out.
    Timeout,
    /// The OP failed: an HTTP 5xx without an OAuth body (`status`), or an
    /// OAuth `server_error` or `temporarily_unavailable` answer (`status`
    /// is then the HTTP status it came with, if known).
    ServerError {
        /// The HTTP status.
        status: Option<u16>,
    },
    /// The OP (or a proxy) rate-limited the client: HTTP 429.
    TooManyRequests,
    /// The answer was not an OAuth answer: an error page (a proxy, a
    /// captive portal), a body too large, a success body that is not a token
    /// response.
    NotOAuth,
    /// Anything else (e.g. an interrupted poll).
    Other,
}

impl RetryCause {
    /// The class of a poll answer that the machine retries, or `None` for
    /// any other answer (tokens, a pending answer, a terminal error).
    pub fn of<T>(result: &PollResult<T>) -> Option<RetryCause> {
        match result {
            PollResult::Transient { cause, .. } => {
                let Some(cause) = cause else {
                    return Some(RetryCause::Other);
                };
                let e = cause.get();
                if let Some(h) = e.downcast_ref::<HttpError>() {
                    return Some(Self::of_http(h));
                }
                if let Some(o) = e.downcast_ref::<crate::error::OAuthError>() {
                    return Some(RetryCause::ServerError {
                        status: o.status.map(|s| s.as_u16()),
                    });
                }
                if e.downcast_ref::<ResponseError>().is_some() {
                    return Some(RetryCause::NotOAuth);
                }
                Some(RetryCause::Other)
            }
            PollResult::OAuth(e)
                if matches!(
                    e.code,
                    ErrorCode::ServerError | ErrorCode::TemporarilyUnavailable
                ) =>
            {
                Some(RetryCause::ServerError {
                    status: e.status.map(|s| s.as_u16()),
                })
            }
            _ => None,
        }
    }

    fn of_http(h: &HttpError) -> RetryCause {
        match h {
            HttpError::Transport { kind, .. } => match kind {
                TransportErrorKind::Timeout => RetryCause::Timeout,
                TransportErrorKind::Connect | TransportErrorKind::Io => RetryCause::Connect,
                _ => RetryCause::Other,
            },
            HttpError::BodyTooLarge { .. } => RetryCause::NotOAuth,
            other => match other.status().map(|s| s.as_u16()) {
                Some(429) => RetryCause::TooManyRequests,
                Some(s @ 500..=599) => RetryCause::ServerError { status: Some(s) },
                Some(_) => RetryCause::NotOAuth,
                None => RetryCause::Other,
            },
        }
    }
}

impl fmt::Display for RetryCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryCause::Connect => f.write_str("connection failed"),
            RetryCause::Timeout => f.write_str("timed out"),
            RetryCause::ServerError { status: Some(s) } => write!(f, "server error (HTTP {s})"),
            RetryCause::ServerError { status: None } => f.write_str("server error"),
            RetryCause::TooManyRequests => f.write_str("rate limited (HTTP 429)"),
            RetryCause::NotOAuth => f.write_str("not an OAuth answer"),
            RetryCause::Other => f.write_str("request failed"),
        }
    }
}

/// A change of the user interaction an authentication waits for (IETF
/// profile, where `interaction_required` means "still pending, waiting for
/// the user"): `interaction_required` with a new `interaction_uri`, or back
/// to plain `authorization_pending`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InteractionChange {
    /// The AS waits for the user at this URI: show it. Polling goes on.
    Required(InteractionUri),
    /// The AS no longer waits for the user (the answer flipped back to
    /// `authorization_pending`).
    Resolved,
}

impl<T> Step<T> {
    pub(super) fn new(action: Action<T>) -> Self {
        Step {
            action,
            progress: None,
            interaction: None,
            interaction_refused: None,
            retry: None,
        }
    }
}

/// What an answer did: the authentication goes on (with a new progress text
/// or interaction to surface, maybe), or it ended.
pub(super) enum Applied<T> {
    Continue(
        Option<String>,
        Option<InteractionChange>,
        Option<InvalidInteractionUri>,
    ),
    End(Outcome<T>),
}
