//! The mock OP's shared state and configuration as the handlers see it:
//! the locked [`OpState`], codes, deferred authentications and their grants,
//! the pings sent, and the poll-flight bookkeeping behind [`FlightReport`].

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeKind {
    Deferred,
    Plain,
}

pub(crate) struct CodeRecord {
    pub kind: CodeKind,
    pub client_id: String,
    pub redirect_uri: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub scope: String,
    /// The `claims` request parameter, as sent.
    pub claims: Option<String>,
    pub auth_time: UnixTime,
    pub created_at: UnixTime,
    pub used: bool,
    /// The authorization request carried `completion_mode=deferred`.
    pub completion_mode_hint: bool,
    /// The `dpop_jkt` of the request (RFC 9449 §10): the code is bound to it.
    pub dpop_jkt: Option<String>,
}

/// Who authenticated and what was asked: the input of an ID token.
#[derive(Clone)]
pub(crate) struct Grant {
    pub nonce: Option<String>,
    pub scope: String,
    pub auth_time: UnixTime,
    pub subject: String,
    /// The `claims` request parameter of the authentication request.
    pub claims: Option<String>,
}

pub(crate) struct AuthRecord {
    pub client_id: String,
    pub grant: Grant,
    pub created_at: UnixTime,
    pub expires_at: Option<UnixTime>,
    pub interval: u64,
    pub last_poll: Option<UnixTime>,
    pub polls: u32,
    pub slow_downs: u32,
    pub state: AuthState,
    pub progress: String,
    pub notification_token: Option<String>,
    /// The DPoP key thumbprint bound at the exchange.
    pub jkt: Option<String>,
    /// The token response issued for it, and when.
    pub issued: Option<(UnixTime, Value)>,
    /// An IETF deferral (`deferral_code`) rather than an OIDC one.
    pub ietf: bool,
    /// IETF: pending polls answer `interaction_required` at this URI.
    pub interaction_uri: Option<String>,
}

/// One Ping Callback the OP sent.
#[derive(Debug, Clone)]
pub struct PingRecord {
    /// The `deferred_auth_id` in the body.
    pub deferred_auth_id: String,
    /// Whether the bearer token was deliberately wrong.
    pub forged: bool,
    /// The status the RP answered; `None` if the request failed.
    pub status: Option<u16>,
}

pub(crate) struct OpState {
    pub issuer: String,
    pub clock: Arc<dyn Clock>,
    pub key: SigningKey,
    /// Rotated-out keys, still published until the instant (if any).
    pub old_keys: Vec<(SigningKey, Option<UnixTime>)>,
    pub clients: HashMap<String, RegisteredClient>,
    pub codes: HashMap<String, CodeRecord>,
    pub auths: HashMap<String, AuthRecord>,
    pub log: Vec<LoggedRequest>,
    pub config: OpConfig,
    pub next_subject: u64,
    pub token_faults: std::collections::VecDeque<Fault>,
    /// `jti`s of DPoP proofs and client assertions seen (replay detection).
    pub used_jtis: HashSet<String>,
    /// The current server DPoP nonce.
    pub dpop_nonce: String,
    /// Pings sent.
    pub pings: Vec<PingRecord>,
    /// The body of the last token response built (picked up by the caller).
    pub last_token_body: Option<Value>,
    /// Access tokens issued, for the UserInfo endpoint: the grant and the
    /// DPoP key thumbprint the token is bound to.
    pub access_tokens: HashMap<String, (Grant, Option<String>)>,
    /// The access token of the last token response built (picked up by
    /// the token endpoint to bind it to the client certificate).
    pub last_access_token: Option<String>,
    /// Certificate-bound access tokens (RFC 8705 §3): the `x5t#S256` each
    /// is bound to.
    pub cert_bound: HashMap<String, String>,
    /// The client pings are sent with (one per OP, so connections are kept
    /// alive as a real OP's would be; it never follows redirects).
    pub ping_http: reqwest::Client,
    /// What the optional HTML pages remember.
    pub pages: crate::pages::PagesState,
    /// Device authorizations (RFC 8628), by device code.
    pub devices: HashMap<String, crate::device::DeviceRecord>,
    /// Deferred polls in flight and their timing, per id.
    pub flights: Flights,
    /// Pushed authorization requests (RFC 9126).
    pub par: crate::par::ParState,
}

/// The OP's side of single flight and the floor, per `deferred_auth_id`
/// (from [`MockOp::flight_report`](crate::MockOp::flight_report)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlightReport {
    /// Deferred polls received.
    pub polls: u64,
    /// Ids that had a poll arrive while another of theirs was in flight,
    /// once per such arrival.
    pub overlaps: Vec<String>,
    /// Polls that came sooner than the floor after the previous answer.
    /// With [`OpConfig::strict_interval`](crate::OpConfig::strict_interval):
    /// every poll (and device-code token request) answered `slow_down`
    /// because it came sooner than the interval after the answer the OP
    /// counts from.
    pub floor_violations: Vec<FloorViolation>,
    /// `slow_down` answers given (all ids; polls and device-code token
    /// requests).
    pub slow_downs: u64,
    /// The most polls (all ids) in flight at once.
    pub max_in_flight: usize,
}

/// A poll that came too soon.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FloorViolation {
    /// The `deferred_auth_id`.
    pub deferred_auth_id: String,
    /// Time from the OP's previous answer to this poll's arrival.
    pub gap: Duration,
    /// The interval the OP enforced at its previous answer.
    pub floor: Duration,
}

#[derive(Default)]
pub(crate) struct Flights {
    pub(super) in_flight: HashMap<String, u32>,
    pub(super) total_in_flight: usize,
    /// Per id: when the OP last answered it, and the interval then.
    pub(super) last_answer: HashMap<String, (UnixTime, u64)>,
    /// Strict interval: per id (or device code), when the answer the
    /// interval counts from left the OP (the exchange's, the IETF initial
    /// token request's, the device authorization's, then each poll's).
    pub(super) answered: HashMap<String, UnixTime>,
    /// The id whose answer the request being routed is (set while it is
    /// routed, under the lock; taken by `route`).
    pub(super) marked: Option<String>,
    pub(super) report: FlightReport,
}

impl Flights {
    pub(crate) fn report(&self) -> FlightReport {
        self.report.clone()
    }

    /// The request being routed answers `key` (an id or a device code): in
    /// strict interval mode, the next request for it counts from the moment
    /// this answer leaves.
    pub(crate) fn mark_answer(&mut self, key: &str) {
        self.marked = Some(key.to_owned());
    }

    /// Strict interval: a request for `key` arrived at `now`; the OP's
    /// interval for it is `interval` seconds. Records and returns the
    /// violation when it came sooner than that after the counted answer.
    pub(crate) fn strict_early(&mut self, key: &str, now: UnixTime, interval: u64) -> bool {
        let Some(at) = self.answered.get(key).copied() else {
            return false;
        };
        let floor = Duration::from_secs(interval);
        if now >= at.saturating_add(floor) {
            return false;
        }
        self.report.floor_violations.push(FloorViolation {
            deferred_auth_id: key.to_owned(),
            gap: now.saturating_duration_since(at),
            floor,
        });
        true
    }

    /// A `slow_down` was answered.
    pub(crate) fn slow_down(&mut self) {
        self.report.slow_downs += 1;
    }
}

/// The answer of a request routed with a mark (see
/// [`Flights::mark_answer`]) left the OP (or its connection was dropped).
pub(crate) fn answer_left(state: &Mutex<OpState>, key: &str) {
    let mut st = lock(state);
    let now = st.now();
    st.flights.answered.insert(key.to_owned(), now);
}

/// A deferred poll arrived (before it is processed).
pub(crate) fn flight_begin(state: &Mutex<OpState>, id: &str) {
    let mut st = lock(state);
    let now = st.now();
    let strict = st.config.strict_interval;
    let f = &mut st.flights;
    f.report.polls += 1;
    let n = f.in_flight.entry(id.to_owned()).or_default();
    if *n > 0 {
        f.report.overlaps.push(id.to_owned());
    }
    *n += 1;
    f.total_in_flight += 1;
    f.report.max_in_flight = f.report.max_in_flight.max(f.total_in_flight);
    // In strict mode the poll handler checks (and records) the floor itself,
    // from the answer the OP counts from.
    if !strict && let Some((at, interval)) = f.last_answer.get(id).copied() {
        let floor = Duration::from_secs(interval);
        let gap = now.saturating_duration_since(at);
        if gap < floor {
            f.report.floor_violations.push(FloorViolation {
                deferred_auth_id: id.to_owned(),
                gap,
                floor,
            });
        }
    }
}

/// Its answer left (or the connection was dropped).
pub(crate) fn flight_end(state: &Mutex<OpState>, id: &str) {
    let mut st = lock(state);
    let now = st.now();
    let interval = st.auths.get(id).map_or(0, |r| r.interval);
    let f = &mut st.flights;
    if let Some(n) = f.in_flight.get_mut(id) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            f.in_flight.remove(id);
        }
    }
    f.total_in_flight = f.total_in_flight.saturating_sub(1);
    f.last_answer.insert(id.to_owned(), (now, interval));
}

impl OpState {
    pub(crate) fn now(&self) -> UnixTime {
        self.clock.now()
    }

    pub(super) fn grant(
        &mut self,
        nonce: Option<String>,
        scope: String,
        auth_time: UnixTime,
    ) -> Grant {
        self.next_subject += 1;
        let subject = self
            .config
            .subject
            .clone()
            .unwrap_or_else(|| format!("user-{}", self.next_subject));
        Grant {
            nonce,
            scope,
            auth_time,
            subject,
            claims: None,
        }
    }

    pub(crate) fn seed_grant(&mut self, nonce: Option<String>, auth_time: UnixTime) -> Grant {
        self.grant(nonce, "openid".into(), auth_time)
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub(crate) fn random(&self, n: usize) -> String {
        let mut b = vec![0u8; n];
        // The OS generator does not fail in practice; a zeroed value would
        // still be a valid (if guessable) test identifier.
        let _ = aws_lc_rs::rand::fill(&mut b);
        b64(&b)
    }

    pub(super) fn log(
        &mut self,
        req: &Incoming,
        endpoint: Endpoint,
        params: &[(String, String)],
        status: u16,
    ) {
        let entry = LoggedRequest {
            at: self.now(),
            method: req.method.to_string(),
            endpoint,
            path: req.path.clone(),
            params: params.to_vec(),
            headers: req
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            status,
        };
        self.log.push(entry);
    }
}
