//! A fleet of client instances on one PostgreSQL (feature `postgres`,
//! issue 13): separate `DtrClient`s, each on its own tokio runtime with its
//! own connection pool, against one mock OP.
//!
//! The database is a private PostgreSQL server started by the test
//! (`initdb` and `pg_ctl` from `/usr/lib/postgresql/*/bin`, run as the
//! `postgres` user when the test runs as root), so that restarting it
//! disturbs no other test. Each instance reaches it through a TCP proxy of
//! its own that the test can cut (a network partition). Without those
//! binaries the test uses the server at `DTR_TEST_DATABASE_URL` and plays
//! the restart by cutting every proxy at once; without any database it is
//! skipped with a printed reason (a failure under `CI=true`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oidc_dtr::{DtrClient, poll::FleetConfig, store::PostgresStore};
use oidc_dtr_testkit::{AutoApprove, MockOp, OpConfig};
use tokio::net::{TcpListener, TcpStream};

/// A PostgreSQL server of this test's own, in a temporary directory.
struct PrivatePg {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePg {
    /// Starts one, or `None` (after printing why) if this machine has no
    /// PostgreSQL server binaries.
    fn start() -> Option<PrivatePg> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
            .max()?;
        // As root, the server runs as `postgres` (it refuses root).
        let uid = Command::new("id").arg("-u").output().ok()?;
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let data = std::env::temp_dir().join(format!("dtr-fleet-pg-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&data).ok()?;
        let pg = PrivatePg {
            bin,
            data,
            port,
            as_postgres,
        };
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.data)
                .status()
                .ok()?
                .success();
            if !ok {
                return None;
            }
        }
        let data = pg.data.to_string_lossy().into_owned();
        if !pg.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        ) {
            eprintln!("initdb failed");
            return None;
        }
        if !pg.pg_ctl("start") {
            eprintln!("pg_ctl start failed");
            return None;
        }
        Some(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> bool {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn pg_ctl(&self, what: &str) -> bool {
        let data = self.data.to_string_lossy().into_owned();
        let log = self.data.join("log.txt").to_string_lossy().into_owned();
        // Durability is not what this test is about: no fsync.
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=100",
            self.port, data
        );
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &opts, "-m", "fast", "-w", what,
            ],
        )
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.pg_ctl("stop");
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A TCP proxy to the database that can be cut: every connection is
/// dropped and new ones are closed at once until it is restored.
#[derive(Clone)]
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let (c, g) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut killed = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    // No Nagle: the proxy must not add delayed-ACK stalls.
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = killed.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            cut,
            generation,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// One instance: a client on a runtime of its own (killed by shutting the
/// runtime down without any shutdown of the client).
struct Instance {
    name: String,
    runtime: Option<tokio::runtime::Runtime>,
    client: DtrClient,
    proxy: Proxy,
}

impl Instance {
    fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.as_ref().unwrap().handle().clone()
    }

    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

const LEASE: Duration = Duration::from_secs(2);

async fn instance(name: &str, op: &MockOp, db: SocketAddr, schema: &str) -> Instance {
    let proxy = Proxy::start(db).await;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let url = format!("postgres://postgres@{}/postgres", proxy.addr);
    let (issuer, schema, n) = (op.issuer().to_owned(), schema.to_owned(), name.to_owned());
    let client = runtime
        .spawn(async move {
            let store = PostgresStore::options(url)
                .schema(schema)
                .max_connections(4)
                .timeout(Duration::from_secs(2))
                .connect()
                .await
                .unwrap();
            DtrClient::builder()
                .issuer(issuer)
                .client_id(MockOp::CLIENT_ID)
                .client_secret(MockOp::CLIENT_SECRET)
                .redirect_uri("http://127.0.0.1/cb")
                .store(store)
                .fleet(
                    FleetConfig::default()
                        .lease_ttl(LEASE)
                        .claim_batch(200)
                        .max_held(1200)
                        .delivery_visibility(Duration::from_secs(5))
                        .instance(n),
                )
                .build()
                .await
                .unwrap()
        })
        .await
        .unwrap();
    Instance {
        name: name.to_owned(),
        runtime: Some(runtime),
        client,
        proxy,
    }
}

/// Each instance's consumer: takes outcomes with `undelivered`, records
/// them, acknowledges them.
fn consume(inst: &Instance, delivered: Arc<Mutex<HashMap<String, Vec<String>>>>) {
    let client = inst.client.clone();
    let name = inst.name.clone();
    inst.handle().spawn(async move {
        loop {
            for d in client.undelivered().await {
                // An acknowledgment that failed may still have been
                // recorded (the store's answer was lost): acknowledged
                // again, it then reads as someone else's, so a consumer
                // that saw an error counts the delivery as its own.
                let mut failed = false;
                let first = loop {
                    match client.ack(&d.id).await {
                        Ok(first) => break first || failed,
                        Err(_) => {
                            failed = true;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                if first {
                    delivered
                        .lock()
                        .unwrap()
                        .entry(d.id.secret().to_owned())
                        .or_default()
                        .push(format!("{name}:{}", d.outcome.kind()));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

async fn lease_owners(url: &str, schema: &str) -> HashMap<String, i64> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.query(
        &format!(
            "SELECT coalesce(lease_owner, '-'), count(*) FROM \"{schema}\".records
             WHERE finished_at IS NULL GROUP BY 1"
        ),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Issue 13, item 5: three instances, thousands of pending
/// authentications; one instance is killed mid-flow, another is cut off
/// from the database for longer than the lease, the database restarts
/// once. The OP never sees two polls of one id in flight nor a poll
/// faster than its floor, and every authentication ends in exactly one
/// delivered outcome: its tokens (issue 22: the OP does not hand redeemed
/// tokens out twice, and no instance reports a refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fleet_survives_a_kill_a_partition_and_a_restart() {
    fleet_faults(2000, false).await;
}

/// Issue 22, item 5: the same with every core busy (a spinning thread per
/// core for the whole run), where lease renewals, claims and answers run
/// late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fleet_survives_a_kill_a_partition_and_a_restart_with_every_core_busy() {
    fleet_faults(1000, true).await;
}

/// A spinning thread per core until dropped.
struct BusyCores(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl BusyCores {
    fn start() -> BusyCores {
        let stop = Arc::new(AtomicBool::new(false));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        BusyCores(stop, threads)
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

async fn fleet_faults(n: usize, busy: bool) {
    let private = PrivatePg::start();
    let url = match &private {
        Some(pg) => pg.url(),
        None => match crate::postgres::database_url().await {
            Some(u) => {
                eprintln!(
                    "no PostgreSQL server binaries: using the shared server; the restart is simulated by cutting every connection"
                );
                u
            }
            None => return,
        },
    };
    let db: SocketAddr = {
        let cfg: tokio_postgres::Config = url.parse().unwrap();
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        SocketAddr::from(([127, 0, 0, 1], port))
    };
    // Both variants of this test run in one process, possibly at once:
    // each gets a schema of its own.
    let schema = format!(
        "fleet_{}_{}",
        std::process::id(),
        if busy { "busy" } else { "calm" }
    );
    let mut config = OpConfig::default();
    config.interval = Some(1);
    config.poll_latency = Some(Duration::from_millis(20));
    config.auto_approve = AutoApprove::AfterDelay(Duration::from_secs(12));
    let op = MockOp::builder().config(config).start().await.unwrap();

    let mut fleet = Vec::new();
    for i in 0..3 {
        fleet.push(instance(&format!("i{i}"), &op, db, &schema).await);
    }
    // The pending authentications, inserted by one instance.
    let seeded_at = Instant::now();
    let seeded = op.seed_pending(&fleet[0].client, n);
    let ids: Vec<String> = seeded.iter().map(|a| a.id().secret().to_owned()).collect();
    {
        let c = fleet[0].client.clone();
        fleet[0]
            .handle()
            .spawn(async move {
                for chunk in seeded.chunks(100) {
                    let mut set = tokio::task::JoinSet::new();
                    for a in chunk.iter().cloned() {
                        let c = c.clone();
                        set.spawn(async move { c.resume(a, None).await.unwrap() });
                    }
                    while let Some(r) = set.join_next().await {
                        assert!(r.unwrap(), "inserted");
                    }
                }
            })
            .await
            .unwrap();
    }
    let delivered: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    for inst in &fleet {
        consume(inst, delivered.clone());
    }
    let busy = busy.then(BusyCores::start);
    let started = Instant::now();

    // Kill i0 once it holds leases.
    loop {
        let owners = lease_owners(&url, &schema).await;
        if owners.get("i0").copied().unwrap_or(0) > 0 && started.elapsed() > Duration::from_secs(2)
        {
            eprintln!("before the kill: {owners:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "i0 never claimed anything: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet[0].kill();
    eprintln!("{:?}: killed i0", started.elapsed());

    // Cut i1 off from the database for three lease periods.
    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet[1].proxy.cut();
    eprintln!("{:?}: partitioned i1", started.elapsed());
    tokio::time::sleep(LEASE * 3).await;
    fleet[1].proxy.restore();
    eprintln!(
        "{:?}: healed i1; {:?}",
        started.elapsed(),
        lease_owners(&url, &schema).await
    );

    // Restart the database.
    tokio::time::sleep(Duration::from_secs(1)).await;
    match &private {
        Some(pg) => {
            assert!(pg.pg_ctl("restart"), "pg_ctl restart");
        }
        None => {
            for inst in &fleet {
                inst.proxy.cut();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            for inst in &fleet {
                inst.proxy.restore();
            }
        }
    }
    eprintln!("{:?}: restarted the database", started.elapsed());

    // Kill i2 while the OP approves (12 s after the exchanges): polls that
    // redeemed ids are in flight in it.
    tokio::time::sleep(
        (seeded_at + Duration::from_millis(12_300)).saturating_duration_since(Instant::now()),
    )
    .await;
    fleet[2].kill();
    eprintln!("{:?}: killed i2 during the approvals", started.elapsed());

    // Every authentication ends, and its outcome is delivered.
    let mut last_report = Instant::now();
    loop {
        let done = delivered.lock().unwrap().len();
        if done == n {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            let stats: Vec<String> = fleet
                .iter()
                .filter(|i| i.runtime.is_some())
                .map(|i| {
                    let s = i.client.stats();
                    format!(
                        "{}: pending {} in flight {} polls {} store queue {}",
                        i.name, s.pending, s.in_flight, s.polls, s.store_queue_depth
                    )
                })
                .collect();
            eprintln!(
                "{:?}: {done} delivered, OP saw {} polls; {stats:?}; {:?}",
                started.elapsed(),
                op.flight_report().polls,
                lease_owners(&url, &schema).await
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(if busy.is_some() { 240 } else { 120 }),
            "only {done} of {n} outcomes delivered; leases: {:?}",
            lease_owners(&url, &schema).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A little longer: a second delivery would show up now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(busy);
    eprintln!("{:?}: all {n} delivered", started.elapsed());

    let report = op.flight_report();
    eprintln!(
        "OP: {} polls, at most {} in flight",
        report.polls, report.max_in_flight
    );
    assert!(
        report.overlaps.is_empty(),
        "{} polls arrived while another of the same id was in flight",
        report.overlaps.len()
    );
    assert!(
        report.floor_violations.is_empty(),
        "polls faster than the floor: {:?}",
        &report.floor_violations[..report.floor_violations.len().min(5)]
    );
    let delivered = delivered.lock().unwrap();
    for id in &ids {
        let d = delivered.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            d.len(),
            1,
            "one delivered outcome per authentication: {d:?}"
        );
    }
    let by: HashMap<&str, usize> = delivered.values().fold(HashMap::new(), |mut m, d| {
        *m.entry(d[0].as_str()).or_default() += 1;
        m
    });
    eprintln!("deliveries by instance and kind: {by:?}");
    // Every authentication ends with its tokens, except those the OP
    // issued to i2 that i2 had not stored when it was killed (a poll in
    // flight, or an outcome still queued for the store): they end as
    // possibly lost in transit. Never a refusal.
    assert!(
        delivered
            .values()
            .all(|d| d[0].ends_with(":tokens") || d[0].ends_with(":possibly_lost_in_transit")),
        "tokens or possibly lost in transit, never a refusal: {by:?}"
    );
    let token_requests = op.requests_to(oidc_dtr_testkit::Endpoint::Token);
    for (id, d) in delivered.iter() {
        if d[0].ends_with(":possibly_lost_in_transit") {
            let answers: Vec<u16> = token_requests
                .iter()
                .filter(|r| r.param("deferred_auth_id") == Some(id.as_str()))
                .map(|r| r.status)
                .collect();
            assert!(
                answers.contains(&200),
                "possibly lost in transit only where the OP issued tokens nobody stored: {answers:?}"
            );
        }
    }
    for inst in &mut fleet {
        inst.kill();
    }
}

/// Issue 13, item 4: a ping received by an instance that does not poll the
/// authentication is checked against the token hash in the store and
/// wakes the instance that holds the lease, which polls at once; `wait`
/// on the first instance returns the validated tokens, and its
/// `undelivered` hands the outcome over once (until `ack`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fleet_a_ping_on_one_instance_wakes_the_owner() {
    let Some((_seed, guard)) = crate::postgres::fresh().await else {
        return;
    };
    let mut config = OpConfig::default();
    config.interval = Some(1);
    let op = MockOp::builder().config(config).start().await.unwrap();
    let (listener, ping_url) = crate::support::rp::bind().await;
    op.register_client(
        oidc_dtr_testkit::RegisteredClient::confidential("rp", "rp-secret")
            .with_notification_endpoint(ping_url.clone()),
    );
    let build = |max_held: usize, name: &str| {
        let (issuer, ping_url) = (op.issuer().to_owned(), ping_url.clone());
        let options = guard.options();
        let name = name.to_owned();
        async move {
            DtrClient::builder()
                .issuer(issuer)
                .client_id("rp")
                .client_secret("rp-secret")
                .redirect_uri("http://127.0.0.1/cb")
                .notification_endpoint(ping_url)
                // With pings, poll on a slow cadence: the ping brings the poll.
                .notified_poll_cadence(Some(Duration::from_secs(600)))
                .store(options.connect().await.unwrap())
                .fleet(
                    FleetConfig::default()
                        .lease_ttl(Duration::from_secs(2))
                        .max_held(max_held)
                        .instance(name),
                )
                .build()
                .await
                .unwrap()
        }
    };
    let owner = build(100, "owner").await;
    let front = build(0, "front").await;
    crate::support::rp::serve(listener, front.ping_receiver());

    // Exchanged on the front end, claimed and polled by the owner.
    let auth = crate::support::flow::start(&op, &front).await;
    let id = auth.id().clone();
    let polls = || {
        op.requests_to(oidc_dtr_testkit::Endpoint::Token)
            .iter()
            .filter(|r| r.param("deferred_auth_id") == Some(id.secret()))
            .count()
    };
    // Nobody polls it yet: with pings expected the cadence is ten minutes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(polls(), 0);
    // The OP approves and pings the front end, which finds the token hash
    // in the store and wakes the fleet: the owner claims it and polls.
    assert!(op.approve(&id));
    let outcome = tokio::time::timeout(Duration::from_secs(10), front.wait(&id))
        .await
        .expect("the ping brought the poll")
        .unwrap();
    assert_eq!(outcome.kind(), "tokens");
    assert_eq!(polls(), 1, "one poll, after the ping");
    assert_eq!(owner.stats().polls, 1);
    assert_eq!(front.stats().polls, 0, "the front end polls nothing");
    let pings = op.pings_at_least(1).await;
    assert!(
        pings
            .iter()
            .any(|p| p.status == Some(204) || p.status == Some(200)),
        "{pings:?}"
    );
    // A forged ping is refused, from the store's hash.
    let forged = op.send_forged_ping(&id, "not-the-token").await;
    assert_eq!(forged, Some(401));
    // Handed over once, until acknowledged.
    let first = front.undelivered().await;
    assert_eq!(first.len(), 1);
    assert!(owner.undelivered().await.is_empty(), "hidden while claimed");
    assert!(front.ack(&id).await.unwrap());
    assert_eq!(owner.wait(&id).await.unwrap().kind(), "tokens");
    owner.shutdown().await;
    front.shutdown().await;
}

/// The environment of [`postgres_fleet_child_process`]: the database URL,
/// the schema, the OP's issuer.
const CHILD_ENV: [&str; 3] = [
    "DTR_FLEET_CHILD_URL",
    "DTR_FLEET_CHILD_SCHEMA",
    "DTR_FLEET_CHILD_ISSUER",
];

/// The lease TTL of the SIGKILL test's instances.
const KILL_LEASE: Duration = Duration::from_secs(6);

async fn fleet_member(
    url: &str,
    schema: &str,
    issuer: &str,
    name: &str,
    ttl: Duration,
    max_held: usize,
) -> DtrClient {
    let store = PostgresStore::options(url.to_owned())
        .schema(schema.to_owned())
        .max_connections(4)
        .connect()
        .await
        .unwrap();
    DtrClient::builder()
        .issuer(issuer)
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri("http://127.0.0.1/cb")
        .store(store)
        .fleet(
            FleetConfig::default()
                .lease_ttl(ttl)
                .max_held(max_held)
                .instance(name),
        )
        .build()
        .await
        .unwrap()
}

/// A fleet member in a process of its own, for the SIGKILL test: this test
/// binary re-run with [`CHILD_ENV`] set (does nothing otherwise). It polls
/// until it is killed.
#[test]
fn postgres_fleet_child_process() {
    let Ok(url) = std::env::var(CHILD_ENV[0]) else {
        return;
    };
    let schema = std::env::var(CHILD_ENV[1]).unwrap();
    let issuer = std::env::var(CHILD_ENV[2]).unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let _client = fleet_member(&url, &schema, &issuer, "victim", KILL_LEASE, 100).await;
            println!("ready");
            std::future::pending::<()>().await;
        });
}

fn token_polls(op: &MockOp, id: &oidc_dtr::DeferredId) -> usize {
    op.requests_to(oidc_dtr_testkit::Endpoint::Token)
        .iter()
        .filter(|r| r.param("deferred_auth_id") == Some(id.secret()))
        .count()
}

/// Issue 22, item 5: an instance is SIGKILLed while a poll that the OP
/// answers with tokens is in flight. The OP redeemed the id and nobody
/// read the answer: the instance that takes the authentication over gets
/// `invalid_grant` and reports `PossiblyLostInTransit`, not a refusal
/// (derived from the lease that lapsed without being released while a poll
/// could have been in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fleet_a_sigkill_mid_poll_is_possibly_lost_in_transit() {
    let Some((_seed, guard)) = crate::postgres::fresh().await else {
        return;
    };
    let url = crate::postgres::database_url().await.unwrap();
    let mut config = OpConfig::default();
    config.interval = Some(1);
    let op = MockOp::builder().config(config).start().await.unwrap();
    let front = fleet_member(&url, &guard.schema, op.issuer(), "front", KILL_LEASE, 0).await;
    let auth = crate::support::flow::start(&op, &front).await;
    let id = auth.id().clone();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "postgres_fleet::postgres_fleet_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV[0], &url)
        .env(CHILD_ENV[1], &guard.schema)
        .env(CHILD_ENV[2], op.issuer())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The child polls it (pending answers).
    let started = Instant::now();
    while token_polls(&op, &id) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child never polled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next poll redeems the id and its answer takes a while: the child
    // is killed while it waits for it.
    op.configure(|c| c.poll_latency = Some(Duration::from_secs(3)));
    let before = token_polls(&op, &id);
    assert!(op.approve(&id));
    while token_polls(&op, &id) == before {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child stopped polling"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    op.configure(|c| c.poll_latency = None);
    let redeemed = token_polls(&op, &id);

    // Another instance takes over once the lease lapses.
    let heir = fleet_member(&url, &guard.schema, op.issuer(), "heir", KILL_LEASE, 100).await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), front.wait(&id))
        .await
        .expect("the heir ends it")
        .unwrap();
    assert!(
        matches!(outcome, oidc_dtr::Outcome::PossiblyLostInTransit { .. }),
        "the heir's invalid_grant is not a refusal: {outcome:?}"
    );
    assert_eq!(token_polls(&op, &id), redeemed + 1, "the heir polled once");
    assert_eq!(heir.stats().polls, 1);
    let handed = front.undelivered().await;
    assert_eq!(handed.len(), 1);
    assert!(front.ack(&id).await.unwrap());
    heir.shutdown().await;
    front.shutdown().await;
}

/// Issue 22, item 5: the lease is lost (taken by another instance) while a
/// poll that the OP answers with tokens is in flight. The instance that
/// sent it still handles the answer: the tokens are stored through the
/// lost-lease path and handed over once, although the new holder never
/// polls. Several authentications, staggered, so that the lease loss is
/// noticed (at a renewal) while the poll is in flight for some of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fleet_tokens_of_a_poll_in_flight_when_the_lease_is_lost_are_delivered_once() {
    const FLOWS: usize = 4;
    let Some((_seed, guard)) = crate::postgres::fresh().await else {
        return;
    };
    let url = crate::postgres::database_url().await.unwrap();
    let mut config = OpConfig::default();
    config.interval = Some(1);
    // Each answer takes most of the time a poll may take under a 24 s
    // lease (a third, less a twelfth: 6 s); renewals come every 6 s.
    config.poll_latency = Some(Duration::from_millis(4500));
    let op = MockOp::builder().config(config).start().await.unwrap();
    let ttl = Duration::from_secs(24);
    let front = fleet_member(&url, &guard.schema, op.issuer(), "front", ttl, 0).await;
    let owner = fleet_member(&url, &guard.schema, op.issuer(), "owner", ttl, 100).await;
    let mut ids = Vec::new();
    for _ in 0..FLOWS {
        ids.push(crate::support::flow::start(&op, &front).await.id().clone());
    }
    let sql = guard.sql().await;
    let started = Instant::now();
    let mut redeemed = Vec::new();
    for id in &ids {
        while token_polls(&op, id) == 0 {
            assert!(started.elapsed() < Duration::from_secs(60), "never polled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for id in &ids {
        let before = token_polls(&op, id);
        assert!(op.approve(id));
        // The poll that redeems it is on its way: another instance takes
        // the lease (and never polls).
        while token_polls(&op, id) == before {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "stopped polling"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let key = oidc_dtr::store::RecordKey::of(id);
        let stolen = sql
            .execute(
                &format!(
                    "UPDATE \"{}\".records SET lease_owner = 'thief', lease_epoch = lease_epoch + 1,
                     lease_expires = now() + interval '1 hour' WHERE key = $1",
                    guard.schema
                ),
                &[&key.as_bytes().as_slice()],
            )
            .await
            .unwrap();
        assert_eq!(stolen, 1);
        redeemed.push(token_polls(&op, id));
        // Staggered against the renewals.
        tokio::time::sleep(Duration::from_millis(1700)).await;
    }
    for id in &ids {
        let outcome = tokio::time::timeout(Duration::from_secs(30), front.wait(id))
            .await
            .expect("the tokens of the poll in flight are kept")
            .unwrap();
        assert_eq!(outcome.kind(), "tokens");
    }
    for (id, n) in ids.iter().zip(redeemed) {
        assert_eq!(
            token_polls(&op, id),
            n,
            "no poll after the one that redeemed it"
        );
    }
    let mut handed: Vec<_> = front
        .undelivered()
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    handed.sort_by(|a, b| a.secret().cmp(b.secret()));
    let mut expected = ids.clone();
    expected.sort_by(|a, b| a.secret().cmp(b.secret()));
    assert_eq!(handed, expected, "each handed over once");
    for id in &ids {
        assert!(front.ack(id).await.unwrap());
        assert!(!front.ack(id).await.unwrap(), "acknowledged once");
    }
    assert!(owner.undelivered().await.is_empty());
    owner.shutdown().await;
    front.shutdown().await;
}
