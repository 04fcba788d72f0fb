//! The HTTP edge against hostile or broken servers: redirects, HTML error
//! pages, oversized and non-JSON bodies, resets, timeouts.

use std::time::Duration;

use crate::support::{Canned, CannedServer, http_response, json_response};
use oidc_dtr::error::{ErrorCode, HttpError, RetryAfter, TransportErrorKind};
use oidc_dtr::{
    Acknowledgment, CallbackResponse, DtrClient, Error, ProviderMetadata, client::HttpConfig,
};

async fn client_for(token_server: &CannedServer, http: HttpConfig) -> DtrClient {
    let md = ProviderMetadata::new(
        "https://op.example",
        "https://op.example/authorize".parse().unwrap(),
        token_server.url("/token").parse().unwrap(),
    )
    .with_response_types(["deferred_code"])
    .with_grant_types(["urn:openid:params:grant-type:deferred"]);
    DtrClient::builder()
        .metadata(md)
        .client_id("client")
        .client_secret("secret")
        .redirect_uri("https://rp.example/cb")
        .http_config(http)
        .build()
        .await
        .unwrap()
}

fn ack(client: &DtrClient) -> Acknowledgment {
    let (_url, pending) = client.authorize().build().unwrap();
    let q = format!(
        "deferred_code=abc&state={}&iss=https%3A%2F%2Fop.example",
        pending.state().secret()
    );
    match client.callback(&pending, &q).unwrap() {
        CallbackResponse::Acknowledgment(a) => a,
        other => panic!("{other:?}"),
    }
}

async fn exchange_with(
    replies: Vec<Canned>,
    http: HttpConfig,
) -> (
    Result<oidc_dtr::DeferredAuthentication, Error>,
    CannedServer,
) {
    let server = CannedServer::start(replies).await;
    let client = client_for(&server, http).await;
    let r = client.exchange(ack(&client)).await;
    (r, server)
}

#[tokio::test]
async fn success_through_the_edge() {
    let (r, server) = exchange_with(
        vec![Canned::Raw(json_response(
            "200 OK",
            r#"{"deferred_auth_id":"id-1","interval":7}"#,
        ))],
        HttpConfig::default(),
    )
    .await;
    let auth = r.unwrap();
    assert_eq!(auth.interval().as_secs(), 7);
    let req = server.requests.lock().unwrap()[0].to_ascii_lowercase();
    assert!(req.starts_with("post /token "), "{req}");
    assert!(req.contains("accept: application/json"), "{req}");
}

#[tokio::test]
async fn a_302_from_the_token_endpoint_is_an_error_and_not_followed() {
    let target = CannedServer::start(vec![Canned::Raw(json_response(
        "200 OK",
        r#"{"deferred_auth_id":"x"}"#,
    ))])
    .await;
    let location = target.url("/steal");
    let (r, _server) = exchange_with(
        vec![Canned::Raw(http_response(
            "302 Found",
            &[("location", &location)],
            b"",
        ))],
        HttpConfig::default(),
    )
    .await;
    match r {
        Err(Error::Http(HttpError::Redirect { status, .. })) => assert_eq!(status.as_u16(), 302),
        other => panic!("{other:?}"),
    }
    assert!(
        target.requests.lock().unwrap().is_empty(),
        "the redirect was followed"
    );
}

#[tokio::test]
async fn html_error_page() {
    let page = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    let (r, _) = exchange_with(
        vec![Canned::Raw(http_response(
            "502 Bad Gateway",
            &[("content-type", "text/html")],
            page,
        ))],
        HttpConfig::default(),
    )
    .await;
    let err = r.unwrap_err();
    assert!(err.is_retryable());
    match err {
        Error::Http(HttpError::Status {
            status,
            body_preview,
            content_type,
            ..
        }) => {
            assert_eq!(status.as_u16(), 502);
            assert!(body_preview.contains("502 Bad Gateway"));
            assert_eq!(content_type.as_deref(), Some("text/html"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn throttled_with_retry_after() {
    let (r, _) = exchange_with(
        vec![Canned::Raw(http_response(
            "503 Service Unavailable",
            &[("retry-after", "17")],
            b"",
        ))],
        HttpConfig::default(),
    )
    .await;
    let err = r.unwrap_err();
    match &err {
        Error::Http(e) => assert_eq!(
            e.retry_after(),
            Some(RetryAfter::Delay(Duration::from_secs(17)))
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn oauth_error_with_401() {
    let (r, _) = exchange_with(
        vec![Canned::Raw(http_response(
            "401 Unauthorized",
            &[
                ("content-type", "application/json"),
                ("www-authenticate", "Basic"),
            ],
            br#"{"error":"invalid_client","error_description":"bad secret"}"#,
        ))],
        HttpConfig::default(),
    )
    .await;
    let err = r.unwrap_err();
    let e = err.oauth().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidClient);
    assert_eq!(e.description.as_deref(), Some("bad secret"));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn non_json_and_wrongly_typed_success_bodies() {
    for (body, field) in [
        (&b"<html>ok</html>"[..], None),
        (b"", None),
        (br#"{"deferred_auth_id": 42}"#, Some("deferred_auth_id")),
        (
            br#"{"deferred_auth_id": "x", "interval": "5"}"#,
            Some("interval"),
        ),
        (
            br#"{"deferred_auth_id": "x", "expires_in": -1}"#,
            Some("expires_in"),
        ),
        (
            br#"{"deferred_auth_id": "x", "expires_in": 0.5}"#,
            Some("expires_in"),
        ),
        (br#"["deferred_auth_id"]"#, None),
    ] {
        let (r, _) = exchange_with(
            vec![Canned::Raw(http_response(
                "200 OK",
                &[("content-type", "application/json")],
                body,
            ))],
            HttpConfig::default(),
        )
        .await;
        match r {
            Err(Error::Response(e)) => assert_eq!(e.field, field, "{e}"),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
        }
    }
}

#[tokio::test]
async fn oversized_body_with_content_length() {
    let big = vec![b' '; 4096];
    let (r, _) = exchange_with(
        vec![Canned::Raw(http_response(
            "200 OK",
            &[("content-type", "application/json")],
            &big,
        ))],
        HttpConfig::default().max_body_bytes(1024),
    )
    .await;
    assert!(
        matches!(
            r,
            Err(Error::Http(HttpError::BodyTooLarge { limit: 1024, .. }))
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn oversized_chunked_body() {
    let mut raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for _ in 0..8 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b' '; 0x200]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let (r, _) = exchange_with(
        vec![Canned::Raw(raw)],
        HttpConfig::default().max_body_bytes(1024),
    )
    .await;
    assert!(
        matches!(r, Err(Error::Http(HttpError::BodyTooLarge { .. }))),
        "{r:?}"
    );
}

#[tokio::test]
async fn connection_closed_without_answer_is_transient() {
    let (r, _) = exchange_with(vec![Canned::Close], HttpConfig::default()).await;
    let err = r.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(matches!(err, Error::Http(HttpError::Transport { .. })));
}

#[tokio::test]
async fn garbage_instead_of_http() {
    let (r, _) = exchange_with(
        vec![Canned::Raw(
            b"\x00\x01\x02 not http at all\r\n\r\n".to_vec(),
        )],
        HttpConfig::default(),
    )
    .await;
    assert!(
        matches!(r, Err(Error::Http(HttpError::Transport { .. }))),
        "{r:?}"
    );
}

#[tokio::test]
async fn total_timeout() {
    let (r, _) = exchange_with(
        vec![Canned::Delay(
            Duration::from_secs(5),
            json_response("200 OK", r#"{"deferred_auth_id":"x"}"#),
        )],
        HttpConfig::default().timeout(Duration::from_millis(200)),
    )
    .await;
    match r {
        Err(Error::Http(HttpError::Transport { kind, .. })) => {
            assert_eq!(kind, TransportErrorKind::Timeout)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn connection_refused() {
    // A socket bound but not listening: the kernel refuses connections to
    // its port, and no other socket can take the port while it is held.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = reserved.local_addr().unwrap().port();
    let server = CannedServer {
        base: format!("http://127.0.0.1:{port}"),
        requests: Default::default(),
    };
    let client = client_for(&server, HttpConfig::default()).await;
    match client.exchange(ack(&client)).await {
        Err(Error::Http(HttpError::Transport { kind, .. })) => {
            assert_eq!(kind, TransportErrorKind::Connect);
            assert!(kind.is_transient());
        }
        other => panic!("{other:?}"),
    }
}

/// Issue 22: a 500 with a pending body was read as a pending answer; it is
/// a failure that may go away, and says so.
#[tokio::test]
async fn a_pending_body_on_a_500_is_a_transient_failure_not_a_pending_answer() {
    let (r, _) = exchange_with(
        vec![Canned::Raw(json_response(
            "500 Internal Server Error",
            r#"{"error":"authorization_pending","deferred_auth_id":"id-500"}"#,
        ))],
        HttpConfig::default(),
    )
    .await;
    let err = r.unwrap_err();
    assert!(err.is_retryable());
    assert!(err.oauth().is_none());
    match &err {
        Error::Http(h @ HttpError::PendingWithErrorStatus { status, code, .. }) => {
            assert_eq!(status.as_u16(), 500);
            assert_eq!(*code, ErrorCode::AuthorizationPending);
            assert!(h.is_transient());
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{err} {err:?}").contains("id-500"));
}

/// Issue 22: a 600 KB `deferred_auth_id` and `interval: 1e300` were
/// accepted by the exchange.
#[tokio::test]
async fn oversized_handles_and_exponent_intervals_are_refused_at_the_exchange() {
    let huge = "i".repeat(600 * 1024);
    for (body, field) in [
        (
            format!(r#"{{"deferred_auth_id":"{huge}"}}"#),
            "deferred_auth_id",
        ),
        (
            r#"{"deferred_auth_id":"id-1","interval":1e300}"#.to_owned(),
            "interval",
        ),
        (
            r#"{"deferred_auth_id":"id-1","expires_in":3.6e3}"#.to_owned(),
            "expires_in",
        ),
    ] {
        let (r, _) = exchange_with(
            vec![Canned::Raw(json_response("200 OK", &body))],
            HttpConfig::default(),
        )
        .await;
        match r {
            Err(Error::Response(e)) => {
                assert_eq!(e.field, Some(field));
                assert!(!e.to_string().contains("iiii"), "{e}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}
