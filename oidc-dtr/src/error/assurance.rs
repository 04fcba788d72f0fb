//! The errors of OpenID Connect for Identity Assurance requests and
//! responses.

/// Errors of requesting, parsing and checking verified claims. Paths name the member
/// (`verified_claims[1].verification.evidence[0].type`); no claim value is ever included.
///
/// ```
/// use oidc_dtr::Error;
/// use oidc_dtr::error::{AssuranceError, AssuranceUnsupported};
///
/// fn advice(err: &Error) -> String {
///     match err {
///         Error::Assurance(AssuranceError::Unsupported(what)) => format!("the OP cannot: {what}"),
///         Error::Assurance(AssuranceError::TrustFrameworkNotAllowed { .. }) => {
///             "verified under a framework we do not accept".into()
///         }
///         Error::Assurance(e) => format!("unusable verified claims: {e}"),
///         _ => "not an assurance error".into(),
///     }
/// }
/// let err = Error::from(AssuranceError::Unsupported(AssuranceUnsupported::VerifiedClaims));
/// assert!(advice(&err).starts_with("the OP cannot"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssuranceError {
    /// A `purpose` outside 3..=300 characters.
    #[error("{path}: purpose is {chars} characters, must be 3 to 300")]
    PurposeLength {
        /// Where.
        path: String,
        /// Its length in characters.
        chars: usize,
    },
    /// A `values` array with no member.
    #[error("{path}: values must have at least one member")]
    EmptyValues {
        /// Where.
        path: String,
    },
    /// An evidence filter whose `type` is not restricted by a single string `value`.
    #[error("{path}: an evidence filter must name its type with a single string `value`")]
    EvidenceTypeFilter {
        /// Where.
        path: String,
    },
    /// The request could not be serialised.
    #[error("claims request could not be serialised: {0}")]
    Serialize(String),
    /// The OP does not support something the request needs.
    #[error("the OP does not support {0}")]
    Unsupported(AssuranceUnsupported),
    /// The OP metadata lacks a member needed to check the request.
    #[error("OP metadata lacks `{member}`")]
    MetadataMissing {
        /// The metadata member.
        member: &'static str,
    },
    /// An OP metadata member has the wrong shape.
    #[error("OP metadata `{member}` is not an array of strings")]
    MetadataMalformed {
        /// The metadata member.
        member: &'static str,
    },
    /// A required member is absent (or `null`).
    #[error("{path}: required member missing")]
    Missing {
        /// Where.
        path: String,
    },
    /// A member has the wrong JSON type.
    #[error("{path}: expected {expected}, found {found}")]
    WrongType {
        /// Where.
        path: String,
        /// The JSON type expected.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// An array or object has more members than the limit.
    #[error("{path}: more than {max} members")]
    TooMany {
        /// Where.
        path: String,
        /// The limit.
        max: usize,
    },
    /// Nesting deeper than the limit.
    #[error("{path}: nested deeper than {max}")]
    TooDeep {
        /// Where.
        path: String,
        /// The limit.
        max: usize,
    },
    /// A string longer than the limit.
    #[error("{path}: string longer than {max} bytes")]
    TooLong {
        /// Where.
        path: String,
        /// The limit.
        max: usize,
    },
    /// A date or time that is not in a form the spec allows.
    #[error("{path}: invalid date/time ({reason})")]
    InvalidTime {
        /// Where.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The input is not JSON (or nests beyond serde_json's own limit).
    #[error("not valid JSON: {0}")]
    Json(String),
    /// `verified_claims` found somewhere other than the top level of the claims object or
    /// `_claim_names`.
    #[error("{path}: verified_claims is not allowed here")]
    MisplacedVerifiedClaims {
        /// Where (a JSON pointer).
        path: String,
    },
    /// A returned `trust_framework` no request allowed.
    #[error("verified_claims[{index}]: trust_framework `{trust_framework}` was not requested")]
    TrustFrameworkNotAllowed {
        /// Index of the element in the received `verified_claims`.
        index: usize,
        /// The trust framework returned.
        trust_framework: String,
    },
    /// A returned `assurance_level` (or its absence) no request allowed.
    #[error("verified_claims[{index}]: assurance_level {assurance_level:?} was not requested")]
    AssuranceLevelNotAllowed {
        /// Index of the element.
        index: usize,
        /// The assurance level returned.
        assurance_level: Option<String>,
    },
    /// A returned evidence type no evidence filter of the request selected.
    #[error("verified_claims[{index}]: evidence type `{evidence_type}` was not requested")]
    EvidenceTypeNotAllowed {
        /// Index of the element.
        index: usize,
        /// The evidence type returned.
        evidence_type: String,
    },
    /// `verification.time` older than the requested `max_age`.
    #[error("verified_claims[{index}]: verification is {age} s old, max_age is {max_age} s")]
    VerificationTooOld {
        /// Index of the element.
        index: usize,
        /// Seconds elapsed since the verification (last second of the value).
        age: u64,
        /// The largest `max_age` among the matching requests.
        max_age: u64,
    },
    /// `max_age` was requested but `verification.time` was not returned.
    #[error("verified_claims[{index}]: max_age was requested but verification.time is absent")]
    VerificationTimeMissing {
        /// Index of the element.
        index: usize,
    },
    /// `verification.time` is later than now plus the allowed clock skew
    /// ([`VERIFICATION_TIME_SKEW_SECS`](crate::assurance::VERIFICATION_TIME_SKEW_SECS)):
    /// a verification cannot have happened in the future, and such a time
    /// would pass any `max_age`.
    #[error(
        "verified_claims[{index}]: verification.time is {ahead} s in the future (more than the allowed clock skew)"
    )]
    VerificationInFuture {
        /// Index of the element.
        index: usize,
        /// Seconds from now to the first second the value covers.
        ahead: u64,
    },
    /// A `verified_claims` element whose `claims` object has no member,
    /// checked against a request: it verifies nothing, so it cannot satisfy
    /// one (an OP leaves out an element it has no verified claims for).
    #[error("{path}: claims must have at least one member to satisfy a request")]
    EmptyClaims {
        /// Where.
        path: String,
    },
    /// An evidence attachment `url` that is not an absolute `https` URL
    /// with a host (a `javascript:`, `data:`, `file:` or plain `http:` URL
    /// must never be fetched or shown as a link). The URL is not repeated:
    /// it may carry a token.
    #[error("{path}: must be an absolute https URL")]
    InsecureAttachmentUrl {
        /// Where.
        path: String,
    },
    /// A member name appears twice in one object of the input: JSON
    /// parsers keep the last one silently, so which one the OP meant is
    /// unknown.
    #[error("member `{name}` appears more than once")]
    DuplicateMember {
        /// The member name (a name, never a value; sanitised).
        name: String,
    },
}

/// What the OP does not support, by its metadata.
///
/// ```
/// use oidc_dtr::error::AssuranceUnsupported;
///
/// let missing = AssuranceUnsupported::TrustFramework("eidas".into());
/// match &missing {
///     AssuranceUnsupported::ClaimsParameter | AssuranceUnsupported::VerifiedClaims => {
///         println!("the OP does not do identity assurance at all")
///     }
///     AssuranceUnsupported::TrustFramework(name) => assert_eq!(name, "eidas"),
///     other => println!("not offered: {other}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssuranceUnsupported {
    /// `claims_parameter_supported` is not `true`.
    #[error("the claims parameter (claims_parameter_supported)")]
    ClaimsParameter,
    /// `verified_claims_supported` is not `true`.
    #[error("verified claims (verified_claims_supported)")]
    VerifiedClaims,
    /// A trust framework missing from `trust_frameworks_supported`.
    #[error("trust framework `{0}` (trust_frameworks_supported)")]
    TrustFramework(String),
    /// An evidence type missing from `evidence_supported`.
    #[error("evidence type `{0}` (evidence_supported)")]
    EvidenceType(String),
    /// A document type missing from `documents_supported`.
    #[error("document type `{0}` (documents_supported)")]
    DocumentType(String),
    /// An electronic record type missing from `electronic_records_supported`.
    #[error("electronic record type `{0}` (electronic_records_supported)")]
    ElectronicRecordType(String),
    /// A document check method missing from `documents_check_methods_supported`.
    #[error("document check method `{0}` (documents_check_methods_supported)")]
    CheckMethod(String),
    /// A claim missing from `claims_in_verified_claims_supported`.
    #[error("claim `{0}` in verified_claims (claims_in_verified_claims_supported)")]
    ClaimInVerifiedClaims(String),
}
