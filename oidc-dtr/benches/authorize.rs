//! Click to redirect: the time from asking the client for an authorization
//! redirect to having the URL to send the browser to, and what Pushed
//! Authorization Requests (RFC 9126), a signed request object (RFC 9101)
//! and a remote signer add to it.
//!
//! - `plain`: `authorize().build()`, no PAR: PKCE, state, nonce, the URL;
//! - `par`: `authorize().push()` against the in-process mock OP over
//!   loopback (`client_secret_basic`): one HTTP round trip more;
//! - `par+jar/in-process`: the push carries a request object signed with
//!   an in-process ES256 key;
//! - `par+jar+pkjwt/in-process`: the same, and the push is authenticated
//!   with a `private_key_jwt` assertion signed with the same in-process key;
//! - `par+jar+pkjwt/remote-0ms`, `…/remote-5ms`: both signed by a
//!   simulated remote signer (a `jose::Signer` answering after a fixed
//!   latency, as a KMS would): the difference between the two is what the
//!   signer's round trips cost the user, i.e. how many of them are in
//!   series;
//! - `par+jar/remote-5ms`, `par+pkjwt/remote-5ms`: one signature each by
//!   the remote signer (the other in-process or none), to tell the two
//!   round trips apart;
//! - `one-signer-call/remote-5ms`: the remote signer called alone, the
//!   cost of one round trip to it on this runtime (the 5 ms, the timer's
//!   rounding up to its next millisecond tick, the signature).
//!
//! ```sh
//! cargo bench -p oidc-dtr --bench authorize
//! cargo bench -p oidc-dtr --bench authorize -- --quick   # a short run
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use oidc_dtr::jose::{Algorithm, SignFuture, Signer, SignerError, SigningKey};
use oidc_dtr::{ClientAuth, DtrClient, DtrClientBuilder};
use oidc_dtr_testkit::{MockOp, RegisteredClient};
use serde_json::Value;

/// The simulated latency of the remote signer.
const REMOTE_LATENCY: Duration = Duration::from_millis(5);

/// A remote signer (KMS) stand-in: signs with a key it holds, after
/// `latency`.
struct RemoteSigner {
    key: SigningKey,
    latency: Duration,
}

impl Signer for RemoteSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }

    fn key_id(&self) -> Option<&str> {
        self.key.kid()
    }

    fn public_jwk(&self) -> Option<Value> {
        self.key.public_jwk()
    }

    fn sign<'a>(&'a self, signing_input: &'a [u8]) -> SignFuture<'a> {
        Box::pin(async move {
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            self.key
                .sign(signing_input)
                .map_err(|e| SignerError::permanent(e.to_string()))
        })
    }
}

/// How a case signs (request object, client authentication).
#[derive(Clone, Copy)]
enum Keys {
    /// No request object, `client_secret_basic`.
    None,
    /// A request object by an in-process key, `client_secret_basic`.
    Jar,
    /// Request object and `private_key_jwt`, both by the in-process key.
    JarPkjwt,
    /// Request object by the remote signer, `client_secret_basic`.
    RemoteJar(Duration),
    /// `private_key_jwt` by the remote signer, no request object.
    RemotePkjwt(Duration),
    /// Both by the remote signer.
    RemoteJarPkjwt(Duration),
}

const CLIENT_ID: &str = "bench-rp";
const SECRET: &str = "bench-secret";

async fn client(op: &MockOp, par: bool, keys: Keys) -> DtrClient {
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid("bench-key");
    let remote = |latency| -> Arc<dyn Signer> {
        Arc::new(RemoteSigner {
            key: key.clone(),
            latency,
        })
    };
    let jwks = vec![key.public_jwk().unwrap()];
    let mut registered = match keys {
        Keys::JarPkjwt | Keys::RemotePkjwt(_) | Keys::RemoteJarPkjwt(_) => {
            RegisteredClient::private_key_jwt(CLIENT_ID, jwks.clone())
        }
        _ => RegisteredClient::confidential(CLIENT_ID, SECRET),
    };
    registered.jwks = jwks;
    op.register_client(registered);
    let b: DtrClientBuilder = DtrClient::builder()
        .issuer(op.issuer())
        .client_id(CLIENT_ID)
        .redirect_uri("http://127.0.0.1:9/callback")
        .pushed_authorization_requests(par);
    let b = match keys {
        Keys::None => b.client_secret(SECRET),
        Keys::Jar => b
            .client_secret(SECRET)
            .request_object_signing_key(key.clone()),
        Keys::JarPkjwt => b
            .client_auth(ClientAuth::private_key_jwt(key.clone()))
            .request_object_signing_key(key.clone()),
        Keys::RemoteJar(l) => b.client_secret(SECRET).request_object_signer(remote(l)),
        Keys::RemotePkjwt(l) => b.client_auth(ClientAuth::private_key_jwt_signer(remote(l))),
        Keys::RemoteJarPkjwt(l) => b
            .client_auth(ClientAuth::private_key_jwt_signer(remote(l)))
            .request_object_signer(remote(l)),
    };
    b.build().await.unwrap()
}

fn authorize(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let op = rt.block_on(MockOp::start()).unwrap();
    let mut group = c.benchmark_group("authorize");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    // The floor of one remote signature: the signer call alone (the
    // simulated round trip on this runtime's timer, and an ES256 signature).
    let signer = RemoteSigner {
        key: SigningKey::generate(Algorithm::ES256).unwrap(),
        latency: REMOTE_LATENCY,
    };
    group.bench_function("one-signer-call/remote-5ms", |b| {
        b.iter(|| black_box(rt.block_on(signer.sign(b"header.claims")).unwrap()))
    });

    let plain = rt.block_on(client(&op, false, Keys::None));
    group.bench_function("plain", |b| {
        b.iter(|| black_box(plain.authorize().build().unwrap()))
    });

    let cases = [
        ("par", Keys::None),
        ("par+jar/in-process", Keys::Jar),
        ("par+jar+pkjwt/in-process", Keys::JarPkjwt),
        (
            "par+jar+pkjwt/remote-0ms",
            Keys::RemoteJarPkjwt(Duration::ZERO),
        ),
        (
            "par+jar+pkjwt/remote-5ms",
            Keys::RemoteJarPkjwt(REMOTE_LATENCY),
        ),
        ("par+jar/remote-5ms", Keys::RemoteJar(REMOTE_LATENCY)),
        ("par+pkjwt/remote-5ms", Keys::RemotePkjwt(REMOTE_LATENCY)),
    ];
    for (name, keys) in cases {
        let client = rt.block_on(client(&op, true, keys));
        // One push outside the clock: the connection is open, and the
        // case works at all.
        let (url, _) = rt.block_on(client.authorize().push()).unwrap();
        assert!(url.as_str().contains("request_uri="), "{name}: {url}");
        group.bench_function(name, |b| {
            b.iter(|| black_box(rt.block_on(client.authorize().push()).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, authorize);
criterion_main!(benches);
