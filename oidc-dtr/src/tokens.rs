//! Tokens and their validation.
//!
//! Every token response the SDK receives (from a poll, an immediate
//! `code`, the IETF profile's token request or the device grant) goes
//! through one validation before it reaches the application as a
//! [`TokenSet`]: the ID token's signature against the OP's
//! JWK Set, `iss`, `aud`, `azp`, `exp`/`nbf`/`iat`, the request's `nonce`,
//! `at_hash`, `auth_time` against `max_age`, and the interim ID token's
//! `sub`. When the OP's keys cannot be fetched at that moment, the tokens
//! are not dropped: they are held ([`HeldTokens`]) and
//! validated later.
//!
//! What is here:
//!
//! - [`IdToken`], [`Address`] and the root's
//!   [`IdTokenClaims`]: the ID token and its claims;
//! - [`TokenResponse`]: the raw token endpoint answer, before validation;
//! - [`IdTokenValidator`], [`ValidationOptions`] and [`ValidationContext`]:
//!   the validator itself, usable on its own (e.g. for an ID token obtained
//!   elsewhere);
//! - [`JwksConfig`] and [`JwksSnapshot`]: the cache of the OP's keys (how
//!   often it refreshes, what it holds now).
//!
//! Validation refuses `alg: none`, HMAC algorithms, keys the JWK Set does
//! not hold and tokens whose header or claims are malformed; each refusal
//! is a distinct [`ValidationError`](crate::error::ValidationError).

pub use crate::engine::jwks_cache::{JwksConfig, JwksSnapshot};
pub use crate::proto::claims::{Address, IdTokenClaims};
pub use crate::proto::id_token::{IdTokenValidator, ValidationOptions};
pub use crate::proto::token::{HeldTokens, IdToken, TokenResponse, TokenSet, ValidationContext};
pub use crate::proto::userinfo::UserInfo;
