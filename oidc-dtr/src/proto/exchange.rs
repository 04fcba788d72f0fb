//! The Deferred Code Exchange (draft §"Deferred Code Exchange Request" and
//! §"Successful Deferred Code Exchange Response"): trade the single-use
//! `deferred_code` for the `deferred_auth_id` the RP will poll with.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::Error;
use crate::jose::DpopKey;
use crate::jose::dpop::{DpopRef, FlowDpop};
use crate::proto::assurance::ClaimsRequest;
use crate::proto::callback::Acknowledgment;
use crate::proto::claims::IdTokenClaims;
use crate::proto::discovery::GRANT_TYPE_DEFERRED;
use crate::proto::ietf::InteractionUri;
use crate::proto::message::{HttpResponse, success_object};
use crate::proto::profile::Profile;
use crate::secret::{
    DeferredId, DeferredNotificationToken, Nonce, PkceVerifier, RawJwt, SecretHash,
};
use crate::time::UnixTime;

/// The poll interval when the OP sends none (the OIDC draft sets no
/// default; this is the RFC 8628 / CIBA convention).
pub(crate) const DEFAULT_INTERVAL_SECS: u64 = 5;

/// Bytes of randomness in a `deferred_notification_token` (256 bits).
pub(crate) const NOTIFICATION_TOKEN_BYTES: usize = 32;

const CONTEXT: &str = "deferred code exchange response";

/// Switches for OPs built on earlier snapshots of the draft, which sent
/// `redirect_uri` (until the text of 2025-12-15) or expected `code_verifier`
/// in the exchange; the current draft lists neither, so both are off by
/// default. Handed to
/// [`DtrClientBuilder::compat`](crate::DtrClientBuilder::compat).
///
/// ```
/// use oidc_dtr::client::Compat;
///
/// let compat = Compat::default().exchange_send_redirect_uri(true);
/// assert_ne!(compat, Compat::default());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compat {
    pub(crate) exchange_send_redirect_uri: bool,
    pub(crate) exchange_send_code_verifier: bool,
}

impl Compat {
    /// Send `redirect_uri` in the exchange (drafts before 2025-12-15 did).
    /// Default: false.
    #[must_use]
    pub fn exchange_send_redirect_uri(mut self, yes: bool) -> Self {
        self.exchange_send_redirect_uri = yes;
        self
    }

    /// Send the PKCE `code_verifier` in the exchange (binds the
    /// public-client instance; no draft revision requires it). Default:
    /// false.
    #[must_use]
    pub fn exchange_send_code_verifier(mut self, yes: bool) -> Self {
        self.exchange_send_code_verifier = yes;
        self
    }
}

/// The form parameters of a Deferred Code Exchange Request (before client
/// authentication is added).
pub(crate) fn exchange_params(
    ack: &Acknowledgment,
    notification_token: Option<&DeferredNotificationToken>,
    compat: &Compat,
) -> Vec<(&'static str, String)> {
    let mut p = vec![
        ("grant_type", GRANT_TYPE_DEFERRED.to_owned()),
        ("deferred_code", ack.deferred_code.secret().to_owned()),
    ];
    if let Some(t) = notification_token {
        p.push(("deferred_notification_token", t.secret().to_owned()));
    }
    if compat.exchange_send_redirect_uri {
        p.push(("redirect_uri", ack.pending.redirect_uri.as_str().to_owned()));
    }
    if compat.exchange_send_code_verifier {
        p.push((
            "code_verifier",
            ack.pending.pkce_verifier.secret().to_owned(),
        ));
    }
    p
}

/// What an IETF authentication keeps from the request that started it.
pub(crate) struct IetfOrigin {
    pub issuer: String,
    pub client_id: String,
    pub nonce: Nonce,
    pub pkce_verifier: PkceVerifier,
    pub max_age: Option<u64>,
    pub requested_at: UnixTime,
    pub claims_request: Option<Box<ClaimsRequest>>,
    pub device_flow: bool,
}

impl From<&crate::proto::authorize::PendingAuthorization> for IetfOrigin {
    fn from(p: &crate::proto::authorize::PendingAuthorization) -> Self {
        IetfOrigin {
            issuer: p.issuer.clone(),
            client_id: p.client_id.clone(),
            nonce: p.nonce.clone(),
            pkce_verifier: p.pkce_verifier.clone(),
            max_age: p.max_age,
            requested_at: p.created_at,
            claims_request: p.claims_request.clone(),
            device_flow: false,
        }
    }
}

/// A parsed Successful Deferred Code Exchange Response.
#[derive(Debug, Clone)]
pub(crate) struct ExchangeResponse {
    pub deferred_auth_id: DeferredId,
    pub expires_in: Option<u64>,
    pub interval: Option<u64>,
    pub interim_id_token: Option<RawJwt>,
}

/// Parses the exchange response: `deferred_auth_id` required, non-empty and
/// at most 4 KiB; `expires_in` and `interval` positive integers when present
/// (written as integers: `1e3` or `60.0` is refused; huge integers
/// saturate); `interim_id_token` a string when present; unknown members
/// ignored. Error statuses become the OP's OAuth error or an HTTP error.
pub(crate) fn parse_exchange_response(
    resp: &HttpResponse,
    endpoint: &Url,
) -> Result<ExchangeResponse, Error> {
    let obj = success_object(resp, endpoint, CONTEXT, "deferred_auth_id")?;
    Ok(ExchangeResponse {
        deferred_auth_id: DeferredId::new(obj.required_handle("deferred_auth_id")?),
        expires_in: obj.optional_positive_int("expires_in")?,
        interval: obj.optional_positive_int("interval")?,
        interim_id_token: match obj.optional_str("interim_id_token")? {
            Some("") => return Err(obj.err("interim_id_token", "is empty").into()),
            Some(s) => Some(RawJwt::new(s)),
            None => None,
        },
    })
}

/// One Authentication Process at the OP, as the RP must remember it: the
/// `deferred_auth_id` and everything a poller needs days later (an absolute
/// deadline, the interval floor, the `nonce` every ID token must carry, the
/// PKCE and `max_age` context, the notification token's hash).
///
/// Serialise it to keep it across restarts: the deadline is absolute, so a
/// resumed authentication keeps the deadline the OP set. `Debug` shows no
/// secret.
///
/// Cloning it is cheap: clones share one immutable copy of the fields (the
/// poll driver and an in-memory store hold the same one), and a change
/// through a crate-internal setter copies them first.
#[derive(Clone, PartialEq, Eq)]
pub struct DeferredAuthentication {
    fields: Arc<AuthFields>,
}

impl std::ops::Deref for DeferredAuthentication {
    type Target = AuthFields;
    fn deref(&self) -> &AuthFields {
        &self.fields
    }
}

impl std::ops::DerefMut for DeferredAuthentication {
    fn deref_mut(&mut self) -> &mut AuthFields {
        Arc::make_mut(&mut self.fields)
    }
}

impl Serialize for DeferredAuthentication {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.fields.serialize(s)
    }
}

impl<'de> Deserialize<'de> for DeferredAuthentication {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AuthFields::deserialize(d).map(DeferredAuthentication::from)
    }
}

impl From<AuthFields> for DeferredAuthentication {
    fn from(fields: AuthFields) -> Self {
        DeferredAuthentication {
            fields: Arc::new(fields),
        }
    }
}

/// The fields of a [`DeferredAuthentication`] (its serialised form). Not
/// nameable outside the crate (its module is private and it is not
/// re-exported); its fields are crate-private: the public API is the
/// methods of [`DeferredAuthentication`].
#[allow(unreachable_pub)]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFields {
    pub(crate) id: DeferredId,
    /// Shared by every authentication of the same issuer (see
    /// [`shared_name`]): a pointer each, not a copy.
    #[serde(with = "shared_name")]
    pub(crate) issuer: Arc<str>,
    /// Shared like `issuer`.
    #[serde(with = "shared_name")]
    pub(crate) client_id: Arc<str>,
    pub(crate) issued_at: UnixTime,
    /// When the answer that created it arrived (the exchange's, or the
    /// IETF initial token request's): the anchor of the first poll's
    /// floor. Absent in records written before it existed (and in seeded
    /// ones): `issued_at` then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) answered_at: Option<UnixTime>,
    pub(crate) expires_at: Option<UnixTime>,
    pub(crate) interval_secs: u64,
    pub(crate) nonce: Nonce,
    pub(crate) pkce_verifier: PkceVerifier,
    pub(crate) max_age: Option<u64>,
    pub(crate) requested_at: UnixTime,
    pub(crate) notification_token_hash: Option<SecretHash>,
    pub(crate) interim_id_token: Option<RawJwt>,
    /// The claims of the interim ID token, validated at the exchange.
    #[serde(default)]
    pub(crate) interim_claims: Option<Box<IdTokenClaims>>,
    /// The DPoP key of this authentication process, when DPoP is used
    /// with a key generated for it.
    #[serde(default)]
    pub(crate) dpop_key: Option<Box<DpopKey>>,
    /// The RFC 7638 thumbprint of the external DPoP signer's key it is
    /// bound to, when DPoP is used with
    /// [`DpopConfig::signer`](crate::client::DpopConfig::signer) (the
    /// private key stays with the signer). Absent otherwise and in records
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dpop_signer_jkt: Option<Box<str>>,
    /// The typed `claims` request of the authentication request, to check
    /// the verified claims of the final ID token against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) claims_request: Option<Box<ClaimsRequest>>,
    /// The profile it runs under (absent in records written before
    /// profiles existed: those are OIDC).
    #[serde(default)]
    pub(crate) profile: Profile,
    /// The `interaction_uri` of the IETF deferred response, when it was
    /// `interaction_required`.
    /// Boxed: rare (IETF `interaction_required` only), and a `Url` inline
    /// would cost every authentication 88 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) initial_interaction_uri: Option<Box<InteractionUri>>,
    /// Started by the device flow (RFC 8628): ID tokens may lack `nonce`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) device_flow: bool,
    /// The `x5t#S256` of the client certificate (mutual TLS, RFC 8705) it
    /// was started with: every later request for it (polls, cancellation)
    /// presents that certificate, whatever the current one is (RFC 8705
    /// §3: its tokens are bound to it). Absent without mutual TLS and in
    /// records written before it existed.
    /// A boxed `str` (it never grows): 16 bytes inline, not 24.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) client_cert_thumbprint: Option<Box<str>>,
}

/// The issuer and client id of an authentication, shared: every
/// authentication of one client names the same two strings, so they are
/// kept once (`Arc<str>`) rather than once per authentication. Serialised
/// as plain strings (the stored form is unchanged); read back through a
/// small process-wide table of the names seen, so that records loaded from
/// a store share them too.
pub(crate) mod shared_name {
    use std::sync::{Arc, Mutex};

    use serde::{Deserialize, Deserializer, Serializer};

    /// At most this many distinct names are shared; past it (a process
    /// serving that many issuers and clients at once), names no longer in
    /// use are dropped from the table, and if all are in use a new name
    /// gets its own copy.
    const MAX_SHARED: usize = 64;

    static NAMES: Mutex<Vec<Arc<str>>> = Mutex::new(Vec::new());

    /// The shared copy of `name`.
    pub(crate) fn intern(name: &str) -> Arc<str> {
        // The table holds only non-secret names: a poisoned lock is still
        // a consistent list.
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = names.iter().find(|n| ***n == *name) {
            return n.clone();
        }
        if names.len() >= MAX_SHARED {
            names.retain(|n| Arc::strong_count(n) > 1);
        }
        let n: Arc<str> = Arc::from(name);
        if names.len() < MAX_SHARED {
            names.push(n.clone());
        }
        n
    }

    pub(crate) fn serialize<S: Serializer>(name: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(intern(&name))
    }
}

impl AuthFields {
    /// Binds it to a flow's DPoP key (a generated key is kept; an external
    /// signer's key is named by its thumbprint).
    pub(crate) fn set_dpop(&mut self, dpop: Option<FlowDpop>) {
        (self.dpop_key, self.dpop_signer_jkt) = FlowDpop::into_stored(dpop);
    }
}

impl fmt::Debug for DeferredAuthentication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredAuthentication")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("issued_at", &self.issued_at)
            .field("answered_at", &self.answered_at)
            .field("expires_at", &self.expires_at)
            .field("interval_secs", &self.interval_secs)
            .field("nonce", &self.nonce)
            .field("max_age", &self.max_age)
            .field("requested_at", &self.requested_at)
            .field("notification", &self.notification_token_hash.is_some())
            .field("interim_id_token", &self.interim_id_token.is_some())
            .field("dpop_key", &self.dpop_key)
            .field("dpop_signer_jkt", &self.dpop_signer_jkt)
            .field("interim_claims", &self.interim_claims)
            .field("claims_request", &self.claims_request.is_some())
            .field("profile", &self.profile)
            .field("initial_interaction_uri", &self.initial_interaction_uri)
            .field("client_cert_thumbprint", &self.client_cert_thumbprint)
            .finish_non_exhaustive()
    }
}

impl DeferredAuthentication {
    pub(crate) fn new(
        ack: Acknowledgment,
        resp: ExchangeResponse,
        issued_at: UnixTime,
        answered_at: UnixTime,
        notification_token: Option<&DeferredNotificationToken>,
    ) -> Self {
        let pending = ack.pending;
        DeferredAuthentication::from(AuthFields {
            id: resp.deferred_auth_id,
            issuer: shared_name::intern(&pending.issuer),
            client_id: shared_name::intern(&pending.client_id),
            issued_at,
            answered_at: Some(answered_at),
            expires_at: resp
                .expires_in
                .map(|s| issued_at.saturating_add(Duration::from_secs(s))),
            interval_secs: resp.interval.unwrap_or(DEFAULT_INTERVAL_SECS),
            nonce: pending.nonce.clone(),
            pkce_verifier: pending.pkce_verifier.clone(),
            max_age: pending.max_age,
            requested_at: pending.created_at,
            notification_token_hash: notification_token
                .map(|t| SecretHash::of(t.secret().as_bytes())),
            interim_id_token: resp.interim_id_token,
            interim_claims: None,
            dpop_key: None,
            dpop_signer_jkt: None,
            claims_request: pending.claims_request.clone(),
            profile: Profile::Oidc,
            initial_interaction_uri: None,
            device_flow: false,
            client_cert_thumbprint: None,
        })
    }

    /// An IETF-profile authentication from a deferred response to an
    /// initial token request: the handle is the `deferral_code`, the
    /// validation context (nonce, PKCE, `max_age`, claims request) that of
    /// the originating request.
    pub(crate) fn from_ietf(
        origin: IetfOrigin,
        resp: crate::proto::ietf::DeferredResponse,
        issued_at: UnixTime,
        answered_at: UnixTime,
        notification_token_hash: Option<SecretHash>,
    ) -> Self {
        DeferredAuthentication::from(AuthFields {
            id: DeferredId::new(resp.deferral_code),
            issuer: shared_name::intern(&origin.issuer),
            client_id: shared_name::intern(&origin.client_id),
            issued_at,
            answered_at: Some(answered_at),
            expires_at: resp
                .expires_in
                .map(|s| issued_at.saturating_add(Duration::from_secs(s))),
            interval_secs: resp.interval.unwrap_or(DEFAULT_INTERVAL_SECS),
            nonce: origin.nonce,
            pkce_verifier: origin.pkce_verifier,
            max_age: origin.max_age,
            requested_at: origin.requested_at,
            notification_token_hash,
            interim_id_token: None,
            interim_claims: None,
            dpop_key: None,
            dpop_signer_jkt: None,
            claims_request: origin.claims_request,
            profile: Profile::Ietf,
            initial_interaction_uri: resp.interaction_uri.map(Box::new),
            device_flow: origin.device_flow,
            client_cert_thumbprint: None,
        })
    }

    /// The record of tokens answered at once (a code redemption or the
    /// device flow) whose ID token could not be validated yet: `id` is a
    /// handle made up by the SDK (never sent to the OP), the validation
    /// context that of the originating request. Never polled: the engine
    /// only validates its held tokens again.
    pub(crate) fn holding(
        origin: IetfOrigin,
        id: DeferredId,
        received_at: UnixTime,
        profile: Profile,
    ) -> Self {
        DeferredAuthentication::from(AuthFields {
            id,
            issuer: shared_name::intern(&origin.issuer),
            client_id: shared_name::intern(&origin.client_id),
            issued_at: received_at,
            answered_at: None,
            expires_at: None,
            interval_secs: DEFAULT_INTERVAL_SECS,
            nonce: origin.nonce,
            pkce_verifier: origin.pkce_verifier,
            max_age: origin.max_age,
            requested_at: origin.requested_at,
            notification_token_hash: None,
            interim_id_token: None,
            interim_claims: None,
            dpop_key: None,
            dpop_signer_jkt: None,
            claims_request: origin.claims_request,
            profile,
            initial_interaction_uri: None,
            device_flow: origin.device_flow,
            client_cert_thumbprint: None,
        })
    }

    /// An authentication created directly, without an exchange: for load
    /// tests (the mock OP's `seed_pending`), store conformance tests and
    /// migrations from another system. The SDK cannot check that the OP knows
    /// this id; an unknown one ends in `Rejected(invalid_grant)` at its first
    /// poll. No DPoP key, no interim ID token, no notification token.
    pub fn seeded(
        id: DeferredId,
        issuer: String,
        client_id: String,
        issued_at: UnixTime,
        expires_in: Option<u64>,
        interval: u64,
        nonce: Nonce,
    ) -> Self {
        DeferredAuthentication::from(AuthFields {
            id,
            issuer: shared_name::intern(&issuer),
            client_id: shared_name::intern(&client_id),
            issued_at,
            answered_at: None,
            expires_at: expires_in.map(|s| issued_at.saturating_add(Duration::from_secs(s))),
            interval_secs: interval,
            nonce,
            pkce_verifier: PkceVerifier::new("verifier"),
            max_age: None,
            requested_at: issued_at,
            notification_token_hash: None,
            interim_id_token: None,
            interim_claims: None,
            dpop_key: None,
            dpop_signer_jkt: None,
            claims_request: None,
            profile: Profile::Oidc,
            initial_interaction_uri: None,
            device_flow: false,
            client_cert_thumbprint: None,
        })
    }

    /// [`seeded`](Self::seeded) under another profile (an IETF
    /// `deferral_code` obtained elsewhere, say).
    pub fn with_profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// A minimal authentication for unit tests of the poll engine and the
    /// stores.
    #[cfg(test)]
    pub(crate) fn for_tests(
        id: DeferredId,
        issued_at: UnixTime,
        expires_in: Option<u64>,
        interval: u64,
    ) -> Self {
        Self::seeded(
            id,
            "https://op.example".into(),
            "client".into(),
            issued_at,
            expires_in,
            interval,
            Nonce::new("nonce"),
        )
    }

    /// The `x5t#S256` (RFC 8705 §3.1) of the client certificate this
    /// authentication was started with, when mutual TLS is configured: it
    /// is polled (and cancelled) with that certificate only.
    pub fn client_cert_thumbprint(&self) -> Option<&str> {
        self.client_cert_thumbprint.as_deref()
    }

    /// The DPoP key bound to this authentication process, if DPoP is used
    /// with a key generated for it; `None` with an external signer
    /// ([`DpopConfig::signer`](crate::client::DpopConfig::signer)), whose
    /// key only [`dpop_jkt`](Self::dpop_jkt) names.
    pub fn dpop_key(&self) -> Option<&DpopKey> {
        self.dpop_key.as_deref()
    }

    /// The RFC 7638 thumbprint (`jkt`) of the DPoP key bound to this
    /// authentication process, generated or held by an external signer;
    /// `None` without DPoP.
    pub fn dpop_jkt(&self) -> Option<&str> {
        self.dpop().map(DpopRef::thumbprint)
    }

    /// The DPoP key of this authentication, as kept.
    pub(crate) fn dpop(&self) -> Option<DpopRef<'_>> {
        DpopRef::from_stored(self.dpop_key.as_deref(), self.dpop_signer_jkt.as_deref())
    }

    /// The typed `claims` request (identity assurance) of the authentication
    /// request, kept to check the final ID token's verified claims.
    pub fn claims_request(&self) -> Option<&ClaimsRequest> {
        self.claims_request.as_deref()
    }

    /// The polling handle: the `deferred_auth_id` (OIDC profile) or the
    /// `deferral_code` (IETF profile).
    pub fn id(&self) -> &DeferredId {
        &self.id
    }
    /// The profile this authentication runs under.
    pub fn profile(&self) -> Profile {
        self.profile
    }
    /// The `interaction_uri` the AS sent with an `interaction_required`
    /// deferred response (IETF profile): show it to the user. Later changes
    /// arrive as [`PollEvent::Interaction`](crate::PollEvent::Interaction)
    /// and in [`PollStatus`](crate::PollStatus).
    pub fn interaction_uri(&self) -> Option<&InteractionUri> {
        self.initial_interaction_uri.as_deref()
    }
    /// The issuer of the OP running the process.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    /// The client that started it.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
    /// When the exchange request was sent: the anchor of the deadline. (The
    /// request time, not the response time, so the local deadline is never
    /// later than the OP's.)
    pub fn issued_at(&self) -> UnixTime {
        self.issued_at
    }
    /// When the answer that created it (the exchange's, or the IETF initial
    /// token request's) arrived: the first poll waits one interval from
    /// here, because an OP may count the interval from its answer. (The
    /// answer time, not the request time, so a slow answer cannot make the
    /// first poll early.) For an authentication made with
    /// [`seeded`](Self::seeded) or kept from a version that did not record
    /// it: [`issued_at`](Self::issued_at), or the time given to
    /// [`with_answered_at`](Self::with_answered_at).
    pub fn answered_at(&self) -> UnixTime {
        self.answered_at
            .map_or(self.issued_at, |a| a.max(self.issued_at))
    }
    /// [`seeded`](Self::seeded) with the time the answer that created it
    /// arrived (see [`answered_at`](Self::answered_at)).
    pub fn with_answered_at(mut self, answered_at: UnixTime) -> Self {
        self.answered_at = Some(answered_at);
        self
    }
    /// The absolute deadline (`issued_at + expires_in`); `None` when the OP
    /// set no lifetime.
    pub fn expires_at(&self) -> Option<UnixTime> {
        self.expires_at
    }
    /// The minimum time between polls at the exchange (`interval`, or 5 s
    /// when the OP sent none).
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
    /// The `nonce` every ID token of this process must carry.
    pub fn nonce(&self) -> &Nonce {
        &self.nonce
    }
    /// The PKCE verifier of the original request.
    pub fn pkce_verifier(&self) -> &PkceVerifier {
        &self.pkce_verifier
    }
    /// The `max_age` of the original request.
    pub fn max_age(&self) -> Option<u64> {
        self.max_age
    }
    /// When the original authentication request was built (the reference
    /// for `max_age`: a deferred authentication finishes late, so "now"
    /// would fail every `max_age`).
    pub fn requested_at(&self) -> UnixTime {
        self.requested_at
    }
    /// The SHA-256 of the `deferred_notification_token` sent at the exchange,
    /// if any. The token itself is not kept.
    pub fn notification_token_hash(&self) -> Option<&SecretHash> {
        self.notification_token_hash.as_ref()
    }
    /// The raw `interim_id_token`, if the OP sent one. It was validated at
    /// the exchange (same rules as the final ID token; its `nonce` is the
    /// request's).
    pub fn interim_id_token(&self) -> Option<&RawJwt> {
        self.interim_id_token.as_ref()
    }
    /// The validated claims of the interim ID token, if the OP sent one. The
    /// draft leaves open how the OP marks claims it has not verified yet
    /// (e.g. OpenID Connect for Identity Assurance `verified_claims`): read
    /// them as provisional.
    pub fn interim_claims(&self) -> Option<&IdTokenClaims> {
        self.interim_claims.as_deref()
    }
    /// The interim ID token's `sub`: the final ID token must carry the same
    /// one unless `ValidationOptions::require_same_subject` is off (the drafts leave this open; the SDK requires it by default).
    pub fn interim_subject(&self) -> Option<&str> {
        self.interim_claims.as_deref().map(IdTokenClaims::subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use serde_json::json;

    fn url() -> Url {
        Url::parse("https://op.example/token").unwrap()
    }

    fn parse(v: serde_json::Value) -> Result<ExchangeResponse, Error> {
        parse_exchange_response(&HttpResponse::json(StatusCode::OK, &v), &url())
    }

    fn field_error(v: serde_json::Value) -> (Option<&'static str>, String) {
        match parse(v) {
            Err(Error::Response(e)) => (e.field, e.to_string()),
            other => panic!("{other:?}"),
        }
    }

    /// An IETF authentication with every rare member, exactly as the
    /// layout before the in-memory compaction (issuer and client id as
    /// their own strings, the interaction URI and the certificate
    /// thumbprint inline) wrote it. It must read back, and be written out
    /// again member for member: stores hold such rows.
    const WRITTEN_BEFORE_COMPACTION: &str = r#"{
        "id": "deferral-0123456789abcdef",
        "issuer": "https://as.example",
        "client_id": "client-1",
        "issued_at": 1800000000000,
        "answered_at": 1800000000250,
        "expires_at": 1800003600000,
        "interval_secs": 5,
        "nonce": "n-0123456789",
        "pkce_verifier": "v-0123456789abcdefghijklmnopqrstuvwxyz0123456",
        "max_age": 600,
        "requested_at": 1799999999000,
        "notification_token_hash": null,
        "interim_id_token": null,
        "interim_claims": null,
        "dpop_key": null,
        "profile": "ietf",
        "initial_interaction_uri": "https://as.example/interact/77?x=1",
        "device_flow": true,
        "client_cert_thumbprint": "3nwzmmjsbrwa6z1gqbgququqb2a0bpfn-ev8l1s2ias"
    }"#;

    #[test]
    fn an_authentication_written_before_the_compaction_reads_back_unchanged() {
        let a: DeferredAuthentication = serde_json::from_str(WRITTEN_BEFORE_COMPACTION).unwrap();
        assert_eq!(a.id().secret(), "deferral-0123456789abcdef");
        assert_eq!(
            (a.issuer(), a.client_id()),
            ("https://as.example", "client-1")
        );
        assert_eq!(
            a.interaction_uri().map(InteractionUri::as_str),
            Some("https://as.example/interact/77?x=1")
        );
        assert_eq!(
            a.client_cert_thumbprint(),
            Some("3nwzmmjsbrwa6z1gqbgququqb2a0bpfn-ev8l1s2ias")
        );
        assert_eq!(a.profile(), Profile::Ietf);
        assert_eq!(a.max_age(), Some(600));
        assert_eq!(a.answered_at(), UnixTime::from_millis(1_800_000_000_250));
        // Written out again: the same members with the same values.
        let old: serde_json::Value = serde_json::from_str(WRITTEN_BEFORE_COMPACTION).unwrap();
        assert_eq!(serde_json::to_value(&a).unwrap(), old);
        // Two authentications of one client share its names.
        let b: DeferredAuthentication = serde_json::from_str(WRITTEN_BEFORE_COMPACTION).unwrap();
        assert!(Arc::ptr_eq(&a.issuer, &b.issuer));
        assert!(Arc::ptr_eq(&a.client_id, &b.client_id));
        let seeded = DeferredAuthentication::for_tests(
            DeferredId::new("x"),
            UnixTime::from_secs(1),
            None,
            5,
        );
        assert!(!Arc::ptr_eq(&a.issuer, &seeded.issuer));
    }

    #[test]
    fn shared_names_are_bounded_and_still_correct_past_the_bound() {
        let names: Vec<Arc<str>> = (0..200)
            .map(|i| shared_name::intern(&format!("https://op-{i}.example")))
            .collect();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(**n, *format!("https://op-{i}.example"));
        }
        // The first ones are still shared (still in use when the table filled).
        assert!(Arc::ptr_eq(
            &names[0],
            &shared_name::intern("https://op-0.example")
        ));
    }

    #[test]
    fn full_response() {
        let r = parse(json!({
            "deferred_auth_id": "f4oirNBUlM",
            "expires_in": 10800,
            "interval": 60,
            "interim_id_token": "a.b.c",
            "something_new": {"x": 1}
        }))
        .unwrap();
        assert_eq!(r.deferred_auth_id.secret(), "f4oirNBUlM");
        assert_eq!(r.expires_in, Some(10800));
        assert_eq!(r.interval, Some(60));
        assert_eq!(r.interim_id_token.unwrap().secret(), "a.b.c");
    }

    #[test]
    fn minimal_response() {
        let r = parse(json!({"deferred_auth_id": "x"})).unwrap();
        assert_eq!(
            (r.expires_in, r.interval, r.interim_id_token.is_none()),
            (None, None, true)
        );
    }

    #[test]
    fn deferred_auth_id_required_non_empty_string() {
        for v in [
            json!({}),
            json!({"deferred_auth_id": ""}),
            json!({"deferred_auth_id": 5}),
            json!({"deferred_auth_id": null}),
        ] {
            let (field, msg) = field_error(v);
            assert_eq!(field, Some("deferred_auth_id"), "{msg}");
        }
    }

    #[test]
    fn interval_and_expires_in_must_be_positive_integers() {
        for field in ["interval", "expires_in"] {
            for bad in [
                json!(0),
                json!(-5),
                json!(1.5),
                json!("60"),
                json!(true),
                json!([60]),
            ] {
                let mut v = json!({"deferred_auth_id": "x"});
                v[field] = bad.clone();
                let (f, msg) = field_error(v);
                assert_eq!(f, Some(field), "{bad}: {msg}");
                assert!(msg.contains("positive integer"), "{msg}");
            }
        }
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let body = br#"{"deferred_auth_id":"x","expires_in":99999999999999999999999999,"interval":18446744073709551615}"#;
        let mut resp = HttpResponse::json(StatusCode::OK, &json!({}));
        resp.body = bytes::Bytes::from_static(body);
        let r = parse_exchange_response(&resp, &url()).unwrap();
        assert_eq!(r.expires_in, Some(u64::MAX));
        assert_eq!(r.interval, Some(u64::MAX));
    }

    #[test]
    fn interim_id_token_must_be_a_string() {
        let (f, _) = field_error(json!({"deferred_auth_id": "x", "interim_id_token": {"a": 1}}));
        assert_eq!(f, Some("interim_id_token"));
    }

    #[test]
    fn oauth_errors_are_typed() {
        use crate::error::ErrorCode;
        for (code, status) in [
            ("invalid_grant", 400),
            ("invalid_client", 401),
            ("unauthorized_client", 400),
            ("invalid_request", 400),
            ("unsupported_grant_type", 400),
        ] {
            let resp = HttpResponse::json(
                StatusCode::from_u16(status).unwrap(),
                &json!({"error": code}),
            );
            match parse_exchange_response(&resp, &url()) {
                Err(Error::OAuth(e)) => {
                    assert_eq!(e.code, ErrorCode::from(code));
                    assert_eq!(e.status.map(|s| s.as_u16()), Some(status));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn non_json_success_body() {
        let mut resp = HttpResponse::json(StatusCode::OK, &json!({}));
        resp.body = bytes::Bytes::from_static(b"<html>hello</html>");
        match parse_exchange_response(&resp, &url()) {
            Err(Error::Response(e)) => {
                assert_eq!(e.field, None);
                assert!(!e.to_string().contains("hello"));
            }
            other => panic!("{other:?}"),
        }
    }

    fn raw(status: u16, body: String) -> Result<ExchangeResponse, Error> {
        let mut resp = HttpResponse::json(StatusCode::from_u16(status).unwrap(), &json!({}));
        resp.body = bytes::Bytes::from(body);
        parse_exchange_response(&resp, &url())
    }

    /// Issue 22: a 600 KB `deferred_auth_id` was accepted (kept in memory
    /// and in the store, sent with every poll).
    #[test]
    fn an_oversized_deferred_auth_id_is_refused() {
        let ok = "i".repeat(crate::json::MAX_HANDLE_BYTES);
        assert_eq!(
            parse(json!({"deferred_auth_id": ok}))
                .unwrap()
                .deferred_auth_id
                .secret(),
            ok
        );
        for len in [crate::json::MAX_HANDLE_BYTES + 1, 600 * 1024] {
            let (field, msg) = field_error(json!({"deferred_auth_id": "i".repeat(len)}));
            assert_eq!(field, Some("deferred_auth_id"));
            assert!(msg.contains("longer than 4096 bytes"), "{msg}");
            assert!(!msg.contains("iiii"), "{msg}");
        }
    }

    /// Issue 22: `interval: 1e300` (and any exponent or fraction form) was
    /// accepted.
    #[test]
    fn exponent_and_fraction_forms_are_refused() {
        for field in ["interval", "expires_in"] {
            for lit in ["1e300", "6e1", "60.0", "1E2"] {
                match raw(
                    200,
                    format!(r#"{{"deferred_auth_id":"x","{field}":{lit}}}"#),
                ) {
                    Err(Error::Response(e)) => {
                        assert_eq!(e.field, Some(field), "{lit}");
                        assert!(e.to_string().contains("fraction or an exponent"), "{e}");
                    }
                    other => panic!("{field} {lit}: {other:?}"),
                }
            }
        }
    }

    /// Issue 22: a 5xx with a pending body is a failure that may go away,
    /// never a pending answer.
    #[test]
    fn a_pending_body_on_a_5xx_is_a_transient_http_error() {
        let r = raw(500, r#"{"error":"authorization_pending"}"#.into());
        match r {
            Err(e @ Error::Http(crate::error::HttpError::PendingWithErrorStatus { .. })) => {
                assert!(e.is_retryable())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duplicate_members_are_refused() {
        for body in [
            r#"{"deferred_auth_id":"a","deferred_auth_id":"b"}"#,
            r#"{"deferred_auth_id":"a","expires_in":10,"expires_in":99999}"#,
            r#"{"deferred_auth_id":"a","interval":5,"interval":1}"#,
            // At any depth (issue 22).
            r#"{"deferred_auth_id":"a","ext":{"k":1,"k":2}}"#,
        ] {
            let mut resp = HttpResponse::json(
                StatusCode::OK,
                &serde_json::Value::Object(Default::default()),
            );
            resp.body = bytes::Bytes::from(body);
            match parse_exchange_response(&resp, &url()) {
                Err(Error::Response(e)) => assert!(e.to_string().contains("more than once"), "{e}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
