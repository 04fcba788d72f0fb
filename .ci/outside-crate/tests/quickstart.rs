use oidc_dtr_testkit::MockOp;

#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_calls_work_from_outside_the_workspace() {
    let op = MockOp::start().await.unwrap();
    let result = outside_crate::run(
        op.issuer(),
        MockOp::CLIENT_ID,
        MockOp::CLIENT_SECRET,
        async |url: &str| {
            op.browse(&url.parse().unwrap())
                .await
                .unwrap()
                .query()
                .to_owned()
        },
        |id| assert!(op.approve(id)),
    )
    .await
    .unwrap();
    assert!(result.starts_with("tokens for "), "{result}");
}
