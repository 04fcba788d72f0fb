//! Cancellation (draft §"Authentication Cancellation"): tell the OP that the
//! RP no longer wants an authentication (the user abandoned it).
//!
//! The draft defines no metadata name for the endpoint, so it is
//! configured explicitly, or read from a metadata member whose name the
//! caller chooses. Its text says `application/x-www-form-urlencoded` and its
//! example sends JSON: form is the default, JSON an option, and with
//! JSON only header-based client authentication is possible (a JSON body
//! cannot carry `client_secret` or `client_assertion` as form parameters).
//! Any 2xx is success; the body may be empty and is not read.

use url::Url;

use crate::error::ConfigError;
use crate::proto::client_auth::ClientAuth;

/// What [`DtrClient::cancel`](crate::DtrClient::cancel) did: whether the
/// OP was told.
///
/// ```
/// use oidc_dtr::{CallbackResponse, CancelResult, DtrClient};
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
/// # let (url, pending) = client.authorize().build()?;
/// # let back = op.browse(&url).await?;
/// # let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, back.query())? else { panic!() };
/// let auth = client.exchange(ack).await?;
/// // This client has no cancellation endpoint configured.
/// match client.cancel(auth.id()).await? {
///     CancelResult::ToldOp => println!("the OP stopped too"),
///     CancelResult::LocalOnly => println!("polling stopped; the OP was not told"),
///     CancelResult::AlreadyFinished => println!("too late: it had ended"),
///     other => println!("sent, unconfirmed: {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "the OP may not have been told: check `op_told()`"]
pub enum CancelResult {
    /// The OP accepted the cancellation request, and polling stopped.
    ToldOp,
    /// Polling stopped, but the OP was **not** told: no cancellation
    /// endpoint is configured (the draft defines no metadata name for one,
    /// so the SDK cannot find it by itself; see
    /// [`DtrClientBuilder::cancellation`](crate::DtrClientBuilder::cancellation)).
    /// The authentication stays open at the OP until it expires.
    LocalOnly,
    /// The authentication had already ended; nothing was sent.
    AlreadyFinished,
    /// IETF profile: the revocation was sent and answered 2xx, and polling
    /// stopped, but the AS does not list
    /// `urn:ietf:params:oauth:token-type:deferral-code` in
    /// `revocation_endpoint_token_type_values_supported`. An AS that does
    /// not support revoking deferral codes answers 200 to anything
    /// (RFC 7009 §2.2), so the answer does not confirm that the AS stopped.
    SentUnconfirmed,
}

impl CancelResult {
    /// Whether the OP was told.
    pub fn op_told(self) -> bool {
        self == CancelResult::ToldOp
    }
}

/// How the cancellation request carries `deferred_auth_id`.
///
/// ```
/// use oidc_dtr::client::{CancelEncoding, CancellationConfig};
///
/// // An OP that follows the draft's JSON example.
/// let cancel = CancellationConfig::new("https://op.example/cancel")?.encoding(CancelEncoding::Json);
/// # let _ = cancel;
/// assert_eq!(CancelEncoding::default(), CancelEncoding::Form);
/// # Ok::<(), oidc_dtr::error::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CancelEncoding {
    /// `application/x-www-form-urlencoded` (the draft's text; the default).
    #[default]
    Form,
    /// `application/json` (the draft's example). Needs header-based client
    /// authentication (`client_secret_basic`).
    Json,
}

/// Where and how to send cancellation requests: [`CancellationConfig::new`]
/// with the endpoint, then the setters.
///
/// ```
/// use oidc_dtr::{client::{CancelEncoding, CancellationConfig}};
///
/// let cancel = CancellationConfig::new("https://op.example.com/cancel")?
///     .encoding(CancelEncoding::Json);
/// assert_eq!(cancel.endpoint().as_str(), "https://op.example.com/cancel");
/// # Ok::<(), oidc_dtr::error::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CancellationConfig {
    pub(crate) endpoint: Url,
    pub(crate) encoding: CancelEncoding,
}

impl CancellationConfig {
    /// The endpoint URL (https, or http to loopback).
    pub fn new(endpoint: &str) -> Result<Self, ConfigError> {
        Ok(CancellationConfig {
            endpoint: crate::proto::message::parse_url(endpoint, "cancellation_endpoint")?,
            encoding: CancelEncoding::Form,
        })
    }

    /// The body encoding. Default: [`CancelEncoding::Form`].
    #[must_use]
    pub fn encoding(mut self, encoding: CancelEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Checks that the encoding works with the client authentication (JSON needs
    /// header-based client authentication).
    pub(crate) fn check(&self, auth: &ClientAuth) -> Result<(), ConfigError> {
        if self.encoding == CancelEncoding::Json && !auth.is_header_based() {
            return Err(ConfigError::Invalid {
                field: "cancellation",
                reason: format!(
                    "a JSON cancellation body needs header-based client authentication, not `{}`",
                    auth.method_name()
                ),
            });
        }
        Ok(())
    }
}
