//! Exit codes and the one-line errors `dtr` prints.

use std::fmt;

/// The exit codes `dtr` documents (see `dtr --help` and the README).
pub(crate) mod exit {
    /// Tokens were received (or the command did what it was asked).
    pub(crate) const OK: u8 = 0;
    /// An error: network, OP, store, or an answer that failed validation.
    pub(crate) const ERROR: u8 = 1;
    /// A usage or configuration error: fix the command line or the config.
    pub(crate) const USAGE: u8 = 2;
    /// The OP denied the verification (`access_denied`).
    pub(crate) const DENIED: u8 = 3;
    /// The OP said the verification expired (`expired_token`).
    pub(crate) const EXPIRED: u8 = 4;
    /// The deadline passed before the OP decided.
    pub(crate) const DEADLINE: u8 = 5;
    /// The verification was cancelled.
    pub(crate) const CANCELLED: u8 = 6;
    /// Still pending (`--no-wait`): resume with `dtr wait`.
    pub(crate) const PENDING: u8 = 7;
    /// Interrupted (Ctrl-C); a pending verification stays pending.
    pub(crate) const INTERRUPTED: u8 = 130;
}

/// An error that ends the command: what went wrong, how to fix it, and the
/// exit code. Never holds a secret: messages are built from library errors
/// (which redact secrets) and from our own text.
#[derive(Debug)]
pub(crate) struct CliError {
    /// What went wrong.
    pub cause: String,
    /// What to do about it.
    pub fix: Option<String>,
    /// The exit code.
    pub code: u8,
}

impl CliError {
    /// A runtime error (exit 1).
    pub(crate) fn runtime(cause: impl Into<String>, fix: impl Into<String>) -> Self {
        CliError {
            cause: cause.into(),
            fix: Some(fix.into()),
            code: exit::ERROR,
        }
    }

    /// A usage or configuration error (exit 2).
    pub(crate) fn usage(cause: impl Into<String>, fix: impl Into<String>) -> Self {
        CliError {
            cause: cause.into(),
            fix: Some(fix.into()),
            code: exit::USAGE,
        }
    }

    /// Wraps a library error with a fix that fits where it happened.
    pub(crate) fn from_lib(context: &str, e: &oidc_dtr::Error) -> Self {
        use oidc_dtr::Error as E;
        let (code, fix) = match e {
            E::Config(_) => (
                exit::USAGE,
                "check the flags, DTR_* variables and the profile in the config file",
            ),
            E::Discovery(_) => (
                exit::USAGE,
                "check --issuer (DTR_ISSUER): it must be the OP's exact issuer URL",
            ),
            E::Http(_) => (
                exit::ERROR,
                "check the network and that the OP is up, then retry",
            ),
            E::OAuth(_) => (
                exit::ERROR,
                "check --client-id and the client credentials registered at the OP",
            ),
            E::Callback(_) => (
                exit::ERROR,
                "start again with `dtr verify`; do not reuse an old browser tab",
            ),
            E::Validation(_) => (
                exit::ERROR,
                "the OP's answer failed validation; report it to the OP's operator",
            ),
            E::Store(_) => (
                exit::ERROR,
                "check the state directory (--state-dir, DTR_STATE_DIR) and its key file",
            ),
            _ => (
                exit::ERROR,
                "retry; if it persists, run with RUST_LOG=debug",
            ),
        };
        CliError {
            cause: format!("{context}: {e}"),
            fix: Some(fix.into()),
            code,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line: newlines in causes (from OP texts) are flattened.
        let cause = one_line(&self.cause);
        match &self.fix {
            Some(fix) => write!(f, "{cause} (fix: {})", one_line(fix)),
            None => f.write_str(&cause),
        }
    }
}

/// Text from outside (an OP's progress or error description) made safe to
/// print on one terminal line: control characters (escape sequences,
/// newlines) are replaced, and it is cut at 300 characters.
pub(crate) fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// Converts io errors with a context.
pub(crate) fn io(context: impl fmt::Display, e: std::io::Error) -> CliError {
    CliError::runtime(
        format!("{context}: {e}"),
        "check that the path exists and that you may read and write it",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_cannot_break_the_line_or_drive_the_terminal() {
        assert_eq!(one_line("a\nb\x1b[2Jc\r"), "a b [2Jc ");
        let long = "x".repeat(400);
        assert_eq!(one_line(&long).chars().count(), 301);
    }

    #[test]
    fn errors_are_one_line_with_the_fix() {
        let e = CliError::usage("no issuer\ngiven", "pass --issuer");
        assert_eq!(e.to_string(), "no issuer given (fix: pass --issuer)");
        assert_eq!(e.code, exit::USAGE);
    }
}
