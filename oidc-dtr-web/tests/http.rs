//! The app over HTTP (no browser): a small cookie-keeping client drives the
//! demo (the app and the mock OP) the way a browser would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use oidc_dtr_web::demo::{self, Demo, DemoOptions};

/// How long anything may take (a bound on the test, not an assertion).
const PATIENCE: Duration = Duration::from_secs(20);

/// A user agent that keeps cookies (by name; the tests talk to one host)
/// and does not follow redirects.
struct Agent {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

struct Reply {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Agent {
    fn new() -> Agent {
        Agent {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Reply {
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.header("cookie", self.cookie_header())
        };
        let res = req.send().await.expect("the request is answered");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let set_cookies: Vec<String> = headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        for c in &set_cookies {
            let pair = c.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                let removed = c.to_ascii_lowercase().contains("max-age=0");
                if removed {
                    self.cookies.remove(k.trim());
                } else {
                    self.cookies
                        .insert(k.trim().to_owned(), v.trim().to_owned());
                }
            }
        }
        let location = headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = res.text().await.unwrap_or_default();
        Reply {
            status,
            location,
            set_cookies,
            headers,
            body,
        }
    }

    async fn get(&mut self, url: &str) -> Reply {
        let req = self.http.get(url);
        self.send(req).await
    }

    async fn post(&mut self, url: &str, form: &str) -> Reply {
        let req = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        self.send(req).await
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The first form's CSRF token on a page.
fn csrf_of(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {body}"));
    let rest = &body[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn start_demo(configure: impl FnOnce(&mut DemoOptions)) -> Demo {
    let mut o = DemoOptions::default();
    o.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    o.op_interval = Duration::from_secs(1);
    o.notified_cadence = Duration::from_secs(1);
    configure(&mut o);
    demo::start(o).await.expect("the demo starts")
}

/// Start page → `POST /verify` → the OP's authorization URL.
async fn begin(agent: &mut Agent, demo: &Demo) -> String {
    let start = agent.get(&demo.url()).await;
    assert_eq!(start.status, 200);
    let csrf = csrf_of(&start.body);
    let r = agent
        .post(
            &format!("{}verify", demo.url()),
            &format!("csrf={}&response_mode=query", enc(&csrf)),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let to = r.location.expect("a redirect to the OP");
    assert!(to.starts_with(demo.op.issuer()), "{to}");
    to
}

/// The user submits documents on the OP's page: the callback URL the OP
/// sends the browser back to.
async fn submit_at_op(authorize_url: &str, name: &str) -> String {
    let (_, query) = authorize_url.split_once('?').unwrap();
    let base = &authorize_url[..authorize_url.find('?').unwrap()];
    let mut op_agent = Agent::new();
    let r = op_agent
        .post(
            base,
            &format!("{query}&dtr_mock_action=submit&dtr_mock_name={}", enc(name)),
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    r.location.expect("a redirect to the callback")
}

/// The whole way to the pending page.
async fn verify_as(agent: &mut Agent, demo: &Demo, name: &str) {
    let to_op = begin(agent, demo).await;
    let callback = submit_at_op(&to_op, name).await;
    let r = agent.get(&callback).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/verification"));
}

/// Reloads `/verification` until its status region is in `state`.
async fn wait_for_state(agent: &mut Agent, demo: &Demo, state: &str) -> String {
    let url = format!("{}verification", demo.url());
    let want = format!("data-state=\"{state}\"");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = agent.get(&url).await;
        if r.body.contains(&want) {
            return r.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {state}: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_forged_callback_does_not_use_up_the_pending_verification() {
    let demo = start_demo(|_| {}).await;
    let mut agent = Agent::new();
    let to_op = begin(&mut agent, &demo).await;
    let callback = submit_at_op(&to_op, "Ada Lovelace").await;

    // A cross-site page sends the browser (with its Lax cookie: a top-level
    // GET) to the callback with another state, then without one.
    for forged in [
        format!(
            "{}callback?deferred_code=forged&state=forged&iss={}",
            demo.url(),
            enc(demo.op.issuer())
        ),
        format!("{}callback?deferred_code=forged", demo.url()),
        format!("{}callback", demo.url()),
    ] {
        let r = agent.get(&forged).await;
        assert_eq!(r.status, 400, "{forged}: {}", r.body);
        assert!(r.body.contains("not for your verification"), "{}", r.body);
    }
    // Also as a form post (the pending authorization asked for the query
    // response mode).
    let r = agent
        .post(
            &format!("{}callback", demo.url()),
            "deferred_code=forged&state=forged",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // The real answer still completes the verification.
    let r = agent.get(&callback).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/verification"));
    wait_for_state(&mut agent, &demo, "pending").await;

    // Used up now: a replay of the real answer is refused.
    let r = agent.get(&callback).await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("No verification was started here"),
        "{}",
        r.body
    );
    demo.shutdown().await;
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let demo = start_demo(|_| {}).await;
    let mut agent = Agent::new();
    for path in ["", "verification", "static/style.css", "callback"] {
        let r = agent.get(&format!("{}{path}", demo.url())).await;
        let h = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(h("cross-origin-opener-policy"), "same-origin", "/{path}");
        let pp = h("permissions-policy");
        for feature in ["camera=()", "microphone=()", "geolocation=()", "payment=()"] {
            assert!(pp.contains(feature), "/{path}: {pp}");
        }
        assert!(h("content-security-policy").contains("frame-ancestors 'none'"));
    }
    demo.shutdown().await;
}

#[tokio::test]
async fn visiting_the_start_page_creates_no_session() {
    let demo = start_demo(|_| {}).await;
    for _ in 0..50 {
        let mut agent = Agent::new();
        let r = agent.get(&demo.url()).await;
        assert_eq!(r.status, 200);
        assert!(
            !r.set_cookies.iter().any(|c| c.starts_with("rp_session=")),
            "{:?}",
            r.set_cookies
        );
    }
    // The start page's form still works: its token travels in a signed
    // cookie, and the session starts with the verification.
    let mut agent = Agent::new();
    begin(&mut agent, &demo).await;
    assert!(agent.cookies.contains_key("rp_session"));

    // A token the cookie does not carry is refused.
    let mut other = Agent::new();
    let page = other.get(&demo.url()).await;
    assert!(!csrf_of(&page.body).is_empty());
    let r = other
        .post(
            &format!("{}verify", demo.url()),
            "csrf=0000&response_mode=query",
        )
        .await;
    assert_eq!(r.status, 403);
    // And so is a cookie that was not signed by the app.
    let mut forger = Agent::new();
    forger
        .cookies
        .insert("rp_csrf".into(), "attacker-chosen".into());
    let r = forger
        .post(
            &format!("{}verify", demo.url()),
            "csrf=attacker-chosen&response_mode=query",
        )
        .await;
    assert_eq!(r.status, 403);
    demo.shutdown().await;
}

#[tokio::test]
async fn a_session_has_one_pending_verification_at_a_time() {
    let demo = start_demo(|o| o.notified_cadence = Duration::from_secs(300)).await;
    let mut agent = Agent::new();
    verify_as(&mut agent, &demo, "Ada Lovelace").await;
    assert_eq!(demo.op.authentications().len(), 1);

    // Starting again while it is pending leads to the pending one.
    let start = agent.get(&demo.url()).await;
    assert!(start.body.contains("See the state of your verification"));
    let r = agent
        .post(
            &format!("{}verify", demo.url()),
            &format!("csrf={}&response_mode=query", enc(&csrf_of(&start.body))),
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location.as_deref(), Some("/verification"));
    assert_eq!(
        demo.op.authentications().len(),
        1,
        "no second one at the OP"
    );

    // Once it has ended, the user can verify again, or sign out.
    let id = demo.op.authentications()[0].deferred_auth_id.clone();
    assert!(demo.op.approve(id.as_str()));
    demo.op.send_ping(&id).await;
    let page = wait_for_state(&mut agent, &demo, "verified").await;
    assert!(page.contains("Verify again") && page.contains("Sign out"));
    assert!(
        page.contains(" UTC</dd>") && !page.contains("Unix time"),
        "the authentication time is a date: {page}"
    );
    let r = agent
        .post(
            &format!("{}signout", demo.url()),
            &format!("csrf={}", enc(&csrf_of(&page))),
        )
        .await;
    assert_eq!(r.status, 303);
    let r = agent.get(&format!("{}verification", demo.url())).await;
    assert_eq!(r.status, 303, "signed out: back to the start");
    assert_eq!(r.location.as_deref(), Some("/"));
    demo.shutdown().await;
}

#[tokio::test]
async fn a_short_expiry_shows_the_expired_page() {
    let demo = start_demo(|o| o.expires_in = Duration::from_secs(1)).await;
    let mut agent = Agent::new();
    verify_as(&mut agent, &demo, "Ada Lovelace").await;
    let page = wait_for_state(&mut agent, &demo, "expired").await;
    assert!(page.contains("Verification expired"), "{page}");
    assert!(page.contains("Try again"));
    demo.shutdown().await;
}

#[tokio::test]
async fn with_a_state_dir_a_restart_keeps_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_owned();
    let demo = start_demo(|o| o.state_dir = Some(state.clone())).await;
    let mut agent = Agent::new();
    verify_as(&mut agent, &demo, "Ada Lovelace").await;
    let id = demo.op.authentications()[0].deferred_auth_id.clone();
    assert!(demo.op.approve(id.as_str()));
    demo.op.send_ping(&id).await;
    let before = wait_for_state(&mut agent, &demo, "verified").await;
    assert!(before.contains("Verified as"));
    demo.shutdown().await;

    // A new process (a new app, a new mock OP) with the same directory: the
    // same cookie still finds the session and its result.
    let demo = start_demo(|o| o.state_dir = Some(state.clone())).await;
    let r = agent.get(&format!("{}verification", demo.url())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("data-state=\"verified\""), "{}", r.body);
    assert!(r.body.contains("Verified as"), "{}", r.body);
    demo.shutdown().await;

    // Without a state directory, a restart forgets the session.
    let demo = start_demo(|_| {}).await;
    let r = agent.get(&format!("{}verification", demo.url())).await;
    assert_eq!(r.status, 303);
    demo.shutdown().await;
}

#[tokio::test]
async fn a_retried_check_shows_a_retrying_line() {
    let demo = start_demo(|_| {}).await;
    let mut agent = Agent::new();
    verify_as(&mut agent, &demo, "Ada Lovelace").await;
    demo.op
        .inject_faults((0..3).map(|_| oidc_dtr_testkit::Fault::service_unavailable(2)));
    let url = format!("{}verification", demo.url());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = agent.get(&url).await;
        if r.body.contains("class=\"retrying\"") {
            assert!(r.body.contains("Retrying…"), "{}", r.body);
            assert!(r.body.contains("server error (HTTP 503)"), "{}", r.body);
            assert!(r.body.contains("data-state=\"pending\""), "{}", r.body);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retrying line: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    demo.shutdown().await;
}
