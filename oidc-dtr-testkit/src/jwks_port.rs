//! The OP's JWK Set served from a port of its own, which a test closes and
//! opens: while it is closed, nothing listens there and the client's JWKS
//! fetches fail with a refused connection (a real network failure, where
//! [`OpConfig::jwks_unavailable`](crate::OpConfig::jwks_unavailable) only
//! answers 503).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
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
/// port.close().await?;
/// # Ok(()) }
/// ```
pub struct JwksPort {
    addr: SocketAddr,
    op: MockOp,
    state: Mutex<PortState>,
    served: Arc<AtomicUsize>,
}

/// Closed, the port stays bound by a socket that does not listen: the
/// kernel refuses connections to it, and no other socket (an outgoing
/// connection's ephemeral port, another test's listener) can take it
/// before it opens again.
enum PortState {
    Closed(TcpSocket),
    Open(JoinHandle<()>),
    /// Only while `open` holds the lock.
    Switching,
}

/// A socket bound to `addr` (any free port for port 0) that does not listen.
fn reserve(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    // Reopening after `close` binds again while the old connections may
    // still be in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
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
        let socket = reserve(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = socket.local_addr()?;
        let port = JwksPort {
            addr,
            op: op.clone(),
            state: Mutex::new(PortState::Closed(socket)),
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
        let mut state = self.state.lock().await;
        let socket = match std::mem::replace(&mut *state, PortState::Switching) {
            PortState::Closed(socket) => socket,
            open => {
                *state = open;
                return Ok(());
            }
        };
        // The bound socket becomes the listener: the port is never free.
        let listener = match socket.listen(1024) {
            Ok(l) => l,
            Err(e) => {
                *state = PortState::Closed(reserve(self.addr)?);
                return Err(e);
            }
        };
        let op = self.op.clone();
        let served = self.served.clone();
        *state = PortState::Open(tokio::spawn(async move {
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

    /// Stops listening: from its return on, connections are refused. The
    /// port is bound again at once (without listening), so it stays this
    /// test's; that bind is the only thing that can fail.
    pub async fn close(&self) -> std::io::Result<()> {
        let mut state = self.state.lock().await;
        match std::mem::replace(&mut *state, PortState::Switching) {
            PortState::Open(task) => {
                task.abort();
                let _ = task.await;
                *state = PortState::Closed(reserve(self.addr)?);
            }
            closed => *state = closed,
        }
        Ok(())
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
