//! The errors of the stores and of waiting on an authentication.

use super::*;

/// What can go wrong in a [`Store`](crate::store::Store).
///
/// No variant shows a secret: records are named by the
/// [`Fingerprint`] of their id, the issuer and client id (not secrets) are
/// shown where they explain the error.
///
/// ```
/// use oidc_dtr::error::StoreError;
///
/// fn advice(err: &StoreError) -> &'static str {
///     match err {
///         StoreError::Io(_) => "check the disk",
///         StoreError::Locked { .. } => "another process owns the store",
///         StoreError::Closed => "the store was shut down",
///         e if e.is_retryable() => "try again",
///         _ => "see the message",
///     }
/// }
/// let err = StoreError::from(std::io::Error::other("disk full"));
/// assert_eq!(advice(&err), "check the disk");
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the store failed (disk full, permissions, a
    /// vanished directory). May be retried. The cause is the `source`.
    #[error("store I/O error")]
    Io(#[source] std::sync::Arc<std::io::Error>),
    /// The store holds bytes it did not write, or could not have: a
    /// truncated or damaged file, a record that does not decode. Nothing was
    /// changed or deleted; restore the file from a backup or investigate.
    #[error("the store is corrupt{}: {detail}", fp_suffix(.record))]
    Corrupt {
        /// The record concerned, if one is.
        record: Option<Fingerprint>,
        /// What is wrong (no secrets).
        detail: String,
    },
    /// A record or a store file of a layout version this release does not
    /// know (written by a newer release, or damaged).
    #[error(
        "unsupported store schema version {found}{} (this release supports {supported})",
        fp_suffix(.record)
    )]
    UnsupportedSchema {
        /// The version found.
        found: u32,
        /// The version this release reads and writes.
        supported: u32,
        /// The record concerned, or `None` for the store file as a whole.
        record: Option<Fingerprint>,
    },
    /// The store belongs to another issuer or client: using it would mix
    /// up two clients' authentications.
    #[error(
        "the store belongs to issuer `{found_issuer}` and client `{found_client_id}`, \
         not issuer `{expected_issuer}` and client `{expected_client_id}`"
    )]
    WrongOwner {
        /// The issuer asked for.
        expected_issuer: String,
        /// The client id asked for.
        expected_client_id: String,
        /// The issuer the store is bound to.
        found_issuer: String,
        /// The client id the store is bound to.
        found_client_id: String,
    },
    /// A record with this id already exists.
    #[error("a record for deferred authentication {record:?} already exists")]
    Duplicate {
        /// The record.
        record: Fingerprint,
    },
    /// No record with this id.
    #[error("no record for deferred authentication {record:?}")]
    NotFound {
        /// The id asked for.
        record: Fingerprint,
    },
    /// The record already has a (different) outcome.
    #[error("deferred authentication {record:?} has already finished")]
    AlreadyFinished {
        /// The record.
        record: Fingerprint,
    },
    /// The store file is open elsewhere (another process, or another
    /// [`FileStore`](crate::store::FileStore) in this one). A file store has one owner at a time.
    #[error("the store file {} is already open (in this or another process)", .path.display())]
    Locked {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The store was closed ([`Store::close`](crate::store::Store::close), e.g. by
    /// [`DtrClient::shutdown`](crate::DtrClient::shutdown)).
    #[error("the store is closed")]
    Closed,
    /// Sealing or unsealing failed: a wrong key, a store written with
    /// encryption opened without it (or the reverse), a tampered record.
    #[error("store encryption: {0}")]
    Sealing(String),
    /// The store's server cannot be reached or did not answer in time: it
    /// is down, restarting, dropped the connection, or is overloaded. May
    /// be retried; nothing was changed unless the server committed before
    /// the connection dropped (every write is safe to repeat).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The write was refused because this instance no longer holds the
    /// authentication's [`Lease`](crate::store::Lease): it expired and another
    /// instance took the authentication over. Stop polling it.
    #[error("the lease on deferred authentication {record:?} was lost to another instance")]
    LeaseLost {
        /// The record.
        record: Fingerprint,
    },
    /// Anything else (no secrets).
    #[error("store error: {0}")]
    Other(String),
}

/// Why `wait` could not produce an outcome.
///
/// ```
/// use oidc_dtr::{DeferredId, DtrClient, Error};
/// use oidc_dtr::error::WaitError;
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
/// // An id this client never tracked (or whose outcome was purged).
/// match client.wait(&DeferredId::new("never-seen")).await {
///     Err(Error::Poll(WaitError::Unknown)) => println!("no such authentication"),
///     Err(Error::Poll(WaitError::Stopped)) => println!("the client is shutting down"),
///     other => panic!("unexpected: {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// No such authentication (never tracked, or its outcome was purged).
    #[error("unknown deferred authentication")]
    Unknown,
    /// The driver stopped (the client was dropped or the runtime shut down).
    #[error("the poll driver has stopped")]
    Stopped,
}

fn fp_suffix(record: &Option<Fingerprint>) -> String {
    match record {
        Some(fp) => format!(" (record {fp:?})"),
        None => String::new(),
    }
}

impl StoreError {
    pub(crate) fn corrupt(record: Option<Fingerprint>, detail: impl Into<String>) -> Self {
        StoreError::Corrupt {
            record,
            detail: detail.into(),
        }
    }

    /// Whether retrying the same call later may succeed (an I/O error, a
    /// store that is busy or locked).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Io(_) | StoreError::Locked { .. } | StoreError::Unavailable(_)
        )
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(std::sync::Arc::new(e))
    }
}

// Identity assurance. Defined here (not in `proto::assurance`) so that
// `ConfigError` and `Error` can carry them without naming a higher layer.
