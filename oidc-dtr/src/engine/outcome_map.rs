//! How the engine turns a failed Token Request into a [`PollResult`]: the
//! IO layer maps its own failures (transport, HTTP status, a body that is
//! not a token response) to the protocol results the sans-IO poll machine
//! takes, so the machine never sees an IO or transport type.

use crate::error::{ConfigError, Error, HttpError, SharedError, TransportErrorKind};
use crate::proto::poll::{PollFailure, PollResult};

/// Classifies an error from the token request: an OAuth error answer stays
/// one; a transient HTTP failure (connection, timeout, 429, 5xx, a pending
/// code with a status other than 400) and a 2xx body that is not a token
/// response may go away; tokens that fail validation and every other
/// failure end the authentication.
pub(crate) fn poll_result_of<T>(e: Error) -> PollResult<T> {
    match e {
        Error::OAuth(o) => PollResult::OAuth(*o),
        Error::Http(h) => {
            if h.is_transient() {
                PollResult::Transient {
                    retry_after: h.retry_after(),
                    message: h.to_string(),
                    cause: Some(SharedError::new(h)),
                }
            } else {
                let kind = match &h {
                    HttpError::Transport { kind, .. } => *kind,
                    _ => TransportErrorKind::Other,
                };
                PollResult::Permanent(PollFailure::Transport {
                    kind,
                    message: h.to_string(),
                    cause: Some(SharedError::new(h)),
                })
            }
        }
        // A 2xx whose body is not a token response (a captive portal, a
        // proxy page): the OP may not have seen the request, so retry.
        Error::Response(r) => PollResult::Transient {
            message: r.to_string(),
            retry_after: None,
            cause: Some(SharedError::new(r)),
        },
        Error::Validation(v) => PollResult::Permanent(PollFailure::InvalidTokens(v)),
        // A key outside the process (a KMS) that cannot sign for now:
        // nothing was sent, so poll again later, as after a network
        // failure (but the OP has seen nothing).
        Error::Signer(e) if e.retryable => PollResult::NotSent {
            message: e.to_string(),
            cause: Some(SharedError::new(e)),
        },
        // The authentication is bound to the key of an external DPoP
        // signer that is not configured (removed from the previous
        // signers too early): nothing was sent and nothing is lost. It is
        // held, retried with backoff, until a client configured with the
        // signer takes it up again, or its deadline passes.
        Error::Config(c @ ConfigError::DpopKeyNotConfigured { .. }) => PollResult::NotSent {
            message: c.to_string(),
            cause: Some(SharedError::new(c)),
        },
        other => PollResult::Permanent(PollFailure::Other {
            message: other.to_string(),
            cause: Some(SharedError::new(other)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::{ErrorCode, OAuthError, RetryAfter};

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A DPoP key no longer configured sends nothing and ends nothing.
    #[test]
    fn a_dpop_key_not_configured_is_not_sent_with_a_typed_cause() {
        let e = ConfigError::DpopKeyNotConfigured {
            thumbprint: "jkt-1".into(),
        };
        match poll_result_of::<()>(e.clone().into()) {
            PollResult::NotSent { message, cause } => {
                assert!(message.contains("jkt-1"), "{message}");
                assert_eq!(cause.unwrap().get().downcast_ref::<ConfigError>(), Some(&e));
            }
            other => panic!("{other:?}"),
        }
        // Other configuration errors still end the authentication.
        assert!(matches!(
            poll_result_of::<()>(ConfigError::Missing("x").into()),
            PollResult::Permanent(_)
        ));
    }

    #[test]
    fn classifies_errors() {
        use crate::error::HttpError;
        let transient: PollResult<()> = poll_result_of(
            HttpError::Status {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                endpoint: "x".into(),
                content_type: None,
                body_preview: String::new(),
                retry_after: Some(RetryAfter::Delay(secs(3))),
            }
            .into(),
        );
        assert!(matches!(
            transient,
            PollResult::Transient {
                retry_after: Some(_),
                ..
            }
        ));
        let permanent: PollResult<()> = poll_result_of(
            HttpError::Redirect {
                status: http::StatusCode::FOUND,
                endpoint: "x".into(),
            }
            .into(),
        );
        assert!(matches!(
            permanent,
            PollResult::Permanent(PollFailure::Transport { .. })
        ));
        let oauth: PollResult<()> = poll_result_of(OAuthError::new(ErrorCode::SlowDown).into());
        assert!(matches!(oauth, PollResult::OAuth(_)));
    }

    #[test]
    fn a_permanent_transport_failure_keeps_its_cause_chain_in_memory() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad certificate");
        let h = HttpError::Transport {
            kind: TransportErrorKind::Tls,
            endpoint: "https://op.example/token".into(),
            source: SharedError::new(io),
        };
        let text = h.to_string();
        let PollResult::<()>::Permanent(f) = poll_result_of(h.into()) else {
            panic!("a TLS failure is permanent");
        };
        // The typed cause, downcastable; the text printed once.
        let cause = f.cause().expect("kept in memory");
        assert!(cause.downcast_ref::<HttpError>().is_some());
        assert_eq!(
            f.to_string(),
            format!("{}: {text}", TransportErrorKind::Tls)
        );
        // source() goes on below the printed cause, down to the io::Error.
        let mut chain = f.source();
        let mut found = None;
        while let Some(e) = chain {
            assert!(!f.to_string().contains(&e.to_string()) || e.to_string().is_empty());
            let typed: &(dyn std::error::Error + 'static) = match e.downcast_ref::<SharedError>() {
                Some(shared) => shared.get(),
                None => e,
            };
            if let Some(io) = typed.downcast_ref::<std::io::Error>() {
                found = Some(io.kind());
            }
            chain = e.source();
        }
        assert_eq!(found, Some(std::io::ErrorKind::InvalidData));
        // Persisted: the text only; equal to the original.
        let json = serde_json::to_string(&f).unwrap();
        assert!(!json.contains("cause"), "{json}");
        let back: PollFailure = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.to_string(), f.to_string());
        assert!(back.cause().is_none() && back.source().is_none());
    }

    /// A pending code with an error status other than 400 is a failure
    /// that may go away; with 400 it is the pending answer it says.
    #[test]
    fn a_pending_body_with_an_error_status_other_than_400_is_transient() {
        use crate::proto::message::{HttpResponse, error_for_status};
        let url = url::Url::parse("https://op.example/token").unwrap();
        let resp = |status: u16, body: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            HttpResponse {
                status: http::StatusCode::from_u16(status).unwrap(),
                headers,
                body: bytes::Bytes::from(body.to_owned()),
            }
        };
        for code in ["authorization_pending", "slow_down", "interaction_required"] {
            let body = format!(r#"{{"error":"{code}"}}"#);
            for status in [500, 502, 503, 401, 403, 429] {
                let e = error_for_status(&resp(status, &body), &url).unwrap_err();
                assert!(matches!(
                    poll_result_of::<()>(e),
                    PollResult::Transient { .. }
                ));
            }
            let e = error_for_status(&resp(400, &body), &url).unwrap_err();
            assert!(matches!(poll_result_of::<()>(e), PollResult::OAuth(_)));
        }
    }

    /// The fast reading of pending answers against the general path: every
    /// response the fast path takes on gives the same `PollResult` as the
    /// general path (error status → OAuth error → poll result).
    mod pending_fast_path {
        use http::{HeaderMap, HeaderValue, StatusCode};
        use proptest::prelude::*;

        use super::super::poll_result_of;
        use crate::proto::message::{HttpResponse, pending_answer, status_error};
        use crate::proto::poll::PollResult;

        fn response(
            status: u16,
            ct: Option<&str>,
            extra: &[(&str, &str)],
            body: &[u8],
        ) -> HttpResponse {
            let mut headers = HeaderMap::new();
            if let Some(ct) = ct {
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_str(ct).unwrap(),
                );
            }
            for (k, v) in extra {
                headers.insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            HttpResponse {
                status: StatusCode::from_u16(status).unwrap(),
                headers,
                body: bytes::Bytes::copy_from_slice(body),
            }
        }

        /// Checks the property for one response; says whether the fast
        /// path took it on.
        fn same_as_general(resp: &HttpResponse) -> bool {
            let url = url::Url::parse("https://op.example/token").unwrap();
            let general: PollResult<()> = poll_result_of(status_error(resp, &url));
            let Some(fast) = pending_answer(resp) else {
                return false;
            };
            match general {
                PollResult::OAuth(g) => {
                    assert_eq!(g, fast, "{:?}", String::from_utf8_lossy(&resp.body))
                }
                other => panic!(
                    "the fast path took on {:?}, the general path gives {other:?}",
                    String::from_utf8_lossy(&resp.body)
                ),
            }
            true
        }

        #[test]
        fn table() {
            let json = Some("application/json");
            let long = format!(
                r#"{{"error":"authorization_pending","error_description":"{}"}}"#,
                "a".repeat(5000)
            );
            let desc600 = format!(
                r#"{{"error":"slow_down","error_description":"{}"}}"#,
                "é".repeat(600)
            );
            // (status, content type, body, taken on by the fast path)
            let cases: &[(u16, Option<&str>, &str, bool)] = &[
                (400, json, r#"{"error":"authorization_pending"}"#, true),
                (400, json, r#"{"error":"slow_down"}"#, true),
                (400, json, r#"{"error":"slow_down","interval":10}"#, true),
                (
                    400,
                    json,
                    " \r\n{ \"error\" :\t\"authorization_pending\" , \"error_description\" : \"In review\" }\n ",
                    true,
                ),
                (
                    400,
                    json,
                    r#"{"error_description":"Prüfung läuft ✓ 審査中","error":"authorization_pending"}"#,
                    true,
                ),
                (
                    400,
                    json,
                    "{\"error\":\"authorization_pending\",\"error_description\":\"a\u{202e}b\u{7f}c\"}",
                    true,
                ),
                (
                    400,
                    json,
                    r#"{"error":"authorization_pending","error_uri":"https://op.example/help"}"#,
                    true,
                ),
                (
                    400,
                    json,
                    r#"{"error":"authorization_pending","error_uri":"javascript:alert(1)"}"#,
                    true,
                ),
                (
                    400,
                    json,
                    r#"{"error":"slow_down","interval":999999999999999999}"#,
                    true,
                ),
                (400, json, &desc600, true),
                (
                    400,
                    Some("text/plain; charset=utf-8"),
                    r#"{"error":"authorization_pending"}"#,
                    true,
                ),
                (
                    400,
                    Some("application/problem+json"),
                    r#"{"error":"authorization_pending"}"#,
                    true,
                ),
                (400, None, r#"{"error":"authorization_pending"}"#, true),
                // Declined: the general path decides.
                (
                    400,
                    json,
                    r#"{"error":"authorization_pending","error_description":"line\nbreak"}"#,
                    false,
                ),
                (
                    400,
                    json,
                    "{\"error\":\"authorization_pending\",\"error_description\":\"raw\ncontrol\"}",
                    false,
                ),
                (
                    400,
                    json,
                    r#"{"error":"authorization\u005fpending"}"#,
                    false,
                ),
                (
                    400,
                    json,
                    r#"{"error":"authorization_pending","error":"access_denied"}"#,
                    false,
                ),
                (
                    400,
                    json,
                    r#"{"error":"slow_down","interval":5,"interval":6}"#,
                    false,
                ),
                (400, json, r#"{"error":"slow_down","interval":0}"#, false),
                (400, json, r#"{"error":"slow_down","interval":-5}"#, false),
                (400, json, r#"{"error":"slow_down","interval":5.0}"#, false),
                (400, json, r#"{"error":"slow_down","interval":5e1}"#, false),
                (400, json, r#"{"error":"slow_down","interval":"5"}"#, false),
                (400, json, r#"{"error":"slow_down","interval":05}"#, false),
                (
                    400,
                    json,
                    r#"{"error":"slow_down","interval":18446744073709551616}"#,
                    false,
                ),
                (400, json, r#"{"error":"slow_down","interval":null}"#, false),
                (
                    400,
                    json,
                    r#"{"error":"authorization_pending","error_description":null}"#,
                    false,
                ),
                (
                    400,
                    json,
                    r#"{"error":"authorization_pending","error_description":7}"#,
                    false,
                ),
                (
                    400,
                    json,
                    r#"{"error":"authorization_pending","foo":"bar"}"#,
                    false,
                ),
                (
                    400,
                    json,
                    r#"{"error":"authorization_pending","interaction_uri":"https://op.example/i"}"#,
                    false,
                ),
                (400, json, r#"{"error":"authorization_pending"} x"#, false),
                (400, json, r#"{"error":"authorization_pending",}"#, false),
                (400, json, r#"{"error":"authorization_pending""#, false),
                (400, json, r#"["error","authorization_pending"]"#, false),
                (400, json, r#"{"error":"access_denied"}"#, false),
                (400, json, r#"{"error":"interaction_required"}"#, false),
                (400, json, r#"{"error":""}"#, false),
                (400, json, r#"{"error":7}"#, false),
                (400, json, r#"{}"#, false),
                (400, json, "", false),
                (
                    400,
                    json,
                    "\u{feff}{\"error\":\"authorization_pending\"}",
                    false,
                ),
                (400, json, &long, false),
                (
                    400,
                    Some("text/html"),
                    r#"{"error":"authorization_pending"}"#,
                    false,
                ),
                (500, json, r#"{"error":"authorization_pending"}"#, false),
                (403, json, r#"{"error":"slow_down"}"#, false),
                (200, json, r#"{"error":"authorization_pending"}"#, false),
            ];
            for (status, ct, body, taken) in cases {
                let resp = response(*status, *ct, &[], body.as_bytes());
                assert_eq!(same_as_general(&resp), *taken, "{status} {ct:?} {body}");
            }
            // Invalid UTF-8 inside a string.
            let resp = response(
                400,
                json,
                &[],
                b"{\"error\":\"authorization_pending\",\"error_description\":\"\xff\"}",
            );
            assert!(!same_as_general(&resp));
            // Headers are read as the general path reads them.
            let resp = response(
                400,
                json,
                &[("retry-after", "30"), ("dpop-nonce", "n-1")],
                br#"{"error":"slow_down"}"#,
            );
            assert!(same_as_general(&resp));
            let e = pending_answer(&resp).unwrap();
            assert_eq!(e.dpop_nonce.as_deref(), Some("n-1"));
            assert!(e.retry_after.is_some());
        }

        /// A member as JSON text: well-formed for the fast path or not.
        fn member() -> impl Strategy<Value = String> {
            let text = prop_oneof![
                "[a-zA-Z0-9 .,:/!?-]{0,40}",
                "\\PC{0,20}",
                Just("https://op.example/e".to_owned()),
                Just("\u{202e}x\u{200f}".to_owned()),
            ];
            prop_oneof![
                4 => prop_oneof![Just("authorization_pending"), Just("slow_down"), Just("access_denied"), Just("")]
                    .prop_map(|c| format!(r#""error":"{c}""#)),
                2 => text.clone().prop_map(|t| format!(r#""error_description":{}"#, serde_json::to_string(&t).unwrap())),
                1 => text.prop_map(|t| format!(r#""error_uri":{}"#, serde_json::to_string(&t).unwrap())),
                2 => prop_oneof![
                    (0u64..u64::MAX).prop_map(|n| n.to_string()),
                    Just("-3".to_owned()), Just("2.5".to_owned()), Just("1e2".to_owned()),
                    Just("\"7\"".to_owned()), Just("null".to_owned()), Just("99999999999999999999".to_owned()),
                ].prop_map(|v| format!(r#""interval":{v}"#)),
                1 => prop_oneof![Just(r#""foo":1"#), Just(r#""interaction_uri":"https://x.example""#), Just(r#""error_description":null"#)]
                    .prop_map(str::to_owned),
            ]
        }

        fn body() -> impl Strategy<Value = Vec<u8>> {
            (
                proptest::collection::vec(member(), 0..5),
                prop_oneof![Just(""), Just(" "), Just("\n\t")],
                any::<bool>(),
            )
                .prop_map(|(members, ws, close)| {
                    let mut s = format!("{ws}{{{ws}");
                    s.push_str(&members.join(&format!("{ws},{ws}")));
                    if close {
                        s.push('}');
                    }
                    s.push_str(ws);
                    s.into_bytes()
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn generated_bodies(
                body in body(),
                status in prop_oneof![8 => Just(400u16), 1 => Just(401u16), 1 => Just(200u16), 1 => Just(503u16)],
                ct in prop_oneof![Just(Some("application/json")), Just(None), Just(Some("text/html")), Just(Some("text/plain"))],
                flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            ) {
                let mut body = body;
                // Sometimes one byte changed anywhere.
                if let Some((at, b)) = flip && !body.is_empty() {
                    let i = at.index(body.len());
                    body[i] = b;
                }
                same_as_general(&response(status, ct, &[], &body));
            }

            #[test]
            fn well_formed_pending_bodies_are_taken_on(
                code in prop_oneof![Just("authorization_pending"), Just("slow_down")],
                desc in proptest::option::of("[a-zA-Z0-9 .,:/!?-]{0,60}"),
                interval in proptest::option::of(1u64..1_000_000),
            ) {
                let mut v = serde_json::json!({ "error": code });
                if let Some(d) = &desc { v["error_description"] = d.clone().into(); }
                if let Some(i) = interval { v["interval"] = i.into(); }
                let resp = response(400, Some("application/json"), &[], v.to_string().as_bytes());
                prop_assert!(same_as_general(&resp));
            }
        }
    }
}
