//! Load: many pending authentications driven by one client — one driver
//! task, one timer queue — against the testkit OP, on a virtual clock.
//!
//! Reports the memory each pending authentication costs the client, how fast
//! authentications are taken on, and how fast a round of polls goes through
//! the driver and over loopback HTTP when all of them fall due at once.
//!
//! ```sh
//! cargo run --release --example load --features testkit            # 100 000
//! cargo run --release --example load --features testkit -- 20000   # fewer
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use oidc_dtr::Algorithm;
use oidc_dtr::DriverConfig;
use oidc_dtr::{DtrClient, ValidationOptions};
use oidc_dtr::{ManualClock, UnixTime};
use oidc_dtr_testkit::{AutoApprove, Endpoint, MockOp, OpConfig};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
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
    let mut driver = DriverConfig::default();
    driver.max_in_flight = 64;
    driver.event_capacity = 16;
    let client = DtrClient::builder()
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
    let auths = op.seed_pending(&client, n);
    let ids: Vec<_> = auths.iter().map(|a| a.id().clone()).collect();
    let before = live();
    let t = Instant::now();
    for a in auths {
        client.resume(a, None).await?;
    }
    let track = t.elapsed();
    let (pending, _) = client.pending_count().await;
    assert_eq!(pending, n);
    let after = live();
    // `ids` is still alive on both sides of the measurement; the seeded
    // authentications moved into the driver.
    let per = (after - before) as f64 / n as f64;
    println!(
        "taken on: {n} in {:.2} s ({:.0}/s)",
        track.as_secs_f64(),
        n as f64 / track.as_secs_f64()
    );
    println!("memory per pending authentication (client side): {per:.0} bytes");

    for (round, expect) in [(1, "authorization_pending"), (2, "tokens")] {
        let target = round * n;
        clock.advance(Duration::from_secs(60));
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
    }
    let outcome = client.wait(&ids[n / 2]).await?;
    println!("a sample outcome: {}", outcome.kind());
    Ok(())
}
