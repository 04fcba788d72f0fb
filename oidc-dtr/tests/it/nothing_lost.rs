//! Issue 11: every authentication the OP accepted ends in exactly one
//! outcome that says truthfully what happened.

use std::time::Duration;

use crate::support::flow::*;
use oidc_dtr::{Outcome, PollFailure};
use oidc_dtr_testkit::{AutoApprove, Endpoint, Fault, OpConfig};

const S: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn polls(op: &oidc_dtr_testkit::MockOp) -> usize {
    op.requests_to(Endpoint::Token)
        .into_iter()
        .filter(|r| r.param("deferred_auth_id").is_some())
        .count()
}

fn ok_json(body: &str) -> Fault {
    Fault::Respond {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into(),
    }
}

/// Item 6: a 200 token response that breaks a rule ends the authentication
/// with "tokens received but refused", and the spent id is never polled
/// again (it used to be polled and answer `invalid_grant`).
#[tokio::test]
async fn a_200_that_breaks_a_rule_is_refused_and_never_polled_again() {
    for body in [
        r#"{"access_token":"at-1"}"#,
        r#"{"access_token":"at-1","token_type":""}"#,
        r#"{"access_token":"at-1","token_type":7}"#,
        r#"{"access_token":"at-1","token_type":"Bearer","expires_in":"3600.5"}"#,
        r#"{"access_token":"at-1","token_type":"Bearer","expires_in":0}"#,
        r#"{"access_token":"at-1","token_type":"Bearer","expires_in":-1}"#,
    ] {
        let s = setup(OpConfig::default()).await;
        let auth = start(&s.op, &s.client).await;
        s.op.inject_faults([ok_json(body)]);
        let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
        match &outcome {
            Outcome::Rejected(PollFailure::TokensRefused { reason }) => {
                assert!(!reason.contains("at-1"), "no token in the reason: {reason}");
                assert!(
                    reason.contains("token_type") || reason.contains("expires_in"),
                    "{reason}"
                );
            }
            other => panic!("{body}: {other:?}"),
        }
        assert_eq!(outcome.kind(), "rejected");
        // No poll after the 200, however long we wait.
        pass(&s, secs(60), S).await;
        assert_eq!(polls(&s.op), 1, "{body}");
    }
}

/// Item 6: a 200 that is not JSON (a proxy page) is not a token response:
/// polling goes on, and the OP's real answer arrives.
#[tokio::test]
async fn a_200_proxy_page_is_retried() {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = AutoApprove::AfterPolls(1);
    let s = setup(cfg).await;
    let auth = start(&s.op, &s.client).await;
    s.op.inject_faults([Fault::html(200)]);
    let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
    assert!(matches!(outcome, Outcome::Tokens(_)), "{outcome:?}");
}

/// Item 6: an OAuth error sent as `text/plain` is read as that error.
#[tokio::test]
async fn an_oauth_error_as_text_plain_is_that_error() {
    let s = setup(OpConfig::default()).await;
    let auth = start(&s.op, &s.client).await;
    s.op.inject_faults([Fault::Respond {
        status: 400,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: r#"{"error":"access_denied","error_description":"no"}"#.into(),
    }]);
    let outcome = run_to_outcome(&s, auth.id(), S, secs(600)).await;
    assert!(
        matches!(&outcome, Outcome::Denied { description: Some(d) } if d == "no"),
        "{outcome:?}"
    );
}

/// Item 10: without a cancellation endpoint, `cancel()` says the OP was not
/// told (it used to answer a bare `Ok(())`), and polling stops.
#[tokio::test]
async fn cancel_without_an_endpoint_says_the_op_was_not_told() {
    let s = setup(OpConfig::default()).await;
    let auth = start(&s.op, &s.client).await;
    let r = s.client.cancel(auth.id()).await.unwrap();
    assert_eq!(r, oidc_dtr::CancelResult::LocalOnly);
    assert!(!r.op_told());
    assert!(s.op.requests_to(Endpoint::Cancel).is_empty());
    assert!(matches!(
        s.client.wait(auth.id()).await.unwrap(),
        Outcome::Cancelled
    ));
    assert_eq!(
        s.client.cancel(auth.id()).await.unwrap(),
        oidc_dtr::CancelResult::AlreadyFinished
    );
}
