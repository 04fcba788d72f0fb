//! Interop with a real, unmodified third-party OpenID Provider: panva's
//! `oidc-provider` from the npm registry (the exact version is pinned in
//! `tests/interop/oidc-provider/package.json` and its lock file), with its
//! FAPI 2.0 profile on, PAR required, request objects, DPoP (server nonces
//! required) and mutual TLS (`tls_client_auth`,
//! `self_signed_tls_client_auth`, certificate-bound access tokens).
//!
//! The host app (`tests/interop/oidc-provider/server.mjs`) runs the OP over
//! HTTPS on 127.0.0.1: the issuer's listener asks for no client
//! certificate, a second one does and is published as the
//! `mtls_endpoint_aliases` of the token, PAR and UserInfo endpoints. Its
//! interaction route completes login and consent for the account `alice`
//! at once, so the test follows the redirects with a plain HTTP client
//! that keeps cookies. The certificates (a CA, the server's, the clients')
//! and the client keys are made here, for each test.
//!
//! Every test runs the plain authorization code flow (`response_type=code`)
//! of a `DtrClient` in FAPI 2.0 mode ([`DtrClientBuilder::fapi2`]) built
//! from the OP's discovery document. The refusals are each seen as a typed
//! [`Error`], nothing panicking.
//!
//! Node.js and npm are needed. When `node_modules` is missing, `npm ci` is
//! run in that directory first. Without node or npm the tests print why and
//! pass, except under `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use oidc_dtr::{
    CallbackResponse, ClientAuth, DtrClient, DtrClientBuilder, Error, TokenSet,
    client::{ClientIdentity, HttpConfig, ResponseType},
    error::{CallbackError, ConfigError, ErrorCode, ParError},
    jose::{Algorithm, SignFuture, Signer, SigningKey},
    time::{ManualClock, UnixTime},
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use url::Url;

const REDIRECT: &str = "https://rp.example/cb";
const ACCOUNT: &str = "alice";
/// The subject DN registered for the `tls_client_auth` client.
const MTLS_DN: &str = "interop-mtls-client";

const PKJWT: &str = "fapi-pkjwt";
const PKJWT_JAR: &str = "fapi-pkjwt-jar";
const MTLS: &str = "fapi-mtls";
const SELF_SIGNED: &str = "fapi-self-signed";

// ---------------------------------------------------------------- node

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/oidc-provider")
}

fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn npm() -> &'static str {
    if cfg!(windows) { "npm.cmd" } else { "npm" }
}

/// Whether a program runs (`--version`).
fn runs(program: &str) -> Result<String, String> {
    match std::process::Command::new(program)
        .arg("--version")
        .output()
    {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        Ok(o) => Err(format!("`{program} --version` exited with {}", o.status)),
        Err(e) => Err(format!("`{program}` cannot be run: {e}")),
    }
}

/// Node and the OP's packages, once per process: `Ok`, or why the interop
/// tests cannot run here.
fn node_ready() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let node = runs("node")?;
            runs(npm())?;
            let dir = interop_dir();
            if !dir
                .join("node_modules/oidc-provider/package.json")
                .is_file()
            {
                eprintln!(
                    "interop: node {node}; running `npm ci` in {}",
                    dir.display()
                );
                let out = std::process::Command::new(npm())
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&dir)
                    .output()
                    .map_err(|e| format!("`npm ci` cannot be run: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "`npm ci` in {} failed ({}): {}",
                        dir.display(),
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            Ok(())
        })
        .clone()
}

/// The running OP: the node process (killed when this is dropped, a panic
/// included) and what it wrote to stderr.
struct NodeOp {
    child: tokio::process::Child,
    issuer: String,
    stderr: Arc<Mutex<String>>,
    _config: ConfigFile,
}

struct ConfigFile(PathBuf);

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for NodeOp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl NodeOp {
    /// Starts the OP with `config`; `None` (after saying why) when node is
    /// not available outside CI.
    async fn start(config: &Value) -> Option<NodeOp> {
        if let Err(why) = node_ready() {
            assert!(
                !on_ci(),
                "the oidc-provider interop test cannot run under CI=true: {why}"
            );
            eprintln!("SKIPPED: the oidc-provider interop test needs Node.js and npm: {why}");
            return None;
        }
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "oidc-dtr-interop-{}-{}.json",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, serde_json::to_vec(config).unwrap()).unwrap();
        let config_file = ConfigFile(path);
        let mut child = tokio::process::Command::new("node")
            .arg(interop_dir().join("server.mjs"))
            .arg(&config_file.0)
            .current_dir(interop_dir())
            // The host app exits when its stdin closes: even if this
            // process dies without running destructors.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_lines.next_line().await {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut out_lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let issuer = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = out_lines.next_line().await {
                if let Some(issuer) = line.strip_prefix("ISSUER ") {
                    return Some(issuer.trim().to_owned());
                }
            }
            None
        })
        .await;
        let Ok(Some(issuer)) = issuer else {
            let _ = child.start_kill();
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!(
                "the oidc-provider host app did not start; its stderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        tokio::spawn(async move { while let Ok(Some(_)) = out_lines.next_line().await {} });
        Some(NodeOp {
            child,
            issuer,
            stderr,
            _config: config_file,
        })
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Asserts that the OP logged a refusal for this reason: the host app
    /// logs each error event with oidc-provider's `error_detail`, before
    /// the answer is sent; the line is read here as it arrives.
    async fn refused_because(&self, reason: &str) {
        for _ in 0..1_000 {
            if self.stderr.lock().unwrap().contains(reason) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the OP did not log {reason:?}; its stderr:\n{}",
            self.stderr()
        );
    }
}

// ------------------------------------------------------------ the PKI

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
    /// The public key, uncompressed (`04 || x || y`), P-256.
    public_raw: Vec<u8>,
}

impl Leaf {
    fn identity(&self) -> ClientIdentity {
        ClientIdentity::from_pem(&self.cert_pem, &self.key_pem).unwrap()
    }

    /// The certificate's key as a JWK carrying the certificate (`x5c`), as
    /// `self_signed_tls_client_auth` registers it (RFC 8705 §2.2).
    fn jwk_with_x5c(&self) -> Value {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64(&self.public_raw[1..33]),
            "y": b64(&self.public_raw[33..65]),
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.der)],
        })
    }
}

struct Pki {
    ca_pem: String,
    server: Leaf,
    /// Issued by the CA to the `tls_client_auth` client's DN.
    mtls: Leaf,
    /// Issued by the CA to another DN.
    other: Leaf,
    /// Self-signed, with the `tls_client_auth` client's DN: not from the CA.
    rogue: Leaf,
    /// The `self_signed_tls_client_auth` client's registered certificate.
    self_signed: Leaf,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "oidc-dtr interop CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let params = |sans: Vec<String>, cn: &str| {
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    };
    let leaf = |key: KeyPair, cert: rcgen::Certificate| Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
        public_raw: key.public_key_raw().to_vec(),
    };
    let issued = |sans: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = params(sans, cn).signed_by(&key, &ca).unwrap();
        leaf(key, cert)
    };
    let self_signed = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = params(vec![], cn).self_signed(&key).unwrap();
        leaf(key, cert)
    };
    Pki {
        server: issued(vec!["127.0.0.1".into()], "127.0.0.1"),
        mtls: issued(vec![], MTLS_DN),
        other: issued(vec![], "interop-other-client"),
        rogue: self_signed(MTLS_DN),
        self_signed: self_signed("interop-self-signed-client"),
        ca_pem: ca.pem(),
    }
}

// ------------------------------------------------------------ the setup

/// The client keys registered at the OP.
struct Keys {
    /// `private_key_jwt` (ES256) of [`PKJWT`].
    es256: SigningKey,
    /// `private_key_jwt` and request objects (PS256) of [`PKJWT_JAR`].
    ps256: SigningKey,
    /// Request objects (ES256) of the `tls_client_auth` client [`MTLS`].
    mtls_ro: SigningKey,
}

fn keys() -> Keys {
    Keys {
        es256: SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid("pkjwt-es256"),
        ps256: SigningKey::generate(Algorithm::PS256)
            .unwrap()
            .with_kid("pkjwt-ps256"),
        mtls_ro: SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid("mtls-ro"),
    }
}

fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk().unwrap()).collect::<Vec<_>>() })
}

/// The host app's configuration: TLS, the CA, the clients' registrations.
fn op_config(pki: &Pki, keys: &Keys) -> Value {
    json!({
        "server_cert_pem": pki.server.cert_pem,
        "server_key_pem": pki.server.key_pem,
        "ca_pem": pki.ca_pem,
        "redirect_uri": REDIRECT,
        "clients": [
            {
                "client_id": PKJWT,
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": jwks(&[&keys.es256]),
                "dpop_bound_access_tokens": true,
            },
            {
                "client_id": PKJWT_JAR,
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": jwks(&[&keys.ps256]),
                "dpop_bound_access_tokens": true,
            },
            {
                "client_id": MTLS,
                "token_endpoint_auth_method": "tls_client_auth",
                "tls_client_auth_subject_dn": format!("CN={MTLS_DN}"),
                "tls_client_certificate_bound_access_tokens": true,
                "jwks": jwks(&[&keys.mtls_ro]),
            },
            {
                "client_id": SELF_SIGNED,
                "token_endpoint_auth_method": "self_signed_tls_client_auth",
                "tls_client_certificate_bound_access_tokens": true,
                "jwks": { "keys": [pki.self_signed.jwk_with_x5c()] },
            },
        ],
    })
}

fn http(pki: &Pki) -> HttpConfig {
    HttpConfig::default()
        .add_root_certificates_pem(&pki.ca_pem)
        .unwrap()
}

/// A FAPI 2.0 client of the OP, from its discovery document. The OP does
/// not advertise the Deferred Token Response: only the plain code flow is
/// used.
fn builder(op: &NodeOp, client_id: &str, http: HttpConfig) -> DtrClientBuilder {
    DtrClient::builder()
        .issuer(&op.issuer)
        .client_id(client_id)
        .redirect_uri(REDIRECT)
        .http_config(http)
        .allow_unadvertised_dtr()
        .fapi2()
}

async fn build(op: &NodeOp, b: DtrClientBuilder) -> DtrClient {
    match b.build().await {
        Ok(c) => c,
        Err(e) => panic!("build: {e:?}\nOP stderr:\n{}", op.stderr()),
    }
}

// ------------------------------------------------------------ the browser

/// Follows the redirects from `url` as a browser would (keeping cookies),
/// through the host app's automatic login and consent, up to the redirect
/// to [`REDIRECT`], which it returns.
async fn browse(pki: &Pki, url: &Url) -> Url {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let mut cookies: Vec<(String, String)> = Vec::new();
    let mut url = url.clone();
    for _ in 0..20 {
        let cookie = cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut req = browser.get(url.clone());
        if !cookie.is_empty() {
            req = req.header("cookie", cookie);
        }
        let resp = req.send().await.unwrap();
        for sc in resp.headers().get_all("set-cookie") {
            let sc = sc.to_str().unwrap();
            let pair = sc.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            cookies.retain(|(k, _)| k != name);
            let expired = sc.to_ascii_lowercase().contains("expires=thu, 01 jan 1970");
            if !value.is_empty() && !expired {
                cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let status = resp.status();
        if !status.is_redirection() {
            let body = resp.text().await.unwrap_or_default();
            panic!("the browser stopped at {url} with {status}: {body}");
        }
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let next = url.join(&location).unwrap();
        if next.as_str().starts_with(REDIRECT) {
            return next;
        }
        url = next;
    }
    panic!("too many redirects")
}

// ------------------------------------------------------------ the flow

/// Pushes a code-flow request (scope `openid email`), checks the
/// front-channel URL, and follows the browser to the redirect back.
async fn authorize(pki: &Pki, client: &DtrClient) -> (Url, oidc_dtr::PendingAuthorization, Url) {
    let (url, pending) = client
        .authorize()
        .scope("email")
        .response_type(ResponseType::Code)
        .push()
        .await
        .unwrap();
    // Only `client_id` and `request_uri` go through the browser.
    let names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    assert_eq!(names, ["client_id", "request_uri"], "{url}");
    assert!(pending.is_pushed());
    let back = browse(pki, &url).await;
    (url, pending, back)
}

/// The whole code flow: push, browse, callback, code exchange.
async fn sign_in(op: &NodeOp, pki: &Pki, client: &DtrClient) -> TokenSet {
    let (_, pending, back) = authorize(pki, client).await;
    let code = match client.callback(&pending, back.as_str()) {
        Ok(CallbackResponse::Code(code)) => code,
        other => panic!("{other:?} ({back})\nOP stderr:\n{}", op.stderr()),
    };
    match client.exchange_code(code).await {
        Ok(t) => t,
        Err(e) => panic!("exchange_code: {e:?}\nOP stderr:\n{}", op.stderr()),
    }
}

/// The JOSE header of a compact JWS.
fn jws_header(jwt: &str) -> Value {
    let h = jwt.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(h)
            .unwrap(),
    )
    .unwrap()
}

/// The checks of a successful sign-in: the ID token (validated by the SDK
/// against the OP's JWK Set) and UserInfo with the sender-constrained
/// access token.
async fn check_tokens(op: &NodeOp, client: &DtrClient, tokens: &TokenSet) {
    let claims = tokens.claims();
    assert_eq!(claims.subject(), ACCOUNT);
    assert_eq!(claims.issuer(), op.issuer);
    assert_eq!(claims.audiences(), [client.client_id().to_owned()]);
    let header = jws_header(tokens.id_token().raw().secret());
    assert_eq!(header["alg"], "ES256");
    // The key came from the OP's published JWK Set.
    assert_eq!(header["kid"], "op-es256");
    assert!(client.export_jwks().is_some());
    let info = match client.userinfo(tokens).await {
        Ok(i) => i,
        Err(e) => panic!("userinfo: {e:?}\nOP stderr:\n{}", op.stderr()),
    };
    assert_eq!(info.subject(), ACCOUNT);
    assert_eq!(
        info.claim("email").and_then(Value::as_str),
        Some("alice@example.test")
    );
}

/// The OAuth error code of a refusal, or a panic with what came instead.
fn oauth_code(op: &NodeOp, r: Result<impl std::fmt::Debug, Error>) -> ErrorCode {
    match r {
        Err(e) => match e.oauth() {
            Some(o) => o.code.clone(),
            None => panic!("not an OAuth error: {e:?}\nOP stderr:\n{}", op.stderr()),
        },
        Ok(v) => panic!("accepted: {v:?}"),
    }
}

/// A request-object signer whose signatures are corrupted: a request object
/// tampered with on its way.
struct Tampering(SigningKey);

impl Signer for Tampering {
    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
    fn key_id(&self) -> Option<&str> {
        self.0.kid()
    }
    fn public_jwk(&self) -> Option<Value> {
        self.0.public_jwk()
    }
    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> SignFuture<'a> {
        let mut sig = self.0.sign(signing_input).unwrap();
        sig[0] ^= 0x01;
        Box::pin(std::future::ready(Ok(sig)))
    }
}

// ------------------------------------------------------------ the tests

/// FAPI 2.0 with `private_key_jwt` and DPoP: the request pushed (PAR) with
/// PKCE S256 and `dpop_jkt`, the authorization response's `iss` checked,
/// the client assertion's `aud` the issuer alone (oidc-provider's FAPI 2.0
/// profile refuses anything else), DPoP server nonces (the OP requires them
/// in every proof) learnt from PAR's `use_dpop_nonce` answer and sent with
/// every later proof, the ID token (ES256) validated with
/// the OP's JWK Set, UserInfo with the DPoP-bound access token; then JAR
/// inside PAR (PS256 request object and client assertion).
///
/// And the refusals: an authorization response without the OP's `iss`
/// (refused by the SDK), a client assertion signed with a key the OP does not
/// know (`invalid_client`), a request that would drop PKCE (refused by the
/// SDK before anything is sent), a response type the OP does not support
/// (`unsupported_response_type` at PAR), a tampered request object
/// (`invalid_request_object`), and a code redeemed with a DPoP key other
/// than the one it was bound to (`invalid_grant`).
#[tokio::test]
async fn fapi2_private_key_jwt_and_dpop_against_oidc_provider() {
    let pki = pki();
    let keys = keys();
    let Some(op) = NodeOp::start(&op_config(&pki, &keys)).await else {
        return;
    };

    // (a) private_key_jwt (ES256) + DPoP.
    let client = build(
        &op,
        builder(&op, PKJWT, http(&pki))
            .client_auth(ClientAuth::private_key_jwt(keys.es256.clone())),
    )
    .await;
    assert!(client.pushes_requests());
    let md = client.metadata();
    assert!(md.require_pushed_authorization_requests);
    assert!(md.authorization_response_iss_parameter_supported);
    let (_, pending, back) = authorize(&pki, &client).await;
    assert!(
        pending.dpop_jkt().is_some(),
        "FAPI 2.0 requests are DPoP-bound"
    );
    assert!(
        back.query_pairs()
            .any(|(k, v)| k == "iss" && v == op.issuer.as_str()),
        "{back}"
    );
    // Without its `iss`, or with another, the same response is refused.
    let with_iss = |iss: Option<&str>| {
        let mut u = back.clone();
        let pairs: Vec<(String, String)> = back
            .query_pairs()
            .filter(|(k, _)| k != "iss")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .chain(iss.map(|i| ("iss".to_owned(), i.to_owned())))
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        u
    };
    let r = client.callback(&pending, with_iss(None).as_str());
    assert!(
        matches!(r, Err(Error::Callback(CallbackError::MissingIssuer))),
        "{r:?}"
    );
    let r = client.callback(&pending, with_iss(Some("https://op.example")).as_str());
    assert!(
        matches!(
            r,
            Err(Error::Callback(CallbackError::IssuerMismatch { .. }))
        ),
        "{r:?}"
    );
    let code = match client.callback(&pending, back.as_str()).unwrap() {
        CallbackResponse::Code(c) => c,
        other => panic!("{other:?}"),
    };
    let tokens = client.exchange_code(code).await.unwrap();
    assert!(tokens.is_dpop(), "{}", tokens.token_type());
    assert_eq!(
        tokens.dpop_key().map(|k| k.thumbprint()),
        pending.dpop_jkt()
    );
    check_tokens(&op, &client, &tokens).await;

    // (c) JAR inside PAR: PS256 request object and client assertion.
    let jar = build(
        &op,
        builder(&op, PKJWT_JAR, http(&pki))
            .client_auth(ClientAuth::private_key_jwt(keys.ps256.clone()))
            .request_object_signing_key(keys.ps256.clone()),
    )
    .await;
    let tokens = sign_in(&op, &pki, &jar).await;
    assert!(tokens.is_dpop());
    check_tokens(&op, &jar, &tokens).await;

    // A client assertion signed with a key the OP does not know, under
    // the registered `kid`.
    let stranger = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("pkjwt-es256");
    let wrong_key = build(
        &op,
        builder(&op, PKJWT, http(&pki)).client_auth(ClientAuth::private_key_jwt(stranger)),
    )
    .await;
    let r = wrong_key
        .authorize()
        .response_type(ResponseType::Code)
        .push()
        .await;
    assert!(
        matches!(r, Err(Error::PushedAuthorization(ParError::Refused { .. }))),
        "{r:?}"
    );
    assert_eq!(oauth_code(&op, r), ErrorCode::InvalidClient);
    op.refused_because("client authentication failed (signature verification failed)")
        .await;

    // PKCE cannot be dropped or weakened: the SDK refuses before sending.
    let r = client
        .authorize()
        .response_type(ResponseType::Code)
        .param("code_challenge_method", "plain")
        .push()
        .await;
    assert!(
        matches!(&r, Err(Error::Config(ConfigError::ReservedParameter(p))) if p == "code_challenge_method"),
        "{r:?}"
    );

    // A response type the OP does not support (the Deferred Token
    // Response's), refused at PAR.
    let r = client
        .authorize()
        .response_type(ResponseType::DeferredCode)
        .push()
        .await;
    assert_eq!(oauth_code(&op, r), ErrorCode::UnsupportedResponseType);
    op.refused_because("unsupported response_type requested")
        .await;

    // A request object whose signature does not verify.
    let tampered = build(
        &op,
        builder(&op, PKJWT_JAR, http(&pki))
            .client_auth(ClientAuth::private_key_jwt(keys.ps256.clone()))
            .request_object_signer(Arc::new(Tampering(keys.ps256.clone()))),
    )
    .await;
    let r = tampered
        .authorize()
        .response_type(ResponseType::Code)
        .push()
        .await;
    assert_eq!(oauth_code(&op, r), ErrorCode::InvalidRequestObject);
    op.refused_because("could not validate Request Object (signature verification failed)")
        .await;

    // The code is bound to the pushed request's DPoP key (`dpop_jkt`): a
    // session value whose key was swapped for another's is refused.
    let (_, bound, back) = authorize(&pki, &client).await;
    let (_, other_flow) = client
        .authorize()
        .response_type(ResponseType::Code)
        .push()
        .await
        .unwrap();
    let mut swapped = serde_json::to_value(&bound).unwrap();
    swapped["dpop_key"] = serde_json::to_value(&other_flow).unwrap()["dpop_key"].clone();
    assert_ne!(
        swapped["dpop_key"],
        serde_json::to_value(&bound).unwrap()["dpop_key"]
    );
    let swapped: oidc_dtr::PendingAuthorization = serde_json::from_value(swapped).unwrap();
    let code = match client.callback(&swapped, back.as_str()).unwrap() {
        CallbackResponse::Code(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        oauth_code(&op, client.exchange_code(code).await),
        ErrorCode::InvalidGrant
    );
    op.refused_because("DPoP proof key thumbprint does not match dpop_jkt")
        .await;
}

/// FAPI 2.0 with mutual TLS: `tls_client_auth` at the OP's
/// `mtls_endpoint_aliases` (PAR, token and UserInfo requests all go to the
/// listener that asks for a certificate), a certificate-bound access token
/// used at UserInfo, and `self_signed_tls_client_auth`.
///
/// And the refusals: a certificate with the client's DN that the CA did not
/// issue (`invalid_client` at PAR), a token request with another client's
/// certificate (`invalid_client`), the access token presented with another
/// certificate at UserInfo, and an expired request object
/// (`invalid_request_object`).
#[tokio::test]
async fn fapi2_mutual_tls_against_oidc_provider() {
    let pki = pki();
    let keys = keys();
    let Some(op) = NodeOp::start(&op_config(&pki, &keys)).await else {
        return;
    };
    let mtls_http = |leaf: &Leaf| http(&pki).client_identity(leaf.identity());

    // (b) tls_client_auth, certificate-bound tokens.
    let client = build(
        &op,
        builder(&op, MTLS, mtls_http(&pki.mtls)).client_auth(ClientAuth::TlsClientAuth),
    )
    .await;
    let md = client.metadata();
    for name in [
        "token_endpoint",
        "pushed_authorization_request_endpoint",
        "userinfo_endpoint",
    ] {
        let alias = md.mtls_endpoint_aliases.get(name).unwrap();
        assert_ne!(
            alias.port(),
            Url::parse(&op.issuer).unwrap().port(),
            "{name}"
        );
    }
    let (_, pending, back) = authorize(&pki, &client).await;
    assert!(
        pending.dpop_jkt().is_none(),
        "bound to the certificate instead"
    );
    let code = match client.callback(&pending, back.as_str()).unwrap() {
        CallbackResponse::Code(c) => c,
        other => panic!("{other:?}"),
    };
    let tokens = match client.exchange_code(code).await {
        Ok(t) => t,
        Err(e) => panic!("{e:?}\nOP stderr:\n{}", op.stderr()),
    };
    assert!(tokens.is_bearer(), "{}", tokens.token_type());
    check_tokens(&op, &client, &tokens).await;

    // The access token is bound to the certificate. The SDK presents the
    // one the tokens were issued to, so a client without it refuses before
    // sending anything.
    let other = build(
        &op,
        builder(&op, MTLS, mtls_http(&pki.other)).client_auth(ClientAuth::TlsClientAuth),
    )
    .await;
    match other.userinfo(&tokens).await {
        Err(Error::Config(ConfigError::ClientIdentityNotConfigured { .. })) => {}
        r => panic!("{r:?}"),
    }
    // A token set stored before the certificate was recorded falls back to
    // the current one: presented over a connection with another (CA-issued)
    // certificate, the OP refuses it.
    let mut stored = serde_json::to_value(&tokens).unwrap();
    assert!(
        stored
            .as_object_mut()
            .unwrap()
            .remove("client_cert_thumbprint")
            .is_some()
    );
    let older: TokenSet = serde_json::from_value(stored).unwrap();
    assert_eq!(
        oauth_code(&op, other.userinfo(&older).await),
        ErrorCode::Other("invalid_token".into())
    );
    op.refused_because("failed x5t#S256 verification").await;

    // A token request over a connection with another client's certificate.
    let (_, pending, back) = authorize(&pki, &client).await;
    let code = match other.callback(&pending, back.as_str()).unwrap() {
        CallbackResponse::Code(c) => c,
        x => panic!("{x:?}"),
    };
    assert_eq!(
        oauth_code(&op, other.exchange_code(code).await),
        ErrorCode::InvalidClient
    );
    op.refused_because("certificate subject value does not match the registered one")
        .await;

    // A certificate with the client's DN that the CA did not issue.
    let rogue = build(
        &op,
        builder(&op, MTLS, mtls_http(&pki.rogue)).client_auth(ClientAuth::TlsClientAuth),
    )
    .await;
    assert_eq!(
        oauth_code(
            &op,
            rogue
                .authorize()
                .response_type(ResponseType::Code)
                .push()
                .await
        ),
        ErrorCode::InvalidClient
    );
    op.refused_because("client certificate was not verified")
        .await;

    // An expired request object (the client's clock two hours behind).
    let now = UnixTime::from_system_time(std::time::SystemTime::now());
    let late = build(
        &op,
        builder(&op, MTLS, mtls_http(&pki.mtls))
            .client_auth(ClientAuth::TlsClientAuth)
            .request_object_signing_key(keys.mtls_ro.clone())
            .clock(Arc::new(ManualClock::new(
                now.saturating_sub(Duration::from_secs(7_200)),
            ))),
    )
    .await;
    assert_eq!(
        oauth_code(
            &op,
            late.authorize()
                .response_type(ResponseType::Code)
                .push()
                .await
        ),
        ErrorCode::InvalidRequestObject
    );
    op.refused_because("Request Object claims are invalid (jwt expired)")
        .await;

    // self_signed_tls_client_auth: the certificate registered in the
    // client's JWK Set (`x5c`).
    let self_signed = build(
        &op,
        builder(&op, SELF_SIGNED, mtls_http(&pki.self_signed))
            .client_auth(ClientAuth::SelfSignedTlsClientAuth),
    )
    .await;
    let tokens = sign_in(&op, &pki, &self_signed).await;
    assert!(tokens.is_bearer());
    check_tokens(&op, &self_signed, &tokens).await;
}
