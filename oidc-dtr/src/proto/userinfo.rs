//! The UserInfo request and response (OIDC Core §5.3), with the verified
//! claims it may carry (OpenID Connect for Identity Assurance 1.0 §5.2).
//!
//! Pure: the request is data, the response bytes; the DPoP proof and the
//! time come from the caller.

use std::fmt;

use http::{HeaderMap, HeaderValue, Method};
use serde_json::Value;
use url::Url;

use crate::error::{ConfigError, Error, ResponseError};
use crate::json::JsonObject;
use crate::proto::assurance::{
    AssuranceLimits, CheckedVerifiedClaims, ClaimsTarget, ReceivedClaims, check_verified_claims,
};
use crate::proto::discovery::ProviderMetadata;
use crate::proto::message::{HttpRequest, HttpResponse, check_url, error_for_status};
use crate::proto::token::TokenSet;

pub(crate) const CONTEXT: &str = "UserInfo response";

/// A UserInfo response whose `sub` matched the ID token's, split into its
/// unverified claims and its verified claims, the latter checked against the
/// flow's `claims` request (its `userinfo` member) at the time of the call.
///
/// `Debug` shows claim names only, never values.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct UserInfo {
    claims: ReceivedClaims,
    verified: CheckedVerifiedClaims,
}

impl fmt::Debug for UserInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserInfo")
            .field("claims", &self.claims.unverified.keys().collect::<Vec<_>>())
            .field("verified_elements", &self.claims.verified.len())
            .finish_non_exhaustive()
    }
}

impl UserInfo {
    /// `sub` (equal to the ID token's).
    pub fn subject(&self) -> &str {
        self.claims
            .unverified_claim("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// An unverified (top-level) claim.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.unverified_claim(name)
    }

    /// The whole response: unverified claims and typed `verified_claims`.
    pub fn claims(&self) -> &ReceivedClaims {
        &self.claims
    }

    /// The verified claims, checked: requested ones and, apart from them,
    /// unrequested ones.
    pub fn verified_claims(&self) -> &CheckedVerifiedClaims {
        &self.verified
    }
}

/// The UserInfo endpoint from the metadata (`userinfo_endpoint`, kept among
/// the additional members), https (or loopback http) only.
pub(crate) fn endpoint(metadata: &ProviderMetadata) -> Result<Url, ConfigError> {
    const FIELD: &str = "userinfo_endpoint";
    let s = metadata
        .additional
        .get(FIELD)
        .and_then(Value::as_str)
        .ok_or(ConfigError::Missing(FIELD))?;
    let url = Url::parse(s).map_err(|e| ConfigError::InvalidUrl {
        field: FIELD,
        reason: e.to_string(),
    })?;
    check_url(&url, FIELD)?;
    Ok(url)
}

/// `GET` with the access token: `Authorization: DPoP` plus the `DPoP` proof
/// when one is given (DPoP-bound tokens), `Bearer` otherwise.
pub(crate) fn request(
    endpoint: &Url,
    tokens: &TokenSet,
    dpop_proof: Option<&str>,
) -> Result<HttpRequest, Error> {
    let invalid = |what: &str| ConfigError::Invalid {
        field: "userinfo",
        reason: format!("{what} is not a valid header value"),
    };
    let scheme = if dpop_proof.is_some() {
        "DPoP"
    } else {
        "Bearer"
    };
    let mut auth = HeaderValue::from_str(&format!("{scheme} {}", tokens.access_token().secret()))
        .map_err(|_| invalid("the access token"))?;
    auth.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, auth);
    if let Some(p) = dpop_proof {
        headers.insert(
            "dpop",
            HeaderValue::from_str(p).map_err(|_| invalid("the DPoP proof"))?,
        );
    }
    Ok(HttpRequest {
        method: Method::GET,
        url: std::sync::Arc::new(endpoint.clone()),
        uri: None,
        headers,
        body: Vec::new(),
    })
}

/// Whether a 401 asks for a DPoP nonce (RFC 9449 §9).
pub(crate) fn wants_dpop_nonce(resp: &HttpResponse) -> bool {
    resp.status == http::StatusCode::UNAUTHORIZED
        && resp
            .header("www-authenticate")
            .is_some_and(|h| h.contains("use_dpop_nonce"))
}

/// Parses a UserInfo response: JSON only (a signed or encrypted
/// `application/jwt` response is refused), `sub` equal to the ID token's,
/// `verified_claims` only where allowed, and checked against the flow's
/// request for `userinfo` at `now` (Unix seconds).
pub(crate) fn parse_response(
    resp: &HttpResponse,
    endpoint: &Url,
    tokens: &TokenSet,
    now: u64,
) -> Result<UserInfo, Error> {
    error_for_status(resp, endpoint)?;
    let content_type = resp
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/jwt") {
        return Err(ResponseError::new(
            CONTEXT,
            None,
            "signed or encrypted (application/jwt) UserInfo responses are not supported; \
             register the client for plain JSON UserInfo responses",
        )
        .into());
    }
    let obj = JsonObject::parse(&resp.body, CONTEXT)?;
    let sub = obj.required_str("sub")?;
    // OIDC Core §5.3.2: the sub must exactly match the ID token's.
    if !crate::secret::ct_eq(sub.as_bytes(), tokens.claims().subject().as_bytes()) {
        return Err(crate::error::ValidationError::UserInfoSubjectMismatch.into());
    }
    let claims = ReceivedClaims::from_claims(&obj.map, &AssuranceLimits::default())?;
    let requests = tokens
        .claims_request()
        .map(|r| r.verified_claims(ClaimsTarget::UserInfo))
        .unwrap_or(&[]);
    let verified = check_verified_claims(requests, &claims.verified, now)?;
    Ok(UserInfo { claims, verified })
}
