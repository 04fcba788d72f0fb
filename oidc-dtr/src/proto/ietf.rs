//! The IETF OAuth Deferred Token Response profile
//! (draft-ietf-oauth-deferred-token-response; see `crate::guide::ietf`), pure
//! parts: the opt-in parameters of the initial token request, the deferred
//! response, `interaction_uri`, and the RFC 7009 revocation that cancels.
//!
//! The originating grant's token request (authorization code, or the device
//! code of RFC 8628) carries `completion_mode=deferred` and, when the client
//! has a notification endpoint, a fresh `client_notification_token`. The AS
//! answers either with tokens (200: it may always answer synchronously) or
//! with the *deferred response*: HTTP 400, `authorization_pending` or
//! `interaction_required`, and a `deferral_code` to poll with at the
//! `interval` it gives only there.

use std::fmt;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, ErrorCode, OAuthError};
use crate::json::JsonObject;
use crate::proto::message::{HttpResponse, is_pending_code, read_oauth_error, status_error};

/// The IETF polling grant type.
pub(crate) const GRANT_TYPE_IETF_DEFERRED: &str = "urn:ietf:params:oauth:grant-type:deferred";
/// The token type of a deferral code, as a revocation `token_type_hint`
/// (RFC 7009 revocation of a deferral).
pub(crate) const DEFERRAL_CODE_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:deferral-code";
/// The RFC 8628 device grant type.
pub(crate) const GRANT_TYPE_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The only `completion_mode` value the IETF draft defines.
pub(crate) const COMPLETION_MODE_DEFERRED: &str = "deferred";
/// Bytes of randomness in a `client_notification_token` (256 bits; the
/// draft asks for at least 128, 160 recommended).
pub(crate) const CLIENT_NOTIFICATION_TOKEN_BYTES: usize = 32;
/// The longest `interaction_uri` accepted.
const MAX_INTERACTION_URI_LEN: usize = 2048;

/// An `interaction_uri` from the AS (in the deferred response or an
/// `interaction_required` poll answer): where the user must go for
/// the authorization to go on. Checked before it is handed to the
/// application: absolute `https` with a host, no fragment, no user info, at
/// most 2048 bytes, no control characters. Opening it does not complete
/// anything: polling continues and decides.
///
/// The AS says it is single-use and lives no longer than the deferral
/// code; show it to the user, do not log it at length.
///
/// ```
/// use oidc_dtr::ietf::InteractionUri;
///
/// let uri = InteractionUri::parse("https://as.example/interact?id=42")?;
/// assert_eq!(uri.as_url().host_str(), Some("as.example"));
/// // Only absolute https URIs without user info or fragment pass.
/// assert!(InteractionUri::parse("http://as.example/interact").is_err());
/// assert!(InteractionUri::parse("https://user@as.example/").is_err());
/// # Ok::<(), oidc_dtr::ietf::InvalidInteractionUri>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InteractionUri(Url);

/// Why an `interaction_uri` was refused.
///
/// ```
/// use oidc_dtr::ietf::InteractionUri;
///
/// let err = InteractionUri::parse("javascript:alert(1)").unwrap_err();
/// println!("refused: {err}"); // says why, without echoing the URI
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid interaction_uri: {0}")]
pub struct InvalidInteractionUri(&'static str);

impl InteractionUri {
    /// Checks a URI from the AS.
    pub fn parse(s: &str) -> Result<Self, InvalidInteractionUri> {
        if s.len() > MAX_INTERACTION_URI_LEN {
            return Err(InvalidInteractionUri("too long"));
        }
        if s.chars().any(char::is_control) {
            return Err(InvalidInteractionUri("control characters"));
        }
        let url = Url::parse(s).map_err(|_| InvalidInteractionUri("not an absolute URI"))?;
        if url.scheme() != "https" {
            return Err(InvalidInteractionUri("not https"));
        }
        if url.host().is_none() {
            return Err(InvalidInteractionUri("no host"));
        }
        if url.fragment().is_some() || s.contains('#') {
            return Err(InvalidInteractionUri("has a fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidInteractionUri("has user info"));
        }
        Ok(InteractionUri(url))
    }

    /// The URI.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The URI as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for InteractionUri {
    /// Scheme, host and path only: the query may hold a one-time value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "InteractionUri({}://{}{})",
            self.0.scheme(),
            self.0.host_str().unwrap_or(""),
            self.0.path()
        )
    }
}

impl fmt::Display for InteractionUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl TryFrom<String> for InteractionUri {
    type Error = InvalidInteractionUri;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        InteractionUri::parse(&s)
    }
}

impl From<InteractionUri> for String {
    fn from(u: InteractionUri) -> String {
        u.0.into()
    }
}

/// The validated `interaction_uri` of an OAuth error, if it has a valid one.
pub(crate) fn interaction_uri_of(e: &OAuthError) -> Option<InteractionUri> {
    check_interaction_uri(e).and_then(Result::ok)
}

/// The `interaction_uri` of an OAuth error, checked: `None` without one,
/// and why it is refused (logged, without the URI) for an invalid one.
pub(crate) fn check_interaction_uri(
    e: &OAuthError,
) -> Option<Result<InteractionUri, InvalidInteractionUri>> {
    let raw = e.interaction_uri.as_deref()?;
    let checked = InteractionUri::parse(raw);
    if let Err(err) = &checked {
        tracing::warn!(error = %err, "the AS sent an interaction_uri that is refused");
    }
    Some(checked)
}

/// Adds the IETF opt-in to an originating grant's token request:
/// `completion_mode=deferred`, and the `client_notification_token` when
/// one is sent.
pub(crate) fn opt_in_params(
    params: &mut Vec<(&'static str, String)>,
    notification_token: Option<&str>,
) {
    params.push(("completion_mode", COMPLETION_MODE_DEFERRED.to_owned()));
    if let Some(t) = notification_token {
        params.push(("client_notification_token", t.to_owned()));
    }
}

/// The deferred response to an initial token request (HTTP 400 with a
/// `deferral_code`).
#[derive(Clone)]
pub(crate) struct DeferredResponse {
    /// The handle to poll with.
    pub deferral_code: String,
    /// Lifetime of the deferral code (REQUIRED by the draft; tolerated
    /// absent: the code is live at the AS, so the SDK polls it until its
    /// own maximum lifetime rather than dropping it).
    pub expires_in: Option<u64>,
    /// The minimum interval (REQUIRED, and sent only here; tolerated absent
    /// as above, with the 5 s default).
    pub interval: Option<u64>,
    /// The pending answer itself (`authorization_pending` or
    /// `interaction_required`, with `error_description`).
    pub error: OAuthError,
    /// The checked `interaction_uri`, with `interaction_required`.
    pub interaction_uri: Option<InteractionUri>,
}

impl fmt::Debug for DeferredResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredResponse")
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .field("error", &self.error.code)
            .field("interaction_uri", &self.interaction_uri)
            .finish_non_exhaustive()
    }
}

/// What an initial token request with `completion_mode=deferred` got.
#[derive(Debug)]
pub(crate) enum InitialAnswer {
    /// A 2xx: the grant's ordinary token response, to validate as usual.
    Tokens,
    /// The deferred response.
    Deferred(DeferredResponse),
    /// `authorization_pending` (or `slow_down`) *without* a deferral code:
    /// the plain RFC 8628 device-flow answer (the user has not finished at
    /// the verification URI). Poll the device code again.
    DevicePending(OAuthError),
}

/// Reads the answer to an initial token request. A 2xx is `Tokens`; an
/// HTTP 400 JSON `authorization_pending`/`interaction_required` with a
/// `deferral_code` (at most 4 KiB) is `Deferred`; the same without one
/// (device flow) is `DevicePending`; anything else, the same body with
/// another error status included, is the error it is.
pub(crate) fn parse_initial_answer(
    resp: &HttpResponse,
    endpoint: &Url,
) -> Result<InitialAnswer, Error> {
    if resp.status.is_success() {
        return Ok(InitialAnswer::Tokens);
    }
    // A pending answer or a deferral comes with HTTP 400 only: the same
    // body with a 500 (a failing server) or any other status is the error
    // `status_error` makes of it, never a deferral.
    let err = match read_oauth_error(resp) {
        Some(Ok(err)) if resp.status == StatusCode::BAD_REQUEST && is_pending_code(&err.code) => {
            err
        }
        _ => return Err(status_error(resp, endpoint)),
    };
    let obj = JsonObject::parse(&resp.body, "deferred response")?;
    let code = match obj.optional_handle("deferral_code")? {
        Some(c) => c.to_owned(),
        None => return Ok(InitialAnswer::DevicePending(err)),
    };
    if err.code == ErrorCode::SlowDown {
        // A deferral code comes only with a pending answer.
        return Err(obj
            .err(
                "deferral_code",
                "came with `slow_down`, not a pending answer",
            )
            .into());
    }
    let expires_in = obj.optional_positive_int("expires_in")?;
    let interval = obj.optional_positive_int("interval")?;
    if expires_in.is_none() || interval.is_none() {
        tracing::warn!(
            expires_in = expires_in.is_some(),
            interval = interval.is_some(),
            "the deferred response lacks a REQUIRED member; using the SDK's defaults"
        );
    }
    let interaction_uri = match err.code {
        ErrorCode::InteractionRequired => interaction_uri_of(&err),
        _ => None,
    };
    Ok(InitialAnswer::Deferred(DeferredResponse {
        deferral_code: code,
        expires_in,
        interval,
        error: err,
        interaction_uri,
    }))
}

/// What an initial token request with `completion_mode=deferred` came to.
///
/// ```
/// use oidc_dtr::{CallbackResponse, DtrClient, Redemption};
/// use oidc_dtr_testkit::{MockOp, OpConfig, OpProfiles};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut config = OpConfig::default();
/// # config.profiles = OpProfiles::Ietf;
/// # let op = MockOp::builder().config(config).start().await?;
/// # let client = DtrClient::builder()
/// #     .issuer(op.issuer())
/// #     .client_id(MockOp::CLIENT_ID)
/// #     .client_secret(MockOp::CLIENT_SECRET)
/// #     .redirect_uri("http://127.0.0.1:9/callback")
/// #     .build()
/// #     .await?;
/// # let (url, pending) = client.authorize().build()?;
/// # let back = op.browse(&url).await?;
/// # let CallbackResponse::Code(code) = client.callback(&pending, back.query())? else { panic!() };
/// match client.redeem_code(code).await? {
///     Redemption::Tokens(tokens) => println!("at once: {}", tokens.claims().subject()),
///     Redemption::Deferred(auth) => {
///         // Stored and being polled; `client.wait(auth.id())` gives the outcome.
///         println!("deferred until {:?}", auth.expires_at());
///     }
///     _ => unreachable!("a redemption this version does not know"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[non_exhaustive]
#[must_use = "either tokens to use or a deferral that is now being polled"]
pub enum Redemption {
    /// The AS answered at once (it may always): validated tokens.
    Tokens(Box<crate::proto::token::TokenSet>),
    /// The AS deferred: the authentication is stored and being polled;
    /// get its outcome with [`DtrClient::wait`](crate::DtrClient::wait).
    /// With `interaction_required`, its
    /// [`interaction_uri`](crate::DeferredAuthentication::interaction_uri)
    /// is where the user must go.
    Deferred(Box<crate::proto::exchange::DeferredAuthentication>),
}

/// The form of an RFC 7009 revocation that cancels a deferral (B.8).
pub(crate) fn revocation_params(deferral_code: &str) -> Vec<(&'static str, String)> {
    vec![
        ("token", deferral_code.to_owned()),
        ("token_type_hint", DEFERRAL_CODE_TOKEN_TYPE.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use serde_json::json;

    fn url() -> Url {
        Url::parse("https://as.example/token").unwrap()
    }

    fn answer(status: u16, v: serde_json::Value) -> Result<InitialAnswer, Error> {
        parse_initial_answer(
            &HttpResponse::json(StatusCode::from_u16(status).unwrap(), &v),
            &url(),
        )
    }

    #[test]
    fn interaction_uri_rules() {
        assert!(InteractionUri::parse("https://as.example/i/abc?x=1").is_ok());
        for bad in [
            "http://as.example/i",
            "https://as.example/i#frag",
            "https://as.example/i#",
            "https://user:pw@as.example/i",
            "https://user@as.example/i",
            "/relative",
            "javascript:alert(1)",
            "https://as.example/\ni",
        ] {
            assert!(InteractionUri::parse(bad).is_err(), "{bad}");
        }
        let long = format!("https://as.example/{}", "a".repeat(3000));
        assert!(InteractionUri::parse(&long).is_err());
        // Debug hides the query.
        let u = InteractionUri::parse("https://as.example/i?otp=s3cret").unwrap();
        assert!(!format!("{u:?}").contains("s3cret"));
        // Serde goes through the checks.
        assert!(serde_json::from_str::<InteractionUri>("\"http://x.example\"").is_err());
        let back: InteractionUri =
            serde_json::from_str(&serde_json::to_string(&u).unwrap()).unwrap();
        assert_eq!(back, u);
    }

    #[test]
    fn tokens_are_a_success() {
        assert!(matches!(
            answer(200, json!({"access_token": "a", "token_type": "Bearer"})).unwrap(),
            InitialAnswer::Tokens
        ));
    }

    #[test]
    fn deferred_response_with_interval_and_expiry() {
        let InitialAnswer::Deferred(d) = answer(
            400,
            json!({
                "error": "authorization_pending",
                "error_description": "step=document_review",
                "deferral_code": "dc-1",
                "expires_in": 3600,
                "interval": 7
            }),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(d.deferral_code, "dc-1");
        assert_eq!((d.expires_in, d.interval), (Some(3600), Some(7)));
        assert_eq!(d.error.description.as_deref(), Some("step=document_review"));
        assert!(d.interaction_uri.is_none());
        assert!(!format!("{d:?}").contains("dc-1"));
    }

    #[test]
    fn interaction_required_carries_its_uri() {
        let InitialAnswer::Deferred(d) = answer(
            400,
            json!({
                "error": "interaction_required",
                "deferral_code": "dc-2",
                "expires_in": 60,
                "interval": 5,
                "interaction_uri": "https://as.example/interact/1"
            }),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            d.interaction_uri.unwrap().as_str(),
            "https://as.example/interact/1"
        );
        // An invalid URI is dropped, the deferral kept.
        let InitialAnswer::Deferred(d) = answer(
            400,
            json!({
                "error": "interaction_required",
                "deferral_code": "dc-3",
                "expires_in": 60,
                "interval": 5,
                "interaction_uri": "http://as.example/interact#x"
            }),
        )
        .unwrap() else {
            panic!()
        };
        assert!(d.interaction_uri.is_none());
    }

    #[test]
    fn pending_without_deferral_code_is_device_polling() {
        assert!(matches!(
            answer(400, json!({"error": "authorization_pending"})).unwrap(),
            InitialAnswer::DevicePending(_)
        ));
        assert!(matches!(
            answer(400, json!({"error": "slow_down"})).unwrap(),
            InitialAnswer::DevicePending(_)
        ));
    }

    #[test]
    fn other_errors_are_errors() {
        match answer(
            400,
            json!({"error": "invalid_request", "deferral_code": "x"}),
        ) {
            Err(Error::OAuth(e)) => assert_eq!(e.code, ErrorCode::InvalidRequest),
            other => panic!("{other:?}"),
        }
        match answer(
            400,
            json!({"error": "authorization_pending", "deferral_code": 5}),
        ) {
            Err(Error::Response(e)) => assert_eq!(e.field, Some("deferral_code")),
            other => panic!("{other:?}"),
        }
    }

    /// Issue 22: a 500 with a pending body and a `deferral_code` was taken
    /// as a deferral; any error status other than 400 now is the error it
    /// is (transient for a 5xx), never `Deferred` or `DevicePending`.
    #[test]
    fn a_pending_body_with_a_status_other_than_400_is_no_deferral() {
        let body = json!({
            "error": "authorization_pending",
            "deferral_code": "dc-500",
            "expires_in": 60,
            "interval": 5
        });
        for status in [500, 502, 503, 401, 403, 429] {
            match answer(status, body.clone()) {
                Err(e @ Error::Http(crate::error::HttpError::PendingWithErrorStatus { .. })) => {
                    assert!(e.is_retryable(), "{status}");
                    assert!(!format!("{e} {e:?}").contains("dc-500"));
                }
                other => panic!("{status}: {other:?}"),
            }
            match answer(status, json!({"error": "authorization_pending"})) {
                Err(Error::Http(crate::error::HttpError::PendingWithErrorStatus { .. })) => {}
                other => panic!("device {status}: {other:?}"),
            }
        }
        assert!(matches!(answer(400, body), Ok(InitialAnswer::Deferred(_))));
    }

    /// Issue 22: no size limit on `deferral_code`; exponent forms of
    /// `interval` and `expires_in` accepted.
    #[test]
    fn oversized_deferral_codes_and_exponent_numbers_are_refused() {
        let pending = |code: String| {
            answer(
                400,
                json!({"error": "authorization_pending", "deferral_code": code,
                       "expires_in": 60, "interval": 5}),
            )
        };
        assert!(matches!(
            pending("d".repeat(crate::json::MAX_HANDLE_BYTES)),
            Ok(InitialAnswer::Deferred(_))
        ));
        match pending("d".repeat(600 * 1024)) {
            Err(Error::Response(e)) => {
                assert_eq!(e.field, Some("deferral_code"));
                assert!(e.to_string().contains("4096"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        for field in ["interval", "expires_in"] {
            let mut resp = HttpResponse::json(StatusCode::BAD_REQUEST, &json!({}));
            resp.body = bytes::Bytes::from(format!(
                r#"{{"error":"authorization_pending","deferral_code":"dc","{field}":1e300}}"#
            ));
            match parse_initial_answer(&resp, &url()) {
                Err(Error::Response(e)) => assert_eq!(e.field, Some(field)),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn opt_in_and_revocation_forms() {
        let mut p = vec![("grant_type", "authorization_code".to_owned())];
        opt_in_params(&mut p, Some("nt"));
        assert_eq!(p[1], ("completion_mode", "deferred".to_owned()));
        assert_eq!(p[2], ("client_notification_token", "nt".to_owned()));
        assert_eq!(
            revocation_params("dc"),
            vec![
                ("token", "dc".to_owned()),
                (
                    "token_type_hint",
                    "urn:ietf:params:oauth:token-type:deferral-code".to_owned()
                )
            ]
        );
    }
}
