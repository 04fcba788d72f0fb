//! The machine's inputs ([`Event`]) and outputs ([`Step`], [`Action`],
//! [`InteractionChange`]).

use super::outcome::*;
pub use crate::error::RetryCause;
use crate::error::{ErrorCode, SharedError};
use crate::proto::ietf::{InteractionUri, InvalidInteractionUri};
use crate::time::UnixTime;

/// An input to the machine.
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::UnixTime;
/// use oidc_dtr::poll::{Action, Event, PollConfig, PollMachine};
/// use oidc_dtr::random::SystemRandom;
///
/// let t = UnixTime::from_secs;
/// let mut m = PollMachine::with_start(t(0), None, Duration::from_secs(5), PollConfig::default());
/// // A ping does not let the client poll inside the OP's interval...
/// let step = m.handle::<()>(Event::Wake, t(1), &SystemRandom);
/// assert_eq!(step.action, Action::SleepUntil(t(5)));
/// // ...and a cancellation ends the authentication.
/// let step = m.handle::<()>(Event::Cancel, t(2), &SystemRandom);
/// assert!(matches!(step.action, Action::Deliver(oidc_dtr::Outcome::Cancelled)));
/// ```
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
///
/// ```
/// use oidc_dtr::poll::Action;
///
/// /// What a hand-written driver does with each action.
/// fn describe<T>(action: &Action<T>) -> String {
///     match action {
///         Action::SendPoll => "send a Token Request now".into(),
///         Action::SleepUntil(t) => format!("sleep until {t}"),
///         Action::AwaitResponse => "wait for the answer in flight".into(),
///         Action::Deliver(outcome) => format!("deliver: {}", outcome.kind()),
///         Action::Finished => "nothing left to do".into(),
///         _ => "unknown action".into(),
///     }
/// }
/// assert_eq!(describe::<()>(&Action::SendPoll), "send a Token Request now");
/// ```
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
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::UnixTime;
/// use oidc_dtr::poll::{Action, Event, PollConfig, PollMachine};
/// use oidc_dtr::random::SystemRandom;
///
/// let t = UnixTime::from_secs;
/// let mut m = PollMachine::with_start(t(0), None, Duration::from_secs(5), PollConfig::default());
/// let step = m.handle::<()>(Event::Timer, t(5), &SystemRandom);
/// assert_eq!(step.action, Action::SendPoll);
/// if let Some(text) = &step.progress {
///     println!("OP: {text}");
/// }
/// assert!(step.interaction.is_none());
/// ```
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
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::UnixTime;
/// use oidc_dtr::poll::{Event, PollConfig, PollMachine, PollResult};
/// use oidc_dtr::random::SystemRandom;
///
/// let t = UnixTime::from_secs;
/// let mut m = PollMachine::with_start(t(0), None, Duration::from_secs(5), PollConfig::default());
/// m.handle::<()>(Event::Timer, t(5), &SystemRandom); // sends the first poll
/// let failed = PollResult::Transient { message: "connection reset".into(), retry_after: None, cause: None };
/// let step = m.handle::<()>(Event::Response(failed), t(6), &SystemRandom);
/// let retry = step.retry.expect("a failed poll is retried");
/// assert!(retry.next_attempt >= t(11)); // never inside the floor
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retry {
    /// Why the poll failed.
    pub cause: RetryCause,
    /// When the next poll is due.
    pub next_attempt: UnixTime,
}

impl RetryCause {
    /// The class of a poll answer that the machine retries, or `None` for
    /// any other answer (tokens, a pending answer, a terminal error).
    pub fn of<T>(result: &PollResult<T>) -> Option<RetryCause> {
        match result {
            PollResult::Transient { cause, .. } => Some(
                cause
                    .as_ref()
                    .map_or(RetryCause::Other, SharedError::retry_cause),
            ),
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
}

/// A change of the user interaction an authentication waits for (IETF
/// profile, where `interaction_required` means "still pending, waiting for
/// the user"): `interaction_required` with a new `interaction_uri`, or back
/// to plain `authorization_pending`.
///
/// ```
/// use oidc_dtr::ietf::InteractionUri;
/// use oidc_dtr::poll::InteractionChange;
///
/// fn show(change: &InteractionChange) -> String {
///     match change {
///         InteractionChange::Required(uri) => format!("please continue at {}", uri.as_str()),
///         InteractionChange::Resolved => "thanks, the AS carries on".into(),
///         _ => String::new(),
///     }
/// }
/// let uri = InteractionUri::parse("https://as.example/interact/42")?;
/// assert_eq!(
///     show(&InteractionChange::Required(uri)),
///     "please continue at https://as.example/interact/42"
/// );
/// # Ok::<(), oidc_dtr::ietf::InvalidInteractionUri>(())
/// ```
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
