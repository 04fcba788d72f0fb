//! How an authentication ends ([`Outcome`], [`PollFailure`]) and what one
//! Token Request returned, as the engine classified it ([`PollResult`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{OAuthError, RetryAfter, SharedError, TransportErrorKind};
use crate::proto::token::HeldTokens;

/// Why an authentication ended without tokens although the OP did not say
/// no: the answer or failure that made further polling pointless or wrong.
///
/// # Causes
///
/// `Transport`, `TokensRefused` and `Other` keep their cause's text (what is
/// persisted with the outcome) and, in the process that classified the
/// failure, the cause itself ([`cause`](Self::cause): the typed error, e.g.
/// an [`HttpError`](crate::error::HttpError) to downcast). `Display` prints the
/// text, which is the cause's own message, so [`source`](std::error::Error::source)
/// continues the chain *below* the cause (for a transport failure: the HTTP
/// client's error, then the `std::io::Error`). After a restart (an outcome
/// read back from a store) only the text remains: `cause()` and `source()`
/// are `None`. Two failures compare equal when their text is equal, whether
/// or not a cause is attached.
///
/// ```
/// use oidc_dtr::Outcome;
/// use oidc_dtr::poll::PollFailure;
///
/// fn why<T>(outcome: &Outcome<T>) -> Option<String> {
///     let Outcome::Rejected(failure) = outcome else { return None };
///     Some(match failure {
///         PollFailure::OAuth(e) => format!("the OP said {}", e.code),
///         PollFailure::InvalidTokens(e) => format!("invalid ID token: {e}"),
///         PollFailure::Transport { kind, .. } => format!("network: {kind}"),
///         other => other.to_string(),
///     })
/// }
/// assert_eq!(why(&Outcome::<()>::Cancelled), None);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PollFailure {
    /// A terminal OAuth error (`invalid_grant`, `invalid_request`,
    /// `invalid_client`, `unauthorized_client`, `unsupported_grant_type`, a
    /// second `invalid_dpop_proof`, an unknown code).
    OAuth(Box<OAuthError>),
    /// A failure that retrying will not fix (TLS, DNS, a redirect, a refused
    /// URL).
    Transport {
        /// What kind of failure.
        kind: TransportErrorKind,
        /// What happened (no secrets).
        message: String,
        /// The failure itself, in the process that saw it (not persisted).
        #[serde(skip)]
        cause: Option<SharedError>,
    },
    /// The OP answered with tokens that failed validation.
    InvalidTokens(crate::error::ValidationError),
    /// The token endpoint answered with a success (2xx) JSON body that
    /// breaks a rule of token responses (`token_type` missing or empty, an
    /// `expires_in` that is not a positive integer, ...). The OP has
    /// redeemed the id, so it is never polled again: the tokens were
    /// received but refused.
    TokensRefused {
        /// Which rule the response broke (names the member, never a token).
        reason: String,
        /// The parse error itself, in the process that saw it (not
        /// persisted).
        #[serde(skip)]
        cause: Option<SharedError>,
    },
    /// Anything else that cannot be retried (a configuration problem).
    Other {
        /// What happened (no secrets).
        message: String,
        /// The error itself, in the process that saw it (not persisted).
        #[serde(skip)]
        cause: Option<SharedError>,
    },
}

impl PollFailure {
    /// The typed error this failure's text was made from, while it is in
    /// memory (see [Causes](Self#causes)): `None` for `OAuth` and
    /// `InvalidTokens` (they are typed errors themselves) and after the
    /// outcome was read back from a store.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            PollFailure::Transport { cause, .. }
            | PollFailure::TokensRefused { cause, .. }
            | PollFailure::Other { cause, .. } => cause.as_ref().map(SharedError::get),
            PollFailure::OAuth(_) | PollFailure::InvalidTokens(_) => None,
        }
    }
}

impl std::fmt::Display for PollFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollFailure::OAuth(e) => std::fmt::Display::fmt(e, f),
            PollFailure::Transport { kind, message, .. } => write!(f, "{kind}: {message}"),
            PollFailure::InvalidTokens(e) => write!(f, "the tokens were rejected: {e}"),
            PollFailure::TokensRefused { reason, .. } => {
                write!(f, "tokens were received but refused: {reason}")
            }
            PollFailure::Other { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for PollFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent, as before: the OAuth error's own source.
            PollFailure::OAuth(e) => std::error::Error::source(&**e),
            PollFailure::InvalidTokens(_) => None,
            // The cause's text is printed: the chain goes on below it.
            _ => self.cause().and_then(|c| c.source()),
        }
    }
}

/// Equality of what is persisted: the in-memory cause is not compared.
impl PartialEq for PollFailure {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PollFailure::OAuth(a), PollFailure::OAuth(b)) => a == b,
            (
                PollFailure::Transport {
                    kind: k1,
                    message: m1,
                    ..
                },
                PollFailure::Transport {
                    kind: k2,
                    message: m2,
                    ..
                },
            ) => k1 == k2 && m1 == m2,
            (PollFailure::InvalidTokens(a), PollFailure::InvalidTokens(b)) => a == b,
            (
                PollFailure::TokensRefused { reason: a, .. },
                PollFailure::TokensRefused { reason: b, .. },
            ) => a == b,
            (PollFailure::Other { message: a, .. }, PollFailure::Other { message: b, .. }) => {
                a == b
            }
            _ => false,
        }
    }
}

impl Eq for PollFailure {}

/// How an authentication ended: exactly one of these per authentication.
///
/// Equality compares what is persisted (an in-memory cause is ignored: see
/// [`cause`](Self::cause)).
///
/// ```
/// use oidc_dtr::Outcome;
///
/// fn message<T>(outcome: &Outcome<T>) -> String {
///     match outcome {
///         Outcome::Tokens(_) => "signed in".into(),
///         Outcome::Denied { description } => format!("denied: {description:?}"),
///         Outcome::ExpiredByOp | Outcome::DeadlineReached { .. } => "took too long".into(),
///         Outcome::Cancelled => "cancelled".into(),
///         Outcome::PossiblyLostInTransit { .. } => "please start again".into(),
///         other => format!("failed ({})", other.kind()),
///     }
/// }
/// let denied: Outcome<()> = Outcome::Denied { description: Some("not attested".into()) };
/// assert_eq!(message(&denied), r#"denied: Some("not attested")"#);
/// assert_eq!(message(&Outcome::Tokens(())), "signed in");
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Outcome<T = crate::proto::token::TokenSet> {
    /// The OP approved; the tokens (validated by the driver).
    Tokens(T),
    /// The OP said `access_denied` (not attested, or cancelled at the OP).
    Denied {
        /// The OP's `error_description`.
        description: Option<String>,
    },
    /// The OP said `expired_token`.
    ExpiredByOp,
    /// The local deadline passed before the OP decided.
    DeadlineReached {
        /// The last transient problem seen, if any (e.g. the OP was
        /// unreachable at the end).
        last_error: Option<String>,
        /// The error `last_error` was made from, in the process that saw
        /// it (not persisted): see [`Outcome::cause`].
        #[serde(skip)]
        last_cause: Option<SharedError>,
    },
    /// The application cancelled it.
    Cancelled,
    /// It ended on an error (see [`PollFailure`]).
    Rejected(PollFailure),
    /// The OP answered `invalid_grant` right after a poll whose fate is
    /// unknown (its answer was lost: a 5xx, a reset connection, a timeout).
    /// The OP probably issued the tokens in that lost answer and has spent
    /// the id: start the flow again.
    PossiblyLostInTransit {
        /// What happened to the poll whose answer was lost.
        lost: Option<String>,
    },
}

impl<T> Outcome<T> {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Tokens(_) => "tokens",
            Outcome::Denied { .. } => "denied",
            Outcome::ExpiredByOp => "expired_by_op",
            Outcome::DeadlineReached { .. } => "deadline_reached",
            Outcome::Cancelled => "cancelled",
            Outcome::Rejected(_) => "rejected",
            Outcome::PossiblyLostInTransit { .. } => "possibly_lost_in_transit",
        }
    }

    /// The error behind an outcome, while it is in memory: the failure of a
    /// [`Rejected`](Self::Rejected) outcome (always), or the typed error
    /// behind a [`DeadlineReached`](Self::DeadlineReached)'s `last_error`
    /// (its text is `last_error`: walk on with `source()`, or downcast it,
    /// e.g. to [`HttpError`](crate::error::HttpError)). An outcome read back from
    /// a store after a restart keeps only the text: `DeadlineReached` then
    /// has no cause.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Outcome::Rejected(f) => Some(f),
            Outcome::DeadlineReached { last_cause, .. } => last_cause
                .as_ref()
                .map(|c| -> &(dyn std::error::Error + 'static) { c.get() }),
            _ => None,
        }
    }

    /// Maps the tokens.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Tokens(t) => Outcome::Tokens(f(t)),
            Outcome::Denied { description } => Outcome::Denied { description },
            Outcome::ExpiredByOp => Outcome::ExpiredByOp,
            Outcome::DeadlineReached {
                last_error,
                last_cause,
            } => Outcome::DeadlineReached {
                last_error,
                last_cause,
            },
            Outcome::Cancelled => Outcome::Cancelled,
            Outcome::Rejected(e) => Outcome::Rejected(e),
            Outcome::PossiblyLostInTransit { lost } => Outcome::PossiblyLostInTransit { lost },
        }
    }
}

impl<T: PartialEq> PartialEq for Outcome<T> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Outcome::Tokens(a), Outcome::Tokens(b)) => a == b,
            (Outcome::Denied { description: a }, Outcome::Denied { description: b }) => a == b,
            (Outcome::ExpiredByOp, Outcome::ExpiredByOp)
            | (Outcome::Cancelled, Outcome::Cancelled) => true,
            (
                Outcome::DeadlineReached { last_error: a, .. },
                Outcome::DeadlineReached { last_error: b, .. },
            ) => a == b,
            (Outcome::Rejected(a), Outcome::Rejected(b)) => a == b,
            (
                Outcome::PossiblyLostInTransit { lost: a },
                Outcome::PossiblyLostInTransit { lost: b },
            ) => a == b,
            _ => false,
        }
    }
}

/// The longest pause between two validation attempts of held tokens: the
/// user is waiting for them, and an attempt costs the OP at most one JWK Set
/// fetch.
pub(super) const MAX_HELD_RETRY: Duration = Duration::from_secs(60);

/// The result of one Token Request, as the driver classified it.
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::UnixTime;
/// use oidc_dtr::error::{ErrorCode, OAuthError};
/// use oidc_dtr::poll::{Action, Event, PollConfig, PollMachine, PollResult};
/// use oidc_dtr::random::SystemRandom;
///
/// let t = UnixTime::from_secs;
/// let mut m = PollMachine::with_start(t(0), None, Duration::from_secs(5), PollConfig::default());
/// assert_eq!(m.handle::<()>(Event::Timer, t(5), &SystemRandom).action, Action::SendPoll);
/// // The driver classified the answer: `authorization_pending`.
/// let pending = PollResult::<()>::OAuth(OAuthError::new(ErrorCode::AuthorizationPending));
/// let step = m.handle(Event::Response(pending), t(6), &SystemRandom);
/// assert_eq!(step.action, Action::SleepUntil(t(11))); // 5 s after the answer
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PollResult<T = crate::proto::token::TokenSet> {
    /// Tokens (already validated).
    Tokens(T),
    /// An OAuth error answer.
    OAuth(OAuthError),
    /// A failure that may go away (connection, timeout, 429, 5xx, a body
    /// that is not an OAuth error).
    Transient {
        /// What happened (no secrets).
        message: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<RetryAfter>,
        /// The error `message` was made from, if any: kept (in memory) as
        /// the cause of a [`Outcome::DeadlineReached`] it leads to.
        cause: Option<SharedError>,
    },
    /// The request could not be made, and nothing reached the OP (a
    /// [`Signer`](crate::jose::Signer) outside the process could not sign
    /// the client assertion for now): like [`Transient`](Self::Transient),
    /// polled again after a backoff, but the OP's state is known to be
    /// unchanged.
    NotSent {
        /// What happened (no secrets).
        message: String,
        /// The error `message` was made from, if any.
        cause: Option<SharedError>,
    },
    /// A failure that will not go away.
    Permanent(PollFailure),
    /// Tokens the OP issued whose ID token could not be validated yet (the
    /// JWK Set was unreachable): the machine keeps them and asks for their
    /// validation again later, past the deadline if need be (the OP has
    /// redeemed the id; these tokens are the only ones).
    Held {
        /// The token response, as received.
        tokens: HeldTokens,
        /// Why they could not be validated (no secrets).
        reason: String,
    },
}
