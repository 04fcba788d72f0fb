//! The demo: the app and the testkit's mock OP (with its HTML pages for the
//! end user and a reviewer) in one process.

use std::net::SocketAddr;
use std::time::Duration;

use oidc_dtr::{DtrClient, client::CancellationConfig};
use oidc_dtr_testkit::{MockOp, OpConfig, RegisteredClient};

use crate::app::{App, AppOptions};

/// The demo's client registration at the mock OP.
pub const CLIENT_ID: &str = "example-rp";
const CLIENT_SECRET: &str = "example-rp-secret";

/// How to run the demo.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DemoOptions {
    /// Where the app listens (port 0 picks a free one).
    pub bind: SocketAddr,
    /// The `interval` the OP sends (the minimum time between polls).
    pub op_interval: Duration,
    /// With pings, the SDK polls only this often as a safety net; a ping
    /// brings the next poll back to the interval.
    pub notified_cadence: Duration,
    /// How long the OP lets a verification run (`expires_in`).
    pub expires_in: Duration,
    /// Progress texts the OP answers, one per poll (the last one repeats).
    pub progress_script: Vec<String>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            op_interval: Duration::from_secs(2),
            notified_cadence: Duration::from_secs(10),
            expires_in: Duration::from_secs(3600),
            progress_script: vec![
                "Your documents were received".into(),
                "Your documents are in the review queue".into(),
                "A reviewer is looking at your documents".into(),
            ],
        }
    }
}

/// A running demo.
#[derive(Debug)]
pub struct Demo {
    /// The mock OP.
    pub op: MockOp,
    /// The app.
    pub app: App,
    /// Where the app listens.
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Demo {
    /// The app's start page.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The OP's reviewer page.
    pub fn review_url(&self) -> String {
        self.op.url("/review").to_string()
    }

    /// Stops the app's server, then the SDK client (its poll driver and
    /// store: [`DtrClient::shutdown`]).
    pub async fn shutdown(self) {
        self.server.abort();
        self.app.client().shutdown().await;
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Starts the mock OP and the app; returns once both listen.
pub async fn start(options: DemoOptions) -> Result<Demo, Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::bind(options.bind).await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let redirect_uri = format!("{base}/callback");
    let ping_uri = format!("{base}/dtr/ping");

    let mut config = OpConfig::default();
    config.interactive_pages = true;
    config.interval = Some(options.op_interval.as_secs().max(1));
    config.expires_in = Some(options.expires_in.as_secs());
    config.progress_script = options.progress_script.clone();
    let op = MockOp::builder()
        .config(config)
        .client(
            RegisteredClient::confidential(CLIENT_ID, CLIENT_SECRET)
                .with_redirect_uri(redirect_uri.clone())
                .with_notification_endpoint(ping_uri.clone()),
        )
        .start()
        .await?;

    let client = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .redirect_uri(redirect_uri)
        .notification_endpoint(ping_uri)
        .cancellation(CancellationConfig::new(
            op.url("/df-authentication/cancel").as_str(),
        )?)
        .notified_poll_cadence(Some(options.notified_cadence))
        .build()
        .await?;

    let app = App::new(client);
    let router = app.router(AppOptions::new(false));
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the app's server stopped");
        }
    });
    Ok(Demo {
        op,
        app,
        addr,
        server,
    })
}
