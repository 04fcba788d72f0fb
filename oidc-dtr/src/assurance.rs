//! Identity assurance: requesting, receiving and checking `verified_claims`
//! (OpenID Connect for Identity Assurance 1.0).
//!
//! Deferred authentication exists for identity verification: the OP checks
//! a document, a bank record or a notary's attestation, and answers with
//! claims *and* how they were verified. This module is that half of the
//! SDK:
//!
//! - **asking**: [`ClaimsRequest`] and [`VerifiedClaimsRequest`] build the
//!   `claims` parameter (which claims, verified how, under which trust
//!   framework, with which evidence), checked against the OP's metadata
//!   before the request leaves ([`AssuranceUnsupported`]);
//! - **receiving**: [`parse_verified_claims`] and friends read
//!   `verified_claims` from an ID token or a UserInfo answer into
//!   [`VerifiedClaims`] ([`Verification`], [`Evidence`], [`Attachment`]),
//!   within [`AssuranceLimits`];
//! - **checking**: [`check_verified_claims`] compares what came back with
//!   what was asked ([`CheckedVerifiedClaims`], [`AssuranceError`]).
//!
//! The [identity assurance guide](crate::guide::identity_assurance) shows
//! the whole round trip.

pub use crate::proto::assurance::{
    AssuranceDetail, AssuranceError, AssuranceLimits, AssuranceProcess, AssuranceUnsupported,
    AssuredClaims, Attachment, AttachmentAccessToken, Attestation, CLAIMS_REQUEST_MAX_DEPTH,
    CheckDetail, CheckedVerifiedClaims, ClaimConstraint, ClaimsRequest, ClaimsTarget, Digest,
    DocumentDetails, DocumentEvidence, ElectronicRecord, ElectronicRecordEvidence,
    ElectronicSignatureEvidence, ElementRequest, EmbeddedAttachment, Evidence, EvidenceRef,
    EvidenceRequest, ExternalAttachment, PURPOSE_MAX_CHARS, PURPOSE_MIN_CHARS, Party,
    ReceivedClaims, TargetRequest, VERIFICATION_TIME_SKEW_SECS, VERIFIED_CLAIMS, Verification,
    VerificationRequest, VerifiedClaims, VerifiedClaimsRequest, VouchEvidence,
    check_verified_claims, find_misplaced_verified_claims, find_verified_claim,
    parse_verification_time, parse_verified_claims, parse_verified_claims_value,
};
