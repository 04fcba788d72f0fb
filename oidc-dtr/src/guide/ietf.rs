//! The IETF OAuth profile: the same idea at the token endpoint.
//!
//! # What the IETF draft says
//!
//! *OAuth 2.0 Deferred Token Response* (`draft-ietf-oauth-deferred-token-response`)
//! generalises the OIDC draft to any grant. Nothing changes at the
//! authorization endpoint: the browser brings back an ordinary `code`. The
//! deferral happens at the token endpoint:
//!
//! 1. The client opts in on the token request of the originating grant
//!    (the authorization code grant, or the device code of RFC 8628) with
//!    `completion_mode=deferred`, and, if it has a notification endpoint, a
//!    fresh `client_notification_token` (at least 128 bits). It may also
//!    send `completion_mode=deferred` as a *hint* on the authorization
//!    request or the device authorization request; the token request must
//!    then opt in too, or the AS answers `invalid_request`.
//! 2. The AS may still answer at once with tokens (200). Or it answers with
//!    the *deferred response*: HTTP 400, `error` `authorization_pending` or
//!    `interaction_required`, a `deferral_code`, `expires_in` and an
//!    `interval`, which is sent only there (later pending answers do not
//!    repeat it, so the client must remember it).
//! 3. The client polls with `grant_type=urn:ietf:params:oauth:grant-type:deferred`
//!    and the `deferral_code` (never with `completion_mode`), under the same
//!    interval and `slow_down` rules as in the OIDC draft (see
//!    [`polling`](super::polling)).
//! 4. `interaction_required` means "still pending, and waiting for the user
//!    at `interaction_uri`": show the URI, keep polling. It may flip back to
//!    `authorization_pending`.
//! 5. Callbacks carry `{"deferral_code": ...}` with the
//!    `client_notification_token` as bearer; without a token the AS omits
//!    the header, and the client must protect the endpoint another way and
//!    treat callbacks as advisory.
//! 6. Cancellation is RFC 7009 revocation of the `deferral_code` at the
//!    `revocation_endpoint` (`token_type_hint=urn:ietf:params:oauth:token-type:deferral-code`).
//!    An AS that supports it lists that type in
//!    `revocation_endpoint_token_type_values_supported`; one that does not
//!    answers 200 anyway (RFC 7009 §2.2), so the 200 proves nothing.
//! 7. The AS advertises the profile with `deferred_token_response_supported: true`.
//!
//! # What the SDK does
//!
//! One engine for both drafts. The store, the poll machine, the ID-token
//! validator and the ping receiver are shared; what differs (the handle's
//! name, the poll's grant type, how `interaction_required` is read, the
//! cancellation transport, the callback body key) is chosen per
//! authentication by its [`Profile`](crate::Profile), recorded with it in
//! the store.
//!
//! - The client's profile comes from the OP's metadata (OIDC when the OP
//!   advertises both) or is forced with
//!   [`DtrClientBuilder::profile`](crate::DtrClientBuilder::profile);
//!   [`DtrClient::profile`](crate::DtrClient::profile) says which.
//! - [`DtrClient::authorize`](crate::DtrClient::authorize) sends
//!   `response_type=code` and, by default, the `completion_mode=deferred`
//!   hint ([`DtrClientBuilder::completion_mode_hint`](crate::DtrClientBuilder::completion_mode_hint)).
//! - [`DtrClient::redeem_code`](crate::DtrClient::redeem_code) sends the
//!   token request with the opt-in (PKCE verifier, redirect URI, a fresh
//!   256-bit notification token when configured, of which only the hash is
//!   kept). It returns a [`Redemption`](crate::Redemption): `Tokens`,
//!   validated exactly as a poll's (`nonce` included), or `Deferred`, an
//!   authentication already stored and polled like any other. An OIDC
//!   client whose OP answered a `deferred_code code` request with a plain
//!   `code` can use it too.
//! - [`DtrClient::device_authorization`](crate::DtrClient::device_authorization)
//!   and [`DtrClient::device_token`](crate::DtrClient::device_token) run the
//!   device grant for command-line tools: `device_token` polls the device
//!   code at its interval until tokens or a deferral come back; the engine
//!   continues a deferral.
//! - `interaction_required` keeps polling. Its `interaction_uri` is
//!   checked (absolute `https`, no fragment, no user info, at most 2048
//!   bytes) into an [`InteractionUri`](crate::ietf::InteractionUri), and arrives
//!   as [`PollEvent::Interaction`](crate::PollEvent::Interaction) and in
//!   [`PollStatus::interaction_uri`](crate::PollStatus::interaction_uri);
//!   `None` when the AS flips back. The URI of the deferred response itself
//!   is [`DeferredAuthentication::interaction_uri`](crate::DeferredAuthentication::interaction_uri).
//! - [`DtrClient::cancel`](crate::DtrClient::cancel) revokes the
//!   `deferral_code` (with a DPoP proof when the code is bound) and returns
//!   [`CancelResult::SentUnconfirmed`](crate::CancelResult::SentUnconfirmed)
//!   when the AS does not list the deferral-code type. An `invalid_grant`
//!   after a cancellation is read as the cancellation itself.
//! - A callback without a bearer token is refused (401), unless you opt in
//!   with [`accept_unauthenticated_callbacks`](crate::DtrClientBuilder::accept_unauthenticated_callbacks);
//!   it then can wake a poll of an authentication that sent no token, never
//!   more.
//!
//! In the store, a record is keyed by its handle. Both handles are chosen
//! by the one OP the store is bound to, for the one client, with at least
//! 128 bits of entropy, so the same string under both profiles would be the
//! OP handing one handle out twice; the profile is recorded with each
//! record rather than folded into its key.
//!
//! # What your application does
//!
//! - Expect a `code`, not an acknowledgment, at the redirect URI, and call
//!   `redeem_code`; handle both [`Redemption`](crate::Redemption)s.
//! - Show the `interaction_uri` to the user when one arrives.
//! - The rest is as in the OIDC flow: `wait` or `subscribe`, `ack`, `cancel`.
//!
//! # Example
//!
//! ```
//! use oidc_dtr::{CallbackResponse, DtrClient, Outcome, Profile, Redemption};
//! use oidc_dtr_testkit::{MockOp, OpConfig, OpProfiles};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = OpConfig::default();
//! config.profiles = OpProfiles::Ietf; // an AS that speaks the IETF draft only
//! config.interval = Some(1);
//! let op = MockOp::builder().config(config).start().await?;
//!
//! let client = DtrClient::builder()
//!     .issuer(op.issuer())
//!     .client_id(MockOp::CLIENT_ID)
//!     .client_secret(MockOp::CLIENT_SECRET)
//!     .redirect_uri("http://127.0.0.1:9/callback")
//!     .build()
//!     .await?;
//! assert_eq!(client.profile(), Profile::Ietf); // from the metadata
//!
//! // response_type=code, with the completion_mode=deferred hint.
//! let (url, pending) = client.authorize().build()?;
//! let back = op.browse(&url).await?;
//! let CallbackResponse::Code(code) = client.callback(&pending, back.query())? else {
//!     panic!("the IETF profile brings back a plain code")
//! };
//! let auth = match client.redeem_code(code).await? {
//!     Redemption::Tokens(tokens) => {
//!         println!("answered at once: {}", tokens.claims().subject());
//!         return Ok(());
//!     }
//!     Redemption::Deferred(auth) => auth, // stored, and being polled
//!     _ => unreachable!("a redemption this version does not know"),
//! };
//! if let Some(uri) = auth.interaction_uri() {
//!     println!("the AS needs the user at {uri}");
//! }
//! assert!(op.approve(auth.id()));
//! let outcome = client.wait(auth.id()).await?;
//! assert!(matches!(outcome, Outcome::Tokens(_)));
//! # Ok(()) }
//! ```
//!
//! The device grant, for a command-line tool:
//!
//! ```no_run
//! # async fn f(client: oidc_dtr::DtrClient) -> Result<(), oidc_dtr::Error> {
//! use oidc_dtr::Redemption;
//!
//! let device = client.device_authorization("openid profile").await?;
//! println!("open {} and enter {}", device.verification_uri(), device.user_code());
//! match client.device_token(&device).await? {
//!     Redemption::Tokens(tokens) => println!("{}", tokens.claims().subject()),
//!     Redemption::Deferred(auth) => {
//!         // The user is done; the AS decides later. Poll like any other.
//!         let outcome = client.wait(auth.id()).await?;
//!         println!("{}", outcome.kind());
//!     }
//!     _ => {}
//! }
//! # Ok(()) }
//! ```
