//! High assurance: FAPI 2.0 (`--fapi2`), PAR (`--par`), signed request
//! objects (`--request-object`), mutual TLS (`--client-cert`,
//! `--client-key`, `--ca`) against a TLS front that requires client
//! certificates, and the refusals (exit 2, with what to change).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oidc_dtr::jose::{Algorithm, SigningKey};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const FAPI_CLIENT: &str = "fapi-rp";

/// Writes `text` to `dir/name` with `mode`.
fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A fresh ES256 key as PKCS#8 PEM, and its public JWK.
fn es256_pem() -> (String, serde_json::Value) {
    let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let jwk = SigningKey::from_pem(Algorithm::ES256, &pem)
        .unwrap()
        .public_jwk()
        .unwrap();
    (pem, jwk)
}

/// The id in dtr's `--no-wait` JSON line.
fn id_of(done: &Done) -> String {
    done.json()["id"].as_str().unwrap().to_owned()
}

/// A mock OP in FAPI 2.0 mode: PAR required, DPoP required, ID tokens
/// signed with ES256; a `private_key_jwt` client with a fresh key (its
/// PEM file, owner-only, is returned).
async fn fapi_op() -> (Env, PathBuf) {
    let env = Env::signing(Algorithm::ES256, |c| {
        c.require_pushed_authorization_requests = true;
        c.require_dpop = true;
    })
    .await;
    let (pem, jwk) = es256_pem();
    env.op
        .register_client(RegisteredClient::private_key_jwt(FAPI_CLIENT, vec![jwk]));
    let key = write(env.dir.path(), "client.pem", &pem, 0o600);
    (env, key)
}

#[tokio::test]
async fn fapi2_with_par_and_a_request_object_is_deferred_then_resumed() {
    let (env, key) = fapi_op().await;
    let mut c = env.dtr();
    c.args([
        "verify",
        "--issuer",
        env.op.issuer(),
        "--client-id",
        FAPI_CLIENT,
        "--private-key-file",
        key.to_str().unwrap(),
        "--fapi2",
        "--par",
        "--request-object",
        "--scope",
        "profile",
        "--no-browser",
        "--no-wait",
    ]);
    let mut run = Running::spawn(c);
    let url = run.auth_url().await;
    // The browser carries only the client id and the pushed request's URI.
    let names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    assert_eq!(names, ["client_id", "request_uri"], "{url}");
    assert_eq!(play_browser(&env.op, &url).await, 200);
    let done = run.finish().await;
    assert_eq!(done.code, Some(7), "{done:?}");
    let id = id_of(&done);

    // The push: signed request object, private_key_jwt, DPoP.
    let pushes = env.op.requests_to(Endpoint::PushedAuthorization);
    assert_eq!(pushes.len(), 1);
    let push = &pushes[0];
    assert!(push.param("request").is_some(), "a request object");
    assert!(
        push.param("scope").is_none(),
        "only inside the request object"
    );
    assert!(push.param("client_assertion").is_some());
    assert!(push.header("dpop").is_some());
    // The deferral is DPoP-bound.
    let auth = env.the_auth();
    assert_eq!(auth.state, AuthState::Pending);
    assert!(env.op.dpop_binding(&auth.deferred_auth_id).is_some());
    // What a resumed poll needs is in the index (paths, never a key).
    let text = std::fs::read_to_string(env.state_dir().join("index.json")).unwrap();
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    let index: serde_json::Value = serde_json::from_str(&text).unwrap();
    let client = &index["entries"][0]["client"];
    assert_eq!(client["fapi2"], true, "{client}");
    assert_eq!(client["par"], true, "{client}");
    assert_eq!(client["request_object_key"]["path"], key.to_str().unwrap());

    // A new process resumes it, with the same client.
    env.op.approve(&auth.deferred_auth_id);
    let done = env.run(&["wait", &id]).await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(done.json()["token_type"], "DPoP", "{}", done.stdout);
    for r in env.op.requests_to(Endpoint::Token) {
        assert!(r.param("client_assertion").is_some(), "{r:?}");
        assert!(r.header("dpop").is_some(), "{r:?}");
    }
}

#[tokio::test]
async fn fapi2_refuses_what_the_profile_forbids_with_exit_2_and_what_to_change() {
    let (env, key) = fapi_op().await;
    let env = &env;
    let secret = write(env.dir.path(), "secret", MockOp::CLIENT_SECRET, 0o600);
    let base = |extra: &[&str]| {
        let mut args = vec![
            "verify".to_owned(),
            "--issuer".into(),
            env.op.issuer().into(),
            "--client-id".into(),
            FAPI_CLIENT.into(),
            "--fapi2".into(),
            "--no-browser".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        env.run(&refs).await
    };
    // A client secret.
    let d = run(base(&["--client-secret-file", secret.to_str().unwrap()])).await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert_eq!(d.stderr.trim().lines().count(), 1, "{}", d.stderr);
    for needle in [
        "--fapi2 forbids client secrets",
        "drop --client-secret-file",
        "--private-key-file",
        "--client-cert",
        "drop --fapi2",
    ] {
        assert!(d.stderr.contains(needle), "{needle}: {}", d.stderr);
    }
    assert!(!d.stderr.contains(MockOp::CLIENT_SECRET));
    // The same from the environment.
    let mut c = env.dtr();
    c.args(["verify", "--no-browser"])
        .env("DTR_ISSUER", env.op.issuer())
        .env("DTR_CLIENT_ID", FAPI_CLIENT)
        .env("DTR_CLIENT_SECRET_FILE", &secret)
        .env("DTR_FAPI2", "true");
    let out = c.output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fapi2 forbids client secrets"));
    // A public client.
    let d = run(base(&[])).await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert!(d.stderr.contains("forbids public clients"), "{}", d.stderr);
    // Tokens without a sender constraint.
    let d = run(base(&[
        "--private-key-file",
        key.to_str().unwrap(),
        "--no-dpop",
    ]))
    .await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert!(
        d.stderr.contains("drop --no-dpop") && d.stderr.contains("--client-cert"),
        "{}",
        d.stderr
    );
    // Nothing reached the OP: refused before discovery.
    assert!(env.op.requests().is_empty(), "{:?}", env.op.requests());

    // An algorithm FAPI 2.0 forbids, refused by the library at build:
    // still exit 2, with the flag to change.
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .unwrap()
        .serialize_pem();
    let p384 = write(env.dir.path(), "p384.pem", &p384, 0o600);
    let d = run(base(&[
        "--private-key-file",
        key.to_str().unwrap(),
        "--request-object-key",
        p384.to_str().unwrap(),
        "--request-object-alg",
        "ES384",
    ]))
    .await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert!(
        d.stderr.contains("--fapi2") && d.stderr.contains("--request-object-alg"),
        "{}",
        d.stderr
    );
    assert!(env.op.requests_to(Endpoint::PushedAuthorization).is_empty());
    // --request-object without a key to sign with.
    let d = env
        .run(&[
            "verify",
            "--issuer",
            env.op.issuer(),
            "--client-id",
            MockOp::PUBLIC_CLIENT_ID,
            "--request-object",
        ])
        .await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert!(d.stderr.contains("--request-object-key"), "{}", d.stderr);
}

/// A CA, a server certificate for 127.0.0.1, and two client
/// certificates, as PEM files in `dir` (keys owner-only).
struct Pki {
    ca: PathBuf,
    server: (Vec<u8>, Vec<u8>),
    ca_der: Vec<u8>,
    /// (cert, key, DER of the cert)
    a: (PathBuf, PathBuf, Vec<u8>),
    b: (PathBuf, PathBuf, Vec<u8>),
}

fn pki(dir: &Path) -> Pki {
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
        (cert, key)
    };
    let (server, server_key) = leaf(vec!["127.0.0.1".into()], "server");
    let client = |name: &str| {
        let (cert, key) = leaf(vec![], name);
        (
            write(dir, &format!("{name}.crt"), &cert.pem(), 0o644),
            write(dir, &format!("{name}.key"), &key.serialize_pem(), 0o600),
            cert.der().to_vec(),
        )
    };
    Pki {
        ca: write(dir, "ca.pem", &ca.pem(), 0o644),
        ca_der: ca.der().to_vec(),
        server: (server.der().to_vec(), server_key.serialize_der()),
        a: client("client-a"),
        b: client("client-b"),
    }
}

/// A TLS front that requires a client certificate (from the CA) and
/// passes the bytes on to `target`: the OP's mTLS endpoints. Returns its
/// `https://` base and the leaf certificate of every connection.
async fn tls_front(pki: &Pki, target: SocketAddr) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca_der.clone())).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(pki.server.0.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server.1.clone())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    log.lock().unwrap().push(leaf.to_vec());
                }
                let Ok(mut up) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (base, seen)
}

#[tokio::test]
async fn mutual_tls_with_fapi2_through_the_ops_aliases_and_after_a_restart() {
    let env = Env::signing(Algorithm::ES256, |_| {}).await;
    let certs = env.dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let pki = pki(&certs);
    let (front, seen) = tls_front(&pki, env.op.addr()).await;
    // The plain token and UserInfo endpoints lead nowhere: only the
    // aliases (RFC 8705 §5), over mutual TLS, work.
    env.op.configure(|c| {
        let md = &mut c.extra_metadata;
        md.insert("token_endpoint".into(), "http://127.0.0.1:9/token".into());
        md.insert(
            "userinfo_endpoint".into(),
            "http://127.0.0.1:9/userinfo".into(),
        );
        md.insert(
            "mtls_endpoint_aliases".into(),
            serde_json::json!({
                "token_endpoint": format!("{front}/token"),
                "userinfo_endpoint": format!("{front}/userinfo"),
            }),
        );
    });
    let (cert_a, key_a, der_a) = pki.a.clone();
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    // The client key may be read by others: refused before anything is sent.
    std::fs::set_permissions(&key_a, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "verify",
            "--issuer",
            env.op.issuer(),
            "--client-id",
            MockOp::PUBLIC_CLIENT_ID,
            "--fapi2",
            "--no-dpop",
            "--ca",
            pki.ca.to_str().unwrap(),
            "--no-browser",
            "--no-wait",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let a_args = args(&[
        "--client-cert",
        &path(&cert_a),
        "--client-key",
        &path(&key_a),
    ]);
    let refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let d = env.run(&refs).await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert!(
        d.stderr.contains("client certificate key")
            && d.stderr.contains(&format!("chmod 600 {}", key_a.display())),
        "{}",
        d.stderr
    );
    assert!(!d.stderr.contains("PRIVATE KEY"));
    assert!(env.op.requests().is_empty(), "nothing was sent");
    std::fs::set_permissions(&key_a, std::fs::Permissions::from_mode(0o600)).unwrap();

    // tls_client_auth under FAPI 2.0, certificate-bound (no DPoP).
    let mut c = env.dtr();
    c.args(&refs);
    let mut run = Running::spawn(c);
    let url = run.auth_url().await;
    assert_eq!(play_browser(&env.op, &url).await, 200);
    let done = run.finish().await;
    assert_eq!(done.code, Some(7), "{done:?}");
    let id = id_of(&done);
    let exchange = env.op.requests_to(Endpoint::Token);
    assert_eq!(exchange.len(), 1, "the exchange came through the alias");
    assert_eq!(
        exchange[0].param("client_id"),
        Some(MockOp::PUBLIC_CLIENT_ID)
    );
    assert!(exchange[0].param("client_assertion").is_none());
    assert!(exchange[0].header("dpop").is_none());
    assert!(
        env.op.requests_to(Endpoint::PushedAuthorization).len() == 1,
        "FAPI 2.0 pushes"
    );
    let text = std::fs::read_to_string(env.state_dir().join("index.json")).unwrap();
    let index: serde_json::Value = serde_json::from_str(&text).unwrap();
    let client = &index["entries"][0]["client"];
    assert_eq!(client["auth"]["method"], "tls_client_auth", "{client}");
    assert_eq!(client["client_cert"]["cert"], path(&cert_a), "{client}");
    assert_eq!(client["ca"], path(&pki.ca), "{client}");

    // A new process, after a restart: the same certificate, from the index.
    env.op.approve(&env.the_auth().deferred_auth_id);
    let done = env.run(&["wait", &id]).await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let d = env.run(&["userinfo", &id]).await;
    assert_eq!(d.code, Some(0), "{d:?}");
    assert!(env.op.request_count(Endpoint::UserInfo) >= 1);
    let certs_seen = seen.lock().unwrap().clone();
    assert!(certs_seen.len() >= 2, "{}", certs_seen.len());
    assert!(
        certs_seen.iter().all(|c| *c == der_a),
        "only client A's certificate"
    );

    // A renewed certificate for the commands that come back: the
    // verification keeps the one it started with while its files load.
    let (cert_b, key_b, der_b) = pki.b.clone();
    let mut c = env.dtr();
    c.args(&refs);
    let mut run = Running::spawn(c);
    let url = run.auth_url().await;
    assert_eq!(play_browser(&env.op, &url).await, 200);
    let done = run.finish().await;
    assert_eq!(done.code, Some(7), "{done:?}");
    let id2 = id_of(&done);
    let pending = env
        .op
        .authentications()
        .into_iter()
        .find(|a| a.state == AuthState::Pending)
        .unwrap();
    env.op.approve(&pending.deferred_auth_id);
    seen.lock().unwrap().clear();
    let d = env
        .run(&[
            "wait",
            &id2,
            "--client-cert",
            &path(&cert_b),
            "--client-key",
            &path(&key_b),
        ])
        .await;
    assert_eq!(d.code, Some(0), "{d:?}");
    let certs_seen = seen.lock().unwrap().clone();
    assert!(
        !certs_seen.is_empty()
            && certs_seen.iter().all(|c| *c == der_a)
            && !certs_seen.contains(&der_b),
        "polled with the certificate it started with"
    );

    // The certificate a verification started with is gone, another one
    // is given: refused (exit 2), nothing changed; with it back, it goes on.
    let mut c = env.dtr();
    c.args(&refs);
    let mut run = Running::spawn(c);
    let url = run.auth_url().await;
    assert_eq!(play_browser(&env.op, &url).await, 200);
    let done = run.finish().await;
    assert_eq!(done.code, Some(7), "{done:?}");
    let id3 = id_of(&done);
    let moved = key_a.with_extension("moved");
    std::fs::rename(&key_a, &moved).unwrap();
    let with_b = [
        "wait",
        &id3,
        "--client-cert",
        &path(&cert_b),
        "--client-key",
        &path(&key_b),
    ];
    let d = env.run(&with_b).await;
    assert_eq!(d.code, Some(2), "{d:?}");
    assert!(
        d.stderr.contains("bound to the client certificate") && d.stderr.contains("--client-cert"),
        "{}",
        d.stderr
    );
    assert_eq!(
        env.run(&["list", "--json"]).await.json()[2]["status"],
        "pending"
    );
    std::fs::rename(&moved, &key_a).unwrap();
    let pending = env
        .op
        .authentications()
        .into_iter()
        .find(|a| a.state == AuthState::Pending)
        .unwrap();
    env.op.approve(&pending.deferred_auth_id);
    let d = env.run(&with_b).await;
    assert_eq!(d.code, Some(0), "{d:?}");
}
