//! The mock OP's optional HTML pages ([`OpConfig::interactive_pages`]), for
//! demos and browser tests:
//!
//! - `GET /authorize` shows the end user a form ("submit your documents")
//!   instead of redirecting back at once; submitting it (`POST /authorize`)
//!   runs the usual authorization endpoint and redirects (or auto-posts)
//!   back to the RP. The full name typed there becomes the `name` claim of
//!   that user's ID tokens.
//! - `GET /review` lists the authentications for a reviewer, with approve
//!   and deny buttons (`POST /review/decide`) that decide exactly like
//!   [`MockOp::approve`](super::MockOp::approve) and
//!   [`MockOp::deny`](super::MockOp::deny), pinging the RP.
//!
//! Plain HTML forms, no JavaScript.
//!
//! [`OpConfig::interactive_pages`]: super::OpConfig::interactive_pages

use std::collections::HashMap;
use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use super::op::{self, Effect, Grant, OpState};
use super::server::Incoming;
use super::{AuthState, Endpoint};

/// The form field that marks a submitted "documents" form.
const ACTION: &str = "dtr_mock_action";
/// The full name typed on the form.
const NAME: &str = "dtr_mock_name";
/// The document type chosen on the form.
const DOCUMENT: &str = "dtr_mock_document";

/// Longest full name kept.
const MAX_NAME: usize = 200;

/// What the pages remember.
#[derive(Default)]
pub(crate) struct PagesState {
    /// Full names typed on the form, by the request's `nonce`.
    names: HashMap<String, String>,
    /// Document types chosen, by `nonce`.
    documents: HashMap<String, String>,
}

type Routed = (Endpoint, Vec<(String, String)>, http::Response<Full<Bytes>>);

/// Serves a page when the request is one of them; `None` leaves it to the
/// protocol endpoints.
pub(crate) fn dispatch(
    st: &mut OpState,
    req: &Incoming,
    effects: &mut Vec<Effect>,
) -> Option<Routed> {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/authorize") => {
            let params = op::parse_params(req.query.as_bytes()).ok()?;
            let page = authorize_page(st, &params)?;
            Some((Endpoint::Authorize, params, page))
        }
        (&Method::POST, "/authorize") => {
            let mut params = op::parse_params(&req.body).ok()?;
            if op::param(&params, ACTION) != Some("submit") {
                return None;
            }
            let name = op::param(&params, NAME)
                .map(|n| n.trim().chars().take(MAX_NAME).collect::<String>())
                .unwrap_or_default();
            let document = op::param(&params, DOCUMENT).unwrap_or("").to_owned();
            if let Some(nonce) = op::param(&params, "nonce").map(str::to_owned) {
                if !name.is_empty() {
                    st.pages.names.insert(nonce.clone(), name);
                }
                if !document.is_empty() {
                    st.pages.documents.insert(nonce, document);
                }
            }
            params.retain(|(k, _)| !k.starts_with("dtr_mock_"));
            let r = op::authorize(st, &params);
            Some((Endpoint::Authorize, params, r))
        }
        (&Method::GET, "/review") => {
            let params = op::parse_params(req.query.as_bytes()).unwrap_or_default();
            Some((Endpoint::Other, params.clone(), review_page(st, &params)))
        }
        (&Method::POST, "/review/decide") => {
            let params = op::parse_params(&req.body).unwrap_or_default();
            let r = decide(st, &params, effects);
            Some((Endpoint::Other, params, r))
        }
        _ => None,
    }
}

/// Adds what the pages know about the user (the typed name) to an ID
/// token's claims.
pub(crate) fn add_claims(st: &OpState, grant: &Grant, claims: &mut Value) {
    let Some(nonce) = &grant.nonce else { return };
    if let (Some(name), Some(obj)) = (st.pages.names.get(nonce), claims.as_object_mut()) {
        obj.insert("name".into(), Value::String(name.clone()));
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn html(status: StatusCode, title: &str, body: &str) -> http::Response<Full<Bytes>> {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Mock OpenID Provider</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}\
         table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ccc;padding:.4rem;text-align:left}}\
         label{{display:block;margin:.6rem 0 .2rem}}button{{margin:.3rem .3rem .3rem 0}}\
         *,*::before,*::after{{box-sizing:border-box}}body{{overflow-wrap:anywhere}}\
         input,select,button{{max-width:100%}}\
         @media (max-width:40rem){{table,tbody,tr,th,td{{display:block}}\
         thead{{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}}\
         tr{{border-bottom:1px solid #ccc;padding:.4rem 0}}td,th{{border:0;padding:.1rem 0}}}}</style>\
         </head><body><header><p>Mock OpenID Provider (test double)</p></header>\
         <main>{body}</main></body></html>\n",
        escape(title)
    );
    let mut r = http::Response::new(Full::new(Bytes::from(page)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The end user's page; `None` when the request is broken enough that the
/// normal endpoint should answer it (unknown client, unregistered
/// redirect URI).
fn authorize_page(
    st: &OpState,
    params: &[(String, String)],
) -> Option<http::Response<Full<Bytes>>> {
    let client = st.clients.get(op::param(params, "client_id")?)?;
    let redirect_uri = op::param(params, "redirect_uri")?;
    if !client.redirect_uris.is_empty() && !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return None;
    }
    let hidden: String = params
        .iter()
        .filter(|(k, _)| !k.starts_with("dtr_mock_"))
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape(k),
                escape(v)
            )
        })
        .collect();
    let body = format!(
        "<h1>Verify your identity</h1>\
         <p><strong>{client}</strong> asks us to verify who you are. Submit your documents; \
         a reviewer will check them, which can take a while. You will be sent back to \
         {client} right away and told when the review is done.</p>\
         <form method=\"post\" action=\"/authorize\">{hidden}\
         <input type=\"hidden\" name=\"{ACTION}\" value=\"submit\">\
         <label for=\"name\">Full name</label>\
         <input id=\"name\" name=\"{NAME}\" autocomplete=\"name\" required maxlength=\"{MAX_NAME}\">\
         <label for=\"document\">Document</label>\
         <select id=\"document\" name=\"{DOCUMENT}\">\
         <option value=\"passport\">Passport</option>\
         <option value=\"id_card\">National ID card</option>\
         <option value=\"driving_licence\">Driving licence</option></select>\
         <p><button type=\"submit\" id=\"submit-documents\">Submit documents</button></p>\
         </form>",
        client = escape(&client.client_id),
    );
    Some(html(StatusCode::OK, "Verify your identity", &body))
}

fn state_label(s: &AuthState) -> &'static str {
    match s {
        AuthState::Pending => "pending",
        AuthState::Approved => "approved",
        AuthState::Denied { .. } => "denied",
        AuthState::Expired => "expired",
        AuthState::Cancelled => "cancelled",
        AuthState::Redeemed => "approved, tokens collected",
    }
}

/// The reviewer's page: every authentication, newest first.
fn review_page(st: &OpState, params: &[(String, String)]) -> http::Response<Full<Bytes>> {
    let mut auths: Vec<_> = st.auths.iter().collect();
    auths.sort_by(|a, b| b.1.created_at.cmp(&a.1.created_at).then(a.0.cmp(b.0)));
    let mut body = String::from("<h1>Pending verifications</h1>");
    if let (Some(done), Some(who)) = (op::param(params, "done"), op::param(params, "who")) {
        let _ = write!(
            body,
            "<p role=\"status\" id=\"review-result\">{} {}.</p>",
            escape(who),
            if done == "approved" {
                "approved"
            } else {
                "denied"
            }
        );
    }
    if auths.is_empty() {
        body.push_str("<p>Nothing to review.</p>");
        return html(StatusCode::OK, "Review", &body);
    }
    body.push_str(
        "<table><thead><tr><th scope=\"col\">Subject</th><th scope=\"col\">Name</th>\
         <th scope=\"col\">Document</th><th scope=\"col\">Client</th>\
         <th scope=\"col\">State</th><th scope=\"col\">Decision</th></tr></thead><tbody>",
    );
    for (id, r) in auths {
        let nonce = r.grant.nonce.as_deref().unwrap_or("");
        let name = st.pages.names.get(nonce).map(String::as_str).unwrap_or("");
        let document = st
            .pages
            .documents
            .get(nonce)
            .map(String::as_str)
            .unwrap_or("");
        let subject = escape(&r.grant.subject);
        let _ = write!(
            body,
            "<tr data-subject=\"{subject}\" data-name=\"{name_attr}\"><th scope=\"row\">{subject}</th>\
             <td>{name}</td><td>{document}</td><td>{client}</td><td class=\"state\">{state}</td><td>",
            name_attr = escape(name),
            name = escape(name),
            document = escape(document),
            client = escape(&r.client_id),
            state = state_label(&r.state),
        );
        if r.state == AuthState::Pending {
            let id = escape(id);
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/review/decide\">\
                 <input type=\"hidden\" name=\"id\" value=\"{id}\">\
                 <button type=\"submit\" name=\"decision\" value=\"approve\" class=\"approve\" \
                 aria-label=\"Approve {subject}\">Approve</button></form>\
                 <form method=\"post\" action=\"/review/decide\">\
                 <input type=\"hidden\" name=\"id\" value=\"{id}\">\
                 <label for=\"reason-{subject}\">Reason for a denial</label>\
                 <input id=\"reason-{subject}\" name=\"reason\" class=\"reason\" \
                 value=\"The documents could not be verified\">\
                 <button type=\"submit\" name=\"decision\" value=\"deny\" class=\"deny\" \
                 aria-label=\"Deny {subject}\">Deny</button></form>"
            );
        }
        body.push_str("</td></tr>");
    }
    body.push_str("</tbody></table>");
    html(StatusCode::OK, "Review", &body)
}

/// Approves or denies a pending authentication, then redirects to the list
/// (POST-redirect-GET). The ping goes out after the state lock is released.
fn decide(
    st: &mut OpState,
    params: &[(String, String)],
    effects: &mut Vec<Effect>,
) -> http::Response<Full<Bytes>> {
    let id = op::param(params, "id").unwrap_or("").to_owned();
    let decision = op::param(params, "decision").unwrap_or("");
    let reason = op::param(params, "reason")
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.chars().take(MAX_NAME).collect::<String>());
    let Some(rec) = st.auths.get_mut(&id) else {
        return html(
            StatusCode::NOT_FOUND,
            "Review",
            "<h1>No such verification</h1><p><a href=\"/review\">Back to the list</a></p>",
        );
    };
    if rec.state != AuthState::Pending {
        return html(
            StatusCode::CONFLICT,
            "Review",
            "<h1>Already decided</h1><p><a href=\"/review\">Back to the list</a></p>",
        );
    }
    let done = match decision {
        "approve" => {
            rec.state = AuthState::Approved;
            "approved"
        }
        "deny" => {
            rec.state = AuthState::Denied {
                description: reason,
            };
            "denied"
        }
        _ => {
            return html(
                StatusCode::BAD_REQUEST,
                "Review",
                "<h1>Unknown decision</h1><p><a href=\"/review\">Back to the list</a></p>",
            );
        }
    };
    let who = rec.grant.subject.clone();
    effects.push(Effect::Notify(id));
    let location = format!(
        "/review?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("done", done)
            .append_pair("who", &who)
            .finish()
    );
    let mut r = http::Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::super::{AuthState, MockOp, OpConfig};

    #[tokio::test]
    async fn documents_form_then_reviewer_decides() {
        let config = OpConfig {
            interactive_pages: true,
            ..Default::default()
        };
        let op = MockOp::builder().config(config).start().await.unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let q = "client_id=dtr-test-client&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb\
                 &response_type=deferred_code&scope=openid&nonce=n1&state=s1\
                 &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256";
        let page = http
            .get(format!("{}/authorize?{q}", op.issuer()))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "a page, not a redirect");
        let body = page.text().await.unwrap();
        assert!(body.contains("Submit documents") && body.contains("value=\"s1\""));
        let submit = http
            .post(format!("{}/authorize", op.issuer()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "{q}&dtr_mock_action=submit&dtr_mock_name=Ada%20%3Cb%3E"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(submit.status(), 302);
        let loc = submit.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            loc.contains("deferred_code=") && loc.contains("state=s1"),
            "{loc}"
        );
        let review = http
            .get(format!("{}/review", op.issuer()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(review.contains("Nothing to review"), "no exchange yet");
        assert!(!review.contains("<b>"));
        let decide = http
            .post(format!("{}/review/decide", op.issuer()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("id=unknown&decision=approve")
            .send()
            .await
            .unwrap();
        assert_eq!(decide.status(), 404);
        assert!(
            op.authentications()
                .iter()
                .all(|a| a.state != AuthState::Approved)
        );
    }

    #[tokio::test]
    async fn pages_are_off_by_default() {
        let op = MockOp::start().await.unwrap();
        let r = reqwest::Client::new()
            .get(format!("{}/review", op.issuer()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
}
