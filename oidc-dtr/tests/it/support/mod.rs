//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a canned server does with one connection.
#[derive(Clone)]
pub enum Canned {
    /// Write these bytes and close.
    Raw(Vec<u8>),
    /// Close without answering.
    Close,
    /// Wait this long, then write the bytes.
    Delay(Duration, Vec<u8>),
}

/// A server that answers each connection with the next canned reply (the
/// last one repeats) and records the raw requests.
pub struct CannedServer {
    pub base: String,
    pub requests: Arc<Mutex<Vec<String>>>,
}

pub fn http_response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    out
}

pub fn json_response(status: &str, body: &str) -> Vec<u8> {
    http_response(
        status,
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
}

impl CannedServer {
    pub async fn start(replies: Vec<Canned>) -> CannedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        tokio::spawn(async move {
            let mut i = 0usize;
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let reply = replies[i.min(replies.len() - 1)].clone();
                i += 1;
                let log = log.clone();
                tokio::spawn(async move {
                    let req = read_request(&mut sock).await;
                    log.lock().unwrap().push(req);
                    match reply {
                        Canned::Raw(b) => {
                            let _ = sock.write_all(&b).await;
                        }
                        Canned::Delay(d, b) => {
                            tokio::time::sleep(d).await;
                            let _ = sock.write_all(&b).await;
                        }
                        Canned::Close => {}
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        CannedServer { base, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub mod flow {
    //! A client and a mock OP on one virtual clock, and helpers to run the
    //! flow and let virtual time pass.

    use std::sync::Arc;
    use std::time::Duration;

    use oidc_dtr::Outcome;
    use oidc_dtr::TokenSet;
    use oidc_dtr::{
        CallbackResponse, DeferredAuthentication, DeferredId, DtrClient, DtrClientBuilder,
    };
    use oidc_dtr::{
        UnixTime,
        time::{Clock, ManualClock},
    };
    use oidc_dtr_testkit::{MockOp, OpConfig};

    pub const REDIRECT: &str = "http://127.0.0.1:9/callback";
    pub const T0: UnixTime = UnixTime::from_millis(1_900_000_000_000);

    pub struct Setup {
        pub op: MockOp,
        pub client: DtrClient,
        pub clock: Arc<ManualClock>,
    }

    pub async fn op(config: OpConfig, clock: &Arc<ManualClock>) -> MockOp {
        MockOp::builder()
            .config(config)
            .clock(clock.clone())
            .start()
            .await
            .unwrap()
    }

    /// A confidential client (Basic) against a fresh OP, both on `clock`.
    pub async fn setup(config: OpConfig) -> Setup {
        setup_with(config, |b| b).await
    }

    pub async fn setup_with(
        config: OpConfig,
        f: impl FnOnce(DtrClientBuilder) -> DtrClientBuilder,
    ) -> Setup {
        let clock = Arc::new(ManualClock::new(T0));
        let op = op(config, &clock).await;
        let b = DtrClient::builder()
            .issuer(op.issuer())
            .client_id(MockOp::CLIENT_ID)
            .client_secret(MockOp::CLIENT_SECRET)
            .redirect_uri(REDIRECT)
            .clock(clock.clone());
        let client = f(b).build().await.unwrap();
        Setup { op, client, clock }
    }

    /// authorize → browser → callback → exchange.
    pub async fn start(op: &MockOp, client: &DtrClient) -> DeferredAuthentication {
        let (url, pending) = client.authorize().build().unwrap();
        let cb = op.browse(&url).await.unwrap();
        let ack = match client.callback(&pending, cb.query()).unwrap() {
            CallbackResponse::Acknowledgment(a) => a,
            other => panic!("{other:?}"),
        };
        client.exchange(ack).await.unwrap()
    }

    /// An OP config serving the IETF profile only.
    pub fn ietf_config() -> OpConfig {
        let mut c = OpConfig::default();
        c.profiles = oidc_dtr_testkit::OpProfiles::Ietf;
        c
    }

    /// authorize → browser → callback (a plain `code`) → the token request
    /// with `completion_mode=deferred`.
    pub async fn redeem(op: &MockOp, client: &DtrClient) -> oidc_dtr::Redemption {
        let (url, pending) = client.authorize().build().unwrap();
        let cb = op.browse(&url).await.unwrap();
        let code = match client.callback(&pending, cb.query()).unwrap() {
            CallbackResponse::Code(c) => c,
            other => panic!("{other:?}"),
        };
        client.redeem_code(code).await.unwrap()
    }

    /// [`redeem`], expecting a deferral.
    pub async fn start_ietf(op: &MockOp, client: &DtrClient) -> DeferredAuthentication {
        match redeem(op, client).await {
            oidc_dtr::Redemption::Deferred(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    /// Starts an authentication under the client's profile.
    pub async fn start_any(op: &MockOp, client: &DtrClient) -> DeferredAuthentication {
        match client.profile() {
            oidc_dtr::Profile::Ietf => start_ietf(op, client).await,
            _ => start(op, client).await,
        }
    }

    /// Both profiles: (OP config switch, client profile).
    pub fn profiles() -> [(oidc_dtr_testkit::OpProfiles, oidc_dtr::Profile); 2] {
        [
            (oidc_dtr_testkit::OpProfiles::Oidc, oidc_dtr::Profile::Oidc),
            (oidc_dtr_testkit::OpProfiles::Ietf, oidc_dtr::Profile::Ietf),
        ]
    }

    /// The token requests that polled (either profile's handle).
    pub fn poll_requests(op: &MockOp) -> Vec<oidc_dtr_testkit::LoggedRequest> {
        op.requests_to(oidc_dtr_testkit::Endpoint::Token)
            .into_iter()
            .filter(|r| r.param("deferred_auth_id").is_some() || r.param("deferral_code").is_some())
            .collect()
    }

    /// Lets the driver and the OP work at the current virtual time.
    pub async fn settle() {
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }

    /// Like [`settle`], then waits (real time) until the client has no
    /// request in flight, so that virtual time never moves while the OP is
    /// answering: the tests stay exact however slow the machine is.
    pub async fn settle_for(client: &DtrClient) {
        settle().await;
        for _ in 0..5000 {
            if client.is_idle().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("the poll engine stayed busy for seconds");
    }

    /// Advances virtual time in `step`s until the authentication ends (or
    /// `max` virtual time has passed); returns the outcome.
    pub async fn run_to_outcome(
        s: &Setup,
        id: &DeferredId,
        step: Duration,
        max: Duration,
    ) -> Outcome<TokenSet> {
        let until = s.clock.now().saturating_add(max);
        loop {
            settle_for(&s.client).await;
            if s.client.poll_status(id).await.is_some_and(|st| st.finished) {
                return s.client.wait(id).await.unwrap();
            }
            assert!(
                s.clock.now() < until,
                "no outcome within {max:?} of virtual time"
            );
            s.clock.advance(step);
        }
    }

    /// Advances virtual time by `d` in `step`s.
    pub async fn pass(s: &Setup, d: Duration, step: Duration) {
        let until = s.clock.now().saturating_add(d);
        while s.clock.now() < until {
            s.clock.advance(step);
            settle_for(&s.client).await;
        }
    }
}

pub mod rp {
    //! A minimal RP notification endpoint: the SDK's ping receiver on a bare
    //! hyper server (no web framework).

    use oidc_dtr::ping::PingReceiver;
    use tokio::net::TcpListener;

    /// Binds a port first, so the client can be configured with the URL
    /// before its receiver exists.
    pub async fn bind() -> (TcpListener, String) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/dtr/ping", l.local_addr().unwrap());
        (l, url)
    }

    pub fn serve(listener: TcpListener, receiver: PingReceiver) {
        oidc_dtr_testkit::serve_ping_receiver(listener, receiver);
    }
}

/// A fresh path in the temporary directory, removed when dropped.
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    pub fn new(name: &str) -> TempPath {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        TempPath(std::env::temp_dir().join(format!(
            "oidc-dtr-{name}-{}-{n}-{nanos}.redb",
            std::process::id()
        )))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The DPoP `ath` of an access token (RFC 9449 §4.2), computed here
/// independently of the SDK.
pub fn ath(access_token: &str) -> String {
    use base64::Engine as _;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}
