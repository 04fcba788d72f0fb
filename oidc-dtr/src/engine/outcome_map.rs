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
}
