//! The plain authorization code grant, and the `completion_mode` hint that
//! asks for a deferred answer.

use super::*;

/// Whether `completion_mode` lists `deferred` (space-separated; unknown
/// values are ignored, as the IETF draft says).
pub(crate) fn completion_mode_deferred(params: &[(String, String)]) -> bool {
    param(params, "completion_mode").is_some_and(|m| m.split(' ').any(|v| v == "deferred"))
}

pub(super) fn code_grant(
    st: &mut OpState,
    client_id: &str,
    params: &[(String, String)],
    proof: Option<&checks::Proof>,
    effects: &mut Vec<Effect>,
) -> http::Response<Full<Bytes>> {
    let opted_in = completion_mode_deferred(params);
    if st.config.profiles.ietf()
        && !opted_in
        && let Some(code) = param(params, "code")
        && st.codes.get(code).is_some_and(|c| c.completion_mode_hint)
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(
                "the authorization request hinted completion_mode=deferred; the token request must opt in too",
            ),
        );
    }
    let Some(code) = param(params, "code") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("missing code"),
        );
    };
    let rec = match redeem_code(st, client_id, code, CodeKind::Plain) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if param(params, "redirect_uri") != Some(rec.redirect_uri.as_str()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("redirect_uri mismatch"),
        );
    }
    if let Some(challenge) = &rec.code_challenge {
        let ok = param(params, "code_verifier").is_some_and(|v| {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v.as_bytes());
            b64(d.as_ref()) == *challenge
        });
        if !ok {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                Some("PKCE verification failed"),
            );
        }
    }
    let grant = Grant {
        claims: rec.claims,
        ..st.grant(rec.nonce, rec.scope, rec.auth_time)
    };
    if opted_in
        && st.config.profiles.ietf()
        && st.config.authorize_outcome != AuthorizeOutcome::Code
    {
        return defer(st, client_id, grant, params, proof, effects);
    }
    token_response(st, client_id, &grant, proof)
}
