//! The protocol core: what to send and what an answer means, with no IO.
//!
//! Nothing in this layer touches a socket, a runtime or the clock: request
//! builders return data ([`message::HttpRequest`]), parsers take bytes
//! ([`message::HttpResponse`]), and every function that needs the time or
//! randomness takes it as an argument. That is what lets the poll machine
//! run days of polling in a test in milliseconds, and what a blocking or
//! wasm shell would reuse. `tests/it/layers.rs` fails the build of the
//! test suite if a file here names tokio, reqwest or the client.
//!
//! One file per part of the draft: [`authorize`] (Authentication Request),
//! [`callback`] (the redirect: Acknowledgment, `code`, errors), [`exchange`]
//! (Deferred Code Exchange), [`token`] (token responses and validated token
//! sets), [`poll`] (the polling state machine), [`cancel`] (Authentication
//! Cancellation), [`discovery`] (metadata), [`client_auth`] (client
//! authentication), [`claims`] and [`id_token`] (ID token claims and their
//! validation, OIDC Core §3.1.3.7), [`assurance`] (OpenID Connect for
//! Identity Assurance: `verified_claims`), [`userinfo`] (the UserInfo
//! response), [`par`] (Pushed Authorization Requests, RFC 9126),
//! [`request_object`] (signed request objects, RFC 9101) and [`message`]
//! (HTTP messages as data). [`profile`] and
//! [`ietf`] hold what the IETF OAuth profile
//! (draft-ietf-oauth-deferred-token-response) does differently on the same
//! engine.

pub(crate) mod assurance;
pub(crate) mod authorize;
pub(crate) mod callback;
pub(crate) mod cancel;
pub(crate) mod claims;
pub(crate) mod client_auth;
pub(crate) mod device;
pub(crate) mod discovery;
pub(crate) mod exchange;
pub(crate) mod id_token;
pub(crate) mod ietf;
pub(crate) mod message;
pub(crate) mod par;
pub(crate) mod poll;
pub(crate) mod profile;
pub(crate) mod request_object;
pub(crate) mod token;
pub(crate) mod userinfo;
