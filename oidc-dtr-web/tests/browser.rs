//! The demo in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, started here on a free port).
//!
//! User A verifies (query response mode): start → the OP's page → submit →
//! back on the pending page → an early ping brings a progress text → a
//! reviewer approves (in a browser of their own) → the page shows
//! "verified" without a reload. The SDK is configured to poll only every 300 s without pings, and
//! the OP's request log shows exactly one poll per ping, the successful one
//! after the reviewer's decision: only the ping can have caused it.
//!
//! User B (another browser profile, so other cookies; `form_post` mode) is
//! denied, and never sees A's result (nor A B's).
//!
//! Both browsers are 390 px wide (a phone): every page of the app must fit
//! without horizontal scrolling.
//!
//! Without `chromium` and `chromedriver` on PATH (or `CHROMIUM` /
//! `CHROMEDRIVER` set) the test prints why and passes, except with
//! `CI=true`, where it fails. On failure, screenshots and page sources go to
//! `$DTR_ARTIFACTS` (default `target/browser-artifacts`).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use oidc_dtr_testkit::{AuthState, Endpoint, LoggedRequest, MockOp};
use oidc_dtr_web::demo::{self, Demo, DemoOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long the browser may take for anything (a bound on the test, not a
/// performance assertion).
const PATIENCE: Duration = Duration::from_secs(20);
/// The SDK's poll cadence without pings: far beyond the test's duration.
const CADENCE: Duration = Duration::from_secs(300);
const GRANT_DEFERRED: &str = "urn:openid:params:grant-type:deferred";
const PROGRESS: &str = "Your documents are in the review queue";
const DENIAL: &str =
    "Document expired (reference DOC-2026-7F3A9C2E1B5D4F6A8C0E2B4D6F8A0C2E4A6B8D0F)";
/// The browsers' width: a phone's.
const WIDTH: u32 = 390;

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn tool(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    names.iter().find_map(|n| on_path(n))
}

/// chromedriver, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn start_driver(chromedriver: &Path) -> Result<Driver, BoxError> {
    let port = free_port()?;
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(driver);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("chromedriver did not start listening".into())
}

/// A browser with its own profile; `phone`: a 390 px wide viewport.
async fn browser(
    driver: &Driver,
    chromium: &Path,
    profile: &Path,
    phone: bool,
) -> Result<Client, BoxError> {
    let mut caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--window-size=1200,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    if phone {
        // A phone's viewport (a desktop window cannot be made this narrow).
        caps["goog:chromeOptions"]["mobileEmulation"] = json!({
            "deviceMetrics": { "width": WIDTH, "height": 844, "pixelRatio": 1.0 },
        });
    }
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    Ok(ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await?)
}

fn artifacts_dir() -> PathBuf {
    std::env::var_os("DTR_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts"))
}

/// Saves a screenshot and the source of every window of every browser.
async fn save_artifacts(browsers: &[(&str, &Client)]) {
    let dir = artifacts_dir();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return;
    }
    for (name, c) in browsers {
        let Ok(windows) = c.windows().await else {
            continue;
        };
        for (i, w) in windows.into_iter().enumerate() {
            if c.switch_to_window(w).await.is_err() {
                continue;
            }
            if let Ok(png) = c.screenshot().await {
                let p = dir.join(format!("{name}-window{i}.png"));
                let _ = std::fs::write(&p, png);
                eprintln!("screenshot: {}", p.display());
            }
            if let Ok(src) = c.source().await {
                let _ = std::fs::write(dir.join(format!("{name}-window{i}.html")), src);
            }
        }
    }
}

// ------------------------------------------------------------ page helpers

async fn wait_for(c: &Client, css: &str) -> Result<fantoccini::elements::Element, BoxError> {
    Ok(c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .map_err(|e| format!("waiting for `{css}`: {e}"))?)
}

/// Checks that the page fits the viewport: no horizontal scrolling.
async fn fits(c: &Client, what: &str) -> Result<(), BoxError> {
    let v = c
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await?;
    let (scroll, inner) = match v.as_array().map(Vec::as_slice) {
        Some([a, b]) => (a.as_u64().unwrap_or(u64::MAX), b.as_u64().unwrap_or(0)),
        _ => return Err(format!("unexpected widths: {v}").into()),
    };
    // A phone zooms out to show a page wider than its screen: the layout
    // viewport then grows past WIDTH. That is an overflow too.
    if inner != u64::from(WIDTH) {
        return Err(format!(
            "{what}: the viewport is {inner} px wide, not {WIDTH} (a page too wide for \
             the phone, or no phone emulation)"
        )
        .into());
    }
    if scroll > inner {
        return Err(format!("{what}: {scroll} px wide in a {inner} px viewport").into());
    }
    Ok(())
}

async fn text_of(c: &Client, css: &str) -> Result<String, BoxError> {
    Ok(c.find(Locator::Css(css)).await?.text().await?)
}

/// Clicks through the start page and the OP's page as a user named `name`;
/// ends on the pending page.
async fn verify_as(c: &Client, demo: &Demo, name: &str, form_post: bool) -> Result<(), BoxError> {
    c.goto(&demo.url()).await?;
    fits(c, "the start page").await?;
    if form_post {
        c.find(Locator::Css("details summary"))
            .await?
            .click()
            .await?;
        c.find(Locator::Id("mode-form-post")).await?.click().await?;
    }
    c.find(Locator::Id("verify")).await?.click().await?;
    // The OP's page.
    let field = wait_for(c, "input#name").await?;
    fits(c, "the OP's documents page").await?;
    let op_origin = demo.op.issuer().to_owned();
    let here = c.current_url().await?;
    if !here.as_str().starts_with(&op_origin) {
        return Err(format!("expected the OP's page, got {here}").into());
    }
    field.send_keys(name).await?;
    c.find(Locator::Id("submit-documents"))
        .await?
        .click()
        .await?;
    // Back at the RP.
    wait_for(c, "#status[data-state=\"pending\"]").await?;
    let here = c.current_url().await?;
    if here.path() != "/verification" || here.query().is_some() {
        return Err(format!("expected the pending page, got {here}").into());
    }
    fits(c, "the pending page").await?;
    Ok(())
}

/// As the reviewer (in the reviewer's own browser `c`): decides on the
/// verification of the user who typed `name`.
async fn review(c: &Client, demo: &Demo, name: &str, deny: Option<&str>) -> Result<(), BoxError> {
    c.goto(&demo.review_url()).await?;
    let row = format!("tr[data-name=\"{name}\"]");
    wait_for(c, &row).await?;
    fits(c, "the OP's reviewer page").await?;
    match deny {
        None => {
            c.find(Locator::Css(&format!("{row} button.approve")))
                .await?
                .click()
                .await?
        }
        Some(reason) => {
            let input = c.find(Locator::Css(&format!("{row} input.reason"))).await?;
            input.clear().await?;
            input.send_keys(reason).await?;
            c.find(Locator::Css(&format!("{row} button.deny")))
                .await?
                .click()
                .await?;
        }
    }
    wait_for(c, "#review-result").await?;
    fits(c, "the OP's reviewer page after a decision").await?;
    Ok(())
}

/// The one authentication at the OP whose reviewer row shows `name`... found
/// by elimination: the pending one not in `known`.
fn new_auth(op: &MockOp, known: &[String]) -> Result<String, BoxError> {
    let fresh: Vec<_> = op
        .authentications()
        .into_iter()
        .filter(|a| !known.contains(&a.deferred_auth_id))
        .collect();
    match fresh.as_slice() {
        [one] if one.state == AuthState::Pending => Ok(one.deferred_auth_id.clone()),
        other => Err(format!(
            "expected one new pending authentication, got {}",
            other.len()
        )
        .into()),
    }
}

/// The poll requests for `id`, in order, with their positions in the log.
fn polls_of(log: &[LoggedRequest], id: &str) -> Vec<(usize, LoggedRequest)> {
    log.iter()
        .enumerate()
        .filter(|(_, r)| {
            r.endpoint == Endpoint::Token
                && r.param("grant_type") == Some(GRANT_DEFERRED)
                && r.param("deferred_auth_id") == Some(id)
        })
        .map(|(i, r)| (i, r.clone()))
        .collect()
}

/// Where the reviewer's decision on `id` is in the log.
fn decision_of(log: &[LoggedRequest], id: &str) -> Option<usize> {
    log.iter()
        .position(|r| r.path == "/review/decide" && r.param("id") == Some(id))
}

async fn still_same_document(c: &Client) -> Result<bool, BoxError> {
    Ok(c.execute("return window.__dtrMarker === 42;", vec![])
        .await?
        == Value::Bool(true))
}

// --------------------------------------------------------------- scenario

async fn scenario(demo: &Demo, a: &Client, b: &Client, r: &Client) -> Result<(), BoxError> {
    // ---- user A: verify, live progress, approval by ping.
    verify_as(a, demo, "Ada Lovelace", false).await?;
    let id_a = new_auth(&demo.op, &[])?;
    a.execute("window.__dtrMarker = 42; return true;", vec![])
        .await?;

    // An (early) ping makes the SDK poll once: the OP's progress text shows
    // up live.
    let status = demo.op.send_ping(&id_a).await;
    if !matches!(status, Some(200..=299)) {
        return Err(format!("the RP answered the early ping with {status:?}").into());
    }
    a.wait()
        .at_most(PATIENCE)
        .for_element(Locator::XPath(&format!(
            "//section[@id='status']//p[@class='progress'][normalize-space()='{PROGRESS}']"
        )))
        .await
        .map_err(|e| format!("waiting for the progress text: {e}"))?;

    review(r, demo, "Ada Lovelace", None).await?;
    wait_for(a, "#status[data-state=\"verified\"]").await?;
    let shown = text_of(a, "#status").await?;
    if !shown.contains("Verified as Ada Lovelace") {
        return Err(format!("A's page says: {shown}").into());
    }
    fits(a, "the verified page").await?;
    if !still_same_document(a).await? {
        return Err("A's page was reloaded; it should have updated in place".into());
    }
    let updates: u32 = a
        .find(Locator::Id("status"))
        .await?
        .attr("data-updates")
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if updates < 2 {
        return Err(format!("expected live updates, saw {updates}").into());
    }

    // The ping path, from the OP's log: one poll per ping and no other, the
    // successful one after the reviewer's decision. Without pings the SDK
    // would not have polled before CADENCE had passed.
    let log = demo.op.requests();
    let polls = polls_of(&log, &id_a);
    let decided = decision_of(&log, &id_a).ok_or("no decision in the OP's log")?;
    match polls.as_slice() {
        [(_, early), (i, last)] => {
            if early.status != 400 || last.status != 200 || *i < decided {
                return Err(format!(
                    "unexpected polls: {:?}",
                    polls.iter().map(|(i, r)| (i, r.status)).collect::<Vec<_>>()
                )
                .into());
            }
            let gap = last.at.as_millis().saturating_sub(early.at.as_millis());
            if u128::from(gap) >= CADENCE.as_millis() {
                return Err("the final poll could have been a regular one".into());
            }
        }
        other => {
            return Err(format!(
                "expected exactly 2 polls (one per ping), saw {}",
                other.len()
            )
            .into());
        }
    }
    // A ping is recorded once the app's answer has been read, which can be
    // after the poll it woke brought the tokens: wait (bounded) for both.
    let mut pings: Vec<_> = Vec::new();
    for _ in 0..100 {
        pings = demo
            .op
            .pings()
            .into_iter()
            .filter(|p| p.deferred_auth_id == id_a && !p.forged)
            .collect();
        if pings.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if pings.len() != 2 || pings.iter().any(|p| !matches!(p.status, Some(200..=299))) {
        return Err(format!("expected two accepted pings, got {pings:?}").into());
    }

    // ---- user B: another profile, no verification yet, then a denial.
    b.goto(&format!("{}verification", demo.url())).await?;
    let here = b.current_url().await?;
    if here.path() != "/" {
        return Err(
            format!("B without a verification should land on the start page, got {here}").into(),
        );
    }
    fits(b, "the start page").await?;
    // An error page.
    b.goto(&format!("{}callback", demo.url())).await?;
    wait_for(b, "main h1").await?;
    fits(b, "an error page").await?;
    // B starts once and cancels (the page's button; the OP is told).
    verify_as(b, demo, "Grace B. Hopper", false).await?;
    let id_cancelled = new_auth(&demo.op, std::slice::from_ref(&id_a))?;
    b.find(Locator::Id("cancel")).await?.click().await?;
    wait_for(b, "#status[data-state=\"cancelled\"]").await?;
    fits(b, "the cancelled page").await?;
    let at_op = demo.op.authentication(&id_cancelled).map(|s| s.state);
    if at_op != Some(AuthState::Cancelled) {
        return Err(format!("the OP was not told of the cancellation: {at_op:?}").into());
    }
    // Then again, with the form_post response mode, and is denied.
    let known = vec![id_a.clone(), id_cancelled];
    verify_as(b, demo, "Grace Hopper", true).await?;
    let id_b = new_auth(&demo.op, &known)?;
    let before = text_of(b, "#status").await?;
    if before.contains("Ada") || before.contains("Verified") {
        return Err(format!("B sees A's result: {before}").into());
    }
    // A long unbroken value (a document reference) must wrap, not widen the
    // page.
    review(r, demo, "Grace Hopper", Some(DENIAL)).await?;
    wait_for(b, "#status[data-state=\"denied\"]").await?;
    let shown = text_of(b, "#status").await?;
    if !shown.contains("Document expired") {
        return Err(format!("B's page says: {shown}").into());
    }
    fits(b, "the denied page").await?;
    let log = demo.op.requests();
    let polls = polls_of(&log, &id_b);
    let decided = decision_of(&log, &id_b).ok_or("no decision on B in the OP's log")?;
    if polls.len() != 1 || polls[0].0 < decided || polls[0].1.status != 400 {
        return Err(format!(
            "B: expected one poll, after the decision, got {}",
            polls.len()
        )
        .into());
    }
    let b_source = b.source().await?;
    if b_source.contains("Ada Lovelace") {
        return Err("B's page shows A's name".into());
    }

    // A reloads: still A's own result, nothing of B's.
    a.refresh().await?;
    wait_for(a, "#status[data-state=\"verified\"]").await?;
    let a_source = a.source().await?;
    if a_source.contains("Grace Hopper") || a_source.contains("Document expired") {
        return Err("A's page shows B's verification".into());
    }
    if !a_source.contains("Ada Lovelace") {
        return Err("A's page lost A's result after a reload".into());
    }
    fits(a, "the verified page, reloaded").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_updates_live_in_a_real_browser() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let (Some(chromium), Some(chromedriver)) = (
        tool("CHROMIUM", &["chromium", "chromium-browser"]),
        tool("CHROMEDRIVER", &["chromedriver"]),
    ) else {
        let why = "browser test skipped: `chromium` and `chromedriver` are not on PATH \
                   (apt-get install chromium chromium-driver, or set CHROMIUM / CHROMEDRIVER)";
        assert!(!ci, "{why}; CI=true requires them");
        eprintln!("{why}");
        return;
    };

    let mut options = DemoOptions::default();
    options.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    options.op_interval = Duration::from_secs(1);
    options.notified_cadence = CADENCE;
    options.progress_script = vec![PROGRESS.into()];
    let demo = demo::start(options).await.expect("the demo starts");

    let driver = start_driver(&chromedriver)
        .await
        .expect("chromedriver starts");
    let profile_a = tempfile::tempdir().expect("a temporary directory");
    let profile_b = tempfile::tempdir().expect("a temporary directory");
    let profile_r = tempfile::tempdir().expect("a temporary directory");
    let a = browser(&driver, &chromium, profile_a.path(), true)
        .await
        .expect("browser A starts");
    let b = browser(&driver, &chromium, profile_b.path(), true)
        .await
        .expect("browser B starts");
    // The reviewer, at the OP, on a phone too.
    let r = browser(&driver, &chromium, profile_r.path(), true)
        .await
        .expect("the reviewer's browser starts");

    let result = scenario(&demo, &a, &b, &r).await;
    if let Err(e) = &result {
        eprintln!("browser scenario failed: {e}; saving artifacts");
        save_artifacts(&[("user-a", &a), ("user-b", &b), ("reviewer", &r)]).await;
    }
    let _ = a.close().await;
    let _ = b.close().await;
    let _ = r.close().await;
    drop(driver);
    demo.shutdown().await;
    if let Err(e) = result {
        panic!("browser scenario failed: {e}");
    }
}
