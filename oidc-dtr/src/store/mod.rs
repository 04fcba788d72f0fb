//! Durable storage of pending authentications and their outcomes.
//!
//! A deferred authentication lives for hours or days, far longer than a
//! process may. The SDK therefore writes each one down at the exchange,
//! updates its poll state as it goes, and records its terminal outcome
//! *before* handing it to the application: a token response that reached
//! the RP is never lost. A restarted process reads everything back with
//! [`Store::load_active`] and carries on where the old one stopped: the
//! deadline is absolute, the interval floor is in the poll state, and an
//! outcome that was recorded but never acknowledged is delivered again.
//!
//! # What is here
//!
//! - [`Store`]: the async trait the client talks to. Third parties can
//!   implement it (a shared SQL or key-value store); each method documents
//!   what must be atomic and what must be durable when it returns.
//! - [`MemoryStore`]: a map behind a mutex, for tests and for applications
//!   that accept losing pending authentications on restart.
//! - [`FileStore`]: the embedded durable default, one file, no server,
//!   built on [`redb`](https://docs.rs/redb) (copy-on-write B-trees with
//!   checksummed commits and `fsync`). Optionally seals every record with a
//!   [`Sealer`] such as [`AesGcmSealer`].
//!
//! # Records
//!
//! A [`Record`] is one authentication: the [`DeferredAuthentication`] (the
//! `deferred_auth_id`, nonce, PKCE verifier, DPoP key, notification-token
//! hash), its [`PollMachine`], and once it ended, the [`StoredOutcome`]
//! (which may hold the validated tokens). Every field is secret at rest;
//! that is what the [`Sealer`] hook is for. Records carry a schema version
//! ([`SCHEMA_VERSION`]) so that a later release can migrate them; a store
//! never silently skips a record it does not understand.
//!
//! # Bad records are quarantined
//!
//! A record that cannot be read (damaged bytes, a layout this release does
//! not know), that is not authentic (its seal does not open), or that is
//! not this store's (another issuer's or client's, or a delivery state
//! changed behind the store's back) is *quarantined* by the persistent
//! stores the moment a read meets it: set aside, kept byte for byte for
//! inspection, never claimed or handed out again, and reported through a
//! [`StoreNotice::Quarantined`], the counter
//! `oidc_dtr_store_quarantined_total` (labels `store`, `reason`) and a
//! warning in the log that names the record by fingerprint. The read
//! itself goes on with the other records, so one bad record does not stop
//! the others from being polled. [`Store::quarantined`] lists what is set
//! aside; [`Store::release_quarantined`] checks a record again (after a
//! repair, or with the right key) and puts it back if it now reads. A
//! quarantined record that is deleted from the store simply disappears;
//! neither needs a restart.
//!
//! # Records are bound to their store and state
//!
//! A record's body (sealed when a [`Sealer`] is set) holds its issuer,
//! client id and delivery state; the columns or indexes a store keeps
//! beside it are only indexes. A record is refused (and quarantined) when
//! its body names another issuer or client than the one the store is
//! bound to ([`Store::bind`]) — a record copied from another client's
//! store — or when an index says "not delivered" for an outcome whose body
//! says "delivered" (an attempt to have acknowledged tokens handed out
//! again).
//!
//! # Identifying records without leaking ids
//!
//! The [`DeferredId`] is a bearer secret, so stores that
//! index records should not use it as a key in clear: [`RecordKey::of`]
//! gives the SHA-256 of the id, whose first four bytes are the id's log-safe
//! [`Fingerprint`], so an error about a stored
//! record names it the way log lines do.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::proto::exchange::DeferredAuthentication;
use crate::proto::poll::{Outcome, PollMachine};
use crate::proto::token::TokenSet;
use crate::secret::{DeferredId, Fingerprint};
use crate::time::UnixTime;

// Record builders for this crate's own unit tests (the public conformance
// suite in `oidc-dtr-testkit` has its own: a unit test here cannot use the
// testkit, which depends on this crate).
#[cfg(feature = "file-store")]
mod file;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod records;
mod seal;
#[cfg(test)]
pub(crate) mod test_records;

pub use crate::error::StoreError;
#[cfg(feature = "file-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "file-store")))]
pub use file::{FileStore, FileStoreOptions};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore};
pub use seal::{AesGcmSealer, Sealer};

/// The version of the [`Record`] layout this release writes and reads.
///
/// A record (or a store file) with another version is refused with
/// [`StoreError::UnsupportedSchema`] rather than guessed at; a release that
/// changes the layout bumps this and migrates older records.
pub const SCHEMA_VERSION: u32 = 1;

/// A boxed, sendable, `'static` future: what every [`Store`] method returns,
/// so that the trait stays object-safe (`Arc<dyn Store>`).
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One persisted authentication.
///
/// `Debug` shows no secret (the fields redact themselves); the serialised
/// form holds every secret of the authentication and, once finished, the
/// tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "records::RecordV1", try_from = "records::RecordV1")]
#[non_exhaustive]
pub struct Record {
    /// The layout version this record was written with ([`SCHEMA_VERSION`]).
    pub schema: u32,
    /// The authentication, as the exchange produced it.
    pub auth: DeferredAuthentication,
    /// Its poll state.
    pub machine: PollMachine,
    /// How it ended, once it has.
    pub outcome: Option<StoredOutcome>,
}

/// The terminal outcome of an authentication, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredOutcome {
    /// When the authentication ended (the retention period of
    /// [`Store::purge`] counts from here).
    pub finished_at: UnixTime,
    /// How it ended (with the validated tokens, if it succeeded).
    pub outcome: Outcome<TokenSet>,
    /// Whether the application has acknowledged it
    /// ([`Store::mark_delivered`]). An undelivered outcome is handed over
    /// again after a restart.
    pub delivered: bool,
}

impl StoredOutcome {
    /// A fresh, undelivered outcome.
    pub fn new(finished_at: UnixTime, outcome: Outcome<TokenSet>) -> Self {
        StoredOutcome {
            finished_at,
            outcome,
            delivered: false,
        }
    }
}

impl Record {
    /// A new, unfinished record at the current [`SCHEMA_VERSION`].
    pub fn new(auth: DeferredAuthentication, machine: PollMachine) -> Self {
        Record {
            schema: SCHEMA_VERSION,
            auth,
            machine,
            outcome: None,
        }
    }

    /// The `deferred_auth_id`.
    pub fn id(&self) -> &DeferredId {
        self.auth.id()
    }

    /// Whether a terminal outcome has been recorded.
    pub fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }

    /// When the authentication ended, if it has.
    pub fn finished_at(&self) -> Option<UnixTime> {
        self.outcome.as_ref().map(|o| o.finished_at)
    }

    /// When this record is next due, as [`Store::due`] sees it: `None` once
    /// finished; otherwise the machine's [`wake_at`](PollMachine::wake_at)
    /// (its next poll, capped at the deadline).
    ///
    /// A record saved while a request was in flight has no `wake_at`; it is
    /// due at its last scheduled poll (in the past), so that after a crash
    /// the request whose fate is unknown is found again and recovered with
    /// [`PollMachine::recover_after_restart`] rather than forgotten.
    /// Implementations of [`Store`] index on exactly this value.
    pub fn due_at(&self) -> Option<UnixTime> {
        if self.is_finished() {
            return None;
        }
        Some(due_of(&self.machine))
    }

    /// The log-safe fingerprint of the `deferred_auth_id`.
    pub fn fingerprint(&self) -> Fingerprint {
        self.id().fingerprint()
    }
}

/// [`Record::due_at`] of an unfinished record with this poll state.
pub(crate) fn due_of(machine: &PollMachine) -> UnixTime {
    machine
        .wake_at()
        .unwrap_or_else(|| machine.next_poll().min(machine.deadline()))
}

/// The key under which a store may index a record: the SHA-256 of the
/// `deferred_auth_id`. Its first four bytes are the id's
/// [`Fingerprint`], so [`key_fingerprint`] names a stored record the way
/// the logs do.
pub(crate) fn record_key(id: &DeferredId) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.secret().as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The fingerprint of the id behind a [`record_key`].
pub(crate) fn key_fingerprint(key: &[u8; 32]) -> Fingerprint {
    Fingerprint::from_digest_prefix([key[0], key[1], key[2], key[3]])
}

/// Stores pending authentications and their outcomes.
///
/// The client calls it at fixed points of an authentication's life:
///
/// 1. [`insert`](Self::insert) when the exchange returns, before the
///    application gets the [`DeferredAuthentication`];
/// 2. [`update_state`](Self::update_state) after each poll;
/// 3. [`finish`](Self::finish) with the outcome, before it is delivered;
/// 4. [`mark_delivered`](Self::mark_delivered) when the application has
///    taken it;
/// 5. [`purge`](Self::purge) after the retention period.
///
/// At start it calls [`bind`](Self::bind) and then
/// [`load_active`](Self::load_active) to resume.
///
/// # Contract for implementations
///
/// - Every method is atomic: a concurrent reader sees a record entirely
///   before or entirely after a write, and a record's indexes (due time,
///   finish time) change in the same transaction as the record.
/// - "Durable" means: once the future resolves `Ok`, the change survives a
///   crash of the process or the machine (e.g. `fsync` has returned). Which
///   methods must be durable is stated on each; a store that cannot offer
///   durability (like [`MemoryStore`]) says so in its own docs.
/// - Futures are `'static`: clone whatever the work needs (an `Arc` of the
///   store's state) into them. Blocking IO belongs in
///   `tokio::task::spawn_blocking`, not on the async executor.
/// - Errors never contain secrets: name records by
///   [`Fingerprint`] (the SHA-256 of the id), never by id or token.
/// - Bad bytes never panic; a record that cannot be read is an error
///   ([`StoreError::Corrupt`], [`StoreError::UnsupportedSchema`]), never
///   silently skipped. A persistent store quarantines it (see
///   [`quarantined`](Self::quarantined)) so that the other records stay
///   readable.
/// - Once bound, a store never hands out a record of another issuer or
///   client.
pub trait Store: Send + Sync + 'static {
    /// Binds the store to one issuer and client id: the first call records
    /// them; every later call (this process, another one, after a restart)
    /// must name the same pair, else [`StoreError::WrongOwner`]. Once bound,
    /// [`insert`](Self::insert) also refuses a record of another issuer or
    /// client. Durable.
    fn bind(&self, issuer: &str, client_id: &str) -> StoreFuture<Result<(), StoreError>>;

    /// Inserts a new record (at exchange time). Durable.
    ///
    /// Errors: [`StoreError::Duplicate`] if a record with this id exists
    /// (finished or not); [`StoreError::UnsupportedSchema`] if
    /// `record.schema` is not [`SCHEMA_VERSION`]; [`StoreError::WrongOwner`]
    /// if the store is bound to another issuer or client.
    fn insert(&self, record: Record) -> StoreFuture<Result<(), StoreError>>;

    /// Replaces the poll state of an existing, unfinished record (after a
    /// poll), moving it in the due index.
    ///
    /// Atomic, but durability may be relaxed: a crash may lose the latest
    /// poll states (the store says how many), never a record or an outcome.
    /// A resumed authentication then repeats at most a poll it already
    /// made; callers wait a full floor after a restart before polling.
    ///
    /// Errors: [`StoreError::NotFound`]; [`StoreError::AlreadyFinished`] if
    /// an outcome is recorded.
    fn update_state(
        &self,
        id: &DeferredId,
        machine: PollMachine,
    ) -> StoreFuture<Result<(), StoreError>>;

    /// Records the terminal outcome and the final poll state together,
    /// atomically and durably, and takes the record out of the due index.
    ///
    /// Idempotent for a retry: finishing again with the same
    /// [`Outcome`] (whatever the `finished_at` and `delivered` of the
    /// retry) is `Ok` and changes nothing. Errors: [`StoreError::NotFound`];
    /// [`StoreError::AlreadyFinished`] if a different outcome is recorded.
    fn finish(
        &self,
        id: &DeferredId,
        machine: PollMachine,
        outcome: StoredOutcome,
    ) -> StoreFuture<Result<(), StoreError>>;

    /// Marks the outcome delivered (the application acknowledged it), so
    /// that [`load_active`](Self::load_active) no longer returns it.
    /// Durable. `Ok(true)` if the record is finished (delivered now or
    /// before), `Ok(false)` if it is unknown or not finished.
    fn mark_delivered(&self, id: &DeferredId) -> StoreFuture<Result<bool, StoreError>>;

    /// The record with this id, if any.
    ///
    /// The client does not call this (it is for tools and tests). The
    /// default answers from [`load_active`](Self::load_active), so it only
    /// finds pending records and undelivered outcomes; the store conformance
    /// suite expects delivered ones too, so a store that runs the suite
    /// implements it. A record that does not read, or is quarantined
    /// ([`quarantined`](Self::quarantined)), is an error, never `None`.
    fn get(&self, id: &DeferredId) -> StoreFuture<Result<Option<Record>, StoreError>> {
        let all = self.load_active();
        let id = id.clone();
        Box::pin(async move { Ok(all.await?.into_iter().find(|r| r.id() == &id)) })
    }

    /// Unfinished records whose [`Record::due_at`] is at or before `until`,
    /// earliest first (ties in an unspecified but stable order), at most
    /// `limit` of them. For claiming work: implementations answer from an
    /// index, not by scanning every record. Finished records are never due.
    ///
    /// The client does not call this yet (it resumes with
    /// [`load_active`](Self::load_active)); the default sorts what that
    /// returns, which is correct but scans.
    fn due(&self, until: UnixTime, limit: usize) -> StoreFuture<Result<Vec<Record>, StoreError>> {
        let all = self.load_active();
        Box::pin(async move {
            let mut due: Vec<Record> = all
                .await?
                .into_iter()
                .filter(|r| r.due_at().is_some_and(|t| t <= until))
                .collect();
            due.sort_by_key(|r| (r.due_at(), r.fingerprint().to_string()));
            due.truncate(limit);
            Ok(due)
        })
    }

    /// Everything to resume at start: every unfinished record, and every
    /// finished one whose outcome is not yet delivered. In no particular
    /// order. A record that cannot be read is not skipped silently: the
    /// persistent stores of this crate quarantine it (reported, listed by
    /// [`quarantined`](Self::quarantined)) and return the others; a store
    /// without quarantine fails the whole call instead.
    fn load_active(&self) -> StoreFuture<Result<Vec<Record>, StoreError>>;

    /// Deletes finished records whose `finished_at` is before
    /// `finished_before`, delivered or not (the retention period is the
    /// application's choice); returns how many. Unfinished records are
    /// never purged. Durable.
    fn purge(&self, finished_before: UnixTime) -> StoreFuture<Result<usize, StoreError>>;

    /// Finishes every write in progress and releases the store's resources
    /// (a file store releases its file, so another process or a new
    /// [`FileStore`] can open it). Later calls fail with
    /// [`StoreError::Closed`]. Called by
    /// [`DtrClient::shutdown`](crate::DtrClient::shutdown); the default does
    /// nothing.
    fn close(&self) -> StoreFuture<Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Like [`due`](Self::due), and takes a [`Lease`] of `ttl` on each
    /// record returned, for the instance named `owner`: a record leased by
    /// another instance whose lease has not expired is skipped (without
    /// waiting for it), one whose lease expired is taken over with a
    /// higher epoch, and `owner`'s own leases are renewed. Shared stores
    /// decide expiry on their own clock, never the instances'. A record
    /// taken over from a lease that expired without being released is
    /// returned with
    /// [`PollMachine::taken_over_from_lapsed_lease`](crate::poll::PollMachine::taken_over_from_lapsed_lease)
    /// applied (the expiry on the store's clock), so that a poll its
    /// previous holder may have had in flight is not taken for a refusal.
    ///
    /// The default (for single-process stores) is `due` with
    /// [`Lease::SOLE`] on every record.
    fn claim_due(
        &self,
        owner: &str,
        until: UnixTime,
        limit: usize,
        ttl: Duration,
    ) -> StoreFuture<Result<Vec<(Record, Lease)>, StoreError>> {
        let _ = (owner, ttl);
        let due = self.due(until, limit);
        Box::pin(async move { Ok(due.await?.into_iter().map(|r| (r, Lease::SOLE)).collect()) })
    }

    /// Like [`claim_due`](Self::claim_due) but skips the records `owner`
    /// already holds a live lease on (so a batch is all new work, however
    /// many records the instance already holds). The default is
    /// `claim_due`.
    fn claim_due_unheld(
        &self,
        owner: &str,
        until: UnixTime,
        limit: usize,
        ttl: Duration,
    ) -> StoreFuture<Result<Vec<(Record, Lease)>, StoreError>> {
        self.claim_due(owner, until, limit, ttl)
    }

    /// Extends `owner`'s leases on these records by `ttl` from now (the
    /// store's clock). Returns, for each id in order, whether the lease is
    /// still held; `false` means the instance must stop polling it. The
    /// default holds every lease.
    fn renew_leases(
        &self,
        owner: &str,
        ids: &[DeferredId],
        ttl: Duration,
    ) -> StoreFuture<Result<Vec<bool>, StoreError>> {
        let _ = (owner, ttl);
        let n = ids.len();
        Box::pin(async move { Ok(vec![true; n]) })
    }

    /// [`update_state`](Self::update_state), fenced: refused with
    /// [`StoreError::LeaseLost`] unless `owner` still holds `lease` (same
    /// epoch, not expired). The default ignores the lease.
    fn update_state_leased(
        &self,
        id: &DeferredId,
        machine: PollMachine,
        owner: &str,
        lease: Lease,
    ) -> StoreFuture<Result<(), StoreError>> {
        let _ = (owner, lease);
        self.update_state(id, machine)
    }

    /// [`update_state_leased`](Self::update_state_leased), and, if the
    /// store can do it in the same write, the lease extended by `ttl` from
    /// now on the store's clock, as [`renew_leases`](Self::renew_leases)
    /// would. `Ok(true)`: written and renewed; `Ok(false)`: written, the
    /// lease left as it was. A fleet member writes its poll states with
    /// this and skips the separate renewal of the leases whose writes
    /// renewed them, so that an authentication polled more often than the
    /// lease is renewed costs one row write per poll and none per renewal.
    ///
    /// The default calls `update_state_leased` and answers `Ok(false)`.
    fn update_state_renewing(
        &self,
        id: &DeferredId,
        machine: PollMachine,
        owner: &str,
        lease: Lease,
        ttl: Duration,
    ) -> StoreFuture<Result<bool, StoreError>> {
        let _ = ttl;
        let w = self.update_state_leased(id, machine, owner, lease);
        Box::pin(async move { w.await.map(|()| false) })
    }

    /// [`finish`](Self::finish), fenced like
    /// [`update_state_leased`](Self::update_state_leased). The default
    /// ignores the lease.
    fn finish_leased(
        &self,
        id: &DeferredId,
        machine: PollMachine,
        outcome: StoredOutcome,
        owner: &str,
        lease: Lease,
    ) -> StoreFuture<Result<(), StoreError>> {
        let _ = (owner, lease);
        self.finish(id, machine, outcome)
    }

    /// Gives up `owner`'s lease on a record (at shutdown), so that another
    /// instance may claim it at once instead of after expiry. `Ok(false)`
    /// if the lease was not held. The default does nothing.
    fn release_lease(
        &self,
        id: &DeferredId,
        owner: &str,
        lease: Lease,
    ) -> StoreFuture<Result<bool, StoreError>> {
        let _ = (id, owner, lease);
        Box::pin(async { Ok(true) })
    }

    /// Whether several instances (processes) share this store. A shared
    /// store's authentications are polled by whichever instance holds
    /// their [`Lease`] ([`claim_due`](Self::claim_due)), not by the
    /// instance that inserted them; the client then claims work in
    /// batches, fences every write with the lease, and answers `wait`,
    /// `undelivered` and pings from the store. The default is `false`
    /// (one process owns everything in the store).
    fn is_shared(&self) -> bool {
        false
    }

    /// Asks the instance that holds `id`'s lease to poll it now (a ping
    /// arrived at another instance). Delivered to every subscriber of
    /// [`notices`](Self::notices) as [`StoreNotice::Wake`]. The default
    /// does nothing.
    fn publish_wake(&self, id: &DeferredId) -> StoreFuture<Result<(), StoreError>> {
        let _ = id;
        Box::pin(async { Ok(()) })
    }

    /// A stream of [`StoreNotice`]s from every instance (wake-ups, stored
    /// outcomes, quarantined records), or `None` if the store has none (the
    /// default). Notices
    /// may be lost (a dropped connection); after a
    /// [`StoreNotice::Reconnected`] a subscriber checks the store again.
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<StoreNotice>> {
        None
    }

    /// Marks the outcome delivered like [`mark_delivered`](Self::mark_delivered),
    /// but `Ok(true)` only for the call that changed it from undelivered:
    /// of two consumers that each [claimed](Self::claim_undelivered) the
    /// outcome (the first's claim ran out before it acknowledged), exactly
    /// one is told it acknowledged it; the other learns it was a duplicate.
    /// The default reads the record first, which is exact only for a
    /// store of one process (no other writer between the two calls);
    /// shared stores override it with one conditional write.
    fn mark_delivered_once(&self, id: &DeferredId) -> StoreFuture<Result<bool, StoreError>> {
        let before = self.get(id);
        let mark = self.mark_delivered(id);
        Box::pin(async move {
            let was_undelivered = before
                .await?
                .and_then(|r| r.outcome)
                .is_some_and(|o| !o.delivered);
            let marked = mark.await?;
            Ok(marked && was_undelivered)
        })
    }

    /// Finished records whose outcome is not yet delivered and not claimed
    /// by another consumer, at most `limit` of them, each claimed for
    /// `visibility`: another call does not return it again until that
    /// time has passed (on the store's clock) without
    /// [`mark_delivered`](Self::mark_delivered). So each outcome goes to one
    /// consumer at a time, and one that died before acknowledging is handed
    /// to another later. The default (single-process stores) returns every
    /// undelivered outcome, unclaimed.
    fn claim_undelivered(
        &self,
        limit: usize,
        visibility: Duration,
    ) -> StoreFuture<Result<Vec<Record>, StoreError>> {
        let _ = visibility;
        let all = self.load_active();
        Box::pin(async move {
            let mut v: Vec<Record> = all
                .await?
                .into_iter()
                .filter(|r| r.outcome.as_ref().is_some_and(|o| !o.delivered))
                .collect();
            v.sort_by_key(|r| (r.finished_at(), r.fingerprint().to_string()));
            v.truncate(limit);
            Ok(v)
        })
    }

    /// The records set aside because they could not be read, were not
    /// authentic or were not this store's (see [the durability
    /// guide](crate::guide::durability)), in no particular order. They are kept as they
    /// were found, for inspection; no other method returns them. The
    /// default (a store that never quarantines) is empty.
    ///
    /// ```no_run
    /// # async fn admin(store: &dyn oidc_dtr::store::Store) -> Result<(), oidc_dtr::error::StoreError> {
    /// for q in store.quarantined().await? {
    ///     // `key` names the record by its hash; `reason` says what failed.
    ///     println!("{:?}: {}", q.key, q.reason);
    ///     // After repairing the row (or giving the store the right sealing
    ///     // key), take it back without a restart:
    ///     if store.release_quarantined(q.key).await? {
    ///         println!("released");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    fn quarantined(&self) -> StoreFuture<Result<Vec<QuarantinedRecord>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Checks a quarantined record again and, if it now reads (it was
    /// repaired, or the store now has the right key), puts it back:
    /// `Ok(true)`. A pending record is then due again and claimed like any
    /// other (with a new lease epoch in a shared store). `Ok(false)` if no
    /// record with this key is quarantined. A record that still does not
    /// read stays quarantined and the call fails with the reason. The
    /// default (a store that never quarantines) is `Ok(false)`.
    fn release_quarantined(&self, key: RecordKey) -> StoreFuture<Result<bool, StoreError>> {
        let _ = key;
        Box::pin(async { Ok(false) })
    }
}

/// A record set aside by a store ([`Store::quarantined`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuarantinedRecord {
    /// Its key (the SHA-256 of its `deferred_auth_id`).
    pub key: RecordKey,
    /// Why it was set aside (the read error, which holds no secret).
    pub reason: String,
}

impl QuarantinedRecord {
    /// A quarantined record (for [`Store`] implementations).
    pub fn new(key: RecordKey, reason: impl Into<String>) -> Self {
        QuarantinedRecord {
            key,
            reason: reason.into(),
        }
    }
}

/// Whether a read error means "this record is bad" (quarantine it), as
/// opposed to "the store cannot be read now" (retry the call).
#[cfg_attr(
    not(any(feature = "file-store", feature = "postgres")),
    allow(dead_code)
)]
pub(crate) fn is_bad_record(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Corrupt {
            record: Some(_),
            ..
        } | StoreError::Sealing(_)
            | StoreError::UnsupportedSchema {
                record: Some(_),
                ..
            }
    )
}

/// The metric label of a quarantine reason.
fn quarantine_label(e: &StoreError) -> &'static str {
    match e {
        StoreError::Sealing(_) => "seal",
        StoreError::UnsupportedSchema { .. } => "schema",
        StoreError::Corrupt { detail, .. } if detail.starts_with(FOREIGN_RECORD) => "foreign",
        StoreError::Corrupt { detail, .. } if detail.starts_with(DELIVERY_STATE) => {
            "delivery_state"
        }
        _ => "corrupt",
    }
}

/// The detail of a record of another issuer or client.
pub(crate) const FOREIGN_RECORD: &str = "the record belongs to another issuer or client";
/// The detail of a record whose delivery index contradicts its body.
pub(crate) const DELIVERY_STATE: &str = "the delivery state was changed outside the store";

/// Reports a record a store has just quarantined: the counter and the log
/// line (the notice is the store's to send). Names it by fingerprint only.
pub(crate) fn report_quarantined(store: &'static str, key: &[u8; 32], e: &StoreError) {
    let reason = quarantine_label(e);
    metrics::counter!("oidc_dtr_store_quarantined_total", "store" => store, "reason" => reason)
        .increment(1);
    tracing::warn!(
        deferred_auth_id = %key_fingerprint(key),
        store,
        reason,
        error = %e,
        "a stored record could not be used and was quarantined; the others go on"
    );
}

/// Refuses a decoded record of another issuer or client than the store's.
pub(crate) fn check_record_owner(
    bound: Option<(&str, &str)>,
    record: &Record,
) -> Result<(), StoreError> {
    match bound {
        Some((i, c)) if record.auth.issuer() != i || record.auth.client_id() != c => {
            Err(StoreError::corrupt(
                Some(record.fingerprint()),
                format!("{FOREIGN_RECORD} (copied from another store?)"),
            ))
        }
        _ => Ok(()),
    }
}

/// Something another instance of a fleet did, as a shared store reports it
/// ([`Store::notices`]). Records are named by their key (the SHA-256 of
/// the `deferred_auth_id`), never by the id.
///
/// ```
/// use oidc_dtr::DeferredId;
/// use oidc_dtr::store::{RecordKey, StoreNotice};
///
/// fn describe(notice: StoreNotice) -> String {
///     match notice {
///         StoreNotice::Wake(key) => format!("poll {:?} now", key.fingerprint()),
///         StoreNotice::Finished(key) => format!("{:?} has its outcome", key.fingerprint()),
///         StoreNotice::Quarantined(key) => format!("{:?} was set aside", key.fingerprint()),
///         StoreNotice::Reconnected => "look at the store again".into(),
///         _ => "a newer notice".into(),
///     }
/// }
/// let key = RecordKey::of(&DeferredId::new("f4oirNBUlM-abcdef"));
/// assert!(describe(StoreNotice::Wake(key)).starts_with("poll"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreNotice {
    /// A ping for this record arrived somewhere: its owner should poll.
    Wake(RecordKey),
    /// This record's outcome was stored.
    Finished(RecordKey),
    /// This record could not be read, was not authentic or was not this
    /// store's, and was set aside ([`Store::quarantined`]).
    Quarantined(RecordKey),
    /// The notice stream was interrupted and resumed: notices may have been
    /// missed, so look at the store again.
    Reconnected,
}

/// The SHA-256 of a `deferred_auth_id`: how shared stores and their
/// notices name a record without revealing the id.
///
/// ```
/// use oidc_dtr::DeferredId;
/// use oidc_dtr::store::RecordKey;
///
/// let id = DeferredId::new("f4oirNBUlM-abcdef");
/// let key = RecordKey::of(&id); // what a shared store indexes by
/// assert_eq!(RecordKey::from_bytes(*key.as_bytes()), key);
/// assert_eq!(key.fingerprint(), id.fingerprint());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordKey(pub(crate) [u8; 32]);

impl RecordKey {
    /// A key from its 32 bytes (for [`Store`] implementations).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        RecordKey(bytes)
    }

    /// Its 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key of an id.
    pub fn of(id: &DeferredId) -> Self {
        RecordKey(record_key(id))
    }

    /// Its log-safe fingerprint (the id's [`Fingerprint`]).
    pub fn fingerprint(&self) -> Fingerprint {
        key_fingerprint(&self.0)
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordKey({:?})", self.fingerprint())
    }
}

/// A lease on one authentication: the right of one instance (its `owner`
/// name) to poll it and write its state until the lease expires.
///
/// Stores shared by several instances (`PostgresStore`, with the
/// `postgres` feature) hand out leases in
/// [`Store::claim_due`]; every later write names the lease and is refused
/// with [`StoreError::LeaseLost`] once another instance has taken the
/// authentication over (its epoch went up). Single-process stores give the
/// [`Lease::SOLE`] lease and never refuse it.
///
/// ```
/// use oidc_dtr::store::Lease;
///
/// // A single-process store always holds the lease...
/// assert_eq!(Lease::SOLE.epoch, 0);
/// // ...a shared one hands out a higher epoch at each change of owner.
/// let taken_over = Lease::new(Lease::SOLE.epoch + 1);
/// assert!(taken_over.epoch > Lease::SOLE.epoch);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Lease {
    /// Incremented each time the authentication changes owner: a write
    /// with an older epoch comes from an instance that lost its lease.
    pub epoch: u64,
}

impl Lease {
    /// The lease of a store with one process: always held.
    pub const SOLE: Lease = Lease { epoch: 0 };

    /// A lease of this epoch (for [`Store`] implementations).
    pub const fn new(epoch: u64) -> Self {
        Lease { epoch }
    }
}

/// Shared checks of `bind` and `insert`, so every implementation in this
/// crate words them alike.
pub(crate) fn check_owner(
    bound: Option<(&str, &str)>,
    issuer: &str,
    client_id: &str,
) -> Result<(), StoreError> {
    match bound {
        Some((bi, bc)) if bi != issuer || bc != client_id => Err(StoreError::WrongOwner {
            expected_issuer: issuer.to_owned(),
            expected_client_id: client_id.to_owned(),
            found_issuer: bi.to_owned(),
            found_client_id: bc.to_owned(),
        }),
        _ => Ok(()),
    }
}

pub(crate) fn check_schema(record: &Record) -> Result<(), StoreError> {
    if record.schema != SCHEMA_VERSION {
        return Err(StoreError::UnsupportedSchema {
            found: record.schema,
            supported: SCHEMA_VERSION,
            record: Some(record.fingerprint()),
        });
    }
    Ok(())
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            None => write!(
                f,
                "deferred authentication {:?} (pending)",
                self.fingerprint()
            ),
            Some(o) => write!(
                f,
                "deferred authentication {:?} ({}{})",
                self.fingerprint(),
                o.outcome.kind(),
                if o.delivered { ", delivered" } else { "" }
            ),
        }
    }
}

#[cfg(test)]
mod tests;
