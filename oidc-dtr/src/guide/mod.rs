//! The oidc-dtr guide: what the Deferred Token Response drafts ask of a
//! Relying Party, what this SDK does for you, and what is left to your
//! application.
//!
//! This module holds no code, only documentation, one page per topic. Read
//! [`flow`] first; the other pages can be read in any order.
//!
//! | page | read it when you want to know |
//! |---|---|
//! | [`flow`] | how one deferred authentication goes, from the authorization URL to validated tokens |
//! | [`polling`] | when the SDK sends a token request, and what each answer means |
//! | [`pings`] | how to mount the notification endpoint, and what it answers |
//! | [`durability`] | what survives a crash or a deploy, and how outcomes are handed over exactly once to your code |
//! | [`fleets`] | how several instances of one RP share pending authentications on PostgreSQL |
//! | [`ietf`] | how the IETF OAuth draft differs, and how the same engine speaks it |
//! | [`identity_assurance`] | how to ask for and check `verified_claims` |
//! | [`security`] | the secure defaults, and which ones you may change |
//! | [`features`] | the cargo features, and the companion crates |
//!
//! # The specifications
//!
//! The pages cite these by name and section:
//!
//! - *OpenID Connect Deferred Token Response Flow 1.0*, draft 00 (the
//!   "OIDC draft"; this SDK implements the text of 2026-02-20, commit
//!   `8259203` of `gniero/oidc-dtr-resources`);
//! - *OAuth 2.0 Deferred Token Response*,
//!   `draft-ietf-oauth-deferred-token-response` (the "IETF draft", -01);
//! - OpenID Connect Core 1.0, and OpenID Connect for Identity Assurance 1.0;
//! - RFC 6749 (OAuth 2.0), RFC 7636 (PKCE), RFC 7009 (token revocation),
//!   RFC 8414 (authorization server metadata), RFC 8628 (device
//!   authorization grant), RFC 9207 (the `iss` authorization response
//!   parameter), RFC 9449 (DPoP).
//!
//! Where the drafts are silent or contradict themselves, the SDK takes a
//! decision; each page says which, and why.

pub mod durability;
pub mod features;
pub mod fleets;
pub mod flow;
pub mod identity_assurance;
pub mod ietf;
pub mod pings;
pub mod polling;
pub mod security;
