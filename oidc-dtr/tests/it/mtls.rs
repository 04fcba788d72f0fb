//! Mutual TLS (RFC 8705): `tls_client_auth` at the OP's
//! `mtls_endpoint_aliases`, each authentication polled with the client
//! certificate it started with across a restart and a certificate
//! rotation, a typed error when that certificate is gone, and the
//! notification endpoint protected by the OP's certificate.
//!
//! A small TLS server (rustls, client certificates required) plays the
//! OP's mTLS aliases: it records the path, the client certificate's
//! thumbprint and the form of every request and forwards it to the mock
//! OP.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use oidc_dtr::{
    CallbackResponse, ClientAuth, DeferredAuthentication, DtrClient, Error, Outcome,
    ProviderMetadata,
    client::{ClientIdentity, HttpConfig},
    error::{ConfigError, StoreError},
    ping::{CertificateSubject, PeerCertificate, PingMtls},
    store::FileStore,
    time::ManualClock,
};
use oidc_dtr_testkit::{AutoApprove, Endpoint, MockOp, OpConfig, RegisteredClient};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

use crate::support::TempPath;
use crate::support::flow::{REDIRECT, Setup, T0, run_to_outcome, settle_for};

const CLIENT: &str = "mtls-rp";

/// One certificate and its key.
struct Leaf {
    der: Vec<u8>,
    cert_pem: String,
    key_pem: String,
    key_der: Vec<u8>,
}

impl Leaf {
    fn identity(&self) -> ClientIdentity {
        ClientIdentity::from_pem(&self.cert_pem, &self.key_pem).unwrap()
    }
    fn thumbprint(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.der);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
    }
}

/// A CA, a server certificate for 127.0.0.1, and client certificates.
struct Pki {
    ca_der: Vec<u8>,
    ca_pem: String,
    server: Leaf,
    a: Leaf,
    b: Leaf,
    c: Leaf,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf = |sans: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &ca).unwrap();
        Leaf {
            der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    };
    Pki {
        server: leaf(vec!["127.0.0.1".into()], "server"),
        a: leaf(vec![], "client A"),
        b: leaf(vec![], "client B"),
        c: leaf(vec![], "client C"),
        ca_der: ca.der().to_vec(),
        ca_pem: ca.pem(),
    }
}

/// A rustls server config with the server certificate, verifying client
/// certificates against the CA (required, or optional).
fn server_tls(pki: &Pki, client_cert_required: bool) -> Arc<rustls::ServerConfig> {
    server_tls_for_clients_of(pki, &pki.ca_der, client_cert_required)
}

/// [`server_tls`] verifying client certificates against `client_ca`.
fn server_tls_for_clients_of(
    pki: &Pki,
    client_ca: &[u8],
    client_cert_required: bool,
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(client_ca.to_vec())).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    let verifier = if client_cert_required {
        verifier.build().unwrap()
    } else {
        verifier.allow_unauthenticated().build().unwrap()
    };
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(pki.server.der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server.key_der.clone())),
        )
        .unwrap();
    Arc::new(cfg)
}

/// Serves `handler` over TLS on a loopback port, handing it each request
/// with the peer's certificate chain (DER, leaf first) as a [`PeerCertificate`]
/// extension. Returns `https://127.0.0.1:PORT`.
async fn serve_tls<F, Fut>(tls: Arc<rustls::ServerConfig>, handler: F) -> String
where
    F: Fn(http::Request<Bytes>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<Full<Bytes>>> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                // The peer's certificate and the intermediates it sent,
                // from the rustls connection.
                let peer = stream.get_ref().1.peer_certificates().and_then(|chain| {
                    PeerCertificate::from_chain(chain.iter().map(|c| c.to_vec()))
                });
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        let peer = peer.clone();
                        async move {
                            let (mut parts, body) = req.into_parts();
                            if let Some(p) = peer {
                                parts.extensions.insert(p);
                            }
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            Ok::<_, Infallible>(
                                handler(http::Request::from_parts(parts, body)).await,
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    base
}

/// What the alias server saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    thumbprint: Option<String>,
    form: Vec<(String, String)>,
}

impl Seen {
    fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The OP's mTLS aliases: records, then forwards to the mock OP.
async fn alias_server(pki: &Pki, op_base: String) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let forward = reqwest::Client::new();
    let base = serve_tls(server_tls(pki, true), move |req: http::Request<Bytes>| {
        let log = log.clone();
        let forward = forward.clone();
        let op_base = op_base.clone();
        async move {
            let thumbprint = req.extensions().get::<PeerCertificate>().map(|p| {
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, p.der());
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
            });
            let path = req.uri().path().to_owned();
            log.lock().unwrap().push(Seen {
                path: path.clone(),
                thumbprint: thumbprint.clone(),
                form: url::form_urlencoded::parse(req.body())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
            });
            let target = format!(
                "{op_base}{}",
                req.uri().path_and_query().map_or("/", |p| p.as_str())
            );
            let mut out = forward.request(req.method().clone(), target);
            for (k, v) in req.headers() {
                if k != http::header::HOST
                    && k != http::header::CONTENT_LENGTH
                    && k.as_str() != CLIENT_CERT_HEADER
                {
                    out = out.header(k, v);
                }
            }
            // As a TLS front does: the OP learns the verified certificate.
            if let Some(t) = &thumbprint {
                out = out.header(CLIENT_CERT_HEADER, t);
            }
            let resp = out.body(req.body().clone()).send().await.unwrap();
            let mut r = http::Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                if k != http::header::CONTENT_LENGTH && k != http::header::TRANSFER_ENCODING {
                    r = r.header(k, v);
                }
            }
            r.body(Full::new(resp.bytes().await.unwrap())).unwrap()
        }
    })
    .await;
    (base, seen)
}

const CANCEL_MEMBER: &str = "x_cancel_endpoint";

/// The header through which the alias server tells the mock OP the
/// certificate it verified (the OP binds access tokens to it).
const CLIENT_CERT_HEADER: &str = "x-client-cert-x5t";

/// The mock OP's metadata with `mtls_endpoint_aliases` pointing at the
/// alias server (and a vendor cancellation member).
fn metadata_with_aliases(op: &MockOp, alias_base: &str) -> ProviderMetadata {
    let mut md = op.metadata_json();
    let cancel = op.url("/df-authentication/cancel").to_string();
    md[CANCEL_MEMBER] = serde_json::json!(cancel);
    md["mtls_endpoint_aliases"] = serde_json::json!({
        "token_endpoint": format!("{alias_base}/token"),
        "userinfo_endpoint": format!("{alias_base}/userinfo"),
        CANCEL_MEMBER: format!("{alias_base}/df-authentication/cancel"),
    });
    ProviderMetadata::from_json(&serde_json::to_vec(&md).unwrap()).unwrap()
}

fn http_config(pki: &Pki, current: &Leaf, previous: &[&Leaf]) -> HttpConfig {
    let mut cfg = HttpConfig::default()
        .client_identity(current.identity())
        .add_root_certificates_pem(&pki.ca_pem)
        .unwrap();
    for p in previous {
        cfg = cfg.previous_client_identity(p.identity());
    }
    cfg
}

async fn mtls_client(
    op: &MockOp,
    md: &ProviderMetadata,
    clock: &Arc<ManualClock>,
    http: HttpConfig,
    store: Option<FileStore>,
) -> DtrClient {
    let b = DtrClient::builder()
        .metadata(md.clone())
        .client_id(CLIENT)
        .client_auth(ClientAuth::TlsClientAuth)
        .redirect_uri(REDIRECT)
        .cancellation_from_metadata(CANCEL_MEMBER, oidc_dtr::client::CancelEncoding::Form)
        .http_config(http)
        .clock(clock.clone());
    let _ = op;
    match store {
        Some(s) => b.store(s),
        None => b,
    }
    .build()
    .await
    .unwrap()
}

async fn start(op: &MockOp, client: &DtrClient) -> DeferredAuthentication {
    let (url, pending) = client.authorize().build().unwrap();
    let cb = op.browse(&url).await.unwrap();
    let ack = match client.callback(&pending, cb.query()).unwrap() {
        CallbackResponse::Acknowledgment(a) => a,
        other => panic!("{other:?}"),
    };
    client.exchange(ack).await.unwrap()
}

async fn mock_op(clock: &Arc<ManualClock>, approve: AutoApprove) -> MockOp {
    mock_op_as(clock, approve, true).await
}

/// The mock OP; `fapi2`: as a FAPI 2.0 authorization server, which
/// refuses a request that reached it without the certificate (not through
/// the aliases).
async fn mock_op_as(clock: &Arc<ManualClock>, approve: AutoApprove, fapi2: bool) -> MockOp {
    let mut cfg = OpConfig::default();
    cfg.auto_approve = approve;
    cfg.client_cert_header = Some(CLIENT_CERT_HEADER.into());
    cfg.fapi2 = fapi2;
    MockOp::builder()
        .config(cfg)
        .clock(clock.clone())
        .client(RegisteredClient::public(CLIENT))
        .start()
        .await
        .unwrap()
}

async fn open_store(path: &std::path::Path) -> FileStore {
    for _ in 0..300 {
        match FileStore::open(path) {
            Ok(s) => return s,
            Err(StoreError::Locked { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the store stayed locked")
}

const S: Duration = Duration::from_secs(1);

#[tokio::test]
async fn tls_client_auth_sends_every_back_channel_call_to_the_aliases_with_the_certificate() {
    let pki = pki();
    let clock = Arc::new(ManualClock::new(T0));
    let op = mock_op(&clock, AutoApprove::AfterPolls(1)).await;
    let (alias, seen) = alias_server(&pki, op.issuer().to_owned()).await;
    let md = metadata_with_aliases(&op, &alias);
    let client = mtls_client(&op, &md, &clock, http_config(&pki, &pki.a, &[]), None).await;
    let s = Setup {
        op,
        client,
        clock: clock.clone(),
    };

    let auth = start(&s.op, &s.client).await;
    assert_eq!(
        auth.client_cert_thumbprint(),
        Some(pki.a.thumbprint().as_str())
    );
    let Outcome::Tokens(tokens) = run_to_outcome(&s, auth.id(), S, Duration::from_secs(120)).await
    else {
        panic!("no tokens")
    };
    s.client.userinfo(&tokens).await.unwrap();
    let other = start(&s.op, &s.client).await;
    assert_eq!(
        s.client.cancel(other.id()).await.unwrap(),
        oidc_dtr::CancelResult::ToldOp
    );

    let seen = seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert!(paths.contains(&"/token"), "{paths:?}");
    assert!(paths.contains(&"/userinfo"), "{paths:?}");
    assert!(paths.contains(&"/df-authentication/cancel"), "{paths:?}");
    for r in &seen {
        assert_eq!(
            r.thumbprint.as_deref(),
            Some(pki.a.thumbprint().as_str()),
            "{r:?}"
        );
        if r.path != "/userinfo" {
            assert_eq!(r.param("client_id"), Some(CLIENT), "{r:?}");
            assert_eq!(r.param("client_secret"), None);
            assert_eq!(r.param("client_assertion"), None);
        }
    }
    // Nothing reached the plain endpoints directly: every token,
    // UserInfo and cancellation request the OP saw came through the alias.
    let through_alias = |path: &str| seen.iter().filter(|r| r.path == path).count();
    assert_eq!(s.op.request_count(Endpoint::Token), through_alias("/token"));
    assert_eq!(
        s.op.request_count(Endpoint::UserInfo),
        through_alias("/userinfo")
    );
    assert_eq!(
        s.op.request_count(Endpoint::Cancel),
        through_alias("/df-authentication/cancel")
    );
    for r in s.op.requests_to(Endpoint::Token) {
        assert!(r.header("authorization").is_none());
    }
}

/// A pushed authorization request authenticates the client as a token
/// request does: under mutual TLS it goes to the OP's alias of the PAR
/// endpoint (RFC 8705 §5) with the certificate. (An OP whose plain
/// endpoints ask for no certificate, such as `oidc-provider` behind two
/// listeners, refused such a push as an unauthenticated client.)
#[tokio::test]
async fn tls_client_auth_pushes_its_requests_to_the_par_alias() {
    let pki = pki();
    let clock = Arc::new(ManualClock::new(T0));
    let op = mock_op(&clock, AutoApprove::AfterPolls(1)).await;
    let (alias, seen) = alias_server(&pki, op.issuer().to_owned()).await;
    let mut md = op.metadata_json();
    md["mtls_endpoint_aliases"] = serde_json::json!({
        "token_endpoint": format!("{alias}/token"),
        "pushed_authorization_request_endpoint": format!("{alias}/par"),
    });
    let md = ProviderMetadata::from_json(&serde_json::to_vec(&md).unwrap()).unwrap();
    assert!(md.pushed_authorization_request_endpoint.is_some());
    let client = DtrClient::builder()
        .metadata(md)
        .client_id(CLIENT)
        .client_auth(ClientAuth::TlsClientAuth)
        .redirect_uri(REDIRECT)
        .http_config(http_config(&pki, &pki.a, &[]))
        .clock(clock.clone())
        .pushed_authorization_requests(true)
        .build()
        .await
        .unwrap();
    let (url, pending) = client.authorize().push().await.unwrap();
    let pushed: Vec<Seen> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/par")
        .cloned()
        .collect();
    assert_eq!(pushed.len(), 1, "the push did not go to the alias");
    assert_eq!(
        pushed[0].thumbprint.as_deref(),
        Some(pki.a.thumbprint().as_str())
    );
    assert_eq!(pushed[0].param("client_id"), Some(CLIENT));
    assert_eq!(pushed[0].param("state"), Some(pending.state().secret()));
    assert_eq!(op.request_count(Endpoint::PushedAuthorization), 1);
    // The pushed request is the OP's: the flow goes on from it.
    let cb = op.browse(&url).await.unwrap();
    assert!(matches!(
        client.callback(&pending, cb.query()).unwrap(),
        CallbackResponse::Acknowledgment(_)
    ));
}

#[tokio::test]
async fn tls_client_auth_requires_a_client_certificate() {
    let clock = Arc::new(ManualClock::new(T0));
    let op = mock_op(&clock, AutoApprove::Never).await;
    let err = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(CLIENT)
        .client_auth(ClientAuth::SelfSignedTlsClientAuth)
        .redirect_uri(REDIRECT)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Config(ConfigError::Missing("client_identity"))),
        "{err:?}"
    );
    let bad = ClientIdentity::from_pem("not pem", "not pem").unwrap_err();
    assert!(matches!(
        bad,
        ConfigError::Invalid {
            field: "client_identity",
            ..
        }
    ));
    // The key never shows.
    let pki = pki();
    let id = pki.a.identity();
    let shown = format!("{id:?}");
    assert!(shown.contains(&pki.a.thumbprint()) && !shown.contains("PRIVATE"));
}

#[tokio::test]
async fn pending_authentications_keep_their_certificate_across_a_restart_and_a_rotation() {
    let pki = pki();
    let path = TempPath::new("mtls-rotation");
    let clock = Arc::new(ManualClock::new(T0));
    let op = mock_op(&clock, AutoApprove::Never).await;
    let (alias, seen) = alias_server(&pki, op.issuer().to_owned()).await;
    let md = metadata_with_aliases(&op, &alias);

    // Started with A (and one with C, which will be dropped entirely).
    let client = mtls_client(
        &op,
        &md,
        &clock,
        http_config(&pki, &pki.a, &[]),
        Some(open_store(&path.0).await),
    )
    .await;
    let with_a = start(&op, &client).await;
    settle_for(&client).await;
    drop(client);
    let client = mtls_client(
        &op,
        &md,
        &clock,
        http_config(&pki, &pki.c, &[&pki.a]),
        Some(open_store(&path.0).await),
    )
    .await;
    let with_c = start(&op, &client).await;
    assert_eq!(
        with_c.client_cert_thumbprint(),
        Some(pki.c.thumbprint().as_str())
    );
    settle_for(&client).await;
    drop(client);

    // Rotated: B is current, A still in use; C removed.
    let client = mtls_client(
        &op,
        &md,
        &clock,
        http_config(&pki, &pki.b, &[&pki.a]),
        Some(open_store(&path.0).await),
    )
    .await;
    let with_b = start(&op, &client).await;
    assert_eq!(
        with_b.client_cert_thumbprint(),
        Some(pki.b.thumbprint().as_str())
    );
    let s = Setup {
        op,
        client,
        clock: clock.clone(),
    };
    // C's authentication fails with the typed error, nothing sent for it.
    let polls_for = |id: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| r.param("deferred_auth_id") == Some(id))
            .cloned()
            .collect::<Vec<_>>()
    };
    let sent_for_c = polls_for(with_c.id().secret()).len();
    let Outcome::Rejected(failure) =
        run_to_outcome(&s, with_c.id(), S, Duration::from_secs(120)).await
    else {
        panic!("C's authentication must fail")
    };
    let cause = failure
        .cause()
        .and_then(|c| c.downcast_ref::<Error>())
        .expect("a typed cause");
    match cause {
        Error::Config(ConfigError::ClientIdentityNotConfigured { thumbprint }) => {
            assert_eq!(thumbprint, &pki.c.thumbprint());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        polls_for(with_c.id().secret()).len(),
        sent_for_c,
        "never polled with another certificate"
    );

    s.op.approve(with_a.id());
    s.op.approve(with_b.id());
    assert!(matches!(
        run_to_outcome(&s, with_a.id(), S, Duration::from_secs(120)).await,
        Outcome::Tokens(_)
    ));
    assert!(matches!(
        run_to_outcome(&s, with_b.id(), S, Duration::from_secs(120)).await,
        Outcome::Tokens(_)
    ));
    for (auth, leaf) in [(&with_a, &pki.a), (&with_b, &pki.b)] {
        let requests = polls_for(auth.id().secret());
        assert!(requests.len() >= 2, "polled before and after the restart");
        for r in requests {
            assert_eq!(r.thumbprint, Some(leaf.thumbprint()), "{r:?}");
        }
    }
    // C was used for its exchange only.
    let with_c_cert = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.thumbprint == Some(pki.c.thumbprint()))
        .count();
    assert_eq!(with_c_cert, 1);
}

/// Tokens issued to a certificate that was rotated out meanwhile (it is a
/// previous identity now) are presented with it: the access token is
/// bound to it (`cnf` `x5t#S256`), and the OP refuses it with another.
#[tokio::test]
async fn userinfo_presents_the_certificate_the_tokens_were_issued_to_after_a_rotation() {
    let pki = pki();
    let path = TempPath::new("mtls-userinfo-rotation");
    let clock = Arc::new(ManualClock::new(T0));
    let op = mock_op(&clock, AutoApprove::Never).await;
    let (alias, seen) = alias_server(&pki, op.issuer().to_owned()).await;
    let md = metadata_with_aliases(&op, &alias);

    // Started with A.
    let client = mtls_client(
        &op,
        &md,
        &clock,
        http_config(&pki, &pki.a, &[]),
        Some(open_store(&path.0).await),
    )
    .await;
    let with_a = start(&op, &client).await;
    settle_for(&client).await;
    drop(client);

    // Rotated: B is current, A previous. The tokens are issued to A.
    let client = mtls_client(
        &op,
        &md,
        &clock,
        http_config(&pki, &pki.b, &[&pki.a]),
        Some(open_store(&path.0).await),
    )
    .await;
    let s = Setup {
        op,
        client,
        clock: clock.clone(),
    };
    s.op.approve(with_a.id());
    let Outcome::Tokens(tokens) =
        run_to_outcome(&s, with_a.id(), S, Duration::from_secs(120)).await
    else {
        panic!("no tokens")
    };
    assert_eq!(
        tokens.client_cert_thumbprint(),
        Some(pki.a.thumbprint().as_str())
    );
    let info = s.client.userinfo(&tokens).await.unwrap();
    assert!(!info.subject().is_empty());
    let userinfo_certs = || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == "/userinfo")
            .map(|r| r.thumbprint.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(userinfo_certs(), vec![Some(pki.a.thumbprint())]);

    // The binding survives serialisation (a token set kept by the app).
    let json = serde_json::to_string(&tokens).unwrap();
    let back: oidc_dtr::TokenSet = serde_json::from_str(&json).unwrap();
    assert_eq!(
        back.client_cert_thumbprint(),
        tokens.client_cert_thumbprint()
    );
    s.client.userinfo(&back).await.unwrap();

    // A token set stored before the thumbprint was recorded falls back to
    // the current certificate (B): the OP checks the binding and refuses.
    let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
    old.as_object_mut()
        .unwrap()
        .remove("client_cert_thumbprint");
    let old: oidc_dtr::TokenSet = serde_json::from_value(old).unwrap();
    assert_eq!(old.client_cert_thumbprint(), None);
    match s.client.userinfo(&old).await.unwrap_err() {
        Error::Http(oidc_dtr::error::HttpError::Status { status, .. }) => {
            assert_eq!(status, http::StatusCode::UNAUTHORIZED);
        }
        other => panic!("another certificate must be refused by the OP: {other:?}"),
    }
    assert_eq!(
        userinfo_certs().last().cloned().flatten(),
        Some(pki.b.thumbprint())
    );
    let userinfo_calls = userinfo_certs().len();

    // A is removed altogether: a typed error, and nothing is sent.
    let without_a = mtls_client(&s.op, &md, &clock, http_config(&pki, &pki.b, &[]), None).await;
    match without_a.userinfo(&tokens).await.unwrap_err() {
        Error::Config(ConfigError::ClientIdentityNotConfigured { thumbprint }) => {
            assert_eq!(thumbprint, pki.a.thumbprint());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(userinfo_certs().len(), userinfo_calls, "nothing was sent");
}

/// The notification endpoint behind TLS: the server hands the peer's
/// certificate to the receiver as a `PeerCertificate` extension.
#[tokio::test]
async fn pings_are_accepted_only_with_the_ops_certificate() {
    let pki = pki();
    let clock = Arc::new(ManualClock::new(T0));
    let op = mock_op_as(&clock, AutoApprove::Never, false).await;
    let client = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(CLIENT)
        .redirect_uri(REDIRECT)
        .notification_endpoint("https://rp.example/ping")
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let auth = start(&op, &client).await;
    // A is the OP's certificate; B is another, from the same CA.
    let without_bearer = client.ping_receiver().mtls(
        PingMtls::new()
            .trust_certificate_der(&pki.a.der)
            .require_bearer(false),
    );
    let with_bearer = client.ping_receiver().mtls(
        PingMtls::new()
            .trust_certificates_pem(&pki.a.cert_pem)
            .unwrap(),
    );
    let serve = |receiver: oidc_dtr::ping::PingReceiver| {
        move |req: http::Request<Bytes>| {
            let receiver = receiver.clone();
            async move {
                let (parts, body) = receiver.handle(req.map(Full::new)).await.into_parts();
                let _ = body;
                http::Response::from_parts(parts, Full::new(Bytes::new()))
            }
        }
    };
    let open = serve_tls(server_tls(&pki, false), serve(without_bearer)).await;
    let strict = serve_tls(server_tls(&pki, false), serve(with_bearer)).await;

    let sender = |leaf: Option<&Leaf>| {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()]);
        if let Some(l) = leaf {
            let pem = format!("{}{}", l.cert_pem, l.key_pem);
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    let ping = |c: reqwest::Client, base: String, id: String, bearer: Option<&'static str>| async move {
        let mut r = c
            .post(format!("{base}/ping"))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "deferred_auth_id": id }).to_string());
        if let Some(t) = bearer {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        let mut headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .filter(|(k, _)| *k != "date")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        headers.sort();
        (resp.status().as_u16(), headers, resp.bytes().await.unwrap())
    };
    let id = auth.id().secret().to_owned();

    let accepted = ping(sender(Some(&pki.a)), open.clone(), id.clone(), None).await;
    assert_eq!(accepted.0, 204, "the OP's certificate wakes the poll");
    let refused = [
        ping(sender(Some(&pki.b)), open.clone(), id.clone(), None).await,
        ping(sender(None), open.clone(), id.clone(), None).await,
        ping(sender(Some(&pki.a)), open.clone(), "unknown".into(), None).await,
        ping(
            sender(Some(&pki.a)),
            open.clone(),
            id.clone(),
            Some("wrong"),
        )
        .await,
        ping(sender(Some(&pki.a)), strict.clone(), id.clone(), None).await,
        ping(
            sender(Some(&pki.a)),
            strict.clone(),
            id.clone(),
            Some("wrong"),
        )
        .await,
        ping(
            sender(Some(&pki.b)),
            strict.clone(),
            id.clone(),
            Some("wrong"),
        )
        .await,
    ];
    for r in &refused {
        assert_eq!(r.0, 401);
        assert_eq!(r, &refused[0], "every refusal is the same answer");
    }

    // The framework-neutral entry point, with the certificate as bytes.
    let receiver = client.ping_receiver().mtls(
        PingMtls::new()
            .trust_thumbprint(&pki.a.thumbprint())
            .unwrap()
            .require_bearer(false),
    );
    let body = serde_json::json!({ "deferred_auth_id": id }).to_string();
    let raw = |peer: Option<&'static [u8]>| {
        let receiver = receiver.clone();
        let body = body.clone();
        async move {
            receiver
                .handle_raw_with_peer(
                    "POST",
                    Some("application/json"),
                    None,
                    body.as_bytes(),
                    peer,
                )
                .await
                .status
        }
    };
    let a: &'static [u8] = Box::leak(pki.a.der.clone().into_boxed_slice());
    let b: &'static [u8] = Box::leak(pki.b.der.clone().into_boxed_slice());
    assert_eq!(raw(Some(a)).await, 204);
    assert_eq!(raw(Some(b)).await, 401);
    assert_eq!(raw(None).await, 401);
    assert_eq!(
        receiver
            .handle_raw("POST", Some("application/json"), None, body.as_bytes())
            .await
            .status,
        401,
        "handle_raw has no certificate to show"
    );
}

/// The notification endpoint trusting the OP's CA for a subject (as RFC
/// 8705 §2.1.2 registers one for `tls_client_auth`) instead of one pinned
/// certificate: the OP presents its leaf and the intermediate over TLS,
/// and the client's clock decides whether the leaf is still valid.
#[tokio::test]
async fn pings_are_accepted_from_a_ca_issued_certificate_with_the_expected_subject() {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
        ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, date_time_ymd,
    };
    let pki = pki();
    let clock = Arc::new(ManualClock::new(T0));
    let op = mock_op_as(&clock, AutoApprove::Never, false).await;
    let client = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(CLIENT)
        .redirect_uri(REDIRECT)
        .notification_endpoint("https://rp.example/ping")
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let auth = start(&op, &client).await;

    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p
    };
    let root = CertifiedIssuer::self_signed(ca("OP root"), KeyPair::generate().unwrap()).unwrap();
    let issuing =
        CertifiedIssuer::signed_by(ca("OP issuing CA"), KeyPair::generate().unwrap(), &root)
            .unwrap();
    // The OP's identity: leaf, intermediate and key, as one PEM. Valid
    // until 2031-01-01 (after T0, 2030-03-17).
    let op_identity = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["op.example".to_owned()]).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::OrganizationName, "Example OP");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2031, 1, 1);
        let cert = p.signed_by(&key, &issuing).unwrap();
        format!("{}{}{}", cert.pem(), issuing.pem(), key.serialize_pem())
    };
    let receiver = client.ping_receiver().mtls(
        PingMtls::new()
            .trust_ca_pem(
                root.pem(),
                CertificateSubject::new().dn("CN=op.example, O=Example OP"),
            )
            .unwrap()
            .require_bearer(false),
    );
    let base = serve_tls(
        server_tls_for_clients_of(&pki, root.der(), false),
        move |req: http::Request<Bytes>| {
            let receiver = receiver.clone();
            async move {
                let (parts, _) = receiver.handle(req.map(Full::new)).await.into_parts();
                http::Response::from_parts(parts, Full::new(Bytes::new()))
            }
        },
    )
    .await;
    let ping = |identity: Option<String>, id: String| {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()]);
        if let Some(pem) = identity {
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        let c = b.build().unwrap();
        let url = format!("{base}/ping");
        async move {
            let resp = c
                .post(url)
                .header("content-type", "application/json")
                .body(serde_json::json!({ "deferred_auth_id": id }).to_string())
                .send()
                .await
                .unwrap();
            let mut headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .filter(|(k, _)| *k != "date")
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            headers.sort();
            (resp.status().as_u16(), headers, resp.bytes().await.unwrap())
        }
    };
    let id = auth.id().secret().to_owned();
    let good = op_identity("op.example");
    assert_eq!(
        ping(Some(good.clone()), id.clone()).await.0,
        204,
        "the OP's CA-issued certificate wakes the poll"
    );
    let mut refused = vec![
        ping(Some(op_identity("someone-else.example")), id.clone()).await,
        ping(None, id.clone()).await,
        ping(Some(good.clone()), "unknown".into()).await,
    ];
    // Two years on by the client's clock, the same certificate has expired.
    clock.set(oidc_dtr::UnixTime::from_secs(1_960_000_000));
    refused.push(ping(Some(good), id).await);
    for r in &refused {
        assert_eq!(r.0, 401);
        assert_eq!(r, &refused[0], "every refusal is the same answer");
    }
}
