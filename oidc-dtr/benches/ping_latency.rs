//! Ping -> validated tokens latency over loopback, against the testkit OP.
//!
//! For each of N pending authentications whose floor has elapsed: the OP
//! approves, then pings the RP's receiver (a bare hyper server); the clock
//! stops when `DtrClient::wait` returns the validated tokens. That is one
//! ping round trip, one driver wake-up, one token request, the OP issuing
//! and signing an ES256 ID token, and the SDK validating it (cached JWKS).
//!
//! ```sh
//! cargo bench -p oidc-dtr --bench ping_latency
//! ```

use std::time::{Duration, Instant};

use oidc_dtr::Outcome;
use oidc_dtr::jose::Algorithm;
use oidc_dtr::{CallbackResponse, DtrClient, tokens::ValidationOptions};
use oidc_dtr_testkit::{MockOp, OpConfig, RegisteredClient};

const N: usize = 400;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ping_url = format!("http://{}/dtr/ping", listener.local_addr()?);
    let mut config = OpConfig::default();
    config.interval = Some(1);
    config.send_pings = false; // the bench sends each ping itself, timed
    let op = MockOp::builder()
        .config(config)
        .signing_alg(Algorithm::ES256)
        .client(
            RegisteredClient::confidential("rp", "rp-secret").with_notification_endpoint(&ping_url),
        )
        .start()
        .await?;
    let client = DtrClient::builder()
        .issuer(op.issuer())
        .client_id("rp")
        .client_secret("rp-secret")
        .redirect_uri("http://127.0.0.1:9/callback")
        .notification_endpoint(&ping_url)
        .validation(ValidationOptions::default().algorithms([Algorithm::ES256]))
        .build()
        .await?;
    oidc_dtr_testkit::serve_ping_receiver(listener, client.ping_receiver());

    // Set up the authentications (not timed), then let the 1 s floor pass.
    let mut auths = Vec::with_capacity(N + 20);
    for _ in 0..N + 20 {
        let (url, pending) = client.authorize().build()?;
        let back = op.browse(&url).await?;
        let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, back.query())? else {
            return Err("expected a deferred_code".into());
        };
        auths.push(client.exchange(ack).await?);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut latencies = Vec::with_capacity(N);
    let mut ping_only = Vec::with_capacity(N);
    for (i, auth) in auths.iter().enumerate() {
        op.approve(auth.id()); // pings are off: nothing is sent yet
        let t0 = Instant::now();
        let status = op.send_ping(auth.id()).await;
        let t_ping = t0.elapsed();
        let outcome = client.wait(auth.id()).await?;
        let total = t0.elapsed();
        assert_eq!(status, Some(204));
        assert!(matches!(outcome, Outcome::Tokens(_)));
        if i >= 20 {
            // The first 20 warm up connections and the JWKS cache.
            latencies.push(total);
            ping_only.push(t_ping);
        }
    }
    latencies.sort();
    ping_only.sort();
    println!("ping -> validated tokens, loopback, {N} authentications, ES256:");
    for (name, v) in [
        ("ping -> tokens", &latencies),
        ("ping round trip alone", &ping_only),
    ] {
        println!(
            "  {name:22} p50 {:>7.3} ms   p90 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms",
            percentile(v, 0.50).as_secs_f64() * 1e3,
            percentile(v, 0.90).as_secs_f64() * 1e3,
            percentile(v, 0.99).as_secs_f64() * 1e3,
            v.last().map(Duration::as_secs_f64).unwrap_or(0.0) * 1e3,
        );
    }
    Ok(())
}
