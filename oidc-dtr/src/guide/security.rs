//! Security defaults, and which ones you may change.
//!
//! A deferred authentication hands out bearer secrets that live for days
//! (the `deferred_auth_id`, the notification token, the DPoP key) and ends
//! with tokens that vouch for a verified identity. Every default below is
//! on without configuration; the settings that relax one say so.
//!
//! # Secrets never print
//!
//! Client secrets, codes, `deferred_auth_id`s, tokens, notification tokens,
//! PKCE verifiers, `state` and `nonce` live in newtypes
//! ([`DeferredId`](crate::DeferredId),
//! [`AccessToken`](crate::secret::AccessToken), ...) whose `Debug` shows at most a
//! 32-bit [`Fingerprint`](crate::secret::Fingerprint), which compare in constant
//! time and are wiped on drop. No error, log line or `Display` of this
//! crate contains one. Log `.fingerprint()` yourself when you need to
//! correlate:
//!
//! ```
//! use oidc_dtr::DeferredId;
//!
//! let id = DeferredId::new("f4oirNBUlM-a-bearer-handle");
//! let shown = format!("{id:?} {}", id.fingerprint());
//! assert!(!shown.contains("f4oirNBUlM"));
//! ```
//!
//! # The HTTP edge
//!
//! Every request to the OP goes through one HTTP client that never follows
//! redirects (a redirected token request could leak client credentials),
//! refuses `http://` except to loopback hosts, caps response bodies at
//! 1 MiB, and has a 10 s connect and a 30 s total timeout
//! ([`HttpConfig`](crate::client::HttpConfig)). Every answer goes through a parser
//! that returns a typed error naming the field at fault; nothing panics on
//! bytes from the network (the parsers are fuzzed). Duplicate JSON members
//! are refused. The OP's `error_description` reaches you capped at 512
//! characters, without control or bidirectional-override characters, and
//! an `error_uri` is kept only if it is `https`; still, it is the OP's
//! text: escape it before showing it.
//!
//! # The front channel
//!
//! Every authorization request carries a fresh `state`, a fresh `nonce` and
//! a PKCE S256 challenge (RFC 7636). The callback compares `state` in
//! constant time, checks `iss` (RFC 9207; required when the OP advertises
//! `authorization_response_iss_parameter_supported`) and refuses a
//! response that carries both `code` and `deferred_code`. Discovery checks
//! that the metadata's `issuer` is exactly the one configured.
//!
//! # Pushed and signed requests, FAPI 2.0
//!
//! With [`pushed_authorization_requests`](crate::DtrClientBuilder::pushed_authorization_requests)
//! (or an OP whose metadata says `require_pushed_authorization_requests`),
//! every request is pushed (PAR, RFC 9126) with the client's authentication
//! and the browser carries only `client_id` and a one-time `request_uri`
//! ([`push`](crate::client::AuthorizationRequestBuilder::push)); a DPoP client binds
//! the code to its key with `dpop_jkt` (RFC 9449 §10). With
//! [`request_object_signing_key`](crate::DtrClientBuilder::request_object_signing_key)
//! the parameters travel in a signed request object (JAR, RFC 9101), by
//! value or inside the push. [`fapi2`](crate::DtrClientBuilder::fapi2)
//! turns on the FAPI 2.0 Security Profile: PAR, `private_key_jwt` with
//! DPoP or mutual TLS (`tls_client_auth`, `self_signed_tls_client_auth`)
//! with certificate-bound tokens, PS256/ES256/EdDSA only and a required
//! `iss`, and refuses at build time whatever the profile forbids. Under
//! mutual TLS, PAR, token and UserInfo requests go to the OP's
//! `mtls_endpoint_aliases` (RFC 8705 §5).
//!
//! # ID tokens
//!
//! Every ID token the SDK hands out is validated, interim ones included
//! (OpenID Connect Core §3.1.3.7), in this order; each failure is its own
//! [`ValidationError`](crate::error::ValidationError):
//!
//! 1. a compact JWS (a JWE is refused), no `crit` header, a `typ` (if any)
//!    that is an ID token's;
//! 2. `alg` in the allow-list: the configured algorithms (`RS256` by
//!    default) that the OP also lists; never `none`; HMAC only when
//!    configured, with the client secret as key;
//! 3. the key: by `kid`, or the only key for `alg` when the token has no
//!    `kid`;
//! 4. the signature, before any claim is looked at (a forged token learns
//!    nothing from the error);
//! 5. `iss` equals the issuer exactly;
//! 6. `aud` contains the client id, and every other audience is trusted;
//! 7. `azp` is present when there are several audiences, and equals the
//!    client id when present;
//! 8. `exp`, `nbf` and `iat`, with separate leeways (60 s by default);
//! 9. `nonce` equals the request's, also for tokens polled days later (the
//!    nonce is stored with the authentication);
//! 10. `at_hash` matches the access token, when both are present;
//! 11. with `max_age` requested, `auth_time` is present and no older than
//!     `max_age` *at the time of the request*: the drafts do not say how
//!     `max_age` applies to an authentication that finishes days later, and
//!     measuring it from "now" would fail every one of them;
//! 12. `sub` equals the interim ID token's, when one was received (the
//!     drafts leave this open; the SDK requires it by default,
//!     [`ValidationOptions::require_same_subject`](crate::tokens::ValidationOptions::require_same_subject)).
//!
//! The OP's JWK Set is cached per client: kept for the OP's
//! `Cache-Control` (clamped between 1 minute and 24 hours), refreshed when
//! a token names an unknown `kid` (key rotation, without a restart), at most
//! once per cooldown for unknown `kid`s in general (a flood of forged
//! tokens costs the OP one request a minute), and served stale for up to
//! 24 hours while the OP's JWKS endpoint fails
//! ([`JwksConfig`](crate::tokens::JwksConfig)). Tokens already received are never
//! dropped because the keys are unreachable: they wait, stored, until they
//! can be validated (see [`durability`](super::durability)). The JOSE layer
//! is checked against the RFC 7515 and RFC 8037 examples, Wycheproof
//! vectors and an independent implementation; JWK Sets with Ed25519
//! small-order keys or RSA exponents below 3 or even are refused.
//!
//! # Sender-constrained tokens and client authentication
//!
//! Public clients use DPoP (RFC 9449) by default ([`DpopConfig`](crate::client::DpopConfig)):
//! a key per authentication (stored with it, so the same key proves every
//! poll after a restart, as the OIDC draft requires of public clients), a
//! fresh proof (new `jti` and `iat`) for every request, server nonces
//! honoured (`use_dpop_nonce` is retried at once), and a `Bearer` token in
//! answer to a DPoP-proved request refused as a downgrade. With
//! [`DpopConfig::signer`](crate::client::DpopConfig::signer) the DPoP key
//! stays in a KMS or HSM instead: records and token sets keep only its
//! thumbprint, and a rotated signer stays usable for what is bound to it
//! ([`previous_signer`](crate::client::DpopConfig::previous_signer)). Confidential
//! clients may use `private_key_jwt` or `client_secret_jwt`
//! ([`ClientAuth`](crate::ClientAuth)), with a fresh assertion for every
//! request, never one reused across polls.
//!
//! # The notification endpoint and the store
//!
//! The ping receiver compares a hash of each bearer token with the stored
//! hash in constant time, answers an unknown id exactly like a wrong token,
//! and never lets a ping deliver anything (see [`pings`](super::pings)).
//! Stores key records by a hash of the id, and a
//! [`Sealer`](crate::store::Sealer) such as [`AesGcmSealer`](crate::store::AesGcmSealer)
//! encrypts every record at rest (see [`durability`](super::durability)).
//!
//! # What your application does
//!
//! - Keep the [`PendingAuthorization`](crate::PendingAuthorization) where
//!   the user cannot change it (a server-side session, or an encrypted
//!   cookie): it holds the `state`, `nonce` and PKCE verifier (and, after a
//!   DPoP-bound push, the DPoP private key the code is bound to, unless an
//!   external signer holds it).
//! - Serve the redirect URI and the notification endpoint over HTTPS.
//! - Protect the store and its sealing key: they hold bearer secrets and,
//!   after success, tokens.
//! - Escape every text from the OP (progress texts, error descriptions)
//!   before showing it.
//! - Prefer `private_key_jwt` to a shared secret for confidential clients.
//!
//! # Example: a hardened confidential client
//!
//! ```no_run
//! # async fn f(pem: &str, key: [u8; 32]) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use oidc_dtr::{ClientAuth, DtrClient, store::{AesGcmSealer, FileStore}, jose::Algorithm, client::DpopConfig};
//! use oidc_dtr::{client::HttpConfig, jose::SigningKey, tokens::ValidationOptions};
//!
//! let client_key = SigningKey::from_pem(Algorithm::ES256, pem)?.with_kid("rp-2026");
//! let store = FileStore::open_with_sealer("dtr-state.redb", Arc::new(AesGcmSealer::new(key)?))?;
//! let client = DtrClient::builder()
//!     .issuer("https://op.example.com")
//!     .client_id("s6BhdRkqt3")
//!     .client_auth(ClientAuth::private_key_jwt(client_key)) // a fresh assertion per request
//!     .redirect_uri("https://rp.example.com/cb")
//!     .dpop(DpopConfig::enabled()) // sender-constrained tokens for a confidential client too
//!     .validation(
//!         ValidationOptions::default()
//!             .algorithms([Algorithm::ES256, Algorithm::PS256])
//!             .leeway(Duration::from_secs(30)),
//!     )
//!     .http_config(HttpConfig::default().timeout(Duration::from_secs(8)))
//!     .store(store)
//!     .build()
//!     .await?;
//! # let _ = client; Ok(()) }
//! ```
