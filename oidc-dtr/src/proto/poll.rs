//! The sans-IO poll state machine for one deferred authentication.
//!
//! [`PollMachine`] decides *when* to send a Token Request and *what* each
//! answer means. It does no IO and reads no clock: every call takes `now`,
//! and randomness (for backoff jitter) is injected. Its state serialises, so
//! a process can stop and resume exactly where it was.
//!
//! The rules it follows (the floor counted from the previous answer's
//! arrival, `slow_down`, `Retry-After`, backoff on top of the floor, the
//! final poll, the absolute deadline, terminal and lost answers, single
//! flight, wake-ups, exactly one outcome) are documented for users in
//! [the polling guide](crate::guide::polling): change both together.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{
    Error, ErrorCode, HttpError, OAuthError, RetryAfter, SharedError, TransportErrorKind,
};
use crate::proto::exchange::DeferredAuthentication;
use crate::proto::ietf::{InteractionUri, interaction_uri_of};
use crate::proto::token::HeldTokens;
use crate::random::{RandomSource, random_u64_inclusive};
use crate::time::UnixTime;

/// How much a `slow_down` raises the floor (RFC 8628 §3.5, draft §Token
/// Request errors).
pub(crate) const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// Tuning of the poll schedule, shared by every authentication of a client
/// (set with [`DtrClientBuilder::poll_config`](crate::DtrClientBuilder::poll_config))
/// or given to each [`PollMachine`] driven directly.
///
/// The cadence while pings are expected is not here: it depends on whether
/// the client has a notification endpoint, so it is set with
/// [`DtrClientBuilder::notified_poll_cadence`](crate::DtrClientBuilder::notified_poll_cadence)
/// (or, for a machine driven directly, [`PollMachine::notified_cadence`]).
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::PollConfig;
///
/// let config = PollConfig::default()
///     .backoff_base(Duration::from_secs(1))
///     .backoff_cap(Duration::from_secs(120))
///     .max_lifetime(Duration::from_secs(24 * 3600));
/// assert_ne!(config, PollConfig::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PollConfig {
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) final_poll_margin: Duration,
    pub(crate) max_lifetime: Duration,
    /// Set from the client builder's `notified_poll_cadence` (or
    /// `PollMachine::notified_cadence`), never by an application directly.
    pub(crate) notified_cadence: Option<Duration>,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(300),
            final_poll_margin: Duration::from_secs(2),
            max_lifetime: Duration::from_secs(30 * 24 * 3600),
            notified_cadence: None,
        }
    }
}

impl PollConfig {
    /// The first backoff window after a transient failure; it doubles with
    /// each consecutive failure up to the [cap](Self::backoff_cap).
    /// Default: 2 s.
    #[must_use]
    pub fn backoff_base(mut self, d: Duration) -> Self {
        self.backoff_base = d;
        self
    }
    /// The largest backoff window. Default: 5 min.
    #[must_use]
    pub fn backoff_cap(mut self, d: Duration) -> Self {
        self.backoff_cap = d;
        self
    }
    /// How long before the deadline the final poll is sent. Default: 2 s.
    #[must_use]
    pub fn final_poll_margin(mut self, d: Duration) -> Self {
        self.final_poll_margin = d;
        self
    }
    /// The deadline when the OP sends no `expires_in` (the OIDC draft sets
    /// no default), and the cap of a longer one. Default: 30 days.
    #[must_use]
    pub fn max_lifetime(mut self, d: Duration) -> Self {
        self.max_lifetime = d;
        self
    }
    /// This config with the cadence while pings are expected (for the
    /// client builder and the machine).
    pub(crate) fn with_notified_cadence(mut self, d: Option<Duration>) -> Self {
        self.notified_cadence = d;
        self
    }
}

/// Why an authentication ended without tokens although the OP did not say
/// no: the answer or failure that made further polling pointless or wrong.
///
/// # Causes
///
/// `Transport`, `TokensRefused` and `Other` keep their cause's text (what is
/// persisted with the outcome) and, in the process that classified the
/// failure, the cause itself ([`cause`](Self::cause): the typed error, e.g.
/// an [`HttpError`](crate::HttpError) to downcast). `Display` prints the
/// text, which is the cause's own message, so [`source`](std::error::Error::source)
/// continues the chain *below* the cause (for a transport failure: the HTTP
/// client's error, then the `std::io::Error`). After a restart (an outcome
/// read back from a store) only the text remains: `cause()` and `source()`
/// are `None`. Two failures compare equal when their text is equal, whether
/// or not a cause is attached.
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
    /// e.g. to [`HttpError`](crate::HttpError)). An outcome read back from
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
const MAX_HELD_RETRY: Duration = Duration::from_secs(60);

/// The result of one Token Request, as the driver classified it.
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

impl<T> PollResult<T> {
    /// Classifies an error from the token request.
    pub(crate) fn from_error(e: Error) -> Self {
        match e {
            Error::OAuth(o) => PollResult::OAuth(*o),
            Error::Http(h) => {
                if h.is_transient() {
                    PollResult::Transient {
                        retry_after: h.retry_after(),
                        message: h.to_string(),
                        cause: Some(SharedError::new(h)),
                    }
                } else {
                    let kind = match &h {
                        HttpError::Transport { kind, .. } => *kind,
                        _ => TransportErrorKind::Other,
                    };
                    PollResult::Permanent(PollFailure::Transport {
                        kind,
                        message: h.to_string(),
                        cause: Some(SharedError::new(h)),
                    })
                }
            }
            // A 2xx whose body is not a token response (a captive portal, a
            // proxy page): the OP may not have seen the request, so retry.
            Error::Response(r) => PollResult::Transient {
                message: r.to_string(),
                retry_after: None,
                cause: Some(SharedError::new(r)),
            },
            Error::Validation(v) => PollResult::Permanent(PollFailure::InvalidTokens(v)),
            other => PollResult::Permanent(PollFailure::Other {
                message: other.to_string(),
                cause: Some(SharedError::new(other)),
            }),
        }
    }
}

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
    fn new(action: Action<T>) -> Self {
        Step {
            action,
            progress: None,
            interaction: None,
        }
    }
}

/// What an answer did: the authentication goes on (with a new progress text
/// or interaction to surface, maybe), or it ended.
enum Applied<T> {
    Continue(Option<String>, Option<InteractionChange>),
    End(Outcome<T>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    Waiting,
    InFlight,
    Finished,
}

/// Everything a [`PollMachine`] knows, as plain data: what a store writes
/// down (through its own versioned record types, so that the machine's
/// fields can change without changing what is on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PollSnapshot {
    pub(crate) deadline: UnixTime,
    pub(crate) deadline_from_op: bool,
    pub(crate) floor_secs: u64,
    pub(crate) last_request: UnixTime,
    pub(crate) not_before: UnixTime,
    pub(crate) backoff_step: u32,
    pub(crate) next_poll: UnixTime,
    pub(crate) next_is_final: bool,
    pub(crate) final_poll_sent: bool,
    pub(crate) dpop_retry_used: bool,
    pub(crate) woken: bool,
    pub(crate) wake_unserved: bool,
    pub(crate) fate_unknown: bool,
    pub(crate) cancel_requested: bool,
    /// 0 waiting, 1 a request in flight, 2 finished.
    pub(crate) phase: u8,
    pub(crate) polls: u32,
    pub(crate) slow_downs: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) last_progress: Option<String>,
    pub(crate) interaction_uri: Option<InteractionUri>,
    pub(crate) config: PollConfig,
    /// Tokens in hand awaiting validation.
    pub(crate) held: Option<HeldTokens>,
}

/// A [`PollConfig`] shared by the machines that use the same one (a
/// client's machines all do): a machine holds a pointer, not 80 bytes.
#[derive(Clone)]
struct SharedConfig(std::sync::Arc<PollConfig>);

impl SharedConfig {
    /// The shared copy of `config`: the last one made if equal.
    fn new(config: PollConfig) -> Self {
        static LAST: std::sync::Mutex<Option<std::sync::Arc<PollConfig>>> =
            std::sync::Mutex::new(None);
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = last.as_ref().filter(|c| ***c == config) {
            return SharedConfig(shared.clone());
        }
        let shared = std::sync::Arc::new(config);
        *last = Some(shared.clone());
        SharedConfig(shared)
    }
}

impl std::ops::Deref for SharedConfig {
    type Target = PollConfig;
    fn deref(&self) -> &PollConfig {
        &self.0
    }
}

impl PartialEq for SharedConfig {
    fn eq(&self, other: &Self) -> bool {
        *self.0 == *other.0
    }
}

impl Eq for SharedConfig {}

impl std::fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for SharedConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PollConfig::deserialize(d).map(SharedConfig::new)
    }
}

/// A machine's rare texts, out of line (`None` while it has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Notes(Option<Box<NoteFields>>);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NoteFields {
    #[serde(default)]
    last_error: Option<String>,
    /// The error `last_error` was made from, in memory only.
    #[serde(skip)]
    last_cause: InMemory,
    #[serde(default)]
    last_progress: Option<String>,
    /// The `interaction_uri` the AS currently waits at (IETF
    /// `interaction_required`), if any.
    #[serde(default)]
    interaction_uri: Option<InteractionUri>,
}

impl Notes {
    fn new(error: Option<String>, cause: Option<SharedError>, progress: Option<String>) -> Self {
        if error.is_none() && cause.is_none() && progress.is_none() {
            return Notes(None);
        }
        Notes(Some(Box::new(NoteFields {
            last_error: error,
            last_cause: InMemory(cause),
            last_progress: progress,
            interaction_uri: None,
        })))
    }

    fn with_interaction_uri(mut self, uri: Option<InteractionUri>) -> Self {
        if uri.is_some() {
            self.fields().interaction_uri = uri;
        }
        self
    }

    fn interaction_uri(&self) -> Option<&InteractionUri> {
        self.0.as_ref()?.interaction_uri.as_ref()
    }

    fn set_interaction_uri(&mut self, uri: Option<InteractionUri>) {
        if uri.is_none() && self.0.is_none() {
            return;
        }
        let f = self.fields();
        f.interaction_uri = uri;
        if f.interaction_uri.is_none()
            && f.last_error.is_none()
            && f.last_cause.0.is_none()
            && f.last_progress.is_none()
        {
            // Back to the compact form (and equal to a machine read back).
            self.0 = None;
        }
    }

    fn error(&self) -> Option<&str> {
        self.0.as_ref()?.last_error.as_deref()
    }

    fn cause(&self) -> Option<SharedError> {
        self.0.as_ref()?.last_cause.0.clone()
    }

    fn progress(&self) -> Option<&str> {
        self.0.as_ref()?.last_progress.as_deref()
    }

    fn fields(&mut self) -> &mut NoteFields {
        self.0.get_or_insert_with(|| {
            Box::new(NoteFields {
                last_error: None,
                last_cause: InMemory::default(),
                last_progress: None,
                interaction_uri: None,
            })
        })
    }

    fn set_error(&mut self, message: String, cause: Option<SharedError>) {
        let f = self.fields();
        f.last_error = Some(message);
        f.last_cause = InMemory(cause);
    }

    fn set_progress(&mut self, progress: Option<String>) {
        self.fields().last_progress = progress;
    }
}

impl Serialize for Notes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let uri = self.interaction_uri();
        let mut st = s.serialize_struct("Notes", 2 + usize::from(uri.is_some()))?;
        st.serialize_field("last_error", &self.error())?;
        st.serialize_field("last_progress", &self.progress())?;
        if let Some(uri) = uri {
            st.serialize_field("interaction_uri", uri)?;
        }
        st.end()
    }
}

impl<'de> Deserialize<'de> for Notes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = NoteFields::deserialize(d)?;
        Ok(Notes::new(f.last_error, None, f.last_progress).with_interaction_uri(f.interaction_uri))
    }
}

/// A cause kept in memory beside its persisted text: never serialised,
/// and not part of the machine's equality (a machine read back from a store
/// equals the one written).
#[derive(Debug, Clone, Default)]
struct InMemory(Option<SharedError>);

impl PartialEq for InMemory {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for InMemory {}

/// The persisted state of one authentication's polling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollMachine {
    /// The absolute deadline.
    deadline: UnixTime,
    /// Whether the deadline came from the OP's `expires_in`.
    deadline_from_op: bool,
    /// The current floor, in seconds.
    floor_secs: u64,
    /// The floor's anchor: when the last answer arrived (the exchange's,
    /// then each poll's); while a poll is in flight, when it was sent.
    last_request: UnixTime,
    /// Not before this instant (Retry-After).
    not_before: UnixTime,
    /// Consecutive transient failures.
    backoff_step: u32,
    /// When the next poll is due.
    next_poll: UnixTime,
    /// Whether `next_poll` is the final poll before the deadline.
    next_is_final: bool,
    /// Whether the final poll was sent.
    final_poll_sent: bool,
    /// Whether the request in flight is the one `invalid_dpop_proof` retry.
    dpop_retry_used: bool,
    /// A wake-up arrived since the last request.
    woken: bool,
    /// A wake-up was followed by a poll that has not yet had a well-formed
    /// OAuth answer: failures retry at the floor, not the notified cadence.
    #[serde(default)]
    wake_unserved: bool,
    /// The last poll's fate is unknown (a transient failure after sending):
    /// the OP may have redeemed the id and its answer been lost.
    #[serde(default)]
    fate_unknown: bool,
    /// Cancellation was asked while a request was in flight.
    cancel_requested: bool,
    phase: Phase,
    /// Requests sent (not counting the exchange).
    polls: u32,
    /// `slow_down` answers received.
    slow_downs: u32,
    /// The last transient problem and the last progress text surfaced
    /// (serialised as `last_error` and `last_progress`), out of line: most
    /// machines have neither.
    #[serde(flatten)]
    notes: Notes,
    /// The schedule's tuning.
    config: SharedConfig,
    /// Tokens in hand whose validation could not finish yet: while set,
    /// each "poll" validates them again instead of asking the OP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    held: Option<Box<HeldTokens>>,
}

impl PollMachine {
    /// The machine for a freshly exchanged authentication: the deadline
    /// counts from when the exchange was sent
    /// ([`issued_at`](DeferredAuthentication::issued_at)), the first poll's
    /// floor from when its answer arrived
    /// ([`answered_at`](DeferredAuthentication::answered_at)).
    pub fn new(auth: &DeferredAuthentication, config: PollConfig) -> Self {
        Self::anchored(
            auth.issued_at(),
            auth.answered_at(),
            auth.expires_at(),
            auth.interval(),
            config,
        )
    }

    /// The machine for an authentication issued at `issued_at`, with the
    /// OP's deadline (if any) and interval, when the time its answer arrived
    /// is not known: both the deadline and the first poll's floor count from
    /// `issued_at`. Prefer [`anchored`](Self::anchored) when it is known.
    pub fn with_start(
        issued_at: UnixTime,
        expires_at: Option<UnixTime>,
        interval: Duration,
        config: PollConfig,
    ) -> Self {
        Self::anchored(issued_at, issued_at, expires_at, interval, config)
    }

    /// The machine for an authentication whose creating request (the
    /// exchange, or the IETF initial token request) was sent at `sent_at`
    /// and answered at `answered_at` (read from the clock after the answer
    /// arrived). The local maximum lifetime counts from `sent_at`, so the
    /// deadline is never later than the OP's; the first poll waits the
    /// floor from `answered_at`, because an OP may count the interval from
    /// its answer and a slow answer must not make the first poll early.
    /// An `answered_at` before `sent_at` is read as `sent_at`.
    pub fn anchored(
        sent_at: UnixTime,
        answered_at: UnixTime,
        expires_at: Option<UnixTime>,
        interval: Duration,
        config: PollConfig,
    ) -> Self {
        let issued_at = sent_at;
        let answered_at = answered_at.max(sent_at);
        // A huge `expires_in` is capped like a missing one: the local maximum
        // lifetime bounds every authentication.
        let cap = issued_at.saturating_add(config.max_lifetime);
        let (deadline, deadline_from_op) = match expires_at {
            Some(d) if d <= cap => (d, true),
            _ => (cap, false),
        };
        let mut m = PollMachine {
            deadline,
            deadline_from_op,
            floor_secs: interval.as_secs().max(1),
            last_request: answered_at,
            not_before: answered_at,
            backoff_step: 0,
            next_poll: answered_at,
            next_is_final: false,
            final_poll_sent: false,
            dpop_retry_used: false,
            woken: false,
            wake_unserved: false,
            fate_unknown: false,
            cancel_requested: false,
            phase: Phase::Waiting,
            polls: 0,
            slow_downs: 0,
            notes: Notes::default(),
            config: SharedConfig::new(config),
            held: None,
        };
        m.schedule(answered_at, 0);
        m
    }

    /// For a machine driven directly: the cadence while pings are expected
    /// (`None`, the default, polls at the floor). With pings, polling is a
    /// safety net: the regular cadence is then at least this long, and a
    /// wake-up ([`Event::Wake`]) brings the next poll back to the floor.
    /// Call it on a new machine, before its first step; the first poll is
    /// scheduled again. A [`DtrClient`](crate::DtrClient) sets it itself from
    /// [`DtrClientBuilder::notified_poll_cadence`](crate::DtrClientBuilder::notified_poll_cadence).
    #[must_use]
    pub fn notified_cadence(mut self, cadence: Option<Duration>) -> Self {
        if self.config.notified_cadence != cadence {
            let config = (*self.config).clone().with_notified_cadence(cadence);
            self.config = SharedConfig::new(config);
            if self.polls == 0 && matches!(self.phase, Phase::Waiting) && !self.woken {
                self.schedule(self.last_request, 0);
            }
        }
        self
    }

    /// The machine as plain data (for the stores' record types).
    pub(crate) fn to_snapshot(&self) -> PollSnapshot {
        PollSnapshot {
            deadline: self.deadline,
            deadline_from_op: self.deadline_from_op,
            floor_secs: self.floor_secs,
            last_request: self.last_request,
            not_before: self.not_before,
            backoff_step: self.backoff_step,
            next_poll: self.next_poll,
            next_is_final: self.next_is_final,
            final_poll_sent: self.final_poll_sent,
            dpop_retry_used: self.dpop_retry_used,
            woken: self.woken,
            wake_unserved: self.wake_unserved,
            fate_unknown: self.fate_unknown,
            cancel_requested: self.cancel_requested,
            phase: match self.phase {
                Phase::Waiting => 0,
                Phase::InFlight => 1,
                Phase::Finished => 2,
            },
            polls: self.polls,
            slow_downs: self.slow_downs,
            last_error: self.notes.error().map(str::to_owned),
            last_progress: self.notes.progress().map(str::to_owned),
            interaction_uri: self.notes.interaction_uri().cloned(),
            config: PollConfig::clone(&self.config),
            held: self.held.as_deref().cloned(),
        }
    }

    /// The machine back from plain data; `None` for an unknown phase.
    pub(crate) fn from_snapshot(s: PollSnapshot) -> Option<Self> {
        Some(PollMachine {
            deadline: s.deadline,
            deadline_from_op: s.deadline_from_op,
            floor_secs: s.floor_secs.max(1),
            last_request: s.last_request,
            not_before: s.not_before,
            backoff_step: s.backoff_step,
            next_poll: s.next_poll,
            next_is_final: s.next_is_final,
            final_poll_sent: s.final_poll_sent,
            dpop_retry_used: s.dpop_retry_used,
            woken: s.woken,
            wake_unserved: s.wake_unserved,
            fate_unknown: s.fate_unknown,
            cancel_requested: s.cancel_requested,
            phase: match s.phase {
                0 => Phase::Waiting,
                1 => Phase::InFlight,
                2 => Phase::Finished,
                _ => return None,
            },
            polls: s.polls,
            slow_downs: s.slow_downs,
            notes: Notes::new(s.last_error, None, s.last_progress)
                .with_interaction_uri(s.interaction_uri),
            config: SharedConfig::new(s.config),
            held: s.held.map(Box::new),
        })
    }

    /// The absolute deadline.
    pub fn deadline(&self) -> UnixTime {
        self.deadline
    }

    /// Whether the deadline is the OP's (`expires_in`) rather than the local
    /// maximum lifetime.
    pub fn deadline_from_op(&self) -> bool {
        self.deadline_from_op
    }

    /// The current floor (minimum time between requests).
    pub fn floor(&self) -> Duration {
        Duration::from_secs(self.floor_secs)
    }

    /// The instant the floor counts from: when the last answer arrived (the
    /// exchange's, at first), or when the last request was sent, while it
    /// is in flight.
    pub fn last_request(&self) -> UnixTime {
        self.last_request
    }

    /// When the next poll is due (meaningless once finished or in flight).
    pub fn next_poll(&self) -> UnixTime {
        self.next_poll
    }

    /// Consecutive transient failures.
    pub fn backoff_step(&self) -> u32 {
        self.backoff_step
    }

    /// Requests sent so far.
    pub fn polls(&self) -> u32 {
        self.polls
    }

    /// `slow_down` answers received so far.
    pub fn slow_downs(&self) -> u32 {
        self.slow_downs
    }

    /// Whether a request is in flight.
    pub fn in_flight(&self) -> bool {
        self.phase == Phase::InFlight
    }

    /// Whether an outcome was delivered.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// The `interaction_uri` the AS currently waits at (IETF
    /// `interaction_required`): `None` when it waits for no interaction.
    pub fn interaction_uri(&self) -> Option<&InteractionUri> {
        self.notes.interaction_uri()
    }

    /// Starts with the interaction of the deferred response (IETF
    /// `interaction_required` on the initial token request).
    /// The last transient problem noted (no secrets), if any.
    pub(crate) fn last_error(&self) -> Option<&str> {
        self.notes.error()
    }

    /// Tokens in hand awaiting validation (their JWK Set was unreachable),
    /// if any: the driver then validates them instead of polling.
    pub fn held_tokens(&self) -> Option<&HeldTokens> {
        self.held.as_deref()
    }

    /// A machine that holds tokens from the start (tokens answered at once
    /// whose validation could not finish): the first validation attempt is
    /// one backoff step from `now`.
    pub(crate) fn holding(mut self, tokens: HeldTokens, reason: String, now: UnixTime) -> Self {
        self.hold(tokens, reason, now);
        self
    }

    /// Keeps `tokens` and schedules their next validation attempt with
    /// backoff (at least a second away).
    fn hold(&mut self, tokens: HeldTokens, reason: String, now: UnixTime) {
        self.held = Some(Box::new(tokens));
        self.notes.set_error(reason, None);
        self.backoff_step = self.backoff_step.saturating_add(1);
        let wait = self
            .backoff_window()
            .min(MAX_HELD_RETRY)
            .max(Duration::from_secs(1));
        self.next_poll = now.saturating_add(wait);
        self.next_is_final = false;
    }

    pub(crate) fn with_interaction(mut self, uri: Option<InteractionUri>) -> Self {
        self.notes.set_interaction_uri(uri);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &PollConfig {
        &self.config.0
    }

    /// Replaces the configuration (e.g. after a restart with new settings).
    /// The floor, deadline and history are kept.
    pub fn set_config(&mut self, config: PollConfig) {
        self.config = SharedConfig::new(config);
    }

    /// The instant the driver should next call [`handle`](Self::handle) with
    /// [`Event::Timer`]: `None` while a request is in flight or after the end.
    pub fn wake_at(&self) -> Option<UnixTime> {
        match self.phase {
            Phase::Waiting if self.held.is_some() => Some(self.next_poll),
            Phase::Waiting => Some(self.next_poll.min(self.deadline)),
            Phase::InFlight | Phase::Finished => None,
        }
    }

    /// After a restart: a request that was in flight when the process
    /// stopped has an unknown fate. It is treated as a transient failure
    /// ("interrupted") answered at `now`, so the next poll waits the floor
    /// from `now`: the OP may have answered the lost request long after it
    /// was sent, and counts the interval from that answer.
    pub fn recover_after_restart(&mut self, now: UnixTime, rng: &dyn RandomSource) {
        if self.held.is_some() {
            // Nothing was sent to the OP: validate the held tokens again.
            if self.phase == Phase::InFlight {
                self.phase = Phase::Waiting;
                self.next_poll = now;
            }
            return;
        }
        if self.phase == Phase::InFlight {
            self.phase = Phase::Waiting;
            self.last_request = self.last_request.max(now);
            self.on_transient(
                now,
                "interrupted by a restart while a request was in flight".into(),
                None,
                None,
                rng,
            );
        }
    }

    /// After a restart from a store whose latest poll states may be lost
    /// (relaxed durability): the request in flight, if any, counts as a
    /// transient failure, and the next poll waits a full floor from now, so
    /// that a poll made just before the crash is never followed too soon.
    /// The deadline does not move.
    pub fn resume_after_restart(&mut self, now: UnixTime, rng: &dyn RandomSource) {
        self.recover_after_restart(now, rng);
        if self.held.is_some() {
            // Held tokens are validated, not polled: no floor to respect.
            if self.phase == Phase::Waiting {
                self.next_poll = self.next_poll.min(now);
            }
            return;
        }
        if self.phase == Phase::Waiting {
            self.not_before = self.not_before.max(now.saturating_add(self.floor()));
            self.schedule(now, 0);
        }
    }

    /// For [`Store`](crate::Store) implementations shared by several
    /// instances: the record is being taken over from a lease that lapsed
    /// at `lapsed_at` (it expired and was never released: its holder died
    /// or lost the store). The holder may have sent a poll after the state
    /// read here was written, from the earliest instant a ping could bring
    /// that poll (a floor after the last answer) until its lease lapsed,
    /// and its answer (the tokens, maybe) may never have been read or
    /// stored. If that window is not empty, the poll's fate is unknown: a
    /// first answer of `invalid_grant` then ends the authentication as
    /// [`Outcome::PossiblyLostInTransit`], not as a refusal (any
    /// well-formed OAuth answer clears the mark).
    ///
    /// The comparison mixes the instances' clocks (the state) and the
    /// store's (`lapsed_at`); it holds while they agree to within the part
    /// of the lease a poll never uses (an instance sends no poll in the
    /// last third of its lease).
    pub fn taken_over_from_lapsed_lease(&mut self, lapsed_at: UnixTime) {
        if self.phase != Phase::Waiting || self.fate_unknown {
            return;
        }
        let earliest = self
            .last_request
            .saturating_add(self.floor())
            .max(self.not_before);
        if earliest < lapsed_at {
            self.fate_unknown = true;
            self.notes.set_error(
                "the previous owner's lease lapsed while one of its polls may have been in flight"
                    .into(),
                None,
            );
        }
    }

    /// Feeds one event; returns what to do next.
    pub fn handle<T>(&mut self, event: Event<T>, now: UnixTime, rng: &dyn RandomSource) -> Step<T> {
        if self.phase == Phase::Finished {
            return Step::new(Action::Finished);
        }
        let mut progress = None;
        let mut interaction = None;
        match event {
            Event::Timer => {}
            Event::Wake => self.on_wake(now),
            Event::Cancel => {
                if self.held.is_some() {
                    // The OP has already answered with tokens: as for an
                    // answer in flight, they win over the cancellation.
                    self.cancel_requested = true;
                    return Step::new(self.next_action(now));
                }
                if self.phase == Phase::InFlight {
                    // The answer may carry tokens the OP will never issue
                    // again: wait for it, then cancel unless it has them.
                    self.cancel_requested = true;
                    return Step::new(Action::AwaitResponse);
                }
                return self.finish(Outcome::Cancelled);
            }
            Event::Response(result) => {
                if self.phase != Phase::InFlight {
                    // An answer nobody waits for (a bug in the driver):
                    // ignore it rather than double-count.
                    return Step::new(self.next_action(now));
                }
                self.phase = Phase::Waiting;
                // The floor counts from the answer, not from the send: the
                // OP measures the gap between *arrivals*, and latency varies
                // (a request delayed in a queue followed by a prompt one
                // would otherwise arrive closer than the floor and earn a
                // slow_down). The OP has processed the request once it
                // answered, so the next one arrives at least a floor later.
                if self.held.is_some() {
                    return self.on_held_response(result, now);
                }
                self.last_request = self.last_request.max(now);
                match self.on_response(result, now, rng) {
                    Applied::Continue(p, i) => {
                        progress = p;
                        interaction = i;
                    }
                    // The answer to a poll sent before the cancellation
                    // reached the OP: `access_denied` or (IETF revocation, when the AS
                    // dropped the record) `invalid_grant` is the
                    // cancellation itself.
                    Applied::End(Outcome::Denied { .. })
                    | Applied::End(Outcome::PossiblyLostInTransit { .. })
                        if self.cancel_requested =>
                    {
                        return self.finish(Outcome::Cancelled);
                    }
                    Applied::End(Outcome::Rejected(PollFailure::OAuth(e)))
                        if self.cancel_requested && e.code == ErrorCode::InvalidGrant =>
                    {
                        return self.finish(Outcome::Cancelled);
                    }
                    Applied::End(outcome) => return self.finish(outcome),
                }
                if self.cancel_requested && self.held.is_none() {
                    return self.finish(Outcome::Cancelled);
                }
            }
        }
        Step {
            action: self.next_action(now),
            progress,
            interaction,
        }
    }

    fn finish<T>(&mut self, outcome: Outcome<T>) -> Step<T> {
        self.phase = Phase::Finished;
        Step::new(Action::Deliver(outcome))
    }

    fn next_action<T>(&mut self, now: UnixTime) -> Action<T> {
        match self.phase {
            Phase::Finished => return Action::Finished,
            Phase::InFlight => return Action::AwaitResponse,
            Phase::Waiting => {}
        }
        if self.held.is_some() {
            // Tokens in hand: validated again at `next_poll`, whatever the
            // deadline (it bounds the wait for the OP, which has answered).
            if now >= self.next_poll {
                self.phase = Phase::InFlight;
                return Action::SendPoll;
            }
            return Action::SleepUntil(self.next_poll);
        }
        if now >= self.deadline {
            self.phase = Phase::Finished;
            return Action::Deliver(Outcome::DeadlineReached {
                last_error: self.notes.error().map(str::to_owned),
                last_cause: self.notes.cause(),
            });
        }
        if now >= self.next_poll {
            self.phase = Phase::InFlight;
            self.last_request = now;
            self.polls = self.polls.saturating_add(1);
            if self.woken {
                self.wake_unserved = true;
            }
            self.woken = false;
            if self.next_is_final {
                self.final_poll_sent = true;
            }
            return Action::SendPoll;
        }
        Action::SleepUntil(self.next_poll.min(self.deadline))
    }

    fn on_wake(&mut self, now: UnixTime) {
        self.woken = true;
        if self.phase != Phase::Waiting {
            return;
        }
        let at_floor = self
            .last_request
            .saturating_add(self.floor())
            .max(self.not_before)
            .max(now);
        if at_floor < self.next_poll {
            self.next_poll = at_floor;
            self.next_is_final = false;
        }
    }

    /// The result of validating held tokens again: the tokens, a
    /// definitive refusal, or (anything else) still held, tried again
    /// with backoff.
    fn on_held_response<T>(&mut self, result: PollResult<T>, now: UnixTime) -> Step<T> {
        match result {
            PollResult::Tokens(t) => {
                self.held = None;
                self.finish(Outcome::Tokens(t))
            }
            PollResult::Permanent(f) => {
                self.held = None;
                self.finish(Outcome::Rejected(f))
            }
            other => {
                let (tokens, reason) = match other {
                    PollResult::Held { tokens, reason } => (tokens, reason),
                    PollResult::Transient { message, .. } => match self.held.take() {
                        Some(t) => (*t, message),
                        None => return Step::new(self.next_action(now)),
                    },
                    _ => match self.held.take() {
                        Some(t) => (*t, "the held tokens could not be validated".into()),
                        None => return Step::new(self.next_action(now)),
                    },
                };
                self.hold(tokens, reason, now);
                Step::new(self.next_action(now))
            }
        }
    }

    /// Applies an answer.
    fn on_response<T>(
        &mut self,
        result: PollResult<T>,
        now: UnixTime,
        rng: &dyn RandomSource,
    ) -> Applied<T> {
        let e = match result {
            PollResult::Tokens(t) => return Applied::End(Outcome::Tokens(t)),
            PollResult::Permanent(f) => return Applied::End(Outcome::Rejected(f)),
            PollResult::Held { tokens, reason } => {
                // The OP has answered with tokens (the id is redeemed);
                // they are kept until they can be validated.
                self.fate_unknown = false;
                self.backoff_step = 0;
                self.hold(tokens, reason, now);
                return Applied::Continue(None, None);
            }
            PollResult::Transient {
                message,
                retry_after,
                cause,
            } => {
                self.on_transient(now, message, cause, retry_after, rng);
                return Applied::Continue(None, None);
            }
            PollResult::OAuth(e) => e,
        };
        if let Some(ra) = e.retry_after {
            self.not_before = self.not_before.max(ra.not_before(now));
        }
        let mut progress = None;
        let mut interaction = None;
        match &e.code {
            // `interaction_required` reaches the machine only from a profile
            // that reads it as pending (the IETF draft's reading; see `Profile::classify`).
            ErrorCode::AuthorizationPending | ErrorCode::InteractionRequired => {
                if e.description.is_some() && e.description.as_deref() != self.notes.progress() {
                    self.notes.set_progress(e.description.clone());
                    progress = e.description.clone();
                }
                let uri = match e.code {
                    ErrorCode::InteractionRequired => interaction_uri_of(&e),
                    _ => None,
                };
                if uri.as_ref() != self.notes.interaction_uri() {
                    interaction = Some(match &uri {
                        Some(u) => InteractionChange::Required(u.clone()),
                        None => InteractionChange::Resolved,
                    });
                    self.notes.set_interaction_uri(uri);
                }
            }
            ErrorCode::SlowDown => {
                self.slow_downs = self.slow_downs.saturating_add(1);
                let raised = self.floor_secs.saturating_add(SLOW_DOWN_STEP.as_secs());
                self.floor_secs = raised.max(e.interval.unwrap_or(0)).max(self.floor_secs);
            }
            // The OP wants a DPoP nonce the driver could not supply in its
            // immediate retry: poll again at the floor.
            ErrorCode::UseDpopNonce => {}
            ErrorCode::ServerError | ErrorCode::TemporarilyUnavailable => {
                let message = e.to_string();
                let retry_after = e.retry_after;
                let cause = Some(SharedError::new(e));
                self.on_transient(now, message, cause, retry_after, rng);
                return Applied::Continue(None, None);
            }
            ErrorCode::ExpiredToken => return Applied::End(Outcome::ExpiredByOp),
            ErrorCode::AccessDenied => {
                return Applied::End(Outcome::Denied {
                    description: e.description,
                });
            }
            ErrorCode::InvalidDpopProof if !self.dpop_retry_used => {
                self.dpop_retry_used = true;
            }
            // The id was alive until a poll whose answer was lost: that
            // answer most likely carried the tokens.
            ErrorCode::InvalidGrant if self.fate_unknown => {
                return Applied::End(Outcome::PossiblyLostInTransit {
                    lost: self.notes.error().map(str::to_owned),
                });
            }
            _ => return Applied::End(Outcome::Rejected(PollFailure::OAuth(Box::new(e)))),
        }
        // A well-formed OAuth answer: the transport is healthy again, the
        // id is still alive (nothing was lost), and a ping was answered.
        self.backoff_step = 0;
        self.fate_unknown = false;
        self.wake_unserved = false;
        self.schedule(now, 0);
        Applied::Continue(progress, interaction)
    }

    fn on_transient(
        &mut self,
        now: UnixTime,
        message: String,
        cause: Option<SharedError>,
        retry_after: Option<RetryAfter>,
        rng: &dyn RandomSource,
    ) {
        if let Some(ra) = retry_after {
            self.not_before = self.not_before.max(ra.not_before(now));
        }
        self.notes.set_error(message, cause);
        self.fate_unknown = true;
        self.backoff_step = self.backoff_step.saturating_add(1);
        let window = self.backoff_window();
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        // Full jitter; if the random source fails, wait the whole window.
        let jitter_ms = random_u64_inclusive(rng, window_ms).unwrap_or(window_ms);
        self.schedule(now, jitter_ms);
    }

    /// The backoff window for the current step: base * 2^(step-1), capped.
    fn backoff_window(&self) -> Duration {
        if self.backoff_step == 0 {
            return Duration::ZERO;
        }
        let shift = (self.backoff_step - 1).min(40);
        let base_ms = u64::try_from(self.config.backoff_base.as_millis()).unwrap_or(u64::MAX);
        let ms = base_ms.saturating_mul(1u64 << shift);
        Duration::from_millis(ms).min(self.config.backoff_cap)
    }

    /// Computes `next_poll` after a request's answer (or at the start).
    fn schedule(&mut self, now: UnixTime, jitter_ms: u64) {
        let mut cadence = self.floor();
        if !self.woken
            && !self.wake_unserved
            && let Some(c) = self.config.notified_cadence
        {
            cadence = cadence.max(c);
        }
        let at_floor = self
            .last_request
            .saturating_add(self.floor())
            .max(self.not_before);
        let regular = self
            .last_request
            .saturating_add(cadence)
            .max(self.not_before)
            .saturating_add(Duration::from_millis(jitter_ms));
        let final_at = self.deadline.saturating_sub(self.config.final_poll_margin);
        // One last look before the deadline, never inside the floor.
        let final_poll = final_at.max(at_floor).max(now);
        if regular <= final_at {
            self.next_poll = regular;
            self.next_is_final = false;
        } else if !self.final_poll_sent && final_poll < self.deadline {
            self.next_poll = final_poll;
            self.next_is_final = true;
        } else {
            self.next_poll = self.deadline;
            self.next_is_final = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::RandomError;

    /// Jitter source returning a fixed byte pattern.
    struct FixedRandom(u8);
    impl RandomSource for FixedRandom {
        fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
            dest.fill(self.0);
            Ok(())
        }
    }

    const T0: UnixTime = UnixTime::from_millis(1_800_000_000_000);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn at(n: u64) -> UnixTime {
        T0.saturating_add(secs(n))
    }

    fn machine(expires_in: Option<u64>, interval: u64) -> PollMachine {
        PollMachine::with_start(
            T0,
            expires_in.map(at),
            secs(interval),
            PollConfig::default(),
        )
    }

    fn oauth(code: &str) -> PollResult<&'static str> {
        PollResult::OAuth(OAuthError::new(ErrorCode::from(code)))
    }

    fn step(m: &mut PollMachine, e: Event<&'static str>, now: UnixTime) -> Step<&'static str> {
        m.handle(e, now, &FixedRandom(0))
    }

    fn interaction(uri: Option<&str>) -> PollResult<&'static str> {
        let mut e = OAuthError::new(ErrorCode::InteractionRequired);
        e.interaction_uri = uri.map(str::to_owned);
        PollResult::OAuth(e)
    }

    #[test]
    fn held_tokens_outlive_the_deadline_and_are_validated_again() {
        let mut m = machine(Some(60), 5);
        assert_eq!(step(&mut m, Event::Timer, at(5)).action, Action::SendPoll);
        let held = HeldTokens::new(br#"{"access_token":"a"}"#, at(6)).unwrap();
        let again = || PollResult::Held {
            tokens: held.clone(),
            reason: "the JWK Set is unreachable".into(),
        };
        let s = step(&mut m, Event::Response(again()), at(6));
        assert!(
            matches!(s.action, Action::SleepUntil(t) if t > at(6)),
            "{s:?}"
        );
        assert_eq!(m.held_tokens(), Some(&held));
        // Far past the deadline: validated again and again, never given up,
        // never polled for (no request counted), at most a minute apart.
        let mut now = at(6);
        for _ in 0..10 {
            let next = m.wake_at().unwrap();
            assert!(next.saturating_duration_since(now) <= secs(60));
            now = next;
            assert_eq!(step(&mut m, Event::Timer, now).action, Action::SendPoll);
            let s = step(&mut m, Event::Response(again()), now);
            assert!(matches!(s.action, Action::SleepUntil(_)), "{s:?}");
        }
        assert!(now > at(120), "{now:?}");
        assert_eq!(m.polls(), 1);
        // A cancellation does not drop tokens the OP has issued.
        let s = step(&mut m, Event::Cancel, now);
        assert!(!matches!(s.action, Action::Deliver(_)), "{s:?}");
        // They survive a store round trip.
        let back = PollMachine::from_snapshot(m.to_snapshot()).unwrap();
        assert_eq!(back, m);
        // Validated at last: delivered.
        let now = m.wake_at().unwrap();
        assert_eq!(step(&mut m, Event::Timer, now).action, Action::SendPoll);
        let s = step(&mut m, Event::Response(PollResult::Tokens("t")), now);
        assert_eq!(s.action, Action::Deliver(Outcome::Tokens("t")));
        assert!(m.held_tokens().is_none());
    }

    #[test]
    fn held_tokens_found_invalid_end_the_authentication() {
        let mut m = machine(Some(60), 5);
        assert_eq!(step(&mut m, Event::Timer, at(5)).action, Action::SendPoll);
        let held = HeldTokens::new(b"{}", at(6)).unwrap();
        step(
            &mut m,
            Event::Response(PollResult::Held {
                tokens: held,
                reason: "down".into(),
            }),
            at(6),
        );
        let now = m.wake_at().unwrap();
        assert_eq!(step(&mut m, Event::Timer, now).action, Action::SendPoll);
        let s = step(
            &mut m,
            Event::Response(PollResult::Permanent(PollFailure::InvalidTokens(
                crate::error::ValidationError::Nonce,
            ))),
            now,
        );
        assert!(
            matches!(
                s.action,
                Action::Deliver(Outcome::Rejected(PollFailure::InvalidTokens(_)))
            ),
            "{s:?}"
        );
    }

    #[test]
    fn interaction_required_keeps_polling_and_flips_back() {
        let mut m = machine(Some(3600), 5);
        assert_eq!(step(&mut m, Event::Timer, at(5)).action, Action::SendPoll);
        let s = step(
            &mut m,
            Event::Response(interaction(Some("https://as.example/i/1"))),
            at(6),
        );
        assert_eq!(s.action, Action::SleepUntil(at(11)));
        let uri = InteractionUri::parse("https://as.example/i/1").unwrap();
        assert_eq!(
            s.interaction,
            Some(InteractionChange::Required(uri.clone()))
        );
        assert_eq!(m.interaction_uri(), Some(&uri));
        // The same URI again: no new change.
        assert_eq!(step(&mut m, Event::Timer, at(11)).action, Action::SendPoll);
        let s = step(
            &mut m,
            Event::Response(interaction(Some("https://as.example/i/1"))),
            at(12),
        );
        assert_eq!(s.interaction, None);
        // Back to authorization_pending: resolved.
        assert_eq!(step(&mut m, Event::Timer, at(17)).action, Action::SendPoll);
        let s = step(
            &mut m,
            Event::Response(oauth("authorization_pending")),
            at(18),
        );
        assert_eq!(s.interaction, Some(InteractionChange::Resolved));
        assert_eq!(m.interaction_uri(), None);
        // And forth again, to a new URI; an invalid one is not surfaced.
        assert_eq!(step(&mut m, Event::Timer, at(23)).action, Action::SendPoll);
        let s = step(
            &mut m,
            Event::Response(interaction(Some("https://as.example/i/2"))),
            at(24),
        );
        assert!(matches!(
            s.interaction,
            Some(InteractionChange::Required(_))
        ));
        assert_eq!(step(&mut m, Event::Timer, at(29)).action, Action::SendPoll);
        let s = step(
            &mut m,
            Event::Response(interaction(Some("http://as.example/i/3#x"))),
            at(30),
        );
        assert_eq!(s.interaction, Some(InteractionChange::Resolved));
        assert!(!m.is_finished());
        // It survives the snapshot round trip.
        let mut m2 = machine(Some(3600), 5).with_interaction(Some(uri.clone()));
        let back = PollMachine::from_snapshot(m2.to_snapshot()).unwrap();
        assert_eq!(back.interaction_uri(), Some(&uri));
        assert_eq!(step(&mut m2, Event::Timer, at(5)).action, Action::SendPoll);
    }

    #[test]
    fn first_poll_waits_one_interval_after_the_exchange() {
        let mut m = machine(Some(3600), 5);
        assert_eq!(
            step(&mut m, Event::Timer, T0).action,
            Action::SleepUntil(at(5))
        );
        assert_eq!(
            step(&mut m, Event::Timer, at(4)).action,
            Action::SleepUntil(at(5))
        );
        assert_eq!(step(&mut m, Event::Timer, at(5)).action, Action::SendPoll);
        assert!(m.in_flight());
        // Single flight: timers and wakes while in flight do nothing.
        assert_eq!(
            step(&mut m, Event::Timer, at(50)).action,
            Action::AwaitResponse
        );
        assert_eq!(
            step(&mut m, Event::Wake, at(50)).action,
            Action::AwaitResponse
        );
    }

    #[test]
    fn pending_polls_at_the_floor_and_surfaces_new_progress_once() {
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        let mut e = OAuthError::new(ErrorCode::AuthorizationPending);
        e.description = Some("queue position 3".into());
        // Sent at 5, answered at 6: the floor counts from the answer.
        let s = step(&mut m, Event::Response(PollResult::OAuth(e.clone())), at(6));
        assert_eq!(s.progress.as_deref(), Some("queue position 3"));
        assert_eq!(s.action, Action::SleepUntil(at(11)));
        step(&mut m, Event::Timer, at(11));
        let s = step(&mut m, Event::Response(PollResult::OAuth(e)), at(11));
        assert_eq!(s.progress, None, "same text is not surfaced twice");
    }

    #[test]
    fn slow_down_raises_the_floor_by_five_or_to_the_interval() {
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        step(&mut m, Event::Response(oauth("slow_down")), at(5));
        assert_eq!(m.floor(), secs(10));
        assert_eq!(m.next_poll(), at(15));
        step(&mut m, Event::Timer, at(15));
        let mut e = OAuthError::new(ErrorCode::SlowDown);
        e.interval = Some(42);
        step(&mut m, Event::Response(PollResult::OAuth(e)), at(15));
        assert_eq!(m.floor(), secs(42));
        step(&mut m, Event::Timer, at(57));
        let mut e = OAuthError::new(ErrorCode::SlowDown);
        e.interval = Some(1);
        step(&mut m, Event::Response(PollResult::OAuth(e)), at(57));
        assert_eq!(
            m.floor(),
            secs(47),
            "a smaller interval never lowers the floor"
        );
    }

    #[test]
    fn transient_backoff_sits_on_top_of_the_floor_and_resets() {
        let mut m = machine(Some(100_000), 30);
        let rng = crate::random::SystemRandom;
        let mut now = at(30);
        for step_no in 1..=12u32 {
            assert_eq!(
                m.handle::<()>(Event::Timer, now, &rng).action,
                Action::SendPoll
            );
            m.handle::<()>(
                Event::Response(PollResult::Transient {
                    message: "connection failed".into(),
                    retry_after: None,
                    cause: None,
                }),
                now,
                &rng,
            );
            assert_eq!(m.backoff_step(), step_no);
            let wait = m.next_poll().saturating_duration_since(now);
            let window = secs(2 * (1u64 << (step_no - 1))).min(secs(300));
            assert!(wait >= secs(30), "never below the floor: {wait:?}");
            assert!(
                wait <= secs(30) + window,
                "step {step_no}: {wait:?} > floor + {window:?}"
            );
            now = m.next_poll();
        }
        assert_eq!(
            m.floor(),
            secs(30),
            "transport errors never touch the floor"
        );
        // A well-formed OAuth answer resets the backoff.
        m.handle::<()>(Event::Timer, now, &rng);
        m.handle::<()>(
            Event::Response(PollResult::OAuth(OAuthError::new(
                ErrorCode::AuthorizationPending,
            ))),
            now,
            &rng,
        );
        assert_eq!(m.backoff_step(), 0);
        assert_eq!(m.next_poll(), now.saturating_add(secs(30)));
    }

    #[test]
    fn backoff_window_grows_then_caps() {
        let mut m = machine(Some(100_000), 30);
        let windows: Vec<u64> = (1..=10)
            .map(|n| {
                m.backoff_step = n;
                m.backoff_window().as_secs()
            })
            .collect();
        assert_eq!(windows, vec![2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        m.backoff_step = u32::MAX;
        assert_eq!(m.backoff_window(), secs(300));
    }

    #[test]
    fn retry_after_is_honoured() {
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        step(
            &mut m,
            Event::Response(PollResult::Transient {
                message: "503".into(),
                retry_after: Some(RetryAfter::Delay(secs(120))),
                cause: None,
            }),
            at(5),
        );
        assert!(m.next_poll() >= at(125));
        // Also on OAuth answers.
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        let mut e = OAuthError::new(ErrorCode::AuthorizationPending);
        e.retry_after = Some(RetryAfter::At(at(500)));
        step(&mut m, Event::Response(PollResult::OAuth(e)), at(6));
        assert_eq!(m.next_poll(), at(500));
    }

    #[test]
    fn terminal_answers() {
        type Check = fn(&Outcome<&'static str>) -> bool;
        let cases: Vec<(&str, Check)> = vec![
            ("access_denied", |o| matches!(o, Outcome::Denied { .. })),
            ("expired_token", |o| matches!(o, Outcome::ExpiredByOp)),
            ("invalid_grant", |o| {
                matches!(o, Outcome::Rejected(PollFailure::OAuth(_)))
            }),
            ("invalid_request", |o| {
                matches!(o, Outcome::Rejected(PollFailure::OAuth(_)))
            }),
            ("invalid_client", |o| {
                matches!(o, Outcome::Rejected(PollFailure::OAuth(_)))
            }),
            ("unauthorized_client", |o| {
                matches!(o, Outcome::Rejected(PollFailure::OAuth(_)))
            }),
            ("unsupported_grant_type", |o| {
                matches!(o, Outcome::Rejected(PollFailure::OAuth(_)))
            }),
            ("something_new", |o| {
                matches!(o, Outcome::Rejected(PollFailure::OAuth(_)))
            }),
        ];
        for (code, check) in cases {
            let mut m = machine(Some(3600), 5);
            step(&mut m, Event::Timer, at(5));
            match step(&mut m, Event::Response(oauth(code)), at(5)).action {
                Action::Deliver(o) => assert!(check(&o), "{code}: {o:?}"),
                other => panic!("{code}: {other:?}"),
            }
            // Nothing more, ever.
            for e in [
                Event::Timer,
                Event::Wake,
                Event::Cancel,
                Event::Response(oauth("authorization_pending")),
            ] {
                assert_eq!(step(&mut m, e, at(10_000)).action, Action::Finished);
            }
        }
    }

    #[test]
    fn tokens_are_delivered() {
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        assert_eq!(
            step(&mut m, Event::Response(PollResult::Tokens("tok")), at(6)).action,
            Action::Deliver(Outcome::Tokens("tok"))
        );
    }

    #[test]
    fn invalid_dpop_proof_allows_exactly_one_retry() {
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        assert_eq!(
            step(&mut m, Event::Response(oauth("invalid_dpop_proof")), at(5)).action,
            Action::SleepUntil(at(10))
        );
        step(&mut m, Event::Timer, at(10));
        assert!(matches!(
            step(&mut m, Event::Response(oauth("invalid_dpop_proof")), at(10)).action,
            Action::Deliver(Outcome::Rejected(_))
        ));
    }

    /// The polls sent (seconds after T0) when every poll is answered
    /// `authorization_pending` at once, until the deadline.
    fn polls_until_the_deadline(expires_in: u64, interval: u64, cadence: Option<u64>) -> Vec<u64> {
        let cfg = PollConfig::default().with_notified_cadence(cadence.map(secs));
        let mut m = PollMachine::with_start(T0, Some(at(expires_in)), secs(interval), cfg);
        let mut sent = Vec::new();
        let mut now = T0;
        loop {
            match step(&mut m, Event::Timer, now).action {
                Action::SleepUntil(t) => now = t,
                Action::SendPoll => {
                    sent.push(now.saturating_duration_since(T0).as_secs());
                    step(&mut m, Event::Response(oauth("authorization_pending")), now);
                }
                Action::Deliver(Outcome::DeadlineReached { .. }) => {
                    assert_eq!(now, at(expires_in));
                    return sent;
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Issue 11, item 8: the final poll is at `max(deadline − margin, last
    /// answer + floor)` when that is before the deadline: never inside the
    /// floor, never skipped when it fits.
    #[test]
    fn final_poll_respects_the_floor_and_is_made_whenever_it_fits() {
        // 1 s interval, 5 s lifetime: the final poll at 4 (it used to stop
        // polling at 3, 2 s before the deadline).
        assert_eq!(polls_until_the_deadline(5, 1, None), vec![1, 2, 3, 4]);
        // Interval 3, deadline 10, margin 2: the final poll at 9 (6 + 3),
        // not at 8, inside the floor.
        assert_eq!(polls_until_the_deadline(10, 3, None), vec![3, 6, 9]);
        // Interval 30, deadline 100: after 90 the floor reaches 120, past
        // the deadline: no final poll fits.
        assert_eq!(polls_until_the_deadline(100, 30, None), vec![30, 60, 90]);
        // A 60 s notified cadence would miss the deadline: a final poll at
        // deadline − margin, which the 5 s floor allows.
        assert_eq!(polls_until_the_deadline(100, 5, Some(60)), vec![60, 98]);
    }

    #[test]
    fn final_poll_just_before_the_deadline_then_deadline_reached() {
        // interval 30, deadline at 125: regular polls at 30, 60, 90, 120;
        // the floor then reaches 150, past the deadline, so no final poll
        // fits, and DeadlineReached comes at 125.
        let mut m = machine(Some(125), 30);
        let mut sent = Vec::new();
        let mut now = T0;
        loop {
            match step(&mut m, Event::Timer, now).action {
                Action::SleepUntil(t) => now = t,
                Action::SendPoll => {
                    sent.push(now.saturating_duration_since(T0).as_secs());
                    step(&mut m, Event::Response(oauth("authorization_pending")), now);
                }
                Action::Deliver(o) => {
                    assert!(matches!(
                        o,
                        Outcome::DeadlineReached {
                            last_error: None,
                            ..
                        }
                    ));
                    assert_eq!(now, at(125));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sent, vec![30, 60, 90, 120]);
    }

    #[test]
    fn deadline_reached_keeps_the_last_transient_error() {
        let mut m = machine(Some(20), 5);
        let mut now = at(5);
        loop {
            match step(&mut m, Event::Timer, now).action {
                Action::SleepUntil(t) => now = t,
                Action::SendPoll => {
                    step(
                        &mut m,
                        Event::Response(PollResult::Transient {
                            message: "connection failed (http://op/token)".into(),
                            retry_after: None,
                            cause: None,
                        }),
                        now,
                    );
                }
                Action::Deliver(Outcome::DeadlineReached { last_error, .. }) => {
                    assert_eq!(
                        last_error.as_deref(),
                        Some("connection failed (http://op/token)")
                    );
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn no_expires_in_uses_the_local_maximum_lifetime() {
        let m = machine(None, 5);
        assert!(!m.deadline_from_op());
        assert_eq!(
            m.deadline(),
            T0.saturating_add(PollConfig::default().max_lifetime)
        );
    }

    #[test]
    fn huge_expires_in_is_capped_like_a_missing_one() {
        let cap = T0.saturating_add(PollConfig::default().max_lifetime);
        for expires_in in [u64::MAX, 10 * 365 * 24 * 3600] {
            let m = machine(Some(expires_in), 5);
            assert!(!m.deadline_from_op(), "{expires_in}");
            assert_eq!(m.deadline(), cap, "{expires_in}");
        }
        let m = machine(Some(3600), 5);
        assert!(m.deadline_from_op());
        assert_eq!(m.deadline(), T0.saturating_add(Duration::from_secs(3600)));
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let mut m = PollMachine::with_start(
            T0,
            Some(UnixTime::MAX),
            Duration::from_secs(u64::MAX),
            PollConfig::default().max_lifetime(Duration::MAX),
        );
        // The floor never elapses: no final poll fits before the deadline.
        assert_eq!(
            step(&mut m, Event::Timer, T0).action,
            Action::SleepUntil(UnixTime::MAX)
        );
        let mut m = PollMachine::with_start(
            T0,
            None,
            Duration::MAX,
            PollConfig::default().max_lifetime(Duration::MAX),
        );
        assert!(matches!(
            step(&mut m, Event::Timer, T0).action,
            Action::SleepUntil(_)
        ));
    }

    #[test]
    fn wake_polls_at_once_after_the_floor_else_at_the_floor() {
        let cfg = PollConfig::default().with_notified_cadence(Some(secs(60)));
        let mut m = PollMachine::with_start(T0, Some(at(3600)), secs(5), cfg);
        assert_eq!(m.next_poll(), at(60), "with pings, polling is a safety net");
        // A ping before the floor: poll at the floor.
        assert_eq!(
            step(&mut m, Event::Wake, at(2)).action,
            Action::SleepUntil(at(5))
        );
        assert_eq!(step(&mut m, Event::Timer, at(5)).action, Action::SendPoll);
        // Still pending after the ping: back to the safety-net cadence.
        step(
            &mut m,
            Event::Response(oauth("authorization_pending")),
            at(5),
        );
        assert_eq!(m.next_poll(), at(65));
        // A ping long after the floor: poll at once.
        assert_eq!(step(&mut m, Event::Wake, at(30)).action, Action::SendPoll);
    }

    fn transient() -> PollResult<&'static str> {
        PollResult::Transient {
            message: "HTTP 502 from http://op/token".into(),
            retry_after: None,
            cause: None,
        }
    }

    /// Issue 11, item 9: after a ping, a failed poll is retried at the floor
    /// plus backoff, not at the notification cadence; a well-formed answer
    /// brings the cadence back.
    #[test]
    fn failed_poll_after_a_ping_retries_at_the_floor_plus_backoff() {
        let cfg = PollConfig::default().with_notified_cadence(Some(secs(60)));
        let mut m = PollMachine::with_start(T0, Some(at(3600)), secs(5), cfg);
        assert_eq!(step(&mut m, Event::Timer, at(60)).action, Action::SendPoll);
        step(
            &mut m,
            Event::Response(oauth("authorization_pending")),
            at(60),
        );
        assert_eq!(m.next_poll(), at(120));
        step(&mut m, Event::Wake, at(62));
        assert_eq!(step(&mut m, Event::Timer, at(65)).action, Action::SendPoll);
        // Backoff window 2 s, jitter 0 (FixedRandom(0)): floor + jitter.
        step(&mut m, Event::Response(transient()), at(65));
        assert!(
            m.next_poll() <= at(72),
            "retry at the floor plus backoff, not the 60 s cadence: {:?}",
            m.next_poll()
        );
        let t = m.next_poll();
        assert_eq!(step(&mut m, Event::Timer, t).action, Action::SendPoll);
        let t = m.last_request();
        step(&mut m, Event::Response(oauth("authorization_pending")), t);
        assert_eq!(m.next_poll(), t.saturating_add(secs(60)));
    }

    /// Issue 11, item 7: `invalid_grant` right after a poll whose answer was
    /// lost is its own outcome; after a well-formed answer it is a refusal.
    #[test]
    fn invalid_grant_after_a_lost_answer_is_possibly_lost_in_transit() {
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        step(&mut m, Event::Response(transient()), at(5));
        let t = m.next_poll();
        step(&mut m, Event::Timer, t);
        assert_eq!(
            step(&mut m, Event::Response(oauth("invalid_grant")), t).action,
            Action::Deliver(Outcome::PossiblyLostInTransit {
                lost: Some("HTTP 502 from http://op/token".into())
            })
        );
        assert_eq!(
            Outcome::<()>::PossiblyLostInTransit { lost: None }.kind(),
            "possibly_lost_in_transit"
        );
        // A lost answer, then a pending one (the id was alive), then
        // invalid_grant: an ordinary refusal.
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        step(&mut m, Event::Response(transient()), at(5));
        let t = m.next_poll();
        step(&mut m, Event::Timer, t);
        step(&mut m, Event::Response(oauth("authorization_pending")), t);
        let t = m.next_poll();
        step(&mut m, Event::Timer, t);
        assert!(matches!(
            step(&mut m, Event::Response(oauth("invalid_grant")), t).action,
            Action::Deliver(Outcome::Rejected(PollFailure::OAuth(_)))
        ));
        // The flag survives a restart (it is part of the stored state).
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        step(&mut m, Event::Response(transient()), at(5));
        let mut m: PollMachine = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        let t = m.next_poll();
        step(&mut m, Event::Timer, t);
        assert!(matches!(
            step(&mut m, Event::Response(oauth("invalid_grant")), t).action,
            Action::Deliver(Outcome::PossiblyLostInTransit { .. })
        ));
    }

    #[test]
    fn wake_during_flight_skips_the_stretched_cadence_next_time() {
        let cfg = PollConfig::default().with_notified_cadence(Some(secs(60)));
        let mut m = PollMachine::with_start(T0, Some(at(3600)), secs(5), cfg);
        step(&mut m, Event::Timer, at(60));
        step(&mut m, Event::Wake, at(61));
        step(
            &mut m,
            Event::Response(oauth("authorization_pending")),
            at(61),
        );
        // The floor (5 s) from the answer at 61, not the 60 s cadence.
        assert_eq!(m.next_poll(), at(66));
    }

    #[test]
    fn cancel_while_waiting_and_while_in_flight() {
        let mut m = machine(Some(3600), 5);
        assert_eq!(
            step(&mut m, Event::Cancel, at(1)).action,
            Action::Deliver(Outcome::Cancelled)
        );
        assert_eq!(step(&mut m, Event::Timer, at(10)).action, Action::Finished);

        // In flight: the answer decides whether tokens win.
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        assert_eq!(
            step(&mut m, Event::Cancel, at(6)).action,
            Action::AwaitResponse
        );
        assert_eq!(
            step(
                &mut m,
                Event::Response(oauth("authorization_pending")),
                at(7)
            )
            .action,
            Action::Deliver(Outcome::Cancelled)
        );
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        step(&mut m, Event::Cancel, at(6));
        assert_eq!(
            step(&mut m, Event::Response(PollResult::Tokens("tok")), at(7)).action,
            Action::Deliver(Outcome::Tokens("tok"))
        );
        // The cancellation overtook the poll at the OP: its `access_denied`
        // or (IETF, record dropped) `invalid_grant` is the cancellation.
        for code in ["access_denied", "invalid_grant"] {
            let mut m = machine(Some(3600), 5);
            step(&mut m, Event::Timer, at(5));
            step(&mut m, Event::Cancel, at(6));
            assert_eq!(
                step(&mut m, Event::Response(oauth(code)), at(7)).action,
                Action::Deliver(Outcome::Cancelled),
                "{code}"
            );
        }
        // Without a cancellation they keep their meaning.
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        assert!(matches!(
            step(&mut m, Event::Response(oauth("invalid_grant")), at(7)).action,
            Action::Deliver(Outcome::Rejected(_))
        ));
    }

    #[test]
    fn resumed_state_keeps_deadline_floor_and_schedule() {
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        step(&mut m, Event::Response(oauth("slow_down")), at(5));
        let json = serde_json::to_string(&m).unwrap();
        let mut back: PollMachine = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.deadline(), at(3600));
        assert_eq!(back.floor(), secs(10));
        // Resumed much later: polls at once, not a fresh interval later, and
        // the deadline did not move.
        assert_eq!(
            step(&mut back, Event::Timer, at(1000)).action,
            Action::SendPoll
        );
        assert_eq!(back.deadline(), at(3600));
    }

    /// Issue 22, finding 1: a 1 s interval, an exchange the OP answered
    /// 400 ms after it was sent: the first poll waits one interval from the
    /// answer (an OP may count from there), the deadline counts from the
    /// send.
    #[test]
    fn first_poll_waits_the_floor_from_the_exchange_answer() {
        let sent = T0;
        let answered = T0.saturating_add(Duration::from_millis(400));
        let auth = DeferredAuthentication::for_tests(
            crate::secret::DeferredAuthId::new("id"),
            sent,
            Some(60),
            1,
        )
        .with_answered_at(answered);
        assert_eq!(auth.issued_at(), sent);
        assert_eq!(auth.answered_at(), answered);
        let mut m = PollMachine::new(&auth, PollConfig::default());
        let first = answered.saturating_add(secs(1));
        assert_eq!(m.next_poll(), first);
        assert_eq!(m.last_request(), answered);
        assert_eq!(m.deadline(), at(60), "the deadline counts from the send");
        // Not a millisecond early.
        let just_before = UnixTime::from_millis(first.as_millis() - 1);
        assert_eq!(
            step(&mut m, Event::Timer, just_before).action,
            Action::SleepUntil(first)
        );
        assert_eq!(step(&mut m, Event::Timer, first).action, Action::SendPoll);
        // A wake-up before the floor does not bring it forward either.
        let mut m = PollMachine::new(&auth, PollConfig::default());
        assert_eq!(
            step(&mut m, Event::Wake, answered).action,
            Action::SleepUntil(first)
        );
        // The same through `anchored`; an answer "before" the send (a clock
        // step) is read as the send.
        let m = PollMachine::anchored(sent, answered, Some(at(60)), secs(1), PollConfig::default());
        assert_eq!(m.next_poll(), first);
        let m = PollMachine::anchored(answered, sent, Some(at(60)), secs(1), PollConfig::default());
        assert_eq!(m.next_poll(), first);
        // An authentication kept without the answer time: the send.
        let old = DeferredAuthentication::for_tests(
            crate::secret::DeferredAuthId::new("id"),
            sent,
            Some(60),
            1,
        );
        let json = serde_json::to_value(&old).unwrap();
        assert!(json.get("answered_at").is_none(), "{json}");
        let back: DeferredAuthentication =
            serde_json::from_str(&serde_json::to_string(&auth).unwrap()).unwrap();
        assert_eq!(back.answered_at(), answered);
        assert_eq!(old.answered_at(), sent);
        assert_eq!(
            PollMachine::new(&old, PollConfig::default()).next_poll(),
            at(1)
        );
    }

    /// Every later poll waits the floor from the previous answer's arrival,
    /// however long that answer took; a restart while a poll was in flight
    /// counts the floor from the restart (the lost answer may have come
    /// late).
    #[test]
    fn later_polls_wait_the_floor_from_the_previous_answer() {
        let mut m = machine(Some(3600), 5);
        assert_eq!(step(&mut m, Event::Timer, at(5)).action, Action::SendPoll);
        // The answer took 3.5 s.
        let answer = at(8).saturating_add(Duration::from_millis(500));
        step(
            &mut m,
            Event::Response(oauth("authorization_pending")),
            answer,
        );
        assert_eq!(m.next_poll(), answer.saturating_add(secs(5)));
        // Restart while the next poll is in flight, 4 s after it was sent.
        let t = m.next_poll();
        assert_eq!(step(&mut m, Event::Timer, t).action, Action::SendPoll);
        let mut back: PollMachine =
            serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        let restart = t.saturating_add(secs(4));
        back.recover_after_restart(restart, &FixedRandom(0));
        assert_eq!(back.last_request(), restart);
        assert!(back.next_poll() >= restart.saturating_add(secs(5)));
    }

    #[test]
    fn restart_while_in_flight_counts_as_transient() {
        let mut m = machine(Some(3600), 5);
        step(&mut m, Event::Timer, at(5));
        let mut back: PollMachine =
            serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        back.recover_after_restart(at(6), &FixedRandom(0));
        assert!(!back.in_flight());
        assert_eq!(back.backoff_step(), 1);
        assert!(back.next_poll() >= at(10));
    }

    #[test]
    fn classifies_errors() {
        use crate::error::HttpError;
        let transient: PollResult<()> = PollResult::from_error(
            HttpError::Status {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                endpoint: "x".into(),
                content_type: None,
                body_preview: String::new(),
                retry_after: Some(RetryAfter::Delay(secs(3))),
            }
            .into(),
        );
        assert!(matches!(
            transient,
            PollResult::Transient {
                retry_after: Some(_),
                ..
            }
        ));
        let permanent: PollResult<()> = PollResult::from_error(
            HttpError::Redirect {
                status: http::StatusCode::FOUND,
                endpoint: "x".into(),
            }
            .into(),
        );
        assert!(matches!(
            permanent,
            PollResult::Permanent(PollFailure::Transport { .. })
        ));
        let oauth: PollResult<()> =
            PollResult::from_error(OAuthError::new(ErrorCode::SlowDown).into());
        assert!(matches!(oauth, PollResult::OAuth(_)));
    }

    #[test]
    fn a_permanent_transport_failure_keeps_its_cause_chain_in_memory() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad certificate");
        let h = HttpError::Transport {
            kind: TransportErrorKind::Tls,
            endpoint: "https://op.example/token".into(),
            source: SharedError::new(io),
        };
        let text = h.to_string();
        let PollResult::<()>::Permanent(f) = PollResult::from_error(h.into()) else {
            panic!("a TLS failure is permanent");
        };
        // The typed cause, downcastable; the text printed once.
        let cause = f.cause().expect("kept in memory");
        assert!(cause.downcast_ref::<HttpError>().is_some());
        assert_eq!(
            f.to_string(),
            format!("{}: {text}", TransportErrorKind::Tls)
        );
        // source() goes on below the printed cause, down to the io::Error.
        let mut chain = f.source();
        let mut found = None;
        while let Some(e) = chain {
            assert!(!f.to_string().contains(&e.to_string()) || e.to_string().is_empty());
            let typed: &(dyn std::error::Error + 'static) = match e.downcast_ref::<SharedError>() {
                Some(shared) => shared.get(),
                None => e,
            };
            if let Some(io) = typed.downcast_ref::<std::io::Error>() {
                found = Some(io.kind());
            }
            chain = e.source();
        }
        assert_eq!(found, Some(std::io::ErrorKind::InvalidData));
        // Persisted: the text only; equal to the original.
        let json = serde_json::to_string(&f).unwrap();
        assert!(!json.contains("cause"), "{json}");
        let back: PollFailure = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.to_string(), f.to_string());
        assert!(back.cause().is_none() && back.source().is_none());
    }
}
