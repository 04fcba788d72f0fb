//! [`DtrClient`]: one Relying Party's view of one OpenID Provider.

use std::fmt;
use std::sync::Arc;

use http::header::HeaderMap;
use url::Url;

use crate::authorize::{AuthorizationRequestBuilder, PendingAuthorization, ResponseMode};
use crate::callback::{self, Acknowledgment, CallbackResponse, CodeResponse};
use crate::client_auth::ClientAuth;
use crate::discovery::{self, ProviderMetadata};
use crate::error::{CallbackError, ConfigError, DiscoveryError, Error, ValidationError};
use crate::exchange::{self, Compat, DeferredAuthentication, NOTIFICATION_TOKEN_BYTES};
use crate::http::{HttpConfig, HttpEdge, HttpRequest, check_url, parse_url};
use crate::jose::id_token::{IdTokenValidator, ValidationOptions, verify_with};
use crate::jose::jwks::{JwksCache, JwksConfig, JwksSnapshot};
use crate::rand::{RandomSource, SystemRandom, random_b64url};
use crate::secret::{AccessToken, ClientSecret, DeferredNotificationToken, RawJwt};
use crate::time::{Clock, SystemClock, UnixTime};
use crate::token::{self, IdToken, TokenResponse, TokenSet, ValidationContext};

/// A Relying Party's client for one OpenID Provider's Deferred Token
/// Response flow.
///
/// Cheap to clone (an `Arc`); share one per OP across the application.
///
/// ```no_run
/// # async fn demo() -> Result<(), oidc_dtr::Error> {
/// use oidc_dtr::{CallbackResponse, DtrClient};
///
/// let client = DtrClient::builder()
///     .issuer("https://op.example.com")
///     .client_id("s6BhdRkqt3")
///     .client_secret("7Fjfp0ZBr1KtDRbnfVdmIw")
///     .redirect_uri("https://rp.example.com/cb")
///     .build()
///     .await?;
///
/// let (url, pending) = client.authorize().scope("profile").build()?;
/// // ... send the browser to `url`, keep `pending` in the session ...
/// # let query = "";
/// match client.callback(&pending, query)? {
///     CallbackResponse::Acknowledgment(ack) => {
///         let auth = client.exchange(ack).await?;
///         println!("the OP is deciding; deadline {:?}", auth.expires_at());
///     }
///     CallbackResponse::Code(code) => {
///         // `deferred_code code` and the OP answered at once.
///         let tokens = client.exchange_code(code).await?;
///         println!("signed in: {}", tokens.claims().subject());
///     }
///     CallbackResponse::Error(e) => println!("the OP refused: {e}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DtrClient {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub(crate) metadata: ProviderMetadata,
    pub(crate) client_id: String,
    pub(crate) auth: ClientAuth,
    pub(crate) redirect_uri: Url,
    pub(crate) notification_endpoint: Option<Url>,
    pub(crate) http: HttpEdge,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: Arc<dyn RandomSource>,
    pub(crate) compat: Compat,
    pub(crate) validator: IdTokenValidator,
    pub(crate) jwks: JwksCache,
}

impl fmt::Debug for DtrClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("DtrClient")
            .field("issuer", &i.metadata.issuer)
            .field("client_id", &i.client_id)
            .field("auth", &i.auth)
            .field("redirect_uri", &i.redirect_uri.as_str())
            .field(
                "notification_endpoint",
                &i.notification_endpoint.as_ref().map(Url::as_str),
            )
            .finish_non_exhaustive()
    }
}

impl DtrClient {
    /// Starts configuring a client.
    pub fn builder() -> DtrClientBuilder {
        DtrClientBuilder::default()
    }

    /// The OP's metadata.
    pub fn metadata(&self) -> &ProviderMetadata {
        &self.inner.metadata
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.inner.metadata.issuer
    }

    /// The client identifier.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The redirect URI.
    pub fn redirect_uri(&self) -> &Url {
        &self.inner.redirect_uri
    }

    /// The notification endpoint, when pings are wanted.
    pub fn notification_endpoint(&self) -> Option<&Url> {
        self.inner.notification_endpoint.as_ref()
    }

    /// Starts an Authentication Request.
    pub fn authorize(&self) -> AuthorizationRequestBuilder<'_> {
        AuthorizationRequestBuilder::new(self)
    }

    /// Validates a redirect that arrived as a query string (`response_mode`
    /// `query`). `query` may start with `?`; a full URL is also accepted.
    pub fn callback(
        &self,
        pending: &PendingAuthorization,
        query: &str,
    ) -> Result<CallbackResponse, Error> {
        let q = match query.find('?') {
            Some(i) => &query[i + 1..],
            None => query,
        };
        let q = q.split('#').next().unwrap_or("");
        self.validate_callback(pending, q.as_bytes(), ResponseMode::Query)
    }

    /// Validates a redirect that arrived as a `form_post` body.
    pub fn callback_form(
        &self,
        pending: &PendingAuthorization,
        body: &[u8],
    ) -> Result<CallbackResponse, Error> {
        self.validate_callback(pending, body, ResponseMode::FormPost)
    }

    fn validate_callback(
        &self,
        pending: &PendingAuthorization,
        input: &[u8],
        mode: ResponseMode,
    ) -> Result<CallbackResponse, Error> {
        let md = &self.inner.metadata;
        let r = callback::validate(
            pending,
            input,
            callback::Expect {
                issuer: &md.issuer,
                client_id: &self.inner.client_id,
                iss_required: md.authorization_response_iss_parameter_supported,
                mode,
            },
        );
        match &r {
            Ok(CallbackResponse::Acknowledgment(a)) => {
                tracing::debug!(state = %pending.state.fingerprint(), deferred_code = %a.deferred_code.fingerprint(), "callback: acknowledgment");
            }
            Ok(CallbackResponse::Code(_)) => {
                tracing::debug!(state = %pending.state.fingerprint(), "callback: plain code")
            }
            Ok(CallbackResponse::Error(e)) => {
                tracing::info!(state = %pending.state.fingerprint(), error = %e.code, "callback: OP error")
            }
            Err(e) => {
                tracing::warn!(state = %pending.state.fingerprint(), error = %e, "callback rejected")
            }
        }
        Ok(r?)
    }

    /// The Deferred Code Exchange: trades the acknowledgment's `deferred_code`
    /// for a [`DeferredAuthentication`] (its `deferred_auth_id`, absolute
    /// deadline and interval). When a notification endpoint is configured, a
    /// fresh 256-bit `deferred_notification_token` is sent and only its hash
    /// is kept.
    pub async fn exchange(&self, ack: Acknowledgment) -> Result<DeferredAuthentication, Error> {
        let inner = &self.inner;
        if ack.pending.issuer != inner.metadata.issuer || ack.pending.client_id != inner.client_id {
            return Err(CallbackError::WrongClient.into());
        }
        let notification_token = match inner.notification_endpoint {
            Some(_) => Some(DeferredNotificationToken::new(random_b64url(
                inner.rng.as_ref(),
                NOTIFICATION_TOKEN_BYTES,
            )?)),
            None => None,
        };
        let params = exchange::exchange_params(&ack, notification_token.as_ref(), &inner.compat);
        let req = inner.token_request(params)?;
        let issued_at = inner.clock.now();
        let resp = inner.http.send(req).await?;
        let parsed = exchange::parse_exchange_response(&resp, &inner.metadata.token_endpoint);
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(deferred_code = %ack.deferred_code.fingerprint(), error = %e, "deferred code exchange failed");
                return Err(e);
            }
        };
        // PROTOCOL.md A.7: validate the interim ID token like the final one;
        // its nonce is the request's, and it comes with no access token.
        let interim_claims = match &parsed.interim_id_token {
            Some(raw) => {
                let ctx = ValidationContext::from(&ack);
                let now = inner.clock.now();
                match inner.validate_jwt(raw, &ctx, None, now).await {
                    Ok(t) => Some(t.into_parts().1),
                    Err(e) => {
                        tracing::warn!(deferred_code = %ack.deferred_code.fingerprint(), error = %e, "interim ID token rejected");
                        return Err(e.into());
                    }
                }
            }
            None => None,
        };
        let mut auth =
            DeferredAuthentication::new(ack, parsed, issued_at, notification_token.as_ref());
        auth.interim_claims = interim_claims;
        tracing::info!(
            deferred_auth_id = %auth.id.fingerprint(),
            expires_at = ?auth.expires_at,
            interval_secs = auth.interval_secs,
            "deferred code exchanged"
        );
        Ok(auth)
    }

    /// The plain-code fallback: when `deferred_code code` was requested and
    /// the OP answered at once with a `code`, finishes the authorization code
    /// flow (token request with the PKCE verifier and the redirect URI) and
    /// validates the tokens exactly as a deferred poll's, so the application
    /// handles both answers with one [`TokenSet`].
    pub async fn exchange_code(&self, code: CodeResponse) -> Result<TokenSet, Error> {
        let inner = &self.inner;
        if code.pending.issuer != inner.metadata.issuer || code.pending.client_id != inner.client_id
        {
            return Err(CallbackError::WrongClient.into());
        }
        let params = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.code.secret().to_owned()),
            (
                "redirect_uri",
                code.pending.redirect_uri.as_str().to_owned(),
            ),
            (
                "code_verifier",
                code.pending.pkce_verifier.secret().to_owned(),
            ),
        ];
        let req = inner.token_request(params)?;
        let resp = inner.http.send(req).await?;
        let received_at = inner.clock.now();
        let parsed = match token::parse_token_response(&resp, &inner.metadata.token_endpoint) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(code = %code.code.fingerprint(), error = %e, "authorization code exchange failed");
                return Err(e);
            }
        };
        let ctx = ValidationContext::from(&code);
        self.validate_token_response(&ctx, parsed, received_at)
            .await
    }

    /// Validates a token response (from a deferred poll or the code
    /// fallback) and assembles the [`TokenSet`]: the `id_token` is required
    /// and validated against the OP's JWK Set (fetched or refreshed through
    /// the client's shared cache as needed), `ctx`'s `nonce`, `max_age` and
    /// expected `sub`, and the access token (`at_hash`). Times are checked
    /// at `received_at`, which also anchors `expires_at`.
    pub async fn validate_token_response(
        &self,
        ctx: &ValidationContext,
        resp: TokenResponse,
        received_at: UnixTime,
    ) -> Result<TokenSet, Error> {
        let Some(raw) = resp.id_token.clone() else {
            tracing::warn!("token response without id_token");
            return Err(ValidationError::MissingIdToken.into());
        };
        let id_token = match self
            .inner
            .validate_jwt(&raw, ctx, Some(&resp.access_token), received_at)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(id_token = %raw.fingerprint(), error = %e, "ID token rejected");
                return Err(e.into());
            }
        };
        tracing::debug!(id_token = %raw.fingerprint(), "ID token validated");
        Ok(TokenSet::new(resp, id_token, received_at))
    }

    /// Validates one ID token (every check of
    /// [`jose::id_token`](crate::jose::id_token)) at time `now`.
    /// `access_token`, when given, is checked against `at_hash`.
    pub async fn validate_id_token(
        &self,
        ctx: &ValidationContext,
        id_token: &RawJwt,
        access_token: Option<&AccessToken>,
        now: UnixTime,
    ) -> Result<IdToken, Error> {
        Ok(self
            .inner
            .validate_jwt(id_token, ctx, access_token, now)
            .await?)
    }

    /// The cached JWK Set, to warm another instance's cache (serverless cold
    /// starts, restarts). `None` before the first fetch.
    pub fn export_jwks(&self) -> Option<JwksSnapshot> {
        self.inner.jwks.export()
    }

    /// Loads an exported JWK Set into the cache. A snapshot past its
    /// freshness is used (within [`JwksConfig::max_stale`]) until the next
    /// refresh succeeds. For an OP without `jwks_uri`, this is how its keys
    /// are given (they then never expire).
    pub fn import_jwks(&self, snapshot: JwksSnapshot) -> Result<(), Error> {
        Ok(self.inner.jwks.import(snapshot)?)
    }

    /// The ID token validator (the effective algorithm allow-list and the
    /// options).
    pub fn id_token_validator(&self) -> &IdTokenValidator {
        &self.inner.validator
    }
}

impl ClientInner {
    /// Validates a JWT: header and `alg`, key (through the JWKS cache),
    /// signature, then claims.
    pub(crate) async fn validate_jwt(
        &self,
        raw: &RawJwt,
        ctx: &ValidationContext,
        access_token: Option<&AccessToken>,
        now: UnixTime,
    ) -> Result<IdToken, ValidationError> {
        let jws = self.validator.decode(raw.secret())?;
        if jws.alg.is_hmac() {
            self.validator.verify_hmac(&jws)?;
        } else {
            let key = self
                .jwks
                .resolve(&self.http, self.clock.as_ref(), jws.kid.as_deref(), jws.alg)
                .await?;
            let verifier = key.verifier(jws.alg).ok_or(ValidationError::Signature)?;
            verify_with(&jws, verifier)?;
        }
        let claims = self.validator.check_claims(&jws, ctx, access_token, now)?;
        Ok(IdToken::new(raw.clone(), claims))
    }

    /// A token-endpoint request with client authentication applied.
    pub(crate) fn token_request(
        &self,
        mut params: Vec<(&'static str, String)>,
    ) -> Result<HttpRequest, Error> {
        let mut headers = HeaderMap::new();
        let ctx = crate::client_auth::AuthContext {
            client_id: &self.client_id,
            issuer: &self.metadata.issuer,
            endpoint: &self.metadata.token_endpoint,
            now: self.clock.now(),
            rng: self.rng.as_ref(),
        };
        self.auth.apply(&ctx, &mut headers, &mut params)?;
        let mut req = HttpRequest::post_form(
            self.metadata.token_endpoint.clone(),
            params.iter().map(|(k, v)| (*k, v.as_str())),
        );
        req.headers.extend(headers);
        Ok(req)
    }
}

/// Configures a [`DtrClient`].
#[derive(Default)]
#[must_use]
pub struct DtrClientBuilder {
    issuer: Option<String>,
    metadata: Option<ProviderMetadata>,
    client_id: Option<String>,
    auth: Option<ClientAuth>,
    redirect_uri: Option<String>,
    notification_endpoint: Option<String>,
    clock: Option<Arc<dyn Clock>>,
    rng: Option<Arc<dyn RandomSource>>,
    http: HttpConfig,
    allow_unadvertised: bool,
    compat: Compat,
    validation: ValidationOptions,
    jwks: JwksConfig,
}

impl fmt::Debug for DtrClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtrClientBuilder")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl DtrClientBuilder {
    /// The issuer identifier. Without [`metadata`](Self::metadata), `build`
    /// discovers the metadata from `{issuer}/.well-known/openid-configuration`
    /// (then RFC 8414's location) and requires its `issuer` to equal this
    /// value exactly.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Explicit metadata, for OPs without discovery. No request is made.
    pub fn metadata(mut self, metadata: ProviderMetadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The client identifier.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// A client secret, sent with `client_secret_basic`.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.auth = Some(ClientAuth::ClientSecretBasic(ClientSecret::new(secret)));
        self
    }

    /// The client authentication method (default: `none`, a public client,
    /// unless [`client_secret`](Self::client_secret) was given).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The redirect URI registered for this client.
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uri = Some(uri.into());
        self
    }

    /// The RP's `deferred_client_notification_endpoint`, when it wants Ping
    /// Callbacks. A fresh notification token is then sent at every exchange.
    pub fn notification_endpoint(mut self, uri: impl Into<String>) -> Self {
        self.notification_endpoint = Some(uri.into());
        self
    }

    /// The clock (default: the system clock). For tests.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The random source (default: the OS CSPRNG). For tests only.
    pub fn random(mut self, rng: Arc<dyn RandomSource>) -> Self {
        self.rng = Some(rng);
        self
    }

    /// HTTP timeouts and body cap.
    pub fn http_config(mut self, cfg: HttpConfig) -> Self {
        self.http = cfg;
        self
    }

    /// Accept an OP whose metadata does not advertise `deferred_code` and the
    /// deferred grant type (some deployments enable DTR per client without
    /// advertising it). Off by default.
    pub fn allow_unadvertised_dtr(mut self) -> Self {
        self.allow_unadvertised = true;
        self
    }

    /// Compatibility switches for OPs built on earlier draft snapshots.
    pub fn compat(mut self, compat: Compat) -> Self {
        self.compat = compat;
        self
    }

    /// ID token validation settings: allowed algorithms (default `RS256`,
    /// intersected with the OP's list), leeways, trusted audiences, the
    /// interim/final `sub` rule, the `max_age` check.
    pub fn validation(mut self, options: ValidationOptions) -> Self {
        self.validation = options;
        self
    }

    /// JWKS cache settings: freshness bounds, unknown-`kid` cooldown,
    /// stale-if-error.
    pub fn jwks_config(mut self, config: JwksConfig) -> Self {
        self.jwks = config;
        self
    }

    /// Builds the client, discovering the metadata if none was given.
    pub async fn build(self) -> Result<DtrClient, Error> {
        let client_id = self.client_id.ok_or(ConfigError::Missing("client_id"))?;
        if client_id.is_empty() {
            return Err(ConfigError::Missing("client_id").into());
        }
        let redirect_uri = self
            .redirect_uri
            .ok_or(ConfigError::Missing("redirect_uri"))?;
        let redirect_uri = parse_redirect_uri(&redirect_uri)?;
        let notification_endpoint = self
            .notification_endpoint
            .map(|u| parse_url(&u, "notification_endpoint"))
            .transpose()?;
        let http = HttpEdge::new(&self.http)?;
        let metadata = match (self.metadata, self.issuer) {
            (Some(md), issuer) => {
                if let Some(issuer) = issuer
                    && issuer != md.issuer
                {
                    return Err(DiscoveryError::IssuerMismatch {
                        expected: issuer,
                        found: md.issuer,
                    }
                    .into());
                }
                parse_url(&md.issuer, "issuer")?;
                md.check_urls()?;
                md
            }
            (None, Some(issuer)) => discovery::discover(&http, &issuer).await?,
            (None, None) => return Err(ConfigError::Missing("issuer").into()),
        };
        if !self.allow_unadvertised {
            metadata.check_dtr_support()?;
        }
        let auth = self.auth.unwrap_or(ClientAuth::None);
        let secret = match &auth {
            ClientAuth::ClientSecretBasic(s) | ClientAuth::ClientSecretPost(s) => Some(s),
            _ => None,
        };
        let validator = IdTokenValidator::new(
            metadata.issuer.clone(),
            client_id.clone(),
            self.validation,
            metadata.id_token_signing_alg_values_supported.as_deref(),
            secret,
        )?;
        self.jwks.check()?;
        let jwks = JwksCache::new(
            metadata.jwks_uri.clone(),
            self.jwks,
            validator.allowed_algorithms(),
        );
        Ok(DtrClient {
            inner: Arc::new(ClientInner {
                metadata,
                client_id,
                auth,
                redirect_uri,
                notification_endpoint,
                http,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                rng: self.rng.unwrap_or_else(|| Arc::new(SystemRandom)),
                compat: self.compat,
                validator,
                jwks,
            }),
        })
    }
}

/// Redirect URIs: absolute, no fragment, and not plain http to a remote host
/// (https, loopback http, or a private-use scheme for native apps).
fn parse_redirect_uri(s: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(s).map_err(|e| ConfigError::InvalidUrl {
        field: "redirect_uri",
        reason: e.to_string(),
    })?;
    if url.fragment().is_some() {
        return Err(ConfigError::InvalidUrl {
            field: "redirect_uri",
            reason: "must not have a fragment".into(),
        });
    }
    match url.scheme() {
        "https" | "http" => check_url(&url, "redirect_uri")?,
        _ => {}
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        assert!(parse_redirect_uri("https://rp.example/cb").is_ok());
        assert!(parse_redirect_uri("http://127.0.0.1:8080/cb").is_ok());
        assert!(parse_redirect_uri("com.example.app:/oauth2redirect").is_ok());
        assert!(matches!(
            parse_redirect_uri("http://rp.example/cb"),
            Err(ConfigError::InsecureUrl { .. })
        ));
        assert!(parse_redirect_uri("https://rp.example/cb#x").is_err());
        assert!(parse_redirect_uri("/relative").is_err());
    }
}
