//! Client authentication at the token endpoint (OIDC Core §9).
//!
//! A fresh set of credentials is produced for *every* request: that is what
//! lets the JWT-based methods mint a new assertion per poll.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Map, json};
use url::Url;

use crate::error::{ConfigError, Error};
use crate::jose::signer::UnsignedJws;
use crate::jose::{Algorithm, Signer, SigningKey};
use crate::random::{RandomSource, random_b64url};
use crate::secret::ClientSecret;
use crate::time::UnixTime;

/// The `client_assertion_type` of JWT client authentication (RFC 7523).
pub(crate) const JWT_BEARER_ASSERTION: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Lifetime of a client assertion: short, since a new one is minted for
/// every request.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// Which `aud` a client assertion names.
///
/// ```
/// use oidc_dtr::ClientAuth;
/// use oidc_dtr::client::AssertionAudience;
/// use oidc_dtr::jose::{Algorithm, SigningKey};
///
/// // An OP that still expects the token endpoint as `aud`.
/// let auth = ClientAuth::PrivateKeyJwt {
///     key: SigningKey::generate(Algorithm::ES256)?.with_kid("rp-key-1"),
///     audience: AssertionAudience::Endpoint,
/// };
/// assert_eq!(auth.method_name(), "private_key_jwt");
/// # Ok::<(), oidc_dtr::jose::KeyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AssertionAudience {
    /// The issuer identifier (the current recommendation; the default).
    #[default]
    Issuer,
    /// The endpoint the request goes to (the token endpoint).
    Endpoint,
    /// Both, as an array.
    Both,
}

/// How the client authenticates to the token endpoint.
///
/// ```
/// use oidc_dtr::{ClientAuth, DtrClient};
/// use oidc_dtr::jose::{Algorithm, SigningKey};
/// use oidc_dtr::secret::ClientSecret;
///
/// let post = ClientAuth::ClientSecretPost(ClientSecret::new("s3cret"));
/// assert_eq!(post.method_name(), "client_secret_post");
/// assert!(!post.is_header_based());
///
/// // private_key_jwt with the issuer as audience (the default).
/// let key = SigningKey::generate(Algorithm::ES256)?.with_kid("rp-key-1");
/// let builder = DtrClient::builder().client_auth(ClientAuth::private_key_jwt(key));
/// # let _ = builder;
/// assert!(ClientAuth::None.is_public());
/// # Ok::<(), oidc_dtr::jose::KeyError>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum ClientAuth {
    /// A public client (`none`): only `client_id` is sent. Public clients
    /// should sender-constrain their tokens with DPoP.
    None,
    /// `client_secret_basic`: HTTP Basic with the form-urlencoded id and secret
    /// (RFC 6749 §2.3.1).
    ClientSecretBasic(ClientSecret),
    /// `client_secret_post`: `client_id` and `client_secret` in the body.
    ClientSecretPost(ClientSecret),
    /// `private_key_jwt`: a JWT signed with the client's private key, minted
    /// fresh for every request (never reused across polls).
    PrivateKeyJwt {
        /// The client's private key (RS256, PS256, ES256, EdDSA, ...).
        key: SigningKey,
        /// The assertion's audience.
        audience: AssertionAudience,
    },
    /// `private_key_jwt` with a key outside the process (a KMS, an HSM):
    /// the assertion is built here and its signing input handed to the
    /// [`Signer`], awaited, for every request. A failing signer gives
    /// [`Error::Signer`] (and, while polling, a retryable failure is
    /// retried with backoff).
    PrivateKeyJwtSigner {
        /// Signs the assertions.
        signer: Arc<dyn Signer>,
        /// The assertion's audience.
        audience: AssertionAudience,
    },
    /// `client_secret_jwt`: a JWT MACed with the client secret (HS256),
    /// minted fresh for every request.
    ClientSecretJwt {
        /// The shared secret.
        secret: ClientSecret,
        /// The assertion's audience.
        audience: AssertionAudience,
    },
    /// `tls_client_auth` (RFC 8705 §2.1): mutual TLS with a certificate
    /// issued by a CA the OP trusts, registered by its subject. The form
    /// carries `client_id` and no secret or assertion (RFC 8705 §2); the
    /// certificate is [`HttpConfig::client_identity`](crate::client::HttpConfig::client_identity),
    /// which `build` then requires.
    TlsClientAuth,
    /// `self_signed_tls_client_auth` (RFC 8705 §2.2): mutual TLS with a
    /// self-signed certificate registered with the OP (in the client's
    /// `jwks`). Sent like [`TlsClientAuth`](Self::TlsClientAuth).
    SelfSignedTlsClientAuth,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method_name())
    }
}

/// What client authentication needs to know about one request.
pub(crate) struct AuthContext<'a> {
    pub client_id: &'a str,
    pub issuer: &'a str,
    pub endpoint: &'a Url,
    pub now: UnixTime,
    pub rng: &'a dyn RandomSource,
}

impl ClientAuth {
    /// `private_key_jwt` with the assertion audience set to the issuer.
    pub fn private_key_jwt(key: SigningKey) -> Self {
        ClientAuth::PrivateKeyJwt {
            key,
            audience: AssertionAudience::Issuer,
        }
    }

    /// `private_key_jwt` signed by `signer`, e.g. a key in a KMS or an HSM
    /// (the assertion audience is the issuer). The signer's algorithm must
    /// be asymmetric, and the OP must know its public key (registered JWK
    /// or `jwks_uri`).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use oidc_dtr::ClientAuth;
    /// use oidc_dtr::jose::{Algorithm, SigningKey};
    ///
    /// // Any `Signer` will do; a `SigningKey` is one.
    /// let signer = Arc::new(SigningKey::generate(Algorithm::ES256)?.with_kid("kms-1"));
    /// let auth = ClientAuth::private_key_jwt_signer(signer);
    /// assert_eq!(auth.method_name(), "private_key_jwt");
    /// # Ok::<(), oidc_dtr::jose::KeyError>(())
    /// ```
    pub fn private_key_jwt_signer(signer: Arc<dyn Signer>) -> Self {
        ClientAuth::PrivateKeyJwtSigner {
            signer,
            audience: AssertionAudience::Issuer,
        }
    }

    /// `client_secret_jwt` (HS256) with the assertion audience set to the
    /// issuer.
    pub fn client_secret_jwt(secret: impl Into<String>) -> Self {
        ClientAuth::ClientSecretJwt {
            secret: ClientSecret::new(secret),
            audience: AssertionAudience::Issuer,
        }
    }

    /// The registered name of the method (`token_endpoint_auth_method`).
    pub fn method_name(&self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::ClientSecretBasic(_) => "client_secret_basic",
            ClientAuth::ClientSecretPost(_) => "client_secret_post",
            ClientAuth::PrivateKeyJwt { .. } | ClientAuth::PrivateKeyJwtSigner { .. } => {
                "private_key_jwt"
            }
            ClientAuth::ClientSecretJwt { .. } => "client_secret_jwt",
            ClientAuth::TlsClientAuth => "tls_client_auth",
            ClientAuth::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }

    /// Whether the credentials travel only in headers (so a JSON body can be
    /// used, as JSON cancellation requests need).
    pub fn is_header_based(&self) -> bool {
        matches!(self, ClientAuth::ClientSecretBasic(_))
    }

    /// Whether the client authenticates with its TLS certificate (RFC 8705
    /// §2).
    pub fn is_mutual_tls(&self) -> bool {
        matches!(
            self,
            ClientAuth::TlsClientAuth | ClientAuth::SelfSignedTlsClientAuth
        )
    }

    /// Whether this is a public client.
    pub fn is_public(&self) -> bool {
        matches!(self, ClientAuth::None)
    }

    /// The client secret, for the methods that have one.
    pub(crate) fn client_secret(&self) -> Option<&ClientSecret> {
        match self {
            ClientAuth::ClientSecretBasic(s) | ClientAuth::ClientSecretPost(s) => Some(s),
            ClientAuth::ClientSecretJwt { secret, .. } => Some(secret),
            _ => None,
        }
    }

    /// Whether the credentials are the same for every request (no
    /// assertion to mint): they can then be prepared once.
    pub(crate) fn is_static(&self) -> bool {
        matches!(
            self,
            ClientAuth::None
                | ClientAuth::TlsClientAuth
                | ClientAuth::SelfSignedTlsClientAuth
                | ClientAuth::ClientSecretPost(_)
                | ClientAuth::ClientSecretBasic(_)
        )
    }

    /// Adds the credentials to a request's headers and form parameters.
    /// With an external [`Signer`], the assertion still has to be signed:
    /// it comes back as a [`PendingAssertion`] for the caller to await
    /// (every other parameter is already in place).
    pub(crate) fn apply(
        &self,
        ctx: &AuthContext<'_>,
        headers: &mut HeaderMap,
        params: &mut Vec<(&'static str, String)>,
    ) -> Result<Option<PendingAssertion>, Error> {
        let client_id = ctx.client_id;
        match self {
            // RFC 8705 §2: the certificate authenticates; the form names
            // the client.
            ClientAuth::None | ClientAuth::TlsClientAuth | ClientAuth::SelfSignedTlsClientAuth => {
                params.push(("client_id", client_id.to_owned()))
            }
            ClientAuth::ClientSecretPost(secret) => {
                params.push(("client_id", client_id.to_owned()));
                params.push(("client_secret", secret.secret().to_owned()));
            }
            ClientAuth::ClientSecretBasic(secret) => {
                headers.insert(AUTHORIZATION, basic_header(client_id, secret.secret())?);
            }
            ClientAuth::PrivateKeyJwtSigner { signer, audience } => {
                let jws = UnsignedJws::for_signer(
                    signer.as_ref(),
                    assertion_header(),
                    &assertion_claims(*audience, ctx)?,
                );
                params.push(("client_id", client_id.to_owned()));
                params.push(("client_assertion_type", JWT_BEARER_ASSERTION.to_owned()));
                return Ok(Some(PendingAssertion {
                    signer: Arc::clone(signer),
                    jws,
                }));
            }
            ClientAuth::PrivateKeyJwt { key, audience } => {
                let jwt = assertion(key, *audience, ctx)?;
                params.push(("client_id", client_id.to_owned()));
                params.push(("client_assertion_type", JWT_BEARER_ASSERTION.to_owned()));
                params.push(("client_assertion", jwt));
            }
            ClientAuth::ClientSecretJwt { secret, audience } => {
                let key = SigningKey::hmac(Algorithm::HS256, secret.secret().as_bytes()).map_err(
                    |e| ConfigError::Invalid {
                        field: "client_secret",
                        reason: e.to_string(),
                    },
                )?;
                let jwt = assertion(&key, *audience, ctx)?;
                params.push(("client_id", client_id.to_owned()));
                params.push(("client_assertion_type", JWT_BEARER_ASSERTION.to_owned()));
                params.push(("client_assertion", jwt));
            }
        }
        Ok(None)
    }
}

/// A client assertion waiting for an external [`Signer`]: sign
/// [`signing_input`](Self::signing_input), then
/// [`finish`](Self::finish).
pub(crate) struct PendingAssertion {
    /// Signs the assertion.
    pub(crate) signer: Arc<dyn Signer>,
    jws: UnsignedJws,
}

impl PendingAssertion {
    /// The bytes the signer signs.
    pub(crate) fn signing_input(&self) -> &[u8] {
        self.jws.signing_input()
    }

    /// Adds the signed assertion to the form parameters.
    pub(crate) fn finish(self, signature: &[u8], params: &mut Vec<(&'static str, String)>) {
        params.push(("client_assertion", self.jws.complete(signature)));
    }
}

/// The header of a client assertion (besides `alg` and `kid`).
fn assertion_header() -> Map<String, serde_json::Value> {
    let mut header = Map::new();
    header.insert("typ".into(), json!("JWT"));
    header
}

/// The claims of a client assertion (RFC 7523 §3): `iss` = `sub` = client
/// id, `aud`, a fresh `jti`, `iat`, and a short `exp`.
fn assertion_claims(
    audience: AssertionAudience,
    ctx: &AuthContext<'_>,
) -> Result<serde_json::Value, Error> {
    let aud = match audience {
        AssertionAudience::Issuer => json!(ctx.issuer),
        AssertionAudience::Endpoint => json!(crate::jose::dpop::htu(ctx.endpoint)),
        AssertionAudience::Both => json!([ctx.issuer, crate::jose::dpop::htu(ctx.endpoint)]),
    };
    let claims = json!({
        "iss": ctx.client_id,
        "sub": ctx.client_id,
        "aud": aud,
        "jti": random_b64url(ctx.rng, 16)?,
        "iat": ctx.now.as_secs(),
        "exp": ctx.now.saturating_add(ASSERTION_LIFETIME).as_secs(),
    });
    Ok(claims)
}

/// A client assertion signed with an in-process key.
fn assertion(
    key: &SigningKey,
    audience: AssertionAudience,
    ctx: &AuthContext<'_>,
) -> Result<String, Error> {
    let claims = assertion_claims(audience, ctx)?;
    key.sign_jwt(assertion_header(), &claims).map_err(|e| {
        ConfigError::Invalid {
            field: "client_auth",
            reason: format!("cannot sign the client assertion: {e}"),
        }
        .into()
    })
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, as RFC 6749 §2.3.1
/// requires (many clients forget the url-encoding step).
fn basic_header(client_id: &str, secret: &str) -> Result<HeaderValue, Error> {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(client_id), enc(secret));
    let mut v = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(raw.as_bytes())))
        .map_err(|_| ConfigError::Invalid {
            field: "client_secret",
            reason: "cannot be sent in a header".into(),
        })?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(client_id: &'a str, url: &'a Url) -> AuthContext<'a> {
        AuthContext {
            client_id,
            issuer: "https://op.example",
            endpoint: url,
            now: UnixTime::from_secs(1_700_000_000),
            rng: &crate::random::SystemRandom,
        }
    }

    fn token_url() -> Url {
        Url::parse("https://op.example/token").unwrap()
    }

    #[test]
    fn basic_url_encodes_before_base64() {
        let mut h = HeaderMap::new();
        let mut p = Vec::new();
        let u = token_url();
        ClientAuth::ClientSecretBasic(ClientSecret::new("p@ss:w rd"))
            .apply(&ctx("my client", &u), &mut h, &mut p)
            .unwrap();
        assert!(p.is_empty());
        let v = h.get(AUTHORIZATION).unwrap().to_str().unwrap();
        let decoded = STANDARD.decode(v.strip_prefix("Basic ").unwrap()).unwrap();
        assert_eq!(
            std::str::from_utf8(&decoded).unwrap(),
            "my+client:p%40ss%3Aw+rd"
        );
        assert!(h.get(AUTHORIZATION).unwrap().is_sensitive());
    }

    #[test]
    fn post_and_none_use_the_body() {
        let mut h = HeaderMap::new();
        let mut p = Vec::new();
        let u = token_url();
        ClientAuth::ClientSecretPost(ClientSecret::new("s"))
            .apply(&ctx("c", &u), &mut h, &mut p)
            .unwrap();
        assert_eq!(
            p,
            vec![
                ("client_id", "c".to_owned()),
                ("client_secret", "s".to_owned())
            ]
        );
        assert!(h.is_empty());
        let mut p = Vec::new();
        ClientAuth::None
            .apply(&ctx("c", &u), &mut h, &mut p)
            .unwrap();
        assert_eq!(p, vec![("client_id", "c".to_owned())]);
    }

    fn claims_of(jwt: &str) -> serde_json::Value {
        let payload = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&crate::jose::b64_decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn private_key_jwt_mints_a_fresh_assertion_each_time() {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let auth = ClientAuth::private_key_jwt(key);
        let u = token_url();
        let mut jtis = Vec::new();
        for _ in 0..3 {
            let mut h = HeaderMap::new();
            let mut p = Vec::new();
            auth.apply(&ctx("c1", &u), &mut h, &mut p).unwrap();
            let get = |k: &str| {
                p.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap()
            };
            assert_eq!(get("client_assertion_type"), JWT_BEARER_ASSERTION);
            let c = claims_of(&get("client_assertion"));
            assert_eq!(c["iss"], "c1");
            assert_eq!(c["sub"], "c1");
            assert_eq!(c["aud"], "https://op.example");
            assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 60);
            jtis.push(c["jti"].as_str().unwrap().to_owned());
        }
        jtis.sort();
        jtis.dedup();
        assert_eq!(jtis.len(), 3, "a new jti every time");
    }

    #[test]
    fn client_secret_jwt_and_audiences() {
        let u = token_url();
        for (aud, want) in [
            (
                AssertionAudience::Issuer,
                serde_json::json!("https://op.example"),
            ),
            (
                AssertionAudience::Endpoint,
                serde_json::json!("https://op.example/token"),
            ),
            (
                AssertionAudience::Both,
                serde_json::json!(["https://op.example", "https://op.example/token"]),
            ),
        ] {
            let auth = ClientAuth::ClientSecretJwt {
                secret: ClientSecret::new("s3cr3t"),
                audience: aud,
            };
            let mut h = HeaderMap::new();
            let mut p = Vec::new();
            auth.apply(&ctx("c1", &u), &mut h, &mut p).unwrap();
            let jwt = &p.iter().find(|(n, _)| *n == "client_assertion").unwrap().1;
            assert!(jwt.starts_with("eyJhbGciOiJIUzI1NiI"), "HS256 header");
            assert_eq!(claims_of(jwt)["aud"], want);
            assert!(!jwt.contains("s3cr3t"));
        }
    }

    #[test]
    fn tls_methods_send_only_the_client_id() {
        let u = token_url();
        for auth in [
            ClientAuth::TlsClientAuth,
            ClientAuth::SelfSignedTlsClientAuth,
        ] {
            let mut h = HeaderMap::new();
            let mut p = Vec::new();
            assert!(auth.apply(&ctx("c", &u), &mut h, &mut p).unwrap().is_none());
            assert_eq!(p, vec![("client_id", "c".to_owned())]);
            assert!(h.is_empty());
            assert!(auth.is_mutual_tls() && !auth.is_public());
            assert!(auth.client_secret().is_none());
        }
        assert_eq!(ClientAuth::TlsClientAuth.method_name(), "tls_client_auth");
        assert_eq!(
            ClientAuth::SelfSignedTlsClientAuth.method_name(),
            "self_signed_tls_client_auth"
        );
    }

    #[test]
    fn an_external_signer_gets_the_assertion_to_sign() {
        let key = SigningKey::generate(Algorithm::EdDSA)
            .unwrap()
            .with_kid("kms-1");
        let auth = ClientAuth::private_key_jwt_signer(Arc::new(key.clone()));
        assert_eq!(auth.method_name(), "private_key_jwt");
        let u = token_url();
        let mut h = HeaderMap::new();
        let mut p = Vec::new();
        let pending = auth
            .apply(&ctx("c1", &u), &mut h, &mut p)
            .unwrap()
            .expect("the assertion waits for the signer");
        assert!(p.iter().all(|(n, _)| *n != "client_assertion"));
        let sig = key.sign(pending.signing_input()).unwrap();
        pending.finish(&sig, &mut p);
        let jwt = &p.iter().find(|(n, _)| *n == "client_assertion").unwrap().1;
        let c = claims_of(jwt);
        assert_eq!(
            (c["iss"].as_str(), c["sub"].as_str()),
            (Some("c1"), Some("c1"))
        );
        assert_eq!(c["aud"], "https://op.example");
        let header = claims_of(&format!("x.{}", jwt.split('.').next().unwrap()));
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], "kms-1");
        assert_eq!(header["typ"], "JWT");
        assert!(
            p.iter()
                .any(|(n, v)| *n == "client_assertion_type" && v == JWT_BEARER_ASSERTION)
        );
    }

    #[test]
    fn debug_shows_only_the_method() {
        let a = ClientAuth::ClientSecretPost(ClientSecret::new("topsecret"));
        assert_eq!(format!("{a:?}"), "client_secret_post");
    }
}
