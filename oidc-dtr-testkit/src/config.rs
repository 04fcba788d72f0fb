//! The mock OP's configuration: how it answers, which faults it injects,
//! and which clients it knows.

use super::*;

/// What `/authorize` answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuthorizeOutcome {
    /// A `deferred_code` (the default).
    #[default]
    Defer,
    /// A plain `code` when the request allowed it (`deferred_code code`),
    /// else a `deferred_code`.
    Code,
    /// An error redirect.
    Error {
        /// The `error` code.
        error: String,
        /// The `error_description`.
        description: String,
    },
}

/// A way to break the ID tokens the mock OP issues, to test the RP's
/// validation: each fault breaks exactly one rule and leaves the token
/// otherwise valid.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdTokenFault {
    /// The signature does not verify (one bit flipped).
    BadSignature,
    /// `iss` names another issuer.
    WrongIssuer,
    /// `aud` names another client only.
    WrongAudience,
    /// `aud` has the client and `"https://other.example/api"`; with `azp` set
    /// to the client id when `azp` is true.
    ExtraAudience {
        /// Whether to add `azp` (= the client id).
        azp: bool,
    },
    /// `azp` names another party (one audience).
    WrongAzp,
    /// No `nonce`.
    MissingNonce,
    /// A `nonce` other than the request's.
    WrongNonce,
    /// Expired an hour ago.
    Expired,
    /// `nbf` an hour from now.
    NotYetValid,
    /// `iat` an hour from now.
    IssuedInFuture,
    /// `alg: none` and no signature.
    AlgNone,
    /// `at_hash` of another access token.
    WrongAtHash,
    /// Signed by a key the JWKS does not publish, with a fresh `kid`.
    UnknownKid,
    /// Signed by the current key, but without `kid` in the header.
    NoKid,
    /// A `crit` header (`["exp"]`).
    CritHeader,
    /// A five-part (JWE-shaped) token.
    Jwe,
    /// No `auth_time`.
    MissingAuthTime,
    /// `auth_time` this long before the token was issued.
    OldAuthTime(Duration),
    /// `sub` differs from the authentication's subject (so the final ID
    /// token disagrees with the interim one).
    OtherSubject,
    /// The token response has no `id_token` (final tokens only).
    MissingIdToken,
}

/// Which Deferred Token Response profiles the mock OP serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OpProfiles {
    /// The OpenID Connect draft only (the default): `deferred_code`, the
    /// exchange, `deferred_auth_id`.
    #[default]
    Oidc,
    /// The IETF OAuth draft only: `response_type=code`,
    /// `completion_mode=deferred` on the token request, `deferral_code`,
    /// revocation at `/revoke`, `deferred_token_response_supported`.
    Ietf,
    /// Both at once (an OP that ships both drafts).
    Both,
}

impl OpProfiles {
    pub(crate) fn oidc(self) -> bool {
        matches!(self, OpProfiles::Oidc | OpProfiles::Both)
    }
    pub(crate) fn ietf(self) -> bool {
        matches!(self, OpProfiles::Ietf | OpProfiles::Both)
    }
}

/// When a pending authentication approves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoApprove {
    /// Only through [`MockOp::approve`] (the default).
    #[default]
    Never,
    /// On the n-th accepted poll (polls answered `slow_down` do not count).
    AfterPolls(u32),
    /// Once this long has passed since the exchange.
    AfterDelay(Duration),
}

/// The mock OP's behaviour switches. Change them at any time with
/// [`MockOp::configure`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpConfig {
    /// Which profiles are served (default OIDC only).
    pub profiles: OpProfiles,
    /// What `/authorize` answers. In the IETF profile (`response_type=code`
    /// always gets a `code`), `Code` makes the token endpoint answer with
    /// tokens at once despite `completion_mode=deferred`; `Defer` (the
    /// default) defers.
    pub authorize_outcome: AuthorizeOutcome,
    /// IETF: list `urn:ietf:params:oauth:token-type:deferral-code` in
    /// `revocation_endpoint_token_type_values_supported`. Default true
    /// (false plays an AS that answers 200 to any revocation without
    /// supporting deferral codes).
    pub advertise_deferral_revocation: bool,
    /// IETF: new deferrals start as `interaction_required` at this URI
    /// (change it per authentication with [`MockOp::set_interaction`]).
    /// Default `None` (`authorization_pending`).
    pub interaction_uri: Option<String>,
    /// Put `iss` in authorization responses (RFC 9207). Default true.
    pub include_iss: bool,
    /// Advertise `authorization_response_iss_parameter_supported`. Default true.
    pub advertise_iss_parameter: bool,
    /// Advertise `deferred_code` and the deferred grant type. Default true.
    pub advertise_dtr: bool,
    /// Serve `/.well-known/openid-configuration`. Default true.
    pub serve_openid_configuration: bool,
    /// Serve `/.well-known/oauth-authorization-server`. Default true.
    pub serve_oauth_metadata: bool,
    /// Put another `issuer` in the metadata (to test the mix-up check).
    pub metadata_issuer: Option<String>,
    /// Require PKCE S256 at `/authorize`. Default true.
    pub require_pkce: bool,
    /// `expires_in` of new authentications (seconds). Default 3600.
    pub expires_in: Option<u64>,
    /// `interval` of new authentications (seconds); `None` sends none and
    /// enforces 5 s. Default 5.
    pub interval: Option<u64>,
    /// Send an `interim_id_token` in exchange responses. Default false.
    pub interim_id_token: bool,
    /// When pending authentications approve themselves.
    pub auto_approve: AutoApprove,
    /// Answer `slow_down` to polls faster than the interval. Default true.
    pub enforce_interval: bool,
    /// The `error_description` of `authorization_pending` answers.
    pub progress: String,
    /// The `sub` of issued ID tokens (default: `user-<n>`).
    pub subject: Option<String>,
    /// Break the final ID tokens (poll and code grant) this way.
    pub id_token_fault: Option<IdTokenFault>,
    /// Break the interim ID tokens this way.
    pub interim_id_token_fault: Option<IdTokenFault>,
    /// Extra claims for every ID token (e.g. `name`, `email`,
    /// `verified_claims`).
    pub extra_claims: serde_json::Map<String, serde_json::Value>,
    /// `Cache-Control: max-age` of `/jwks`, in seconds; `None` sends no
    /// cache headers. Default 300.
    pub jwks_max_age: Option<u64>,
    /// Answer `/jwks` with 503 (an outage). Default false.
    pub jwks_unavailable: bool,
    /// The `jwks_uri` the metadata advertises instead of the OP's own
    /// `/jwks` (e.g. a [`JwksPort`], whose port can be closed to refuse
    /// connections). Default `None`.
    pub jwks_uri: Option<String>,
    /// After [`MockOp::rotate_key`], how long the old key stays published;
    /// `None` (the default) keeps it until [`MockOp::retire_old_keys`].
    pub key_retire_delay: Option<Duration>,
    /// Progress texts for `authorization_pending`, one per accepted poll (the
    /// last one repeats); empty uses [`progress`](Self::progress).
    pub progress_script: Vec<String>,
    /// Expire authentications at their `expires_in` (answering
    /// `expired_token`). Default true; false keeps answering pending, as an
    /// OP that never expires anything.
    pub expire_authentications: bool,
    /// Require a DPoP proof on every token request. Default false (a proof
    /// is then checked when present, and binds the authentication).
    pub require_dpop: bool,
    /// Require the server's DPoP nonce in proofs (answering
    /// `use_dpop_nonce` with a `DPoP-Nonce` header otherwise). Default false.
    pub require_dpop_nonce: bool,
    /// The request header through which a TLS front (the OP's mTLS
    /// endpoint aliases, RFC 8705 §5) hands the OP the `x5t#S256` of the
    /// client certificate it verified. When set, an access token issued on
    /// a token request carrying it is certificate-bound (RFC 8705 §3, `cnf`
    /// `x5t#S256`), and UserInfo refuses it (401 `invalid_token`) on a
    /// request that does not carry the same thumbprint. Default none.
    pub client_cert_header: Option<String>,
    /// Answer `token_type: Bearer` even to DPoP-proved requests (a
    /// downgrade, to test that clients refuse it). Default false.
    pub dpop_downgrade: bool,
    /// Ping the client's notification endpoint when an authentication
    /// finishes. Default true.
    pub send_pings: bool,
    /// Answer a repeated poll of an id that was just redeemed with the same
    /// token response, for this long (some OPs keep token endpoints
    /// idempotent for retries). Default `None`: `invalid_grant`, as the
    /// draft says. With it, a client that crashed after the OP sent the
    /// tokens but before it stored them can still get them.
    pub redelivery_window: Option<Duration>,
    /// Advertise identity assurance (OpenID Connect for Identity Assurance
    /// 1.0) in the metadata (`verified_claims_supported`,
    /// `trust_frameworks_supported`, ...: see [`assurance`]) and answer a
    /// `claims` request's `verified_claims`. Default `true`.
    pub identity_assurance: bool,
    /// Break a rule of identity assurance in the `verified_claims` returned.
    /// Default `None`.
    pub assurance_fault: Option<AssuranceFault>,
    /// Serve HTML pages for people (demos, browser tests): `/authorize`
    /// shows a "submit your documents" form instead of redirecting back at
    /// once, and `/review` lists authentications with approve / deny
    /// buttons. Default false ([`MockOp::browse`] needs the immediate
    /// redirect).
    pub interactive_pages: bool,
    /// How long the token endpoint takes to answer a deferred poll (the
    /// request counts as in flight at the OP meanwhile; see
    /// [`MockOp::flight_report`]). Default `None`: at once.
    pub poll_latency: Option<Duration>,
    /// How long the OP takes to answer a request that starts or leads to a
    /// deferral: the OIDC exchange (`deferred_code`), the IETF initial token
    /// request (authorization code or device code) and the device
    /// authorization request. The request is processed when it arrives; the
    /// answer leaves this much later (what a slow OP does). Default `None`:
    /// at once.
    pub exchange_latency: Option<Duration>,
    /// Count the interval the way a strict OP does: from the moment the OP
    /// *answered* the request before (the exchange, the IETF initial token
    /// request or the device authorization for the first poll; then each
    /// poll, `slow_down` answers included), with no tolerance. A poll (or
    /// device-code token request) that arrives sooner gets `slow_down`
    /// (the interval rises by 5 s) and is recorded in
    /// [`FlightReport::floor_violations`]. Replaces the lenient check of
    /// [`enforce_interval`](Self::enforce_interval) (which counts from the
    /// previous poll's arrival). Default false.
    pub strict_interval: bool,
    /// Accept authorization requests only through PAR (RFC 9126 §5,
    /// advertised as `require_pushed_authorization_requests`). The PAR
    /// endpoint (`/par`) is always served. Default false.
    pub require_pushed_authorization_requests: bool,
    /// The lifetime of a pushed request's `request_uri`, in seconds (the
    /// `expires_in` of the PAR answer). Default 60.
    pub par_lifetime: u64,
    /// Members added to the discovery document (replacing any of the same
    /// name), e.g. `mtls_endpoint_aliases` pointing at a TLS front that
    /// asks for client certificates. Default: none.
    pub extra_metadata: serde_json::Map<String, serde_json::Value>,
    /// Play an authorization server under the FAPI 2.0 Security Profile
    /// (§5.3.2): client secrets (Basic, `client_secret`, HMAC assertions)
    /// and unauthenticated clients are refused with `invalid_client`
    /// (clients authenticate with `private_key_jwt` signed PS256, ES256 or
    /// EdDSA, or by the certificate a TLS front reports through
    /// [`client_cert_header`](Self::client_cert_header)); a token request
    /// with neither a DPoP proof nor a client certificate is refused
    /// (`invalid_request`: access tokens must be sender-constrained).
    /// [`OpConfig::fapi2`] also turns on PAR, PKCE and `iss`. Default false.
    pub fapi2: bool,
}

impl OpConfig {
    /// The defaults with the FAPI 2.0 switch on ([`fapi2`](Self::fapi2)),
    /// pushed authorization requests required, PKCE S256 required and
    /// `iss` in authorization responses. Start the OP with a PS256, ES256
    /// or EdDSA signing algorithm (`MockOpBuilder::signing_alg`).
    ///
    /// ```
    /// let config = oidc_dtr_testkit::OpConfig::fapi2();
    /// assert!(config.fapi2 && config.require_pushed_authorization_requests);
    /// ```
    pub fn fapi2() -> Self {
        OpConfig {
            fapi2: true,
            require_pushed_authorization_requests: true,
            require_pkce: true,
            include_iss: true,
            advertise_iss_parameter: true,
            ..OpConfig::default()
        }
    }
}

impl Default for OpConfig {
    fn default() -> Self {
        OpConfig {
            profiles: OpProfiles::Oidc,
            advertise_deferral_revocation: true,
            interaction_uri: None,
            authorize_outcome: AuthorizeOutcome::Defer,
            include_iss: true,
            advertise_iss_parameter: true,
            advertise_dtr: true,
            serve_openid_configuration: true,
            serve_oauth_metadata: true,
            metadata_issuer: None,
            require_pkce: true,
            expires_in: Some(3600),
            interval: Some(5),
            interim_id_token: false,
            auto_approve: AutoApprove::Never,
            enforce_interval: true,
            progress: "Your identity documents are in the review queue".into(),
            subject: None,
            id_token_fault: None,
            interim_id_token_fault: None,
            extra_claims: serde_json::Map::new(),
            jwks_max_age: Some(300),
            jwks_unavailable: false,
            jwks_uri: None,
            key_retire_delay: None,
            progress_script: Vec::new(),
            expire_authentications: true,
            require_dpop: false,
            require_dpop_nonce: false,
            client_cert_header: None,
            dpop_downgrade: false,
            send_pings: true,
            redelivery_window: None,
            identity_assurance: true,
            assurance_fault: None,
            interactive_pages: false,
            poll_latency: None,
            exchange_latency: None,
            strict_interval: false,
            require_pushed_authorization_requests: false,
            par_lifetime: 60,
            extra_metadata: serde_json::Map::new(),
            fapi2: false,
        }
    }
}

/// A failure the mock OP plays on a token request instead of (or around)
/// its normal behaviour. Queue them with [`MockOp::inject_faults`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this status, headers and body; the request is not
    /// processed.
    Respond {
        /// The HTTP status.
        status: u16,
        /// Headers to send.
        headers: Vec<(String, String)>,
        /// The body.
        body: String,
    },
    /// Process the request normally, but answer after this delay.
    Delay(Duration),
    /// Close the connection without answering; the request is not processed.
    Reset,
    /// Process the request, then close the connection without answering:
    /// the OP's state changed (a success redeemed the id) but the client
    /// never hears of it.
    LostResponse,
}

impl Fault {
    /// An empty answer with `status`.
    pub fn status(status: u16) -> Self {
        Fault::Respond {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// 503 with `Retry-After: <secs>`.
    pub fn service_unavailable(retry_after_secs: u64) -> Self {
        Fault::Respond {
            status: 503,
            headers: vec![("retry-after".into(), retry_after_secs.to_string())],
            body: String::new(),
        }
    }

    /// 429 with `Retry-After: <secs>`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Fault::Respond {
            status: 429,
            headers: vec![("retry-after".into(), retry_after_secs.to_string())],
            body: String::new(),
        }
    }

    /// An HTML error page with `status` (what a proxy in front of the OP
    /// sends).
    pub fn html(status: u16) -> Self {
        Fault::Respond {
            status,
            headers: vec![("content-type".into(), "text/html".into())],
            body: format!(
                "<html><body><h1>{status} Error</h1><p>upstream unavailable</p></body></html>"
            ),
        }
    }

    /// A truncated JSON body with a JSON content type.
    pub fn malformed_json(status: u16) -> Self {
        Fault::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: r#"{"error":"authorization_pen"#.into(),
        }
    }

    /// A JSON content type with an empty body.
    pub fn empty_json(status: u16) -> Self {
        Fault::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: String::new(),
        }
    }
}

/// A client the mock OP knows.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RegisteredClient {
    /// The client id.
    pub client_id: String,
    /// The secret (`client_secret_basic`, `_post`, `_jwt`); `None` for a
    /// public client or one using `private_key_jwt`.
    pub secret: Option<String>,
    /// Allowed redirect URIs (exact match); empty allows any.
    pub redirect_uris: Vec<String>,
    /// Public keys for `private_key_jwt` client assertions.
    pub jwks: Vec<serde_json::Value>,
    /// The `deferred_client_notification_endpoint`, for Ping Callbacks.
    pub notification_endpoint: Option<String>,
}

impl RegisteredClient {
    /// A confidential client (accepts `client_secret_basic` and `_post`).
    pub fn confidential(client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        RegisteredClient {
            client_id: client_id.into(),
            secret: Some(secret.into()),
            redirect_uris: Vec::new(),
            jwks: Vec::new(),
            notification_endpoint: None,
        }
    }

    /// A client authenticating with `private_key_jwt`, with these public
    /// keys.
    pub fn private_key_jwt(client_id: impl Into<String>, jwks: Vec<serde_json::Value>) -> Self {
        RegisteredClient {
            client_id: client_id.into(),
            secret: None,
            redirect_uris: Vec::new(),
            jwks,
            notification_endpoint: None,
        }
    }

    /// Registers a notification endpoint: the OP pings it when an
    /// authentication of this client finishes.
    pub fn with_notification_endpoint(mut self, url: impl Into<String>) -> Self {
        self.notification_endpoint = Some(url.into());
        self
    }

    /// A public client.
    pub fn public(client_id: impl Into<String>) -> Self {
        RegisteredClient {
            client_id: client_id.into(),
            secret: None,
            redirect_uris: Vec::new(),
            jwks: Vec::new(),
            notification_endpoint: None,
        }
    }

    /// Restricts the redirect URIs.
    pub fn with_redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uris.push(uri.into());
        self
    }
}
