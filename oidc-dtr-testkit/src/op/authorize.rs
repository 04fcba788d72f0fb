//! The authorization endpoint: request checks, the redirect back to the
//! client, and the plain HTML page shown for a bad request.

use super::*;

pub(super) fn bad_request_page(msg: &str) -> http::Response<Full<Bytes>> {
    respond(
        StatusCode::BAD_REQUEST,
        "text/html",
        format!(
            "<html><body><h1>Bad request</h1><p>{}</p></body></html>",
            html_escape(msg)
        ),
    )
}

pub(super) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Sends the browser back to the RP with `params` in the requested mode.
pub(crate) fn redirect_back(
    redirect_uri: &str,
    form_post: bool,
    params: &[(&str, String)],
) -> http::Response<Full<Bytes>> {
    if form_post {
        let inputs: String = params
            .iter()
            .map(|(k, v)| {
                format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\"/>",
                    html_escape(k),
                    html_escape(v)
                )
            })
            .collect();
        let page = format!(
            "<html><head><title>Submit This Form</title></head><body onload=\"javascript:document.forms[0].submit()\"><form method=\"post\" action=\"{}\">{inputs}</form></body></html>",
            html_escape(redirect_uri)
        );
        let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", page);
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    let mut url = match Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => return bad_request_page("invalid redirect_uri"),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    let mut r = respond(StatusCode::FOUND, "text/html", "");
    if let Ok(v) = HeaderValue::from_str(url.as_str()) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

pub(crate) fn authorize(
    st: &mut OpState,
    params: &[(String, String)],
) -> http::Response<Full<Bytes>> {
    let now = st.now();
    let Some(client_id) = param(params, "client_id") else {
        return bad_request_page("missing client_id");
    };
    let Some(client) = st.clients.get(client_id).cloned() else {
        return bad_request_page("unknown client_id");
    };
    let Some(redirect_uri) = param(params, "redirect_uri").map(str::to_owned) else {
        return bad_request_page("missing redirect_uri");
    };
    if !client.redirect_uris.is_empty() && !client.redirect_uris.contains(&redirect_uri) {
        return bad_request_page("redirect_uri is not registered");
    }
    let form_post = match param(params, "response_mode") {
        None | Some("query") => false,
        Some("form_post") => true,
        Some(_) => return bad_request_page("unsupported response_mode"),
    };
    let state = param(params, "state").map(str::to_owned);
    let iss = st.issuer.clone();
    let include_iss = st.config.include_iss;
    let error = |code: &str, desc: &str| {
        let mut p = vec![
            ("error", code.to_owned()),
            ("error_description", desc.to_owned()),
        ];
        if let Some(s) = &state {
            p.push(("state", s.clone()));
        }
        if include_iss {
            p.push(("iss", iss.clone()));
        }
        redirect_back(&redirect_uri, form_post, &p)
    };
    let mut rt: Vec<&str> = param(params, "response_type")
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    rt.sort_unstable();
    let ietf_code = rt.as_slice() == ["code"] && st.config.profiles.ietf();
    let allows_code = match rt.as_slice() {
        ["deferred_code"] if st.config.profiles.oidc() => false,
        ["code", "deferred_code"] if st.config.profiles.oidc() => true,
        ["code"] if ietf_code => true,
        _ => {
            return error(
                "unsupported_response_type",
                "response_type must be deferred_code or deferred_code code",
            );
        }
    };
    let scope = param(params, "scope").unwrap_or("").to_owned();
    if !scope.split(' ').any(|s| s == "openid") {
        return error("invalid_scope", "scope must contain openid");
    }
    let code_challenge = param(params, "code_challenge").map(str::to_owned);
    if st.config.require_pkce
        && (code_challenge.is_none() || param(params, "code_challenge_method") != Some("S256"))
    {
        return error("invalid_request", "PKCE with S256 is required");
    }
    let outcome = st.config.authorize_outcome.clone();
    let kind = match outcome {
        AuthorizeOutcome::Error {
            error: code,
            description,
        } => return error(&code, &description),
        _ if ietf_code => CodeKind::Plain,
        AuthorizeOutcome::Code if allows_code => CodeKind::Plain,
        AuthorizeOutcome::Code | AuthorizeOutcome::Defer => CodeKind::Deferred,
    };
    let code = st.random(20);
    st.codes.insert(
        code.clone(),
        CodeRecord {
            kind,
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.clone(),
            nonce: param(params, "nonce").map(str::to_owned),
            code_challenge,
            scope,
            claims: param(params, "claims").map(str::to_owned),
            auth_time: now,
            created_at: now,
            used: false,
            completion_mode_hint: completion_mode_deferred(params),
            dpop_jkt: param(params, "dpop_jkt").map(str::to_owned),
        },
    );
    let name = if kind == CodeKind::Deferred {
        "deferred_code"
    } else {
        "code"
    };
    let mut p = vec![(name, code)];
    if let Some(s) = &state {
        p.push(("state", s.clone()));
    }
    if include_iss {
        p.push(("iss", iss));
    }
    redirect_back(&redirect_uri, form_post, &p)
}
