//! The OP's JWK Set served from a port of its own, which a test closes and
//! opens: while it is closed, nothing listens there and the client's JWKS
//! fetches fail with a refused connection (a real network failure, where
//! [`OpConfig::jwks_unavailable`](crate::OpConfig::jwks_unavailable) only
//! answers 503).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::MockOp;

/// A port on `127.0.0.1` that serves a [`MockOp`]'s JWK Set (the document
/// `/jwks` serves, rotations included) when open, and refuses connections
/// when closed. Each answer closes its connection, so nothing pooled
/// survives a [`close`](Self::close).
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use oidc_dtr_testkit::{JwksPort, MockOp};
/// let op = MockOp::start().await.unwrap();
/// // Before the client discovers the OP: its metadata names the port.
/// let port = JwksPort::new(&op).await?;
/// // ... the client fails to fetch keys ...
/// port.open().await?;
/// // ... now it succeeds ...
/// port.close().await;
/// # Ok(()) }
/// ```
pub struct JwksPort {
    addr: SocketAddr,
    op: MockOp,
    server: Mutex<Option<JoinHandle<()>>>,
    served: Arc<AtomicUsize>,
}

impl std::fmt::Debug for JwksPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksPort")
            .field("addr", &self.addr)
            .field("served", &self.served())
            .finish()
    }
}

impl JwksPort {
    /// Reserves a free port and makes `op` advertise it as its `jwks_uri`
    /// (so create it before the client reads the OP's metadata). The port
    /// starts **closed**.
    pub async fn new(op: &MockOp) -> std::io::Result<JwksPort> {
        let addr = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        let port = JwksPort {
            addr,
            op: op.clone(),
            server: Mutex::new(None),
            served: Arc::new(AtomicUsize::new(0)),
        };
        let uri = port.url();
        op.configure(|c| c.jwks_uri = Some(uri));
        Ok(port)
    }

    /// The `jwks_uri`.
    pub fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    /// JWK Set documents served so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Starts listening (no-op if open already).
    pub async fn open(&self) -> std::io::Result<()> {
        let mut server = self.server.lock().await;
        if server.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr).await?;
        let op = self.op.clone();
        let served = self.served.clone();
        *server = Some(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // One connection at a time, in this task: aborting it
                // closes the listener and every connection at once.
                if answer(stream, &op).await {
                    served.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
        Ok(())
    }

    /// Stops listening: from its return on, connections are refused.
    pub async fn close(&self) {
        if let Some(task) = self.server.lock().await.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Reads one request head and answers with the JWK Set; whether it did.
async fn answer(mut stream: TcpStream, op: &MockOp) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if head.len() > 64 * 1024 {
            return false;
        }
    }
    let body = op.jwks_json().to_string();
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=300\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let ok = stream.write_all(resp.as_bytes()).await.is_ok();
    let _ = stream.shutdown().await;
    ok
}
