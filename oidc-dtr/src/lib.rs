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
//! 4. The poll engine (a sans-IO state machine per authentication ([`poll::PollMachine`]),
//!    one driver task for all of them) polls no faster than the OP's
//!    interval (raised on `slow_down`, never lowered), backs off on network
//!    trouble on top of that floor, stops at the deadline, and is woken early
//!    by pings ([`DtrClient::ping_receiver`], [`ping::PingReceiver`]).
//! 5. When the OP answers with tokens, the ID token is validated (always:
//!    signature against the OP's JWK Set, `iss`, `aud`, `azp`,
//!    `exp`/`nbf`/`iat`, the request's `nonce`, `at_hash`, `auth_time`
//!    against `max_age`, the interim `sub`), the outcome is stored, and only
//!    then handed over: [`DtrClient::wait`] or [`DtrClient::subscribe`], one
//!    [`Outcome`] per authentication, at least once across restarts
//!    until [`DtrClient::ack`]. With `deferred_code code`, an immediate plain
//!    `code` goes through [`DtrClient::exchange_code`] to the same
//!    [`TokenSet`].
//!
//! The same engine speaks the IETF OAuth draft too ([`Profile::Ietf`]:
//! `completion_mode=deferred` on the token request of the code or device
//! grant, [`DtrClient::redeem_code`] / [`DtrClient::device_token`], a
//! `deferral_code` to poll, `interaction_required` surfaced as
//! [`PollEvent::Interaction`], cancellation by revocation); the profile is
//! chosen from the OP's metadata or forced with
//! [`DtrClientBuilder::profile`].
//!
//! Public clients use DPoP by default (a key per authentication, a fresh
//! proof per request, server nonces); confidential ones can use
//! `private_key_jwt` ([`ClientAuth`]); [`DtrClient::cancel`] tells the OP
//! the user gave up.
//!
//! ## Guide
//!
//! The [`guide`] teaches the flow a page per topic: [the flow](guide::flow),
//! [polling](guide::polling), [pings](guide::pings),
//! [durability](guide::durability), [fleets](guide::fleets), [the IETF
//! profile](guide::ietf), [identity assurance](guide::identity_assurance),
//! [security defaults](guide::security) and the [cargo
//! features](guide::features).
//!
//! ## Where things are
//!
//! The root holds what one authentication goes through, start to end. The
//! rest is in modules, each with a page that explains its part:
//!
//! | module | what it holds |
//! |---|---|
//! | [`client`] | the client, its builder and the configuration it takes (HTTP, DPoP, client authentication, cancellation) |
//! | [`poll`] | polling: events, status, the engine's settings, and the sans-IO [`poll::PollMachine`] for other runtimes |
//! | [`tokens`] | tokens, ID token claims and their validation, the JWKS cache |
//! | [`ping`] | the receiver for the OP's pings (notification endpoint), with no web framework |
//! | [`store`] | durable state: the [`store::Store`] trait, memory, file and PostgreSQL stores, sealing |
//! | [`ietf`] | the IETF OAuth profile and the device grant |
//! | [`assurance`] | identity assurance: asking for, reading and checking `verified_claims` |
//! | [`jose`] | keys: signing keys for client assertions, DPoP keys, JWK Sets, thumbprints |
//! | [`error`] | every error type, by what failed |
//! | [`secret`] | the newtypes that keep secrets out of logs |
//! | [`time`], [`random`] | the injectable clock and random source |
//! | [`guide`] | the guide: no API, only text |
//!
//! The protocol core is sans-IO: request builders return data, parsers take
//! bytes, and the clock ([`time::Clock`]) and random source
//! ([`random::RandomSource`]) are injected. One HTTP edge talks to the
//! network with secure defaults: no redirects, https only (loopback
//! excepted), capped bodies, timeouts. Secrets live in newtypes (e.g.
//! [`DeferredId`]) that never print.
//!
//! ## Optional features
//!
//! - `file-store` (on by default): [`store::FileStore`], the embedded
//!   durable store (one file, built on `redb`). Turn default features off
//!   if you only use PostgreSQL or your own store.
//! - `postgres` (off by default): [`store::PostgresStore`], one PostgreSQL
//!   database shared by a fleet of instances (leases, fenced writes).
//!
//! See [the features page](guide::features) for what each brings in.
//!
//! The `oidc-dtr-testkit` crate is an in-process mock OP for tests (yours
//! and ours): discovery, JWKS with rotation, the whole DTR server side, DPoP,
//! client assertions, cancellation, pings, fault injection, a request log,
//! and the conformance suite for your own [`store::Store`].

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, unreachable_pub)]
#![warn(clippy::exhaustive_enums, clippy::exhaustive_structs)]
#![forbid(unsafe_code)]

// Private modules first; the public ones are the API's pages.
pub mod assurance;
pub mod client;
mod engine;
pub mod error;
pub mod guide;
pub mod ietf;
pub mod jose;
mod json;
pub mod ping;
pub mod poll;
mod proto;
pub mod random;
pub mod secret;
pub mod store;
pub mod time;
pub mod tokens;

// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

// The root: what one authentication goes through, start to end. Everything
// else lives in the modules above, each with a page that explains it.
pub use client::{AuthHandle, DtrClient, DtrClientBuilder};
pub use engine::driver::{Delivery, OutcomeId, PollEvent, PollStatus};
pub use error::Error;
pub use proto::authorize::PendingAuthorization;
pub use proto::callback::{Acknowledgment, CallbackResponse, CodeResponse};
pub use proto::cancel::CancelResult;
pub use proto::claims::IdTokenClaims;
pub use proto::client_auth::ClientAuth;
pub use proto::device::DeviceAuthorization;
pub use proto::discovery::ProviderMetadata;
pub use proto::exchange::DeferredAuthentication;
pub use proto::ietf::Redemption;
pub use proto::poll::Outcome;
pub use proto::profile::Profile;
pub use proto::token::{HeldTokens, TokenSet};
pub use proto::userinfo::UserInfo;
pub use secret::DeferredId;
pub use time::UnixTime;

/// Measurements of internal parts, for `examples/load.rs`.
///
/// **Not part of the public API**: not covered by semver, may change or
/// vanish in any release. Applications must not use it.
#[doc(hidden)]
#[allow(missing_docs, unreachable_pub)]
pub mod __bench {
    use std::time::Duration;

    /// The poll driver alone (no HTTP, no store): `n` authentications, all
    /// due at once, `rounds` times, answered `authorization_pending` at
    /// once by an in-memory poller; how long each round took (wall time,
    /// and the time `cpu` reports, e.g. the process's CPU time).
    pub async fn driver_rounds(
        n: usize,
        max_in_flight: usize,
        rounds: u32,
        cpu: impl Fn() -> Duration,
    ) -> Vec<(Duration, Duration)> {
        crate::engine::driver::bench_rounds(n, max_in_flight, rounds, cpu).await
    }
}

/// Thin wrappers over internal parsers, for the fuzz targets in `fuzz/`.
///
/// **Not part of the public API**: not covered by semver, may change or
/// vanish in any release. Applications must not use it.
#[doc(hidden)]
#[allow(missing_docs, unreachable_pub)]
pub mod __fuzz {
    use std::future::Future;
    use std::sync::Arc;

    use crate::ping::{PingReceiver, PingSink, PingVerdict};
    use crate::proto::authorize::{PendingAuthorization, ResponseMode, ResponseType};
    use crate::proto::message::HttpResponse;
    use crate::secret::{DeferredId, Nonce, PkceVerifier, State};

    /// The issuer the wrappers expect.
    pub const ISSUER: &str = "https://op.example";
    /// The `state` the callback wrapper's pending authorization holds.
    pub const STATE: &str = "st4te-value_0123456789abcdefghijklmnopqrstuvw";

    /// Decodes a compact JWS (header checks included, no signature check).
    pub fn jws_decode(token: &str) -> bool {
        crate::jose::jws::decode(token, &mut crate::jose::jws::JwsBuf::new()).is_ok()
    }

    /// Validates a redirect's query (as `DtrClient::callback` does, from a
    /// query string, path or URL) against a fixed pending authorization.
    pub fn callback(input: &str, deferred_code_or_code: bool, iss_required: bool) -> bool {
        let pending = PendingAuthorization {
            issuer: ISSUER.into(),
            client_id: "client".into(),
            redirect_uri: url::Url::parse("https://rp.example/cb").expect("static URL"),
            state: State::new(STATE),
            nonce: Nonce::new("nonce"),
            pkce_verifier: PkceVerifier::new("verifier"),
            response_type: if deferred_code_or_code {
                ResponseType::DeferredCodeOrCode
            } else {
                ResponseType::DeferredCode
            },
            response_mode: ResponseMode::Query,
            max_age: None,
            created_at: crate::UnixTime::from_secs(1),
            claims_request: None,
            completion_mode_hint: false,
            request_uri_expires_at: None,
            dpop_key: None,
            dpop_signer_jkt: None,
        };
        crate::proto::callback::validate(
            &pending,
            crate::proto::callback::query_of(input).as_bytes(),
            crate::proto::callback::Expect {
                issuer: ISSUER,
                client_id: "client",
                iss_required,
                mode: ResponseMode::Query,
            },
        )
        .is_ok()
    }

    fn response(status: u16, content_type: &'static str, body: &[u8]) -> HttpResponse {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        HttpResponse {
            status: http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK),
            headers,
            body: bytes::Bytes::copy_from_slice(body),
        }
    }

    fn endpoint() -> url::Url {
        url::Url::parse("https://op.example/token").expect("static URL")
    }

    /// Parses a token endpoint answer (success or error) with this status.
    pub fn token_response(status: u16, body: &[u8]) -> bool {
        crate::proto::token::parse_token_response(
            &response(status, "application/json", body),
            &endpoint(),
        )
        .is_ok()
    }

    /// Parses a deferred code exchange answer with this status.
    pub fn exchange_response(status: u16, body: &[u8]) -> bool {
        crate::proto::exchange::parse_exchange_response(
            &response(status, "application/json", body),
            &endpoint(),
        )
        .is_ok()
    }

    /// The IETF profile's parsers over one body: the answer to an initial
    /// token request (tokens, deferred response, device pending, error),
    /// an `interaction_uri`, and a device authorization response.
    pub fn ietf_answer(status: u16, body: &[u8]) -> bool {
        let resp = response(status, "application/json", body);
        let deferred = crate::proto::ietf::parse_initial_answer(&resp, &endpoint()).is_ok();
        let uri = std::str::from_utf8(body)
            .is_ok_and(|s| crate::proto::ietf::InteractionUri::parse(s).is_ok());
        let device = crate::proto::device::parse_device_authorization(
            &resp,
            &endpoint(),
            crate::proto::device::DeviceRequest {
                issuer: ISSUER.into(),
                client_id: "client".into(),
                nonce: Nonce::new("nonce"),
                requested_at: crate::UnixTime::from_secs(1),
                completion_mode_hint: true,
            },
        )
        .is_ok();
        deferred || uri || device
    }

    struct Sink;

    impl PingSink for Sink {
        fn ping(&self, id: DeferredId, token: Vec<u8>) -> crate::ping::BoxFuture<PingVerdict> {
            let known = crate::secret::ct_eq(id.secret().as_bytes(), b"live")
                && crate::secret::ct_eq(&token, b"right");
            let verdict = if known {
                PingVerdict::Woken
            } else {
                PingVerdict::Rejected
            };
            Box::pin(async move { verdict })
        }
    }

    /// A ping through a receiver protected by mutual TLS that trusts the CA
    /// `ca_der` for `CN=op.example, O=Example OP, C=DE` (no bearer token;
    /// the clock stopped at 2030-01-01), with `peer` as the peer
    /// certificate chain (leaf first, cut at each `\n--\n`); the HTTP
    /// status, `None` if it did not finish at once.
    pub fn ping_certificate(ca_der: &[u8], peer: &[u8]) -> Option<u16> {
        crate::ping::fuzz_peer_certificate(ca_der, peer)
    }

    /// Runs `PingReceiver::handle_raw` on a receiver that knows the id
    /// `live` with the token `right`; the HTTP status it answers.
    pub fn ping(
        method: &str,
        content_type: Option<&str>,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Option<u16> {
        let r = PingReceiver::new(Arc::new(Sink));
        let mut fut = std::pin::pin!(r.handle_raw(method, content_type, authorization, body));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(reply) => Some(reply.status),
            std::task::Poll::Pending => None,
        }
    }
}
