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

use oidc_dtr::{DtrClient, FleetConfig, PostgresStore};
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
                if matches!(client.ack(&d.id).await, Ok(true)) {
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
/// delivered outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fleet_survives_a_kill_a_partition_and_a_restart() {
    const N: usize = 2000;
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
    let schema = format!("fleet_{}", std::process::id());
    let mut config = OpConfig::default();
    config.interval = Some(1);
    config.poll_latency = Some(Duration::from_millis(20));
    config.auto_approve = AutoApprove::AfterDelay(Duration::from_secs(12));
    // Tokens redeemed by an instance that then lost its lease are handed
    // again to the next one (same id, same client).
    config.redelivery_window = Some(Duration::from_secs(120));
    let op = MockOp::builder().config(config).start().await.unwrap();

    let mut fleet = Vec::new();
    for i in 0..3 {
        fleet.push(instance(&format!("i{i}"), &op, db, &schema).await);
    }
    // The pending authentications, inserted by one instance.
    let seeded = op.seed_pending(&fleet[0].client, N);
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

    // Every authentication ends, and its outcome is delivered.
    let mut last_report = Instant::now();
    loop {
        let n = delivered.lock().unwrap().len();
        if n == N {
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
                "{:?}: {n} delivered, OP saw {} polls; {stats:?}; {:?}",
                started.elapsed(),
                op.flight_report().polls,
                lease_owners(&url, &schema).await
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {n} of {N} outcomes delivered; leases: {:?}",
            lease_owners(&url, &schema).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A little longer: a second delivery would show up now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("{:?}: all {N} delivered", started.elapsed());

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
    assert!(
        delivered.values().all(|d| d[0].ends_with(":tokens")),
        "every authentication ended with its tokens: {by:?}"
    );
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
    assert!(
        op.pings()
            .iter()
            .any(|p| p.status == Some(204) || p.status == Some(200)),
        "{:?}",
        op.pings()
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
