//! One deferred authentication, start to end.
//!
//! # Why the flow exists
//!
//! Some OpenID Providers cannot say at once who a user is: a person reviews
//! identity documents, a fraud check runs overnight, a video call has to be
//! scheduled. In the ordinary code flow the OP must answer while the
//! browser waits. The OpenID Connect Deferred Token Response draft lets it
//! answer "later" instead: the browser comes back at once with a
//! *deferred code*, and the Relying Party (your application) collects the
//! tokens from the token endpoint when the OP has decided, minutes, hours
//! or weeks later.
//!
//! ```text
//!  RP                                                  OP
//!  |-- (1) Authentication Request ---------------------->|  browser
//!  |       response_type=deferred_code                   |
//!  |<- (2) Acknowledgment: deferred_code, state, iss ----|  browser
//!  |-- (3) Deferred Code Exchange: deferred_code ------->|  token endpoint
//!  |<------ deferred_auth_id, expires_in, interval ------|
//!  |               ... the OP decides ...                |
//!  |<- (4) Ping Callback: {deferred_auth_id} (optional) -|  your notification endpoint
//!  |-- (5) Token Request (poll): deferred_auth_id ------>|  token endpoint
//!  |<------ authorization_pending | slow_down | tokens --|
//! ```
//!
//! # What the draft says, step by step, and what the SDK does
//!
//! **(1) Authentication Request.** An OpenID Connect Core §3.1.2.1 request
//! whose `response_type` is `deferred_code` (or `deferred_code code`: the
//! OP may then still answer with an ordinary `code`).
//! [`DtrClient::authorize`](crate::DtrClient::authorize) builds the URL.
//! It always adds a fresh `state`, a fresh `nonce` and a PKCE S256
//! challenge (RFC 7636): the draft does not mention PKCE, but a plain
//! `code` may come back, and PKCE costs nothing. It returns a
//! [`PendingAuthorization`](crate::PendingAuthorization) holding those
//! secrets.
//!
//! **(2) Acknowledgment.** The OP redirects the browser back with a
//! `deferred_code` and the `state`. The draft's "Acknowledgment Validation"
//! asks the RP to check that `deferred_code` is there and `code` is not.
//! [`DtrClient::callback`](crate::DtrClient::callback) (or
//! [`callback_form`](crate::DtrClient::callback_form) for
//! `response_mode=form_post`) does that, and more: it compares `state` in
//! constant time (the draft only says "MAY"; RFC 6749 §10.12 says why it
//! must), checks `iss` against the issuer (RFC 9207, the mix-up defence),
//! and checks the `deferred_code` charset. It returns a
//! [`CallbackResponse`](crate::CallbackResponse): an
//! [`Acknowledgment`](crate::Acknowledgment), a plain
//! [`CodeResponse`](crate::CodeResponse), or the OP's error.
//!
//! **(3) Deferred Code Exchange.** The RP trades the single-use
//! `deferred_code` at the token endpoint (grant type
//! `urn:openid:params:grant-type:deferred`) for a `deferred_auth_id`, with
//! an optional `expires_in` (the authentication's lifetime), `interval`
//! (the least time between polls) and `interim_id_token` (an ID token with
//! claims the OP has not verified yet).
//! [`DtrClient::exchange`](crate::DtrClient::exchange) sends it (with
//! client authentication, a DPoP proof for public clients, and a fresh
//! `deferred_notification_token` when you configured a notification
//! endpoint), validates the interim ID token exactly like a final one, and
//! returns a [`DeferredAuthentication`](crate::DeferredAuthentication).
//! Its deadline is absolute (`expires_in` counted from just before the
//! request was sent, so it is never later than the OP's), so it means the
//! same after a restart. Before `exchange` returns, the
//! authentication is written to the client's store and handed to its poll
//! engine: from here on, the SDK works without you.
//!
//! **(4), (5) Waiting.** The engine polls the token endpoint no faster than
//! the OP allows, and sooner when a ping arrives (see [`polling`] and
//! [`pings`]). The OP answers `authorization_pending` (often with a
//! progress text in `error_description`), `slow_down`, an error that ends
//! the authentication, or tokens.
//!
//! **Tokens.** The ID token is always validated (OpenID Connect Core
//! §3.1.3.7, plus the draft's rules: the request's `nonce`, even days
//! later; the interim `sub`; `auth_time` against the request's `max_age`);
//! see [`security`]. The outcome is stored, and only then handed to you.
//!
//! [`polling`]: super::polling
//! [`pings`]: super::pings
//! [`security`]: super::security
//!
//! # What your application does
//!
//! 1. Keep the [`PendingAuthorization`](crate::PendingAuthorization) in the
//!    user's session between the redirect and the callback (it serialises).
//! 2. At the redirect URI, call `callback`, then `exchange` for an
//!    acknowledgment, or
//!    [`exchange_code`](crate::DtrClient::exchange_code) for a plain code
//!    (`deferred_code code` and the OP answered at once: ordinary tokens,
//!    validated the same way).
//! 3. Remember which user the [`DeferredId`](crate::DeferredId)
//!    belongs to (it serialises; treat it as a secret, it is a bearer
//!    handle at the OP). Show the user "we will let you know".
//! 4. Take the outcome: [`DtrClient::watch`](crate::DtrClient::watch)
//!    gives an [`AuthHandle`](crate::AuthHandle) that follows one
//!    authentication (its progress texts, its status, its outcome, its
//!    cancellation; see [Following one authentication](#following-one-authentication)),
//!    [`DtrClient::wait`](crate::DtrClient::wait) just its outcome, and
//!    [`DtrClient::subscribe`](crate::DtrClient::subscribe) the progress
//!    texts and outcomes of all of them (for a server serving many users). Every
//!    authentication ends in exactly one [`Outcome`](crate::Outcome):
//!    `Tokens`, `Denied` (the OP said `access_denied`), `ExpiredByOp`
//!    (`expired_token`), `DeadlineReached` (the deadline passed locally),
//!    `Cancelled`, `Rejected` (a terminal error, with its cause) or
//!    `PossiblyLostInTransit` (see [`polling`]).
//! 5. When your own database holds the result, acknowledge it with
//!    [`DtrClient::ack`](crate::DtrClient::ack). Until then it is handed
//!    over again after a restart (see [`durability`]).
//! 6. If the user gives up, [`DtrClient::cancel`](crate::DtrClient::cancel)
//!    tells the OP, and the [`CancelResult`](crate::CancelResult) says
//!    whether it really could: the OIDC draft names no metadata member for
//!    its cancellation endpoint, so the SDK only knows it when you
//!    configure it
//!    ([`DtrClientBuilder::cancellation`](crate::DtrClientBuilder::cancellation)).
//!
//! [`durability`]: super::durability
//!
//! # The whole flow, runnable
//!
//! Against the in-process mock OP of the `oidc-dtr-testkit` crate (a
//! dev-dependency; its `browse` plays the user's browser):
//!
//! ```
//! use oidc_dtr::{CallbackResponse, DtrClient, Outcome};
//! use oidc_dtr_testkit::{MockOp, OpConfig};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = OpConfig::default();
//! config.interval = Some(1); // the OP allows one poll a second
//! let op = MockOp::builder().config(config).start().await?;
//!
//! // Discovery, and the check that the OP supports the flow.
//! let client = DtrClient::builder()
//!     .issuer(op.issuer())
//!     .client_id(MockOp::CLIENT_ID)
//!     .client_secret(MockOp::CLIENT_SECRET)
//!     .redirect_uri("http://127.0.0.1:9/callback")
//!     .build()
//!     .await?;
//!
//! // (1) The URL to send the browser to; `pending` goes in the session.
//! let (url, pending) = client.authorize().scope("profile").build()?;
//!
//! // (2) The browser comes back to the redirect URI.
//! let back = op.browse(&url).await?;
//! let auth = match client.callback(&pending, back.query())? {
//!     // (3) The OP will decide later: exchange the deferred code.
//!     CallbackResponse::Acknowledgment(ack) => client.exchange(ack).await?,
//!     other => panic!("unexpected: {other:?}"),
//! };
//! println!("pending until {:?}", auth.expires_at());
//!
//! // The OP decides (a reviewer clicks "approve").
//! assert!(op.approve(auth.id()));
//!
//! // (5) The engine polls at the OP's interval; `wait` returns the outcome.
//! match client.wait(auth.id()).await? {
//!     Outcome::Tokens(tokens) => {
//!         // Validated: signature, iss, aud, exp, the request's nonce...
//!         assert_eq!(tokens.claims().nonce(), Some(auth.nonce().secret()));
//!         println!("verified user: {}", tokens.claims().subject());
//!     }
//!     other => panic!("no tokens: {}", other.kind()),
//! }
//! // Our database has it: it need not be handed over again.
//! client.ack(auth.id()).await?;
//! # Ok(()) }
//! ```
//!
//! # Following one authentication
//!
//! To show one user how their authentication goes (a command-line tool,
//! a page that streams updates), take a handle to it with
//! [`DtrClient::watch`](crate::DtrClient::watch). Its
//! [`next_event`](crate::AuthHandle::next_event) gives only this
//! authentication's events and ends with its outcome;
//! [`status`](crate::AuthHandle::status) says where polling stands
//! (the deadline, when the next poll is due);
//! [`wait`](crate::AuthHandle::wait) and
//! [`cancel`](crate::AuthHandle::cancel) act on it alone. The handle
//! subscribes when it is made, so no event after `watch` is missed, and a
//! handle that falls behind still ends with the outcome.
//!
//! ```
//! # use oidc_dtr::{CallbackResponse, DtrClient, Outcome, PollEvent};
//! # use oidc_dtr_testkit::{MockOp, OpConfig};
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut config = OpConfig::default();
//! # config.interval = Some(1);
//! # let op = MockOp::builder().config(config).start().await?;
//! # let client = DtrClient::builder()
//! #     .issuer(op.issuer())
//! #     .client_id(MockOp::CLIENT_ID)
//! #     .client_secret(MockOp::CLIENT_SECRET)
//! #     .redirect_uri("http://127.0.0.1:9/callback")
//! #     .build()
//! #     .await?;
//! # let (url, pending) = client.authorize().build()?;
//! # let back = op.browse(&url).await?;
//! # let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, back.query())? else {
//! #     panic!()
//! # };
//! let auth = client.exchange(ack).await?;
//! let mut handle = client.watch(auth.id());
//! if let Some(status) = handle.status().await {
//!     println!("deadline: {:?}", status.deadline);
//! }
//! # op.approve(auth.id());
//! while let Some(event) = handle.next_event().await {
//!     match event {
//!         PollEvent::Progress { description, .. } => println!("OP: {description}"),
//!         PollEvent::Finished { outcome, .. } => println!("ended: {}", outcome.kind()),
//!         _ => {}
//!     }
//! }
//! assert!(matches!(handle.wait().await?, Outcome::Tokens(_)));
//! # Ok(()) }
//! ```
//!
//! A web application does the same across two requests; see
//! `oidc-dtr/examples/axum_rp.rs` in the repository, and `cargo run
//! --example quickstart` for this flow with a progress display.
