//! `oidc-dtr-web`: the demo. Starts the mock OP and the app, prints the URL
//! to open.
//!
//! ```sh
//! cargo run -p oidc-dtr-web                # http://127.0.0.1:8080/
//! cargo run -p oidc-dtr-web -- --port 0    # any free port
//! cargo run -p oidc-dtr-web -- --help
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use oidc_dtr_web::demo::{self, DemoOptions};

/// The reference Relying-Party web app for the OpenID Connect Deferred Token
/// Response flow, run against a mock OpenID Provider (with a reviewer page to
/// approve or deny verifications).
#[derive(Debug, Parser)]
#[command(name = "oidc-dtr-web", version)]
struct Args {
    /// Where the app listens on 127.0.0.1 (0 picks a free port).
    #[arg(long, value_name = "N", default_value_t = 8080)]
    port: u16,
    /// The mock OP's minimum time between polls, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    interval: u64,
    /// How often the SDK polls when no ping arrives, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    cadence: u64,
    /// How long the mock OP lets a verification run before it expires, in
    /// seconds (e.g. 30 to see the "expired" page).
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    expires_in: u64,
    /// Keep the sessions (and their signing key) and the verifications'
    /// states in this directory, so that a restart keeps them. Without it,
    /// everything is in memory.
    #[arg(long, value_name = "DIR", env = "OIDC_DTR_WEB_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

impl Args {
    fn options(self) -> DemoOptions {
        let mut o = DemoOptions::default();
        o.bind = SocketAddr::from(([127, 0, 0, 1], self.port));
        o.op_interval = Duration::from_secs(self.interval);
        o.notified_cadence = Duration::from_secs(self.cadence);
        o.expires_in = Duration::from_secs(self.expires_in);
        o.state_dir = self.state_dir;
        o
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,oidc_dtr=info".into()),
        )
        .init();
    let demo = match demo::start(args.options()).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("oidc-dtr-web: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("Open {}", demo.url());
    println!("Reviewer page (the OP): {}", demo.review_url());
    println!("Ctrl-C stops both.");
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("oidc-dtr-web: cannot wait for Ctrl-C: {e}");
    }
    demo.shutdown().await;
    ExitCode::SUCCESS
}
