use super::*;

#[test]
fn error_codes_round_trip() {
    for s in [
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "access_denied",
        "authorization_pending",
        "slow_down",
        "expired_token",
        "invalid_dpop_proof",
        "use_dpop_nonce",
        "something_else",
    ] {
        assert_eq!(ErrorCode::from(s).as_str(), s);
    }
    assert_eq!(ErrorCode::from("x"), ErrorCode::Other("x".into()));
}

#[test]
fn display_escapes_op_text() {
    let mut e = OAuthError::new(ErrorCode::AuthorizationPending);
    e.description = Some("step 2\r\nSet-Cookie: x".into());
    e.status = Some(StatusCode::BAD_REQUEST);
    let s = e.to_string();
    assert_eq!(
        s,
        "the OP answered `authorization_pending` (HTTP 400): step 2??Set-Cookie: x"
    );
    assert_eq!(sanitize(&"a".repeat(10), 3), "aaa…");
}

#[test]
fn display_strips_bidi_overrides() {
    let mut e = OAuthError::new(ErrorCode::AccessDenied);
    e.description = Some("abc\u{202E}fed\u{2066}x\u{200F}".into());
    let s = e.to_string();
    assert!(!s.chars().any(is_bidi_control), "{s:?}");
    assert!(s.ends_with("abc?fed?x?"), "{s:?}");
    let code = ErrorCode::from("x\u{202E}y");
    assert_eq!(code.to_string(), "x?y");
    let r = ResponseError::new("ctx", None, "member `a\u{202E}b` is odd");
    assert!(!r.to_string().contains('\u{202E}'), "{r}");
}

#[test]
fn op_text_is_capped_and_cleaned() {
    let t = clean_op_text("a\r\nb\u{202E}c\u{0007}");
    assert_eq!(t, "a  bc ");
    let long = clean_op_text(&"x".repeat(1_000_000));
    assert_eq!(long.chars().count(), MAX_OP_TEXT_CHARS + 1);
    assert!(long.ends_with('…'));
    assert_eq!(
        clean_op_text(&"y".repeat(MAX_OP_TEXT_CHARS)).len(),
        MAX_OP_TEXT_CHARS
    );
}

#[test]
fn only_https_error_uris_are_kept() {
    assert_eq!(
        clean_op_uri("https://op.example/e?x=1").as_deref(),
        Some("https://op.example/e?x=1")
    );
    for bad in [
        "javascript:alert(1)",
        "http://op.example/e",
        "data:text/html,x",
        "/relative",
        "https://op.example/\u{202E}x",
        "https://op.example/a\nb",
    ] {
        assert_eq!(clean_op_uri(bad), None, "{bad}");
    }
    assert_eq!(
        clean_op_uri(&format!("https://op.example/{}", "a".repeat(3000))),
        None
    );
}

#[test]
fn retryability() {
    let status = |s: u16| HttpError::Status {
        status: StatusCode::from_u16(s).unwrap(),
        endpoint: "https://op/token".into(),
        content_type: None,
        body_preview: String::new(),
        retry_after: None,
    };
    assert!(Error::from(status(503)).is_retryable());
    assert!(
        !Error::from(HttpError::Redirect {
            status: StatusCode::FOUND,
            endpoint: "x".into()
        })
        .is_retryable()
    );
    assert!(!Error::from(OAuthError::new(ErrorCode::InvalidGrant)).is_retryable());
    assert!(TransportErrorKind::Timeout.is_transient());
    assert!(!TransportErrorKind::Tls.is_transient());
    assert!(!TransportErrorKind::Dns.is_transient());
}

#[test]
fn oauth_error_serde_round_trip() {
    let mut e = OAuthError::new(ErrorCode::SlowDown);
    e.status = Some(StatusCode::BAD_REQUEST);
    e.retry_after = Some(RetryAfter::Delay(Duration::from_secs(3)));
    let j = serde_json::to_string(&e).unwrap();
    assert_eq!(serde_json::from_str::<OAuthError>(&j).unwrap(), e);
}
