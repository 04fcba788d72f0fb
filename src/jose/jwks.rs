//! JWK Sets and the per-client JWKS cache.
//!
//! # Keys
//!
//! A [`KeySet`] is parsed once, when the JWK Set arrives: every usable key
//! becomes an aws-lc-rs [`ParsedPublicKey`] per algorithm it may verify, so
//! validating a token never parses or builds a key. Keys the SDK cannot use
//! (encryption keys, symmetric keys, unknown key types or curves, RSA keys
//! under 2048 bits, malformed members) are skipped, not fatal: one odd key
//! must not take the whole set down.
//!
//! # The cache
//!
//! One cache per [`DtrClient`](crate::DtrClient), shared by all its flows:
//!
//! - fetched lazily from `jwks_uri` on first use;
//! - kept for `Cache-Control: max-age` (minus `Age`) or until `Expires`,
//!   clamped to [`JwksConfig::min_ttl`]..[`JwksConfig::max_ttl`]
//!   ([`JwksConfig::default_ttl`] when the OP says nothing); when it has
//!   expired, one caller refreshes while the others keep using the old set;
//! - on a token with an unknown `kid` (key rotation), refetched once, with
//!   `Cache-Control: no-cache`, single-flight (concurrent callers wait for
//!   the one fetch), and at most once per [`JwksConfig::refresh_cooldown`]:
//!   a flood of forged tokens with random `kid`s costs the OP one request per
//!   cooldown. Kids still unknown after a refresh are remembered for the
//!   cooldown and rejected without further work;
//! - stale-if-error: when a refresh fails, the last good set keeps serving
//!   (for at most [`JwksConfig::max_stale`] past its expiry), and the next
//!   attempt waits [`JwksConfig::error_retry`];
//! - exportable and importable as a [`JwksSnapshot`] (serverless cold starts,
//!   warm restarts).
//!
//! The hot path is one read lock to clone an `Arc` and a scan of a few keys;
//! no lock is held while a signature is checked or a fetch is in flight.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{AGE, CACHE_CONTROL, DATE, EXPIRES, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::{AlgSet, Algorithm};
use crate::error::{ResponseError, ValidationError, sanitize};
use crate::http::{HttpEdge, HttpRequest, HttpResponse, error_for_status};
use crate::json::JsonObject;
use crate::time::{Clock, UnixTime};

const CONTEXT: &str = "JWK Set";

/// Most kids remembered as unknown at once.
const MAX_UNKNOWN_KIDS: usize = 256;
/// Longest kid remembered as unknown.
const MAX_REMEMBERED_KID_LEN: usize = 256;

/// Settings of the JWKS cache. Build with [`JwksConfig::default`] and the
/// setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwksConfig {
    /// Shortest time a fetched set is considered fresh, whatever the OP's
    /// cache headers say (default 60 s).
    pub min_ttl: Duration,
    /// Longest time a fetched set is considered fresh (default 24 h).
    pub max_ttl: Duration,
    /// Freshness when the OP sends neither `Cache-Control: max-age` nor
    /// `Expires` (default 10 min).
    pub default_ttl: Duration,
    /// Least time between two refreshes triggered by an unknown `kid`, and
    /// how long an unknown `kid` is remembered (default 60 s).
    pub refresh_cooldown: Duration,
    /// How long to wait after a failed fetch before trying again (default
    /// 10 s).
    pub error_retry: Duration,
    /// How long past its expiry a set keeps serving while refreshes fail
    /// (stale-if-error; default 24 h).
    pub max_stale: Duration,
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(600),
            refresh_cooldown: Duration::from_secs(60),
            error_retry: Duration::from_secs(10),
            max_stale: Duration::from_secs(24 * 3600),
        }
    }
}

impl JwksConfig {
    /// Sets the freshness bounds applied to the OP's cache headers.
    pub fn ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_ttl = min;
        self.max_ttl = max;
        self
    }

    /// Sets the freshness used when the OP sends no cache headers.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Sets the unknown-`kid` refresh cooldown.
    pub fn refresh_cooldown(mut self, d: Duration) -> Self {
        self.refresh_cooldown = d;
        self
    }

    /// Sets the wait after a failed fetch.
    pub fn error_retry(mut self, d: Duration) -> Self {
        self.error_retry = d;
        self
    }

    /// Sets how long an expired set keeps serving while refreshes fail.
    pub fn max_stale(mut self, d: Duration) -> Self {
        self.max_stale = d;
        self
    }

    pub(crate) fn check(&self) -> Result<(), crate::error::ConfigError> {
        if self.min_ttl > self.max_ttl {
            return Err(crate::error::ConfigError::Invalid {
                field: "jwks.min_ttl",
                reason: "is larger than `max_ttl`".into(),
            });
        }
        Ok(())
    }
}

/// One usable key: its `kid` and one pre-parsed verifier per algorithm.
struct Key {
    kid: Option<String>,
    verifiers: Vec<(Algorithm, ParsedPublicKey)>,
}

impl Key {
    fn verifier(&self, alg: Algorithm) -> Option<&ParsedPublicKey> {
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, k)| k)
    }
}

/// A parsed JWK Set: the OP's public signing keys, ready to verify.
///
/// Built once per fetch; verification reuses the parsed keys.
pub struct KeySet {
    keys: Vec<Key>,
    /// The usable keys as received (for export).
    raw: Vec<Value>,
    skipped: usize,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field(
                "keys",
                &self
                    .keys
                    .iter()
                    .map(|k| (k.kid.as_deref(), k.verifiers.iter().map(|v| v.0).collect()))
                    .collect::<Vec<(Option<&str>, Vec<Algorithm>)>>(),
            )
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// What a key lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selection {
    /// The index of the key to use.
    Found(usize),
    /// No key has this `kid` (or, without a `kid`, none fits the `alg`).
    Missing,
    /// Keys have this `kid` but none can verify the `alg`.
    Mismatch,
    /// No `kid`, and this many keys fit.
    Ambiguous(usize),
}

impl KeySet {
    /// An empty set.
    pub fn empty() -> Self {
        KeySet {
            keys: Vec::new(),
            raw: Vec::new(),
            skipped: 0,
        }
    }

    /// Parses a JWK Set document (`{"keys": [...]}`), keeping the keys that
    /// can verify one of `algorithms` and skipping the others. HMAC
    /// algorithms are ignored here: symmetric keys never come from a JWK Set.
    pub fn from_json(body: &[u8], algorithms: &[Algorithm]) -> Result<Self, ResponseError> {
        let obj = JsonObject::parse(body, CONTEXT)?;
        let Some(Value::Array(keys)) = obj.get("keys") else {
            return Err(obj.err("keys", "must be an array"));
        };
        Ok(Self::from_keys(keys.iter().cloned(), algorithms))
    }

    /// Builds a set from individual JWKs (see [`from_json`](Self::from_json)).
    pub fn from_keys(keys: impl IntoIterator<Item = Value>, algorithms: &[Algorithm]) -> Self {
        let algs: AlgSet = algorithms
            .iter()
            .copied()
            .filter(|a| !a.is_hmac())
            .collect();
        let mut set = KeySet::empty();
        for jwk in keys {
            match parse_jwk(&jwk, algs) {
                Ok(key) => {
                    set.keys.push(key);
                    set.raw.push(jwk);
                }
                Err(why) => {
                    set.skipped += 1;
                    let kid = jwk
                        .get("kid")
                        .and_then(|k| k.as_str())
                        .map(|k| sanitize(k, 40));
                    tracing::debug!(?kid, why, "JWK skipped");
                }
            }
        }
        set
    }

    /// How many usable keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys of the document were skipped as unusable.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The `kid`s of the usable keys.
    pub fn kids(&self) -> impl Iterator<Item = Option<&str>> {
        self.keys.iter().map(|k| k.kid.as_deref())
    }

    /// The usable keys as received.
    pub fn jwks(&self) -> &[Value] {
        &self.raw
    }

    /// Finds the key for a token's `kid` and `alg`. Without a `kid`, the
    /// set's single key that fits `alg` is used; several are ambiguous.
    pub(crate) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection {
        match kid {
            Some(kid) => {
                let mut seen = false;
                for (i, k) in self.keys.iter().enumerate() {
                    if k.kid.as_deref() == Some(kid) {
                        if k.verifier(alg).is_some() {
                            return Selection::Found(i);
                        }
                        seen = true;
                    }
                }
                if seen {
                    Selection::Mismatch
                } else {
                    Selection::Missing
                }
            }
            None => {
                let mut found = None;
                let mut n = 0;
                for (i, k) in self.keys.iter().enumerate() {
                    if k.verifier(alg).is_some() {
                        found.get_or_insert(i);
                        n += 1;
                    }
                }
                match (found, n) {
                    (Some(i), 1) => Selection::Found(i),
                    (None, _) => Selection::Missing,
                    (_, n) => Selection::Ambiguous(n),
                }
            }
        }
    }

    /// The verifier of key `index` for `alg`.
    pub(crate) fn verifier(&self, index: usize, alg: Algorithm) -> Option<&ParsedPublicKey> {
        self.keys.get(index)?.verifier(alg)
    }

    /// Finds the verifier for a token's `kid` and `alg`, or says why not.
    pub(crate) fn find(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<&ParsedPublicKey, ValidationError> {
        match self.select(kid, alg) {
            Selection::Found(i) => self
                .verifier(i, alg)
                .ok_or_else(|| miss_error(kid, alg, Selection::Missing)),
            other => Err(miss_error(kid, alg, other)),
        }
    }
}

/// The error for a lookup that found no key.
pub(crate) fn miss_error(kid: Option<&str>, alg: Algorithm, sel: Selection) -> ValidationError {
    match (sel, kid) {
        (Selection::Ambiguous(n), _) => ValidationError::AmbiguousKey {
            alg: alg.as_str().into(),
            candidates: n,
        },
        (Selection::Mismatch, Some(kid)) => ValidationError::KeyMismatch {
            kid: sanitize(kid, 80),
            alg: alg.as_str().into(),
        },
        (_, Some(kid)) => ValidationError::UnknownKid {
            kid: sanitize(kid, 80),
        },
        (_, None) => ValidationError::NoMatchingKey {
            alg: alg.as_str().into(),
        },
    }
}

fn b64_member(jwk: &serde_json::Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let s = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{name}` is missing or not a string"))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('=').as_bytes())
        .map_err(|_| format!("`{name}` is not base64url"))
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[i..]
}

fn rsa_params(alg: Algorithm) -> Option<&'static sig::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// Parses one JWK into a [`Key`], or says why it cannot be used.
fn parse_jwk(jwk: &Value, allowed: AlgSet) -> Result<Key, String> {
    let Value::Object(m) = jwk else {
        return Err("not a JSON object".into());
    };
    let text = |name: &str| -> Result<Option<&str>, String> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("`{name}` is not a string")),
        }
    };
    let kid = text("kid")?.map(str::to_owned);
    if let Some(u) = text("use")?
        && u != "sig"
    {
        return Err(format!("`use` is `{}`", sanitize(u, 20)));
    }
    if let Some(ops) = m.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err("`key_ops` does not allow `verify`".into());
        }
    }
    let jwk_alg = match text("alg")? {
        None => None,
        Some(a) => Some(
            Algorithm::parse(a).ok_or_else(|| format!("unknown `alg` `{}`", sanitize(a, 20)))?,
        ),
    };
    let wanted = |family: &[Algorithm]| -> Vec<Algorithm> {
        family
            .iter()
            .copied()
            .filter(|a| allowed.contains(*a) && jwk_alg.is_none_or(|j| j == *a))
            .collect()
    };
    let rejected = |e: aws_lc_rs::error::KeyRejected| format!("rejected by aws-lc ({e})");
    let mut verifiers = Vec::new();
    match text("kty")?.ok_or("`kty` is missing")? {
        "RSA" => {
            let algs = wanted(&[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ]);
            if algs.is_empty() {
                return Err("no allowed algorithm for an RSA key".into());
            }
            let n = b64_member(m, "n")?;
            let e = b64_member(m, "e")?;
            let (n, e) = (strip_leading_zeros(&n), strip_leading_zeros(&e));
            let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
            if !(2048..=8192).contains(&bits) {
                return Err(format!(
                    "RSA modulus of {bits} bits (2048 to 8192 accepted)"
                ));
            }
            let comps = RsaPublicKeyComponents { n, e };
            for a in algs {
                let params = rsa_params(a).ok_or("not an RSA algorithm")?;
                verifiers.push((a, comps.to_parsed_public_key(params).map_err(rejected)?));
            }
        }
        "EC" => {
            let (alg, len, params): (_, usize, &'static sig::EcdsaVerificationAlgorithm) =
                match text("crv")?.ok_or("`crv` is missing")? {
                    "P-256" => (Algorithm::ES256, 32, &sig::ECDSA_P256_SHA256_FIXED),
                    "P-384" => (Algorithm::ES384, 48, &sig::ECDSA_P384_SHA384_FIXED),
                    other => return Err(format!("unsupported curve `{}`", sanitize(other, 20))),
                };
            if wanted(&[alg]).is_empty() {
                return Err(format!("{alg} is not allowed"));
            }
            let x = b64_member(m, "x")?;
            let y = b64_member(m, "y")?;
            if x.len() != len || y.len() != len {
                return Err("`x` or `y` has the wrong length".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            verifiers.push((alg, ParsedPublicKey::new(params, &point).map_err(rejected)?));
        }
        "OKP" => {
            let crv = text("crv")?.ok_or("`crv` is missing")?;
            if crv != "Ed25519" {
                return Err(format!("unsupported curve `{}`", sanitize(crv, 20)));
            }
            if wanted(&[Algorithm::EdDSA]).is_empty() {
                return Err("EdDSA is not allowed".into());
            }
            let x = b64_member(m, "x")?;
            if x.len() != 32 {
                return Err("`x` has the wrong length".into());
            }
            verifiers.push((
                Algorithm::EdDSA,
                ParsedPublicKey::new(&sig::ED25519, &x).map_err(rejected)?,
            ));
        }
        other => return Err(format!("unsupported `kty` `{}`", sanitize(other, 20))),
    }
    Ok(Key { kid, verifiers })
}

/// How long a JWKS response may be cached, from its headers (RFC 9111):
/// `no-store`/`no-cache` give `min_ttl`; `max-age` minus `Age`; else
/// `Expires` minus `Date` (or minus `now`); else `default_ttl`. The result is
/// clamped to the configured bounds.
pub(crate) fn ttl_from_headers(resp: &HttpResponse, now: UnixTime, cfg: &JwksConfig) -> Duration {
    let header = |name| {
        resp.headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let mut ttl = None;
    if let Some(cc) = header(CACHE_CONTROL) {
        for directive in cc.split(',') {
            let d = directive.trim();
            let (name, value) = match d.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (d, None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                ttl = Some(Duration::ZERO);
                break;
            }
            if name.eq_ignore_ascii_case("max-age")
                && let Some(secs) = value.and_then(|v| v.parse::<u64>().ok())
            {
                let age = header(AGE)
                    .and_then(|a| a.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                ttl = Some(Duration::from_secs(secs.saturating_sub(age)));
            }
        }
    }
    if ttl.is_none()
        && let Some(expires) = header(EXPIRES)
    {
        // An invalid `Expires` (e.g. "0") means "already expired".
        let at = httpdate::parse_http_date(expires)
            .map(UnixTime::from_system_time)
            .unwrap_or(UnixTime::EPOCH);
        let base = header(DATE)
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .map(UnixTime::from_system_time)
            .unwrap_or(now);
        ttl = Some(at.saturating_duration_since(base));
    }
    ttl.unwrap_or(cfg.default_ttl)
        .clamp(cfg.min_ttl, cfg.max_ttl.max(cfg.min_ttl))
}

/// A JWK Set as cached: export it to warm another process's cache with
/// [`DtrClient::import_jwks`](crate::DtrClient::import_jwks).
///
/// It holds only public keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JwksSnapshot {
    /// Where the set was fetched from (`None` for a set that was imported
    /// for an OP without `jwks_uri`).
    pub jwks_uri: Option<Url>,
    /// The usable keys, as JWKs.
    pub keys: Vec<Value>,
    /// When it was fetched.
    pub fetched_at: UnixTime,
    /// Until when it is fresh.
    pub fresh_until: UnixTime,
}

/// What the cache knows at one instant. Replaced whole on every change, so
/// readers clone one `Arc` and never see a half-updated state.
#[derive(Clone)]
struct CacheState {
    keys: Option<Arc<KeySet>>,
    fetched_at: UnixTime,
    fresh_until: UnixTime,
    /// Bumped by every fetch attempt (success or failure) and every import.
    generation: u64,
    /// When the last unknown-`kid` refresh was attempted.
    last_forced: Option<UnixTime>,
    /// No fetch before this instant (after a failure).
    next_attempt: UnixTime,
    last_error: Option<String>,
    /// Kids still unknown after a refresh, until when they are remembered.
    unknown_kids: Vec<(String, UnixTime)>,
}

/// A key that was found: the set holding it and its position.
pub(crate) struct ResolvedKey {
    set: Arc<KeySet>,
    index: usize,
}

impl ResolvedKey {
    pub(crate) fn verifier(&self, alg: Algorithm) -> Option<&ParsedPublicKey> {
        self.set.verifier(self.index, alg)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// First fetch, or the set has expired.
    Normal,
    /// An unknown `kid`: bypass caches, subject to the cooldown.
    Forced,
}

/// The per-client JWKS cache (see the module docs).
pub(crate) struct JwksCache {
    uri: Option<Url>,
    config: JwksConfig,
    algorithms: Vec<Algorithm>,
    state: RwLock<Arc<CacheState>>,
    refresh: tokio::sync::Mutex<()>,
}

impl fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksCache")
            .field("uri", &self.uri.as_ref().map(Url::as_str))
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    pub(crate) fn new(uri: Option<Url>, config: JwksConfig, algorithms: Vec<Algorithm>) -> Self {
        JwksCache {
            uri,
            config,
            algorithms,
            state: RwLock::new(Arc::new(CacheState {
                keys: None,
                fetched_at: UnixTime::EPOCH,
                fresh_until: UnixTime::EPOCH,
                generation: 0,
                last_forced: None,
                next_attempt: UnixTime::EPOCH,
                last_error: None,
                unknown_kids: Vec::new(),
            })),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn snapshot(&self) -> Arc<CacheState> {
        match self.state.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Read-modify-write of the state under the write lock (held for a
    /// clone and `f`, never across an await), so that concurrent updates
    /// (a fetch, a remembered kid, an import) never overwrite each other.
    fn update(&self, f: impl FnOnce(&mut CacheState)) -> Arc<CacheState> {
        let mut guard = match self.state.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut st = (**guard).clone();
        f(&mut st);
        let st = Arc::new(st);
        *guard = st.clone();
        st
    }

    /// The current set, for export.
    pub(crate) fn export(&self) -> Option<JwksSnapshot> {
        let st = self.snapshot();
        let keys = st.keys.as_ref()?;
        Some(JwksSnapshot {
            jwks_uri: self.uri.clone(),
            keys: keys.raw.clone(),
            fetched_at: st.fetched_at,
            fresh_until: st.fresh_until,
        })
    }

    /// Replaces the cached set with an exported one. An expired snapshot is
    /// used (as stale, within `max_stale`) until the next refresh succeeds.
    pub(crate) fn import(&self, snap: JwksSnapshot) -> Result<(), crate::error::ConfigError> {
        if snap.jwks_uri != self.uri {
            return Err(crate::error::ConfigError::Invalid {
                field: "jwks_snapshot",
                reason: "was taken for another `jwks_uri`".into(),
            });
        }
        let set = Arc::new(KeySet::from_keys(snap.keys, &self.algorithms));
        self.update(|st| {
            st.keys = Some(set);
            st.fetched_at = snap.fetched_at;
            st.fresh_until = snap.fresh_until;
            st.generation += 1;
            st.last_error = None;
            st.unknown_kids.clear();
        });
        Ok(())
    }

    /// Finds the key for a token's `kid` and `alg`, fetching or refreshing
    /// the set when needed (see the module docs for the rules).
    pub(crate) async fn resolve(
        &self,
        http: &HttpEdge,
        clock: &dyn Clock,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<ResolvedKey, ValidationError> {
        let mut st = self.snapshot();
        let start_generation = st.generation;
        let now = clock.now();
        if st.keys.is_none() {
            if self.uri.is_none() {
                return Err(ValidationError::NoJwks);
            }
            st = self
                .refresh(http, clock, Refresh::Normal, st.generation)
                .await?;
        } else if self.uri.is_some() && now >= st.fresh_until && now >= st.next_attempt {
            // Expired: one caller refreshes, the others use the old set
            // meanwhile. A failure leaves the old set serving.
            if let Ok(guard) = self.refresh.try_lock() {
                let _ = self
                    .fetch_locked(http, clock, Refresh::Normal, &guard)
                    .await;
            }
            st = self.snapshot();
        }
        let Some(keys) = st.keys.clone() else {
            return Err(self.unavailable(&st));
        };
        if self.uri.is_some() && now > st.fresh_until.saturating_add(self.config.max_stale) {
            return Err(self.unavailable(&st));
        }
        let sel = keys.select(kid, alg);
        match sel {
            Selection::Found(index) => return Ok(ResolvedKey { set: keys, index }),
            Selection::Mismatch | Selection::Ambiguous(_) => return Err(miss_error(kid, alg, sel)),
            Selection::Missing => {}
        }
        // Maybe the OP rotated its keys. Refresh once, unless this call has
        // just fetched, the kid is known to be unknown, or the cooldown runs.
        let remembered = kid.is_some_and(|k| {
            st.unknown_kids
                .iter()
                .any(|(u, until)| u == k && now < *until)
        });
        let cooling = st
            .last_forced
            .is_some_and(|t| now < t.saturating_add(self.config.refresh_cooldown));
        if self.uri.is_none() || st.generation != start_generation || remembered || cooling {
            return Err(miss_error(kid, alg, sel));
        }
        let st = self
            .refresh(http, clock, Refresh::Forced, st.generation)
            .await?;
        let Some(keys) = st.keys.clone() else {
            return Err(self.unavailable(&st));
        };
        match keys.select(kid, alg) {
            Selection::Found(index) => Ok(ResolvedKey { set: keys, index }),
            sel => {
                if let Some(k) = kid {
                    self.remember_unknown(k, clock.now());
                }
                Err(miss_error(kid, alg, sel))
            }
        }
    }

    fn unavailable(&self, st: &CacheState) -> ValidationError {
        ValidationError::JwksUnavailable {
            reason: st
                .last_error
                .clone()
                .unwrap_or_else(|| "the cached set is too stale and could not be refreshed".into()),
        }
    }

    fn remember_unknown(&self, kid: &str, now: UnixTime) {
        if kid.len() > MAX_REMEMBERED_KID_LEN {
            // Absurd kids are not worth the memory; the cooldown still
            // applies to them.
            return;
        }
        let until = now.saturating_add(self.config.refresh_cooldown);
        self.update(|st| {
            st.unknown_kids.retain(|(k, u)| now < *u && k != kid);
            if st.unknown_kids.len() >= MAX_UNKNOWN_KIDS {
                st.unknown_kids.remove(0);
            }
            st.unknown_kids.push((kid.to_owned(), until));
        });
    }

    /// Single-flight refresh: waits for the refresh lock; if another caller
    /// fetched meanwhile (the generation moved), uses its result.
    async fn refresh(
        &self,
        http: &HttpEdge,
        clock: &dyn Clock,
        kind: Refresh,
        seen_generation: u64,
    ) -> Result<Arc<CacheState>, ValidationError> {
        let guard = self.refresh.lock().await;
        let st = self.snapshot();
        if st.generation != seen_generation {
            return Ok(st);
        }
        let now = clock.now();
        if kind == Refresh::Normal && now < st.next_attempt {
            // A fetch failed a moment ago: don't hammer the OP.
            return Ok(st);
        }
        if kind == Refresh::Forced
            && st
                .last_forced
                .is_some_and(|t| now < t.saturating_add(self.config.refresh_cooldown))
        {
            return Ok(st);
        }
        self.fetch_locked(http, clock, kind, &guard).await
    }

    /// Fetches the set; the caller holds the refresh lock (the guard is
    /// passed to prove it). Updates the state on success and on failure.
    async fn fetch_locked(
        &self,
        http: &HttpEdge,
        clock: &dyn Clock,
        kind: Refresh,
        _guard: &tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<Arc<CacheState>, ValidationError> {
        let Some(uri) = self.uri.clone() else {
            return Err(ValidationError::NoJwks);
        };
        let started = clock.now();
        let mut req = HttpRequest::get(uri.clone());
        if kind == Refresh::Forced {
            req.headers
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        let result = match http.send(req).await {
            Ok(resp) => match error_for_status(&resp, &uri) {
                Ok(()) => KeySet::from_json(&resp.body, &self.algorithms)
                    .map(|set| (set, resp))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        let now = clock.now();
        let forced = kind == Refresh::Forced;
        match result {
            Ok((set, resp)) => {
                let ttl = ttl_from_headers(&resp, now, &self.config);
                tracing::debug!(
                    keys = set.len(),
                    skipped = set.skipped(),
                    ttl_secs = ttl.as_secs(),
                    forced,
                    "JWK Set fetched"
                );
                let set = Arc::new(set);
                Ok(self.update(|st| {
                    st.generation += 1;
                    if forced {
                        st.last_forced = Some(started);
                    }
                    st.unknown_kids.retain(|(k, until)| {
                        now < *until && !set.kids().any(|have| have == Some(k.as_str()))
                    });
                    st.keys = Some(set);
                    st.fetched_at = now;
                    st.fresh_until = now.saturating_add(ttl);
                    st.next_attempt = now;
                    st.last_error = None;
                }))
            }
            Err(reason) => {
                let st = self.update(|st| {
                    st.generation += 1;
                    if forced {
                        st.last_forced = Some(started);
                    }
                    st.next_attempt = now.saturating_add(self.config.error_retry);
                    st.last_error = Some(reason.clone());
                });
                tracing::warn!(error = %reason, stale_keys = st.keys.is_some(), "JWK Set fetch failed");
                Err(ValidationError::JwksUnavailable { reason })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::SigningKey;
    use http::StatusCode;
    use serde_json::json;

    fn jwk(alg: Algorithm, kid: &str) -> (SigningKey, Value) {
        let k = SigningKey::generate(alg).unwrap().with_kid(kid);
        let j = k.public_jwk().unwrap();
        (k, j)
    }

    const ALL_ASYM: &[Algorithm] = &[
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    #[test]
    fn parses_every_key_type_and_verifies() {
        for alg in [
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ] {
            let (k, j) = jwk(alg, "k");
            let set = KeySet::from_keys([j], ALL_ASYM);
            assert_eq!(set.len(), 1, "{alg}");
            let sig = k.sign(b"msg").unwrap();
            let v = set.find(Some("k"), alg).unwrap();
            assert!(v.verify_sig(b"msg", &sig).is_ok(), "{alg}");
            assert!(v.verify_sig(b"msh", &sig).is_err(), "{alg}");
        }
    }

    #[test]
    fn rsa_key_without_alg_serves_pkcs1_and_pss() {
        let (k, mut j) = jwk(Algorithm::RS256, "r");
        j.as_object_mut().unwrap().remove("alg");
        let set = KeySet::from_keys([j.clone()], ALL_ASYM);
        assert!(set.find(Some("r"), Algorithm::RS256).is_ok());
        let pss = k.with_algorithm(Algorithm::PS256).unwrap();
        let sig = pss.sign(b"m").unwrap();
        assert!(
            set.find(Some("r"), Algorithm::PS256)
                .unwrap()
                .verify_sig(b"m", &sig)
                .is_ok()
        );
        // With `alg: RS256` on the JWK, PS256 is refused for that key.
        j["alg"] = json!("RS256");
        let set = KeySet::from_keys([j], ALL_ASYM);
        assert!(matches!(
            set.find(Some("r"), Algorithm::PS256),
            Err(ValidationError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let (_, good) = jwk(Algorithm::ES256, "good");
        let (_, mut enc) = jwk(Algorithm::ES256, "enc");
        enc["use"] = json!("enc");
        let (_, mut ops) = jwk(Algorithm::ES256, "ops");
        ops["key_ops"] = json!(["encrypt"]);
        let (_, mut bad_x) = jwk(Algorithm::ES256, "badx");
        bad_x["x"] = json!("AAAA");
        let (_, mut off_curve) = jwk(Algorithm::ES256, "off");
        off_curve["y"] = off_curve["x"].clone();
        let small_rsa =
            json!({"kty":"RSA","kid":"small","n": crate::jose::b64(&[0xc1; 128]),"e":"AQAB"});
        let doc = json!({"keys": [
            good,
            enc,
            ops,
            bad_x,
            off_curve,
            small_rsa,
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"EC","crv":"P-521","x":"AA","y":"AA"},
            {"kty":"OKP","crv":"X25519","x":"AA"},
            {"kty":"RSA","n":5},
            {"kid":"nokty"},
            "not an object",
            {"kty":"EC","crv":"P-256","alg":"ES999","x":"AA","y":"AA"},
        ]});
        let set = KeySet::from_json(doc.to_string().as_bytes(), ALL_ASYM).unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), [Some("good")]);
        assert_eq!(set.skipped(), 12);
    }

    #[test]
    fn keys_for_algorithms_not_allowed_are_skipped() {
        let (_, j) = jwk(Algorithm::ES256, "e");
        let set = KeySet::from_keys([j], &[Algorithm::RS256]);
        assert!(set.is_empty());
    }

    #[test]
    fn document_errors() {
        for body in ["[]", "{}", r#"{"keys":{}}"#, "nope"] {
            assert!(
                KeySet::from_json(body.as_bytes(), ALL_ASYM).is_err(),
                "{body}"
            );
        }
        assert!(
            KeySet::from_json(br#"{"keys":[]}"#, ALL_ASYM)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn selection_rules() {
        let (_, a) = jwk(Algorithm::ES256, "a");
        let (_, b) = jwk(Algorithm::ES256, "b");
        let (_, r) = jwk(Algorithm::RS256, "r");
        let one = KeySet::from_keys([a.clone(), r.clone()], ALL_ASYM);
        assert_eq!(one.select(None, Algorithm::ES256), Selection::Found(0));
        assert_eq!(one.select(None, Algorithm::RS256), Selection::Found(1));
        assert_eq!(one.select(None, Algorithm::EdDSA), Selection::Missing);
        assert_eq!(one.select(Some("a"), Algorithm::RS256), Selection::Mismatch);
        assert_eq!(one.select(Some("zz"), Algorithm::ES256), Selection::Missing);
        let two = KeySet::from_keys([a, b], ALL_ASYM);
        assert_eq!(two.select(None, Algorithm::ES256), Selection::Ambiguous(2));
        assert!(matches!(
            two.find(None, Algorithm::ES256),
            Err(ValidationError::AmbiguousKey { candidates: 2, .. })
        ));
        assert!(matches!(
            two.find(Some("zz"), Algorithm::ES256),
            Err(ValidationError::UnknownKid { .. })
        ));
        assert!(matches!(
            two.find(None, Algorithm::RS256),
            Err(ValidationError::NoMatchingKey { .. })
        ));
    }

    fn resp_with(headers: &[(&str, &str)]) -> HttpResponse {
        let mut r = HttpResponse::json(StatusCode::OK, &json!({"keys": []}));
        for (k, v) in headers {
            r.headers.insert(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    #[test]
    fn cache_headers() {
        let cfg = JwksConfig::default();
        let now = UnixTime::from_secs(784_111_777);
        let ttl = |h: &[(&str, &str)]| ttl_from_headers(&resp_with(h), now, &cfg).as_secs();
        assert_eq!(ttl(&[]), 600);
        assert_eq!(ttl(&[("cache-control", "public, max-age=3600")]), 3600);
        assert_eq!(ttl(&[("cache-control", "max-age=\"120\"")]), 120);
        assert_eq!(
            ttl(&[("cache-control", "max-age=3600"), ("age", "600")]),
            3000
        );
        assert_eq!(ttl(&[("cache-control", "max-age=5")]), 60, "min bound");
        assert_eq!(
            ttl(&[("cache-control", "max-age=9999999")]),
            86_400,
            "max bound"
        );
        assert_eq!(ttl(&[("cache-control", "no-store")]), 60);
        assert_eq!(ttl(&[("cache-control", "max-age=3600, no-cache")]), 60);
        assert_eq!(ttl(&[("cache-control", "max-age=banana")]), 600);
        // Expires relative to Date (Sun, 06 Nov 1994 08:49:37 GMT = now).
        assert_eq!(
            ttl(&[
                ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("expires", "Sun, 06 Nov 1994 09:49:37 GMT")
            ]),
            3600
        );
        assert_eq!(ttl(&[("expires", "Sun, 06 Nov 1994 10:49:37 GMT")]), 7200);
        assert_eq!(ttl(&[("expires", "0")]), 60);
        // max-age wins over Expires.
        assert_eq!(
            ttl(&[
                ("cache-control", "max-age=300"),
                ("expires", "Sun, 06 Nov 1994 10:49:37 GMT")
            ]),
            300
        );
    }

    #[test]
    fn config_check() {
        assert!(JwksConfig::default().check().is_ok());
        let bad = JwksConfig::default().ttl_bounds(Duration::from_secs(10), Duration::from_secs(5));
        assert!(bad.check().is_err());
    }

    #[test]
    fn export_import_round_trip() {
        let (_, j) = jwk(Algorithm::ES256, "a");
        let uri: Url = "https://op.example/jwks".parse().unwrap();
        let cache = JwksCache::new(Some(uri.clone()), JwksConfig::default(), ALL_ASYM.to_vec());
        assert!(cache.export().is_none());
        let snap = JwksSnapshot {
            jwks_uri: Some(uri.clone()),
            keys: vec![j],
            fetched_at: UnixTime::from_secs(10),
            fresh_until: UnixTime::from_secs(20),
        };
        cache.import(snap.clone()).unwrap();
        assert_eq!(cache.export().unwrap(), snap);
        let json = serde_json::to_string(&snap).unwrap();
        assert_eq!(serde_json::from_str::<JwksSnapshot>(&json).unwrap(), snap);
        let mut other = snap;
        other.jwks_uri = None;
        assert!(cache.import(other).is_err());
    }
}
