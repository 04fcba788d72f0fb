//! Small helpers the mock OP's endpoints share: encodings, hashes and
//! the grant-type and token-type URNs.

use super::*;

pub(crate) fn random_nonce() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b64(&b)
}

pub(crate) fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Reads the action and hidden inputs of the mock OP's own `form_post` page.
pub(crate) fn parse_auto_post_form(page: &str) -> Option<(String, Vec<(String, String)>)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let start = tag.find(&key)? + key.len();
        let end = tag[start..].find('"')? + start;
        Some(html_unescape(&tag[start..end]))
    };
    let form_start = page.find("<form")?;
    let form_tag_end = page[form_start..].find('>')? + form_start;
    let action = attr(&page[form_start..form_tag_end], "action")?;
    let mut params = Vec::new();
    let mut rest = &page[form_tag_end..];
    while let Some(i) = rest.find("<input") {
        let end = rest[i..].find('>')? + i;
        let tag = &rest[i..end];
        params.push((attr(tag, "name")?, attr(tag, "value")?));
        rest = &rest[end..];
    }
    Some((action, params))
}

/// The grant type of a DTR poll (draft §"Token Request").
pub(crate) const GRANT_TYPE_DEFERRED: &str = "urn:openid:params:grant-type:deferred";
/// The IETF polling grant type.
pub(crate) const GRANT_TYPE_IETF_DEFERRED: &str = "urn:ietf:params:oauth:grant-type:deferred";
/// The IETF deferral-code token type (revocation hint).
pub(crate) const DEFERRAL_CODE_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:deferral-code";
/// The RFC 8628 device grant type.
pub(crate) const GRANT_TYPE_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// `client_assertion_type` of the JWT client authentication methods (RFC 7523).
pub(crate) const JWT_BEARER_ASSERTION: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// base64url without padding.
pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

/// The left half of the hash of `value` with the hash of `alg`, base64url
/// (`at_hash`, `c_hash`: OIDC Core §3.1.3.6).
pub(crate) fn half_hash(alg: Algorithm, value: &str) -> String {
    use aws_lc_rs::digest;
    let d = match alg {
        Algorithm::HS384 | Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => {
            digest::digest(&digest::SHA384, value.as_bytes())
        }
        Algorithm::HS512 | Algorithm::RS512 | Algorithm::PS512 | Algorithm::EdDSA => {
            digest::digest(&digest::SHA512, value.as_bytes())
        }
        _ => digest::digest(&digest::SHA256, value.as_bytes()),
    };
    b64(&d.as_ref()[..d.as_ref().len() / 2])
}

/// Constant-time equality (a mock, but it should not teach timing oracles).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// `application/x-www-form-urlencoded`.
pub(crate) fn form_encode<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}
