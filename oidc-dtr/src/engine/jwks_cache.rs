//! The per-client JWKS cache: fetching the OP's JWK Set and following
//! its rotations.
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

use http::header::{AGE, CACHE_CONTROL, DATE, EXPIRES, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::engine::transport::HttpEdge;
use crate::error::ValidationError;
use crate::jose::Algorithm;
use crate::jose::jwk::{KeySet, Selection, miss_error};
use crate::proto::message::{HttpRequest, HttpResponse, error_for_status};
use crate::time::{Clock, UnixTime};

/// Most kids remembered as unknown at once.
const MAX_UNKNOWN_KIDS: usize = 256;
/// Longest kid remembered as unknown.
const MAX_REMEMBERED_KID_LEN: usize = 256;

/// Settings of the JWKS cache: [`JwksConfig::default`] and the setters.
///
/// ```
/// use std::time::Duration;
/// use oidc_dtr::tokens::JwksConfig;
///
/// let jwks = JwksConfig::default()
///     .ttl_bounds(Duration::from_secs(30), Duration::from_secs(3600))
///     .max_stale(Duration::from_secs(6 * 3600));
/// assert_ne!(jwks, JwksConfig::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwksConfig {
    pub(crate) min_ttl: Duration,
    pub(crate) max_ttl: Duration,
    pub(crate) default_ttl: Duration,
    pub(crate) refresh_cooldown: Duration,
    pub(crate) error_retry: Duration,
    pub(crate) max_stale: Duration,
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
    /// The bounds applied to the freshness the OP's cache headers give a
    /// fetched set: at least `min`, at most `max`. Defaults: 60 s and 24 h.
    /// `min` larger than `max` is refused when the client is built.
    #[must_use]
    pub fn ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_ttl = min;
        self.max_ttl = max;
        self
    }

    /// The freshness when the OP sends neither `Cache-Control: max-age` nor
    /// `Expires`. Default: 10 min.
    #[must_use]
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// The least time between two refreshes triggered by an unknown `kid`,
    /// and how long an unknown `kid` is remembered. Default: 60 s.
    #[must_use]
    pub fn refresh_cooldown(mut self, d: Duration) -> Self {
        self.refresh_cooldown = d;
        self
    }

    /// How long to wait after a failed fetch before trying again.
    /// Default: 10 s.
    #[must_use]
    pub fn error_retry(mut self, d: Duration) -> Self {
        self.error_retry = d;
        self
    }

    /// How long past its expiry a set keeps serving while refreshes fail
    /// (stale-if-error). Default: 24 h.
    #[must_use]
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
///
/// ```
/// use oidc_dtr::DtrClient;
/// use oidc_dtr_testkit::MockOp;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let op = MockOp::start().await?;
/// # let build = || {
/// #     DtrClient::builder()
/// #         .issuer(op.issuer())
/// #         .client_id(MockOp::CLIENT_ID)
/// #         .client_secret(MockOp::CLIENT_SECRET)
/// #         .redirect_uri("http://127.0.0.1:9/callback")
/// #         .build()
/// # };
/// # let (running, starting) = (build().await?, build().await?);
/// // Warm a starting instance's key cache from a running one (public keys only).
/// if let Some(snapshot) = running.export_jwks() {
///     let saved = serde_json::to_string(&snapshot)?;
///     starting.import_jwks(serde_json::from_str(&saved)?)?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
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

impl JwksSnapshot {
    /// A snapshot from a JWK Set kept elsewhere (e.g. a shared cache):
    /// `keys` are public JWKs, fresh from `fetched_at` until `fresh_until`.
    pub fn new(
        jwks_uri: Option<Url>,
        keys: Vec<Value>,
        fetched_at: UnixTime,
        fresh_until: UnixTime,
    ) -> Self {
        JwksSnapshot {
            jwks_uri,
            keys,
            fetched_at,
            fresh_until,
        }
    }
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
    kid: Option<String>,
    alg: Algorithm,
}

impl ResolvedKey {
    /// Verifies a JWS with this key, or any other key of the set with the
    /// same `kid` and a verifier for the same `alg`.
    pub(crate) fn verify(
        &self,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), ValidationError> {
        self.set.verify_from(
            self.index,
            self.kid.as_deref(),
            self.alg,
            signing_input,
            signature,
        )
    }

    /// Remembers the ID token header `segment` (which passed its checks
    /// with this key's `alg` and `kid`) in the key's set, once a token
    /// with it has verified (see [`KeySet::known_header`]).
    pub(crate) fn remember_header(&self, segment: &str) {
        self.set
            .remember_header(segment, self.alg, self.kid.as_deref(), self.index);
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

    /// The key set in use now, if any: no fetch, no freshness check (to
    /// look a header up in, see [`KeySet::known_header`]).
    pub(crate) fn current(&self) -> Option<Arc<KeySet>> {
        match self.state.read() {
            Ok(g) => g.keys.clone(),
            Err(p) => p.into_inner().keys.clone(),
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
            keys: keys.jwks().to_vec(),
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
            Selection::Found(index) => {
                return Ok(ResolvedKey {
                    set: keys,
                    index,
                    kid: kid.map(str::to_owned),
                    alg,
                });
            }
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
            Selection::Found(index) => Ok(ResolvedKey {
                set: keys,
                index,
                kid: kid.map(str::to_owned),
                alg,
            }),
            sel => {
                if let Some(k) = kid {
                    self.remember_unknown(k, clock.now());
                }
                Err(miss_error(kid, alg, sel))
            }
        }
    }

    /// The cache's generation: bumped by every fetch attempt and import.
    /// Taken before a validation, it tells [`refresh_for_tokens`] whether
    /// the set changed since.
    ///
    /// [`refresh_for_tokens`]: Self::refresh_for_tokens
    pub(crate) fn generation(&self) -> u64 {
        self.snapshot().generation
    }

    /// Tokens in hand from the token endpoint name a `kid` the set lacks:
    /// the OP will not issue them again, so they get one forced refresh
    /// before being declared invalid, at once, whatever the unknown-`kid`
    /// cooldown and the memory of unknown kids say (an OP may rotate twice
    /// within the cooldown). The caller bounds it: one call per token
    /// response, so a response with a made-up `kid` costs the OP at most one
    /// fetch. Nothing is fetched when a successful fetch happened since
    /// `seen_generation` (taken before the validation that failed: that
    /// validation's own forced refresh, or a concurrent caller's, already
    /// brought the newest set).
    pub(crate) async fn refresh_for_tokens(
        &self,
        http: &HttpEdge,
        clock: &dyn Clock,
        seen_generation: u64,
    ) -> Result<(), ValidationError> {
        if self.uri.is_none() {
            return Err(ValidationError::NoJwks);
        }
        let fresh_since = |st: &CacheState| {
            st.generation != seen_generation && st.last_error.is_none() && st.keys.is_some()
        };
        if fresh_since(&self.snapshot()) {
            return Ok(());
        }
        let guard = self.refresh.lock().await;
        // Someone else may have fetched while this one waited for the lock.
        if fresh_since(&self.snapshot()) {
            return Ok(());
        }
        tracing::info!("tokens in hand name an unknown key; refreshing the JWK Set");
        self.fetch_locked(http, clock, Refresh::Forced, &guard)
            .await
            .map(|_| ())
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
        let span = tracing::info_span!(
            "dtr.jwks_fetch",
            endpoint = %crate::proto::message::endpoint_label(&uri),
            forced = kind == Refresh::Forced,
        );
        let result = match tracing::Instrument::instrument(http.send(req), span).await {
            Ok(resp) => match error_for_status(&resp, &uri) {
                Ok(()) => KeySet::from_json(&resp.body, &self.algorithms)
                    .map(|set| (set, resp))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        crate::engine::stats::jwks_fetch(result.is_ok());
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
