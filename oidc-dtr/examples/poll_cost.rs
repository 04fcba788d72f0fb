//! The client's own cost of one poll over loopback HTTP, against the
//! testkit OP: heap allocations, bytes allocated and CPU time per poll, for
//! an `authorization_pending` round and a tokens round (ID token
//! validation included: ES256 by default, RS256 with a second argument
//! `RS256`, the ES256 verification alone being about half of that round).
//!
//! The client runs on the main thread (a current-thread runtime: driver,
//! HTTP connections, store); the OP runs on a runtime of its own, on
//! another thread, so that none of its work is counted. Allocations are
//! counted on the client thread only, CPU time is the client thread's
//! (`/proc/thread-self/schedstat`), split into user and kernel time
//! (`getrusage(RUSAGE_THREAD)`, on Linux): over loopback the kernel's
//! share (the TCP send, which also runs the receiving side's stack, the
//! receive, the readiness waits) is a floor the client cannot remove.
//!
//! ```sh
//! cargo run --release -p oidc-dtr --example poll_cost -- 5000
//! cargo run --release -p oidc-dtr --example poll_cost -- 5000 RS256
//! ```
//!
//! Instructions per poll (no hardware counters needed): run it under
//! callgrind, collecting only inside the two measured rounds, and divide
//! the inclusive cost of each round by the number of polls:
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/poll_cost.cg \
//!     --toggle-collect='poll_cost::round_*' \
//!     target/release/examples/poll_cost 1000
//! callgrind_annotate --inclusive=yes /tmp/poll_cost.cg | grep 'poll_cost::round_'
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use oidc_dtr::DtrClient;
use oidc_dtr::jose::Algorithm;
use oidc_dtr::poll::DriverConfig;
use oidc_dtr::time::ManualClock;
use oidc_dtr::tokens::ValidationOptions;
use oidc_dtr::{UnixTime, time::Clock as _};
use oidc_dtr_testkit::{AutoApprove, Endpoint, MockOp, OpConfig};

/// Counts the allocations made on threads that asked for it.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNT_HERE: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    if COUNT_HERE.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// A global allocator is `unsafe` by nature; this one only counts and
// forwards every call to the system allocator unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// User and kernel CPU time of the calling thread, in nanoseconds (Linux;
/// zeros elsewhere).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn thread_user_sys_ns() -> (u64, u64) {
    // SAFETY: `getrusage` only writes the `rusage` it is handed.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return (0, 0);
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    (ns(ru.ru_utime), ns(ru.ru_stime))
}

#[cfg(not(target_os = "linux"))]
fn thread_user_sys_ns() -> (u64, u64) {
    (0, 0)
}

/// CPU time of the calling thread, in nanoseconds (Linux; zero elsewhere).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Setup {
    op: MockOp,
    clock: Arc<ManualClock>,
    client: DtrClient,
    n: usize,
}

/// Advances the clock past the interval and waits until the client has
/// sent `round * n` polls and handled every answer.
async fn run_round(s: &Setup, round: usize) {
    let target = round * s.n;
    s.clock.advance(Duration::from_secs(60));
    loop {
        let st = s.client.stats();
        if s.op.request_count(Endpoint::Token) >= target
            && st.polls as usize >= target
            && st.in_flight == 0
            && st.store_queue_depth == 0
            && (round == 1 || st.pending == 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// What one round cost the client thread.
struct Cost {
    allocs: u64,
    bytes: u64,
    cpu_ns: u64,
    user_ns: u64,
    sys_ns: u64,
}

/// One measured round on the client thread.
fn measure(rt: &tokio::runtime::Runtime, s: &Setup, round: usize) -> Cost {
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let (u0, k0) = thread_user_sys_ns();
    let t0 = thread_cpu_ns();
    COUNT_HERE.with(|c| c.set(true));
    if round == 1 {
        round_pending(rt, s);
    } else {
        round_tokens(rt, s);
    }
    COUNT_HERE.with(|c| c.set(false));
    let cpu_ns = thread_cpu_ns() - t0;
    let (u1, k1) = thread_user_sys_ns();
    Cost {
        allocs: ALLOCS.load(Ordering::Relaxed) - a0,
        bytes: BYTES.load(Ordering::Relaxed) - b0,
        cpu_ns,
        user_ns: u1 - u0,
        sys_ns: k1 - k0,
    }
}

/// The `authorization_pending` round (a separate symbol for callgrind).
#[inline(never)]
fn round_pending(rt: &tokio::runtime::Runtime, s: &Setup) {
    rt.block_on(run_round(s, 1));
}

/// The tokens round (a separate symbol for callgrind).
#[inline(never)]
fn round_tokens(rt: &tokio::runtime::Runtime, s: &Setup) {
    rt.block_on(run_round(s, 2));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let alg = match std::env::args().nth(2).as_deref() {
        None | Some("ES256") => Algorithm::ES256,
        Some("RS256") => Algorithm::RS256,
        Some(other) => return Err(format!("unknown algorithm {other} (ES256 or RS256)").into()),
    };
    let clock = Arc::new(ManualClock::new(UnixTime::from_secs(1_900_000_000)));

    // The OP on a runtime and thread of its own.
    let op_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("mock-op")
        .enable_all()
        .build()?;
    let mut config = OpConfig::default();
    config.interval = Some(60);
    config.expires_in = Some(86_400);
    config.auto_approve = AutoApprove::AfterPolls(2);
    let op = op_rt.block_on(
        MockOp::builder()
            .config(config)
            .clock(clock.clone())
            .signing_alg(alg)
            .start(),
    )?;

    // The client on this thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = rt.block_on(
        DtrClient::builder()
            .issuer(op.issuer())
            .client_id(MockOp::CLIENT_ID)
            .client_secret(MockOp::CLIENT_SECRET)
            .redirect_uri("http://127.0.0.1:9/callback")
            .clock(clock.clone())
            .validation(ValidationOptions::default().algorithms([alg]))
            .driver_config(DriverConfig::default().max_in_flight(64))
            .build(),
    )?;
    let auths = op.seed_pending(&client, n);
    rt.block_on(async {
        for a in auths {
            client.resume(a, None).await?;
        }
        Ok::<_, oidc_dtr::Error>(())
    })?;
    let s = Setup {
        op,
        clock,
        client,
        n,
    };
    let _ = s.clock.now();
    println!("{n} authentications, client on one thread, the OP on another");
    let tokens = format!("tokens ({} validation)", alg.as_str());
    for (round, what) in [(1, "authorization_pending"), (2, tokens.as_str())] {
        let c = measure(&rt, &s, round);
        let per = |x: u64| x as f64 / n as f64;
        let kernel_share = c.sys_ns as f64 / (c.user_ns + c.sys_ns).max(1) as f64;
        println!(
            "round {round} {what}: {:.1} allocations, {:.0} bytes allocated, {:.1} µs client CPU per poll \
             (user {:.1} µs, kernel {:.1} µs: {:.0} % kernel)",
            per(c.allocs),
            per(c.bytes),
            per(c.cpu_ns) / 1e3,
            per(c.cpu_ns) / 1e3 * (1.0 - kernel_share),
            per(c.cpu_ns) / 1e3 * kernel_share,
            kernel_share * 100.0,
        );
    }
    rt.block_on(s.client.shutdown());
    drop(op_rt);
    Ok(())
}
