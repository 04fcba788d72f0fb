//! Receiving verified claims: `verified_claims` as defined by the OpenID Identity Assurance
//! Schema Definition 1.0, parsed into types. Members not modelled here are kept in `other`
//! maps (and members sent as `null` stay there too), so parse → serialise loses nothing.

// Size note: Kept whole (~950 lines): the schema's types are one tree (verified claims →
// verification → evidence), parsed by one recursive reader; split, every
// part would import every other.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::{AssuranceError, AssuranceLimits, json_type};

/// One `verified_claims` element: the verified claims and how they were verified.
///
/// ```
/// use oidc_dtr::assurance::VerifiedClaims;
/// use serde_json::json;
///
/// let vc = VerifiedClaims::from_value(json!({
///     "verification": {"trust_framework": "de_aml", "time": "2026-09-01T10:00Z"},
///     "claims": {"family_name": "Meier"}
/// }))?;
/// assert_eq!(vc.verification.trust_framework, "de_aml");
/// assert_eq!(vc.claim("family_name"), Some(&json!("Meier")));
/// # Ok::<(), oidc_dtr::assurance::AssuranceError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct VerifiedClaims {
    /// How, when and under which rules the claims were verified.
    pub verification: Verification,
    /// The verified claims about the end-user (may be empty, as in the
    /// specification's minimal example; such an element satisfies no request:
    /// see [`check_verified_claims`](crate::assurance::check_verified_claims)).
    pub claims: Map<String, Value>,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl VerifiedClaims {
    /// A verified claim by its exact member name.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    /// Parses one element (a JSON object) with the default [`AssuranceLimits`].
    pub fn from_value(value: Value) -> Result<Self, AssuranceError> {
        parse_element(value, "verified_claims", &AssuranceLimits::default())
    }
}

impl<'de> Deserialize<'de> for VerifiedClaims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_value(v).map_err(serde::de::Error::custom)
    }
}

/// The `verification` element.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Verification {
    /// The trust framework governing the verification (required).
    pub trust_framework: String,
    /// The assurance level, in the trust framework's terms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assurance_level: Option<String>,
    /// The assurance process followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assurance_process: Option<AssuranceProcess>,
    /// When the verification took place, as sent (see [`Verification::time_unix`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The OP's reference to the verification process (for disputes and audits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_process: Option<String>,
    /// The evidence used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Vec<Evidence>>,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Verification {
    /// `time` as Unix seconds, taking the last second the value covers (a time without
    /// seconds counts as `:59`, a plain date as 23:59:59 UTC), as the spec asks for `max_age`.
    pub fn time_unix(&self) -> Option<Result<i64, AssuranceError>> {
        self.time.as_deref().map(|t| {
            super::parse_verification_time(t).map_err(|reason| AssuranceError::InvalidTime {
                path: "verification.time".to_owned(),
                reason,
            })
        })
    }
}

/// The `assurance_process` element.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AssuranceProcess {
    /// The standard or policy followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The procedure of the policy followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub procedure: Option<String>,
    /// How the evidence complies with the policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assurance_details: Option<Vec<AssuranceDetail>>,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A member of `assurance_details`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AssuranceDetail {
    /// Which part of the assurance process the evidence fulfils.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assurance_type: Option<String>,
    /// How the evidence was classified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assurance_classification: Option<String>,
    /// The evidence referred to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence_ref: Option<Vec<EvidenceRef>>,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A member of `evidence_ref`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EvidenceRef {
    /// The `check_id` of a `check_details` entry (required).
    pub check_id: String,
    /// `evidence_metadata.evidence_classification` and other metadata, as received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence_metadata: Option<Map<String, Value>>,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A member of the `evidence` array, by its `type`.
///
/// ```
/// use oidc_dtr::assurance::{Evidence, VerifiedClaims};
/// use serde_json::json;
///
/// let vc = VerifiedClaims::from_value(json!({
///     "verification": {
///         "trust_framework": "de_aml",
///         "evidence": [{"type": "document", "document_details": {"type": "passport"}}]
///     },
///     "claims": {"family_name": "Meier"}
/// }))?;
/// for evidence in vc.verification.evidence.iter().flatten() {
///     match evidence {
///         Evidence::Document(doc) => println!("document: {:?}", doc.document_details),
///         Evidence::ElectronicRecord(_) | Evidence::Vouch(_) => println!("a record or a voucher"),
///         other => println!("{} evidence", other.evidence_type()),
///     }
/// }
/// # Ok::<(), oidc_dtr::assurance::AssuranceError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Evidence {
    /// `document`: a physical or electronic document.
    Document(DocumentEvidence),
    /// `electronic_record`: data from an authoritative source.
    ElectronicRecord(ElectronicRecordEvidence),
    /// `vouch`: an attestation by a natural person.
    Vouch(VouchEvidence),
    /// `electronic_signature`: a signature linked to the end-user.
    ElectronicSignature(ElectronicSignatureEvidence),
    /// Another type (an extension); the whole object as received, `type` included.
    Other(Map<String, Value>),
}

impl Evidence {
    /// The `type` member.
    pub fn evidence_type(&self) -> &str {
        match self {
            Self::Document(_) => "document",
            Self::ElectronicRecord(_) => "electronic_record",
            Self::Vouch(_) => "vouch",
            Self::ElectronicSignature(_) => "electronic_signature",
            Self::Other(m) => m.get("type").and_then(Value::as_str).unwrap_or(""),
        }
    }

    /// The attachments of this evidence, if any.
    pub fn attachments(&self) -> &[Attachment] {
        let a = match self {
            Self::Document(e) => &e.attachments,
            Self::ElectronicRecord(e) => &e.attachments,
            Self::Vouch(e) => &e.attachments,
            Self::ElectronicSignature(e) => &e.attachments,
            Self::Other(_) => &None,
        };
        a.as_deref().unwrap_or(&[])
    }
}

impl Serialize for Evidence {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let body = match self {
            Self::Document(e) => serde_json::to_value(e),
            Self::ElectronicRecord(e) => serde_json::to_value(e),
            Self::Vouch(e) => serde_json::to_value(e),
            Self::ElectronicSignature(e) => serde_json::to_value(e),
            Self::Other(m) => return m.serialize(s),
        }
        .map_err(serde::ser::Error::custom)?;
        let mut m = match body {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        m.insert("type".to_owned(), Value::from(self.evidence_type()));
        m.serialize(s)
    }
}

/// A member of `check_details`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CheckDetail {
    /// The check done (required).
    pub check_method: String,
    /// Who performed the check, if not the OP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// Identifier of the check event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_id: Option<String>,
    /// When the check was completed, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Evidence of type `document`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DocumentEvidence {
    /// The checks done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_details: Option<Vec<CheckDetail>>,
    /// The document used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_details: Option<DocumentDetails>,
    /// Attachments (scans, photos, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
    /// Claims derived from this document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived_claims: Option<Map<String, Value>>,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `document_details`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DocumentDetails {
    /// Document type, e.g. `idcard`, `passport` (required).
    #[serde(rename = "type")]
    pub document_type: String,
    /// The number of this issued document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_number: Option<String>,
    /// The serial number of the blank document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_of_issuance: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_of_expiry: Option<String>,
    /// The issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<Party>,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// An issuer, record source or voucher: `name`, `country_code`, `jurisdiction`; the address
/// members (`country`, `locality`, …) and the voucher's `birthdate`, `occupation`,
/// `organization` are in `other`, read them with [`Party::get_str`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Party {
    /// Name of the issuer / source / voucher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// ISO 3166-1 alpha-3 (or ICAO) code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// Region(s) the party has jurisdiction over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    /// All other members (address members and so on), as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Party {
    /// A string member from `other`, e.g. `country` or `locality`.
    pub fn get_str(&self, member: &str) -> Option<&str> {
        self.other.get(member).and_then(Value::as_str)
    }
}

/// Evidence of type `electronic_record`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ElectronicRecordEvidence {
    /// The checks done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_details: Option<Vec<CheckDetail>>,
    /// The record used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<ElectronicRecord>,
    /// Attachments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
    /// Claims derived from this record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived_claims: Option<Map<String, Value>>,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `record` of an electronic record evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ElectronicRecord {
    /// The record type (required).
    #[serde(rename = "type")]
    pub record_type: String,
    /// When the record was created, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_of_expiry: Option<String>,
    /// The source of the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Party>,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Evidence of type `vouch`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct VouchEvidence {
    /// The checks done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_details: Option<Vec<CheckDetail>>,
    /// The attestation the vouch rests on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attestation>,
    /// Attachments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
    /// Claims derived from this vouch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived_claims: Option<Map<String, Value>>,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `attestation` of a vouch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Attestation {
    /// Vouch type (required).
    #[serde(rename = "type")]
    pub attestation_type: String,
    /// Reference number of the vouch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_number: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_of_issuance: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_of_expiry: Option<String>,
    /// Who vouched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voucher: Option<Party>,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Evidence of type `electronic_signature`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ElectronicSignatureEvidence {
    /// Type of signature (required).
    pub signature_type: String,
    /// The CA that issued the signer's certificate (required).
    pub issuer: String,
    /// Serial number of the signing certificate (required).
    pub serial_number: String,
    /// When the signature was created, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Attachments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
    /// Claims derived from this signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived_claims: Option<Map<String, Value>>,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// An attachment (OpenID Attachments 1.0): embedded content or a reference to fetch.
///
/// ```
/// use oidc_dtr::assurance::{Attachment, Evidence};
///
/// fn list(evidence: &Evidence) {
///     for attachment in evidence.attachments() {
///         match attachment {
///             Attachment::Embedded(a) => println!("embedded {}", a.content_type),
///             Attachment::External(a) => println!("to fetch from {}", a.url),
///             _ => println!("a newer kind of attachment"),
///         }
///     }
/// }
/// # let _ = list;
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Attachment {
    /// Content embedded as base64.
    Embedded(EmbeddedAttachment),
    /// A reference: a URL, a digest of the content and maybe an access token.
    External(ExternalAttachment),
}

/// An embedded attachment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EmbeddedAttachment {
    /// Description (file name or explanation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// Attachment type identifier.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub attachment_type: Option<String>,
    /// MIME type of the content (required).
    pub content_type: String,
    /// Base64 content (required).
    pub content: String,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// An attachment by reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ExternalAttachment {
    /// Description (file name or explanation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// Attachment type identifier.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub attachment_type: Option<String>,
    /// Where to fetch it (required; an absolute `https` URL, anything else is
    /// refused at parse time).
    pub url: String,
    /// Token for fetching it, kept out of `Debug`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<AttachmentAccessToken>,
    /// When it stops being available (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Digest of the content (required).
    pub digest: Digest,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The digest of an external attachment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Digest {
    /// Hash algorithm, e.g. `sha-256` (required).
    pub alg: String,
    /// Base64 hash bytes (required).
    pub value: String,
    /// Members not modelled here, as received.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The access token of an external attachment: a bearer secret, shown as `<redacted>` by
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AttachmentAccessToken(String);

impl AttachmentAccessToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token, for the `Authorization` header only.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AttachmentAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AttachmentAccessToken(<redacted>)")
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Reads the members of one JSON object, removing those it models; what remains is `other`.
/// A modelled optional member sent as `null` is left in `other`, so it round-trips.
struct Obj<'a> {
    map: Map<String, Value>,
    path: String,
    limits: &'a AssuranceLimits,
}

impl<'a> Obj<'a> {
    fn new(v: Value, path: String, limits: &'a AssuranceLimits) -> Result<Self, AssuranceError> {
        match v {
            Value::Object(map) => {
                if map.len() > limits.max_members {
                    return Err(AssuranceError::TooMany {
                        path,
                        max: limits.max_members,
                    });
                }
                Ok(Self { map, path, limits })
            }
            other => Err(AssuranceError::WrongType {
                path,
                expected: "object",
                found: json_type(&other),
            }),
        }
    }

    fn sub(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// The member's value, removed, unless absent or `null`.
    fn take(&mut self, key: &str) -> Option<Value> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(_) => self.map.remove(key),
        }
    }

    fn opt_str(&mut self, key: &str) -> Result<Option<String>, AssuranceError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => {
                if s.len() > self.limits.max_string_bytes {
                    return Err(AssuranceError::TooLong {
                        path: self.sub(key),
                        max: self.limits.max_string_bytes,
                    });
                }
                Ok(Some(s))
            }
            Some(other) => Err(AssuranceError::WrongType {
                path: self.sub(key),
                expected: "string",
                found: json_type(&other),
            }),
        }
    }

    fn req_str(&mut self, key: &str) -> Result<String, AssuranceError> {
        self.opt_str(key)?.ok_or_else(|| AssuranceError::Missing {
            path: self.sub(key),
        })
    }

    fn opt_i64(&mut self, key: &str) -> Result<Option<i64>, AssuranceError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) => Ok(Some(n)),
                None => {
                    let path = self.sub(key);
                    // Keep a non-integer number as received rather than fail on it.
                    if v.is_number() {
                        self.map.insert(key.to_owned(), v);
                        Ok(None)
                    } else {
                        Err(AssuranceError::WrongType {
                            path,
                            expected: "integer",
                            found: json_type(&v),
                        })
                    }
                }
            },
        }
    }

    /// An object member kept as a JSON map (claims, derived claims, metadata), depth-checked.
    fn opt_map(&mut self, key: &str) -> Result<Option<Map<String, Value>>, AssuranceError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Object(m)) => {
                let path = self.sub(key);
                check_value_limits(&m, &path, self.limits)?;
                Ok(Some(m))
            }
            Some(other) => Err(AssuranceError::WrongType {
                path: self.sub(key),
                expected: "object",
                found: json_type(&other),
            }),
        }
    }

    fn opt_obj<T>(
        &mut self,
        key: &str,
        f: impl FnOnce(Obj<'a>) -> Result<T, AssuranceError>,
    ) -> Result<Option<T>, AssuranceError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => {
                let o = Obj::new(v, self.sub(key), self.limits)?;
                f(o).map(Some)
            }
        }
    }

    fn opt_arr<T>(
        &mut self,
        key: &str,
        mut f: impl FnMut(Value, String, &'a AssuranceLimits) -> Result<T, AssuranceError>,
    ) -> Result<Option<Vec<T>>, AssuranceError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(a)) => {
                if a.len() > self.limits.max_array_len {
                    return Err(AssuranceError::TooMany {
                        path: self.sub(key),
                        max: self.limits.max_array_len,
                    });
                }
                let mut out = Vec::with_capacity(a.len());
                for (i, v) in a.into_iter().enumerate() {
                    out.push(f(v, format!("{}.{key}[{i}]", self.path), self.limits)?);
                }
                Ok(Some(out))
            }
            Some(other) => Err(AssuranceError::WrongType {
                path: self.sub(key),
                expected: "array",
                found: json_type(&other),
            }),
        }
    }

    /// The remaining members, depth-checked.
    fn rest(self) -> Result<Map<String, Value>, AssuranceError> {
        check_value_limits(&self.map, &self.path, self.limits)?;
        Ok(self.map)
    }
}

/// Checks depth, array lengths and member counts of a JSON map without recursion.
pub(super) fn check_value_limits(
    map: &Map<String, Value>,
    path: &str,
    limits: &AssuranceLimits,
) -> Result<(), AssuranceError> {
    let mut stack: Vec<(&Value, usize)> = map.values().map(|v| (v, 1)).collect();
    if map.len() > limits.max_members {
        return Err(AssuranceError::TooMany {
            path: path.to_owned(),
            max: limits.max_members,
        });
    }
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Object(m) => {
                if depth >= limits.max_depth {
                    return Err(AssuranceError::TooDeep {
                        path: path.to_owned(),
                        max: limits.max_depth,
                    });
                }
                if m.len() > limits.max_members {
                    return Err(AssuranceError::TooMany {
                        path: path.to_owned(),
                        max: limits.max_members,
                    });
                }
                stack.extend(m.values().map(|v| (v, depth + 1)));
            }
            Value::Array(a) => {
                if depth >= limits.max_depth {
                    return Err(AssuranceError::TooDeep {
                        path: path.to_owned(),
                        max: limits.max_depth,
                    });
                }
                if a.len() > limits.max_array_len {
                    return Err(AssuranceError::TooMany {
                        path: path.to_owned(),
                        max: limits.max_array_len,
                    });
                }
                stack.extend(a.iter().map(|v| (v, depth + 1)));
            }
            Value::String(s) if s.len() > limits.max_string_bytes => {
                return Err(AssuranceError::TooLong {
                    path: path.to_owned(),
                    max: limits.max_string_bytes,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

pub(super) fn parse_element(
    v: Value,
    path: &str,
    limits: &AssuranceLimits,
) -> Result<VerifiedClaims, AssuranceError> {
    let mut o = Obj::new(v, path.to_owned(), limits)?;
    let verification = o
        .opt_obj("verification", parse_verification)?
        .ok_or_else(|| AssuranceError::Missing {
            path: o.sub("verification"),
        })?;
    let claims = o
        .opt_map("claims")?
        .ok_or_else(|| AssuranceError::Missing {
            path: o.sub("claims"),
        })?;
    Ok(VerifiedClaims {
        verification,
        claims,
        other: o.rest()?,
    })
}

fn parse_verification(mut o: Obj<'_>) -> Result<Verification, AssuranceError> {
    let trust_framework = o.req_str("trust_framework")?;
    let assurance_level = o.opt_str("assurance_level")?;
    let assurance_process = o.opt_obj("assurance_process", |mut o| {
        Ok(AssuranceProcess {
            policy: o.opt_str("policy")?,
            procedure: o.opt_str("procedure")?,
            assurance_details: o.opt_arr("assurance_details", |v, p, l| {
                let mut o = Obj::new(v, p, l)?;
                Ok(AssuranceDetail {
                    assurance_type: o.opt_str("assurance_type")?,
                    assurance_classification: o.opt_str("assurance_classification")?,
                    evidence_ref: o.opt_arr("evidence_ref", |v, p, l| {
                        let mut o = Obj::new(v, p, l)?;
                        Ok(EvidenceRef {
                            check_id: o.req_str("check_id")?,
                            evidence_metadata: o.opt_map("evidence_metadata")?,
                            other: o.rest()?,
                        })
                    })?,
                    other: o.rest()?,
                })
            })?,
            other: o.rest()?,
        })
    })?;
    let time = o.opt_str("time")?;
    if let Some(t) = &time {
        super::parse_verification_time(t).map_err(|reason| AssuranceError::InvalidTime {
            path: o.sub("time"),
            reason,
        })?;
    }
    let verification_process = o.opt_str("verification_process")?;
    let evidence = o.opt_arr("evidence", parse_evidence)?;
    Ok(Verification {
        trust_framework,
        assurance_level,
        assurance_process,
        time,
        verification_process,
        evidence,
        other: o.rest()?,
    })
}

fn parse_check_details(o: &mut Obj<'_>) -> Result<Option<Vec<CheckDetail>>, AssuranceError> {
    o.opt_arr("check_details", |v, p, l| {
        let mut o = Obj::new(v, p, l)?;
        Ok(CheckDetail {
            check_method: o.req_str("check_method")?,
            organization: o.opt_str("organization")?,
            check_id: o.opt_str("check_id")?,
            time: o.opt_str("time")?,
            other: o.rest()?,
        })
    })
}

fn parse_party(mut o: Obj<'_>) -> Result<Party, AssuranceError> {
    Ok(Party {
        name: o.opt_str("name")?,
        country_code: o.opt_str("country_code")?,
        jurisdiction: o.opt_str("jurisdiction")?,
        other: o.rest()?,
    })
}

fn parse_attachments(o: &mut Obj<'_>) -> Result<Option<Vec<Attachment>>, AssuranceError> {
    o.opt_arr("attachments", |v, p, l| {
        let mut o = Obj::new(v, p, l)?;
        if o.map.contains_key("content") {
            Ok(Attachment::Embedded(EmbeddedAttachment {
                desc: o.opt_str("desc")?,
                attachment_type: o.opt_str("type")?,
                content_type: o.req_str("content_type")?,
                content: o.req_str("content")?,
                other: o.rest()?,
            }))
        } else if o.map.contains_key("url") {
            Ok(Attachment::External(ExternalAttachment {
                desc: o.opt_str("desc")?,
                attachment_type: o.opt_str("type")?,
                url: {
                    let url = o.req_str("url")?;
                    check_attachment_url(&url).map_err(|()| {
                        AssuranceError::InsecureAttachmentUrl { path: o.sub("url") }
                    })?;
                    url
                },
                access_token: o.opt_str("access_token")?.map(AttachmentAccessToken),
                exp: o.opt_i64("exp")?,
                digest: o
                    .opt_obj("digest", |mut o| {
                        Ok(Digest {
                            alg: o.req_str("alg")?,
                            value: o.req_str("value")?,
                            other: o.rest()?,
                        })
                    })?
                    .ok_or_else(|| AssuranceError::Missing {
                        path: o.sub("digest"),
                    })?,
                other: o.rest()?,
            }))
        } else {
            Err(AssuranceError::Missing {
                path: format!("{}.(content|url)", o.path),
            })
        }
    })
}

/// An attachment `url` must be an absolute `https` URL with a host and no
/// control or bidirectional formatting characters: the RP fetches it (with
/// the attachment's access token) or shows it as a link, so `javascript:`,
/// `data:`, `file:` and plain `http:` are refused.
fn check_attachment_url(s: &str) -> Result<(), ()> {
    if s.chars()
        .any(|c| c.is_control() || crate::error::is_bidi_control(c))
    {
        return Err(());
    }
    match url::Url::parse(s) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => Ok(()),
        _ => Err(()),
    }
}

fn parse_evidence(
    v: Value,
    path: String,
    limits: &AssuranceLimits,
) -> Result<Evidence, AssuranceError> {
    let mut o = Obj::new(v, path, limits)?;
    let ty = match o.map.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(AssuranceError::WrongType {
                path: o.sub("type"),
                expected: "string",
                found: json_type(other),
            });
        }
        None => {
            return Err(AssuranceError::Missing {
                path: o.sub("type"),
            });
        }
    };
    let known = matches!(
        ty.as_str(),
        "document" | "electronic_record" | "vouch" | "electronic_signature"
    );
    if known {
        o.map.remove("type");
    }
    Ok(match ty.as_str() {
        "document" => Evidence::Document(DocumentEvidence {
            check_details: parse_check_details(&mut o)?,
            document_details: o.opt_obj("document_details", |mut o| {
                Ok(DocumentDetails {
                    document_type: o.req_str("type")?,
                    document_number: o.opt_str("document_number")?,
                    serial_number: o.opt_str("serial_number")?,
                    date_of_issuance: o.opt_str("date_of_issuance")?,
                    date_of_expiry: o.opt_str("date_of_expiry")?,
                    issuer: o.opt_obj("issuer", parse_party)?,
                    other: o.rest()?,
                })
            })?,
            attachments: parse_attachments(&mut o)?,
            derived_claims: o.opt_map("derived_claims")?,
            other: o.rest()?,
        }),
        "electronic_record" => Evidence::ElectronicRecord(ElectronicRecordEvidence {
            check_details: parse_check_details(&mut o)?,
            record: o.opt_obj("record", |mut o| {
                Ok(ElectronicRecord {
                    record_type: o.req_str("type")?,
                    created_at: o.opt_str("created_at")?,
                    date_of_expiry: o.opt_str("date_of_expiry")?,
                    source: o.opt_obj("source", parse_party)?,
                    other: o.rest()?,
                })
            })?,
            attachments: parse_attachments(&mut o)?,
            derived_claims: o.opt_map("derived_claims")?,
            other: o.rest()?,
        }),
        "vouch" => Evidence::Vouch(VouchEvidence {
            check_details: parse_check_details(&mut o)?,
            attestation: o.opt_obj("attestation", |mut o| {
                Ok(Attestation {
                    attestation_type: o.req_str("type")?,
                    reference_number: o.opt_str("reference_number")?,
                    date_of_issuance: o.opt_str("date_of_issuance")?,
                    date_of_expiry: o.opt_str("date_of_expiry")?,
                    voucher: o.opt_obj("voucher", parse_party)?,
                    other: o.rest()?,
                })
            })?,
            attachments: parse_attachments(&mut o)?,
            derived_claims: o.opt_map("derived_claims")?,
            other: o.rest()?,
        }),
        "electronic_signature" => Evidence::ElectronicSignature(ElectronicSignatureEvidence {
            signature_type: o.req_str("signature_type")?,
            issuer: o.req_str("issuer")?,
            serial_number: o.req_str("serial_number")?,
            created_at: o.opt_str("created_at")?,
            attachments: parse_attachments(&mut o)?,
            derived_claims: o.opt_map("derived_claims")?,
            other: o.rest()?,
        }),
        _ => Evidence::Other(o.rest()?),
    })
}
