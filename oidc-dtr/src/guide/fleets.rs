//! Fleets: several instances of one RP sharing their pending
//! authentications on PostgreSQL.
//!
//! # The problem
//!
//! A web application runs as several replicas behind a load balancer. The
//! user's browser comes back to one of them, the OP pings another, the user
//! asks for the status on a third, and any of them may be stopped or
//! replaced while an authentication is pending. The drafts still demand
//! *single flight*: one token request per authentication at a time, no
//! faster than the floor, because the OP redeems an id once and punishes
//! polling that is too fast.
//!
//! # What the SDK does
//!
//! With a store that is shared between instances
//! ([`Store::is_shared`](crate::store::Store::is_shared); `PostgresStore`, cargo
//! feature `postgres`, is the one this crate ships) and
//! [`DtrClientBuilder::fleet`](crate::DtrClientBuilder::fleet), each client
//! is a member of a fleet:
//!
//! - **Leases.** An instance does not poll what it inserted, nor load
//!   everything at start. A background task claims due authentications in
//!   batches ([`Store::claim_due`](crate::store::Store::claim_due): `FOR UPDATE
//!   SKIP LOCKED`, so instances claiming at once get disjoint batches and
//!   none waits), each with a lease of
//!   [`FleetConfig::lease_ttl`](crate::poll::FleetConfig::lease_ttl()) (30 s by
//!   default) measured on the database's clock. It renews the leases it
//!   holds every quarter of the TTL, except those a poll-state write
//!   renewed meanwhile
//!   ([`Store::update_state_renewing`](crate::store::Store::update_state_renewing):
//!   `PostgresStore` extends the lease in the same statement), so an
//!   authentication polled more often than that costs one row write per
//!   poll and none for its lease.
//! - **Fencing.** Every poll-state write and the outcome write go through
//!   the lease ([`Store::update_state_leased`](crate::store::Store::update_state_leased),
//!   [`Store::finish_leased`](crate::store::Store::finish_leased)), checked against
//!   the lease's owner, expiry and *epoch* (a counter raised at each change
//!   of owner) in the same transaction. An instance that stalled past its
//!   lease gets [`StoreError::LeaseLost`](crate::error::StoreError::LeaseLost)
//!   instead of overwriting newer state, and stops polling that
//!   authentication. A lost lease never drops a poll's result: tokens that
//!   arrived are still stored for the new owner to deliver, never thrown
//!   away.
//! - **No poll near the end of a lease.** An instance sends a poll only
//!   while its lease outlasts the poll's token request, by its own
//!   monotonic clock: the HTTP timeout ([`HttpConfig`](crate::client::HttpConfig),
//!   30 s total by default) plus a twelfth of the TTL, or a third of the
//!   TTL when the timeout does not fit in that (10 s of the default 30 s).
//!   An instance that stalls or loses the database therefore stops polling
//!   before another one may start. A request slower than a third of the
//!   TTL may outlive its lease: its answer is still handled, but another
//!   instance may poll meanwhile, so keep the HTTP timeout under a third
//!   of the TTL less a twelfth, or the lease long enough.
//! - **Takeover.** When an instance dies, its leases run out and another
//!   instance claims the authentications, with the same deadline and DPoP
//!   key; the first poll waits a full floor after the claim. If the dead
//!   instance had a poll in flight, that poll's fate is unknown: when the
//!   new owner's first answer is `invalid_grant`, the OP most likely issued
//!   the tokens to the dead instance, and the outcome is
//!   [`Outcome::PossiblyLostInTransit`](crate::Outcome::PossiblyLostInTransit),
//!   not a plain rejection.
//! - **Pings on any instance.** A ping is checked against the
//!   notification-token hash in the store and passed to the instance that
//!   holds the lease (PostgreSQL `LISTEN`/`NOTIFY`), which polls at once if
//!   the floor allows. A ping for an authentication nobody holds makes it
//!   due, and whoever claims it polls.
//! - **Outcomes on any instance.** [`wait`](crate::DtrClient::wait) on any
//!   instance returns once the outcome is stored, whoever polled.
//!   [`undelivered`](crate::DtrClient::undelivered) hands each stored
//!   outcome to one consumer at a time: a claim hidden from the others for
//!   [`FleetConfig::delivery_visibility`](crate::poll::FleetConfig::delivery_visibility())
//!   (60 s by default), so an outcome whose consumer died before
//!   [`ack`](crate::DtrClient::ack) is handed out again.
//!
//! Single-process stores ([`MemoryStore`](crate::store::MemoryStore),
//! [`FileStore`](crate::store::FileStore)) hold every lease; the same engine runs
//! without a fleet.
//!
//! # The PostgreSQL store
//!
//! `PostgresStore::connect` creates its schema (`oidc_dtr` by default) or
//! migrates it, once, even when many replicas start together (a versioned
//! `migrations` table, under `pg_advisory_xact_lock`). A schema written by a
//! newer release is refused with
//! [`StoreError::UnsupportedSchema`](crate::error::StoreError::UnsupportedSchema).
//! The store is bound to one issuer and one client id. Records are keyed
//! by the SHA-256 of their id, and sealed when you give a
//! [`Sealer`](crate::store::Sealer). A database that is down, drops connections or
//! does not answer in time gives
//! [`StoreError::Unavailable`](crate::error::StoreError::Unavailable), which
//! [`is_retryable`](crate::error::StoreError::is_retryable): the engine keeps
//! polling what it holds while its leases last, and retries the store.
//!
//! # What your application does
//!
//! - Enable the `postgres` feature; connect one `PostgresStore` per
//!   instance to the same database and schema, with the same sealing key.
//! - Build every instance's client with the same issuer, client id and
//!   [`FleetConfig`](crate::poll::FleetConfig) (the defaults suit most); give each
//!   a distinct [`instance`](crate::poll::FleetConfig::instance()) name if you want
//!   readable leases.
//! - Route the ping endpoint and the status pages to any instance.
//! - An instance with [`max_held(0)`](crate::poll::FleetConfig::max_held()) polls
//!   nothing itself but still answers `wait`, `undelivered` and pings: a
//!   pure front end.
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn f(key: [u8; 32]) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use oidc_dtr::{DtrClient, store::{AesGcmSealer, PostgresStore}, poll::FleetConfig};
//!
//! let store = PostgresStore::options(std::env::var("DTR_DATABASE_URL")?)
//!     .sealer(Arc::new(AesGcmSealer::new(key)?)) // the same key on every instance
//!     .connect()
//!     .await?;
//! let client = DtrClient::builder()
//!     .issuer("https://op.example.com")
//!     .client_id("s6BhdRkqt3")
//!     .client_secret("7Fjfp0ZBr1KtDRbnfVdmIw")
//!     .redirect_uri("https://rp.example.com/cb")
//!     .notification_endpoint("https://rp.example.com/dtr/ping")
//!     .store(store)
//!     .fleet(FleetConfig::default().lease_ttl(Duration::from_secs(30)))
//!     .build()
//!     .await?;
//! // Any instance: wait, undelivered, ack and pings work for every authentication.
//! for delivery in client.undelivered().await {
//!     // handle delivery.outcome, keyed by delivery.outcome_id, then:
//!     client.ack(&delivery.id).await?;
//! }
//! # Ok(()) }
//! ```
