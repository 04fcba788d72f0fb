//! Errors, by what failed.
//!
//! Every fallible call returns the one [`Error`] enum (also
//! at the root). Its variants say *what failed and what the caller can do*;
//! each wraps a more precise type from this module:
//!
//! | variant | type | what failed |
//! |---|---|---|
//! | [`Error::Config`] | [`ConfigError`] | the client was configured wrongly (fix the code or the deployment) |
//! | [`Error::Discovery`] | [`DiscoveryError`] | the OP's metadata could not be fetched or does not fit |
//! | [`Error::Http`] | [`HttpError`] | the network exchange: transport ([`TransportErrorKind`]), redirects, caps, non-OAuth answers; [`HttpError::is_transient`] says whether to retry |
//! | [`Error::OAuth`] | [`OAuthError`] | the OP answered with an OAuth error; match on its [`ErrorCode`] |
//! | [`Error::Response`] | [`ResponseError`] | the OP's answer is malformed |
//! | [`Error::Validation`] | [`ValidationError`] | a token failed a check (which one is the variant) |
//! | [`Error::Callback`] | [`CallbackError`] | the redirect back from the OP is not acceptable (state, `iss`, codes) |
//! | [`Error::Store`] | [`StoreError`] | the store failed |
//!
//! plus variants for the lifecycle of one authentication (it is unknown,
//! still live ([`LiveAuthentication`]), was not cancelled at the OP
//! ([`NotCancelledReason`]), its tokens are held until the OP's keys can be
//! fetched). [`WaitError`] is what waiting for an outcome can end with.
//!
//! Errors that come from the network name the field or check that failed
//! and keep the underlying cause as their `source()` (shared across clones
//! by [`SharedError`]). None of them contains a secret (tokens, codes,
//! deferred ids, client secrets) or a success response body.
//!
//! ```
//! use oidc_dtr::Error;
//! use oidc_dtr::error::{ErrorCode, ValidationError};
//!
//! fn advice(err: &Error) -> &'static str {
//!     match err {
//!         Error::OAuth(e) if e.code == ErrorCode::InvalidClient => "check the client credentials",
//!         Error::Validation(ValidationError::Nonce) => "a replayed or foreign ID token",
//!         Error::Http(e) if e.is_transient() => "try again later",
//!         _ => "see the error's message",
//!     }
//! }
//! # let _ = advice;
//! ```

// Size note: Kept whole (~1290 lines): the crate's main error enums (`Error`,
// `ValidationError`, `HttpError`, `CallbackError`) and their shared text
// cleaning; the store and assurance errors live in `error/`.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::random::RandomError;
use crate::secret::Fingerprint;
use crate::time::UnixTime;

/// Everything that can go wrong in this crate.
///
/// ```
/// use oidc_dtr::DtrClient;
/// use oidc_dtr::Error;
/// use oidc_dtr::error::ConfigError;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A builder without a client id fails before any network traffic.
/// let err = DtrClient::builder().build().await.unwrap_err();
/// match &err {
///     Error::Config(ConfigError::Missing(what)) => assert_eq!(*what, "client_id"),
///     Error::Http(e) if e.is_transient() => println!("retry later: {e}"),
///     Error::OAuth(e) => println!("the OP said {}", e.code),
///     other => panic!("unexpected: {other}"),
/// }
/// assert!(!err.is_retryable());
/// # }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client was configured wrongly (a programming or deployment error).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The OP's metadata could not be obtained or does not fit.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The request did not produce a usable HTTP exchange (network, TLS,
    /// redirect, oversized or non-OAuth error response).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The OP answered with an OAuth error response (boxed: it is the
    /// largest variant).
    #[error(transparent)]
    OAuth(Box<OAuthError>),
    /// The pushed authorization request (RFC 9126) failed: the OP refused
    /// it, or its answer breaks RFC 9126 §2.2.
    #[error(transparent)]
    PushedAuthorization(#[from] ParError),
    /// The OP answered with a success status but a malformed body.
    #[error(transparent)]
    Response(#[from] ResponseError),
    /// The redirect back to the RP (the authentication response) is invalid.
    #[error(transparent)]
    Callback(#[from] CallbackError),
    /// The random number generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// A [`Signer`](crate::jose::Signer) (a key outside the process: a KMS,
    /// an HSM) could not sign a client assertion or a request object.
    /// Nothing was sent; a pending authorization or a deferred code is
    /// still usable, so the call can be retried. While an authentication is
    /// polled, a [retryable](SignerError::retryable) failure
    /// is retried with backoff instead.
    #[error(transparent)]
    Signer(#[from] SignerError),
    /// The poll engine could not answer (unknown authentication, or the
    /// engine stopped).
    #[error(transparent)]
    Poll(#[from] WaitError),
    /// A token (ID token or interim ID token) failed validation: the variant
    /// names the check.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The store of pending authentications failed (I/O, a corrupt or
    /// foreign file, a record of an unknown schema, another client's store).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Verified claims (identity assurance) that could not be parsed or did
    /// not pass a check, e.g. in a UserInfo response.
    #[error(transparent)]
    Assurance(#[from] AssuranceError),
    /// `exchange` failed because the interim ID token did not pass
    /// validation (the check is the `source`), after the OP had spent the
    /// code and created a `deferred_auth_id`. The authentication is not
    /// tracked (its identity cannot be trusted); `live_authentication` says
    /// whether the SDK cancelled it at the OP or it is still live there.
    #[error("the interim ID token was rejected; {live_authentication}")]
    InterimIdTokenRejected {
        /// The check the interim ID token failed.
        #[source]
        source: ValidationError,
        /// What became of the authentication the OP created.
        live_authentication: LiveAuthentication,
    },
    /// The OP answered with tokens at once (`exchange_code`, `redeem_code`,
    /// `device_token`), but their ID token could not be validated: the
    /// OP's JWK Set stayed unreachable through the quick retries (the
    /// `source`). The tokens are **not lost**: they are kept under `handle`
    /// (in the store, sealed, where one is configured, so a restart keeps
    /// them too) and the engine validates them once the keys can be
    /// fetched. Get them with [`DtrClient::wait`](crate::DtrClient::wait)
    /// on `handle` (or from [`subscribe`](crate::DtrClient::subscribe)):
    /// [`Outcome::Tokens`](crate::Outcome::Tokens), or
    /// [`Outcome::Rejected`](crate::Outcome::Rejected) if they turn out
    /// invalid. `handle` names the kept tokens only; it is never sent to
    /// the OP.
    #[error(
        "tokens received but not validated yet (the OP's keys are unreachable); they are kept, wait on the handle for them"
    )]
    TokensHeld {
        /// What to `wait` on (a secret like a `deferred_auth_id`; its
        /// `Debug` is a fingerprint).
        handle: crate::secret::DeferredId,
        /// Why the tokens could not be validated (retryable).
        #[source]
        source: ValidationError,
    },
    /// `exchange` succeeded at the OP, but the interim ID token could not
    /// be checked: the OP's JWK Set stayed unreachable through the retries
    /// (the `source`). The authentication is **stored and tracked** like
    /// any other: its outcome comes from [`DtrClient::wait`](crate::DtrClient::wait)
    /// on `id` (its `deferred_auth_id`), and the final ID token is
    /// validated in full. What it lacks is the interim claims
    /// ([`DeferredAuthentication::interim_claims`](crate::DeferredAuthentication::interim_claims)
    /// is `None`), so the final `sub` is not compared with the interim one.
    #[error(
        "the deferred authentication is tracked, but its interim ID token could not be checked yet (the OP's keys are unreachable)"
    )]
    InterimIdTokenUnverified {
        /// The authentication's `deferred_auth_id` (a secret; its `Debug`
        /// is a fingerprint): stored and tracked.
        id: crate::secret::DeferredId,
        /// Why the interim ID token could not be checked (retryable).
        #[source]
        source: ValidationError,
    },
}

/// What became of an authentication the OP created when `exchange` could
/// not take it on (see [`Error::InterimIdTokenRejected`]).
///
/// ```
/// use oidc_dtr::error::{LiveAuthentication, NotCancelledReason};
///
/// fn advice(live: &LiveAuthentication) -> &'static str {
///     match live {
///         LiveAuthentication::CancelledAtOp => "start a new authentication",
///         LiveAuthentication::NotCancelled(_) => "start a new one; the old stays open at the OP",
///         _ => "start a new authentication",
///     }
/// }
/// let live = LiveAuthentication::NotCancelled(NotCancelledReason::NoCancellationEndpoint);
/// assert!(live.is_live_at_op());
/// println!("{}", advice(&live));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LiveAuthentication {
    /// The SDK cancelled it at the OP's cancellation endpoint.
    #[error("the deferred authentication was cancelled at the OP")]
    CancelledAtOp,
    /// It is still live at the OP (until it expires there): the OP was not
    /// told. The authentication process is not trustworthy; start a new one.
    #[error("the deferred authentication is still live at the OP: {0}")]
    NotCancelled(NotCancelledReason),
}

impl LiveAuthentication {
    /// Whether the authentication is still live at the OP.
    pub fn is_live_at_op(&self) -> bool {
        matches!(self, LiveAuthentication::NotCancelled(_))
    }
}

/// Why an authentication the SDK gave up on was not cancelled at the OP.
///
/// ```
/// use oidc_dtr::error::NotCancelledReason;
///
/// fn describe(reason: &NotCancelledReason) -> String {
///     match reason {
///         NotCancelledReason::NoCancellationEndpoint => "configure a cancellation endpoint".into(),
///         NotCancelledReason::CancellationFailed(e) => format!("the OP refused: {e}"),
///         _ => reason.to_string(),
///     }
/// }
/// assert_eq!(
///     describe(&NotCancelledReason::NoCancellationEndpoint),
///     "configure a cancellation endpoint"
/// );
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NotCancelledReason {
    /// No cancellation endpoint is configured (see
    /// `DtrClientBuilder::cancellation`).
    #[error("no cancellation endpoint is configured")]
    NoCancellationEndpoint,
    /// The cancellation request failed (boxed: an [`Error`] itself).
    #[error("the cancellation request failed: {0}")]
    CancellationFailed(Box<Error>),
}

impl From<OAuthError> for Error {
    fn from(e: OAuthError) -> Self {
        Error::OAuth(Box::new(e))
    }
}

/// Constructors for the HTTP-status errors the protocol core finds in a
/// response. The core builds its errors through these, so it never names
/// [`HttpError`] (the transport layer's type) itself.
impl Error {
    /// A 3xx answer on a back channel: [`HttpError::Redirect`].
    pub(crate) fn redirect(status: StatusCode, endpoint: String) -> Self {
        HttpError::Redirect { status, endpoint }.into()
    }

    /// A pending OAuth code with an error status other than 400:
    /// [`HttpError::PendingWithErrorStatus`].
    pub(crate) fn pending_with_error_status(
        status: StatusCode,
        endpoint: String,
        code: ErrorCode,
        retry_after: Option<RetryAfter>,
    ) -> Self {
        HttpError::PendingWithErrorStatus {
            status,
            endpoint,
            code,
            retry_after,
        }
        .into()
    }

    /// An error status without an OAuth error body: [`HttpError::Status`].
    pub(crate) fn http_status(
        status: StatusCode,
        endpoint: String,
        content_type: Option<String>,
        body_preview: String,
        retry_after: Option<RetryAfter>,
    ) -> Self {
        HttpError::Status {
            status,
            endpoint,
            content_type,
            body_preview,
            retry_after,
        }
        .into()
    }
}

impl Error {
    /// The validation check that failed, if that is what this is (for
    /// [`Error::InterimIdTokenRejected`], the interim ID token's).
    pub fn validation(&self) -> Option<&ValidationError> {
        match self {
            Error::Validation(e)
            | Error::InterimIdTokenRejected { source: e, .. }
            | Error::TokensHeld { source: e, .. }
            | Error::InterimIdTokenUnverified { source: e, .. } => Some(e),
            _ => None,
        }
    }

    /// The OAuth error the OP answered with, if that is what this is (a
    /// refused pushed authorization request included).
    pub fn oauth(&self) -> Option<&OAuthError> {
        match self {
            Error::OAuth(e) => Some(e),
            Error::PushedAuthorization(ParError::Refused { error, .. }) => Some(error),
            _ => None,
        }
    }

    /// Whether trying the same request again later may succeed: network
    /// failures, timeouts, 429 and 5xx answers. Configuration, TLS, DNS and
    /// protocol errors are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Http(e) => e.is_transient(),
            Error::Signer(e) => e.retryable,
            Error::OAuth(e) => matches!(
                e.code,
                ErrorCode::ServerError | ErrorCode::TemporarilyUnavailable
            ),
            Error::PushedAuthorization(ParError::Refused { error, .. }) => matches!(
                error.code,
                ErrorCode::ServerError | ErrorCode::TemporarilyUnavailable
            ),
            _ => false,
        }
    }
}

/// A configuration mistake, found when the client is built or a request is
/// prepared.
///
/// ```
/// use oidc_dtr::{DtrClient, Error};
/// use oidc_dtr::error::ConfigError;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = DtrClient::builder()
///     .client_id("my-rp")
///     .redirect_uri("https://rp.example/callback")
///     .build()
///     .await
///     .unwrap_err();
/// match err {
///     Error::Config(ConfigError::Missing(what)) => assert_eq!(what, "issuer"),
///     Error::Config(ConfigError::InvalidUrl { .. } | ConfigError::InsecureUrl { .. }) => {
///         panic!("a URL is wrong")
///     }
///     Error::Config(other) => panic!("misconfigured: {other}"),
///     other => panic!("not a configuration error: {other}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting was not given.
    #[error("`{0}` is required")]
    Missing(&'static str),
    /// A setting is not a valid URL.
    #[error("`{field}` is not a valid URL: {reason}")]
    InvalidUrl {
        /// Which setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A URL uses plain `http://` to a host that is not loopback.
    #[error("`{field}` must use https (plain http is allowed only for loopback hosts)")]
    InsecureUrl {
        /// Which setting or metadata field.
        field: &'static str,
    },
    /// An extra authorization parameter tried to override one the SDK sets.
    #[error("the parameter `{0}` is set by the SDK and cannot be overridden")]
    ReservedParameter(String),
    /// A setting has a value the SDK cannot use.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// Which setting.
        field: &'static str,
        /// Why it cannot be used.
        reason: String,
    },
    /// An authentication was started with a client certificate (mutual
    /// TLS, RFC 8705) that is no longer configured, neither as the current
    /// [`HttpConfig::client_identity`](crate::client::HttpConfig::client_identity)
    /// nor among the previous ones. Its tokens would be bound to that
    /// certificate (RFC 8705 §3), so it is never polled with another.
    #[error(
        "the client certificate this authentication started with (x5t#S256 {thumbprint}) is no longer configured"
    )]
    ClientIdentityNotConfigured {
        /// The certificate's `x5t#S256` (not a secret).
        thumbprint: String,
    },
    /// An authentication (or a token set) is bound to a DPoP key held by an
    /// external signer that is no longer configured, neither as the current
    /// [`DpopConfig::signer`](crate::client::DpopConfig::signer) nor among
    /// the [previous ones](crate::client::DpopConfig::previous_signer). Its
    /// code and tokens are bound to that key (RFC 9449), so no proof is made
    /// with another and nothing is sent. A pending authentication in this
    /// state is not ended: it is retried with backoff (nothing reaches the
    /// OP) and resumes once a client is configured with the signer again;
    /// it ends only at its deadline.
    #[error(
        "the DPoP key this authentication is bound to (jkt {thumbprint}) is not configured: add its signer to DpopConfig::previous_signer"
    )]
    DpopKeyNotConfigured {
        /// The key's RFC 7638 thumbprint (`jkt`; not a secret).
        thumbprint: String,
    },
    /// The HTTP client could not be built (the cause is the `source`).
    #[error("invalid configuration: could not build the HTTP client")]
    HttpClient(#[source] SharedError),
    /// The `claims` request (identity assurance) breaks a rule of the
    /// specification or asks for something the OP does not support
    /// ([`AssuranceError::Unsupported`] names it).
    #[error("`claims`: {0}")]
    ClaimsRequest(AssuranceError),
    /// A setting the FAPI 2.0 Security Profile forbids, refused at build
    /// time by [`fapi2`](crate::DtrClientBuilder::fapi2).
    #[error("FAPI 2.0 ({section}) forbids {forbidden}; {fix}")]
    Fapi2 {
        /// The section of the FAPI 2.0 Security Profile.
        section: &'static str,
        /// What the configuration uses that the profile forbids.
        forbidden: String,
        /// What to change.
        fix: String,
    },
}

/// A pushed authorization request (RFC 9126) that did not give a
/// `request_uri`. Transport failures are [`Error::Http`], as for every other
/// endpoint. Nothing was sent to the browser: push again (each push gets a
/// fresh `request_uri`; none is ever reused).
///
/// ```
/// use oidc_dtr::Error;
/// use oidc_dtr::error::ParError;
///
/// fn advice(err: &Error) -> &'static str {
///     match err {
///         Error::PushedAuthorization(ParError::NoEndpoint) => "the OP has no PAR endpoint",
///         Error::PushedAuthorization(ParError::Refused { .. }) => "the OP refused the request",
///         Error::PushedAuthorization(_) => "the OP's PAR answer was unusable",
///         _ => "not a PAR error",
///     }
/// }
/// assert_eq!(advice(&ParError::NoEndpoint.into()), "the OP has no PAR endpoint");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParError {
    /// The OP publishes no `pushed_authorization_request_endpoint`
    /// (RFC 9126 §5) but pushing is required (by the builder's
    /// [`pushed_authorization_requests`](crate::DtrClientBuilder::pushed_authorization_requests),
    /// FAPI 2.0, or a call to
    /// [`push`](crate::client::AuthorizationRequestBuilder::push)).
    #[error("the OP publishes no pushed_authorization_request_endpoint")]
    NoEndpoint,
    /// The PAR endpoint answered with an OAuth error (RFC 9126 §2.3), e.g.
    /// `invalid_request_object` for a refused request object.
    #[error("the pushed authorization request was refused at {endpoint}: {error}")]
    Refused {
        /// The endpoint (scheme, host and path).
        endpoint: String,
        /// The OP's error.
        error: Box<OAuthError>,
    },
    /// A success status other than `201 Created` (RFC 9126 §2.2).
    #[error(
        "the pushed authorization response from {endpoint} has status {status}, not 201 Created"
    )]
    UnexpectedStatus {
        /// The endpoint (scheme, host and path).
        endpoint: String,
        /// The status received.
        status: StatusCode,
    },
    /// A `201` answer that is not a valid pushed authorization response:
    /// not a JSON object, no string `request_uri`, no positive `expires_in`.
    #[error("the pushed authorization response from {endpoint} is malformed: {reason}")]
    Malformed {
        /// The endpoint (scheme, host and path).
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
}

/// A cause shared between clones of an error (errors are `Clone`, so that a
/// failure can be handed to every waiter). Displays as its cause; two are
/// equal when they share the same cause.
///
/// ```
/// use std::error::Error as _;
/// use oidc_dtr::error::SharedError;
///
/// let shared = SharedError::new(std::io::Error::other("connection reset"));
/// let copy = shared.clone(); // both point at the same cause
/// assert_eq!(copy.to_string(), "connection reset");
/// assert!(shared.get().source().is_none());
/// ```
#[derive(Clone)]
pub struct SharedError(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl SharedError {
    /// Wraps a cause.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        SharedError(std::sync::Arc::new(e))
    }

    /// The shared cause itself, to downcast it: in a `source()` chain a
    /// `SharedError` stands for its cause (same text, same `source()`), so
    /// `e.downcast_ref::<SharedError>().map(SharedError::get)` reaches the
    /// typed cause (e.g. a `std::io::Error`).
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for SharedError {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedError {}

/// The OP's metadata could not be obtained or does not fit this client.
///
/// ```
/// use oidc_dtr::Error;
/// use oidc_dtr::error::DiscoveryError;
///
/// fn advice(err: &Error) -> &'static str {
///     match err {
///         Error::Discovery(DiscoveryError::IssuerMismatch { .. }) => "check the issuer URL",
///         Error::Discovery(DiscoveryError::DtrNotAdvertised { .. }) => "the OP does not offer DTR",
///         Error::Discovery(DiscoveryError::Unavailable { .. }) => "try again later",
///         Error::Discovery(_) => "the OP's metadata is unusable",
///         _ => "not a discovery error",
///     }
/// }
/// # let _ = advice;
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The metadata document names another issuer than the configured one.
    /// (A mix-up defence: the comparison is exact, character for character.)
    #[error("the metadata document is for issuer `{found}`, not the configured `{expected}`")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The `issuer` in the document.
        found: String,
    },
    /// The OP does not advertise Deferred Token Response support.
    #[error("the OP does not advertise Deferred Token Response support: {}", missing.join("; "))]
    DtrNotAdvertised {
        /// What is missing, e.g. "`deferred_code` in `response_types_supported`".
        missing: Vec<String>,
    },
    /// Neither well-known location produced a metadata document.
    #[error("no metadata document found (tried {})", tried.join(", "))]
    Unavailable {
        /// The URLs that were tried, in order.
        tried: Vec<String>,
        /// Why the last one failed.
        #[source]
        source: std::sync::Arc<Error>,
    },
}

/// How a request failed below the OAuth layer.
///
/// ```
/// use oidc_dtr::error::TransportErrorKind;
///
/// fn label(kind: TransportErrorKind) -> &'static str {
///     match kind {
///         TransportErrorKind::Dns | TransportErrorKind::Connect => "unreachable",
///         TransportErrorKind::Tls => "TLS",
///         TransportErrorKind::Timeout => "slow",
///         _ => "other",
///     }
/// }
/// assert_eq!(label(TransportErrorKind::Timeout), "slow");
/// assert!(TransportErrorKind::Timeout.is_transient());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The TCP connection could not be established.
    Connect,
    /// The host name could not be resolved.
    Dns,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The connect or total timeout elapsed.
    Timeout,
    /// The connection failed while the request or response was in flight.
    Io,
    /// Anything else.
    Other,
}

impl TransportErrorKind {
    /// Whether this kind of failure may go away by itself.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            TransportErrorKind::Connect | TransportErrorKind::Timeout | TransportErrorKind::Io
        )
    }
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportErrorKind::Connect => "connection failed",
            TransportErrorKind::Dns => "DNS resolution failed",
            TransportErrorKind::Tls => "TLS failed",
            TransportErrorKind::Timeout => "timed out",
            TransportErrorKind::Io => "connection broken mid-exchange",
            TransportErrorKind::Other => "request failed",
        })
    }
}

/// A `Retry-After` header value (RFC 9110 §10.2.3).
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::UnixTime;
/// use oidc_dtr::error::RetryAfter;
///
/// let received = UnixTime::from_secs(1_000);
/// let after = RetryAfter::Delay(Duration::from_secs(30));
/// assert_eq!(after.not_before(received), UnixTime::from_secs(1_030));
/// match after {
///     RetryAfter::Delay(d) => println!("retry in {d:?}"),
///     RetryAfter::At(t) => println!("retry at {t}"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[allow(clippy::exhaustive_enums)] // exactly the two forms of RFC 9110 §10.2.3
pub enum RetryAfter {
    /// `Retry-After: <seconds>`.
    Delay(Duration),
    /// `Retry-After: <HTTP-date>`.
    At(UnixTime),
}

impl RetryAfter {
    /// The earliest instant a retry is welcome, given when the response arrived.
    pub fn not_before(self, received_at: UnixTime) -> UnixTime {
        match self {
            RetryAfter::Delay(d) => received_at.saturating_add(d),
            RetryAfter::At(t) => t,
        }
    }
}

/// The request did not produce a usable HTTP answer.
///
/// ```
/// use oidc_dtr::Error;
/// use oidc_dtr::error::HttpError;
///
/// fn describe(err: &Error) -> String {
///     match err {
///         Error::Http(HttpError::Transport { kind, .. }) => format!("network: {kind}"),
///         Error::Http(e @ HttpError::Status { .. }) => {
///             format!("HTTP {:?}, retry after {:?}", e.status(), e.retry_after())
///         }
///         Error::Http(e) if e.is_transient() => format!("transient: {e}"),
///         Error::Http(e) => format!("unusable answer: {e}"),
///         _ => "not an HTTP error".into(),
///     }
/// }
/// # let _ = describe;
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Network, DNS, TLS or timeout failure.
    #[error("{kind} ({endpoint})")]
    Transport {
        /// What kind of failure.
        kind: TransportErrorKind,
        /// The endpoint, without query or fragment.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: SharedError,
    },
    /// The server answered with a redirect. The SDK never follows redirects on
    /// back-channel requests (a redirect could leak credentials or be an SSRF
    /// vector), so this is an error.
    #[error(
        "{endpoint} answered with a redirect (HTTP {status}); back-channel redirects are never followed"
    )]
    Redirect {
        /// The 3xx status.
        status: StatusCode,
        /// The endpoint, without query or fragment.
        endpoint: String,
    },
    /// The response body exceeded the configured cap.
    #[error("the response from {endpoint} exceeds the {limit}-byte body limit")]
    BodyTooLarge {
        /// The configured limit in bytes.
        limit: usize,
        /// The endpoint, without query or fragment.
        endpoint: String,
    },
    /// An error status whose body is not an OAuth error (an HTML error page, a
    /// proxy's message, an empty body).
    #[error("{endpoint} answered HTTP {status} without an OAuth error body{}", preview_suffix(.body_preview))]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The endpoint, without query or fragment.
        endpoint: String,
        /// The `Content-Type`, if any.
        content_type: Option<String>,
        /// At most 200 printable characters of the body.
        body_preview: String,
        /// The `Retry-After` header, if any.
        retry_after: Option<RetryAfter>,
    },
    /// The URL is plain `http://` to a host that is not loopback.
    #[error("refusing plain http to a non-loopback host ({endpoint})")]
    InsecureUrl {
        /// The URL, without query or fragment.
        endpoint: String,
    },
    /// A "still pending" OAuth error (`authorization_pending`, `slow_down`,
    /// `interaction_required`) arrived with an error status other than 400
    /// (a 500 from a failing server or proxy, say). A pending answer or a
    /// deferral comes with HTTP 400 only (RFC 6749 §5.2), so this is not
    /// read as one: it is a failure that may go away, retried like a 5xx.
    #[error(
        "{endpoint} answered `{code}` with HTTP {status}; a pending answer comes with HTTP 400 only"
    )]
    PendingWithErrorStatus {
        /// The HTTP status.
        status: StatusCode,
        /// The endpoint, without query or fragment.
        endpoint: String,
        /// The `error` code in the body.
        code: ErrorCode,
        /// The `Retry-After` header, if any.
        retry_after: Option<RetryAfter>,
    },
}

fn preview_suffix(p: &str) -> String {
    if p.is_empty() {
        String::new()
    } else {
        format!(": {p:?}")
    }
}

impl HttpError {
    /// Whether the failure may go away by itself: connection failures,
    /// timeouts, and error statuses without an OAuth body (5xx, 429, proxies).
    pub fn is_transient(&self) -> bool {
        match self {
            HttpError::Transport { kind, .. } => kind.is_transient(),
            HttpError::Status { .. }
            | HttpError::BodyTooLarge { .. }
            | HttpError::PendingWithErrorStatus { .. } => true,
            HttpError::Redirect { .. } | HttpError::InsecureUrl { .. } => false,
        }
    }

    /// The HTTP status, if a response arrived.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Redirect { status, .. }
            | HttpError::Status { status, .. }
            | HttpError::PendingWithErrorStatus { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<RetryAfter> {
        match self {
            HttpError::Status { retry_after, .. }
            | HttpError::PendingWithErrorStatus { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// An OAuth 2.0 `error` code.
///
/// ```
/// use oidc_dtr::error::ErrorCode;
///
/// assert_eq!(ErrorCode::from("slow_down"), ErrorCode::SlowDown);
/// let custom = ErrorCode::from("x_review_queue_full");
/// assert_eq!(custom.as_str(), "x_review_queue_full");
/// match custom {
///     ErrorCode::AccessDenied => println!("the user or the OP said no"),
///     ErrorCode::ExpiredToken => println!("too late"),
///     ErrorCode::Other(code) => println!("extension code {code}"),
///     _ => println!("another registered code"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", from = "String")]
#[non_exhaustive]
pub enum ErrorCode {
    /// `invalid_request`
    InvalidRequest,
    /// `invalid_client`
    InvalidClient,
    /// `invalid_grant`
    InvalidGrant,
    /// `unauthorized_client`
    UnauthorizedClient,
    /// `unsupported_grant_type`
    UnsupportedGrantType,
    /// `unsupported_response_type`
    UnsupportedResponseType,
    /// `invalid_scope`
    InvalidScope,
    /// `access_denied`
    AccessDenied,
    /// `authorization_pending`
    AuthorizationPending,
    /// `slow_down`
    SlowDown,
    /// `expired_token`
    ExpiredToken,
    /// `invalid_dpop_proof` (RFC 9449)
    InvalidDpopProof,
    /// `use_dpop_nonce` (RFC 9449)
    UseDpopNonce,
    /// `server_error`
    ServerError,
    /// `temporarily_unavailable`
    TemporarilyUnavailable,
    /// `login_required` (OIDC)
    LoginRequired,
    /// `interaction_required` (OIDC)
    InteractionRequired,
    /// `consent_required` (OIDC)
    ConsentRequired,
    /// `invalid_request_object` (RFC 9101 §6.3, OIDC Core §6.4): the OP
    /// refused the signed request object (its signature, `aud`, `exp`,
    /// `nbf`, `jti`, `typ`, ...).
    InvalidRequestObject,
    /// `invalid_request_uri` (OIDC Core §6.4): the `request_uri` is unknown,
    /// expired or already used (RFC 9126 §4).
    InvalidRequestUri,
    /// Any other code, as sent.
    Other(String),
}

impl ErrorCode {
    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::AuthorizationPending => "authorization_pending",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::ExpiredToken => "expired_token",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::InteractionRequired => "interaction_required",
            ErrorCode::ConsentRequired => "consent_required",
            ErrorCode::InvalidRequestObject => "invalid_request_object",
            ErrorCode::InvalidRequestUri => "invalid_request_uri",
            ErrorCode::Other(s) => s,
        }
    }
}

impl From<&str> for ErrorCode {
    fn from(s: &str) -> Self {
        match s {
            "invalid_request" => ErrorCode::InvalidRequest,
            "invalid_client" => ErrorCode::InvalidClient,
            "invalid_grant" => ErrorCode::InvalidGrant,
            "unauthorized_client" => ErrorCode::UnauthorizedClient,
            "unsupported_grant_type" => ErrorCode::UnsupportedGrantType,
            "unsupported_response_type" => ErrorCode::UnsupportedResponseType,
            "invalid_scope" => ErrorCode::InvalidScope,
            "access_denied" => ErrorCode::AccessDenied,
            "authorization_pending" => ErrorCode::AuthorizationPending,
            "slow_down" => ErrorCode::SlowDown,
            "expired_token" => ErrorCode::ExpiredToken,
            "invalid_dpop_proof" => ErrorCode::InvalidDpopProof,
            "use_dpop_nonce" => ErrorCode::UseDpopNonce,
            "server_error" => ErrorCode::ServerError,
            "temporarily_unavailable" => ErrorCode::TemporarilyUnavailable,
            "login_required" => ErrorCode::LoginRequired,
            "interaction_required" => ErrorCode::InteractionRequired,
            "consent_required" => ErrorCode::ConsentRequired,
            "invalid_request_object" => ErrorCode::InvalidRequestObject,
            "invalid_request_uri" => ErrorCode::InvalidRequestUri,
            other => ErrorCode::Other(other.to_owned()),
        }
    }
}

impl From<String> for ErrorCode {
    fn from(s: String) -> Self {
        ErrorCode::from(s.as_str())
    }
}

impl From<ErrorCode> for String {
    fn from(c: ErrorCode) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&sanitize(self.as_str(), 64))
    }
}

/// An OAuth error response (RFC 6749 §5.2, OIDC Core §3.1.2.6 / §3.1.3.4).
///
/// ```
/// use oidc_dtr::Error;
/// use oidc_dtr::error::{ErrorCode, OAuthError};
///
/// let mut e = OAuthError::new(ErrorCode::AccessDenied);
/// e.description = Some("the reviewer declined".into());
/// let err = Error::from(e);
/// let oauth = err.oauth().expect("an OAuth error");
/// assert_eq!(oauth.code, ErrorCode::AccessDenied);
/// assert_eq!(oauth.description.as_deref(), Some("the reviewer declined"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct OAuthError {
    /// The `error` code.
    pub code: ErrorCode,
    /// The `error_description`, as sent by the OP. In DTR polling this is the
    /// OP's progress text. It is the OP's text: display it escaped.
    pub description: Option<String>,
    /// The `error_uri`, as sent.
    pub uri: Option<String>,
    /// The HTTP status, for back-channel responses (`None` for redirects).
    #[serde(with = "opt_status")]
    pub status: Option<StatusCode>,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<RetryAfter>,
    /// The `DPoP-Nonce` header, if any (RFC 9449 §8).
    pub dpop_nonce: Option<String>,
    /// An `interval` member (RFC 8628 allows one on `slow_down`), when it is
    /// a positive integer.
    #[serde(default)]
    pub interval: Option<u64>,
    /// An `interaction_uri` member (IETF Deferred Token Response, with
    /// `interaction_required`), as sent; checked into an
    /// [`InteractionUri`](crate::ietf::InteractionUri) before the SDK surfaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interaction_uri: Option<String>,
}

impl OAuthError {
    /// An error with just a code.
    pub fn new(code: ErrorCode) -> Self {
        OAuthError {
            code,
            description: None,
            uri: None,
            status: None,
            retry_after: None,
            dpop_nonce: None,
            interval: None,
            interaction_uri: None,
        }
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the OP answered `{}`", self.code)?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {})", s.as_u16())?;
        }
        if let Some(d) = &self.description {
            write!(f, ": {}", sanitize(d, 300))?;
        }
        Ok(())
    }
}

impl std::error::Error for OAuthError {}

mod opt_status {
    use http::StatusCode;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        s: &Option<StatusCode>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match s {
            Some(s) => ser.serialize_some(&s.as_u16()),
            None => ser.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<StatusCode>, D::Error> {
        let v = Option::<u16>::deserialize(de)?;
        v.map(|n| StatusCode::from_u16(n).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A success response whose body does not follow the protocol.
///
/// ```
/// use oidc_dtr::Error;
///
/// fn log(err: &Error) {
///     if let Error::Response(e) = err {
///         // Which message and member were wrong; never the value.
///         eprintln!("{}: {:?}: {}", e.context, e.field, e.problem);
///     }
/// }
/// # let _ = log;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {context}: {}{problem}", field.map(|f| format!("`{f}` ")).unwrap_or_default())]
#[non_exhaustive]
pub struct ResponseError {
    /// Which message, e.g. "deferred code exchange response".
    pub context: &'static str,
    /// Which member, when one is to blame.
    pub field: Option<&'static str>,
    /// What is wrong (never the value itself).
    pub problem: String,
}

impl ResponseError {
    pub(crate) fn new(
        context: &'static str,
        field: Option<&'static str>,
        problem: impl Into<String>,
    ) -> Self {
        ResponseError {
            context,
            field,
            // The problem may quote OP-supplied names: never raw.
            problem: sanitize(&problem.into(), 300),
        }
    }
}

/// The redirect back to the RP does not pass validation.
///
/// ```
/// use oidc_dtr::{DtrClient, Error};
/// use oidc_dtr::error::CallbackError;
/// use oidc_dtr_testkit::MockOp;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let op = MockOp::start().await?;
/// # let client = DtrClient::builder()
/// #     .issuer(op.issuer())
/// #     .client_id(MockOp::CLIENT_ID)
/// #     .client_secret(MockOp::CLIENT_SECRET)
/// #     .redirect_uri("http://127.0.0.1:9/callback")
/// #     .build()
/// #     .await?;
/// let (_url, pending) = client.authorize().build()?;
/// // A redirect that does not carry this session's `state`.
/// let forged = "deferred_code=abc&state=someone-elses";
/// match client.callback(&pending, forged) {
///     Err(Error::Callback(CallbackError::StateMismatch | CallbackError::MissingState)) => {}
///     Err(Error::Callback(other)) => panic!("another rejection: {other}"),
///     other => panic!("accepted: {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallbackError {
    /// The parameters are not valid `application/x-www-form-urlencoded`.
    #[error("the callback parameters are not valid form-urlencoded UTF-8")]
    Malformed,
    /// The parameters exceed the size limit.
    #[error("the callback parameters exceed {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A parameter appears more than once (RFC 6749 §3.1).
    #[error("the parameter `{0}` appears more than once")]
    RepeatedParameter(String),
    /// `state` is missing.
    #[error("`state` is missing")]
    MissingState,
    /// `state` does not match the one sent (possible CSRF or a mixed-up session).
    #[error("`state` does not match the authorization request")]
    StateMismatch,
    /// `iss` is missing although the OP advertises
    /// `authorization_response_iss_parameter_supported`.
    #[error("`iss` is missing although the OP advertises RFC 9207 support")]
    MissingIssuer,
    /// `iss` names another issuer (RFC 9207 mix-up defence).
    #[error("`iss` is `{found}`, expected `{expected}`")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The `iss` received (truncated).
        found: String,
    },
    /// Both `code` and `deferred_code` are present: the draft declares that
    /// response invalid.
    #[error("both `code` and `deferred_code` are present")]
    CodeAndDeferredCode,
    /// An `error` arrived together with a `code` or `deferred_code`.
    #[error("an `error` arrived together with a code")]
    ErrorWithCode,
    /// A plain `code` arrived although only `deferred_code` was requested.
    #[error("a plain `code` arrived although `response_type=deferred_code` was requested")]
    UnexpectedCode,
    /// A `deferred_code` arrived although a plain `code` was requested
    /// (`response_type=code`, the IETF profile).
    #[error("a `deferred_code` arrived although `response_type=code` was requested")]
    UnexpectedDeferredCode,
    /// Neither `deferred_code`, `code` nor `error` is present.
    #[error("the callback carries neither `deferred_code`, `code` nor `error`")]
    MissingDeferredCode,
    /// The `deferred_code` is empty, too long or uses characters outside
    /// `A-Z a-z 0-9 . - _`.
    #[error("`deferred_code` is invalid: {0}")]
    InvalidDeferredCode(&'static str),
    /// The `code` is empty or too long.
    #[error("`code` is invalid: {0}")]
    InvalidCode(&'static str),
    /// The `error` code is empty or has characters outside the set RFC 6749
    /// §4.1.2.1 allows (control characters such as CR and LF, `"`, `\`,
    /// non-ASCII).
    #[error("`error` is invalid: {0}")]
    InvalidErrorCode(&'static str),
    /// The response arrived in another `response_mode` than requested (a
    /// query-string response to a `form_post` request, or the reverse).
    #[error("the response did not arrive in the requested `{expected}` response mode")]
    WrongResponseMode {
        /// The mode the request asked for.
        expected: &'static str,
    },
    /// The pending authorization belongs to another issuer or client.
    #[error("the pending authorization was created for another issuer or client")]
    WrongClient,
}

/// A token failed validation (OpenID Connect Core §3.1.3.7, applied to the
/// interim and the final ID token alike, plus the rules a deferral adds:
/// `max_age` against the request time, the interim `sub`). One variant per
/// check, so callers and tests can tell *which* rule the token broke.
///
/// Messages name the check and may quote non-secret values (issuer,
/// audience, `kid`, `alg`, timestamps), never a token, a `nonce`, a `sub` or
/// any other claim value.
///
/// ```
/// use oidc_dtr::Error;
/// use oidc_dtr::error::ValidationError;
///
/// fn advice(err: &ValidationError) -> &'static str {
///     match err {
///         ValidationError::Nonce | ValidationError::MissingNonce => "a replayed or foreign ID token",
///         ValidationError::Expired { .. } => "check the server's clock",
///         ValidationError::Signature => "forged or corrupted",
///         e if e.is_retryable() => "try again later",
///         _ => "rejected",
///     }
/// }
/// let err = Error::from(ValidationError::Nonce);
/// assert_eq!(advice(err.validation().unwrap()), "a replayed or foreign ID token");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ValidationError {
    /// The token response carries no `id_token` (the SDK always requests the
    /// `openid` scope, so one is required).
    #[error("the token response has no `id_token`")]
    MissingIdToken,
    /// The client proved possession of a DPoP key, but the OP answered with
    /// another `token_type` (a downgrade to a bearer token).
    #[error("DPoP was used but the OP issued a `{token_type}` token")]
    DpopDowngrade {
        /// The `token_type` received (sanitised).
        token_type: String,
    },
    /// The token is not a well-formed compact JWS.
    #[error("the ID token is malformed ({part}): {reason}")]
    Malformed {
        /// Which part: `serialization`, `header`, `claims` or `signature`.
        part: String,
        /// What is wrong (never the value).
        reason: String,
    },
    /// The token is encrypted (JWE). Only signed ID tokens are supported.
    #[error("the ID token is encrypted (JWE); only signed (JWS) ID tokens are supported")]
    Jwe,
    /// The header has a `crit` member: no JWS extension is understood here,
    /// so RFC 7515 §4.1.11 requires rejecting it.
    #[error("the ID token header has `crit` ({}); no JWS extension is supported", .names.join(", "))]
    CritHeader {
        /// The extension names listed (sanitised).
        names: Vec<String>,
    },
    /// The header's `typ` says this is another kind of JWT (e.g. an access
    /// token or a logout token).
    #[error("the ID token header has `typ` `{typ}`, which is not an ID token type")]
    Type {
        /// The `typ` value (sanitised).
        typ: String,
    },
    /// The `alg` is not in the allow-list (configured ∩ the OP's
    /// `id_token_signing_alg_values_supported`), or is `none`.
    #[error("the ID token `alg` `{alg}` is not allowed")]
    AlgorithmNotAllowed {
        /// The `alg` value (sanitised).
        alg: String,
    },
    /// No key in the OP's JWK Set has this `kid`, even after a refresh.
    #[error("no key with `kid` `{kid}` in the OP's JWK Set (refreshed at most once per cooldown)")]
    UnknownKid {
        /// The `kid` (sanitised).
        kid: String,
    },
    /// The token has no `kid` and no key of the JWK Set fits its `alg`.
    #[error("the ID token has no `kid` and no key in the OP's JWK Set fits `{alg}`")]
    NoMatchingKey {
        /// The token's `alg`.
        alg: String,
    },
    /// The token has no `kid` and several keys fit its `alg`.
    #[error("the ID token has no `kid` and {candidates} keys in the OP's JWK Set fit `{alg}`")]
    AmbiguousKey {
        /// The token's `alg`.
        alg: String,
        /// How many keys fit.
        candidates: usize,
    },
    /// The key with the token's `kid` cannot verify its `alg` (another key
    /// type, or the JWK's own `alg` differs).
    #[error("the key `{kid}` cannot verify `{alg}`")]
    KeyMismatch {
        /// The `kid` (sanitised).
        kid: String,
        /// The token's `alg`.
        alg: String,
    },
    /// The signature does not verify.
    #[error("the ID token signature is invalid")]
    Signature,
    /// The OP publishes no `jwks_uri` and no key set was imported.
    #[error("the OP has no `jwks_uri` and no JWK Set was imported")]
    NoJwks,
    /// The JWK Set could not be obtained (and no usable cached copy exists).
    /// The token itself may be fine: validating it again later may succeed.
    #[error("the OP's JWK Set is unavailable: {reason}")]
    JwksUnavailable {
        /// Why (the fetch error, without secrets).
        reason: String,
    },
    /// A required claim is missing.
    #[error("the ID token has no `{claim}` claim")]
    MissingClaim {
        /// The claim name.
        claim: String,
    },
    /// A claim has the wrong type or an unusable value.
    #[error("the ID token claim `{claim}` is invalid: {reason}")]
    InvalidClaim {
        /// The claim name.
        claim: String,
        /// What is wrong (never the value).
        reason: String,
    },
    /// `iss` is not the OP's issuer identifier (exact comparison).
    #[error("the ID token `iss` is `{found}`, expected `{expected}`")]
    Issuer {
        /// The configured issuer.
        expected: String,
        /// The `iss` received (sanitised, truncated).
        found: String,
    },
    /// `aud` does not contain the client id.
    #[error("the ID token `aud` does not contain the client id `{client_id}`")]
    Audience {
        /// The client id.
        client_id: String,
    },
    /// `aud` contains an audience that is neither the client nor trusted.
    #[error("the ID token `aud` contains the untrusted audience `{audience}`")]
    UntrustedAudience {
        /// The first untrusted audience (sanitised).
        audience: String,
    },
    /// The token has several audiences but no `azp`.
    #[error("the ID token has several audiences but no `azp`")]
    MissingAzp,
    /// `azp` is present and is not the client id.
    #[error("the ID token `azp` is `{found}`, not the client id")]
    Azp {
        /// The `azp` received (sanitised).
        found: String,
    },
    /// The token expired (`exp` plus the leeway is not after now).
    #[error("the ID token expired (`exp` {exp}, now {now})")]
    Expired {
        /// `exp`, seconds since the epoch.
        exp: i64,
        /// The validation time, seconds since the epoch.
        now: i64,
    },
    /// The token is not valid yet (`nbf` minus the leeway is after now).
    #[error("the ID token is not valid yet (`nbf` {nbf}, now {now})")]
    NotYetValid {
        /// `nbf`, seconds since the epoch.
        nbf: i64,
        /// The validation time, seconds since the epoch.
        now: i64,
    },
    /// `iat` is in the future (beyond the leeway).
    #[error("the ID token was issued in the future (`iat` {iat}, now {now})")]
    IssuedInFuture {
        /// `iat`, seconds since the epoch.
        iat: i64,
        /// The validation time, seconds since the epoch.
        now: i64,
    },
    /// `iat` is further in the past than
    /// `ValidationOptions::max_iat_age` allows.
    #[error("the ID token was issued too long ago (`iat` {iat}, now {now})")]
    IssuedTooLongAgo {
        /// `iat`, seconds since the epoch.
        iat: i64,
        /// The validation time, seconds since the epoch.
        now: i64,
    },
    /// `auth_time` is in the future (beyond
    /// `ValidationOptions::auth_time_leeway`).
    #[error("the End-User authenticated in the future (`auth_time` {auth_time}, now {now})")]
    AuthTimeInFuture {
        /// `auth_time`, seconds since the epoch.
        auth_time: i64,
        /// The validation time, seconds since the epoch.
        now: i64,
    },
    /// The token has no `nonce`, but one was sent in the request.
    #[error("the ID token has no `nonce`, but one was sent in the authentication request")]
    MissingNonce,
    /// `nonce` differs from the one sent in the request.
    #[error("the ID token `nonce` does not match the authentication request")]
    Nonce,
    /// `at_hash` does not match the access token.
    #[error("the ID token `at_hash` does not match the access token")]
    AtHash,
    /// `max_age` was requested but the token has no `auth_time`.
    #[error("`max_age` was requested but the ID token has no `auth_time`")]
    MissingAuthTime,
    /// The End-User authenticated longer than `max_age` before the request.
    #[error(
        "the End-User authenticated too long ago: `auth_time` {auth_time} is more than `max_age` {max_age} s before the request ({requested_at})"
    )]
    MaxAgeExceeded {
        /// `auth_time`, seconds since the epoch.
        auth_time: i64,
        /// The requested `max_age`, in seconds.
        max_age: u64,
        /// When the authentication request was made, seconds since the epoch.
        requested_at: i64,
    },
    /// The final ID token names another `sub` than the interim ID token
    /// (the drafts leave this open; see
    /// `ValidationOptions::require_same_subject`).
    #[error("the ID token `sub` differs from the interim ID token's")]
    SubjectChanged,
    /// The UserInfo response names another `sub` than the ID token (OpenID
    /// Connect Core 1.0 §5.3.2: the UserInfo response must not be used then;
    /// it may have been substituted).
    #[error("the UserInfo `sub` differs from the ID token's")]
    UserInfoSubjectMismatch,
}

impl ValidationError {
    /// Whether validating the same token again later may succeed: only when
    /// the OP's keys could not be fetched.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ValidationError::JwksUnavailable { .. })
    }

    pub(crate) fn malformed(part: &str, reason: impl Into<String>) -> Self {
        ValidationError::Malformed {
            part: part.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_claim(claim: &str, reason: impl Into<String>) -> Self {
        ValidationError::InvalidClaim {
            claim: claim.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn missing_claim(claim: &str) -> Self {
        ValidationError::MissingClaim {
            claim: claim.to_owned(),
        }
    }
}

/// Whether `c` is a Unicode bidirectional formatting character (embeddings,
/// overrides, isolates and marks), which can make displayed text read
/// differently from what it is ("Trojan Source").
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Checks an OAuth `error` code from the OP against RFC 6749 §5.2 / §4.1.2.1:
/// non-empty, and only `%x20-21 / %x23-5B / %x5D-7E` (printable ASCII
/// without `"` and `\`). A code with CR, LF or other control characters
/// would reach logs, stores and pages raw.
pub(crate) fn check_error_code(code: &str) -> Result<(), &'static str> {
    if code.is_empty() {
        return Err("is empty");
    }
    if !code
        .bytes()
        .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
    {
        return Err("has characters outside the set RFC 6749 allows");
    }
    Ok(())
}

/// The most characters of OP text (`error_description`) kept.
pub(crate) const MAX_OP_TEXT_CHARS: usize = 512;
/// The longest `error_uri` kept, in bytes.
pub(crate) const MAX_OP_URI_LEN: usize = 2048;

/// Cleans OP-supplied text (`error_description`) before it reaches the
/// application or the store: control characters (CR, LF, tabs included)
/// become spaces, bidirectional formatting characters are dropped, and the
/// text is cut at [`MAX_OP_TEXT_CHARS`] characters.
pub(crate) fn clean_op_text(s: &str) -> String {
    // The common text (a progress note with every poll): printable ASCII
    // within the cap, which has nothing to change.
    if s.len() <= MAX_OP_TEXT_CHARS && s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len().min(MAX_OP_TEXT_CHARS * 4));
    let mut kept = 0;
    let mut cut = false;
    for c in s.chars() {
        if is_bidi_control(c) {
            continue;
        }
        if kept == MAX_OP_TEXT_CHARS {
            cut = true;
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
        kept += 1;
    }
    if cut {
        out.push('…');
    }
    out
}

/// Keeps an OP-supplied `error_uri` only when it is an absolute `https` URI
/// of reasonable length (a `javascript:` or `data:` URI must never reach a
/// page as a link).
pub(crate) fn clean_op_uri(s: &str) -> Option<String> {
    if s.len() > MAX_OP_URI_LEN || s.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return None;
    }
    let url = url::Url::parse(s).ok()?;
    (url.scheme() == "https" && url.host().is_some()).then(|| s.to_owned())
}

/// Makes OP-supplied text safe to print: control characters and
/// bidirectional formatting characters become `?` and the text is cut at
/// `max` characters.
pub(crate) fn sanitize(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| {
            if c.is_control() || is_bidi_control(c) {
                '?'
            } else {
                c
            }
        })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Why a poll failed in a way that is retried: a class, with nothing from
/// the OP's body and no secret.
///
/// ```
/// use oidc_dtr::poll::RetryCause;
///
/// fn line(cause: RetryCause) -> String {
///     match cause {
///         RetryCause::TooManyRequests => "the OP asks us to slow down".into(),
///         RetryCause::ServerError { status: Some(s) } => format!("the OP failed (HTTP {s})"),
///         other => format!("retrying: {other}"),
///     }
/// }
/// assert_eq!(line(RetryCause::Timeout), "retrying: timed out");
/// ```
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

impl SharedError {
    /// The retry class of a transient failure this error caused (the
    /// engine keeps the HTTP or OAuth error as the cause).
    pub(crate) fn retry_cause(&self) -> RetryCause {
        let e = self.get();
        if let Some(h) = e.downcast_ref::<HttpError>() {
            return RetryCause::of_http(h);
        }
        if let Some(o) = e.downcast_ref::<OAuthError>() {
            return RetryCause::ServerError {
                status: o.status.map(|s| s.as_u16()),
            };
        }
        if e.downcast_ref::<ResponseError>().is_some() {
            return RetryCause::NotOAuth;
        }
        RetryCause::Other
    }
}

/// A [`Signer`](crate::jose::Signer) could not sign. Its text is the signer's message, which
/// must name no secret.
///
/// ```
/// use oidc_dtr::jose::SignerError;
///
/// let e = SignerError::retryable("the KMS timed out");
/// assert!(e.retryable);
/// assert!(!SignerError::permanent("the key is disabled").retryable);
/// assert!(e.to_string().contains("the KMS timed out"));
/// ```
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("the signer failed ({}): {message}", if *.retryable { "retryable" } else { "permanent" })]
#[non_exhaustive]
pub struct SignerError {
    /// Whether trying again later may succeed (a timeout, a throttled or
    /// unreachable KMS), as opposed to a refusal (a disabled key, a
    /// missing permission).
    pub retryable: bool,
    /// What went wrong, for logs (never key material or credentials).
    pub message: String,
}

impl fmt::Debug for SignerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerError")
            .field("retryable", &self.retryable)
            .field("message", &self.message)
            .finish()
    }
}

impl SignerError {
    /// A failure that may go away (retried while polling).
    pub fn retryable(message: impl Into<String>) -> Self {
        SignerError {
            retryable: true,
            message: message.into(),
        }
    }

    /// A failure that will not go away by itself.
    pub fn permanent(message: impl Into<String>) -> Self {
        SignerError {
            retryable: false,
            message: message.into(),
        }
    }
}

mod assurance;
mod store;

pub use assurance::{AssuranceError, AssuranceUnsupported};
pub use store::{StoreError, WaitError};

#[cfg(test)]
mod tests;
