//! The UserInfo endpoint (bearer and DPoP-bound access tokens).

use super::*;

/// The UserInfo endpoint (OIDC Core §5.3): a bearer token, or a DPoP-bound
/// one with a proof from its key carrying its `ath` (RFC 9449 §7).
pub(super) fn userinfo(st: &mut OpState, req: &Incoming) -> http::Response<Full<Bytes>> {
    let unauthorized = |scheme: &str, error: &str| {
        let mut r = respond(StatusCode::UNAUTHORIZED, "text/plain", "");
        if let Ok(v) = HeaderValue::from_str(&format!("{scheme} error=\"{error}\"")) {
            r.headers_mut().insert("www-authenticate", v);
        }
        r
    };
    let header = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some((scheme, token)) = header.split_once(' ') else {
        return unauthorized("Bearer", "invalid_request");
    };
    let Some((grant, jkt)) = st.access_tokens.get(token).cloned() else {
        return unauthorized("Bearer", "invalid_token");
    };
    // A certificate-bound token (RFC 8705 §3) only with its certificate.
    if let Some(bound) = st.cert_bound.get(token)
        && super::token::client_cert(st, req).as_deref() != Some(bound.as_str())
    {
        return unauthorized("Bearer", "invalid_token");
    }
    match (jkt, scheme.to_ascii_lowercase().as_str()) {
        (None, "bearer") => {}
        (Some(jkt), "dpop") => {
            let Some(proof_header) = req.headers.get("dpop").and_then(|v| v.to_str().ok()) else {
                return unauthorized("DPoP", "invalid_dpop_proof");
            };
            let htu = format!("{}/userinfo", st.issuer);
            let Ok(proof) =
                checks::check_dpop_proof(proof_header, req.method.as_str(), &htu, st.now(), 60)
            else {
                return unauthorized("DPoP", "invalid_dpop_proof");
            };
            let ath = b64(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
            );
            if proof.jkt != jkt || proof.ath.as_deref() != Some(ath.as_str()) {
                return unauthorized("DPoP", "invalid_dpop_proof");
            }
            if st.config.require_dpop_nonce
                && proof.nonce.as_deref() != Some(st.dpop_nonce.as_str())
            {
                let mut r = unauthorized("DPoP", "use_dpop_nonce");
                if let Ok(v) = HeaderValue::from_str(&st.dpop_nonce) {
                    r.headers_mut().insert("dpop-nonce", v);
                }
                return r;
            }
            if !st.used_jtis.insert(proof.jti) {
                return unauthorized("DPoP", "invalid_dpop_proof");
            }
        }
        (Some(_), _) => return unauthorized("DPoP", "invalid_token"),
        (None, _) => return unauthorized("Bearer", "invalid_token"),
    }
    let now = st.now();
    let fault = st.config.assurance_fault;
    let mut body = json!({"sub": grant.subject, "given_name": "Maxi"});
    if st.config.identity_assurance {
        crate::assurance::insert(&mut body, grant.claims.as_deref(), "userinfo", now, fault);
    }
    match fault {
        Some(crate::AssuranceFault::UserInfoOtherSubject) => {
            body["sub"] = json!(format!("{}-impostor", grant.subject));
        }
        Some(crate::AssuranceFault::UserInfoAsJwt) => {
            let h = json!({"alg": st.key.algorithm().as_str()});
            return match sign_compact(&st.key, &h, &body) {
                Ok(jwt) => respond(StatusCode::OK, "application/jwt", jwt),
                Err(_) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
            };
        }
        _ => {}
    }
    json_response(StatusCode::OK, &body)
}
