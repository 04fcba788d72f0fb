//! Crash safety: the RP runs as a real child process on a store file and is
//! killed with SIGKILL at random moments (while polling, while writing, between
//! receiving tokens and handing them over, before acknowledging them), then
//! restarted on the same file. Every authentication must end in exactly one
//! outcome, delivered at least once with the same id and the same tokens,
//! and no token response the OP issued may be lost.
//!
//! The OP keeps token responses re-deliverable for a short window
//! (`OpConfig::redelivery_window`): a kill can land after the OP sent the
//! tokens and before the child stored them, and only an OP that answers a
//! retried poll again can close that gap (the poll is not idempotent: once
//! the OP issued the tokens, the id is spent); everything after
//! the bytes arrive is the SDK's job, and that is what this test checks.
//!
//! The child is this test binary itself, re-run with an environment
//! variable that makes `crash_child_process` act as the RP.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oidc_dtr::{CallbackResponse, DeferredId, DtrClient};
use oidc_dtr::{Outcome, OutcomeId, PollEvent};
use oidc_dtr::{error::StoreError, store::FileStore};
use oidc_dtr_testkit::{AuthState, AutoApprove, MockOp, OpConfig};

const ENV_ROLE: &str = "OIDC_DTR_CRASH_CHILD";
const FLOWS: usize = 24;

/// The RP, when this binary runs as the child (does nothing otherwise).
#[test]
fn crash_child_process() {
    let Ok(role) = std::env::var(ENV_ROLE) else {
        return;
    };
    let issuer = std::env::var("OIDC_DTR_ISSUER").unwrap();
    let store = std::env::var("OIDC_DTR_STORE").unwrap();
    let start = role == "start";
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(child(issuer, store, start));
}

async fn child(issuer: String, store_path: String, start_flows: bool) {
    let store = loop {
        match FileStore::open(&store_path) {
            Ok(s) => break s,
            Err(StoreError::Locked { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("store: {e}"),
        }
    };
    let client = DtrClient::builder()
        .issuer(&issuer)
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri("http://127.0.0.1:9/callback")
        .store(store)
        .build()
        .await
        .unwrap();
    let mut events = client.subscribe();
    // Outcomes a previous run received but never acknowledged.
    for d in client.undelivered().await {
        report(&d.outcome_id, &d.outcome);
        client.ack(&d.id).await.unwrap();
    }
    if start_flows {
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        for _ in 0..FLOWS {
            let (url, pending) = client.authorize().build().unwrap();
            let resp = browser.get(url).send().await.unwrap();
            let location = resp.headers()["location"].to_str().unwrap().to_owned();
            let CallbackResponse::Acknowledgment(ack) =
                client.callback(&pending, &location).unwrap()
            else {
                panic!("no acknowledgment")
            };
            let auth = client.exchange(ack).await.unwrap();
            println!("STARTED {}", OutcomeId::of(auth.id()));
        }
        println!("READY");
    }
    let mut jitter = u64::from(std::process::id());
    loop {
        match events.recv().await {
            Ok(PollEvent::Finished {
                id,
                outcome_id,
                outcome,
            }) => {
                report(&outcome_id, &outcome);
                // The application takes a moment to handle the outcome
                // before acknowledging it: a kill in between means a
                // re-delivery after the restart.
                let pause = Duration::from_millis(next_random(&mut jitter) % 300);
                let c = client.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(pause).await;
                    c.ack(&id).await.unwrap();
                });
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

fn report(id: &OutcomeId, outcome: &Outcome<oidc_dtr::TokenSet>) {
    let detail = match outcome {
        Outcome::Tokens(t) => t.access_token().secret().to_owned(),
        other => other.kind().to_owned(),
    };
    println!("DELIVERED {id} {} {detail}", outcome.kind());
}

/// The text after a marker (the test harness may print on the same line
/// before the child's first line).
fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// One child run: its stdout lines are collected as they come.
struct Run {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

fn spawn(role: &str, issuer: &str, store: &std::path::Path) -> Run {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_ROLE, role)
        .env("OIDC_DTR_ISSUER", issuer)
        .env("OIDC_DTR_STORE", store)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    Run { child, lines }
}

/// A cheap, seedable pseudo-random sequence for the kill times.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_and_restarted_nothing_is_lost() {
    if std::env::var(ENV_ROLE).is_ok() {
        return; // the child process runs `crash_child_process` only
    }
    let store = crate::support::TempPath::new("crash");
    let mut cfg = OpConfig::default();
    cfg.interval = Some(1);
    cfg.auto_approve = AutoApprove::AfterPolls(2);
    cfg.redelivery_window = Some(Duration::from_secs(600));
    let op = MockOp::builder().config(cfg).start().await.unwrap();
    let issuer = op.issuer().to_owned();
    let mut all_lines: Vec<String> = Vec::new();

    // Run 1 starts the flows; it is not killed before they are all started
    // (a kill inside an exchange would spend a deferred_code the RP never
    // hears of: a request that is not idempotent, not this test's subject).
    let mut run = spawn("start", &issuer, &store.0);
    let t = Instant::now();
    while !run
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.ends_with("READY"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the child never got ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    let mut kills = 0;
    loop {
        // Let it run for a random moment, then SIGKILL it.
        // Mostly short runs (kills while starting, resuming, writing),
        // some long enough to poll and deliver.
        let wait = if kills % 4 == 3 {
            4000 // now and then a long run, so that every flow progresses
        } else {
            50 + next_random(&mut seed) % 2200
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        run.child.kill().unwrap(); // SIGKILL on Unix
        run.child.wait().unwrap();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(30)).await;
        all_lines.extend(run.lines.lock().unwrap().drain(..));
        let done = op
            .authentications()
            .iter()
            .all(|a| a.state == AuthState::Redeemed);
        if done && kills >= 12 {
            break;
        }
        if kills >= 150 {
            let stuck: Vec<String> = op
                .authentications()
                .into_iter()
                .filter(|a| a.state != AuthState::Redeemed)
                .map(|a| a.deferred_auth_id)
                .collect();
            for r in op.requests_to(oidc_dtr_testkit::Endpoint::Token) {
                if let Some(id) = r.param("deferred_auth_id")
                    && stuck.iter().any(|s| s == id)
                {
                    eprintln!("{} {:?} {}", &id[..6], r.at, r.status);
                }
            }
            for l in &all_lines {
                eprintln!("LINE {l}");
            }
            panic!("no progress after {kills} kills");
        }
        run = spawn("resume", &issuer, &store.0);
    }
    // A last, clean run hands over whatever is still unacknowledged.
    let run = spawn("resume", &issuer, &store.0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut run = run;
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    all_lines.extend(run.lines.lock().unwrap().drain(..));

    // What the OP issued.
    let auths = op.authentications();
    assert_eq!(auths.len(), FLOWS);
    let started: HashSet<String> = all_lines
        .iter()
        .filter_map(|l| after(l, "STARTED "))
        .map(str::to_owned)
        .collect();
    assert_eq!(started.len(), FLOWS);
    let mut delivered: HashMap<String, HashSet<String>> = HashMap::new();
    for l in &all_lines {
        if let Some(rest) = after(l, "DELIVERED ") {
            let (id, what) = rest.split_once(' ').unwrap();
            delivered
                .entry(id.to_owned())
                .or_default()
                .insert(what.to_owned());
        }
    }
    for a in &auths {
        let oid = OutcomeId::of(&DeferredId::new(a.deferred_auth_id.clone())).to_string();
        assert!(started.contains(&oid));
        let seen = delivered
            .get(&oid)
            .unwrap_or_else(|| panic!("an authentication was never delivered"));
        assert_eq!(
            seen.len(),
            1,
            "one outcome per authentication, the same on every delivery: {seen:?}"
        );
        let what = seen.iter().next().unwrap();
        assert!(
            what.starts_with("tokens "),
            "the OP issued tokens and they were lost: {what}"
        );
        assert_eq!(a.state, AuthState::Redeemed);
        assert_eq!(
            a.slow_downs, 0,
            "never faster than the interval, across restarts"
        );
    }
    let deliveries = all_lines
        .iter()
        .filter(|l| l.contains("DELIVERED "))
        .count();
    eprintln!("{kills} kills, {deliveries} deliveries of {FLOWS} outcomes");
}
