//! Requesting verified claims: a typed form of the OpenID Connect `claims` request parameter
//! (OpenID Connect Core 1.0 §5.5) extended with `verified_claims` (OpenID Connect for Identity
//! Assurance 1.0 §5–6), and its check against the OP's discovery metadata (§9).

// Size note: Kept whole (~990 lines): the request types and their check against the
// OP's metadata mirror each other member by member; they change together.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::{AssuranceError, AssuranceUnsupported};

/// Fewest characters a `purpose` may have.
pub const PURPOSE_MIN_CHARS: usize = 3;
/// Most characters a `purpose` may have.
pub const PURPOSE_MAX_CHARS: usize = 300;

/// Members that make a request object a [`ClaimConstraint`] rather than a [`ElementRequest::Nested`]
/// object of sub-elements.
const CONSTRAINT_KEYS: [&str; 5] = ["essential", "value", "values", "max_age", "purpose"];

/// Checks the `purpose` length rule (3 to 300 characters, counted as Unicode scalar values).
fn check_purpose(purpose: &str, path: &str) -> Result<(), AssuranceError> {
    let chars = purpose.chars().count();
    if (PURPOSE_MIN_CHARS..=PURPOSE_MAX_CHARS).contains(&chars) {
        Ok(())
    } else {
        Err(AssuranceError::PurposeLength {
            path: path.to_owned(),
            chars,
        })
    }
}

/// The request for one element: a claim, a member of `verification`, or a sub-element of
/// an `evidence` filter.
///
/// ```
/// use oidc_dtr::assurance::ElementRequest;
///
/// let any = ElementRequest::Null; // `"email": null`: asked for, no restriction
/// assert!(any.as_constraint().is_none());
/// let level = ElementRequest::values(["substantial", "high"]);
/// assert!(level.allows("high") && !level.allows("low"));
/// match &level {
///     ElementRequest::Null => println!("anything"),
///     ElementRequest::ClaimConstraint(c) => println!("restricted: {:?}", c.values),
///     ElementRequest::Nested(members) => println!("{} members", members.len()),
///     _ => println!("a newer form"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ElementRequest {
    /// `null`: the element is requested with default behaviour.
    Null,
    /// An object with `essential`, `value`, `values`, `max_age` and/or `purpose`.
    ClaimConstraint(ClaimConstraint),
    /// An object whose members request sub-elements, for example
    /// `"document_details": {"type": null, "issuer": {"country": null}}`.
    Nested(BTreeMap<String, ElementRequest>),
}

impl ElementRequest {
    /// `{"essential": true}`.
    pub fn essential() -> Self {
        Self::ClaimConstraint(ClaimConstraint::default().essential(true))
    }

    /// `{"value": value}`.
    pub fn value(value: impl Into<Value>) -> Self {
        Self::ClaimConstraint(ClaimConstraint::default().with_value(value))
    }

    /// `{"values": [...]}`.
    pub fn values<I, V>(values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<Value>,
    {
        Self::ClaimConstraint(ClaimConstraint::default().with_values(values))
    }

    /// `{"max_age": seconds}`.
    pub fn max_age(seconds: u64) -> Self {
        Self::ClaimConstraint(ClaimConstraint::default().with_max_age(seconds))
    }

    /// The constraint, when this is one.
    pub fn as_constraint(&self) -> Option<&ClaimConstraint> {
        match self {
            Self::ClaimConstraint(c) => Some(c),
            _ => None,
        }
    }

    /// The string values this element is restricted to (`value` and `values` together), or
    /// `None` when it is not restricted. Non-string entries are ignored.
    pub fn allowed_strings(&self) -> Option<Vec<&str>> {
        let c = self.as_constraint()?;
        let mut out = Vec::new();
        if let Some(v) = c.value.as_ref().and_then(Value::as_str) {
            out.push(v);
        }
        if let Some(vs) = &c.values {
            out.extend(vs.iter().filter_map(Value::as_str));
        }
        if c.value.is_none() && c.values.is_none() {
            None
        } else {
            Some(out)
        }
    }

    /// Whether `candidate` satisfies the `value`/`values` restriction (true when unrestricted).
    pub fn allows(&self, candidate: &str) -> bool {
        self.allowed_strings()
            .is_none_or(|allowed| allowed.contains(&candidate))
    }

    fn validate(&self, path: &str) -> Result<(), AssuranceError> {
        match self {
            Self::Null => Ok(()),
            Self::ClaimConstraint(c) => c.validate(path),
            Self::Nested(members) => {
                for (k, v) in members {
                    v.validate(&format!("{path}.{k}"))?;
                }
                Ok(())
            }
        }
    }
}

impl Serialize for ElementRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::ClaimConstraint(c) => c.serialize(s),
            Self::Nested(m) => m.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ElementRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::try_from(v).map_err(D::Error::custom)
    }
}

/// Deepest nesting accepted in a parsed request element.
pub const CLAIMS_REQUEST_MAX_DEPTH: usize = 16;

impl TryFrom<Value> for ElementRequest {
    type Error = serde_json::Error;

    fn try_from(v: Value) -> Result<Self, Self::Error> {
        element_from_value(v, 0)
    }
}

fn element_from_value(v: Value, depth: usize) -> Result<ElementRequest, serde_json::Error> {
    if depth > CLAIMS_REQUEST_MAX_DEPTH {
        return Err(serde_json::Error::custom(format!(
            "claim request nested deeper than {CLAIMS_REQUEST_MAX_DEPTH}"
        )));
    }
    match v {
        Value::Null => Ok(ElementRequest::Null),
        Value::Object(m) => {
            if m.is_empty() || m.keys().any(|k| CONSTRAINT_KEYS.contains(&k.as_str())) {
                // ClaimConstraint members (and unknown ones kept as JSON) are bounded too.
                super::response::check_value_limits(
                    &m,
                    "claim request",
                    &super::AssuranceLimits::default(),
                )
                .map_err(serde_json::Error::custom)?;
                serde_json::from_value(Value::Object(m)).map(ElementRequest::ClaimConstraint)
            } else {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    out.insert(k, element_from_value(v, depth + 1)?);
                }
                Ok(ElementRequest::Nested(out))
            }
        }
        other => Err(serde_json::Error::custom(format!(
            "a claim request must be null or an object, not {}",
            super::json_type(&other)
        ))),
    }
}

/// Deserialises a present member (even `null`) as `Some`, so `"time": null` round-trips.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ElementRequest>, D::Error> {
    ElementRequest::deserialize(d).map(Some)
}

/// The restrictions on one requested element (OpenID Connect Core 1.0 §5.5.1, OpenID Connect
/// for Identity Assurance 1.0 §6).
///
/// ```
/// use oidc_dtr::assurance::{ClaimConstraint, ElementRequest};
///
/// let birthdate = ClaimConstraint::default()
///     .essential(true)
///     .with_max_age(10 * 365 * 86_400)
///     .with_purpose("To check that you are of age")?;
/// let request = ElementRequest::ClaimConstraint(birthdate);
/// assert_eq!(request.as_constraint().unwrap().essential, Some(true));
/// # Ok::<(), oidc_dtr::assurance::AssuranceError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClaimConstraint {
    /// Whether the element is essential to the RP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub essential: Option<bool>,
    /// The single value the element must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// The values the element may have, in order of preference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<Value>>,
    /// For dates and times: the most seconds that may have elapsed since the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// Why the RP asks, shown to the end-user (3 to 300 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Members this crate does not model, kept as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl ClaimConstraint {
    /// Sets `essential`.
    pub fn essential(mut self, essential: bool) -> Self {
        self.essential = Some(essential);
        self
    }

    /// Sets `value`.
    pub fn with_value(mut self, value: impl Into<Value>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Sets `values`.
    pub fn with_values<I, V>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<Value>,
    {
        self.values = Some(values.into_iter().map(Into::into).collect());
        self
    }

    /// Sets `max_age` (seconds).
    pub fn with_max_age(mut self, seconds: u64) -> Self {
        self.max_age = Some(seconds);
        self
    }

    /// Sets `purpose`, refusing one outside 3..=300 characters.
    pub fn with_purpose(mut self, purpose: impl Into<String>) -> Result<Self, AssuranceError> {
        let purpose = purpose.into();
        check_purpose(&purpose, "purpose")?;
        self.purpose = Some(purpose);
        Ok(self)
    }

    fn validate(&self, path: &str) -> Result<(), AssuranceError> {
        if let Some(p) = &self.purpose {
            check_purpose(p, &format!("{path}.purpose"))?;
        }
        if self.values.as_ref().is_some_and(Vec::is_empty) {
            return Err(AssuranceError::EmptyValues {
                path: format!("{path}.values"),
            });
        }
        Ok(())
    }
}

/// The `claims` request parameter: what to return in the ID token and at the UserInfo endpoint.
///
/// ```
/// use oidc_dtr::assurance::{ClaimsRequest, ClaimsTarget, ElementRequest, VerifiedClaimsRequest};
///
/// let request = ClaimsRequest::new()
///     .verified_claims_in(
///         ClaimsTarget::IdToken,
///         VerifiedClaimsRequest::new().trust_framework("de_aml").essential_claim("family_name"),
///     )
///     .claim_in(ClaimsTarget::UserInfo, "email", ElementRequest::essential());
/// request.validate()?;
/// let json = request.to_json()?; // the `claims` parameter
/// assert_eq!(json["userinfo"]["email"]["essential"], true);
/// // Then: `client.authorize().claims_request(request)`.
/// # Ok::<(), oidc_dtr::assurance::AssuranceError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClaimsRequest {
    /// Claims to return from the UserInfo endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo: Option<TargetRequest>,
    /// Claims to return in the ID token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<TargetRequest>,
    /// Members this crate does not model, kept as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Where a claim is delivered.
///
/// ```
/// use oidc_dtr::assurance::{ClaimsRequest, ClaimsTarget, ElementRequest};
///
/// let request = ClaimsRequest::new().claim_in(ClaimsTarget::IdToken, "email", ElementRequest::Null);
/// assert_eq!(ClaimsTarget::IdToken.as_str(), "id_token");
/// assert!(request.target(ClaimsTarget::IdToken).is_some());
/// assert!(request.target(ClaimsTarget::UserInfo).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClaimsTarget {
    /// In the ID token.
    IdToken,
    /// In the UserInfo response.
    UserInfo,
}

impl ClaimsTarget {
    /// The member name in the `claims` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdToken => "id_token",
            Self::UserInfo => "userinfo",
        }
    }
}

impl ClaimsRequest {
    /// An empty request.
    pub fn new() -> Self {
        Self::default()
    }

    /// The request for `target`, if any.
    pub fn target(&self, target: ClaimsTarget) -> Option<&TargetRequest> {
        match target {
            ClaimsTarget::IdToken => self.id_token.as_ref(),
            ClaimsTarget::UserInfo => self.userinfo.as_ref(),
        }
    }

    /// The `verified_claims` requests for `target` (empty when none).
    pub fn verified_claims(&self, target: ClaimsTarget) -> &[VerifiedClaimsRequest] {
        self.target(target)
            .map(|t| t.verified_claims.as_slice())
            .unwrap_or(&[])
    }

    fn target_mut(&mut self, target: ClaimsTarget) -> &mut TargetRequest {
        match target {
            ClaimsTarget::IdToken => self.id_token.get_or_insert_with(TargetRequest::default),
            ClaimsTarget::UserInfo => self.userinfo.get_or_insert_with(TargetRequest::default),
        }
    }

    /// Adds a `verified_claims` request for `target`. A second one for the same target turns
    /// the member into an array (§6.5 "claims sets with different verification requirements").
    pub fn verified_claims_in(
        mut self,
        target: ClaimsTarget,
        request: VerifiedClaimsRequest,
    ) -> Self {
        self.target_mut(target).push_verified_claims(request);
        self
    }

    /// Requests an ordinary (unverified) claim for `target`.
    pub fn claim_in(
        mut self,
        target: ClaimsTarget,
        name: impl Into<String>,
        req: ElementRequest,
    ) -> Self {
        self.target_mut(target).claims.insert(name.into(), req);
        self
    }

    /// Checks the rules a request must follow before it is sent: every `purpose` 3..=300
    /// characters, no empty `values`, and evidence `type` restricted by a single `value`.
    pub fn validate(&self) -> Result<(), AssuranceError> {
        for target in [ClaimsTarget::IdToken, ClaimsTarget::UserInfo] {
            if let Some(t) = self.target(target) {
                t.validate(target.as_str())?;
            }
        }
        Ok(())
    }

    /// Validates, then serialises to the JSON object sent as the `claims` parameter.
    pub fn to_json(&self) -> Result<Value, AssuranceError> {
        self.validate()?;
        serde_json::to_value(self).map_err(|e| AssuranceError::Serialize(e.to_string()))
    }

    /// Validates, then serialises to the compact string placed in the `claims` parameter.
    pub fn to_json_string(&self) -> Result<String, AssuranceError> {
        self.validate()?;
        serde_json::to_string(self).map_err(|e| AssuranceError::Serialize(e.to_string()))
    }

    /// Checks the `verified_claims` received for `target` against this request
    /// (see [`super::check_verified_claims`]). `now` is Unix seconds.
    pub fn check_received(
        &self,
        target: ClaimsTarget,
        received: &super::ReceivedClaims,
        now: u64,
    ) -> Result<super::CheckedVerifiedClaims, AssuranceError> {
        super::check_verified_claims(self.verified_claims(target), &received.verified, now)
    }

    /// Checks the request against the OP's discovery metadata and names the first thing the
    /// OP does not support. Only needed when a `verified_claims` request is present.
    pub fn check_supported(&self, metadata: &Map<String, Value>) -> Result<(), AssuranceError> {
        let any_verified = [ClaimsTarget::IdToken, ClaimsTarget::UserInfo]
            .iter()
            .any(|t| !self.verified_claims(*t).is_empty());
        if self.userinfo.is_none() && self.id_token.is_none() {
            return Ok(());
        }
        if metadata.get("claims_parameter_supported") != Some(&Value::Bool(true)) {
            return Err(AssuranceError::Unsupported(
                AssuranceUnsupported::ClaimsParameter,
            ));
        }
        if !any_verified {
            return Ok(());
        }
        if metadata.get("verified_claims_supported") != Some(&Value::Bool(true)) {
            return Err(AssuranceError::Unsupported(
                AssuranceUnsupported::VerifiedClaims,
            ));
        }
        let md = Metadata(metadata);
        for target in [ClaimsTarget::IdToken, ClaimsTarget::UserInfo] {
            for vc in self.verified_claims(target) {
                vc.check_supported(&md)?;
            }
        }
        Ok(())
    }
}

/// A view on the OP metadata with typed look-ups of its string arrays.
struct Metadata<'a>(&'a Map<String, Value>);

impl Metadata<'_> {
    /// `Ok(None)` when absent, `Ok(Some(list))` when an array of strings, else an error.
    fn list(&self, member: &'static str) -> Result<Option<Vec<&str>>, AssuranceError> {
        match self.0.get(member) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or(AssuranceError::MetadataMalformed { member })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(AssuranceError::MetadataMalformed { member }),
        }
    }

    /// Every value `req` allows must be in `member`; `absent_means_none` treats a missing
    /// member as "supports nothing", otherwise a missing member is a `MetadataMissing` error.
    fn require_all(
        &self,
        member: &'static str,
        req: Option<&ElementRequest>,
        unsupported: fn(String) -> AssuranceUnsupported,
        absent_means_none: bool,
    ) -> Result<(), AssuranceError> {
        let Some(wanted) = req.and_then(ElementRequest::allowed_strings) else {
            return Ok(());
        };
        let supported = match self.list(member)? {
            Some(l) => l,
            None if absent_means_none => Vec::new(),
            None => return Err(AssuranceError::MetadataMissing { member }),
        };
        match wanted.into_iter().find(|w| !supported.contains(w)) {
            Some(w) => Err(AssuranceError::Unsupported(unsupported(w.to_owned()))),
            None => Ok(()),
        }
    }
}

/// The claims requested for one target (`userinfo` or `id_token`).
///
/// ```
/// use oidc_dtr::assurance::{ClaimsRequest, ClaimsTarget, VerifiedClaimsRequest};
///
/// let request = ClaimsRequest::new()
///     .verified_claims_in(ClaimsTarget::IdToken, VerifiedClaimsRequest::new().claim("family_name"));
/// let id_token = request.target(ClaimsTarget::IdToken).unwrap();
/// assert_eq!(id_token.verified_claims.len(), 1);
/// assert!(id_token.claims.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TargetRequest {
    /// The `verified_claims` requests (one object or an array on the wire).
    pub verified_claims: Vec<VerifiedClaimsRequest>,
    /// Whether `verified_claims` is sent as an array even with a single element.
    pub verified_claims_as_array: bool,
    /// Ordinary (unverified) claims requested, by name.
    pub claims: BTreeMap<String, ElementRequest>,
}

impl TargetRequest {
    /// Adds a `verified_claims` request.
    pub fn push_verified_claims(&mut self, request: VerifiedClaimsRequest) {
        self.verified_claims.push(request);
        if self.verified_claims.len() > 1 {
            self.verified_claims_as_array = true;
        }
    }

    fn validate(&self, path: &str) -> Result<(), AssuranceError> {
        for (k, v) in &self.claims {
            v.validate(&format!("{path}.{k}"))?;
        }
        for (i, vc) in self.verified_claims.iter().enumerate() {
            let p = if self.verified_claims_as_array {
                format!("{path}.verified_claims[{i}]")
            } else {
                format!("{path}.verified_claims")
            };
            vc.validate(&p)?;
        }
        Ok(())
    }
}

impl Serialize for TargetRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let has_vc = !self.verified_claims.is_empty();
        let mut m = s.serialize_map(Some(self.claims.len() + usize::from(has_vc)))?;
        for (k, v) in &self.claims {
            m.serialize_entry(k, v)?;
        }
        if has_vc {
            if self.verified_claims.len() == 1 && !self.verified_claims_as_array {
                m.serialize_entry("verified_claims", &self.verified_claims[0])?;
            } else {
                m.serialize_entry("verified_claims", &self.verified_claims)?;
            }
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for TargetRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Map::<String, Value>::deserialize(d)?;
        let mut out = TargetRequest::default();
        match map.remove("verified_claims") {
            None => {}
            Some(Value::Array(a)) => {
                out.verified_claims_as_array = true;
                for v in a {
                    out.verified_claims
                        .push(serde_json::from_value(v).map_err(D::Error::custom)?);
                }
            }
            Some(v @ Value::Object(_)) => {
                out.verified_claims
                    .push(serde_json::from_value(v).map_err(D::Error::custom)?);
            }
            Some(_) => {
                return Err(D::Error::custom(
                    "verified_claims request must be an object or an array",
                ));
            }
        }
        for (k, v) in map {
            out.claims
                .insert(k, ElementRequest::try_from(v).map_err(D::Error::custom)?);
        }
        Ok(out)
    }
}

/// One `verified_claims` request: the verification data wanted (with constraints) and the
/// claims wanted inside `claims`.
///
/// ```
/// use oidc_dtr::assurance::{EvidenceRequest, VerifiedClaimsRequest};
///
/// let request = VerifiedClaimsRequest::new()
///     .trust_frameworks(["de_aml", "eidas"])
///     .max_age(365 * 86_400) // verified within a year
///     .evidence(EvidenceRequest::document())
///     .essential_claim("given_name")
///     .claim("birthdate")
///     .with_purpose("To open your account")?;
/// assert!(request.requests_claim("birthdate"));
/// # Ok::<(), oidc_dtr::assurance::AssuranceError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VerifiedClaimsRequest {
    /// Constraints on, and members requested of, the `verification` element.
    pub verification: VerificationRequest,
    /// The verified claims wanted (`None` serialises as `"claims": null`).
    pub claims: Option<BTreeMap<String, ElementRequest>>,
    /// Why the RP asks for this set (3 to 300 characters). Defined by drafts of the
    /// specification and still accepted by deployed OPs; the final text leaves it to
    /// extensions, so only set it when the OP documents support for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Members this crate does not model, kept as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Default for VerifiedClaimsRequest {
    fn default() -> Self {
        Self::new()
    }
}

impl VerifiedClaimsRequest {
    /// A request for `verification.trust_framework` (any value) and no claims yet.
    pub fn new() -> Self {
        Self {
            verification: VerificationRequest::default(),
            claims: Some(BTreeMap::new()),
            purpose: None,
            other: Map::new(),
        }
    }

    /// Restricts `trust_framework` to one value.
    pub fn trust_framework(mut self, value: impl Into<String>) -> Self {
        self.verification.trust_framework = ElementRequest::value(value.into());
        self
    }

    /// Restricts `trust_framework` to any of `values`.
    pub fn trust_frameworks<I, S>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.verification.trust_framework =
            ElementRequest::values(values.into_iter().map(Into::into));
        self
    }

    /// Requests `assurance_level`, restricted to any of `values` (unrestricted when empty).
    pub fn assurance_levels<I, S>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let v: Vec<String> = values.into_iter().map(Into::into).collect();
        self.verification.assurance_level = Some(match v.len() {
            0 => ElementRequest::Null,
            1 => ElementRequest::value(v.into_iter().next().unwrap_or_default()),
            _ => ElementRequest::values(v),
        });
        self
    }

    /// Requests `verification.time`.
    pub fn time(mut self) -> Self {
        self.verification.time = Some(ElementRequest::Null);
        self
    }

    /// Requests `verification.time` no older than `seconds` (`max_age`).
    pub fn max_age(mut self, seconds: u64) -> Self {
        self.verification.time = Some(ElementRequest::max_age(seconds));
        self
    }

    /// Requests `verification.verification_process`.
    pub fn verification_process(mut self) -> Self {
        self.verification.verification_process = Some(ElementRequest::Null);
        self
    }

    /// Requests `verification.assurance_process` (with all its sub-elements).
    pub fn assurance_process(mut self) -> Self {
        self.verification.assurance_process = Some(ElementRequest::Null);
        self
    }

    /// Adds an `evidence` filter (filters are ORed).
    pub fn evidence(mut self, evidence: EvidenceRequest) -> Self {
        self.verification
            .evidence
            .get_or_insert_with(Vec::new)
            .push(evidence);
        self
    }

    /// Requests a verified claim (`null`).
    pub fn claim(self, name: impl Into<String>) -> Self {
        self.claim_with(name, ElementRequest::Null)
    }

    /// Requests a verified claim as essential.
    pub fn essential_claim(self, name: impl Into<String>) -> Self {
        self.claim_with(name, ElementRequest::essential())
    }

    /// Requests a verified claim with an explicit request object.
    pub fn claim_with(mut self, name: impl Into<String>, req: ElementRequest) -> Self {
        self.claims
            .get_or_insert_with(BTreeMap::new)
            .insert(name.into(), req);
        self
    }

    /// Sets the `purpose` of this set, refusing one outside 3..=300 characters.
    pub fn with_purpose(mut self, purpose: impl Into<String>) -> Result<Self, AssuranceError> {
        let purpose = purpose.into();
        check_purpose(&purpose, "verified_claims.purpose")?;
        self.purpose = Some(purpose);
        Ok(self)
    }

    /// Whether the claim `name` (exact member name, language tag included) is requested.
    pub fn requests_claim(&self, name: &str) -> bool {
        self.claims.as_ref().is_some_and(|c| c.contains_key(name))
    }

    fn validate(&self, path: &str) -> Result<(), AssuranceError> {
        if let Some(p) = &self.purpose {
            check_purpose(p, &format!("{path}.purpose"))?;
        }
        self.verification
            .validate(&format!("{path}.verification"))?;
        if let Some(c) = &self.claims {
            for (k, v) in c {
                v.validate(&format!("{path}.claims.{k}"))?;
            }
        }
        Ok(())
    }

    fn check_supported(&self, md: &Metadata<'_>) -> Result<(), AssuranceError> {
        let v = &self.verification;
        md.require_all(
            "trust_frameworks_supported",
            Some(&v.trust_framework),
            AssuranceUnsupported::TrustFramework,
            false,
        )?;
        for ev in v.evidence.iter().flatten() {
            md.require_all(
                "evidence_supported",
                Some(&ev.evidence_type),
                AssuranceUnsupported::EvidenceType,
                true,
            )?;
            if let Some(ElementRequest::Nested(dd)) = ev.members.get("document_details") {
                md.require_all(
                    "documents_supported",
                    dd.get("type"),
                    AssuranceUnsupported::DocumentType,
                    true,
                )?;
            }
            if let Some(ElementRequest::Nested(rec)) = ev.members.get("record") {
                md.require_all(
                    "electronic_records_supported",
                    rec.get("type"),
                    AssuranceUnsupported::ElectronicRecordType,
                    true,
                )?;
            }
            if ev.evidence_type.allows("document")
                && md.0.contains_key("documents_check_methods_supported")
            {
                for cd in ev.check_details.iter().flatten() {
                    md.require_all(
                        "documents_check_methods_supported",
                        cd.get("check_method"),
                        AssuranceUnsupported::CheckMethod,
                        false,
                    )?;
                }
            }
        }
        if let Some(claims) = &self.claims
            && !claims.is_empty()
        {
            let supported = md.list("claims_in_verified_claims_supported")?.ok_or(
                AssuranceError::MetadataMissing {
                    member: "claims_in_verified_claims_supported",
                },
            )?;
            for name in claims.keys() {
                // Language-tagged names (`given_name#de`) are supported when the base name is.
                let base = name.split('#').next().unwrap_or(name);
                if !supported.contains(&base) && !supported.contains(&name.as_str()) {
                    return Err(AssuranceError::Unsupported(
                        AssuranceUnsupported::ClaimInVerifiedClaims(name.clone()),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The request for the `verification` element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VerificationRequest {
    /// `trust_framework` (always requested; restrict it with `value`/`values`).
    pub trust_framework: ElementRequest,
    /// `assurance_level`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub assurance_level: Option<ElementRequest>,
    /// `assurance_process`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub assurance_process: Option<ElementRequest>,
    /// `time`, possibly with `max_age`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub time: Option<ElementRequest>,
    /// `verification_process`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub verification_process: Option<ElementRequest>,
    /// `evidence` filters (ORed); each one names an evidence `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Vec<EvidenceRequest>>,
    /// Other members requested (for example `attachments` or extension members), as sent.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Default for VerificationRequest {
    fn default() -> Self {
        Self {
            trust_framework: ElementRequest::Null,
            assurance_level: None,
            assurance_process: None,
            time: None,
            verification_process: None,
            evidence: None,
            other: Map::new(),
        }
    }
}

impl VerificationRequest {
    /// The requested `max_age` of `verification.time`, if any.
    pub fn max_age(&self) -> Option<u64> {
        self.time
            .as_ref()
            .and_then(ElementRequest::as_constraint)
            .and_then(|c| c.max_age)
    }

    fn validate(&self, path: &str) -> Result<(), AssuranceError> {
        self.trust_framework
            .validate(&format!("{path}.trust_framework"))?;
        for (name, e) in [
            ("assurance_level", &self.assurance_level),
            ("assurance_process", &self.assurance_process),
            ("time", &self.time),
            ("verification_process", &self.verification_process),
        ] {
            if let Some(e) = e {
                e.validate(&format!("{path}.{name}"))?;
            }
        }
        for (i, ev) in self.evidence.iter().flatten().enumerate() {
            ev.validate(&format!("{path}.evidence[{i}]"))?;
        }
        Ok(())
    }
}

/// One `evidence` filter: an evidence `type` (restricted with a single `value`) and the
/// sub-elements wanted for evidence of that type.
///
/// ```
/// use oidc_dtr::assurance::EvidenceRequest;
///
/// let passport = EvidenceRequest::document()
///     .document_types(["passport", "idcard"])
///     .check_methods(["vpip"]);
/// assert_eq!(passport.type_value(), Some("document"));
/// let custom = EvidenceRequest::of_type("x_bank_account");
/// assert_eq!(custom.type_value(), Some("x_bank_account"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EvidenceRequest {
    /// `type`: `{"value": "document"}` and so on.
    #[serde(rename = "type")]
    pub evidence_type: ElementRequest,
    /// `check_details` filters (each member ORed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_details: Option<Vec<BTreeMap<String, ElementRequest>>>,
    /// Other sub-elements requested: `document_details`, `record`, `attestation`,
    /// `attachments`, `derived_claims`, `signature_type`, …
    #[serde(flatten)]
    pub members: BTreeMap<String, ElementRequest>,
}

impl EvidenceRequest {
    /// A filter for evidence of type `evidence_type`.
    pub fn of_type(evidence_type: impl Into<String>) -> Self {
        Self {
            evidence_type: ElementRequest::value(evidence_type.into()),
            check_details: None,
            members: BTreeMap::new(),
        }
    }

    /// A filter for `document` evidence.
    pub fn document() -> Self {
        Self::of_type("document")
    }

    /// A filter for `electronic_record` evidence.
    pub fn electronic_record() -> Self {
        Self::of_type("electronic_record")
    }

    /// A filter for `vouch` evidence.
    pub fn vouch() -> Self {
        Self::of_type("vouch")
    }

    /// A filter for `electronic_signature` evidence.
    pub fn electronic_signature() -> Self {
        Self::of_type("electronic_signature")
    }

    /// The evidence type this filter selects, if given as a string `value`.
    pub fn type_value(&self) -> Option<&str> {
        self.evidence_type
            .as_constraint()
            .and_then(|c| c.value.as_ref())
            .and_then(Value::as_str)
    }

    /// Adds a `check_details` filter with `check_method` restricted to `methods`
    /// (requested without restriction when empty).
    pub fn check_methods<I, S>(mut self, methods: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let m: Vec<String> = methods.into_iter().map(Into::into).collect();
        let req = match m.len() {
            0 => ElementRequest::Null,
            1 => ElementRequest::value(m.into_iter().next().unwrap_or_default()),
            _ => ElementRequest::values(m),
        };
        self.check_details
            .get_or_insert_with(Vec::new)
            .push(BTreeMap::from([("check_method".to_owned(), req)]));
        self
    }

    /// Requests `document_details.type`, restricted to `types` (unrestricted when empty).
    pub fn document_types<I, S>(self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.typed_member("document_details", types)
    }

    /// Requests `record.type`, restricted to `types` (unrestricted when empty).
    pub fn record_types<I, S>(self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.typed_member("record", types)
    }

    fn typed_member<I, S>(mut self, member: &str, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let t: Vec<String> = types.into_iter().map(Into::into).collect();
        let req = if t.is_empty() {
            ElementRequest::Null
        } else {
            ElementRequest::values(t)
        };
        let entry = self
            .members
            .entry(member.to_owned())
            .or_insert_with(|| ElementRequest::Nested(BTreeMap::new()));
        if !matches!(entry, ElementRequest::Nested(_)) {
            *entry = ElementRequest::Nested(BTreeMap::new());
        }
        if let ElementRequest::Nested(m) = entry {
            m.insert("type".to_owned(), req);
        }
        self
    }

    /// Requests a sub-element of the evidence (for example `attachments`,
    /// `derived_claims` or a nested `document_details` member).
    pub fn request(mut self, member: impl Into<String>, req: ElementRequest) -> Self {
        self.members.insert(member.into(), req);
        self
    }

    fn validate(&self, path: &str) -> Result<(), AssuranceError> {
        // §6.2: the filter names its type with `value`; `values` is not allowed here.
        let ok = self
            .evidence_type
            .as_constraint()
            .is_some_and(|c| c.values.is_none() && c.value.as_ref().is_some_and(Value::is_string));
        if !ok {
            return Err(AssuranceError::EvidenceTypeFilter {
                path: format!("{path}.type"),
            });
        }
        self.evidence_type.validate(&format!("{path}.type"))?;
        for (i, cd) in self.check_details.iter().flatten().enumerate() {
            for (k, v) in cd {
                v.validate(&format!("{path}.check_details[{i}].{k}"))?;
            }
        }
        for (k, v) in &self.members {
            v.validate(&format!("{path}.{k}"))?;
        }
        Ok(())
    }
}
