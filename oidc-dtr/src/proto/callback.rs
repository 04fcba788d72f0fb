//! The Authentication Request Acknowledgment (draft §"Authentication Request
//! Acknowledgment Validation"): what arrives at the redirect URI.
//!
//! The validation is pure: parameters in, one of [`CallbackResponse`] out. The
//! checks, in order:
//!
//! 1. the input is within the size limit and no parameter is repeated;
//! 2. the pending authorization belongs to this client and issuer, and the
//!    response arrived in the requested `response_mode`;
//! 3. `state` is present and equal to the one sent (constant time);
//! 4. `iss` (RFC 9207) equals the issuer when present, and is required when
//!    the OP advertises `authorization_response_iss_parameter_supported`;
//! 5. an `error` becomes [`CallbackResponse::Error`] (it must not come with a
//!    code, and must use only the characters RFC 6749 §4.1.2.1 allows:
//!    printable ASCII without `"` and `\`, so no CR or LF);
//! 6. `code` together with `deferred_code` is invalid; a `deferred_code`
//!    must use only `A-Z a-z 0-9 . - _` and be at most
//!    [`MAX_CODE_LEN`] long; a plain `code` is accepted only when
//!    `deferred_code code` was requested.
//!
//! Unknown parameters are ignored.

use std::borrow::Cow;

use crate::error::{CallbackError, ErrorCode, OAuthError};
use crate::proto::authorize::{PendingAuthorization, ResponseMode, ResponseType};
use crate::secret::{AuthorizationCode, DeferredCode, ct_eq};

/// The largest callback input accepted, in bytes.
pub(crate) const MAX_CALLBACK_BYTES: usize = 16 * 1024;
/// The longest `deferred_code` or `code` accepted.
pub(crate) const MAX_CODE_LEN: usize = 1024;

/// A validated `deferred_code`, with the context of the request it answers.
/// Hand it to [`DtrClient::exchange`](crate::DtrClient::exchange).
#[derive(Debug, Clone)]
pub struct Acknowledgment {
    pub(crate) deferred_code: DeferredCode,
    pub(crate) pending: PendingAuthorization,
}

impl Acknowledgment {
    /// The `deferred_code`.
    pub fn deferred_code(&self) -> &DeferredCode {
        &self.deferred_code
    }
    /// The request this acknowledges.
    pub fn pending(&self) -> &PendingAuthorization {
        &self.pending
    }
}

/// A plain authorization `code` (the OP chose not to defer a
/// `deferred_code code` request), with the context of its request.
#[derive(Debug, Clone)]
pub struct CodeResponse {
    pub(crate) code: AuthorizationCode,
    pub(crate) pending: PendingAuthorization,
}

impl CodeResponse {
    /// The `code`.
    pub fn code(&self) -> &AuthorizationCode {
        &self.code
    }
    /// The request this answers.
    pub fn pending(&self) -> &PendingAuthorization {
        &self.pending
    }
}

/// What the redirect carried, once validated.
///
/// ```
/// use oidc_dtr::{CallbackResponse, DtrClient};
/// use oidc_dtr_testkit::MockOp;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let op = MockOp::start().await?;
/// # let client = DtrClient::builder()
/// #     .issuer(op.issuer())
/// #     .client_id(MockOp::CLIENT_ID)
/// #     .client_secret(MockOp::CLIENT_SECRET)
/// #     .redirect_uri("http://127.0.0.1:9/callback")
/// #     .build()
/// #     .await?;
/// let (url, pending) = client.authorize().build()?;
/// let back = op.browse(&url).await?; // the browser returns to the redirect URI
/// match client.callback(&pending, back.query())? {
///     CallbackResponse::Acknowledgment(ack) => {
///         let auth = client.exchange(ack).await?;
///         println!("deferred: the OP decides by {:?}", auth.expires_at());
///     }
///     CallbackResponse::Code(code) => println!("answered at once: {:?}", code.code()),
///     CallbackResponse::Error(e) => println!("the OP refused: {e}"),
///     _ => println!("an answer this version does not know"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CallbackResponse {
    /// The OP deferred the authentication: exchange the `deferred_code`.
    Acknowledgment(Acknowledgment),
    /// The OP answered at once with a plain `code` (only with
    /// `deferred_code code`): continue with the authorization code flow.
    Code(CodeResponse),
    /// The OP reported an error (the user cancelled, the request was invalid,
    /// ...). Terminal for this request.
    Error(OAuthError),
}

/// The parameters that matter, each at most once.
#[derive(Default)]
struct Params<'a> {
    state: Option<Cow<'a, str>>,
    iss: Option<Cow<'a, str>>,
    code: Option<Cow<'a, str>>,
    deferred_code: Option<Cow<'a, str>>,
    error: Option<Cow<'a, str>>,
    error_description: Option<Cow<'a, str>>,
    error_uri: Option<Cow<'a, str>>,
}

fn parse(input: &[u8]) -> Result<Params<'_>, CallbackError> {
    if input.len() > MAX_CALLBACK_BYTES {
        return Err(CallbackError::TooLarge {
            limit: MAX_CALLBACK_BYTES,
        });
    }
    let mut p = Params::default();
    for (k, v) in url::form_urlencoded::parse(input) {
        let slot = match k.as_ref() {
            "state" => &mut p.state,
            "iss" => &mut p.iss,
            "code" => &mut p.code,
            "deferred_code" => &mut p.deferred_code,
            "error" => &mut p.error,
            "error_description" => &mut p.error_description,
            "error_uri" => &mut p.error_uri,
            // Unknown parameters are ignored, repeated or not (draft).
            _ => continue,
        };
        if slot.is_some() {
            return Err(CallbackError::RepeatedParameter(crate::error::sanitize(
                &k, 64,
            )));
        }
        *slot = Some(v);
    }
    Ok(p)
}

fn check_deferred_code(s: &str) -> Result<(), CallbackError> {
    if s.is_empty() {
        return Err(CallbackError::InvalidDeferredCode("empty"));
    }
    if s.len() > MAX_CODE_LEN {
        return Err(CallbackError::InvalidDeferredCode("too long"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(CallbackError::InvalidDeferredCode(
            "characters outside A-Z a-z 0-9 . - _",
        ));
    }
    Ok(())
}

fn check_code(s: &str) -> Result<(), CallbackError> {
    if s.is_empty() {
        return Err(CallbackError::InvalidCode("empty"));
    }
    if s.len() > MAX_CODE_LEN {
        return Err(CallbackError::InvalidCode("too long"));
    }
    // RFC 6749 Appendix A.11: VSCHAR.
    if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(CallbackError::InvalidCode("non-printable characters"));
    }
    Ok(())
}

/// The query of a redirect handed over as a query string, a query string
/// with its leading `?`, a path with a query, or a full URL. A `?` is legal
/// unencoded inside a query value (RFC 3986 §3.4), so the input is cut at its
/// first `?` only when what precedes it is a URL or a path (it holds no `=`
/// or `&`); any fragment is dropped.
pub(crate) fn query_of(input: &str) -> &str {
    let input = input.split('#').next().unwrap_or("");
    if let Some(rest) = input.strip_prefix('?') {
        return rest;
    }
    match input.find('?') {
        Some(i) if !input[..i].contains(['=', '&']) => &input[i + 1..],
        _ => input,
    }
}

/// The expectations a callback is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub iss_required: bool,
    pub mode: ResponseMode,
}

/// Validates the parameters of a redirect (`input` is the query string or
/// the form body, `application/x-www-form-urlencoded`).
pub(crate) fn validate(
    pending: &PendingAuthorization,
    input: &[u8],
    expect: Expect<'_>,
) -> Result<CallbackResponse, CallbackError> {
    let p = parse(input)?;
    if pending.issuer != expect.issuer || pending.client_id != expect.client_id {
        return Err(CallbackError::WrongClient);
    }
    if pending.response_mode != expect.mode {
        return Err(CallbackError::WrongResponseMode {
            expected: pending.response_mode.as_str(),
        });
    }
    let state = p.state.as_deref().ok_or(CallbackError::MissingState)?;
    if !ct_eq(state.as_bytes(), pending.state.secret().as_bytes()) {
        return Err(CallbackError::StateMismatch);
    }
    match p.iss.as_deref() {
        Some(iss) if iss != expect.issuer => {
            return Err(CallbackError::IssuerMismatch {
                expected: expect.issuer.to_owned(),
                found: crate::error::sanitize(iss, 200),
            });
        }
        None if expect.iss_required => return Err(CallbackError::MissingIssuer),
        _ => {}
    }
    if let Some(error) = p.error.as_deref() {
        if p.code.is_some() || p.deferred_code.is_some() {
            return Err(CallbackError::ErrorWithCode);
        }
        crate::error::check_error_code(error).map_err(CallbackError::InvalidErrorCode)?;
        let mut e = OAuthError::new(ErrorCode::from(error));
        e.description = p.error_description.map(|d| crate::error::clean_op_text(&d));
        e.uri = p.error_uri.and_then(|u| crate::error::clean_op_uri(&u));
        return Ok(CallbackResponse::Error(e));
    }
    match (p.deferred_code, p.code) {
        (Some(_), Some(_)) => Err(CallbackError::CodeAndDeferredCode),
        (Some(dc), None) => {
            if pending.response_type == ResponseType::Code {
                return Err(CallbackError::UnexpectedDeferredCode);
            }
            check_deferred_code(&dc)?;
            Ok(CallbackResponse::Acknowledgment(Acknowledgment {
                deferred_code: DeferredCode::new(dc.into_owned()),
                pending: pending.clone(),
            }))
        }
        (None, Some(code)) => {
            if !matches!(
                pending.response_type,
                ResponseType::DeferredCodeOrCode | ResponseType::Code
            ) {
                return Err(CallbackError::UnexpectedCode);
            }
            check_code(&code)?;
            Ok(CallbackResponse::Code(CodeResponse {
                code: AuthorizationCode::new(code.into_owned()),
                pending: pending.clone(),
            }))
        }
        (None, None) => Err(CallbackError::MissingDeferredCode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{Nonce, PkceVerifier, State};
    use crate::time::UnixTime;
    use url::Url;

    const ISS: &str = "https://op.example";
    const STATE: &str = "st4te-value_0123456789abcdefghijklmnopqrstuvw";

    fn pending(rt: ResponseType, mode: ResponseMode) -> PendingAuthorization {
        PendingAuthorization {
            issuer: ISS.into(),
            client_id: "client".into(),
            redirect_uri: Url::parse("https://rp.example/cb").unwrap(),
            state: State::new(STATE),
            nonce: Nonce::new("nonce"),
            pkce_verifier: PkceVerifier::new("verifier"),
            response_type: rt,
            response_mode: mode,
            max_age: None,
            created_at: UnixTime::from_secs(1),
            claims_request: None,
            completion_mode_hint: false,
            request_uri_expires_at: None,
            dpop_key: None,
            dpop_signer_jkt: None,
        }
    }

    fn expect(iss_required: bool) -> Expect<'static> {
        Expect {
            issuer: ISS,
            client_id: "client",
            iss_required,
            mode: ResponseMode::Query,
        }
    }

    fn run(q: &str) -> Result<CallbackResponse, CallbackError> {
        validate(
            &pending(ResponseType::DeferredCode, ResponseMode::Query),
            q.as_bytes(),
            expect(false),
        )
    }

    fn run_rt(q: &str, rt: ResponseType) -> Result<CallbackResponse, CallbackError> {
        validate(
            &pending(rt, ResponseMode::Query),
            q.as_bytes(),
            expect(false),
        )
    }

    #[test]
    fn happy_acknowledgment() {
        let q = format!(
            "deferred_code=Spl.x-l_O9&state={STATE}&iss=https%3A%2F%2Fop.example&unknown=1"
        );
        match run(&q).unwrap() {
            CallbackResponse::Acknowledgment(a) => {
                assert_eq!(a.deferred_code().secret(), "Spl.x-l_O9")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn state_missing_or_wrong() {
        assert_eq!(
            run("deferred_code=abc").unwrap_err(),
            CallbackError::MissingState
        );
        assert_eq!(
            run("deferred_code=abc&state=other").unwrap_err(),
            CallbackError::StateMismatch
        );
        // A prefix of the right state is still wrong.
        let q = format!("deferred_code=abc&state={}", &STATE[..10]);
        assert_eq!(run(&q).unwrap_err(), CallbackError::StateMismatch);
        // State is checked before the error is surfaced.
        assert_eq!(
            run("error=access_denied&state=x").unwrap_err(),
            CallbackError::StateMismatch
        );
    }

    #[test]
    fn iss_rules() {
        let q = format!("deferred_code=abc&state={STATE}&iss=https%3A%2F%2Fevil.example");
        assert!(matches!(
            run(&q).unwrap_err(),
            CallbackError::IssuerMismatch { .. }
        ));
        // Trailing slash is a different issuer.
        let q = format!("deferred_code=abc&state={STATE}&iss=https%3A%2F%2Fop.example%2F");
        assert!(matches!(
            run(&q).unwrap_err(),
            CallbackError::IssuerMismatch { .. }
        ));
        let q = format!("deferred_code=abc&state={STATE}");
        assert!(run(&q).is_ok());
        let p = pending(ResponseType::DeferredCode, ResponseMode::Query);
        assert_eq!(
            validate(&p, q.as_bytes(), expect(true)).unwrap_err(),
            CallbackError::MissingIssuer
        );
        let q = format!("deferred_code=abc&state={STATE}&iss=https%3A%2F%2Fop.example");
        assert!(validate(&p, q.as_bytes(), expect(true)).is_ok());
    }

    #[test]
    fn code_and_deferred_code_together() {
        for rt in [ResponseType::DeferredCode, ResponseType::DeferredCodeOrCode] {
            let q = format!("deferred_code=abc&code=def&state={STATE}");
            assert_eq!(
                run_rt(&q, rt).unwrap_err(),
                CallbackError::CodeAndDeferredCode
            );
        }
    }

    #[test]
    fn plain_code_only_when_requested() {
        let q = format!("code=SplxlOBeZQQYbYS6WxSbIA&state={STATE}");
        assert_eq!(run(&q).unwrap_err(), CallbackError::UnexpectedCode);
        match run_rt(&q, ResponseType::DeferredCodeOrCode).unwrap() {
            CallbackResponse::Code(c) => assert_eq!(c.code().secret(), "SplxlOBeZQQYbYS6WxSbIA"),
            other => panic!("{other:?}"),
        }
        let q = format!("code=&state={STATE}");
        assert!(matches!(
            run_rt(&q, ResponseType::DeferredCodeOrCode).unwrap_err(),
            CallbackError::InvalidCode(_)
        ));
        let q = format!("code=a%0Ab&state={STATE}");
        assert!(matches!(
            run_rt(&q, ResponseType::DeferredCodeOrCode).unwrap_err(),
            CallbackError::InvalidCode(_)
        ));
    }

    #[test]
    fn deferred_code_charset_and_length() {
        for bad in ["a+b", "a%2Fb", "a%20b", "%C3%A9", "a~b", "a%3Db", "a%00"] {
            let q = format!("deferred_code={bad}&state={STATE}");
            assert!(
                matches!(run(&q).unwrap_err(), CallbackError::InvalidDeferredCode(_)),
                "{bad}"
            );
        }
        let q = format!("deferred_code=&state={STATE}");
        assert_eq!(
            run(&q).unwrap_err(),
            CallbackError::InvalidDeferredCode("empty")
        );
        let q = format!(
            "deferred_code={}&state={STATE}",
            "a".repeat(MAX_CODE_LEN + 1)
        );
        assert_eq!(
            run(&q).unwrap_err(),
            CallbackError::InvalidDeferredCode("too long")
        );
        let q = format!("deferred_code={}&state={STATE}", "a".repeat(MAX_CODE_LEN));
        assert!(run(&q).is_ok());
    }

    #[test]
    fn repeated_parameters() {
        for q in [
            format!("deferred_code=a&deferred_code=b&state={STATE}"),
            format!("deferred_code=a&state={STATE}&state={STATE}"),
            format!("deferred_code=a&state={STATE}&iss=x&iss=x"),
        ] {
            assert!(
                matches!(run(&q).unwrap_err(), CallbackError::RepeatedParameter(_)),
                "{q}"
            );
        }
    }

    #[test]
    fn repeated_unknown_parameters_are_ignored() {
        let q = format!("foo=1&deferred_code=a&foo=2&state={STATE}&foo&foo=");
        assert!(matches!(
            run(&q).unwrap(),
            CallbackResponse::Acknowledgment(_)
        ));
    }

    #[test]
    fn a_question_mark_inside_a_value_keeps_the_parameters_before_it() {
        let q = format!("deferred_code=abc&state={STATE}&note=why?because");
        assert_eq!(query_of(&q), q);
        assert!(matches!(
            run(query_of(&q)).unwrap(),
            CallbackResponse::Acknowledgment(_)
        ));
        assert_eq!(query_of("?a=1?b"), "a=1?b");
        assert_eq!(query_of("/cb?a=1?b#frag"), "a=1?b");
        assert_eq!(query_of("https://rp.example/cb?a=b?c&d=e"), "a=b?c&d=e");
        assert_eq!(query_of("a=b&c=d#x"), "a=b&c=d");
        assert_eq!(query_of(""), "");
    }

    #[test]
    fn op_error_text_is_cleaned() {
        let q = format!(
            "error=access_denied&error_description=a%0D%0Ab%E2%80%AEc{}&error_uri=javascript%3Aalert(1)&state={STATE}",
            "x".repeat(2000)
        );
        match run(&q).unwrap() {
            CallbackResponse::Error(e) => {
                let d = e.description.unwrap();
                assert!(d.starts_with("a  bcx"), "{d:?}");
                assert_eq!(d.chars().count(), crate::error::MAX_OP_TEXT_CHARS + 1);
                assert_eq!(e.uri, None);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Issue 22: the callback's `error` code kept raw CR/LF.
    #[test]
    fn error_codes_outside_the_rfc_6749_charset_are_refused() {
        for code in [
            "access_denied%0D%0ASet-Cookie:+x",
            "a%0Ab",
            "a%09b",
            "a%00",
            "a%22b",
            "a%5Cb",
            "caf%C3%A9",
            "x%E2%80%AEy",
            "",
        ] {
            let q = format!("error={code}&state={STATE}");
            match run(&q).unwrap_err() {
                CallbackError::InvalidErrorCode(why) => {
                    let text = CallbackError::InvalidErrorCode(why).to_string();
                    assert!(text.starts_with("`error` is invalid"), "{text}");
                    assert!(!text.contains("Set-Cookie"), "{text}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        // Spaces and the other printable characters are allowed.
        let q = format!("error=odd+code!%23%24~&state={STATE}");
        match run(&q).unwrap() {
            CallbackResponse::Error(e) => assert_eq!(e.code.as_str(), "odd code!#$~"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_input() {
        let q = format!(
            "deferred_code=a&state={STATE}&pad={}",
            "x".repeat(MAX_CALLBACK_BYTES)
        );
        assert!(matches!(
            run(&q).unwrap_err(),
            CallbackError::TooLarge { .. }
        ));
    }

    #[test]
    fn missing_everything() {
        let q = format!("state={STATE}");
        assert_eq!(run(&q).unwrap_err(), CallbackError::MissingDeferredCode);
    }

    #[test]
    fn op_error_is_surfaced() {
        let q = format!(
            "error=unauthorized_client&error_description=The+client+is+not+authorized&error_uri=https%3A%2F%2Fop%2Fe&state={STATE}"
        );
        match run(&q).unwrap() {
            CallbackResponse::Error(e) => {
                assert_eq!(e.code, ErrorCode::UnauthorizedClient);
                assert_eq!(
                    e.description.as_deref(),
                    Some("The client is not authorized")
                );
                assert_eq!(e.uri.as_deref(), Some("https://op/e"));
                assert_eq!(e.status, None);
            }
            other => panic!("{other:?}"),
        }
        let q = format!("error=access_denied&deferred_code=abc&state={STATE}");
        assert_eq!(run(&q).unwrap_err(), CallbackError::ErrorWithCode);
    }

    #[test]
    fn wrong_mode_or_client() {
        let q = format!("deferred_code=abc&state={STATE}");
        let p = pending(ResponseType::DeferredCode, ResponseMode::FormPost);
        assert!(matches!(
            validate(&p, q.as_bytes(), expect(false)).unwrap_err(),
            CallbackError::WrongResponseMode { .. }
        ));
        let mut e = expect(false);
        e.client_id = "other";
        let p = pending(ResponseType::DeferredCode, ResponseMode::Query);
        assert_eq!(
            validate(&p, q.as_bytes(), e).unwrap_err(),
            CallbackError::WrongClient
        );
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut inputs: Vec<Vec<u8>> = vec![
            b"%".to_vec(),
            b"%%%%&&&===".to_vec(),
            b"state".to_vec(),
            b"=&=&=".to_vec(),
            vec![0xff, 0xfe, b'=', 0x80],
        ];
        inputs.push((0..=255u8).collect());
        for i in inputs {
            let _ = validate(
                &pending(ResponseType::DeferredCodeOrCode, ResponseMode::Query),
                &i,
                expect(true),
            );
        }
    }
}
