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
    /// Tokens were received, but the verified claims asked for
    /// (`--verified-claims`) were not delivered, or failed the checks: the
    /// identity is not verified.
    pub(crate) const UNVERIFIED: u8 = 8;
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

/// Whether a character must not reach a terminal as it is: C0 controls
/// (ESC, BEL, backspace, ...) and DEL, C1 controls (U+0080 to U+009F: CSI
/// U+009B drives many terminals), the bidirectional controls and isolates
/// (U+202A to U+202E, U+2066 to U+2069, U+200E, U+200F, U+061C) and the
/// other invisible format characters (zero-width joiners and spaces, word
/// joiner, BOM, soft hyphen, interlinear annotations, tag characters).
pub(crate) fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// The one function every string from outside (the OP's texts, claims,
/// URLs, error descriptions) goes through before it reaches the terminal,
/// in every output mode (JSON goes through [`json_line`], on the same
/// [`is_unsafe_char`]): line breaks and tabs become spaces, every other
/// character of [`is_unsafe_char`] is shown escaped as `\u{..}` (visible,
/// inert). Nothing is cut: URLs stay whole ([`one_line`] cuts).
pub(crate) fn term_safe(s: &str) -> String {
    term_safe_cut(s, usize::MAX)
}

/// [`term_safe`], cut at 300 characters (`…`): for free text from outside
/// (progress texts, error descriptions) on one line.
pub(crate) fn one_line(s: &str) -> String {
    term_safe_cut(s, 300)
}

fn term_safe_cut(s: &str, limit: usize) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        if i == limit {
            out.push('…');
            break;
        }
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if is_unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// A JSON document as one terminal-safe line: serialised, then every
/// character of [`is_unsafe_char`] inside it written as a `\uXXXX` escape
/// (serde_json escapes only the C0 controls). A JSON reader gets the very
/// same strings back; a terminal gets no control sequence.
pub(crate) fn json_line(v: &serde_json::Value) -> String {
    let text = v.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe_char(c) {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
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
        assert_eq!(one_line("a\nb\x1b[2Jc\r"), "a b\\u{1b}[2Jc ");
        let long = "x".repeat(400);
        assert_eq!(one_line(&long).chars().count(), 301);
        // Bidi override, C1 CSI, ESC, isolates, zero-width and tag characters.
        let evil =
            "ok\u{202E}gnp.exe\u{9b}31m\u{1b}]0;t\u{7}\u{2066}x\u{2069}\u{200B}\u{E0041}\u{FEFF}";
        let safe = one_line(evil);
        assert!(!safe.chars().any(is_unsafe_char), "{safe:?}");
        assert!(
            safe.contains("\\u{202e}") && safe.contains("\\u{9b}"),
            "{safe}"
        );
        assert!(safe.starts_with("ok"));
        // Ordinary text of any script passes untouched.
        let url = format!("https://op.example/authorize?x={}", "a".repeat(500));
        assert_eq!(term_safe(&url), url, "URLs are not cut");
        assert_eq!(one_line("Müller, 李, عربي ✓"), "Müller, 李, عربي ✓");
    }

    #[test]
    fn json_lines_escape_what_serde_json_leaves_raw() {
        let v = serde_json::json!({"d": "a\u{202E}b\u{9b}c\u{1b}d\u{E0041}é"});
        let line = json_line(&v);
        assert!(!line.chars().any(is_unsafe_char), "{line:?}");
        assert!(
            line.contains("\\u202e") && line.contains("\\u009b"),
            "{line}"
        );
        assert!(line.contains("\\udb40\\udc41"), "a surrogate pair: {line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, v, "a JSON reader gets the same strings");
    }

    #[test]
    fn errors_are_one_line_with_the_fix() {
        let e = CliError::usage("no issuer\ngiven", "pass --issuer");
        assert_eq!(e.to_string(), "no issuer given (fix: pass --issuer)");
        assert_eq!(e.code, exit::USAGE);
    }
}
