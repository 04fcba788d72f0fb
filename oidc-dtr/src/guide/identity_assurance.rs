//! Identity assurance: asking for verified claims, and checking what comes
//! back.
//!
//! # What the specifications say
//!
//! Deferred authentications exist mostly for identity verification: the OP
//! checks a passport, a bank record or a notary's attestation, and then
//! tells the RP not only *who* the user is but *how well* that was
//! verified. *OpenID Connect for Identity Assurance 1.0* (with the *OpenID
//! Identity Assurance Schema Definition 1.0*) carries this in
//! `verified_claims`: the claims the OP verified (`given_name`,
//! `birthdate`, ...) with their `verification`: under which
//! `trust_framework` (`de_aml`, `eidas`, ...), at which `assurance_level`,
//! when (`time`), and on what `evidence` (documents, electronic records,
//! vouches, electronic signatures).
//!
//! The RP asks for them in the `claims` request parameter (OpenID Connect
//! Core §5.5) and may constrain the verification it accepts: the trust
//! frameworks, the assurance levels, the evidence types, a `max_age` for
//! the verification. The OP answers with what it has; it is up to the RP
//! to check that the answer matches the request.
//!
//! The OIDC DTR draft adds the `interim_id_token`: an ID token at exchange
//! time whose claims the OP has not verified yet. The draft leaves it to
//! the OP how it marks what is verified; `verified_claims` is the standard
//! way.
//!
//! # What the SDK does
//!
//! - **Requesting.** [`ClaimsRequest`](crate::assurance::ClaimsRequest) and
//!   [`VerifiedClaimsRequest`](crate::assurance::VerifiedClaimsRequest) build the
//!   `claims` parameter in types. Hand it to
//!   [`AuthorizationRequestBuilder::claims_request`](crate::client::AuthorizationRequestBuilder::claims_request):
//!   it is checked against the OP's metadata first
//!   (`verified_claims_supported`, `trust_frameworks_supported`,
//!   `evidence_supported`, `claims_in_verified_claims_supported`, ...), so
//!   a request the OP cannot honour fails at once with a
//!   [`ConfigError`](crate::error::ConfigError) naming what is missing, not days
//!   later.
//! - **Receiving.** [`ReceivedClaims`](crate::assurance::ReceivedClaims) splits an ID
//!   token's claims (or a UserInfo response) into the unverified claims
//!   and typed [`VerifiedClaims`](crate::assurance::VerifiedClaims). The two are never
//!   merged: a top-level `given_name` and a verified one are read through
//!   different methods. `verified_claims` found anywhere but the two places
//!   the specification allows is refused. Parsing is bounded
//!   ([`AssuranceLimits`](crate::assurance::AssuranceLimits)) against hostile input,
//!   and members not modelled are kept, so nothing is lost.
//! - **Checking.** [`TokenSet::verified_claims`](crate::TokenSet::verified_claims)
//!   (or [`ClaimsRequest::check_received`](crate::assurance::ClaimsRequest::check_received),
//!   or [`check_verified_claims`](crate::assurance::check_verified_claims)) matches
//!   what came back with what was asked for: every trust framework,
//!   assurance level and evidence type must be one the request allowed,
//!   and the verification no older than its `max_age`. Verified claims
//!   nobody asked for are returned apart
//!   ([`CheckedVerifiedClaims::unrequested`](crate::assurance::CheckedVerifiedClaims::unrequested)).
//!
//! A failed assurance check does **not** fail the authentication: the ID
//! token passed OpenID Connect validation, the tokens stay usable and
//! stored. The check fails every time you ask, with a typed
//! [`AssuranceError`](crate::assurance::AssuranceError). Treat that as "no verified
//! identity".
//!
//! # What your application does
//!
//! - Decide what you need verified, and under which rules (your regulator's
//!   trust framework, an assurance level, evidence types, an age).
//! - Read verified values only through the checked result, never the
//!   top-level claims, which the OP did not vouch for.
//! - Treat claims of an `interim_id_token` as unverified unless they come
//!   in `verified_claims`.
//!
//! # Example
//!
//! The check refuses an answer under a trust framework that was not asked
//! for:
//!
//! ```
//! use oidc_dtr::{assurance::{AssuranceLimits, ClaimsRequest, ClaimsTarget, EvidenceRequest}};
//! use oidc_dtr::{assurance::{ReceivedClaims, VerifiedClaimsRequest}};
//! use serde_json::json;
//!
//! // Name and birthdate, verified under German anti-money-laundering rules,
//! // on an identity card or passport, within the last year.
//! let request = ClaimsRequest::new().verified_claims_in(
//!     ClaimsTarget::IdToken,
//!     VerifiedClaimsRequest::new()
//!         .trust_framework("de_aml")
//!         .max_age(365 * 86_400)
//!         .evidence(EvidenceRequest::document().document_types(["idcard", "passport"]))
//!         .essential_claim("family_name")
//!         .claim("birthdate"),
//! );
//! let now = 1_790_000_000; // Unix seconds
//!
//! let id_token_claims = |trust_framework: &str| {
//!     json!({
//!         "sub": "248289761001",
//!         "verified_claims": {
//!             "verification": {
//!                 "trust_framework": trust_framework,
//!                 "time": "2026-09-01T10:00Z",
//!                 "evidence": [{"type": "document", "document_details": {"type": "passport"}}]
//!             },
//!             "claims": {"family_name": "Meier", "birthdate": "1956-01-28"}
//!         }
//!     })
//! };
//!
//! // What was asked for: the verified values, with their verification.
//! let claims = id_token_claims("de_aml");
//! let received = ReceivedClaims::from_claims(claims.as_object().unwrap(), &AssuranceLimits::default())?;
//! let checked = request.check_received(ClaimsTarget::IdToken, &received, now)?;
//! let (family_name, verification) = checked.get("family_name").unwrap();
//! assert_eq!(family_name, "Meier");
//! assert_eq!(verification.trust_framework, "de_aml");
//!
//! // Another trust framework: the OP's answer does not meet the request.
//! let claims = id_token_claims("uk_tfida");
//! let received = ReceivedClaims::from_claims(claims.as_object().unwrap(), &AssuranceLimits::default())?;
//! let refused = request.check_received(ClaimsTarget::IdToken, &received, now);
//! assert!(refused.is_err());
//! println!("no verified identity: {}", refused.unwrap_err());
//! # Ok::<(), oidc_dtr::assurance::AssuranceError>(())
//! ```
//!
//! With a client, the request travels through the whole flow and the check
//! runs on the tokens:
//!
//! ```no_run
//! # async fn f(client: oidc_dtr::DtrClient, request: oidc_dtr::assurance::ClaimsRequest, tokens: oidc_dtr::TokenSet) -> Result<(), oidc_dtr::Error> {
//! let (_url, _pending) = client.authorize().scope("profile").claims_request(request).build()?;
//! // ... callback, exchange, wait: Outcome::Tokens(tokens) ...
//! match tokens.verified_claims() {
//!     Ok(checked) => {
//!         if let Some((birthdate, v)) = checked.get("birthdate") {
//!             println!("born {birthdate}, verified under {}", v.trust_framework);
//!         }
//!     }
//!     Err(e) => println!("no verified identity: {e}"),
//! }
//! # Ok(()) }
//! ```
