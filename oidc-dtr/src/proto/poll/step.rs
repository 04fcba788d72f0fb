//! The machine's inputs ([`Event`]) and outputs ([`Step`], [`Action`],
//! [`InteractionChange`]).

use super::outcome::*;
use crate::proto::ietf::InteractionUri;
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
/// OP sent a new one with `authorization_pending`, and a change of the
/// user interaction the AS waits for (IETF `interaction_required`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Step<T> {
    /// What to do.
    pub action: Action<T>,
    /// The OP's new progress description, if it changed.
    pub progress: Option<String>,
    /// The interaction the AS waits for, if that changed.
    pub interaction: Option<InteractionChange>,
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
        }
    }
}

/// What an answer did: the authentication goes on (with a new progress text
/// or interaction to surface, maybe), or it ended.
pub(super) enum Applied<T> {
    Continue(Option<String>, Option<InteractionChange>),
    End(Outcome<T>),
}
