//! HTTP plumbing of the mock OP: a hyper/1 server on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::op::{self, OpState};

/// Largest request body the mock OP reads.
const MAX_REQUEST_BODY: usize = 1024 * 1024;

/// A request as the OP logic sees it.
pub(crate) struct Incoming {
    pub method: http::Method,
    pub path: String,
    pub query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

pub(crate) async fn bind() -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

pub(crate) fn spawn(
    listener: TcpListener,
    state: Arc<Mutex<OpState>>,
    mut shutdown: oneshot::Receiver<()>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            let state = state.clone();
                            async move { handle(state, req).await }
                        });
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                    });
                }
            }
        }
    });
}

async fn handle(
    state: Arc<Mutex<OpState>>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, op::Dropped> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let mut r = http::Response::new(Full::new(Bytes::new()));
            *r.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
            return Ok(r);
        }
    };
    let incoming = Incoming {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts.headers,
        body,
    };
    let poll = deferred_poll_id(&incoming);
    let starts_deferral = poll.is_none()
        && incoming.method == http::Method::POST
        && (incoming.path == "/token" || incoming.path == "/device_authorization");
    let _flight = poll.map(|id| {
        op::flight_begin(&state, &id);
        FlightGuard {
            state: state.clone(),
            id,
        }
    });
    let latency = {
        let st = op::lock(&state);
        if _flight.is_some() {
            st.config.poll_latency
        } else if starts_deferral {
            st.config.exchange_latency
        } else {
            None
        }
    };
    let (plan, answered) = op::route(&state, incoming);
    // The strict interval counts from the moment the answer leaves (after
    // the latency), also when the client went away meanwhile.
    let _answered = answered.map(|key| AnswerGuard {
        state: state.clone(),
        key,
    });
    if let Some(d) = latency {
        tokio::time::sleep(d).await;
    }
    op::finish(plan).await
}

/// Records when an answer the strict interval counts from left.
struct AnswerGuard {
    state: Arc<Mutex<OpState>>,
    key: String,
}

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        op::answer_left(&self.state, &self.key);
    }
}

/// Ends a poll's flight when its answer is produced or the client went
/// away (the future is dropped).
struct FlightGuard {
    state: Arc<Mutex<OpState>>,
    id: String,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        op::flight_end(&self.state, &self.id);
    }
}

/// The `deferred_auth_id` (or IETF `deferral_code`) of a deferred poll to
/// the token endpoint.
fn deferred_poll_id(req: &Incoming) -> Option<String> {
    if req.method != http::Method::POST || req.path != "/token" {
        return None;
    }
    let params = op::parse_params(&req.body).ok()?;
    match op::param(&params, "grant_type")? {
        super::GRANT_TYPE_DEFERRED => op::param(&params, "deferred_auth_id").map(str::to_owned),
        super::GRANT_TYPE_IETF_DEFERRED => op::param(&params, "deferral_code").map(str::to_owned),
        _ => None,
    }
}

/// Serves a ping receiver, one task per connection.
pub(crate) fn serve_receiver(listener: TcpListener, receiver: oidc_dtr::ping::PingReceiver) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let receiver = receiver.clone();
                    async move { Ok::<_, std::convert::Infallible>(receiver.handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
