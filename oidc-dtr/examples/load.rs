//! Load: many pending authentications driven by one client — one driver
//! task, one timer queue — against the testkit OP, on a virtual clock.
//!
//! Reports the memory each pending authentication costs the client (the
//! bytes its heap blocks request; the bytes the allocator holds for them,
//! `malloc_usable_size` plus glibc's 8-byte chunk header each; the live
//! allocations; the growth of the resident set), how fast
//! authentications are taken on, and how fast a round of polls goes through
//! the driver and over loopback HTTP when all of them fall due at once.
//!
//! ```sh
//! cargo run --release -p oidc-dtr --example load                          # 100 000
//! cargo run --release -p oidc-dtr --example load -- 1000000               # a million
//! cargo run --release -p oidc-dtr --example load -- 100000 file           # on a FileStore
//! cargo run --release -p oidc-dtr --example load -- store 100000          # FileStore alone
//! cargo run --release -p oidc-dtr --example load -- driver 100000         # the driver alone
//! cargo run --release -p oidc-dtr --example load -- steady 100000 10 30   # lateness
//! cargo run --release -p oidc-dtr --example load -- steady 100000 10 30 file
//! ```
//!
//! `steady N I S`: N pending authentications with a poll interval of I
//! seconds on the real clock, never approved, their first polls spread over
//! one interval, run for S seconds: the polls per second the driver keeps
//! up and the distribution of poll lateness (how long after its due time
//! each poll went out, from the `oidc_dtr_poll_lateness_seconds` histogram).
//!
//! `driver N [F]`: the poll driver alone, without HTTP or a store: N
//! authentications answered `authorization_pending` at once by an in-memory
//! poller, all due at once, five rounds, at most F polls in flight (64):
//! the polls per second the driver itself keeps up.
//!
//! `store N`: the durable store alone, without the driver: N inserts, then
//! a state update of each (in due order, as polls make them), then N
//! finishes, each phase with 8192 writers at once (the driver's default
//! `max_queued_writes`), measuring writes per second and the bytes the
//! process sent to the disk (`/proc/self/io`, `write_bytes`) per write.
//! The file goes to `$DTR_BENCH_DIR` (default: the current directory),
//! which must be on a real disk for the `fsync`s to count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use oidc_dtr::poll::DriverConfig;
use oidc_dtr::store::{FileStore, Record, Store, StoredOutcome};
use oidc_dtr::{DtrClient, tokens::ValidationOptions};
use oidc_dtr::{
    Outcome,
    jose::Algorithm,
    poll::{Event, PollConfig, PollMachine},
    random::SystemRandom,
};
use oidc_dtr::{
    TokenSet,
    error::{ErrorCode, OAuthError},
    poll::PollResult,
};
use oidc_dtr::{
    UnixTime,
    time::{Clock, ManualClock},
};
use oidc_dtr_testkit::{AutoApprove, Endpoint, MockOp, OpConfig};

/// Counts live heap bytes two ways: as requested (`Layout::size`), and as
/// the allocator holds them (`malloc_usable_size` + 8 bytes of chunk
/// header, glibc's size word: a chunk of the heap spans
/// `malloc_usable_size(p) + 8` bytes; an `mmap`ped chunk, 128 KiB and up,
/// spans 8 more, not counted: a few per run). Also the number of live
/// allocations.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static LIVE_HELD: AtomicIsize = AtomicIsize::new(0);
static LIVE_COUNT: AtomicIsize = AtomicIsize::new(0);

/// The glibc chunk header counted with each allocation (see [`Counting`]).
const CHUNK_HEADER: usize = 8;

/// The bytes the allocator holds for the block at `ptr`: its usable size
/// plus the chunk header (Linux; elsewhere, an estimate from the request).
#[allow(unsafe_code)]
fn held(ptr: *mut u8, requested: usize) -> isize {
    #[cfg(target_os = "linux")]
    {
        let _ = requested;
        // SAFETY: `ptr` is a live block of the system allocator (`malloc`
        // or `posix_memalign`), which is what `malloc_usable_size` takes.
        let usable = unsafe { libc::malloc_usable_size(ptr.cast()) };
        (usable + CHUNK_HEADER) as isize
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = ptr;
        (requested.max(24).next_multiple_of(16) + CHUNK_HEADER) as isize
    }
}

// A global allocator is `unsafe` by nature; this one only counts and
// forwards every call to the system allocator unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_HELD.fetch_add(held(ptr, layout.size()), Ordering::Relaxed);
            LIVE_COUNT.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_HELD.fetch_sub(held(ptr, layout.size()), Ordering::Relaxed);
        LIVE_COUNT.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_held = held(ptr, layout.size());
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
            LIVE_HELD.fetch_add(held(new, new_size) - old_held, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Live heap: bytes requested, bytes the allocator holds for them, and
/// allocations.
#[derive(Clone, Copy)]
struct Heap {
    requested: isize,
    held: isize,
    count: isize,
}

fn live() -> Heap {
    Heap {
        requested: LIVE.load(Ordering::Relaxed),
        held: LIVE_HELD.load(Ordering::Relaxed),
        count: LIVE_COUNT.load(Ordering::Relaxed),
    }
}

/// The resident set size in bytes (`VmRSS` of `/proc/self/status`; zero
/// where there is none).
fn rss() -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes this process has caused to be written to storage, and bytes
/// passed to `write` calls (Linux `/proc/self/io`).
fn io_written() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("write_bytes:"), field("wchar:"))
}

/// CPU time this process has used so far (user + system, all threads),
/// from `/proc/self/stat` (Linux; zero elsewhere). Unlike the wall time of
/// a round, it does not grow when other processes take the cores.
fn cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')').
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here,
    // in clock ticks (100 per second on Linux).
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn bench_dir() -> std::path::PathBuf {
    let base = std::env::var_os("DTR_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let dir = base.join(format!("dtr-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for the store");
    dir
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("steady") {
        let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
        let file = args.get(4).map(String::as_str) == Some("file");
        return steady(arg(1, 100_000) as usize, arg(2, 10), arg(3, 30), file).await;
    }
    if args.first().map(String::as_str) == Some("driver") {
        let arg = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
        let (n, in_flight) = (arg(1, 100_000), arg(2, 64));
        println!(
            "driver alone: {n} authentications, all due at once, max_in_flight {in_flight}, answered at once in memory (no HTTP, no store)"
        );
        let rounds = oidc_dtr::__bench::driver_rounds(n, in_flight, 5, cpu_time).await;
        for (i, (d, cpu)) in rounds.iter().enumerate() {
            println!(
                "  round {}: {:.3} s = {:.0} polls/s ({:.2} µs per poll); CPU {:.2} s = {:.2} µs per poll ({:.0} polls per CPU-second)",
                i + 1,
                d.as_secs_f64(),
                n as f64 / d.as_secs_f64(),
                d.as_secs_f64() * 1e6 / n as f64,
                cpu.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / n as f64,
                n as f64 / cpu.as_secs_f64().max(1e-9)
            );
        }
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("store") {
        let n = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
        return store_bench(n).await;
    }
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let file = args.get(1).map(String::as_str) == Some("file");
    let clock = Arc::new(ManualClock::new(UnixTime::from_secs(1_900_000_000)));

    let mut config = OpConfig::default();
    config.interval = Some(60);
    config.expires_in = Some(86_400);
    config.auto_approve = AutoApprove::AfterPolls(2);
    let op = MockOp::builder()
        .config(config)
        .clock(clock.clone())
        .signing_alg(Algorithm::ES256)
        .start()
        .await?;
    let driver = DriverConfig::default().max_in_flight(64).event_capacity(16);
    let dir = bench_dir();
    let mut builder = DtrClient::builder();
    if file {
        builder = builder.store(FileStore::open(dir.join("dtr.redb"))?);
    }
    let client = builder
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri("http://127.0.0.1:9/callback")
        .clock(clock.clone())
        .validation(ValidationOptions::default().algorithms([Algorithm::ES256]))
        .driver_config(driver)
        .build()
        .await?;

    println!("seeding {n} pending authentications at the mock OP...");
    let seeded = op.seed_pending(&client, n);
    let ids: Vec<_> = seeded.iter().map(|a| a.id().clone()).collect();
    // The client takes on fresh copies made inside the measurement (as an
    // exchange would make them): the seeded originals stay alive until
    // after it, so that what the client holds is all counted.
    let json: Vec<String> = seeded
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?;
    let before = live();
    let rss_before = rss();
    let auths = json
        .iter()
        .map(|j| serde_json::from_str::<oidc_dtr::DeferredAuthentication>(j));
    let io_before = io_written();
    let t = Instant::now();
    // Taken on by 4096 callers at once (as requests of many users would).
    let client = Arc::new(client);
    let mut set = tokio::task::JoinSet::new();
    for a in auths {
        let a = a?;
        if set.len() >= 4096 {
            set.join_next().await.expect("a task")??;
        }
        let c = client.clone();
        set.spawn(async move { c.resume(a, None).await });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let track = t.elapsed();
    let (pending, _) = client.pending_count().await;
    assert_eq!(pending, n);
    let after = live();
    let rss_after = rss();
    drop(seeded);
    // `ids` is still alive on both sides of the measurement; the seeded
    // authentications moved into the driver.
    let per = |a: isize, b: isize| (a - b) as f64 / n as f64;
    println!(
        "taken on: {n} in {:.2} s ({:.0}/s)",
        track.as_secs_f64(),
        n as f64 / track.as_secs_f64()
    );
    println!(
        "memory per pending authentication (client side): {:.0} bytes requested; {:.0} bytes with the allocator's overhead (malloc_usable_size + {CHUNK_HEADER}-byte chunk header), {:.2} allocations; RSS growth {:.0} bytes",
        per(after.requested, before.requested),
        per(after.held, before.held),
        per(after.count, before.count),
        (rss_after as f64 - rss_before as f64) / n as f64,
    );

    if file {
        let (disk, _) = io_written();
        println!(
            "  store: {:.0} bytes written to disk per insert",
            (disk - io_before.0) as f64 / n as f64
        );
    }

    // `DTR_LOAD_ROUNDS=1`: only the `authorization_pending` round (for a
    // profile of the poll path alone).
    let rounds: usize = std::env::var("DTR_LOAD_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    for (round, expect) in [(1, "authorization_pending"), (2, "tokens")]
        .into_iter()
        .take(rounds)
    {
        let target = round * n;
        clock.advance(Duration::from_secs(60));
        let io_round = io_written();
        let cpu0 = cpu_time();
        let t = Instant::now();
        loop {
            let polled = op.request_count(Endpoint::Token);
            if polled >= target {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if round == 2 {
            while client.pending_count().await.0 > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let d = t.elapsed();
        println!(
            "round {round} ({expect}): {n} polls due at once, all answered in {:.2} s = {:.0} polls/s ({:.1} µs per poll, driver + HTTP + OP{})",
            d.as_secs_f64(),
            n as f64 / d.as_secs_f64(),
            d.as_secs_f64() * 1e6 / n as f64,
            if round == 2 {
                " + ES256 signing and validation"
            } else {
                ""
            }
        );
        let cpu = (cpu_time() - cpu0).as_secs_f64();
        println!(
            "  CPU time {cpu:.2} s = {:.1} µs per poll, both cores, OP included ({:.0} polls per CPU-second)",
            cpu * 1e6 / n as f64,
            n as f64 / cpu.max(1e-9)
        );
        let stats = client.stats();
        println!(
            "  max lateness {:.2} s, polls sent {}",
            stats.max_poll_lateness.as_secs_f64(),
            stats.polls
        );
        if file {
            let (disk, _) = io_written();
            println!(
                "  store: {:.0} bytes written to disk per poll",
                (disk - io_round.0) as f64 / n as f64
            );
        }
    }
    if rounds >= 2 {
        let outcome = client.wait(&ids[n / 2]).await?;
        println!("a sample outcome: {}", outcome.kind());
    }
    client.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Records every value of the poll lateness histogram; ignores the rest.
#[derive(Default)]
struct Lateness(std::sync::Mutex<Vec<f64>>);

impl metrics::HistogramFn for Lateness {
    fn record(&self, value: f64) {
        self.0.lock().expect("lock").push(value);
    }
}

struct Recorder(Arc<Lateness>);

impl metrics::Recorder for Recorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        if key.name() == "oidc_dtr_poll_lateness_seconds" {
            metrics::Histogram::from_arc(self.0.clone())
        } else {
            metrics::Histogram::noop()
        }
    }
}

/// Polling at a steady rate on the real clock: lateness.
async fn steady(
    n: usize,
    interval: u64,
    secs: u64,
    file: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let lateness = Arc::new(Lateness::default());
    metrics::set_global_recorder(Recorder(lateness.clone())).expect("one recorder");
    let mut config = OpConfig::default();
    config.interval = Some(interval);
    config.expires_in = Some(86_400);
    let op = MockOp::builder().config(config).start().await?;
    let driver = DriverConfig::default().max_in_flight(64);
    let dir = bench_dir();
    let mut builder = DtrClient::builder();
    if file {
        builder = builder.store(FileStore::open(dir.join("dtr.redb"))?);
    }
    let client = Arc::new(
        builder
            .issuer(op.issuer())
            .client_id(MockOp::CLIENT_ID)
            .client_secret(MockOp::CLIENT_SECRET)
            .redirect_uri("http://127.0.0.1:9/callback")
            .driver_config(driver)
            .build()
            .await?,
    );
    println!(
        "steady: {n} pending, interval {interval} s, {secs} s on the real clock{}",
        if file { ", FileStore" } else { "" }
    );
    let auths = op.seed_pending(&client, n);
    // Taken on over one interval, so that their polls are spread evenly.
    let t = Instant::now();
    let per = Duration::from_secs(interval).as_secs_f64() / n as f64;
    for (i, a) in auths.into_iter().enumerate() {
        let at = Duration::from_secs_f64(per * i as f64);
        if let Some(wait) = at.checked_sub(t.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        client.resume(a, None).await?;
    }
    // One more interval, so that every authentication has polled once
    // (its first state update moves it from the common start time).
    tokio::time::sleep(Duration::from_secs(interval)).await;
    lateness.0.lock().expect("lock").clear();
    let polls0 = client.stats().polls;
    let (disk0, _) = io_written();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let polls = client.stats().polls - polls0;
    let d = t.elapsed().as_secs_f64();
    let (disk, _) = io_written();
    let mut l = std::mem::take(&mut *lateness.0.lock().expect("lock"));
    l.sort_by(f64::total_cmp);
    let q = |p: f64| {
        l.get(((l.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
            * 1e3
    };
    println!(
        "  {polls} polls in {d:.1} s = {:.0} polls/s (due: {:.0}/s)",
        polls as f64 / d,
        n as f64 / interval as f64
    );
    println!(
        "  lateness ms: p50 {:.1}, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1} ({} polls; never negative: a poll is never early)",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        q(1.0),
        l.len()
    );
    if file {
        println!(
            "  store: {:.0} bytes written to disk per poll",
            (disk - disk0) as f64 / polls.max(1) as f64
        );
    }
    client.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The durable store alone: inserts, state updates, finishes.
async fn store_bench(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    const WRITERS: usize = 8192;
    let clock = Arc::new(ManualClock::new(UnixTime::from_secs(1_900_000_000)));
    let mut config = OpConfig::default();
    config.interval = Some(5);
    config.expires_in = Some(86_400);
    let op = MockOp::builder()
        .config(config)
        .clock(clock.clone())
        .start()
        .await?;
    let client = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(MockOp::CLIENT_ID)
        .client_secret(MockOp::CLIENT_SECRET)
        .redirect_uri("http://127.0.0.1:9/callback")
        .clock(clock.clone())
        .build()
        .await?;
    let auths = op.seed_pending(&client, n);
    let records: Vec<Record> = auths
        .into_iter()
        .map(|a| {
            let m = PollMachine::new(&a, PollConfig::default());
            Record::new(a, m)
        })
        .collect();
    let dir = bench_dir();
    let store = FileStore::open(dir.join("store.redb"))?;
    store.bind(op.issuer(), MockOp::CLIENT_ID).await?;
    println!(
        "FileStore, {n} records, {WRITERS} writers at once, in {}",
        dir.display()
    );

    /// Runs `n` writes with `WRITERS` at once; prints the rate and the
    /// bytes per write.
    async fn phase<F>(what: &str, n: usize, mut write: impl FnMut(usize) -> F)
    where
        F: std::future::Future<Output = Result<(), oidc_dtr::error::StoreError>> + Send + 'static,
    {
        let (disk0, wchar0) = io_written();
        let t = Instant::now();
        let mut set: tokio::task::JoinSet<Result<(), oidc_dtr::error::StoreError>> =
            tokio::task::JoinSet::new();
        for i in 0..n {
            if set.len() >= WRITERS {
                set.join_next()
                    .await
                    .expect("a task")
                    .expect("no panic")
                    .expect("written");
            }
            set.spawn(write(i));
        }
        while let Some(r) = set.join_next().await {
            r.expect("no panic").expect("written");
        }
        let d = t.elapsed().as_secs_f64();
        let (disk, wchar) = io_written();
        println!(
            "{what}: {n} in {d:.2} s = {:.0}/s; {:.0} bytes to disk per write ({:.0} bytes through write())",
            n as f64 / d,
            (disk - disk0) as f64 / n as f64,
            (wchar - wchar0) as f64 / n as f64,
        );
    }

    let recs = Arc::new(records);
    let s = store.clone();
    let r = recs.clone();
    phase("durable inserts", n, move |i| {
        let (s, rec) = (s.clone(), r[i].clone());
        async move { s.insert(rec).await }
    })
    .await;

    // Each record polled once, answered `authorization_pending`: the state
    // the driver would write, in the order the polls fall due.
    let t0 = clock.now();
    let updated: Vec<PollMachine> = recs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut m = r.machine.clone();
            let at = t0.saturating_add(Duration::from_secs(5) + Duration::from_micros(i as u64));
            let _ = m.handle::<TokenSet>(Event::Timer, at, &SystemRandom);
            let pending = OAuthError::new(ErrorCode::AuthorizationPending);
            let _ = m.handle::<TokenSet>(
                Event::Response(PollResult::OAuth(pending)),
                at,
                &SystemRandom,
            );
            m
        })
        .collect();
    let updated = Arc::new(updated);
    for round in 1..=2 {
        let (s, r, u) = (store.clone(), recs.clone(), updated.clone());
        phase(&format!("state updates (round {round})"), n, move |i| {
            let (s, id, m) = (s.clone(), r[i].id().clone(), u[i].clone());
            async move { s.update_state(&id, m).await }
        })
        .await;
    }
    let (s, r, u) = (store.clone(), recs.clone(), updated.clone());
    phase("durable finishes (denied)", n, move |i| {
        let (s, id) = (s.clone(), r[i].id().clone());
        let mut m = u[i].clone();
        let _ = m.handle::<TokenSet>(Event::Cancel, t0, &SystemRandom);
        let outcome = StoredOutcome::new(t0, Outcome::Denied { description: None });
        async move { s.finish(&id, m, outcome).await }
    })
    .await;
    store.close().await?;
    let size = std::fs::metadata(dir.join("store.redb"))?.len();
    println!("file size at the end: {:.1} MB", size as f64 / 1e6);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
