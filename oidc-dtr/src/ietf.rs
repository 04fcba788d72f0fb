//! The IETF OAuth profile of deferred token responses, and the device grant.
//!
//! Besides the OpenID Connect draft (`response_type=deferred_code`), the
//! SDK speaks the IETF OAuth draft ([`Profile::Ietf`]): the
//! client asks for `completion_mode=deferred` on the token request of the
//! authorization code grant ([`DtrClient::redeem_code`](crate::DtrClient::redeem_code))
//! or of the device grant ([`DtrClient::device_token`](crate::DtrClient::device_token),
//! started by [`DtrClient::device_authorization`](crate::DtrClient::device_authorization)).
//! The OP either answers with tokens at once or with a `deferral_code` to
//! poll ([`Redemption`]); from then on the authentication
//! is polled, pinged and delivered exactly like an OIDC one, keyed by the
//! same [`DeferredId`](crate::DeferredId).
//!
//! While it waits, the OP may ask for more from the user with
//! `interaction_required` and an `interaction_uri`: the SDK checks the URI
//! ([`InteractionUri`]: https, no credentials, no fragment, bounded length)
//! and reports it as [`PollEvent::Interaction`](crate::PollEvent::Interaction);
//! a URI it refuses is an [`InvalidInteractionUri`].
//!
//! ```
//! use oidc_dtr::ietf::InteractionUri;
//!
//! assert!(InteractionUri::parse("https://op.example/continue?x=1").is_ok());
//! assert!(InteractionUri::parse("http://op.example/continue").is_err());
//! assert!(InteractionUri::parse("javascript:alert(1)").is_err());
//! ```
//!
//! Cancellation in this profile is token revocation (RFC 7009) of the
//! `deferral_code`. The [IETF guide](crate::guide::ietf) walks through both
//! grants.

pub use crate::proto::device::DeviceAuthorization;
pub use crate::proto::ietf::{InteractionUri, InvalidInteractionUri, Redemption};
pub use crate::proto::profile::Profile;
