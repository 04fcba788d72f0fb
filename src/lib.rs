//! # oidc-dtr
//!
//! A Relying-Party SDK for the OpenID Connect **Deferred Token Response**
//! (DTR) flow: for OpenID Providers that need hours or days to decide who a
//! user is (document review, fraud checks, step-up identity verification).
//!
//! ## The flow
//!
//! ```text
//!  RP                                   OP
//!  |-- (1) authorize: response_type=deferred_code -->|  (browser)
//!  |<- (2) redirect: deferred_code, state, iss ------|
//!  |-- (3) exchange: deferred_code ----------------->|  token endpoint
//!  |<------ deferred_auth_id, expires_in, interval --|
//!  |          ... hours or days ...                  |
//!  |<- (4) optional ping: {deferred_auth_id} --------|  notification endpoint
//!  |-- (5) poll: deferred_auth_id ------------------>|  token endpoint
//!  |<------ authorization_pending | slow_down | tokens
//! ```
//!
//! 1. [`DtrClient::authorize`] builds the URL (`state`, `nonce` and PKCE S256
//!    always) and a [`PendingAuthorization`] to keep in the user's session.
//! 2. [`DtrClient::callback`] validates the redirect: `state` (constant
//!    time), `iss` (RFC 9207), the `deferred_code` charset, and the rule that
//!    `code` and `deferred_code` never come together.
//! 3. [`DtrClient::exchange`] trades the `deferred_code` for a
//!    [`DeferredAuthentication`] whose deadline is absolute, so that it
//!    survives restarts unchanged. An `interim_id_token` is validated there.
//!    The exchange stores it (see [`store`]) and hands it to the client's
//!    poll engine.
//! 4. The poll engine ([`poll`]: a sans-IO state machine per authentication,
//!    one driver task for all of them) polls no faster than the OP's
//!    interval (raised on `slow_down`, never lowered), backs off on network
//!    trouble on top of that floor, stops at the deadline, and is woken early
//!    by pings ([`DtrClient::ping_receiver`], [`ping`]).
//! 5. When the OP answers with tokens, the ID token is validated (always:
//!    signature against the OP's JWK Set, `iss`, `aud`, `azp`,
//!    `exp`/`nbf`/`iat`, the request's `nonce`, `at_hash`, `auth_time`
//!    against `max_age`, the interim `sub`), the outcome is stored, and only
//!    then handed over: [`DtrClient::wait`] or [`DtrClient::subscribe`], one
//!    [`poll::Outcome`] per authentication, at least once across restarts
//!    until [`DtrClient::ack`]. With `deferred_code code`, an immediate plain
//!    `code` goes through [`DtrClient::exchange_code`] to the same
//!    [`TokenSet`].
//!
//! Public clients use DPoP by default (a key per authentication, a fresh
//! proof per request, server nonces); confidential ones can use
//! `private_key_jwt` ([`ClientAuth`]); [`DtrClient::cancel`] tells the OP
//! the user gave up.
//!
//! ## Design
//!
//! The protocol core is sans-IO: request builders return data, parsers take
//! bytes, and the clock ([`time::Clock`]) and random source
//! ([`rand::RandomSource`]) are injected. One HTTP edge talks to the network
//! with secure defaults: no redirects, https only (loopback excepted), capped
//! bodies, timeouts. Secrets live in newtypes ([`secret`]) that never print.
//!
//! The `testkit` feature adds an in-process mock OP for tests: discovery,
//! JWKS with rotation, the whole DTR server side, DPoP, client assertions,
//! cancellation, pings, fault injection and a request log.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod authorize;
pub mod callback;
pub mod cancel;
pub mod claims;
pub mod client;
pub mod client_auth;
pub mod discovery;
pub mod error;
pub mod exchange;
pub mod http;
pub mod jose;
mod json;
pub mod ping;
pub mod poll;
pub mod rand;
pub mod secret;
pub mod store;
pub mod time;
pub mod token;
mod token_endpoint;

#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use authorize::{PendingAuthorization, ResponseMode, ResponseType};
pub use callback::{Acknowledgment, CallbackResponse, CodeResponse};
pub use claims::IdTokenClaims;
pub use client::{DtrClient, DtrClientBuilder};
pub use client_auth::ClientAuth;
pub use discovery::ProviderMetadata;
pub use error::{Error, ErrorCode, OAuthError, ValidationError};
pub use exchange::{Compat, DeferredAuthentication};
pub use http::HttpConfig;
pub use jose::{Algorithm, JwksConfig, JwksSnapshot, ValidationOptions};
pub use secret::DeferredAuthId;
pub use store::{
    AesGcmSealer, FileStore, MemoryStore, Record, Sealer, Store, StoreError, StoredOutcome,
};
pub use token::{IdToken, TokenResponse, TokenSet, ValidationContext};
