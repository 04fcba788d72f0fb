//! OpenID Connect for Identity Assurance 1.0 (final, errata 1) and the OpenID Identity
//! Assurance Schema Definition 1.0: requesting `verified_claims`, receiving them typed, and the
//! checks a careful RP makes.
//!
//! Pure: no IO, no clock reads (functions that need the time take `now` in Unix seconds).
//!
//! * Requesting: [`ClaimsRequest`] / [`VerifiedClaimsRequest`] build the `claims` parameter;
//!   [`ClaimsRequest::check_supported`] checks it against the OP metadata.
//! * Receiving: [`ReceivedClaims::from_claims`] splits an ID token's claims or a UserInfo
//!   response into unverified claims and typed [`VerifiedClaims`], refusing `verified_claims`
//!   found anywhere but the two allowed places ([`find_misplaced_verified_claims`]).
//! * Checking: [`check_verified_claims`] matches what came back with what was asked for.
//!
//! ```
//! use oidc_dtr::assurance::{
//!     AssuranceLimits, ClaimsRequest, ClaimsTarget, EvidenceRequest, ReceivedClaims,
//!     VerifiedClaimsRequest,
//! };
//! use serde_json::json;
//!
//! let request = ClaimsRequest::new().verified_claims_in(
//!     ClaimsTarget::IdToken,
//!     VerifiedClaimsRequest::new()
//!         .trust_framework("de_aml")
//!         .max_age(86_400 * 365)
//!         .evidence(EvidenceRequest::document().document_types(["idcard", "passport"]))
//!         .claim("given_name")
//!         .claim("family_name"),
//! );
//! let claims_param = request.to_json_string()?; // the `claims` authorization parameter
//! # assert!(claims_param.contains("de_aml"));
//!
//! // Later, the ID token's claims:
//! let id_token = json!({
//!     "sub": "248289761001",
//!     "given_name": "Maxi",
//!     "verified_claims": {
//!         "verification": {"trust_framework": "de_aml", "time": "2026-02-01T10:00Z",
//!             "evidence": [{"type": "document", "document_details": {"type": "idcard"}}]},
//!         "claims": {"given_name": "Max", "family_name": "Meier", "birthdate": "1956-01-28"}
//!     }
//! });
//! let received = ReceivedClaims::from_claims(id_token.as_object().unwrap(), &AssuranceLimits::default())?;
//! let checked = request.check_received(ClaimsTarget::IdToken, &received, 1_790_000_000)?;
//! assert_eq!(checked.get("given_name").unwrap().0, "Max"); // verified
//! assert_eq!(received.unverified_claim("given_name").unwrap(), "Maxi"); // not verified
//! assert_eq!(checked.unrequested[0].claims["birthdate"], "1956-01-28"); // not asked for
//! # Ok::<(), oidc_dtr::assurance::AssuranceError>(())
//! ```

mod request;
mod response;

use serde_json::{Map, Value};

pub use request::{
    CLAIMS_REQUEST_MAX_DEPTH, ClaimConstraint, ClaimsRequest, ClaimsTarget, ElementRequest,
    EvidenceRequest, PURPOSE_MAX_CHARS, PURPOSE_MIN_CHARS, TargetRequest, VerificationRequest,
    VerifiedClaimsRequest,
};
pub use response::{
    AssuranceDetail, AssuranceProcess, Attachment, AttachmentAccessToken, Attestation, CheckDetail,
    Digest, DocumentDetails, DocumentEvidence, ElectronicRecord, ElectronicRecordEvidence,
    ElectronicSignatureEvidence, EmbeddedAttachment, Evidence, EvidenceRef, ExternalAttachment,
    Party, Verification, VerifiedClaims, VouchEvidence,
};

/// The member name this module is about.
pub const VERIFIED_CLAIMS: &str = "verified_claims";

/// How far in the future a `verification.time` may lie, in seconds, before
/// [`check_verified_claims`] refuses it
/// ([`AssuranceError::VerificationInFuture`]): the clock skew allowed
/// between the OP and the RP, the same as the ID token validation's default
/// `auth_time` leeway (60 s). Compared with the first second the value
/// covers, so a plain date of today is never "in the future".
pub const VERIFICATION_TIME_SKEW_SECS: u64 = 60;

pub use crate::error::{AssuranceError, AssuranceUnsupported};

/// Bounds on received `verified_claims`, so hostile input fails with an error instead of
/// exhausting memory or stack: [`AssuranceLimits::default`] and the
/// setters.
///
/// ```
/// use oidc_dtr::assurance::AssuranceLimits;
///
/// let limits = AssuranceLimits::default()
///     .max_elements(8)
///     .max_string_bytes(1024 * 1024);
/// assert_ne!(limits, AssuranceLimits::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AssuranceLimits {
    pub(crate) max_elements: usize,
    pub(crate) max_array_len: usize,
    pub(crate) max_members: usize,
    pub(crate) max_depth: usize,
    pub(crate) max_string_bytes: usize,
    pub(crate) max_scan_depth: usize,
}

impl AssuranceLimits {
    /// Most elements in a `verified_claims` array. Default: 32.
    #[must_use]
    pub fn max_elements(mut self, n: usize) -> Self {
        self.max_elements = n;
        self
    }

    /// Most members of any array (evidence, check_details, attachments,
    /// claim values, …). Default: 256.
    #[must_use]
    pub fn max_array_len(mut self, n: usize) -> Self {
        self.max_array_len = n;
        self
    }

    /// Most members of any object. Default: 512.
    #[must_use]
    pub fn max_members(mut self, n: usize) -> Self {
        self.max_members = n;
        self
    }

    /// Deepest nesting inside free-form members (claims, derived claims,
    /// unknown members). Default: 16.
    #[must_use]
    pub fn max_depth(mut self, n: usize) -> Self {
        self.max_depth = n;
        self
    }

    /// Longest string, in bytes (embedded attachments are the large ones).
    /// Default: 16 MiB.
    #[must_use]
    pub fn max_string_bytes(mut self, n: usize) -> Self {
        self.max_string_bytes = n;
        self
    }

    /// Deepest nesting scanned for misplaced `verified_claims`. Default: 64.
    #[must_use]
    pub fn max_scan_depth(mut self, n: usize) -> Self {
        self.max_scan_depth = n;
        self
    }
}

impl Default for AssuranceLimits {
    fn default() -> Self {
        Self {
            max_elements: 32,
            max_array_len: 256,
            max_members: 512,
            max_depth: 16,
            max_string_bytes: 16 * 1024 * 1024,
            max_scan_depth: 64,
        }
    }
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// Parses the date/time forms the specification uses into Unix seconds, taking the **last**
/// second the value covers (the spec's rule for `max_age`):
///
/// * `YYYY-MM-DD` → 23:59:59 UTC that day;
/// * `YYYY-MM-DDThh:mmTZD` → second 59 of that minute;
/// * `YYYY-MM-DDThh:mm:ss[.fraction]TZD` (RFC 3339; the fraction is dropped);
///
/// where `TZD` is `Z`, `±hh:mm`, `±hhmm` or `±hh`. `T`/`Z` may be lower case (RFC 3339 §5.6).
pub fn parse_verification_time(s: &str) -> Result<i64, &'static str> {
    verification_time_range(s).map(|(_, last)| last)
}

/// The first and the last second (Unix seconds) a date/time value of
/// [`parse_verification_time`]'s forms covers: a whole day for a plain date,
/// a whole minute for a time without seconds, one second otherwise.
fn verification_time_range(s: &str) -> Result<(i64, i64), &'static str> {
    let b = s.as_bytes();
    if b.len() > 64 {
        return Err("too long");
    }
    let num = |from: usize, len: usize| -> Result<i64, &'static str> {
        let d = b.get(from..from + len).ok_or("truncated")?;
        if !d.iter().all(u8::is_ascii_digit) {
            return Err("expected digits");
        }
        Ok(d.iter().fold(0i64, |a, c| a * 10 + i64::from(c - b'0')))
    };
    let expect = |at: usize, c: &[u8]| -> Result<(), &'static str> {
        match b.get(at) {
            Some(x) if c.contains(x) => Ok(()),
            _ => Err("unexpected character"),
        }
    };
    let year = num(0, 4)?;
    expect(4, b"-")?;
    let month = num(5, 2)?;
    expect(7, b"-")?;
    let day = num(8, 2)?;
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range");
    }
    let midnight = days_from_civil(year, month, day) * 86_400;
    if b.len() == 10 {
        return Ok((midnight, midnight + 86_399));
    }
    expect(10, b"Tt")?;
    let hour = num(11, 2)?;
    expect(13, b":")?;
    let minute = num(14, 2)?;
    if hour > 23 || minute > 59 {
        return Err("time out of range");
    }
    let mut i = 16;
    let whole_minute = b.get(i) != Some(&b':');
    let second = if b.get(i) == Some(&b':') {
        let sec = num(i + 1, 2)?;
        if sec > 60 {
            return Err("second out of range");
        }
        i += 3;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return Err("empty fraction");
            }
        }
        sec.min(59) // a leap second counts as :59
    } else {
        59
    };
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(sign @ (b'+' | b'-')) => {
            let oh = num(i + 1, 2)?;
            let om = match b.len() - (i + 3) {
                0 => 0,
                3 => {
                    expect(i + 3, b":")?;
                    num(i + 4, 2)?
                }
                2 => num(i + 3, 2)?,
                _ => return Err("malformed offset"),
            };
            if oh > 23 || om > 59 {
                return Err("offset out of range");
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        None => return Err("missing time zone"),
        _ => return Err("malformed time zone"),
    };
    let last = midnight + hour * 3600 + minute * 60 + second - offset;
    Ok((if whole_minute { last - 59 } else { last }, last))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (era-based civil-day count).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------------------------

/// Scans a claims object (ID token claims or a UserInfo response) for `verified_claims`
/// members anywhere but the two allowed places: the top level, and the top level of
/// `_claim_names` (aggregated and distributed claims). Iterative and depth-bounded.
pub fn find_misplaced_verified_claims(
    claims: &Map<String, Value>,
    limits: &AssuranceLimits,
) -> Result<(), AssuranceError> {
    // (value, JSON pointer of value, depth)
    let mut stack: Vec<(&Value, String, usize)> = Vec::new();
    for (k, v) in claims {
        let p = format!("/{}", escape_pointer(k));
        if k == "_claim_names" {
            if let Value::Object(names) = v {
                for (nk, nv) in names {
                    stack.push((nv, format!("{p}/{}", escape_pointer(nk)), 2));
                }
            }
            continue;
        }
        stack.push((v, p, 1));
    }
    while let Some((v, path, depth)) = stack.pop() {
        if depth > limits.max_scan_depth {
            return Err(AssuranceError::TooDeep {
                path,
                max: limits.max_scan_depth,
            });
        }
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let p = format!("{path}/{}", escape_pointer(k));
                    if k == VERIFIED_CLAIMS {
                        return Err(AssuranceError::MisplacedVerifiedClaims { path: p });
                    }
                    stack.push((child, p, depth + 1));
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    stack.push((child, format!("{path}/{i}"), depth + 1));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn escape_pointer(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// Parses the top-level `verified_claims` member of a claims object (absent → empty).
/// Does not scan for misplaced members; [`ReceivedClaims::from_claims`] does both.
pub fn parse_verified_claims(
    claims: &Map<String, Value>,
    limits: &AssuranceLimits,
) -> Result<Vec<VerifiedClaims>, AssuranceError> {
    match claims.get(VERIFIED_CLAIMS) {
        None => Ok(Vec::new()),
        Some(v) => parse_verified_claims_value(v, limits),
    }
}

/// Parses a `verified_claims` value: one object or an array of them.
pub fn parse_verified_claims_value(
    value: &Value,
    limits: &AssuranceLimits,
) -> Result<Vec<VerifiedClaims>, AssuranceError> {
    match value {
        Value::Object(_) => Ok(vec![response::parse_element(
            value.clone(),
            VERIFIED_CLAIMS,
            limits,
        )?]),
        Value::Array(a) => {
            if a.len() > limits.max_elements {
                return Err(AssuranceError::TooMany {
                    path: VERIFIED_CLAIMS.to_owned(),
                    max: limits.max_elements,
                });
            }
            a.iter()
                .enumerate()
                .map(|(i, v)| {
                    response::parse_element(v.clone(), &format!("verified_claims[{i}]"), limits)
                })
                .collect()
        }
        other => Err(AssuranceError::WrongType {
            path: VERIFIED_CLAIMS.to_owned(),
            expected: "object or array",
            found: json_type(other),
        }),
    }
}

/// A claims object (ID token claims or UserInfo response) split into its unverified claims
/// and its typed verified claims. The two are never merged: `given_name` at the top level and
/// `given_name` inside `verified_claims` are read through different methods.
///
/// ```
/// use oidc_dtr::assurance::{AssuranceLimits, ReceivedClaims};
/// use serde_json::json;
///
/// let claims = json!({
///     "sub": "248289761001",
///     "given_name": "Max", // what the user typed: unverified
///     "verified_claims": {
///         "verification": {"trust_framework": "de_aml"},
///         "claims": {"given_name": "Maximilian"}
///     }
/// });
/// let received = ReceivedClaims::from_claims(claims.as_object().unwrap(), &AssuranceLimits::default())?;
/// assert_eq!(received.unverified_claim("given_name"), Some(&json!("Max")));
/// assert_eq!(received.verified[0].claim("given_name"), Some(&json!("Maximilian")));
/// # Ok::<(), oidc_dtr::assurance::AssuranceError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReceivedClaims {
    /// Every member except `verified_claims`, as received (unverified claims).
    pub unverified: Map<String, Value>,
    /// The `verified_claims` elements, typed.
    pub verified: Vec<VerifiedClaims>,
    /// Whether `verified_claims` was an array (kept for round-trips).
    pub verified_as_array: bool,
}

impl ReceivedClaims {
    /// Scans for misplaced `verified_claims`, then splits and parses.
    pub fn from_claims(
        claims: &Map<String, Value>,
        limits: &AssuranceLimits,
    ) -> Result<Self, AssuranceError> {
        find_misplaced_verified_claims(claims, limits)?;
        let verified = parse_verified_claims(claims, limits)?;
        let mut unverified = claims.clone();
        let was = unverified.remove(VERIFIED_CLAIMS);
        Ok(Self {
            unverified,
            verified,
            verified_as_array: matches!(was, Some(Value::Array(_))),
        })
    }

    /// Parses a JSON text (e.g. a UserInfo body); serde_json's own nesting limit applies first.
    /// A member name that appears twice in any object, at any depth, is refused
    /// ([`AssuranceError::DuplicateMember`]).
    pub fn from_json_str(json: &str, limits: &AssuranceLimits) -> Result<Self, AssuranceError> {
        let v = crate::json::from_slice_strict(json.as_bytes()).map_err(|e| match e {
            crate::json::StrictJsonError::Duplicate(name) => AssuranceError::DuplicateMember {
                name: crate::error::sanitize(&name, 64),
            },
            crate::json::StrictJsonError::Json(e) => AssuranceError::Json(e.to_string()),
        })?;
        match v {
            Value::Object(m) => Self::from_claims(&m, limits),
            other => Err(AssuranceError::WrongType {
                path: String::new(),
                expected: "object",
                found: json_type(&other),
            }),
        }
    }

    /// An unverified (top-level) claim.
    pub fn unverified_claim(&self, name: &str) -> Option<&Value> {
        self.unverified.get(name)
    }

    /// Every verified value of the claim `name`, with the verification it came with, in the
    /// order of the `verified_claims` elements.
    pub fn verified_claim<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a Value, &'a Verification)> + 'a {
        find_verified_claim(&self.verified, name)
    }

    /// Back to the JSON object it was parsed from.
    pub fn to_json(&self) -> Result<Map<String, Value>, AssuranceError> {
        let mut out = self.unverified.clone();
        if !self.verified.is_empty() || self.verified_as_array {
            let v = if self.verified.len() == 1 && !self.verified_as_array {
                serde_json::to_value(&self.verified[0])
            } else {
                serde_json::to_value(&self.verified)
            }
            .map_err(|e| AssuranceError::Serialize(e.to_string()))?;
            out.insert(VERIFIED_CLAIMS.to_owned(), v);
        }
        Ok(out)
    }
}

/// Every value of the verified claim `name` across `elements`, with its verification.
pub fn find_verified_claim<'a>(
    elements: &'a [VerifiedClaims],
    name: &'a str,
) -> impl Iterator<Item = (&'a Value, &'a Verification)> + 'a {
    elements
        .iter()
        .filter_map(move |e| e.claims.get(name).map(|v| (v, &e.verification)))
}

// ---------------------------------------------------------------------------------------------
// Checking
// ---------------------------------------------------------------------------------------------

/// Verified claims from one `verified_claims` element, after [`check_verified_claims`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AssuredClaims {
    /// Index of the element in the received `verified_claims`.
    pub index: usize,
    /// Indexes of the requests this element satisfies (empty for unrequested elements).
    pub matched_requests: Vec<usize>,
    /// How the claims were verified.
    pub verification: Verification,
    /// The claims.
    pub claims: Map<String, Value>,
}

/// The outcome of [`check_verified_claims`]: requested claims, and apart from them the
/// verified claims nobody asked for.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct CheckedVerifiedClaims {
    /// Claims that were requested, by element.
    pub requested: Vec<AssuredClaims>,
    /// Claims that were not requested (whole elements when no request applied, or the extra
    /// claims of a matching element). Never merged into `requested`.
    pub unrequested: Vec<AssuredClaims>,
}

impl CheckedVerifiedClaims {
    /// The first requested verified value of `name`, with its verification.
    pub fn get<'a>(&'a self, name: &'a str) -> Option<(&'a Value, &'a Verification)> {
        self.all(name).next()
    }

    /// Every requested verified value of `name`, with its verification.
    pub fn all<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a Value, &'a Verification)> + 'a {
        self.requested
            .iter()
            .filter_map(move |a| a.claims.get(name).map(|v| (v, &a.verification)))
    }
}

/// Matches the received `verified_claims` of one target against the requests sent for that
/// target. `now` is Unix seconds.
///
/// Errors, in this order per element: a `verification.time` more than
/// [`VERIFICATION_TIME_SKEW_SECS`] after `now` (whatever was requested); when there are
/// requests, an empty `claims` object; a `trust_framework` no request allowed; an
/// `assurance_level` no remaining request allowed; an evidence type no remaining request's
/// filters selected; a `verification.time` missing or older than `max_age` for every remaining
/// request. With no request at all, every element is returned as unrequested. An element none
/// of whose claims was requested appears in `unrequested` only.
pub fn check_verified_claims(
    requests: &[VerifiedClaimsRequest],
    received: &[VerifiedClaims],
    now: u64,
) -> Result<CheckedVerifiedClaims, AssuranceError> {
    let mut out = CheckedVerifiedClaims::default();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    for (index, vc) in received.iter().enumerate() {
        let v = &vc.verification;
        let time = match v.time.as_deref().map(verification_time_range) {
            None => None,
            Some(Ok(range)) => Some(range),
            Some(Err(reason)) => {
                return Err(AssuranceError::InvalidTime {
                    path: format!("verified_claims[{index}].verification.time"),
                    reason,
                });
            }
        };
        // A verification cannot have taken place in the future; a time there
        // would also pass any `max_age`.
        if let Some((first, _)) = time {
            let ahead = first.saturating_sub(now);
            if ahead > i64::try_from(VERIFICATION_TIME_SKEW_SECS).unwrap_or(i64::MAX) {
                return Err(AssuranceError::VerificationInFuture {
                    index,
                    ahead: u64::try_from(ahead).unwrap_or(u64::MAX),
                });
            }
        }
        if requests.is_empty() {
            // Nothing to satisfy: the element, empty or not, is reported as it came.
            out.unrequested.push(AssuredClaims {
                index,
                matched_requests: Vec::new(),
                verification: v.clone(),
                claims: vc.claims.clone(),
            });
            continue;
        }
        // An element that verifies no claim cannot satisfy a request.
        if vc.claims.is_empty() {
            return Err(AssuranceError::EmptyClaims {
                path: format!("verified_claims[{index}].claims"),
            });
        }
        let cand: Vec<usize> = (0..requests.len())
            .filter(|&r| {
                requests[r]
                    .verification
                    .trust_framework
                    .allows(&v.trust_framework)
            })
            .collect();
        if cand.is_empty() {
            return Err(AssuranceError::TrustFrameworkNotAllowed {
                index,
                trust_framework: v.trust_framework.clone(),
            });
        }
        let cand: Vec<usize> = cand
            .into_iter()
            .filter(|&r| match &requests[r].verification.assurance_level {
                Some(req) if req.allowed_strings().is_some() => v
                    .assurance_level
                    .as_deref()
                    .is_some_and(|al| req.allows(al)),
                _ => true,
            })
            .collect();
        if cand.is_empty() {
            return Err(AssuranceError::AssuranceLevelNotAllowed {
                index,
                assurance_level: v.assurance_level.clone(),
            });
        }
        let mut bad_type = None;
        let cand: Vec<usize> = cand
            .into_iter()
            .filter(|&r| {
                let filters = requests[r].verification.evidence.as_deref().unwrap_or(&[]);
                let allowed: Vec<&str> = filters.iter().filter_map(|f| f.type_value()).collect();
                if allowed.is_empty() {
                    return true;
                }
                match v
                    .evidence
                    .iter()
                    .flatten()
                    .find(|e| !allowed.contains(&e.evidence_type()))
                {
                    Some(e) => {
                        bad_type.get_or_insert_with(|| e.evidence_type().to_owned());
                        false
                    }
                    None => true,
                }
            })
            .collect();
        if cand.is_empty() {
            return Err(AssuranceError::EvidenceTypeNotAllowed {
                index,
                evidence_type: bad_type.unwrap_or_default(),
            });
        }
        let age = time.map(|(_, last)| u64::try_from(now.saturating_sub(last)).unwrap_or(0));
        let mut largest_max_age = 0;
        let cand: Vec<usize> = cand
            .into_iter()
            .filter(|&r| match requests[r].verification.max_age() {
                None => true,
                Some(max_age) => {
                    largest_max_age = largest_max_age.max(max_age);
                    match age {
                        None => false,
                        Some(age) => age <= max_age,
                    }
                }
            })
            .collect();
        if cand.is_empty() {
            return Err(match age {
                Some(age) => AssuranceError::VerificationTooOld {
                    index,
                    age,
                    max_age: largest_max_age,
                },
                None => AssuranceError::VerificationTimeMissing { index },
            });
        }
        let mut wanted = Map::new();
        let mut extra = Map::new();
        for (name, value) in &vc.claims {
            if cand.iter().any(|&r| requests[r].requests_claim(name)) {
                wanted.insert(name.clone(), value.clone());
            } else {
                extra.insert(name.clone(), value.clone());
            }
        }
        if !extra.is_empty() {
            out.unrequested.push(AssuredClaims {
                index,
                matched_requests: cand.clone(),
                verification: v.clone(),
                claims: extra,
            });
        }
        // An element none of whose claims was asked for satisfies no request
        // either: it is reported with the unrequested claims only.
        if !wanted.is_empty() {
            out.requested.push(AssuredClaims {
                index,
                matched_requests: cand,
                verification: v.clone(),
                claims: wanted,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_forms() {
        assert_eq!(parse_verification_time("1970-01-01"), Ok(86_399));
        assert_eq!(parse_verification_time("1970-01-01T00:00Z"), Ok(59));
        assert_eq!(parse_verification_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_verification_time("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(parse_verification_time("1970-01-01T01:00:00+0100"), Ok(0));
        assert_eq!(parse_verification_time("1970-01-01T01:00:00+01"), Ok(0));
        assert_eq!(
            parse_verification_time("1969-12-31T23:00:00.999-01:00"),
            Ok(0)
        );
        assert_eq!(
            parse_verification_time("2000-02-29T00:00:00Z"),
            Ok(951_782_400)
        );
        assert_eq!(
            parse_verification_time("2021-05-11T14:29Z"),
            Ok(1_620_743_399)
        );
        assert_eq!(
            parse_verification_time("2016-12-31T23:59:60Z"),
            Ok(1_483_228_799)
        );
        for bad in [
            "",
            "2021",
            "2021-13-01",
            "2021-02-29",
            "2021-04-31",
            "2021-01-01T",
            "2021-01-01T24:00Z",
            "2021-01-01T10:00",
            "2021-01-01T10:00:00",
            "2021-01-01T10:00:00.Z",
            "2021-01-01T10:00:00+1",
            "2021-01-01T10:00:00+01:0",
            "2021-01-01T10:00:00+24:00",
            "2021-01-01 10:00:00Z",
            "2021-01-01T10:00:00ZZ",
            "２０２１-01-01",
            "+2021-01-01",
        ] {
            assert!(parse_verification_time(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(1600, 1, 1), -135_140);
    }
}
