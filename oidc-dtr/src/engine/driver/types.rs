//! The driver's public values: a [`Delivery`] and its [`OutcomeId`], the
//! [`DriverConfig`], the [`PollEvent`]s it broadcasts, a [`PollStatus`], and
//! the [`Tracked`] view of one authentication.

use std::fmt;
use std::time::Duration;

use crate::proto::exchange::DeferredAuthentication;
use crate::proto::poll::{Outcome, PollMachine};
use crate::secret::DeferredId;
use crate::time::UnixTime;

/// A delivered (or deliverable) outcome with its stable id.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Delivery<T = crate::proto::token::TokenSet> {
    /// The authentication.
    pub id: DeferredId,
    /// A stable, non-secret id for this outcome (the same across restarts
    /// and re-deliveries): key the application's idempotency on it.
    pub outcome_id: OutcomeId,
    /// How it ended.
    pub outcome: Outcome<T>,
}

/// A stable, non-secret identifier of an authentication's outcome: 128 bits
/// of the SHA-256 of its `deferred_auth_id`, in hex. Every delivery of the
/// same outcome (including re-deliveries after a restart) carries the same
/// one.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct OutcomeId(String);

impl OutcomeId {
    /// The outcome id of an authentication.
    pub fn of(id: &DeferredId) -> Self {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.secret().as_bytes());
        OutcomeId(
            d.as_ref()[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// As text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OutcomeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub use crate::engine::config::DriverConfig;

/// Something that happened to a pending authentication.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PollEvent<T = crate::proto::token::TokenSet> {
    /// The OP sent a new progress description (its `error_description`)
    /// with a pending answer: `authorization_pending` in either profile, or
    /// (IETF) `interaction_required` (e.g. "documents in review, position 3
    /// in queue"). Emitted when the text changes, not on every poll.
    Progress {
        /// Which authentication.
        id: DeferredId,
        /// The OP's text (display it escaped).
        description: String,
    },
    /// The user interaction the AS waits for changed (IETF profile,
    /// `interaction_required`): `Some` is a (validated) URI to show the
    /// user; `None` means the answer flipped back to
    /// `authorization_pending`. Polling goes on either way. (The URI of an
    /// `interaction_required` deferred response itself comes with the
    /// authentication: [`DeferredAuthentication::interaction_uri`](crate::DeferredAuthentication::interaction_uri).)
    Interaction {
        /// Which authentication.
        id: DeferredId,
        /// Where the user must go, if anywhere.
        uri: Option<crate::proto::ietf::InteractionUri>,
    },
    /// The AS answered `interaction_required` (IETF profile) with an
    /// `interaction_uri` the SDK refuses (not absolute `https` with a host,
    /// a fragment, user info, too long, control characters): it is not shown
    /// to the user, and polling goes on. Emitted on the first answer with a
    /// refused URI after one without (not on every poll); the
    /// [`PollStatus::interaction_uri`] is then `None`.
    InteractionRefused {
        /// Which authentication.
        id: DeferredId,
        /// Why (a short class; the URI itself is not repeated: it may hold
        /// a one-time value).
        reason: crate::proto::ietf::InvalidInteractionUri,
    },
    /// A poll failed in a way that may go away (see
    /// [`RetryCause`](crate::poll::RetryCause)), and will be retried at
    /// `next_attempt`: the floor, the backoff with its jitter and any
    /// `Retry-After`, as the poll machine decided. Emitted once per failed
    /// poll that leaves an attempt before the deadline;
    /// [`PollStatus::last_failure`] holds the cause until the next
    /// well-formed answer.
    Retrying {
        /// Which authentication.
        id: DeferredId,
        /// Why the poll failed (a class: nothing from the OP's body).
        cause: crate::proto::poll::RetryCause,
        /// When the next poll is due.
        next_attempt: UnixTime,
    },
    /// The OP answered with tokens, but their ID token could not be
    /// validated yet: the OP's JWK Set is unreachable. The tokens are kept
    /// (in the store, sealed, where one is configured) and validated again
    /// with backoff until the keys can be fetched; the authentication then
    /// ends with them (or, if they turn out invalid, with
    /// [`PollFailure::InvalidTokens`](crate::poll::PollFailure::InvalidTokens)).
    TokensHeld {
        /// Which authentication (or the handle of an
        /// [`Error::TokensHeld`](crate::Error::TokensHeld)).
        id: DeferredId,
        /// Why they could not be validated (no secrets).
        reason: String,
    },
    /// The authentication ended (and its outcome is stored).
    Finished {
        /// Which authentication.
        id: DeferredId,
        /// The outcome's stable id (see [`OutcomeId`]).
        outcome_id: OutcomeId,
        /// How.
        outcome: Outcome<T>,
    },
}

/// A snapshot of one authentication's polling.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollStatus {
    /// The current minimum time between polls.
    pub floor: Duration,
    /// When the next poll is due (`None` while one is in flight or after
    /// the end).
    pub next_poll: Option<UnixTime>,
    /// The absolute deadline.
    pub deadline: UnixTime,
    /// Polls sent so far.
    pub polls: u32,
    /// `slow_down` answers so far.
    pub slow_downs: u32,
    /// Whether a poll is in flight.
    pub in_flight: bool,
    /// Whether it has ended.
    pub finished: bool,
    /// The `interaction_uri` the AS currently waits at (IETF
    /// `interaction_required`), if any.
    pub interaction_uri: Option<crate::proto::ietf::InteractionUri>,
    /// Whether the OP has answered with tokens that await validation (their
    /// JWK Set was unreachable; see [`PollEvent::TokensHeld`]).
    pub tokens_held: bool,
    /// Why the last poll failed, while it is being retried (see
    /// [`PollEvent::Retrying`]; the attempt is due at
    /// [`next_poll`](Self::next_poll)): `None` once a well-formed answer
    /// arrived since. Kept in memory only: `None` after a restart.
    pub last_failure: Option<crate::proto::poll::RetryCause>,
}

/// A tracked authentication, as the driver holds it.
#[derive(Debug, Clone)]
pub(crate) struct Tracked {
    pub auth: DeferredAuthentication,
    pub machine: PollMachine,
    pub finished: bool,
}
