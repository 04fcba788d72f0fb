//! Provider metadata: OpenID Connect Discovery, with RFC 8414 as fallback,
//! and the check that the OP supports Deferred Token Response.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::error::{DiscoveryError, ResponseError};
use crate::json::JsonObject;
use crate::proto::message::check_url;

/// The `response_type` value that asks for a deferred authentication.
pub(crate) const RESPONSE_TYPE_DEFERRED_CODE: &str = "deferred_code";
/// The grant type of both the Deferred Code Exchange and the Token Request.
pub(crate) const GRANT_TYPE_DEFERRED: &str = "urn:openid:params:grant-type:deferred";

pub(crate) const CONTEXT: &str = "provider metadata";

/// What the OP says about itself (OpenID Connect Discovery 1.0 §3 /
/// RFC 8414 §2), limited to what an RP of this flow uses; every other member
/// is kept in [`additional`](Self::additional).
///
/// ```
/// use oidc_dtr::{DtrClient, ProviderMetadata};
/// use url::Url;
///
/// // An OP without a discovery document: give its metadata by hand.
/// let metadata = ProviderMetadata::new(
///     "https://op.example",
///     Url::parse("https://op.example/authorize")?,
///     Url::parse("https://op.example/token")?,
/// )
/// .with_jwks_uri(Url::parse("https://op.example/jwks")?)
/// .with_response_types(["deferred_code"]);
/// assert!(metadata.supports_response_type("deferred_code"));
/// let builder = DtrClient::builder().metadata(metadata); // instead of `.issuer(..)`
/// # let _ = builder;
/// # Ok::<(), url::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProviderMetadata {
    /// The issuer identifier.
    pub issuer: String,
    /// The authorization endpoint.
    pub authorization_endpoint: Url,
    /// The token endpoint (exchange and polling).
    pub token_endpoint: Url,
    /// The JWK Set of the OP's signing keys.
    pub jwks_uri: Option<Url>,
    /// `response_types_supported`.
    pub response_types_supported: Vec<String>,
    /// `response_modes_supported`.
    pub response_modes_supported: Option<Vec<String>>,
    /// `grant_types_supported` (RFC 8414 default when absent:
    /// `authorization_code`, `implicit`).
    pub grant_types_supported: Option<Vec<String>>,
    /// `id_token_signing_alg_values_supported`.
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
    /// `token_endpoint_auth_methods_supported`.
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// `token_endpoint_auth_signing_alg_values_supported`.
    pub token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    /// `code_challenge_methods_supported`.
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// `dpop_signing_alg_values_supported` (RFC 9449).
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
    /// `authorization_response_iss_parameter_supported` (RFC 9207): when true,
    /// every authorization response must carry `iss`.
    pub authorization_response_iss_parameter_supported: bool,
    /// `pushed_authorization_request_endpoint` (RFC 9126 §5): where
    /// authorization requests are pushed.
    #[serde(default)]
    pub pushed_authorization_request_endpoint: Option<Url>,
    /// `require_pushed_authorization_requests` (RFC 9126 §5): when true, the
    /// OP accepts authorization requests only through PAR, and the client
    /// always pushes.
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
    /// `mtls_endpoint_aliases` (RFC 8705 §5): the endpoints a client using
    /// mutual TLS calls instead of the plain ones, by metadata name
    /// (`token_endpoint`, `revocation_endpoint`, `userinfo_endpoint`,
    /// `device_authorization_endpoint`,
    /// `pushed_authorization_request_endpoint`, ...). Empty when absent.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub mtls_endpoint_aliases: std::collections::BTreeMap<String, Url>,
    /// Every other member, as sent (e.g. a vendor's cancellation endpoint).
    pub additional: Map<String, Value>,
}

impl ProviderMetadata {
    /// Metadata given by hand, for OPs without discovery. Add the optional
    /// members through the public fields or the `with_*` methods.
    pub fn new(
        issuer: impl Into<String>,
        authorization_endpoint: Url,
        token_endpoint: Url,
    ) -> Self {
        ProviderMetadata {
            issuer: issuer.into(),
            authorization_endpoint,
            token_endpoint,
            jwks_uri: None,
            response_types_supported: Vec::new(),
            response_modes_supported: None,
            grant_types_supported: None,
            id_token_signing_alg_values_supported: None,
            token_endpoint_auth_methods_supported: None,
            token_endpoint_auth_signing_alg_values_supported: None,
            code_challenge_methods_supported: None,
            dpop_signing_alg_values_supported: None,
            authorization_response_iss_parameter_supported: false,
            pushed_authorization_request_endpoint: None,
            require_pushed_authorization_requests: false,
            mtls_endpoint_aliases: Default::default(),
            additional: Map::new(),
        }
    }

    /// Sets `jwks_uri`.
    pub fn with_jwks_uri(mut self, url: Url) -> Self {
        self.jwks_uri = Some(url);
        self
    }

    /// Sets `response_types_supported`.
    pub fn with_response_types(mut self, v: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.response_types_supported = v.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `pushed_authorization_request_endpoint` and
    /// `require_pushed_authorization_requests` (RFC 9126 §5).
    pub fn with_pushed_authorization_request_endpoint(mut self, url: Url, required: bool) -> Self {
        self.pushed_authorization_request_endpoint = Some(url);
        self.require_pushed_authorization_requests = required;
        self
    }

    /// Sets `grant_types_supported`.
    pub fn with_grant_types(mut self, v: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.grant_types_supported = Some(v.into_iter().map(Into::into).collect());
        self
    }

    /// Parses a metadata document, naming the member at fault on error.
    pub fn from_json(body: &[u8]) -> Result<Self, ResponseError> {
        Self::from_object(JsonObject::parse(body, CONTEXT)?)
    }

    pub(crate) fn from_object(obj: JsonObject) -> Result<Self, ResponseError> {
        let url = |field: &'static str| -> Result<Option<Url>, ResponseError> {
            let Some(s) = obj.optional_str(field)? else {
                return Ok(None);
            };
            let u = Url::parse(s).map_err(|e| obj.err(field, format!("is not a URL ({e})")))?;
            check_url(&u, field).map_err(|e| obj.err(field, e.to_string()))?;
            Ok(Some(u))
        };
        let required_url =
            |field: &'static str| url(field)?.ok_or_else(|| obj.err(field, "is missing"));
        let issuer = obj.required_str("issuer")?.to_owned();
        let authorization_endpoint = required_url("authorization_endpoint")?;
        let token_endpoint = required_url("token_endpoint")?;
        let jwks_uri = url("jwks_uri")?;
        let known = [
            "issuer",
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "response_types_supported",
            "response_modes_supported",
            "grant_types_supported",
            "id_token_signing_alg_values_supported",
            "token_endpoint_auth_methods_supported",
            "token_endpoint_auth_signing_alg_values_supported",
            "code_challenge_methods_supported",
            "dpop_signing_alg_values_supported",
            "authorization_response_iss_parameter_supported",
            "pushed_authorization_request_endpoint",
            "require_pushed_authorization_requests",
            "mtls_endpoint_aliases",
        ];
        let mut mtls_endpoint_aliases = std::collections::BTreeMap::new();
        match obj.map.get("mtls_endpoint_aliases") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (name, v) in m {
                    let u = v.as_str().and_then(|s| Url::parse(s).ok()).ok_or_else(|| {
                        obj.err("mtls_endpoint_aliases", format!("`{name}` is not a URL"))
                    })?;
                    check_url(&u, "mtls_endpoint_aliases")
                        .map_err(|e| obj.err("mtls_endpoint_aliases", e.to_string()))?;
                    mtls_endpoint_aliases.insert(name.clone(), u);
                }
            }
            Some(_) => return Err(obj.err("mtls_endpoint_aliases", "is not an object")),
        }
        let md = ProviderMetadata {
            issuer,
            authorization_endpoint,
            token_endpoint,
            jwks_uri,
            response_types_supported: obj
                .optional_str_array("response_types_supported")?
                .unwrap_or_default(),
            response_modes_supported: obj.optional_str_array("response_modes_supported")?,
            grant_types_supported: obj.optional_str_array("grant_types_supported")?,
            id_token_signing_alg_values_supported: obj
                .optional_str_array("id_token_signing_alg_values_supported")?,
            token_endpoint_auth_methods_supported: obj
                .optional_str_array("token_endpoint_auth_methods_supported")?,
            token_endpoint_auth_signing_alg_values_supported: obj
                .optional_str_array("token_endpoint_auth_signing_alg_values_supported")?,
            code_challenge_methods_supported: obj
                .optional_str_array("code_challenge_methods_supported")?,
            dpop_signing_alg_values_supported: obj
                .optional_str_array("dpop_signing_alg_values_supported")?,
            authorization_response_iss_parameter_supported: obj
                .optional_bool("authorization_response_iss_parameter_supported")?
                .unwrap_or(false),
            pushed_authorization_request_endpoint: url("pushed_authorization_request_endpoint")?,
            require_pushed_authorization_requests: obj
                .optional_bool("require_pushed_authorization_requests")?
                .unwrap_or(false),
            mtls_endpoint_aliases,
            additional: Map::new(),
        };
        let mut md = md;
        md.additional = obj
            .map
            .into_iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .collect();
        Ok(md)
    }

    /// Checks the endpoints a client will call (https or loopback).
    pub(crate) fn check_urls(&self) -> Result<(), crate::error::ConfigError> {
        check_url(&self.authorization_endpoint, "authorization_endpoint")?;
        check_url(&self.token_endpoint, "token_endpoint")?;
        if let Some(j) = &self.jwks_uri {
            check_url(j, "jwks_uri")?;
        }
        if let Some(p) = &self.pushed_authorization_request_endpoint {
            check_url(p, "pushed_authorization_request_endpoint")?;
        }
        for u in self.mtls_endpoint_aliases.values() {
            check_url(u, "mtls_endpoint_aliases")?;
        }
        Ok(())
    }

    /// Adds an `mtls_endpoint_aliases` entry (RFC 8705 §5): `name` is the
    /// metadata name of the plain endpoint (`token_endpoint`, ...).
    pub fn with_mtls_endpoint_alias(mut self, name: impl Into<String>, url: Url) -> Self {
        self.mtls_endpoint_aliases.insert(name.into(), url);
        self
    }

    /// The `mtls_endpoint_aliases` entry for the endpoint named `name`
    /// (RFC 8705 §5), if the OP publishes one.
    pub fn mtls_endpoint_alias(&self, name: &str) -> Option<&Url> {
        self.mtls_endpoint_aliases.get(name)
    }

    /// Whether `response_types_supported` lists `deferred_code` (in any
    /// combination order, e.g. `"deferred_code"` itself).
    pub fn supports_response_type(&self, response_type: &str) -> bool {
        let mut wanted: Vec<&str> = response_type.split(' ').filter(|s| !s.is_empty()).collect();
        wanted.sort_unstable();
        self.response_types_supported.iter().any(|rt| {
            let mut have: Vec<&str> = rt.split(' ').filter(|s| !s.is_empty()).collect();
            have.sort_unstable();
            have == wanted
        })
    }

    /// Whether `grant_types_supported` lists `grant_type` (applying the
    /// RFC 8414 default when the member is absent).
    pub fn supports_grant_type(&self, grant_type: &str) -> bool {
        match &self.grant_types_supported {
            Some(g) => g.iter().any(|g| g == grant_type),
            None => matches!(grant_type, "authorization_code" | "implicit"),
        }
    }

    /// `deferred_token_response_supported` (IETF OAuth Deferred Token
    /// Response, §"Authorization Server Metadata"): true only when the
    /// member is `true`.
    pub fn deferred_token_response_supported(&self) -> bool {
        self.additional
            .get("deferred_token_response_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// `revocation_endpoint` (RFC 8414), where the IETF profile cancels:
    /// `None` when absent or not an acceptable URL (https, or http to
    /// loopback).
    pub fn revocation_endpoint(&self) -> Option<Url> {
        self.additional_url("revocation_endpoint")
    }

    /// `device_authorization_endpoint` (RFC 8628 §4), for the device
    /// flow: `None` when absent or not an acceptable URL.
    pub fn device_authorization_endpoint(&self) -> Option<Url> {
        self.additional_url("device_authorization_endpoint")
    }

    fn additional_url(&self, member: &'static str) -> Option<Url> {
        let s = self.additional.get(member)?.as_str()?;
        let u = Url::parse(s).ok()?;
        check_url(&u, member).ok()?;
        Some(u)
    }

    /// Checks that the OP advertises Deferred Token Response: `deferred_code`
    /// in `response_types_supported` and
    /// `urn:openid:params:grant-type:deferred` in `grant_types_supported`.
    /// The error names everything that is missing.
    pub fn check_dtr_support(&self) -> Result<(), DiscoveryError> {
        let mut missing = Vec::new();
        if !self.supports_response_type(RESPONSE_TYPE_DEFERRED_CODE) {
            missing.push(format!(
                "`{RESPONSE_TYPE_DEFERRED_CODE}` in `response_types_supported`"
            ));
        }
        if !self.supports_grant_type(GRANT_TYPE_DEFERRED) {
            missing.push(format!(
                "`{GRANT_TYPE_DEFERRED}` in `grant_types_supported`"
            ));
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DiscoveryError::DtrNotAdvertised { missing })
        }
    }
}

/// The two well-known locations for an issuer: OpenID Connect Discovery
/// (`{issuer}/.well-known/openid-configuration`) and RFC 8414
/// (`{origin}/.well-known/oauth-authorization-server{path}`).
pub(crate) fn well_known_urls(issuer: &Url) -> [Url; 2] {
    let path = issuer.path().trim_end_matches('/');
    let mut oidc = issuer.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    [oidc, rfc8414]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> serde_json::Value {
        serde_json::json!({
            "issuer": "https://op.example/tenant",
            "authorization_endpoint": "https://op.example/tenant/authorize",
            "token_endpoint": "https://op.example/tenant/token",
            "jwks_uri": "https://op.example/tenant/jwks",
            "response_types_supported": ["code", "deferred_code", "code deferred_code"],
            "grant_types_supported": ["authorization_code", GRANT_TYPE_DEFERRED],
            "authorization_response_iss_parameter_supported": true,
            "x_cancel_endpoint": "https://op.example/cancel"
        })
    }

    #[test]
    fn parses_and_keeps_unknown_members() {
        let md = ProviderMetadata::from_json(doc().to_string().as_bytes()).unwrap();
        assert_eq!(md.issuer, "https://op.example/tenant");
        assert!(md.authorization_response_iss_parameter_supported);
        assert_eq!(
            md.additional
                .get("x_cancel_endpoint")
                .and_then(|v| v.as_str()),
            Some("https://op.example/cancel")
        );
        assert!(md.check_dtr_support().is_ok());
        assert!(md.supports_response_type("deferred_code code"));
    }

    #[test]
    fn mtls_endpoint_aliases_are_parsed_and_checked() {
        let mut d = doc();
        d["mtls_endpoint_aliases"] = serde_json::json!({
            "token_endpoint": "https://mtls.op.example/token",
            "userinfo_endpoint": "https://mtls.op.example/userinfo"
        });
        let md = ProviderMetadata::from_json(d.to_string().as_bytes()).unwrap();
        assert_eq!(
            md.mtls_endpoint_alias("token_endpoint").map(Url::as_str),
            Some("https://mtls.op.example/token")
        );
        assert!(md.mtls_endpoint_alias("revocation_endpoint").is_none());
        assert!(!md.additional.contains_key("mtls_endpoint_aliases"));
        // Round trip through serde (stored metadata).
        let back: ProviderMetadata =
            serde_json::from_str(&serde_json::to_string(&md).unwrap()).unwrap();
        assert_eq!(back, md);
        for bad in [
            serde_json::json!({ "token_endpoint": 7 }),
            serde_json::json!({ "token_endpoint": "http://mtls.op.example/token" }),
            serde_json::json!(["https://mtls.op.example/token"]),
        ] {
            let mut d = doc();
            d["mtls_endpoint_aliases"] = bad;
            let e = ProviderMetadata::from_json(d.to_string().as_bytes()).unwrap_err();
            assert!(e.to_string().contains("mtls_endpoint_aliases"), "{e}");
        }
    }

    #[test]
    fn dtr_check_names_what_is_missing() {
        let mut d = doc();
        d["response_types_supported"] = serde_json::json!(["code"]);
        let md = ProviderMetadata::from_json(d.to_string().as_bytes()).unwrap();
        let e = md.check_dtr_support().unwrap_err().to_string();
        assert!(
            e.contains("`deferred_code` in `response_types_supported`"),
            "{e}"
        );
        assert!(!e.contains("grant_types_supported"), "{e}");

        d["grant_types_supported"] = serde_json::Value::Null;
        let md = ProviderMetadata::from_json(d.to_string().as_bytes()).unwrap();
        let e = md.check_dtr_support().unwrap_err().to_string();
        assert!(
            e.contains("`deferred_code` in `response_types_supported`"),
            "{e}"
        );
        assert!(
            e.contains("`urn:openid:params:grant-type:deferred` in `grant_types_supported`"),
            "{e}"
        );
    }

    #[test]
    fn field_errors_name_the_field() {
        let cases: &[(&str, serde_json::Value, &str)] = &[
            ("issuer", serde_json::json!(5), "`issuer` must be a string"),
            (
                "token_endpoint",
                serde_json::Value::Null,
                "`token_endpoint` is missing",
            ),
            (
                "token_endpoint",
                serde_json::json!("http://op.example/token"),
                "`token_endpoint`",
            ),
            (
                "jwks_uri",
                serde_json::json!("not a url"),
                "`jwks_uri` is not a URL",
            ),
            (
                "response_types_supported",
                serde_json::json!("code"),
                "`response_types_supported` must be an array",
            ),
            (
                "authorization_response_iss_parameter_supported",
                serde_json::json!("yes"),
                "must be a boolean",
            ),
        ];
        for (field, value, want) in cases {
            let mut d = doc();
            d[*field] = value.clone();
            let e = ProviderMetadata::from_json(d.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.field, Some(*field));
            assert!(e.to_string().contains(want), "{e} / {want}");
        }
    }

    #[test]
    fn well_known_locations() {
        let [a, b] = well_known_urls(&Url::parse("https://op.example/tenant/").unwrap());
        assert_eq!(
            a.as_str(),
            "https://op.example/tenant/.well-known/openid-configuration"
        );
        assert_eq!(
            b.as_str(),
            "https://op.example/.well-known/oauth-authorization-server/tenant"
        );
        let [a, b] = well_known_urls(&Url::parse("https://op.example").unwrap());
        assert_eq!(
            a.as_str(),
            "https://op.example/.well-known/openid-configuration"
        );
        assert_eq!(
            b.as_str(),
            "https://op.example/.well-known/oauth-authorization-server"
        );
    }

    #[test]
    fn serde_round_trip() {
        let md = ProviderMetadata::from_json(doc().to_string().as_bytes()).unwrap();
        let j = serde_json::to_string(&md).unwrap();
        assert_eq!(serde_json::from_str::<ProviderMetadata>(&j).unwrap(), md);
    }

    #[test]
    fn duplicate_members_are_refused() {
        let d = doc().to_string();
        let body = format!(
            "{},\"token_endpoint\":\"https://evil.example/token\"}}",
            &d[..d.len() - 1]
        );
        let e = ProviderMetadata::from_json(body.as_bytes()).unwrap_err();
        assert!(
            e.to_string()
                .contains("`token_endpoint` appears more than once"),
            "{e}"
        );
    }
}
