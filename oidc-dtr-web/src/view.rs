//! What a verification looks like to its user, built from the SDK's events.

use oidc_dtr::Outcome;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A Unix time for people: "6 Dec 2026, 10:15 UTC".
pub(crate) fn human_utc(secs: u64) -> String {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok());
    match t {
        Some(t) => format!(
            "{} {} {}, {:02}:{:02} UTC",
            t.day(),
            MONTHS[usize::from(u8::from(t.month())) - 1],
            t.year(),
            t.hour(),
            t.minute()
        ),
        None => format!("{secs} (Unix time)"),
    }
}

/// The state of one verification, as its pages show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum View {
    /// The OP is still deciding.
    Pending {
        /// The OP's latest progress text, if it sent one.
        progress: Option<String>,
        /// Why the last check with the OP failed, while the SDK retries it
        /// (its [`PollEvent::Retrying`](oidc_dtr::PollEvent::Retrying));
        /// `None` once the OP answers again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retrying: Option<String>,
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
                    claims.push(("Authenticated at".to_owned(), human_utc(t.as_secs())));
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

#[cfg(test)]
mod tests {
    use super::human_utc;

    #[test]
    fn times_are_shown_as_dates_in_utc() {
        assert_eq!(human_utc(0), "1 Jan 1970, 00:00 UTC");
        assert_eq!(human_utc(1_796_538_180), "6 Dec 2026, 06:23 UTC");
        assert_eq!(human_utc(951_782_400), "29 Feb 2000, 00:00 UTC");
        assert_eq!(human_utc(u64::MAX), format!("{} (Unix time)", u64::MAX));
    }
}
