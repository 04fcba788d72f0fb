//! What a verification looks like to its user, built from the SDK's events.

use oidc_dtr::Outcome;

/// The state of one verification, as its pages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum View {
    /// The OP is still deciding.
    Pending {
        /// The OP's latest progress text, if it sent one.
        progress: Option<String>,
    },
    /// The OP verified the user; the ID token was validated.
    Verified {
        /// Who, for display (the `name` claim, else the subject).
        display_name: String,
        /// Validated claims to show, in order.
        claims: Vec<(String, String)>,
    },
    /// The OP said no.
    Denied {
        /// The OP's reason, if it gave one.
        reason: Option<String>,
    },
    /// The OP or the deadline ended it before a decision.
    Expired {
        /// What ended it.
        reason: String,
    },
    /// The user cancelled.
    Cancelled,
    /// It ended on an error (no secrets in the text).
    Failed {
        /// What went wrong.
        reason: String,
    },
}

impl View {
    /// Whether nothing will change any more.
    pub fn is_final(&self) -> bool {
        !matches!(self, View::Pending { .. })
    }

    /// A short machine-readable name ("pending", "verified", ...).
    pub fn kind(&self) -> &'static str {
        match self {
            View::Pending { .. } => "pending",
            View::Verified { .. } => "verified",
            View::Denied { .. } => "denied",
            View::Expired { .. } => "expired",
            View::Cancelled => "cancelled",
            View::Failed { .. } => "failed",
        }
    }

    /// The view of a finished authentication.
    pub(crate) fn of_outcome(outcome: &Outcome) -> View {
        match outcome {
            Outcome::Tokens(tokens) => {
                let c = tokens.claims();
                let mut claims = vec![
                    ("Subject".to_owned(), c.subject().to_owned()),
                    ("Issuer".to_owned(), c.issuer().to_owned()),
                ];
                for (label, value) in [
                    ("Name", c.name()),
                    ("Given name", c.given_name()),
                    ("Family name", c.family_name()),
                    ("Email", c.email()),
                    ("Birthdate", c.birthdate()),
                ] {
                    if let Some(v) = value {
                        claims.push((label.to_owned(), v.to_owned()));
                    }
                }
                if let Some(t) = c.auth_time() {
                    claims.push((
                        "Authenticated at (Unix time)".to_owned(),
                        t.as_secs().to_string(),
                    ));
                }
                View::Verified {
                    display_name: c.name().unwrap_or(c.subject()).to_owned(),
                    claims,
                }
            }
            Outcome::Denied { description } => View::Denied {
                reason: description.clone(),
            },
            Outcome::ExpiredByOp => View::Expired {
                reason: "The provider ended the verification before deciding.".into(),
            },
            Outcome::DeadlineReached { .. } => View::Expired {
                reason: "The provider did not decide in time.".into(),
            },
            Outcome::Cancelled => View::Cancelled,
            Outcome::Rejected(failure) => View::Failed {
                reason: failure.to_string(),
            },
            _ => View::Failed {
                reason: "The verification ended unexpectedly.".into(),
            },
        }
    }
}
