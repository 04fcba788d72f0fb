//! Cargo features, and the companion crates.
//!
//! # Features of `oidc-dtr`
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `file-store` | **on** | `FileStore` and `FileStoreOptions`: the embedded durable store, one file, no server (see [`durability`](super::durability)); pulls in `redb` (pure Rust) |
//! | `postgres` | off | `PostgresStore` and `PostgresOptions`: a store shared by a fleet of instances on one PostgreSQL database (see [`fleets`](super::fleets)); pulls in `tokio-postgres` and `deadpool-postgres` |
//!
//! Everything else is always built: the client, the poll engine, the ping
//! receiver, the identity-assurance types, the in-memory store, the
//! [`Sealer`](crate::store::Sealer) trait and [`AesGcmSealer`](crate::store::AesGcmSealer)
//! (both durable stores seal with it).
//!
//! A single instance keeps the defaults:
//!
//! ```toml
//! [dependencies]
//! oidc-dtr = "0.1"
//! ```
//!
//! A fleet on PostgreSQL adds `postgres`, and can leave out the file store
//! so that redb is not compiled at all:
//!
//! ```toml
//! [dependencies]
//! oidc-dtr = { version = "0.1", default-features = false, features = ["postgres"] }
//! ```
//!
//! Items that need a feature are marked with it on docs.rs, which builds
//! with every feature. A local `cargo doc` shows only the features you
//! enable: run `cargo doc -p oidc-dtr --all-features` to see them all.
//!
//! # What the build needs
//!
//! Rust 1.90 or later, a tokio runtime (the client spawns its poll engine
//! on the current runtime), and a C compiler: cryptography (signatures,
//! DPoP keys, AES-GCM sealing, TLS through rustls) is aws-lc-rs, so the
//! crate has one cryptographic stack.
//!
//! # Companion crates
//!
//! - **`oidc-dtr-testkit`**: an in-process mock OP for your tests (add it
//!   as a dev-dependency): discovery, JWKS with rotation, both drafts'
//!   server side, DPoP, client assertions, cancellation, pings, fault
//!   injection (lost answers, 5xx, slow answers, broken ID tokens) and a
//!   request log; plus `store_conformance_tests!`, the behaviour every
//!   [`Store`](crate::store::Store) must show, to run against your own. The
//!   runnable examples of this guide use it.
//! - **`oidc-dtr-cli`**: `dtr`, a command-line RP (`dtr verify`, `dtr wait`,
//!   `dtr demo`).
//! - **`oidc-dtr-web`**: a reference RP web application (axum,
//!   server-side sessions, live status, the ping receiver mounted).
