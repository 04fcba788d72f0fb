//! Surviving restarts: what is written down, when, and how outcomes reach
//! your code exactly once.
//!
//! # Why it matters
//!
//! A deferred authentication lives for hours or days: longer than many
//! processes, across deploys and crashes. The drafts expect the RP to keep
//! everything it needs for that long: the `deferred_auth_id`, the `nonce`
//! the final ID token must carry, the DPoP key the OP bound to the id (RFC
//! 9449 §5: a public client must prove every poll with the same key), the
//! hash of the notification token, the deadline and the poll interval. And
//! since the OP hands the tokens out exactly once (a second poll gets
//! `invalid_grant`), a token response that reached the RP must never be
//! lost afterwards.
//!
//! # What the SDK does
//!
//! The client writes to a [`Store`](crate::store::Store) at fixed points:
//!
//! 1. the authentication, when the exchange is answered, *before*
//!    `exchange` returns (so an authentication you were told about is never
//!    lost);
//! 2. its poll state, as polling goes (floor, counters, deadline);
//! 3. its outcome, tokens included, *before* it is handed to you;
//! 4. that you took the outcome, when you call
//!    [`ack`](crate::DtrClient::ack);
//! 5. and it purges finished records after the retention period.
//!
//! A new client on the same store reads every unfinished authentication
//! back and resumes it: same deadline, same floor, same DPoP key. Its first
//! poll waits a full floor from the restart, in case a poll just before the
//! crash was not recorded. Outcomes that were stored but never
//! acknowledged are handed over again
//! ([`DtrClient::undelivered`](crate::DtrClient::undelivered)): delivery is
//! *at least once*, and each outcome carries a stable
//! [`OutcomeId`](crate::OutcomeId), so a handler that runs twice can tell.
//!
//! **Tokens in hand are never lost.** Tokens that arrived are kept before
//! anything else can fail: when the OP's JWK Set cannot be fetched at that
//! moment, the token response is kept (durably, with a durable store) and
//! validated when the keys are reachable again, instead of being dropped or
//! turned into an error. When the ID token names a key (`kid`) the cached
//! JWK Set does not have, the SDK refreshes the set once for that token
//! response (key rotation), whatever the cooldown that protects the OP
//! from floods of unknown `kid`s.
//!
//! **Bad records stay put.** A stored record that cannot be decoded, or
//! whose seal does not verify, is quarantined: reported (as a
//! [`StoreError`](crate::error::StoreError) and in the logs, naming the record by
//! its [`Fingerprint`](crate::secret::Fingerprint), never by its id), kept in the
//! store for inspection, and never allowed to stop the other
//! authentications from loading. Nothing is silently skipped or deleted.
//!
//! The one gap no client can close: a crash after the OP sent the tokens
//! and before they reached the disk. Only an OP that answers a repeated
//! poll again (within some window) can recover that; otherwise the next
//! poll gets `invalid_grant` and the outcome is
//! [`Outcome::PossiblyLostInTransit`](crate::Outcome::PossiblyLostInTransit).
//!
//! # The stores
//!
//! | store | for | durable |
//! |---|---|---|
//! | [`MemoryStore`](crate::store::MemoryStore) (the default) | tests, and applications that accept losing pending authentications on restart | no |
//! | [`FileStore`](crate::store::FileStore) | one process: a single file, no server | yes |
//! | `PostgresStore` (feature `postgres`) | a fleet of instances on one database (see [`fleets`](super::fleets)) | yes |
//! | your own [`Store`](crate::store::Store) | anything else | as you implement it |
//!
//! **The `FileStore` contract.** The file is a redb database (copy-on-write
//! B-trees, checksummed commits): a crash or power loss never leaves a
//! half-written record. Inserting an authentication, storing an outcome,
//! acknowledging and purging are durable when their future resolves (the
//! commit has been `fsync`ed). Poll-state updates are grouped and made
//! durable at least once a second, so a crash loses at most about a second
//! of poll state, never a record and never an outcome; that is why a
//! resumed authentication waits a full floor. Only one process opens a file
//! at a time ([`StoreError::Locked`](crate::error::StoreError::Locked) for the
//! second). A damaged or foreign file fails to open with
//! [`StoreError::Corrupt`](crate::error::StoreError::Corrupt) and is left byte
//! for byte as it was. `FileStore::open` checks every page, so it blocks:
//! call it before the runtime starts or in `spawn_blocking`.
//!
//! **Encryption at rest.** A record holds every secret of an
//! authentication (the id, the PKCE verifier, the nonce, the DPoP private
//! key unless an external signer holds it) and, once it succeeded, the
//! tokens. Give the store a
//! [`Sealer`](crate::store::Sealer), such as [`AesGcmSealer`](crate::store::AesGcmSealer)
//! with a 256-bit key from your secret manager, and every record is sealed
//! as a whole. The seal also binds the record to the store's issuer and
//! client and to its delivery state, so a sealed record copied into another
//! store, or rolled back to "not yet delivered", does not verify. A store
//! created sealed stays sealed; opening it with another key fails with
//! [`StoreError::Sealing`](crate::error::StoreError::Sealing).
//!
//! Records carry a schema version
//! ([`STORE_SCHEMA_VERSION`](crate::store::SCHEMA_VERSION)); a store written
//! by a newer release is refused with
//! [`StoreError::UnsupportedSchema`](crate::error::StoreError::UnsupportedSchema)
//! rather than guessed at.
//!
//! # What your application does
//!
//! - Choose a durable store for production, and keep its file (or
//!   database) and sealing key safe: they hold bearer secrets.
//! - At start-up, take [`undelivered`](crate::DtrClient::undelivered)
//!   outcomes and handle them like fresh ones.
//! - Handle each outcome idempotently (keyed by its `OutcomeId`), commit
//!   the result to your own database, and only then
//!   [`ack`](crate::DtrClient::ack) it.
//! - Call [`DtrClient::shutdown`](crate::DtrClient::shutdown) on a graceful
//!   stop: polls in flight finish and their results are stored, and the
//!   file is released.
//! - Writing your own [`Store`](crate::store::Store)? Its docs state what each
//!   method must make atomic and durable; the `oidc-dtr-testkit` crate's
//!   `store_conformance_tests!` macro runs the behaviour every store must
//!   show against yours.
//!
//! # Example: a restart in the middle of an authentication
//!
//! ```
//! use oidc_dtr::{CallbackResponse, DtrClient, Outcome, store::FileStore};
//! use oidc_dtr_testkit::{MockOp, OpConfig};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = OpConfig::default();
//! config.interval = Some(1);
//! let op = MockOp::builder().config(config).start().await?;
//! let path = std::env::temp_dir().join(format!("oidc-dtr-guide-{}.redb", std::process::id()));
//! # let _ = std::fs::remove_file(&path);
//!
//! // A client on a store file. (Opening checks the file: a blocking call.)
//! let client_on = |path: std::path::PathBuf| {
//!     let issuer = op.issuer().to_owned();
//!     async move {
//!         let store = tokio::task::spawn_blocking(move || FileStore::open(path)).await??;
//!         let client = DtrClient::builder()
//!             .issuer(issuer)
//!             .client_id(MockOp::CLIENT_ID)
//!             .client_secret(MockOp::CLIENT_SECRET)
//!             .redirect_uri("http://127.0.0.1:9/callback")
//!             .store(store)
//!             .build()
//!             .await?;
//!         Ok::<_, Box<dyn std::error::Error>>(client)
//!     }
//! };
//!
//! let client = client_on(path.clone()).await?;
//! let (url, pending) = client.authorize().build()?;
//! let back = op.browse(&url).await?;
//! let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, back.query())? else {
//!     panic!("the mock OP defers")
//! };
//! let auth = client.exchange(ack).await?; // on disk before this returns
//!
//! // A deploy: the process stops while the OP is still deciding.
//! client.shutdown().await;
//! drop(client);
//! assert!(op.approve(auth.id()));
//!
//! // The next process resumes the authentication from the file...
//! let client = client_on(path.clone()).await?;
//! let outcome = client.wait(auth.id()).await?;
//! assert!(matches!(outcome, Outcome::Tokens(_)));
//! // ... and hands the outcome over until it is acknowledged.
//! assert_eq!(client.undelivered().await.len(), 1);
//! assert!(client.ack(auth.id()).await?);
//! assert!(client.undelivered().await.is_empty());
//! # client.shutdown().await;
//! # let _ = std::fs::remove_file(&path);
//! # Ok(()) }
//! ```
