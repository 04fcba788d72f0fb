//! [`DtrClientBuilder`]: configures and builds a [`DtrClient`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use url::Url;

use super::{ClientInner, DtrClient};
use crate::engine::driver::{DriverConfig, DriverHandle};
use crate::engine::fleet::{Fleet, FleetConfig};
use crate::engine::jwks_cache::{JwksCache, JwksConfig};
use crate::engine::transport::{HttpConfig, HttpEdge};
use crate::error::{ConfigError, DiscoveryError, Error};
use crate::jose::dpop::DpopSigner;
use crate::jose::{Algorithm, Signer};
use crate::proto::cancel::CancellationConfig;
use crate::proto::client_auth::ClientAuth;
use crate::proto::discovery::ProviderMetadata;
use crate::proto::exchange::Compat;
use crate::proto::id_token::{IdTokenValidator, ValidationOptions};
use crate::proto::message::{check_url, parse_url};
use crate::proto::poll::PollConfig;
use crate::proto::profile::Profile;
use crate::random::{RandomSource, SystemRandom};
use crate::secret::ClientSecret;
use crate::store::{MemoryStore, Store};
use crate::time::{Clock, SystemClock};

/// DPoP (RFC 9449) settings, handed to
/// [`DtrClientBuilder::dpop`](crate::DtrClientBuilder::dpop). The default
/// decides by client type (public clients use DPoP, confidential ones do
/// not), with ES256 keys, and refuses a `Bearer` token when DPoP was used.
///
/// By default every authentication gets a fresh key, generated in the
/// process and kept (private key included) with its record and its
/// [`TokenSet`](crate::TokenSet). With [`signer`](Self::signer), proofs
/// are signed by a key that stays outside the process (a KMS, an HSM):
/// records and token sets then keep only the key's RFC 7638 thumbprint,
/// and the client finds the signer by that thumbprint among the current
/// and [previous](Self::previous_signer) signers.
///
/// ```
/// use oidc_dtr::{jose::Algorithm, client::DpopConfig};
///
/// let dpop = DpopConfig::enabled().algorithm(Algorithm::EdDSA);
/// assert_ne!(dpop, DpopConfig::default());
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct DpopConfig {
    /// Use DPoP: `None` decides by client type.
    pub(crate) enabled: Option<bool>,
    pub(crate) algorithm: Algorithm,
    pub(crate) reject_downgrade: bool,
    /// The external signer new authentications use.
    pub(crate) signer: Option<Arc<dyn Signer>>,
    /// Earlier external signers still bound to pending authentications or
    /// token sets.
    pub(crate) previous_signers: Vec<Arc<dyn Signer>>,
}

impl fmt::Debug for DpopConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopConfig")
            .field("enabled", &self.enabled)
            .field("algorithm", &self.algorithm)
            .field("reject_downgrade", &self.reject_downgrade)
            .field("signer", &self.signer.is_some())
            .field("previous_signers", &self.previous_signers.len())
            .finish()
    }
}

/// Signers are compared by identity (the same `Arc`).
impl PartialEq for DpopConfig {
    fn eq(&self, other: &Self) -> bool {
        fn same(a: &Arc<dyn Signer>, b: &Arc<dyn Signer>) -> bool {
            std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
        }
        self.enabled == other.enabled
            && self.algorithm == other.algorithm
            && self.reject_downgrade == other.reject_downgrade
            && match (&self.signer, &other.signer) {
                (None, None) => true,
                (Some(a), Some(b)) => same(a, b),
                _ => false,
            }
            && self.previous_signers.len() == other.previous_signers.len()
            && self
                .previous_signers
                .iter()
                .zip(&other.previous_signers)
                .all(|(a, b)| same(a, b))
    }
}

impl Eq for DpopConfig {}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            enabled: None,
            algorithm: Algorithm::ES256,
            reject_downgrade: true,
            signer: None,
            previous_signers: Vec::new(),
        }
    }
}

impl DpopConfig {
    /// DPoP on, whatever the client type.
    #[must_use]
    pub fn enabled() -> Self {
        DpopConfig {
            enabled: Some(true),
            ..Default::default()
        }
    }

    /// DPoP off, whatever the client type.
    #[must_use]
    pub fn disabled() -> Self {
        DpopConfig {
            enabled: Some(false),
            ..Default::default()
        }
    }

    /// The algorithm of the per-authentication key (ES256, ES384, EdDSA,
    /// RS256, PS256, ...). Default: ES256. With a [`signer`](Self::signer),
    /// the signer's algorithm is used instead.
    #[must_use]
    pub fn algorithm(mut self, alg: Algorithm) -> Self {
        self.algorithm = alg;
        self
    }

    /// Accepts a `Bearer` token even though DPoP was used (refused by
    /// default).
    #[must_use]
    pub fn allow_bearer_downgrade(mut self) -> Self {
        self.reject_downgrade = false;
        self
    }

    /// Signs the DPoP proofs of new authentications with `signer`, a key
    /// outside the process (a KMS, an HSM), instead of a key generated per
    /// authentication; turns DPoP on (unless [`disabled`](Self::disabled)
    /// is called after). Its [`Signer::public_jwk`] must give the public
    /// key (a proof carries it): [`DtrClientBuilder::build`](crate::DtrClientBuilder::build)
    /// refuses a signer without one, or whose algorithm does not fit it,
    /// with [`ConfigError::Invalid`] (field `dpop_signer`).
    ///
    /// Every authentication started with it is bound to its key: its
    /// record (and its [`TokenSet`](crate::TokenSet)) keeps the key's
    /// RFC 7638 thumbprint, not the key, and its polls, its cancellation
    /// and the UserInfo calls with its tokens are signed by the configured
    /// signer of that thumbprint. A signer that fails is
    /// [`Error::Signer`](crate::Error::Signer); while polling, a
    /// [retryable](crate::jose::SignerError::retryable) failure is retried
    /// with backoff and nothing is sent (the authentication is not ended).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use oidc_dtr::client::DpopConfig;
    /// use oidc_dtr::jose::{Algorithm, DpopKey, Signer};
    ///
    /// // A stand-in for a KMS-backed signer.
    /// let kms: Arc<dyn Signer> = Arc::new(DpopKey::generate(Algorithm::ES256)?);
    /// let dpop = DpopConfig::default().signer(kms);
    /// # drop(dpop);
    /// # Ok::<(), oidc_dtr::jose::KeyError>(())
    /// ```
    #[must_use]
    pub fn signer(mut self, signer: Arc<dyn Signer>) -> Self {
        self.algorithm = signer.algorithm();
        self.signer = Some(signer);
        self.enabled = Some(true);
        self
    }

    /// An earlier DPoP signer (key rotation): authentications and token
    /// sets bound to its key keep using it; new authentications use
    /// [`signer`](Self::signer) (or generated keys, without one). Remove a
    /// previous signer only once nothing bound to it is pending or in use:
    /// an authentication bound to a key no longer configured is not polled
    /// (nothing could be signed) and waits, retried with backoff, for a
    /// client configured with it, until its deadline; a call with such
    /// tokens fails with [`ConfigError::DpopKeyNotConfigured`].
    ///
    /// ```
    /// # fn demo(new: std::sync::Arc<dyn oidc_dtr::jose::Signer>, old: std::sync::Arc<dyn oidc_dtr::jose::Signer>) {
    /// use oidc_dtr::client::DpopConfig;
    /// // New authentications use `new`; those bound to `old` keep it.
    /// let dpop = DpopConfig::default().signer(new).previous_signer(old);
    /// # drop(dpop); }
    /// ```
    #[must_use]
    pub fn previous_signer(mut self, signer: Arc<dyn Signer>) -> Self {
        self.previous_signers.push(signer);
        self
    }
}

/// The external DPoP signers of a client, checked: the current one (for
/// new authentications) and the earlier ones, found by thumbprint.
#[derive(Debug, Default)]
pub(crate) struct DpopSigners {
    pub(crate) current: Option<DpopSigner>,
    pub(crate) previous: Vec<DpopSigner>,
}

impl DpopSigners {
    /// Checks the signers of `config`.
    pub(crate) fn new(config: &DpopConfig) -> Result<Self, ConfigError> {
        let check = |s: &Arc<dyn Signer>| {
            DpopSigner::new(s.clone()).map_err(|reason| ConfigError::Invalid {
                field: "dpop_signer",
                reason,
            })
        };
        Ok(DpopSigners {
            current: config.signer.as_ref().map(check).transpose()?,
            previous: config
                .previous_signers
                .iter()
                .map(check)
                .collect::<Result<_, _>>()?,
        })
    }

    /// The configured signer whose key has the thumbprint `jkt`.
    pub(crate) fn find(&self, jkt: &str) -> Option<&DpopSigner> {
        self.current
            .iter()
            .chain(&self.previous)
            .find(|s| s.thumbprint == jkt)
    }
}

/// The poll cadence while pings are expected, unless configured otherwise
/// (see [`DtrClientBuilder::notified_poll_cadence`]).
const DEFAULT_NOTIFIED_CADENCE: Duration = Duration::from_secs(60);

/// The method for a client that gave only a secret: `client_secret_basic`
/// if the OP lists it or lists nothing (RFC 8414 §2 default), else
/// `client_secret_post` if it lists that.
fn secret_method_from_metadata(metadata: &ProviderMetadata, secret: ClientSecret) -> ClientAuth {
    let listed = |m: &str| {
        metadata
            .token_endpoint_auth_methods_supported
            .as_ref()
            .is_some_and(|l| l.iter().any(|x| x == m))
    };
    match &metadata.token_endpoint_auth_methods_supported {
        Some(_) if !listed("client_secret_basic") && listed("client_secret_post") => {
            ClientAuth::ClientSecretPost(secret)
        }
        Some(_) if !listed("client_secret_basic") => {
            tracing::warn!(
                "the OP lists neither client_secret_basic nor client_secret_post; using client_secret_basic"
            );
            ClientAuth::ClientSecretBasic(secret)
        }
        _ => ClientAuth::ClientSecretBasic(secret),
    }
}

/// Configures a [`DtrClient`].
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::DtrClient;
/// use oidc_dtr::poll::PollConfig;
/// use oidc_dtr::store::MemoryStore;
/// use oidc_dtr_testkit::MockOp;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let op = MockOp::start().await?;
/// let client = DtrClient::builder()
///     .issuer(op.issuer()) // discovery runs in `build`
///     .client_id(MockOp::CLIENT_ID)
///     .client_secret(MockOp::CLIENT_SECRET)
///     .redirect_uri("http://127.0.0.1:9/callback")
///     .store(MemoryStore::new())
///     .poll_config(PollConfig::default().max_lifetime(Duration::from_secs(3_600)))
///     .build()
///     .await?;
/// assert_eq!(client.issuer(), op.issuer());
/// # Ok(()) }
/// ```
#[derive(Default)]
#[must_use]
pub struct DtrClientBuilder {
    issuer: Option<String>,
    metadata: Option<ProviderMetadata>,
    client_id: Option<String>,
    auth: Option<ClientAuth>,
    /// Only a secret was given (no method): the method comes from the
    /// OP's metadata.
    secret_only: bool,
    redirect_uri: Option<String>,
    notification_endpoint: Option<String>,
    /// The poll cadence while pings are expected, when set explicitly.
    notified_cadence: Option<Option<Duration>>,
    clock: Option<Arc<dyn Clock>>,
    rng: Option<Arc<dyn RandomSource>>,
    http: HttpConfig,
    allow_unadvertised: bool,
    compat: Compat,
    validation: ValidationOptions,
    jwks: JwksConfig,
    dpop: DpopConfig,
    cancellation: Option<CancellationSetting>,
    poll: Option<PollConfig>,
    driver: DriverConfig,
    store: Option<Arc<dyn Store>>,
    profile: Option<Profile>,
    accept_unauthenticated_callbacks: bool,
    no_completion_mode_hint: bool,
    fleet: FleetConfig,
    pushed_authorization_requests: bool,
    /// The request-object signer, and whether it is an in-process key.
    request_object_key: Option<(Arc<dyn crate::jose::Signer>, bool)>,
    request_object_lifetime: Option<Duration>,
    security_profile: super::fapi::SecurityProfile,
}

/// The cancellation endpoint, given or named in the metadata.
enum CancellationSetting {
    Given(CancellationConfig),
    FromMetadata(String, crate::proto::cancel::CancelEncoding),
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

    /// A client secret. The method is chosen from the OP's
    /// `token_endpoint_auth_methods_supported`: `client_secret_basic` when
    /// it is listed (or the list is absent: RFC 8414's default), else
    /// `client_secret_post` when that is listed. To choose the method
    /// yourself, use [`client_auth`](Self::client_auth).
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.auth = Some(ClientAuth::ClientSecretBasic(ClientSecret::new(secret)));
        self.secret_only = true;
        self
    }

    /// The client authentication method (default: `none`, a public client,
    /// unless [`client_secret`](Self::client_secret) was given).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = Some(auth);
        self.secret_only = false;
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

    /// HTTP timeouts, body cap, and mutual TLS: the client certificate
    /// (and earlier ones still used by pending authentications) and extra
    /// trust anchors (see [`HttpConfig`]).
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

    /// DPoP settings (default: on for public clients, off otherwise; ES256;
    /// a `Bearer` downgrade is refused).
    pub fn dpop(mut self, config: DpopConfig) -> Self {
        self.dpop = config;
        self
    }

    /// The OP's cancellation endpoint (the draft defines no metadata name
    /// for it).
    pub fn cancellation(mut self, config: CancellationConfig) -> Self {
        self.cancellation = Some(CancellationSetting::Given(config));
        self
    }

    /// Reads the cancellation endpoint from a metadata member of your
    /// choosing (an OP-specific name), sending bodies as `encoding`.
    pub fn cancellation_from_metadata(
        mut self,
        member: impl Into<String>,
        encoding: crate::proto::cancel::CancelEncoding,
    ) -> Self {
        self.cancellation = Some(CancellationSetting::FromMetadata(member.into(), encoding));
        self
    }

    /// The poll schedule's tuning: backoff, final-poll margin, maximum
    /// lifetime (default: [`PollConfig::default`]). The cadence while pings
    /// are expected is set with
    /// [`notified_poll_cadence`](Self::notified_poll_cadence).
    pub fn poll_config(mut self, config: PollConfig) -> Self {
        self.poll = Some(config);
        self
    }

    /// How often to poll while pings are expected (only with a
    /// [`notification_endpoint`](Self::notification_endpoint)): polling is
    /// then a safety net, and a ping brings the next poll back to the
    /// OP's interval. Default: 60 s. `None` polls at the OP's interval, as
    /// without pings. Without a notification endpoint, polls are always at
    /// the interval. This is the only setting of this cadence for a client.
    pub fn notified_poll_cadence(mut self, cadence: Option<Duration>) -> Self {
        self.notified_cadence = Some(cadence);
        self
    }

    /// Where pending authentications and their outcomes are kept (default:
    /// [`MemoryStore`], lost on restart). With a durable store, such as
    /// [`FileStore`](crate::store::FileStore), a new client on the same
    /// store resumes every pending authentication where it was and hands
    /// over outcomes that were received but not acknowledged.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// [`store`](Self::store), with a shared store.
    pub fn store_arc(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The Deferred Token Response profile to speak: [`Profile::Oidc`] (the
    /// OpenID Connect draft) or [`Profile::Ietf`] (the IETF OAuth draft:
    /// `completion_mode=deferred` on the token request, `deferral_code`,
    /// cancellation by revocation). Without it, `build` picks the one the
    /// OP's metadata advertises (OIDC when it advertises both). With it, an
    /// OP that supports both gets this one, and one that does not advertise
    /// it is refused (unless [`allow_unadvertised_dtr`](Self::allow_unadvertised_dtr)).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = Some(profile);
        self
    }

    /// Accept IETF callbacks that carry no bearer token (default off).
    ///
    /// The IETF draft has the AS omit `Authorization` when the client sent
    /// no `client_notification_token` (it sends one whenever a
    /// [`notification_endpoint`](Self::notification_endpoint) is
    /// configured, so this matters for authentications started elsewhere or
    /// by another configuration). Such a callback is advisory only: it can
    /// wake a poll (at the interval floor), never more, and only for an
    /// IETF authentication that has no notification token. Protect the
    /// endpoint another way (mTLS, a private network). Off, such callbacks
    /// get 401 like any unauthenticated one.
    pub fn accept_unauthenticated_callbacks(mut self, accept: bool) -> Self {
        self.accept_unauthenticated_callbacks = accept;
        self
    }

    /// Whether IETF-profile authorization requests carry the
    /// `completion_mode=deferred` hint (default true). The hint tells the
    /// AS early that the token request will opt in; either way the token
    /// request of [`DtrClient::redeem_code`](crate::DtrClient::redeem_code)
    /// opts in.
    pub fn completion_mode_hint(mut self, hint: bool) -> Self {
        self.no_completion_mode_hint = !hint;
        self
    }

    /// How this instance shares a [shared](Store::is_shared) store (such as
    /// a `PostgresStore`) with the other instances of a fleet: lease TTL,
    /// claim batch, delivery visibility timeout. Ignored with a store of
    /// one process.
    pub fn fleet(mut self, config: FleetConfig) -> Self {
        self.fleet = config;
        self
    }

    /// Pushes every authorization request to the OP's
    /// `pushed_authorization_request_endpoint` (PAR, RFC 9126) before the
    /// browser is sent there with only `client_id` and `request_uri`: the
    /// parameters travel on the back channel, authenticated, and cannot be
    /// tampered with in the browser. Get the URL with
    /// [`AuthorizationRequestBuilder::push`](crate::client::AuthorizationRequestBuilder::push)
    /// (or `build_or_push`). Off by default; always on when the OP's
    /// metadata says `require_pushed_authorization_requests`, and in
    /// [FAPI 2.0 mode](Self::fapi2).
    pub fn pushed_authorization_requests(mut self, on: bool) -> Self {
        self.pushed_authorization_requests = on;
        self
    }

    /// Signs every authorization request as a request object (JAR,
    /// RFC 9101) with this key: `typ` `oauth-authz-req+jwt`, `iss` = the
    /// client id, `aud` = the issuer, `iat`, `nbf`, `exp`, a fresh `jti`, and
    /// every authorization parameter inside. Sent by value (`request`) in
    /// the URL, or inside the push with PAR (as the FAPI 2.0 Message
    /// Signing profile has it). The key's public half must be registered at
    /// the OP (the client's JWKS). Asymmetric keys only: PS256, ES256,
    /// EdDSA, or RS256 outside FAPI 2.0; an HMAC key is refused at build.
    pub fn request_object_signing_key(mut self, key: crate::jose::SigningKey) -> Self {
        self.request_object_key = Some((Arc::new(key), true));
        self
    }

    /// Signs request objects, as
    /// [`request_object_signing_key`](Self::request_object_signing_key)
    /// does, with a key outside the process (a KMS, an HSM): the request
    /// object is built here and its signing input handed to `signer`,
    /// awaited. Since signing is then asynchronous, finish authorization
    /// requests with [`build_or_push`](crate::client::AuthorizationRequestBuilder::build_or_push)`.await`
    /// or [`push`](crate::client::AuthorizationRequestBuilder::push)`.await`
    /// (the synchronous `build` refuses). A failing signer gives
    /// [`Error::Signer`](crate::Error::Signer) and nothing is sent.
    /// Asymmetric algorithms only, as for a key.
    pub fn request_object_signer(mut self, signer: Arc<dyn crate::jose::Signer>) -> Self {
        self.request_object_key = Some((signer, false));
        self
    }

    /// The lifetime of request objects (`exp` - `nbf`): default
    /// 5 minutes, at most 60 (the FAPI 2.0 Message Signing limit).
    pub fn request_object_lifetime(mut self, lifetime: Duration) -> Self {
        self.request_object_lifetime = Some(lifetime);
        self
    }

    /// The security profile to follow (default: the SDK's defaults).
    pub fn security_profile(mut self, profile: super::fapi::SecurityProfile) -> Self {
        self.security_profile = profile;
        self
    }

    /// Follows the FAPI 2.0 Security Profile. At build time it refuses,
    /// with [`ConfigError::Fapi2`] saying what to change, what the profile
    /// forbids: client secrets (`client_secret_basic`, `_post`, `_jwt`) and
    /// public clients (§5.3.3.1: mutual TLS or `private_key_jwt` only), a
    /// client assertion `aud` other than the issuer as a single string
    /// (§5.3.3.1), access tokens without a sender constraint (DPoP
    /// disabled without mutual TLS, §5.3.3.1), and RS256 or any algorithm
    /// but PS256, ES256 and EdDSA for the client assertion, DPoP, request
    /// objects and ID tokens (§5.4); an OP without a PAR endpoint is
    /// refused too (§5.3.3.2).
    ///
    /// At run time: every authorization request is pushed (PAR, §5.3.3.2)
    /// and, with DPoP, bound to its key (`dpop_jkt`); the redirect carries
    /// only `client_id` and `request_uri`; PKCE is S256 (as always with
    /// this SDK, which never sends `plain`); an authorization response
    /// without `iss` (RFC 9207) is refused (§5.3.3.2); ID tokens signed
    /// with anything but PS256, ES256 or EdDSA are refused (§5.4). ID token
    /// validation's default algorithm list becomes those three.
    ///
    /// Sections are those of the FAPI 2.0 Security Profile.
    pub fn fapi2(self) -> Self {
        self.security_profile(super::fapi::SecurityProfile::Fapi2)
    }

    /// The poll driver's tuning (requests in flight, outcome retention,
    /// event channel capacity).
    pub fn driver_config(mut self, config: DriverConfig) -> Self {
        self.driver = config;
        self
    }

    /// Builds the client, discovering the metadata if none was given.
    ///
    /// Must run inside a tokio runtime: the client's poll driver is spawned
    /// on it.
    ///
    /// Cancel safety: safe. Dropped, nothing was started (discovery
    /// requests are simply abandoned).
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
            (None, Some(issuer)) => crate::engine::discovery::discover(&http, &issuer).await?,
            (None, None) => return Err(ConfigError::Missing("issuer").into()),
        };
        let profile = match self.profile {
            Some(p) if self.allow_unadvertised || p.advertised_by(&metadata) => p,
            Some(Profile::Ietf) => {
                return Err(DiscoveryError::DtrNotAdvertised {
                    missing: vec!["`deferred_token_response_supported: true`".to_owned()],
                }
                .into());
            }
            Some(p) => {
                metadata.check_dtr_support()?;
                p
            }
            None => match Profile::choose(None, &metadata) {
                Some(p) => p,
                None if self.allow_unadvertised => Profile::Oidc,
                None => {
                    metadata.check_dtr_support()?;
                    Profile::Oidc
                }
            },
        };
        // Under mutual TLS, back-channel endpoints go to the OP's
        // `mtls_endpoint_aliases` (RFC 8705 §5) where it publishes one.
        let mtls_alias = |name: &str, plain: Url| match http.current_identity() {
            Some(_) => metadata.mtls_endpoint_alias(name).cloned().unwrap_or(plain),
            None => plain,
        };
        let revocation_endpoint = metadata
            .revocation_endpoint()
            .map(|u| mtls_alias("revocation_endpoint", u));
        if profile == Profile::Ietf {
            match &revocation_endpoint {
                None => tracing::warn!(
                    "the AS publishes no revocation_endpoint: cancel() can stop polling but not tell the AS"
                ),
                Some(_) if !crate::proto::profile::revocation_supports_deferral_code(&metadata) => {
                    tracing::warn!(
                        "the AS does not list the deferral-code type in revocation_endpoint_token_type_values_supported: its answer to a cancellation proves nothing"
                    )
                }
                Some(_) => {}
            }
        }
        let auth = match self.auth {
            Some(ClientAuth::ClientSecretBasic(secret)) if self.secret_only => {
                secret_method_from_metadata(&metadata, secret)
            }
            Some(a) => a,
            None => ClientAuth::None,
        };
        let fapi2 = self.security_profile == super::fapi::SecurityProfile::Fapi2;
        let mut dpop = self.dpop;
        if let Some(s) = &dpop.signer {
            // Proofs are signed with the signer's algorithm.
            dpop.algorithm = s.algorithm();
        }
        let dpop_signers = DpopSigners::new(&dpop)?;
        let mut validation = self.validation;
        if fapi2 {
            super::fapi::apply(super::fapi::Fapi2Settings {
                auth: &auth,
                dpop: &mut dpop,
                validation: &mut validation,
                request_object_alg: self.request_object_key.as_ref().map(|(s, _)| s.algorithm()),
                metadata: &metadata,
            })?;
        }
        if let Some((signer, _)) = &self.request_object_key {
            crate::proto::request_object::check_request_object_alg(signer.algorithm())?;
        }
        let request_object_lifetime = self
            .request_object_lifetime
            .unwrap_or(crate::proto::request_object::DEFAULT_REQUEST_OBJECT_LIFETIME);
        crate::proto::request_object::check_lifetime(request_object_lifetime)?;
        let request_object = self.request_object_key.map(|(signer, in_process)| {
            crate::proto::request_object::RequestObjectSigning {
                signer,
                in_process,
                lifetime: request_object_lifetime,
            }
        });
        let push_requests = self.pushed_authorization_requests
            || fapi2
            || metadata.require_pushed_authorization_requests;
        if auth.is_mutual_tls() && http.current_identity().is_none() {
            return Err(ConfigError::Missing("client_identity").into());
        }
        let secret = auth.client_secret();
        let validator = IdTokenValidator::new(
            metadata.issuer.clone(),
            client_id.clone(),
            validation,
            metadata.id_token_signing_alg_values_supported.as_deref(),
            secret,
        )?;
        self.jwks.check()?;
        let jwks = JwksCache::new(
            metadata.jwks_uri.clone(),
            self.jwks,
            validator.allowed_algorithms(),
        );
        let cancellation = match self.cancellation {
            None => None,
            Some(CancellationSetting::Given(c)) => Some(c),
            Some(CancellationSetting::FromMetadata(member, encoding)) => {
                let url = metadata
                    .additional
                    .get(&member)
                    .and_then(|v| v.as_str())
                    .ok_or(ConfigError::Invalid {
                        field: "cancellation",
                        reason: format!("the metadata has no string member `{member}`"),
                    })?;
                let mut c = CancellationConfig::new(url)?.encoding(encoding);
                c.endpoint = mtls_alias(&member, c.endpoint);
                Some(c)
            }
        };
        if let Some(c) = &cancellation {
            c.check(&auth)?;
        }
        // The cadence applies only when pings can arrive.
        let poll_config =
            self.poll
                .unwrap_or_default()
                .with_notified_cadence(match &notification_endpoint {
                    None => None,
                    Some(_) => self
                        .notified_cadence
                        .unwrap_or(Some(DEFAULT_NOTIFIED_CADENCE)),
                });
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::Invalid {
            field: "runtime",
            reason: "DtrClient::build must run inside a tokio runtime".into(),
        })?;
        // What the application supplies is called from the engine's own
        // tasks: a panic in it must not stop the engine.
        let clock: Arc<dyn Clock> = match self.clock {
            Some(c) => Arc::new(crate::engine::guard::GuardedClock::new(c)),
            None => Arc::new(SystemClock),
        };
        let rng: Arc<dyn RandomSource> = match self.rng {
            Some(r) => Arc::new(crate::engine::guard::GuardedRandom::new(r)),
            None => Arc::new(SystemRandom),
        };
        let driver_config = self.driver;
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        store.bind(&metadata.issuer, &client_id).await?;
        // A fleet member claims its share as it goes; a sole owner loads
        // everything now.
        let fleet = store.is_shared().then(|| {
            let name =
                crate::random::random_b64url(rng.as_ref(), 9).unwrap_or_else(|_| "instance".into());
            let budget = crate::engine::fleet::request_budget(self.fleet.lease_ttl, self.http.timeout);
            if budget < self.http.timeout {
                let ttl_ms = u64::try_from(self.fleet.lease_ttl.as_millis()).unwrap_or(u64::MAX);
                let timeout_ms = u64::try_from(self.http.timeout.as_millis()).unwrap_or(u64::MAX);
                if budget < Duration::from_secs(2) {
                    tracing::warn!(
                        lease_ttl_ms = ttl_ms,
                        http_timeout_ms = timeout_ms,
                        "fleet: the lease TTL is short: a poll whose token request takes over a third of it outlives its lease (its answer is still handled, but another instance may poll meanwhile); raise FleetConfig::lease_ttl"
                    );
                } else {
                    tracing::info!(
                        lease_ttl_ms = ttl_ms,
                        http_timeout_ms = timeout_ms,
                        "fleet: polls are sent while a third of the lease TTL is left, less than the HTTP timeout: a token request slower than that outlives its lease (its answer is still handled)"
                    );
                }
            }
            Fleet::new(
                store.clone(),
                self.fleet.clone(),
                format!("{}-{name}", std::process::id()),
                self.http.timeout,
            )
        });
        let records = match fleet {
            Some(_) => Vec::new(),
            None => store.load_active().await?,
        };
        let retention = driver_config.finished_retention;
        let inner = Arc::new_cyclic(|weak| ClientInner {
            metadata,
            client_id,
            auth,
            redirect_uri,
            notification_endpoint,
            http,
            clock: clock.clone(),
            rng: rng.clone(),
            compat: self.compat,
            validator,
            jwks,
            dpop,
            dpop_signers,
            dpop_nonces: Mutex::new(HashMap::new()),
            cancellation,
            poll_config,
            store: store.clone(),
            profile,
            revocation_endpoint,
            accept_unauthenticated_callbacks: self.accept_unauthenticated_callbacks,
            completion_mode_hint: !self.no_completion_mode_hint,
            driver: DriverHandle::spawn(weak.clone(), clock.clone(), rng, driver_config, &runtime),
            fleet: fleet.clone(),
            push_requests,
            request_object,
            fapi2,
            poll_template: std::sync::OnceLock::new(),
        });
        if let Some(f) = &fleet {
            runtime.spawn(f.clone().run(inner.driver.clone(), clock.clone()));
            tracing::info!(
                instance = f.owner(),
                "fleet member: claiming due authentications from the shared store"
            );
        }
        // Resume: pending authentications poll again (a full floor from
        // now), received-but-unacknowledged outcomes wait to be handed over.
        let (mut pending, mut finished) = (0usize, 0usize);
        for r in records {
            // A store of this crate never returns a record of another
            // issuer or client once bound; one that does (a store of the
            // application's) must not have it polled at this issuer's
            // token endpoint or handed to this client.
            if r.auth.issuer() != inner.metadata.issuer || r.auth.client_id() != inner.client_id {
                metrics::counter!(
                    "oidc_dtr_store_quarantined_total",
                    "store" => "client",
                    "reason" => "foreign"
                )
                .increment(1);
                tracing::warn!(
                    deferred_auth_id = %r.fingerprint(),
                    "the store returned a record of another issuer or client; it is not resumed"
                );
                continue;
            }
            let outcome = r.outcome.map(|o| (o.outcome, o.finished_at));
            if outcome.is_some() {
                finished += 1;
            } else {
                pending += 1;
            }
            inner.driver.restore(r.auth, r.machine, outcome).await?;
        }
        if pending + finished > 0 {
            tracing::info!(pending, finished, "resumed from the store");
        }
        let _ = store.purge(clock.now().saturating_sub(retention)).await;
        Ok(DtrClient { inner })
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
