//! Polling: the engine's events and status, and the sans-IO machine under it.
//!
//! Most applications meet polling only through the root's
//! [`PollEvent`], [`PollStatus`] and
//! [`Outcome`]: the client's engine polls every pending
//! authentication on its own, and an [`AuthHandle`](crate::AuthHandle)
//! follows one of them. This module holds the rest:
//!
//! - the knobs: [`PollConfig`] (backoff, final poll, lifetime, the cadence
//!   when pings are expected), [`DriverConfig`] (how many polls in flight)
//!   and [`FleetConfig`] (leases when several instances share a store);
//! - [`EngineStats`], counters for a health page;
//! - [`PollMachine`], the state machine that decides *when* to poll and
//!   *what* each answer means, with its inputs ([`Event`], [`PollResult`],
//!   [`PollFailure`]) and outputs ([`Step`], [`Action`],
//!   [`InteractionChange`], [`Retry`] with its [`RetryCause`]).
//!
//! # Events, status and deliveries
//!
//! [`DtrClient::subscribe`](crate::DtrClient::subscribe) streams every
//! authentication's [`PollEvent`]s (an [`AuthHandle`](crate::AuthHandle)
//! only its own); [`DtrClient::poll_status`](crate::DtrClient::poll_status)
//! gives a [`PollStatus`]; [`DtrClient::undelivered`](crate::DtrClient::undelivered)
//! lists the outcomes not yet [acknowledged](crate::DtrClient::ack), each a
//! [`Delivery`] with its stable [`OutcomeId`].
//!
//! ```
//! use oidc_dtr::{CallbackResponse, DtrClient, Outcome, PollEvent};
//! use oidc_dtr_testkit::{MockOp, OpConfig};
//!
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
//! # let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, back.query())? else { panic!() };
//! let mut events = client.subscribe();
//! let auth = client.exchange(ack).await?;
//! let status = client.poll_status(auth.id()).await.expect("tracked");
//! assert!(!status.finished && status.next_poll.is_some());
//! println!("next poll {:?}, deadline {}", status.next_poll, status.deadline);
//! # op.approve(auth.id());
//! loop {
//!     match events.recv().await? {
//!         PollEvent::Progress { description, .. } => println!("OP: {description}"),
//!         PollEvent::Interaction { uri: Some(uri), .. } => println!("go to {}", uri.as_str()),
//!         PollEvent::TokensHeld { reason, .. } => println!("tokens held: {reason}"),
//!         PollEvent::Finished { id, .. } if &id == auth.id() => break,
//!         _ => {}
//!     }
//! }
//! // Stored, and handed over until acknowledged: after a crash, too.
//! for delivery in client.undelivered().await {
//!     assert!(matches!(delivery.outcome, Outcome::Tokens(_)));
//!     println!("outcome {} of {:?}", delivery.outcome_id, delivery.id);
//!     client.ack(&delivery.id).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! # The machine, for other runtimes
//!
//! [`PollMachine`] does no IO and reads no clock: every call takes `now`,
//! randomness for the backoff jitter is injected, and its state serialises
//! so that a process can stop and resume where it was. The client's engine
//! drives one per authentication; a blocking program, another async runtime
//! or a test can drive it too: feed it [`Event`]s, do what the [`Action`]s
//! say, repeat.
//!
//! ```
//! use std::time::Duration;
//! use oidc_dtr::UnixTime;
//! use oidc_dtr::poll::{Action, Event, PollConfig, PollMachine};
//! use oidc_dtr::random::SystemRandom;
//!
//! // An authentication the OP answered at t = 1 000 s: poll every 5 s,
//! // until t = 1 600 s at the latest.
//! let t = UnixTime::from_secs;
//! let mut machine = PollMachine::anchored(
//!     t(1_000),
//!     t(1_000),
//!     Some(t(1_600)),
//!     Duration::from_secs(5),
//!     PollConfig::default(),
//! );
//! // Nothing may reach the OP inside the floor...
//! let step = machine.handle::<()>(Event::Timer, t(1_002), &SystemRandom);
//! assert_eq!(step.action, Action::SleepUntil(t(1_005)));
//! // ...and once it has passed, the machine asks for a poll.
//! let step = machine.handle::<()>(Event::Timer, t(1_005), &SystemRandom);
//! assert_eq!(step.action, Action::SendPoll);
//! ```
//!
//! The rules the machine follows (the floor counted from the previous
//! answer's arrival, `slow_down`, `Retry-After`, backoff on top of the
//! floor, the final poll before the deadline) are in
//! [the polling guide](crate::guide::polling).

pub use crate::engine::driver::{Delivery, DriverConfig, OutcomeId, PollEvent, PollStatus};
pub use crate::engine::fleet::FleetConfig;
pub use crate::engine::stats::EngineStats;
pub use crate::proto::poll::{
    Action, Event, InteractionChange, Outcome, PollConfig, PollFailure, PollMachine, PollResult,
    Retry, RetryCause, Step,
};
