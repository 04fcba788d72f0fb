//! Unit tests of the parent module.
use super::*;
use http_body_util::Full;
use std::sync::Mutex;

/// Knows one id with token "right"; "done" is finished.
struct FakeSink {
    woken: Mutex<Vec<String>>,
}

impl PingSink for FakeSink {
    fn ping(&self, id: DeferredId, token: Vec<u8>) -> BoxFuture<PingVerdict> {
        let verdict = match (id.secret(), token.as_slice()) {
            ("live", b"right") => {
                self.woken.lock().unwrap().push(id.secret().to_owned());
                PingVerdict::Woken
            }
            ("done", b"right") => PingVerdict::AlreadyFinished,
            _ => PingVerdict::Rejected,
        };
        Box::pin(async move { verdict })
    }

    /// "open" is an IETF authentication without a notification token
    /// whose app opted in.
    fn advisory(&self, id: DeferredId) -> BoxFuture<PingVerdict> {
        let verdict = if id.secret() == "open" {
            self.woken
                .lock()
                .unwrap()
                .push(format!("advisory:{}", id.secret()));
            PingVerdict::Woken
        } else {
            PingVerdict::Rejected
        };
        Box::pin(async move { verdict })
    }
}

fn receiver() -> (PingReceiver, Arc<FakeSink>) {
    let sink = Arc::new(FakeSink {
        woken: Mutex::new(Vec::new()),
    });
    (PingReceiver::new(sink.clone()), sink)
}

fn request(
    method: &str,
    ct: Option<&str>,
    auth: Option<&str>,
    body: &str,
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder().method(method).uri("/dtr/ping");
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

async fn status(
    r: &PingReceiver,
    req: http::Request<Full<Bytes>>,
) -> (u16, http::HeaderMap, Bytes) {
    let resp = r.handle(req).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn every_status() {
    let (r, sink) = receiver();
    let ok = r#"{"deferred_auth_id":"live","extra":1}"#;
    let cases: Vec<(http::Request<Full<Bytes>>, u16)> = vec![
        (request("GET", JSON, Some("Bearer right"), ok), 405),
        (request("PUT", JSON, Some("Bearer right"), ok), 405),
        (request("POST", None, Some("Bearer right"), ok), 415),
        (
            request("POST", Some("text/plain"), Some("Bearer right"), ok),
            415,
        ),
        (
            request("POST", JSON, Some("Bearer right"), &"x".repeat(5000)),
            413,
        ),
        (request("POST", JSON, Some("Bearer right"), "not json"), 400),
        (request("POST", JSON, Some("Bearer right"), "[]"), 400),
        (
            request(
                "POST",
                JSON,
                Some("Bearer right"),
                r#"{"deferred_auth_id":5}"#,
            ),
            400,
        ),
        (
            request("POST", JSON, Some("Bearer right"), r#"{"other":"x"}"#),
            400,
        ),
        (request("POST", JSON, None, ok), 401),
        (request("POST", JSON, Some("Basic right"), ok), 401),
        (request("POST", JSON, Some("Bearer wrong"), ok), 401),
        (
            request(
                "POST",
                JSON,
                Some("Bearer right"),
                r#"{"deferred_auth_id":"unknown"}"#,
            ),
            401,
        ),
        (
            request(
                "POST",
                Some("application/json; charset=utf-8"),
                Some("bearer right"),
                ok,
            ),
            204,
        ),
        (
            request(
                "POST",
                JSON,
                Some("Bearer right"),
                r#"{"deferred_auth_id":"done"}"#,
            ),
            204,
        ),
    ];
    for (req, want) in cases {
        let (got, headers, _) = status(&r, req).await;
        assert_eq!(got, want);
        assert!(!(300..400).contains(&got));
        match got {
            401 => assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer"),
            405 => assert_eq!(headers.get("allow").unwrap(), "POST"),
            _ => {}
        }
    }
    // Only the one valid ping for a live authentication woke anything.
    assert_eq!(*sink.woken.lock().unwrap(), vec!["live".to_owned()]);
}

#[tokio::test]
async fn unknown_id_and_wrong_token_are_byte_identical() {
    let (r, _) = receiver();
    let a = status(
        &r,
        request(
            "POST",
            JSON,
            Some("Bearer wrong"),
            r#"{"deferred_auth_id":"live"}"#,
        ),
    )
    .await;
    let b = status(
        &r,
        request(
            "POST",
            JSON,
            Some("Bearer right"),
            r#"{"deferred_auth_id":"nope"}"#,
        ),
    )
    .await;
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
}

#[tokio::test]
async fn declared_oversize_is_refused_before_reading() {
    let (r, _) = receiver();
    let mut req = request("POST", JSON, Some("Bearer right"), "{}");
    req.headers_mut()
        .insert("content-length", HeaderValue::from_static("999999"));
    assert_eq!(status(&r, req).await.0, 413);
    let r = r.max_body(10);
    assert_eq!(
        status(
            &r,
            request(
                "POST",
                JSON,
                Some("Bearer right"),
                r#"{"deferred_auth_id":"live"}"#
            )
        )
        .await
        .0,
        413
    );
}

#[tokio::test]
async fn works_as_a_tower_service() {
    use tower_service::Service;
    let (mut r, _) = receiver();
    let resp = r
        .call(request(
            "POST",
            JSON,
            Some("Bearer right"),
            r#"{"deferred_auth_id":"live"}"#,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

#[test]
fn bearer_parsing() {
    assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
    assert_eq!(bearer(Some("bearer   abc  ")), Some("abc"));
    assert_eq!(bearer(Some("Bearer ")), None);
    assert_eq!(bearer(Some("Bearerabc")), None);
    assert_eq!(bearer(Some("Basic abc")), None);
    assert_eq!(bearer(None), None);
}

#[test]
fn duplicate_members_are_refused() {
    assert_eq!(
        handle_of(br#"{"deferred_auth_id":"live"}"#),
        Some(("live".to_owned(), Profile::Oidc))
    );
    assert_eq!(
        handle_of(br#"{"deferred_auth_id":"other","deferred_auth_id":"live"}"#),
        None
    );
}

#[test]
fn either_body_key_but_not_both() {
    assert_eq!(
        handle_of(br#"{"deferral_code":"dc","x":1}"#),
        Some(("dc".to_owned(), Profile::Ietf))
    );
    assert_eq!(
        handle_of(br#"{"deferral_code":"dc","deferred_auth_id":"dc"}"#),
        None
    );
    assert_eq!(handle_of(br#"{"deferral_code":""}"#), None);
}

#[tokio::test]
async fn ietf_callbacks_with_and_without_a_bearer() {
    let (r, sink) = receiver();
    // The bearer authenticates whatever the key.
    let with = status(
        &r,
        request(
            "POST",
            JSON,
            Some("Bearer right"),
            r#"{"deferral_code":"live"}"#,
        ),
    )
    .await;
    assert_eq!(with.0, 204);
    // No header at all, IETF key, eligible: advisory 204.
    let advisory = r
        .handle_raw("POST", JSON, None, br#"{"deferral_code":"open"}"#)
        .await;
    assert_eq!(
        (advisory.status, advisory.kind),
        (204, PingReplyKind::Advisory)
    );
    // Not eligible (unknown, or the sink refuses): 401, as any other.
    let unknown = status(
        &r,
        request("POST", JSON, None, r#"{"deferral_code":"nope"}"#),
    )
    .await;
    assert_eq!(unknown.0, 401);
    // The OIDC key never goes the advisory way.
    let oidc = status(
        &r,
        request("POST", JSON, None, r#"{"deferred_auth_id":"open"}"#),
    )
    .await;
    assert_eq!(oidc.0, 401);
    // A header that is not a bearer is not "no header".
    let basic = status(
        &r,
        request("POST", JSON, Some("Basic x"), r#"{"deferral_code":"open"}"#),
    )
    .await;
    assert_eq!(basic.0, 401);
    assert_eq!(
        *sink.woken.lock().unwrap(),
        vec!["live".to_owned(), "advisory:open".to_owned()]
    );
}

#[test]
fn warn_gate_allows_a_burst_per_window_and_counts_the_rest() {
    let t0 = std::time::Instant::now();
    let mut g = WarnGate::default();
    for _ in 0..WARN_BURST {
        assert_eq!(g.admit(t0), Some(0));
    }
    for _ in 0..1000 {
        assert_eq!(g.admit(t0 + std::time::Duration::from_secs(59)), None);
    }
    assert_eq!(g.admit(t0 + WARN_WINDOW), Some(1000));
    assert_eq!(g.admit(t0 + WARN_WINDOW), Some(0));
}

/// Counts WARN events.
struct WarnCounter(std::sync::atomic::AtomicUsize);

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        if *e.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn rejected_pings_do_not_flood_the_log() {
    let counter = Arc::new(WarnCounter(std::sync::atomic::AtomicUsize::new(0)));
    let (r, _) = receiver();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tracing::subscriber::with_default(counter.clone(), || {
        rt.block_on(async {
            for _ in 0..1000 {
                let reply = r
                    .handle_raw(
                        "POST",
                        Some("application/json"),
                        Some("Bearer wrong"),
                        br#"{"deferred_auth_id":"live"}"#,
                    )
                    .await;
                assert_eq!(reply.kind, PingReplyKind::Unauthorized);
            }
        })
    });
    let warns = counter.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=WARN_BURST as usize).contains(&warns),
        "{warns} WARN lines"
    );
}
