//! Fleet load on one PostgreSQL (issue 13, item 6): what a fleet of
//! instances sharing a `PostgresStore` can keep up with.
//!
//! 1. Store writes: fenced poll-state writes (`update_state_leased`) per
//!    second, 16 and 256 at once (an instance issues up to 256; the store
//!    batches what is queued together); fenced outcome writes
//!    (`finish_leased`) per second, one at a time and 256 at once.
//! 2. Polling: `N` pending authentications (OP interval 1 s, never
//!    approved) on three instances; the polls per second the OP sees in
//!    steady state, against the `N` per second asked for, the overlapping
//!    polls and floor violations the OP recorded, and the database's
//!    transactions and row updates per second (`pg_stat_database`, the
//!    whole database: other users of it count too).
//! 3. Pings: instance B (holds nothing) receives the OP's ping for an
//!    authentication instance A holds; the time from the OP's approval to
//!    `wait` on B returning the validated tokens, p50 / p99.
//! 4. Rows and bytes per pending authentication after the polling run
//!    (`pg_total_relation_size`: table, TOAST and indexes, dead versions
//!    included), dead row versions and HOT updates (`pg_stat_user_tables`).
//!
//! ```sh
//! DTR_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run --release --example fleet_load --features postgres -- 3000
//! ```
//!
//! A second argument `pings` runs part 3 only. `DTR_BUSY_CORES=n` keeps `n`
//! threads spinning for the whole run (a loaded machine; `all` for one per
//! core). `DTR_FLEET_SECS=s` measures the polling for `s` seconds instead
//! of 10 (a longer run lets autovacuum, if on, take its turns). Part 4 is
//! printed twice: as the run left the table, and after a `VACUUM` of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use oidc_dtr::{
    CallbackResponse, DtrClient,
    poll::{FleetConfig, PollConfig},
    store::{PostgresStore, Record, Store, StoredOutcome},
    time::Clock,
};
use oidc_dtr_testkit::{MockOp, OpConfig, RegisteredClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let url = std::env::var("DTR_DATABASE_URL")
        .or_else(|_| std::env::var("DTR_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("bench_{}", std::process::id());
    let admin = admin(&url).await?;
    let busy = std::env::var("DTR_BUSY_CORES").ok().map(|v| {
        if v == "all" {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            v.parse().unwrap_or(0)
        }
    });
    for _ in 0..busy.unwrap_or(0) {
        std::thread::spawn(|| {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        });
    }
    if let Some(b) = busy {
        println!("{b} threads spinning throughout");
    }
    if std::env::args().nth(2).as_deref() == Some("pings") {
        pings(&url, &format!("{schema}_p")).await?;
        admin
            .batch_execute(&format!("DROP SCHEMA \"{schema}_p\" CASCADE"))
            .await?;
        return Ok(());
    }

    store_writes(&url, &format!("{schema}_w"), n).await?;
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}_w\" CASCADE"))
        .await?;

    polling(&url, &schema, n).await?;
    // The instances are shut down: their statistics are flushed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    storage(&admin, &schema, n, "").await?;
    admin
        .batch_execute(&format!("VACUUM \"{schema}\".records"))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    storage(&admin, &schema, n, " after VACUUM").await?;
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;

    pings(&url, &format!("{schema}_p")).await?;
    admin
        .batch_execute(&format!("DROP SCHEMA \"{schema}_p\" CASCADE"))
        .await?;
    Ok(())
}

/// Part 4: rows, bytes, dead versions and HOT updates of the table now.
async fn storage(
    admin: &tokio_postgres::Client,
    schema: &str,
    n: usize,
    when: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let r = admin
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM \"{schema}\".records),
                        pg_total_relation_size(c.oid), pg_relation_size(c.oid),
                        coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0),
                        pg_indexes_size(c.oid),
                        (SELECT coalesce(avg(pg_column_size(body)), 0)::bigint FROM \"{schema}\".records),
                        s.n_live_tup, s.n_dead_tup, s.n_tup_upd, s.n_tup_hot_upd,
                        coalesce(array_to_string(c.reloptions, ','), ''),
                        s.vacuum_count, s.autovacuum_count
                 FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
                 WHERE c.oid = '\"{schema}\".records'::regclass"
            ),
            &[],
        )
        .await?;
    let (rows, bytes, heap, toast, indexes, body): (i64, i64, i64, i64, i64, i64) =
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
    let (live, dead, upd, hot): (i64, i64, i64, i64) = (r.get(6), r.get(7), r.get(8), r.get(9));
    let options: String = r.get(10);
    let (vacuums, autovacuums): (i64, i64) = (r.get(11), r.get(12));
    let per = |b: i64| b / rows.max(1);
    println!(
        "storage{when}: {rows} rows for {n} pending authentications; {} bytes per authentication \
         (table, TOAST and indexes, dead versions included: heap {}, TOAST {}, indexes {}; body {} bytes)",
        per(bytes),
        per(heap),
        per(toast),
        per(indexes),
        body
    );
    println!(
        "  pg_stat_user_tables: {live} live, {dead} dead row versions; {upd} updates, {hot} HOT ({:.0} %); \
         {vacuums} vacuums, {autovacuums} autovacuums; table options [{options}]",
        100.0 * hot as f64 / upd.max(1) as f64
    );
    Ok(())
}

/// The `application_name` of the instances' database connections.
fn app_name() -> String {
    format!("fleet_load_{}", std::process::id())
}

/// User + system CPU time of a process in ticks (`/proc/<pid>/stat`), if
/// readable (Linux, same machine).
fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 here.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn backends_ticks(pids: &[i32]) -> Option<u64> {
    pids.iter().map(|p| cpu_ticks(*p)).sum()
}

async fn admin(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

fn record(i: usize) -> Record {
    let a = oidc_dtr::DeferredAuthentication::seeded(
        oidc_dtr::DeferredId::new(format!("bench-{i}-0123456789abcdef0123456789")),
        "https://op.example".into(),
        "client".into(),
        oidc_dtr::UnixTime::from_millis(1_800_000_000_000),
        Some(3600),
        1,
        oidc_dtr::secret::Nonce::new("nonce"),
    );
    let m = oidc_dtr::poll::PollMachine::new(&a, PollConfig::default());
    Record::new(a, m)
}

async fn store_writes(url: &str, schema: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let store = PostgresStore::options(url).schema(schema).connect().await?;
    store.bind("https://op.example", "client").await?;
    let records: Vec<Record> = (0..n).map(record).collect();
    for chunk in records.chunks(64) {
        let mut set = tokio::task::JoinSet::new();
        for r in chunk.iter().cloned() {
            let s = store.clone();
            set.spawn(async move { s.insert(r).await });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
    }
    let until = oidc_dtr::UnixTime::from_millis(1_900_000_000_000);
    let mut leases = Vec::new();
    loop {
        let b = store
            .claim_due_unheld("bench", until, 500, Duration::from_secs(300))
            .await?;
        if b.is_empty() {
            break;
        }
        leases.extend(b);
    }
    // State writes, 16 and then 256 at once.
    for at_once in [16, 256] {
        let started = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(at_once));
        let mut set = tokio::task::JoinSet::new();
        for (r, l) in leases.iter().cloned() {
            let permit = sem.clone().acquire_owned().await?;
            let s = store.clone();
            set.spawn(async move {
                let _p = permit;
                s.update_state_leased(r.id(), r.machine.clone(), "bench", l)
                    .await
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "state writes (update_state_leased, {at_once} at once): {:.0}/s ({} in {secs:.2} s)",
            leases.len() as f64 / secs,
            leases.len()
        );
    }
    let outcome = || {
        StoredOutcome::new(
            oidc_dtr::UnixTime::from_millis(1_800_000_100_000),
            oidc_dtr::Outcome::Denied { description: None },
        )
    };
    // Outcome writes, one at a time, then 256 at once.
    let k = leases.len().min(1000);
    let started = Instant::now();
    for (r, l) in &leases[..k] {
        store
            .finish_leased(r.id(), r.machine.clone(), outcome(), "bench", *l)
            .await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "outcome writes (finish_leased, one at a time): {:.0}/s ({k} in {secs:.2} s)",
        k as f64 / secs
    );
    let rest = &leases[k..];
    if !rest.is_empty() {
        let started = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(256));
        let mut set = tokio::task::JoinSet::new();
        for (r, l) in rest.iter().cloned() {
            let permit = sem.clone().acquire_owned().await?;
            let s = store.clone();
            let o = outcome();
            set.spawn(async move {
                let _p = permit;
                s.finish_leased(r.id(), r.machine.clone(), o, "bench", l)
                    .await
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "outcome writes (finish_leased, 256 at once): {:.0}/s ({} in {secs:.2} s)",
            rest.len() as f64 / secs,
            rest.len()
        );
    }
    store.close().await?;
    Ok(())
}

async fn instance(
    op: &MockOp,
    url: &str,
    schema: &str,
    name: &str,
    fleet: FleetConfig,
    client: (&str, &str),
    ping: Option<&str>,
) -> Result<DtrClient, Box<dyn std::error::Error>> {
    // Named, so that the CPU time of the instances' backends can be found.
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = PostgresStore::options(format!("{url}{sep}application_name={}", app_name()))
        .schema(schema)
        .max_connections(8)
        .connect()
        .await?;
    let mut b = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(client.0)
        .client_secret(client.1)
        .redirect_uri("http://127.0.0.1/cb")
        .store(store)
        .fleet(fleet.instance(name));
    if let Some(p) = ping {
        b = b
            .notification_endpoint(p)
            .notified_poll_cadence(Some(Duration::from_secs(20)));
    }
    Ok(b.build().await?)
}

async fn polling(url: &str, schema: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = OpConfig::default();
    config.interval = Some(1);
    let op = MockOp::builder().config(config).start().await?;
    let fleet_cfg = FleetConfig::default()
        .lease_ttl(Duration::from_secs(10))
        .max_held(n / 2);
    let mut fleet = Vec::new();
    for i in 0..3 {
        fleet.push(
            instance(
                &op,
                url,
                schema,
                &format!("i{i}"),
                fleet_cfg.clone(),
                (MockOp::CLIENT_ID, MockOp::CLIENT_SECRET),
                None,
            )
            .await?,
        );
    }
    let seeded = op.seed_pending(&fleet[0], n);
    for chunk in seeded.chunks(64) {
        let mut set = tokio::task::JoinSet::new();
        for a in chunk.iter().cloned() {
            let c = fleet[0].clone();
            set.spawn(async move { c.resume(a, None).await });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
    }
    // Warm up (claims, first polls), then measure 10 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let db = admin(url).await?;
    let db_counts = || async {
        db.query_one(
            "SELECT xact_commit + xact_rollback, tup_updated FROM pg_stat_database
             WHERE datname = current_database()",
            &[],
        )
        .await
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
    };
    let polls0 = op.flight_report().polls;
    let (tx0, upd0) = db_counts().await?;
    let backends: Vec<i32> = db
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            &[&app_name()],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let cpu0 = (
        cpu_ticks(std::process::id() as i32),
        backends_ticks(&backends),
    );
    let started = Instant::now();
    let window = std::env::var("DTR_FLEET_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    tokio::time::sleep(Duration::from_secs(window)).await;
    let polls = op.flight_report().polls - polls0;
    let secs = started.elapsed().as_secs_f64();
    let cpu1 = (
        cpu_ticks(std::process::id() as i32),
        backends_ticks(&backends),
    );
    let (tx1, upd1) = db_counts().await?;
    let report = op.flight_report();
    println!(
        "polling: {n} pending authentications, interval 1 s, 3 instances: {:.0} polls/s at the OP (asked: {n}/s; kept {:.0} %); {} overlaps, {} floor violations",
        polls as f64 / secs,
        100.0 * polls as f64 / secs / n as f64,
        report.overlaps.len(),
        report.floor_violations.len()
    );
    println!(
        "  database (all sessions, statistics flushed about once a second): {:.0} transactions/s, {:.0} row updates/s",
        (tx1 - tx0) as f64 / secs,
        (upd1 - upd0) as f64 / secs
    );
    if let ((Some(p0), Some(b0)), (Some(p1), Some(b1))) = (cpu0, cpu1) {
        // Ticks of 10 ms (USER_HZ 100).
        let per_poll = |t: u64| t as f64 * 10_000.0 / polls.max(1) as f64;
        println!(
            "  CPU per poll at the OP: this process (mock OP, 3 instances) {:.1} µs, their {} database backends {:.1} µs; \
             {:.2} + {:.2} cores",
            per_poll(p1 - p0),
            backends.len(),
            per_poll(b1 - b0),
            (p1 - p0) as f64 / 100.0 / secs,
            (b1 - b0) as f64 / 100.0 / secs
        );
    }
    let held = admin(url)
        .await?
        .query(
            &format!(
                "SELECT lease_owner, count(*) FROM \"{schema}\".records
                 WHERE lease_expires > now() GROUP BY 1 ORDER BY 1"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| format!("{}: {}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>();
    println!("  live leases per instance: {held:?}");
    // All figures first: a shutdown releases leases, which the others claim.
    for c in &fleet {
        let s = c.stats();
        println!(
            "  instance: pending {}, polls {}, worst lateness {:?}",
            s.pending, s.polls, s.max_poll_lateness
        );
    }
    for c in &fleet {
        c.shutdown().await;
    }
    Ok(())
}

async fn pings(url: &str, schema: &str) -> Result<(), Box<dyn std::error::Error>> {
    const K: usize = 100;
    let mut config = OpConfig::default();
    config.interval = Some(1);
    let op = MockOp::builder().config(config).start().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ping_url = format!("http://{}/dtr/ping", listener.local_addr()?);
    op.register_client(
        RegisteredClient::confidential("rp", "rp-secret")
            .with_notification_endpoint(ping_url.clone()),
    );
    let base = FleetConfig::default().lease_ttl(Duration::from_secs(30));
    let a = instance(
        &op,
        url,
        schema,
        "A",
        base.clone(),
        ("rp", "rp-secret"),
        Some(&ping_url),
    )
    .await?;
    let b = instance(
        &op,
        url,
        schema,
        "B",
        base.max_held(0),
        ("rp", "rp-secret"),
        Some(&ping_url),
    )
    .await?;
    oidc_dtr_testkit::serve_ping_receiver(listener, b.ping_receiver());
    let mut ids = Vec::new();
    for _ in 0..K {
        let (auth_url, pending) = b.authorize().build()?;
        let cb = op.browse(&auth_url).await?;
        let CallbackResponse::Acknowledgment(ack) = b.callback(&pending, cb.query())? else {
            return Err("no acknowledgment".into());
        };
        ids.push(b.exchange(ack).await?.id().clone());
    }
    // A claims them (due within half the TTL: the 20 s cadence) and its
    // floor after the claim passes.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let mut lat = Vec::new();
    // Approval to the poll's arrival at the OP (the ping, its check on B,
    // the notice to A, A's wake), and the rest (the answer, validation,
    // the outcome write, the notice to B, B's read).
    let (mut to_poll, mut after_poll) = (Vec::new(), Vec::new());
    for id in &ids {
        let t = Instant::now();
        let wall = oidc_dtr::time::SystemClock.now();
        op.approve(id);
        let o = b.wait(id).await?;
        let total = t.elapsed();
        lat.push(total);
        assert_eq!(o.kind(), "tokens");
        if let Some(arrived) = op
            .requests_to(oidc_dtr_testkit::Endpoint::Token)
            .iter()
            .filter(|r| r.param("deferred_auth_id") == Some(id.secret()))
            .map(|r| r.at)
            .max()
        {
            let first = arrived.saturating_duration_since(wall);
            to_poll.push(first);
            after_poll.push(total.saturating_sub(first));
        }
    }
    lat.sort();
    to_poll.sort();
    after_poll.sort();
    let pct = |v: &[Duration], p: usize| v.get(v.len().saturating_sub(1) * p / 100).copied();
    println!(
        "  approval -> poll at the OP: p50 {:?}, p99 {:?}; poll -> tokens on B: p50 {:?}, p99 {:?}",
        pct(&to_poll, 50),
        pct(&to_poll, 99),
        pct(&after_poll, 50),
        pct(&after_poll, 99)
    );
    println!(
        "ping on B -> validated tokens via A ({K} authentications, one at a time): p50 {:?}, p99 {:?}, max {:?}; A polled {} times, B {}",
        lat[K / 2],
        lat[K * 99 / 100],
        lat[K - 1],
        a.stats().polls,
        b.stats().polls
    );
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
