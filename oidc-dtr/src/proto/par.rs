//! Pushed Authorization Requests (PAR, RFC 9126): the form sent to the
//! `pushed_authorization_request_endpoint`, the answer read back, and the
//! redirect that carries only `client_id` and `request_uri`.
//!
//! - RFC 9126 §2.1: the request is a form POST with every authorization
//!   parameter (or a signed request object, `request`, RFC 9126 §3) and the
//!   client authentication of the token endpoint (added by the caller);
//! - RFC 9126 §2.2: the answer is `201 Created` with `request_uri` and
//!   `expires_in`, both required;
//! - RFC 9126 §2.3: an error is an OAuth error response;
//! - RFC 9126 §4: the authorization request then carries `client_id` and
//!   `request_uri` only; a `request_uri` is used once (the SDK pushes again
//!   for every authorization request);
//! - RFC 9449 §10: a DPoP-bound request sends `dpop_jkt`, the thumbprint of
//!   the key the code is bound to (and the same key signs the DPoP proof of
//!   the push and of every later token request).
//!
//! Pure: the HTTP call is the client's ([`PushTransport`]).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use http::StatusCode;
use url::Url;

use crate::error::{Error, ParError};
use crate::jose::dpop::DpopRef;
use crate::json::JsonObject;
use crate::proto::message::{HttpResponse, endpoint_label, status_error};

/// A pushed authorization request, ready to be sent: the form parameters
/// (without client authentication, which the sender adds, as at the token
/// endpoint) and the endpoint.
#[derive(Debug)]
pub(crate) struct ParRequest {
    pub endpoint: Url,
    pub params: Vec<(String, String)>,
}

/// A successful pushed authorization response (RFC 9126 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParResponse {
    /// The one-time reference to the pushed request.
    pub request_uri: String,
    /// How long the `request_uri` stays valid.
    pub expires_in: Duration,
}

/// The IO a push needs: the client layer sends the form with its client
/// authentication and, when a key is given, a DPoP proof of it, and
/// returns the raw answer.
pub(crate) trait PushTransport: Sync {
    /// Sends `request` and returns the raw response.
    fn send_par<'a>(
        &'a self,
        request: ParRequest,
        dpop: Option<DpopRef<'a>>,
    ) -> Pin<Box<dyn Future<Output = Result<HttpResponse, Error>> + Send + 'a>>;
}

/// The body of a push: the authorization parameters as they are (a
/// DPoP-bound request's `dpop_jkt` among them, RFC 9449 §10), or, with a
/// request object, `request` alone (RFC 9126 §3: the parameters are inside
/// it). `client_id` is left to client authentication, which adds it.
pub(crate) fn par_form(
    params: &[(String, String)],
    request_object: Option<String>,
) -> Vec<(String, String)> {
    match request_object {
        Some(jwt) => vec![("request".to_owned(), jwt)],
        None => params
            .iter()
            .filter(|(k, _)| k != "client_id")
            .cloned()
            .collect(),
    }
}

/// The URL the browser is sent to after a push (RFC 9126 §4): the
/// authorization endpoint with `client_id` and `request_uri` only.
pub(crate) fn redirect_url(
    authorization_endpoint: &Url,
    client_id: &str,
    request_uri: &str,
) -> Url {
    let mut url = authorization_endpoint.clone();
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("request_uri", request_uri);
    url
}

/// Reads the answer of the PAR endpoint (RFC 9126 §2.2, §2.3): `201` with
/// a string `request_uri` and a positive integer `expires_in`; an OAuth
/// error is [`ParError::Refused`]; other failures are the usual HTTP
/// errors (a 503 stays retryable).
pub(crate) fn parse_par_response(
    resp: &HttpResponse,
    endpoint: &Url,
) -> Result<ParResponse, Error> {
    let label = endpoint_label(endpoint);
    if !resp.status.is_success() {
        return Err(match status_error(resp, endpoint) {
            Error::OAuth(e) => ParError::Refused {
                endpoint: label,
                error: e,
            }
            .into(),
            other => other,
        });
    }
    if resp.status != StatusCode::CREATED {
        // Some servers answer errors with 200: say so when it is one.
        if let Some(Ok(e)) = crate::proto::message::read_oauth_error(resp) {
            return Err(ParError::Refused {
                endpoint: label,
                error: Box::new(e),
            }
            .into());
        }
        return Err(ParError::UnexpectedStatus {
            endpoint: label,
            status: resp.status,
        }
        .into());
    }
    let malformed = |reason: String| -> Error {
        ParError::Malformed {
            endpoint: label.clone(),
            reason,
        }
        .into()
    };
    let obj = JsonObject::parse(&resp.body, "pushed authorization response")
        .map_err(|e| malformed(e.to_string()))?;
    let request_uri = obj
        .required_str("request_uri")
        .map_err(|e| malformed(e.to_string()))?;
    if request_uri.is_empty()
        || request_uri.len() > 2048
        || request_uri.chars().any(char::is_control)
    {
        return Err(malformed(
            "`request_uri` is empty, too long or has control characters".into(),
        ));
    }
    let expires_in = obj
        .optional_positive_int("expires_in")
        .map_err(|e| malformed(e.to_string()))?
        .ok_or_else(|| malformed("`expires_in` is missing".into()))?;
    Ok(ParResponse {
        request_uri: request_uri.to_owned(),
        expires_in: Duration::from_secs(expires_in),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderMap;
    use http::header::{CONTENT_TYPE, HeaderValue};

    fn resp(status: u16, body: &str) -> HttpResponse {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        HttpResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::from(body.to_owned()),
        }
    }

    fn ep() -> Url {
        Url::parse("https://op.example/par").unwrap()
    }

    #[test]
    fn reads_a_201_answer() {
        let r = parse_par_response(
            &resp(
                201,
                r#"{"request_uri":"urn:ietf:params:oauth:request_uri:abc","expires_in":60}"#,
            ),
            &ep(),
        )
        .unwrap();
        assert_eq!(r.request_uri, "urn:ietf:params:oauth:request_uri:abc");
        assert_eq!(r.expires_in, Duration::from_secs(60));
    }

    #[test]
    fn refuses_what_rfc_9126_does_not_allow() {
        let e = parse_par_response(&resp(201, r#"{"expires_in":60}"#), &ep()).unwrap_err();
        assert!(
            matches!(e, Error::PushedAuthorization(ParError::Malformed { .. })),
            "{e:?}"
        );
        let e = parse_par_response(&resp(201, r#"{"request_uri":"u"}"#), &ep()).unwrap_err();
        assert!(
            matches!(e, Error::PushedAuthorization(ParError::Malformed { .. })),
            "{e:?}"
        );
        let e = parse_par_response(&resp(200, r#"{"request_uri":"u","expires_in":60}"#), &ep())
            .unwrap_err();
        assert!(
            matches!(e, Error::PushedAuthorization(ParError::UnexpectedStatus { status, .. }) if status == StatusCode::OK),
            "{e:?}"
        );
        let e = parse_par_response(
            &resp(
                400,
                r#"{"error":"invalid_request_object","error_description":"bad sig"}"#,
            ),
            &ep(),
        )
        .unwrap_err();
        assert_eq!(
            e.oauth().map(|o| o.code.clone()),
            Some(crate::error::ErrorCode::InvalidRequestObject)
        );
        // A 503 without an OAuth body stays a retryable HTTP error.
        let e = parse_par_response(&resp(503, "oops"), &ep()).unwrap_err();
        assert!(matches!(e, Error::Http(_)) && e.is_retryable(), "{e:?}");
    }

    #[test]
    fn form_and_redirect() {
        let params = vec![
            ("client_id".to_owned(), "c1".to_owned()),
            ("state".to_owned(), "s".to_owned()),
            ("dpop_jkt".to_owned(), "jkt".to_owned()),
        ];
        let f = par_form(&params, None);
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(f, vec![pair("state", "s"), pair("dpop_jkt", "jkt")]);
        let f = par_form(&params, Some("a.b.c".into()));
        assert_eq!(f, vec![pair("request", "a.b.c")]);
        let u = redirect_url(
            &Url::parse("https://op.example/authorize").unwrap(),
            "c1",
            "urn:x",
        );
        assert_eq!(
            u.as_str(),
            "https://op.example/authorize?client_id=c1&request_uri=urn%3Ax"
        );
    }
}
