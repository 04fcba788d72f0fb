//! Drives `examples/axum_rp.rs`: the whole flow through the example RP, with
//! the OP's ping as the only wake-up.

#[allow(dead_code)]
#[path = "../../examples/axum_rp.rs"]
mod axum_rp;

use oidc_dtr_testkit::Endpoint;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_verifies_an_identity_through_a_ping() {
    let demo = axum_rp::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let status = axum_rp::self_test(&demo).await.unwrap();
    assert_eq!(status.state, "verified");
    assert!(status.subject.is_some());
    // The OP pinged the example's tower-service endpoint, which answered 204...
    let op = demo.op.as_ref().unwrap();
    let pings = op.pings_at_least(1).await;
    assert_eq!(pings.len(), 1);
    assert_eq!(pings[0].status, Some(204));
    // ...and that ping, not the 60 s safety-net poll, fetched the tokens:
    // a single token request after the exchange.
    let polls = op
        .requests_to(Endpoint::Token)
        .into_iter()
        .filter(|r| r.param("deferred_auth_id").is_some())
        .count();
    assert_eq!(polls, 1);
}
