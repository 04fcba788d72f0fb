//! Ping Callbacks: the OP tells you when to poll.
//!
//! # What the drafts say
//!
//! Polling every few seconds for days is wasteful. An RP that registered a
//! `deferred_client_notification_endpoint` (OIDC draft §"Ping Callback";
//! client metadata of RFC 7591) gets a `POST` there when an authentication
//! has finished, whatever the outcome:
//!
//! ```text
//! POST /dtr/ping HTTP/1.1
//! Content-Type: application/json
//! Authorization: Bearer <deferred_notification_token>
//!
//! {"deferred_auth_id": "f4oirNBUlM"}
//! ```
//!
//! The bearer token is one the RP chose and sent in the Deferred Code
//! Exchange; the OP presents it so that the RP knows the ping is genuine.
//! The RP answers 204 to a valid ping and 401 to a bad token, never a
//! redirect. A ping carries no result: the RP must still poll, and keep
//! polling if the answer is still `authorization_pending` (a ping may come
//! early, by mistake, or from an attacker who got hold of the endpoint).
//! The OP sends no ping when an authentication expires. There is no "push"
//! mode that would deliver tokens to the endpoint: one lost push would lose
//! the result.
//!
//! (The IETF draft is the same with other names: the body is
//! `{"deferral_code": ...}` and the token is the `client_notification_token`
//! sent in the initial token request; see [`ietf`](super::ietf).)
//!
//! # What the SDK does
//!
//! With [`DtrClientBuilder::notification_endpoint`](crate::DtrClientBuilder::notification_endpoint)
//! set, every exchange sends a fresh 256-bit notification token and keeps
//! only its SHA-256 hash. The [`PingReceiver`](crate::ping::PingReceiver)
//! ([`DtrClient::ping_receiver`](crate::DtrClient::ping_receiver)) answers
//! the OP:
//!
//! | request | answer |
//! |---|---|
//! | not `POST` | 405, `Allow: POST` |
//! | `Content-Type` not JSON | 415 |
//! | body over the cap (4 KiB by default) | 413 |
//! | body not a JSON object with exactly one string handle: `deferred_auth_id` (OIDC) or `deferral_code` (IETF) | 400 |
//! | no `Authorization: Bearer`, a wrong token, or an unknown id | 401, `WWW-Authenticate: Bearer`, identical for all three |
//! | the right token | 204, and the authentication is woken if still pending |
//! | IETF `deferral_code` without `Authorization`, when you opted in and the authentication sent no notification token | 204, advisory: a wake-up at most |
//!
//! The receiver is no oracle: the token is hashed and compared with the
//! stored hash in constant time, and an unknown id costs the same work and
//! gets the same 401 as a wrong token, so neither the answer nor its timing
//! tells an attacker which ids exist. A correct ping for an authentication
//! that has already ended gets 204 and wakes nothing. Never a 3xx.
//!
//! A valid ping only *wakes* the poller: the next poll goes out at once, or
//! when the floor has elapsed if it has not (see [`polling`](super::polling)).
//! Tokens only ever come from the token endpoint. While pings are
//! expected, the regular polls slow down to a safety net (every 60 s by
//! default,
//! [`DtrClientBuilder::notified_poll_cadence`](crate::DtrClientBuilder::notified_poll_cadence)),
//! so a lost ping delays an outcome by at most that long.
//!
//! In a fleet, any instance may receive the ping: it checks the token
//! against the hash in the shared store and passes the wake-up to the
//! instance polling that authentication (see [`fleets`](super::fleets)).
//!
//! # What your application does
//!
//! Register the endpoint's URL with the OP, give it to the builder, and
//! route `POST`s at that path to the receiver. The receiver depends on no
//! web framework; it plugs in three ways:
//!
//! - as a `tower::Service` over `http::Request` (axum:
//!   `Router::new().route_service("/dtr/ping", client.ping_receiver())`;
//!   hyper through hyper-util's `TowerToHyperService`);
//! - [`PingReceiver::handle`](crate::ping::PingReceiver::handle), an async
//!   function over `http` types;
//! - [`PingReceiver::handle_raw`](crate::ping::PingReceiver::handle_raw), for
//!   anything else (actix-web, a serverless function): the method, the two
//!   headers and the body in, a [`PingReply`](crate::ping::PingReply) (status and
//!   headers) out.
//!
//! Keep the endpoint on HTTPS. For an IETF authorization server that sends
//! callbacks without a token, the endpoint must be protected another way
//! (mTLS, a private network); only then opt in with
//! [`accept_unauthenticated_callbacks`](crate::DtrClientBuilder::accept_unauthenticated_callbacks).
//!
//! # Mutual TLS instead of (or besides) the bearer token
//!
//! The DTR drafts let the OP authenticate to the notification endpoint
//! with mutual TLS instead of the bearer token. Terminate TLS yourself
//! (rustls), ask for client certificates, and hand the peer's certificate
//! chain (DER, leaf first) to the receiver; configure which OP certificates
//! are trusted with [`PingReceiver::mtls`](crate::ping::PingReceiver::mtls)
//! and a [`PingMtls`](crate::ping::PingMtls), in either of two ways:
//!
//! - pinned certificates: their SHA-256 thumbprints (`x5t#S256` of RFC 8705
//!   §3.1), compared in constant time
//!   ([`trust_certificate_der`](crate::ping::PingMtls::trust_certificate_der),
//!   [`trust_thumbprint`](crate::ping::PingMtls::trust_thumbprint)); a new
//!   OP certificate needs a configuration change;
//! - the OP's CA and the subject its certificate must have, as RFC 8705
//!   §2.1.2 registers one for `tls_client_auth`: a subject DN and/or a
//!   subjectAltName entry (DNS name, URI, IP address, e-mail)
//!   ([`trust_ca_pem`](crate::ping::PingMtls::trust_ca_pem) with a
//!   [`CertificateSubject`](crate::ping::CertificateSubject)). The chain
//!   (through the intermediates the OP sent), the validity period (by the
//!   client's clock) and the `clientAuth` extended key usage are checked,
//!   so the OP can renew its certificate without you.
//!
//! And for both:
//!
//! - `require_bearer(true)` (the default): the certificate *and* the
//!   bearer token must be right;
//! - `require_bearer(false)`: a ping without `Authorization` from a trusted
//!   certificate wakes the named pending authentication.
//!
//! A wrong certificate, no certificate, a wrong token and an unknown id all
//! get the same 401. Hand the certificate over either as the
//! [`PeerCertificate`](crate::ping::PeerCertificate) extension of the request
//! given to [`handle`](crate::ping::PingReceiver::handle) (or to the tower
//! service), or as the last argument of
//! [`handle_raw_with_peer`](crate::ping::PingReceiver::handle_raw_with_peer).
//! With rustls (tokio-rustls) and hyper:
//!
//! ```no_run
//! use std::sync::Arc;
//! use oidc_dtr::{ping::{CertificateSubject, PeerCertificate, PingMtls, PingReceiver}};
//!
//! # async fn demo(
//! #     receiver: PingReceiver,
//! #     tls: Arc<rustls::ServerConfig>, // with a client certificate verifier
//! #     op_ca_pem: String,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! // The OP's CA, and the subject of the OP's certificate for pings.
//! let receiver = receiver.mtls(
//!     PingMtls::new()
//!         .trust_ca_pem(&op_ca_pem, CertificateSubject::new().dn("CN=op.example, O=Example OP"))?
//!         .require_bearer(false),
//! );
//! let acceptor = tokio_rustls::TlsAcceptor::from(tls);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     let (acceptor, receiver) = (acceptor.clone(), receiver.clone());
//!     tokio::spawn(async move {
//!         let Ok(tls) = acceptor.accept(tcp).await else { return };
//!         // The certificates the peer presented (leaf first, then any
//!         // intermediates), from the rustls server connection.
//!         let peer = tls
//!             .get_ref()
//!             .1
//!             .peer_certificates()
//!             .and_then(|chain| PeerCertificate::from_chain(chain.iter().map(|c| c.to_vec())));
//!         let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
//!             if let Some(p) = peer.clone() {
//!                 req.extensions_mut().insert(p);
//!             }
//!             let receiver = receiver.clone();
//!             async move { Ok::<_, std::convert::Infallible>(receiver.handle(req).await) }
//!         });
//!         let _ = hyper::server::conn::http1::Builder::new()
//!             .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
//!             .await;
//!     });
//! }
//! # }
//! ```
//!
//! With axum, do the same in a middleware or in the `tower` service that
//! wraps the router per connection. A TLS-terminating proxy in front can
//! instead forward the certificate (e.g. in a header it alone may set):
//! decode it and call [`handle_raw_with_peer`](crate::ping::PingReceiver::handle_raw_with_peer),
//! or [`handle_raw_with_peer_certificate`](crate::ping::PingReceiver::handle_raw_with_peer_certificate)
//! with the intermediates too.
//!
//! # Example
//!
//! A client with a notification endpoint, served by the testkit's bare
//! hyper server; the mock OP pings it when it approves:
//!
//! ```
//! use oidc_dtr::{CallbackResponse, DtrClient, Outcome, ping::PingReplyKind};
//! use oidc_dtr_testkit::{MockOp, OpConfig, RegisteredClient};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = OpConfig::default();
//! config.interval = Some(1);
//! let op = MockOp::builder().config(config).start().await?;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let endpoint = format!("http://{}/dtr/ping", listener.local_addr()?);
//! // The registration at the OP (RFC 7591 client metadata)...
//! op.register_client(
//!     RegisteredClient::confidential("rp", "rp-secret").with_notification_endpoint(&endpoint),
//! );
//! // ... and the same URL in the client.
//! let client = DtrClient::builder()
//!     .issuer(op.issuer())
//!     .client_id("rp")
//!     .client_secret("rp-secret")
//!     .redirect_uri("http://127.0.0.1:9/callback")
//!     .notification_endpoint(&endpoint)
//!     .build()
//!     .await?;
//! let receiver = client.ping_receiver();
//! oidc_dtr_testkit::serve_ping_receiver(listener, receiver.clone());
//!
//! let (url, pending) = client.authorize().build()?;
//! let back = op.browse(&url).await?;
//! let CallbackResponse::Acknowledgment(ack) = client.callback(&pending, back.query())? else {
//!     panic!("the mock OP defers")
//! };
//! let auth = client.exchange(ack).await?;
//!
//! // Pings the receiver refuses, without telling which ids exist:
//! let body = format!(r#"{{"deferred_auth_id":"{}"}}"#, auth.id().secret());
//! let wrong_token = receiver
//!     .handle_raw("POST", Some("application/json"), Some("Bearer guess"), body.as_bytes())
//!     .await;
//! let unknown_id = receiver
//!     .handle_raw("POST", Some("application/json"), Some("Bearer guess"), br#"{"deferred_auth_id":"nope"}"#)
//!     .await;
//! assert_eq!((wrong_token.status, wrong_token.kind), (401, PingReplyKind::Unauthorized));
//! assert_eq!(unknown_id, wrong_token);
//! let not_post = receiver.handle_raw("GET", None, None, b"").await;
//! assert_eq!(not_post.status, 405);
//!
//! // The OP approves and pings; the ping wakes the poller long before the
//! // 60 s safety-net poll.
//! assert!(op.approve(auth.id()));
//! let outcome = client.wait(auth.id()).await?;
//! assert!(matches!(outcome, Outcome::Tokens(_)));
//! # Ok(()) }
//! ```
