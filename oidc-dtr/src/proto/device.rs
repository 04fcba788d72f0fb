//! The device authorization grant (RFC 8628) as an originating grant of the
//! IETF profile (its opt-in works on any grant): for CLIs and devices without a browser
//! on the same machine. The device authorization request may carry the
//! `completion_mode=deferred` hint; the device-code token request opts in,
//! and may get tokens, the plain RFC 8628 `authorization_pending` (the user
//! has not finished at the verification URI yet: poll the device code
//! again), or the IETF deferred response (a `deferral_code` the engine
//! then polls).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::Error;
use crate::proto::exchange::{DEFAULT_INTERVAL_SECS, IetfOrigin};
use crate::proto::message::{HttpResponse, check_url, success_object};
use crate::secret::{Nonce, PkceVerifier};
use crate::time::UnixTime;

/// What a device authorization request returned (RFC 8628 §3.2), and what
/// the SDK needs to redeem it: show [`user_code`](Self::user_code) and
/// [`verification_uri`](Self::verification_uri) (or the complete one) to
/// the user, then call
/// [`DtrClient::device_token`](crate::DtrClient::device_token).
///
/// It serialises (a CLI can keep it between two invocations); `Debug`
/// hides the device code. A response whose `device_code` or `user_code` is
/// longer than 4 KiB, or whose `expires_in` or `interval` is not written as
/// a JSON integer (`1e3`, `5.0`), is refused with a
/// [`ResponseError`](crate::error::ResponseError) naming the member.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAuthorization {
    pub(crate) device_code: String,
    pub(crate) user_code: String,
    pub(crate) verification_uri: Url,
    pub(crate) verification_uri_complete: Option<Url>,
    pub(crate) expires_at: UnixTime,
    pub(crate) interval_secs: u64,
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) nonce: Nonce,
    pub(crate) requested_at: UnixTime,
    /// When the device authorization answer arrived: the first device-code
    /// token request waits the interval from here. Absent in values kept
    /// from a version that did not record it (`requested_at` then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) answered_at: Option<UnixTime>,
    pub(crate) completion_mode_hint: bool,
}

impl fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri.as_str())
            .field("expires_at", &self.expires_at)
            .field("interval_secs", &self.interval_secs)
            .field("completion_mode_hint", &self.completion_mode_hint)
            .finish_non_exhaustive()
    }
}

impl DeviceAuthorization {
    /// The code the user types at the verification URI.
    pub fn user_code(&self) -> &str {
        &self.user_code
    }
    /// Where the user goes.
    pub fn verification_uri(&self) -> &Url {
        &self.verification_uri
    }
    /// The verification URI with the user code in it, if the AS sent one
    /// (for a QR code, say).
    pub fn verification_uri_complete(&self) -> Option<&Url> {
        self.verification_uri_complete.as_ref()
    }
    /// When the device code expires.
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }
    /// The minimum time between device-code token requests.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
    /// Whether the request carried the `completion_mode=deferred` hint.
    pub fn completion_mode_hint(&self) -> bool {
        self.completion_mode_hint
    }

    /// The device code (a secret: it redeems the tokens).
    pub(crate) fn device_code(&self) -> &str {
        &self.device_code
    }

    /// When the device authorization answer arrived (the first token
    /// request's interval counts from it; an OP may count it from there).
    pub(crate) fn answered_at(&self) -> UnixTime {
        self.answered_at
            .map_or(self.requested_at, |a| a.max(self.requested_at))
    }

    /// The same, answered at `answered_at`.
    pub(crate) fn with_answered_at(mut self, answered_at: UnixTime) -> Self {
        self.answered_at = Some(answered_at);
        self
    }

    /// What a deferral of this device flow keeps.
    pub(crate) fn origin(&self) -> IetfOrigin {
        IetfOrigin {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            nonce: self.nonce.clone(),
            // The device flow has no PKCE; the field is unused for it.
            pkce_verifier: PkceVerifier::new("device-flow"),
            max_age: None,
            requested_at: self.requested_at,
            claims_request: None,
            device_flow: true,
        }
    }
}

/// Who asked, for [`parse_device_authorization`].
pub(crate) struct DeviceRequest {
    pub issuer: String,
    pub client_id: String,
    pub nonce: Nonce,
    pub requested_at: UnixTime,
    pub completion_mode_hint: bool,
}

/// Reads a device authorization response: `device_code`, `user_code`
/// (each at most 4 KiB), `verification_uri` (https, or http to loopback)
/// and `expires_in` required; `verification_uri_complete` and `interval` (default 5 s)
/// optional.
pub(crate) fn parse_device_authorization(
    resp: &HttpResponse,
    endpoint: &Url,
    req: DeviceRequest,
) -> Result<DeviceAuthorization, Error> {
    let obj = success_object(
        resp,
        endpoint,
        "device authorization response",
        "device_code",
    )?;
    let url = |field: &'static str, required: bool| -> Result<Option<Url>, Error> {
        let s = if required {
            Some(obj.required_str(field)?)
        } else {
            obj.optional_str(field)?
        };
        let Some(s) = s else { return Ok(None) };
        let u = Url::parse(s).map_err(|_| obj.err(field, "is not an absolute URL"))?;
        check_url(&u, field).map_err(|e| obj.err(field, e.to_string()))?;
        Ok(Some(u))
    };
    let verification_uri =
        url("verification_uri", true)?.ok_or_else(|| obj.err("verification_uri", "is missing"))?;
    let verification_uri_complete = url("verification_uri_complete", false)?;
    let expires_in = obj
        .optional_positive_int("expires_in")?
        .ok_or_else(|| obj.err("expires_in", "is missing"))?;
    Ok(DeviceAuthorization {
        device_code: obj.required_handle("device_code")?.to_owned(),
        user_code: crate::error::sanitize(obj.required_handle("user_code")?, 64),
        verification_uri,
        verification_uri_complete,
        expires_at: req
            .requested_at
            .saturating_add(Duration::from_secs(expires_in)),
        interval_secs: obj
            .optional_positive_int("interval")?
            .unwrap_or(DEFAULT_INTERVAL_SECS),
        issuer: req.issuer,
        client_id: req.client_id,
        nonce: req.nonce,
        requested_at: req.requested_at,
        answered_at: None,
        completion_mode_hint: req.completion_mode_hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use serde_json::json;

    fn req() -> DeviceRequest {
        DeviceRequest {
            issuer: "https://as.example".into(),
            client_id: "cli".into(),
            nonce: Nonce::new("n"),
            requested_at: UnixTime::from_secs(1000),
            completion_mode_hint: true,
        }
    }

    fn parse(v: serde_json::Value) -> Result<DeviceAuthorization, Error> {
        parse_device_authorization(
            &HttpResponse::json(StatusCode::OK, &v),
            &Url::parse("https://as.example/device_authorization").unwrap(),
            req(),
        )
    }

    #[test]
    fn a_device_authorization_response() {
        let d = parse(json!({
            "device_code": "secret-device-code",
            "user_code": "WDJB-MJHT",
            "verification_uri": "https://as.example/device",
            "verification_uri_complete": "https://as.example/device?user_code=WDJB-MJHT",
            "expires_in": 1800,
            "interval": 7
        }))
        .unwrap();
        assert_eq!(d.user_code(), "WDJB-MJHT");
        assert_eq!(d.interval(), Duration::from_secs(7));
        assert_eq!(d.expires_at(), UnixTime::from_secs(2800));
        assert!(d.verification_uri_complete().is_some());
        assert!(!format!("{d:?}").contains("secret-device-code"));
        let back: DeviceAuthorization =
            serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    /// Issue 22: no size limit on `device_code` (600 KB accepted); exponent
    /// forms of `interval` and `expires_in` accepted.
    #[test]
    fn oversized_codes_and_exponent_numbers_are_refused() {
        let base = || {
            json!({"device_code": "d", "user_code": "U",
                   "verification_uri": "https://as.example/d", "expires_in": 5})
        };
        for field in ["device_code", "user_code"] {
            let mut v = base();
            v[field] = json!("c".repeat(600 * 1024));
            match parse(v) {
                Err(Error::Response(e)) => {
                    assert_eq!(e.field, Some(field));
                    assert!(e.to_string().contains("longer than 4096 bytes"), "{e}");
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        for (field, lit) in [
            ("interval", "1e300"),
            ("expires_in", "1.8e3"),
            ("interval", "5.0"),
        ] {
            let mut resp = HttpResponse::json(StatusCode::OK, &json!({}));
            resp.body = bytes::Bytes::from(format!(
                r#"{{"device_code":"d","user_code":"U","verification_uri":"https://as.example/d",{}"{field}":{lit}}}"#,
                if field == "expires_in" {
                    ""
                } else {
                    r#""expires_in":5,"#
                }
            ));
            match parse_device_authorization(
                &resp,
                &Url::parse("https://as.example/device_authorization").unwrap(),
                req(),
            ) {
                Err(Error::Response(e)) => assert_eq!(e.field, Some(field), "{lit}"),
                other => panic!("{field} {lit}: {other:?}"),
            }
        }
    }

    #[test]
    fn required_members_and_safe_urls() {
        for v in [
            json!({"user_code": "U", "verification_uri": "https://as.example/d", "expires_in": 5}),
            json!({"device_code": "d", "verification_uri": "https://as.example/d", "expires_in": 5}),
            json!({"device_code": "d", "user_code": "U", "expires_in": 5}),
            json!({"device_code": "d", "user_code": "U", "verification_uri": "https://as.example/d"}),
            json!({"device_code": "d", "user_code": "U", "verification_uri": "http://evil.example/d", "expires_in": 5}),
        ] {
            assert!(parse(v.clone()).is_err(), "{v}");
        }
        let d = parse(json!({"device_code": "d", "user_code": "U",
            "verification_uri": "https://as.example/d", "expires_in": 5}))
        .unwrap();
        assert_eq!(d.interval(), Duration::from_secs(5));
    }
}
