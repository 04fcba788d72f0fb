//! Which Deferred Token Response draft a client speaks: the OpenID Connect
//! draft, or the IETF OAuth draft (on which an OIDC RP runs with a plain
//! `code` and `completion_mode=deferred`; the final poll carries the
//! `id_token`, validated by the same validator).
//!
//! The engine, the store, the ID-token validator and the ping receiver are
//! shared. What differs between the profiles is small and lives here:
//! the name of the polling handle, the poll's grant URN, how a poll error is
//! classified, the cancellation transport and the callback body key.
//! (Initiation differs too: [`DtrClient::exchange`](crate::DtrClient::exchange)
//! for OIDC, [`DtrClient::redeem_code`](crate::DtrClient::redeem_code) for
//! IETF.)
//!
//! # Handles of two profiles in one store
//!
//! A store is bound to one (issuer, client) pair and keys records by the
//! handle. Both profiles' handles are chosen by that one OP for that one
//! client (IETF requires at least 128 bits of entropy for a `deferral_code`),
//! so the same string in two profiles would be the OP handing out one handle
//! twice, which the OP itself could not tell apart either. The profile is
//! recorded with every authentication (so a poll always uses the right grant
//! and parameter name) rather than folded into the key, which keeps the
//! record key stable for the records already written.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, OAuthError};
use crate::proto::discovery::{GRANT_TYPE_DEFERRED, ProviderMetadata};
use crate::proto::ietf::{DEFERRAL_CODE_TOKEN_TYPE, GRANT_TYPE_IETF_DEFERRED};
use crate::proto::poll::{PollFailure, PollResult};

/// A Deferred Token Response profile.
///
/// ```
/// use oidc_dtr::{DtrClient, Profile};
///
/// let profile: Profile = "ietf".parse().expect("a profile name");
/// assert_eq!(profile, Profile::Ietf);
/// assert_eq!(Profile::default().as_str(), "oidc");
/// // Without `.profile(..)`, the client picks what the OP's metadata offers.
/// let builder = DtrClient::builder().profile(profile);
/// # let _ = builder;
/// match profile {
///     Profile::Oidc => println!("deferred_code, deferred_auth_id"),
///     Profile::Ietf => println!("completion_mode=deferred, deferral_code"),
///     _ => println!("a newer profile"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Profile {
    /// OpenID Connect Deferred Token Response (`response_type=deferred_code`,
    /// the Deferred Code Exchange, `deferred_auth_id`).
    /// The default, and what every authentication stored before profiles
    /// existed is read as.
    #[default]
    Oidc,
    /// OAuth Deferred Token Response (draft-ietf-oauth-deferred-token-response):
    /// `completion_mode=deferred` on the token request of an ordinary grant,
    /// a `deferral_code` to poll with, cancellation by RFC 7009 revocation.
    /// See the [IETF profile guide](crate::guide::ietf).
    Ietf,
}

impl Profile {
    /// A short name (`oidc`, `ietf`) for logs and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Oidc => "oidc",
            Profile::Ietf => "ietf",
        }
    }

    /// The grant type of a poll.
    pub fn poll_grant_type(self) -> &'static str {
        match self {
            Profile::Oidc => GRANT_TYPE_DEFERRED,
            Profile::Ietf => GRANT_TYPE_IETF_DEFERRED,
        }
    }

    /// The parameter that carries the handle in a poll (and the member in a
    /// callback body): `deferred_auth_id` or `deferral_code`.
    pub fn handle_name(self) -> &'static str {
        match self {
            Profile::Oidc => "deferred_auth_id",
            Profile::Ietf => "deferral_code",
        }
    }

    /// The form of a poll, before client authentication. Never
    /// `completion_mode` (the IETF draft: polls must not carry it). (The
    /// client writes this form straight into the request body.)
    #[cfg(test)]
    pub(crate) fn poll_params(self, handle: &str) -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", self.poll_grant_type().to_owned()),
            (self.handle_name(), handle.to_owned()),
        ]
    }

    /// The profile's reading of a poll's OAuth error. `interaction_required`
    /// is "still pending, waiting on the user at `interaction_uri`" in the
    /// IETF profile and a terminal error in the OIDC one (the OIDC
    /// draft does not use it on polls).
    pub(crate) fn classify<T>(self, e: OAuthError) -> PollResult<T> {
        match (self, &e.code) {
            (Profile::Oidc, ErrorCode::InteractionRequired) => {
                PollResult::Permanent(PollFailure::OAuth(Box::new(e)))
            }
            _ => PollResult::OAuth(e),
        }
    }

    /// Whether the OP's metadata advertises this profile: for OIDC,
    /// `deferred_code` in `response_types_supported` and the OpenID grant
    /// URN in `grant_types_supported`; for IETF,
    /// `deferred_token_response_supported: true` (or the IETF grant URN in
    /// `grant_types_supported`, which the draft allows but does not require).
    pub fn advertised_by(self, md: &ProviderMetadata) -> bool {
        match self {
            Profile::Oidc => md.check_dtr_support().is_ok(),
            Profile::Ietf => {
                md.deferred_token_response_supported()
                    || md
                        .grant_types_supported
                        .as_ref()
                        .is_some_and(|g| g.iter().any(|g| g == GRANT_TYPE_IETF_DEFERRED))
            }
        }
    }

    /// Picks the profile for an OP: the one asked for when given (an OP that
    /// supports both gets that one), else the one the metadata advertises
    /// (OIDC first when both are). `None` when neither is advertised.
    pub fn choose(asked: Option<Profile>, md: &ProviderMetadata) -> Option<Profile> {
        match asked {
            Some(p) => p.advertised_by(md).then_some(p),
            None => [Profile::Oidc, Profile::Ietf]
                .into_iter()
                .find(|p| p.advertised_by(md)),
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "oidc" | "openid" => Ok(Profile::Oidc),
            "ietf" | "oauth" => Ok(Profile::Ietf),
            other => Err(format!(
                "unknown profile `{}` (expected `oidc` or `ietf`)",
                crate::error::sanitize(other, 40)
            )),
        }
    }
}

/// Whether the metadata lists the deferral-code token type among the
/// revocation endpoint's (`revocation_endpoint_token_type_values_supported`,
/// as the IETF draft asks). An AS that does not answers 200 to any revocation, so a 200 from
/// it proves nothing.
pub(crate) fn revocation_supports_deferral_code(md: &ProviderMetadata) -> bool {
    md.additional
        .get("revocation_endpoint_token_type_values_supported")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|v| v.as_str() == Some(DEFERRAL_CODE_TOKEN_TYPE))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn md(extra: serde_json::Value) -> ProviderMetadata {
        let mut v = json!({
            "issuer": "https://op.example",
            "authorization_endpoint": "https://op.example/authorize",
            "token_endpoint": "https://op.example/token",
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        ProviderMetadata::from_json(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn poll_forms_differ_only_in_grant_and_handle_name() {
        assert_eq!(
            Profile::Oidc.poll_params("h"),
            vec![
                ("grant_type", GRANT_TYPE_DEFERRED.to_owned()),
                ("deferred_auth_id", "h".to_owned())
            ]
        );
        assert_eq!(
            Profile::Ietf.poll_params("h"),
            vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:deferred".to_owned()
                ),
                ("deferral_code", "h".to_owned())
            ]
        );
    }

    #[test]
    fn interaction_required_is_pending_only_in_ietf() {
        let e = OAuthError::new(ErrorCode::InteractionRequired);
        assert!(matches!(
            Profile::Ietf.classify::<()>(e.clone()),
            PollResult::OAuth(_)
        ));
        assert!(matches!(
            Profile::Oidc.classify::<()>(e),
            PollResult::Permanent(PollFailure::OAuth(_))
        ));
        let pending = OAuthError::new(ErrorCode::AuthorizationPending);
        assert!(matches!(
            Profile::Oidc.classify::<()>(pending),
            PollResult::OAuth(_)
        ));
    }

    #[test]
    fn choice_from_discovery() {
        let oidc = md(json!({
            "response_types_supported": ["code", "deferred_code"],
            "grant_types_supported": ["authorization_code", GRANT_TYPE_DEFERRED],
        }));
        let ietf = md(json!({
            "response_types_supported": ["code"],
            "deferred_token_response_supported": true,
        }));
        let both = md(json!({
            "response_types_supported": ["code", "deferred_code"],
            "grant_types_supported": ["authorization_code", GRANT_TYPE_DEFERRED],
            "deferred_token_response_supported": true,
        }));
        let none = md(json!({"response_types_supported": ["code"]}));
        assert_eq!(Profile::choose(None, &oidc), Some(Profile::Oidc));
        assert_eq!(Profile::choose(None, &ietf), Some(Profile::Ietf));
        assert_eq!(Profile::choose(None, &both), Some(Profile::Oidc));
        assert_eq!(Profile::choose(None, &none), None);
        // An OP that supports both gets the one asked for.
        assert_eq!(
            Profile::choose(Some(Profile::Ietf), &both),
            Some(Profile::Ietf)
        );
        assert_eq!(
            Profile::choose(Some(Profile::Oidc), &both),
            Some(Profile::Oidc)
        );
        assert_eq!(Profile::choose(Some(Profile::Ietf), &oidc), None);
        // `false` is not support.
        let off = md(json!({"deferred_token_response_supported": false}));
        assert!(!Profile::Ietf.advertised_by(&off));
    }

    #[test]
    fn revocation_type_check() {
        let yes = md(json!({
            "revocation_endpoint_token_type_values_supported":
                ["access_token", DEFERRAL_CODE_TOKEN_TYPE]
        }));
        let no = md(json!({
            "revocation_endpoint_token_type_values_supported": ["access_token"]
        }));
        assert!(revocation_supports_deferral_code(&yes));
        assert!(!revocation_supports_deferral_code(&no));
        assert!(!revocation_supports_deferral_code(&md(json!({}))));
    }

    #[test]
    fn profile_names_round_trip() {
        for p in [Profile::Oidc, Profile::Ietf] {
            assert_eq!(p.as_str().parse::<Profile>().unwrap(), p);
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        assert!("dcp".parse::<Profile>().is_err());
    }
}
