//! `oidc-dtr-web`: the demo. Starts the mock OP and the app, prints the URL
//! to open.
//!
//! ```sh
//! cargo run -p oidc-dtr-web                # http://127.0.0.1:8080/
//! cargo run -p oidc-dtr-web -- --port 0    # any free port
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use oidc_dtr_web::demo::{self, DemoOptions};

fn usage() -> ! {
    eprintln!(
        "usage: oidc-dtr-web [--port N] [--interval SECS] [--cadence SECS]\n\
         \n  --port N          where the app listens on 127.0.0.1 (default 8080; 0 = any)\
         \n  --interval SECS   the OP's minimum time between polls (default 2)\
         \n  --cadence SECS    how often the SDK polls without a ping (default 10)"
    );
    std::process::exit(2)
}

fn parse_args() -> DemoOptions {
    let mut o = DemoOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match a.as_str() {
            "--port" => o.bind = SocketAddr::from(([127, 0, 0, 1], num() as u16)),
            "--interval" => o.op_interval = Duration::from_secs(num()),
            "--cadence" => o.notified_cadence = Duration::from_secs(num()),
            _ => usage(),
        }
    }
    o
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,oidc_dtr=info".into()),
        )
        .init();
    let demo = demo::start(parse_args()).await?;
    println!("Open {}", demo.url());
    println!("Reviewer page (the OP): {}", demo.review_url());
    println!("Ctrl-C stops both.");
    tokio::signal::ctrl_c().await?;
    demo.shutdown().await;
    Ok(())
}
