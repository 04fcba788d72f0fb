//! The demo: the app and the testkit's mock OP (with its HTML pages for the
//! end user and a reviewer) in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// Where the app keeps its sessions, their signing key and the
    /// verifications' states, so that a restart keeps them (`None`: in
    /// memory only). The mock OP itself keeps nothing: a verification still
    /// pending at a restart is shown as lost.
    pub state_dir: Option<PathBuf>,
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
            state_dir: None,
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

/// Why the demo could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum DemoError {
    /// Another program listens on the app's port already.
    PortInUse {
        /// The port.
        port: u16,
    },
    /// The app could not listen for another reason.
    Listen {
        /// Where it tried.
        addr: SocketAddr,
        /// The system's error.
        source: std::io::Error,
    },
    /// The state directory could not be used.
    StateDir {
        /// The directory.
        dir: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The mock OP or the SDK client could not be set up.
    Setup(Box<dyn std::error::Error + Send + Sync>),
}

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoError::PortInUse { port } => {
                write!(f, "port {port} is in use; pick another with --port")
            }
            DemoError::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            DemoError::StateDir { dir, source } => {
                write!(
                    f,
                    "cannot use the state directory {}: {source}",
                    dir.display()
                )
            }
            DemoError::Setup(e) => write!(f, "cannot start the demo: {e}"),
        }
    }
}

impl std::error::Error for DemoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DemoError::PortInUse { .. } => None,
            DemoError::Listen { source, .. } | DemoError::StateDir { source, .. } => Some(source),
            DemoError::Setup(e) => Some(&**e),
        }
    }
}

fn setup(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> DemoError {
    DemoError::Setup(e.into())
}

/// Starts the mock OP and the app; returns once both listen.
pub async fn start(options: DemoOptions) -> Result<Demo, DemoError> {
    let listener = match tokio::net::TcpListener::bind(options.bind).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(DemoError::PortInUse {
                port: options.bind.port(),
            });
        }
        Err(source) => {
            return Err(DemoError::Listen {
                addr: options.bind,
                source,
            });
        }
    };
    let addr = listener.local_addr().map_err(|source| DemoError::Listen {
        addr: options.bind,
        source,
    })?;
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
        .await
        .map_err(setup)?;

    let client = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .redirect_uri(redirect_uri)
        .notification_endpoint(ping_uri)
        .cancellation(
            CancellationConfig::new(op.url("/df-authentication/cancel").as_str()).map_err(setup)?,
        )
        .notified_poll_cadence(Some(options.notified_cadence))
        .build()
        .await
        .map_err(setup)?;

    let (app, app_options) = match &options.state_dir {
        None => (App::new(client), AppOptions::new(false)),
        Some(dir) => {
            let state_dir = |source| DemoError::StateDir {
                dir: dir.clone(),
                source,
            };
            let app = App::with_state_dir(client, dir).await.map_err(state_dir)?;
            (app, AppOptions::persistent(false, dir).map_err(state_dir)?)
        }
    };
    let router = app.router(app_options);
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
