//! What `dtr` shows: the live progress line on stderr, and outcomes on
//! stdout (JSON or a short human summary).

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::error::{exit, json_line, one_line};
use crate::lib_api::{AssuredClaims, ClaimsTarget, Outcome, PollStatus, RetryCause, UnixTime};
use crate::state::Status;

/// How `dtr` talks to the person (or script) running it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ui {
    /// stderr is a terminal and `--quiet` is off: draw the live line.
    pub live: bool,
    /// `--quiet`: only errors on stderr.
    pub quiet: bool,
    /// Outcomes as JSON on stdout (`--json`, or stdout is not a terminal).
    pub json: bool,
    /// Colour the status words on stdout (see [`colour_wanted`]).
    pub colour_out: bool,
    /// Colour the status words on stderr.
    pub colour_err: bool,
}

/// Whether a stream gets colour: it is a terminal, `TERM` is not `dumb`,
/// and `NO_COLOR` is unset or empty (<https://no-color.org>).
pub(crate) fn colour_wanted(is_terminal: bool) -> bool {
    is_terminal
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The colours of status words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Colour {
    /// Success.
    Green,
    /// Waiting, or a result that needs a look.
    Yellow,
    /// A refusal or failure.
    Red,
}

/// `word` in `colour` when `on` (SGR codes; only our own words are
/// painted, never text from outside).
pub(crate) fn paint(on: bool, colour: Colour, word: &str) -> String {
    if !on {
        return word.to_owned();
    }
    let code = match colour {
        Colour::Green => 32,
        Colour::Yellow => 33,
        Colour::Red => 31,
    };
    format!("\x1b[1;{code}m{word}\x1b[0m")
}

/// The colour of an index status.
pub(crate) fn status_colour(s: Status) -> Colour {
    match s {
        Status::Tokens => Colour::Green,
        Status::Pending | Status::Cancelled | Status::Deadline => Colour::Yellow,
        Status::Denied | Status::Expired | Status::Rejected => Colour::Red,
    }
}

impl Ui {
    /// A line of narration on stderr (not under `--quiet`).
    pub(crate) fn say(&self, line: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", line.as_ref());
        }
    }
}

/// Seconds since the epoch, now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `1h02m03s`, `4m05s`, `6s`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// `2026-11-30 10:41:13 UTC`.
pub(crate) fn fmt_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The deadline and how far away it is.
pub(crate) fn fmt_deadline(deadline: u64, now: u64) -> String {
    if deadline > now {
        format!(
            "{} (in {})",
            fmt_time(deadline),
            fmt_duration(Duration::from_secs(deadline - now))
        )
    } else {
        format!("{} (passed)", fmt_time(deadline))
    }
}

/// The width the live line is cut to when the terminal's is not known to
/// be wider: the times always fit in it (the progress bar then cuts the
/// line at the terminal's width, from the end: the OP's text goes first).
const LIVE_WIDTH: usize = 78;

/// The room for the live line's message: the terminal's width less the
/// spinner, or [`LIVE_WIDTH`] when unknown.
fn live_width() -> usize {
    console::Term::stderr()
        .size_checked()
        .map_or(LIVE_WIDTH, |(_, cols)| usize::from(cols).saturating_sub(2))
}

/// `deadline in 4m58s` (or `deadline passed`): short enough for the live
/// line; the absolute time is printed once when the wait starts.
pub(crate) fn fmt_deadline_short(deadline: u64, now: u64) -> String {
    if deadline > now {
        format!(
            "deadline in {}",
            fmt_duration(Duration::from_secs(deadline - now))
        )
    } else {
        "deadline passed".to_owned()
    }
}

/// The live line's text: the times first (never cut), then the OP's
/// progress text (already made terminal-safe), cut with `…` so the whole
/// fits in `width` characters.
pub(crate) fn live_message(times: &[String], text: Option<&str>, width: usize) -> String {
    let mut line = times.join(" · ");
    let text = text.unwrap_or("waiting for the OP");
    let room = width.saturating_sub(line.chars().count() + 3);
    if room >= 2 {
        line.push_str(" · ");
        if text.chars().count() <= room {
            line.push_str(text);
        } else {
            line.extend(text.chars().take(room - 1));
            line.push('…');
        }
    }
    line
}

/// The width of " · ", the live line's separator.
const SEPARATOR_WIDTH: usize = 3;

/// A retry cause in a few words (the status code, the failure's kind).
fn short_cause(cause: RetryCause) -> String {
    match cause {
        RetryCause::ServerError { status: Some(s) } => format!("HTTP {s}"),
        RetryCause::TooManyRequests => "HTTP 429".to_owned(),
        RetryCause::Connect => "connection failure".to_owned(),
        RetryCause::Timeout => "timeout".to_owned(),
        RetryCause::NotOAuth => "non-OAuth answer".to_owned(),
        RetryCause::ServerError { status: None } => "server error".to_owned(),
        _ => "error".to_owned(),
    }
}

/// The live line's entries while a failed poll is retried:
/// `retrying after <cause> · next attempt in <n>`, in shorter words when
/// the line (whose other entries take `fixed` characters) would not fit in
/// `width`.
pub(crate) fn retry_entries(
    cause: RetryCause,
    next_in: &str,
    width: usize,
    fixed: usize,
) -> Vec<String> {
    let long = one_line(&cause.to_string());
    let short = short_cause(cause);
    let forms = [
        [
            format!("retrying after {long}"),
            format!("next attempt in {next_in}"),
        ],
        [
            format!("retrying after {short}"),
            format!("next attempt in {next_in}"),
        ],
        [
            format!("retrying after {short}"),
            format!("next in {next_in}"),
        ],
        [format!("retrying after {short}"), format!("in {next_in}")],
    ];
    let len = |f: &[String; 2]| f[0].chars().count() + f[1].chars().count() + SEPARATOR_WIDTH;
    let pick = forms
        .iter()
        .position(|f| fixed + len(f) <= width)
        .unwrap_or(forms.len() - 1);
    forms[pick].to_vec()
}

/// The live progress of one wait.
pub(crate) struct Progress {
    ui: Ui,
    bar: Option<ProgressBar>,
    started: u64,
    text: Option<String>,
    /// The last known poll status, and when it was read.
    status: Option<(PollStatus, UnixTime)>,
}

impl Progress {
    /// Starts showing progress of a verification started at `started`.
    pub(crate) fn start(
        ui: Ui,
        started: UnixTime,
        deadline: Option<u64>,
        interval: Duration,
    ) -> Self {
        let bar = ui.live.then(spinner);
        let p = Progress {
            ui,
            bar,
            started: started.as_secs(),
            text: None,
            status: None,
        };
        if p.bar.is_none() {
            let deadline = deadline
                .map(|d| format!(", deadline {}", fmt_deadline(d, now_secs())))
                .unwrap_or_default();
            ui.say(format!(
                "Waiting for the OP's decision (polling every {}{deadline}).",
                fmt_duration(interval)
            ));
        }
        p
    }

    /// A new progress text from the OP.
    pub(crate) fn set_text(&mut self, text: &str) {
        let text = one_line(text);
        if self.text.as_deref() == Some(text.as_str()) {
            return;
        }
        if self.bar.is_none() {
            let elapsed =
                fmt_duration(Duration::from_secs(now_secs().saturating_sub(self.started)));
            self.ui.say(format!("OP: {text} (after {elapsed})"));
        }
        self.text = Some(text);
    }

    /// A failed poll the engine retries at `next_attempt`: without a live
    /// line (which shows it from the status), one plain line.
    pub(crate) fn retrying(&self, cause: RetryCause, next_attempt: UnixTime) {
        if self.bar.is_some() {
            return;
        }
        let now = UnixTime::from_system_time(SystemTime::now());
        let wait = Duration::from_millis(
            next_attempt
                .as_millis()
                .saturating_sub(now.as_millis())
                .saturating_add(999),
        );
        self.ui.say(format!(
            "Poll failed ({}); retrying in {}.",
            one_line(&cause.to_string()),
            fmt_duration(wait)
        ));
    }

    /// A fresh poll status (read when an event arrived), then a redraw.
    pub(crate) fn set_status(&mut self, status: Option<PollStatus>) {
        let now = UnixTime::from_system_time(SystemTime::now());
        self.status = status.map(|s| (s, now));
        self.tick();
    }

    /// Redraws the live line from the last known poll status: only the
    /// clock moves (the elapsed time, the countdown to a poll known to be
    /// due); nothing is asked of the client.
    pub(crate) fn tick(&mut self) {
        let Some(bar) = &self.bar else { return };
        let now_ms = UnixTime::from_system_time(SystemTime::now());
        let now = now_ms.as_secs();
        let mut times = vec![format!(
            "elapsed {}",
            fmt_duration(Duration::from_secs(now.saturating_sub(self.started)))
        )];
        if let Some((st, read_at)) = &self.status {
            // The status is as of the last event: once the poll it knew
            // about is past, say how often the engine polls instead.
            let fresh = now_ms.as_millis().saturating_sub(read_at.as_millis()) < 2000;
            let until_next = |next: UnixTime| {
                fmt_duration(Duration::from_millis(
                    next.as_millis().saturating_sub(now_ms.as_millis()) + 999,
                ))
            };
            let deadline = fmt_deadline_short(st.deadline.as_secs(), now);
            match (st.in_flight, st.next_poll, st.last_failure) {
                (true, _, _) if fresh => times.push("polling now".to_owned()),
                // A failed poll the engine retries: why, and when.
                (false, Some(next), Some(cause)) if next > now_ms => {
                    let width = live_width();
                    let fixed = times.join(" · ").chars().count()
                        + deadline.chars().count()
                        + 2 * SEPARATOR_WIDTH;
                    times.extend(retry_entries(cause, &until_next(next), width, fixed));
                }
                (false, Some(next), _) if next > now_ms => {
                    times.push(format!("next poll in {}", until_next(next)));
                }
                (false, None, _) if st.finished => times.push("finishing".to_owned()),
                _ => times.push(format!("polling every {}", fmt_duration(st.floor))),
            }
            times.push(deadline);
        }
        bar.set_message(live_message(&times, self.text.as_deref(), live_width()));
    }

    /// Runs `f` (which prints) with the live line out of the way.
    pub(crate) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Removes the live line.
    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The countdown of a device flow's user code, while the user enters it.
pub(crate) struct Countdown {
    bar: Option<ProgressBar>,
    started: u64,
    expires_at: u64,
    text: String,
}

impl Countdown {
    /// Starts the countdown to `expires_at` (unix seconds); `text` (made
    /// terminal-safe by the caller) tells what to do. Without a live line,
    /// one plain line says when the code expires.
    pub(crate) fn start(ui: Ui, expires_at: u64, text: String) -> Self {
        let now = now_secs();
        ui.say(format!(
            "The code expires {}.",
            if expires_at > now {
                format!(
                    "in {} (at {})",
                    fmt_duration(Duration::from_secs(expires_at - now)),
                    fmt_time(expires_at)
                )
            } else {
                "now".to_owned()
            }
        ));
        let mut c = Countdown {
            bar: ui.live.then(spinner),
            started: now,
            expires_at,
            text,
        };
        c.tick();
        c
    }

    /// Redraws the countdown.
    pub(crate) fn tick(&mut self) {
        let Some(bar) = &self.bar else { return };
        let now = now_secs();
        let left = if self.expires_at > now {
            format!(
                "code expires in {}",
                fmt_duration(Duration::from_secs(self.expires_at - now))
            )
        } else {
            "code expired".to_owned()
        };
        let times = [
            left,
            format!(
                "elapsed {}",
                fmt_duration(Duration::from_secs(now.saturating_sub(self.started)))
            ),
        ];
        bar.set_message(live_message(&times, Some(&self.text), live_width()));
    }

    /// Removes the live line.
    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Countdown {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A live spinner line on stderr.
fn spinner() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The index status of an outcome.
pub(crate) fn status_of(o: &Outcome) -> Status {
    match o {
        Outcome::Tokens(_) => Status::Tokens,
        Outcome::Denied { .. } => Status::Denied,
        Outcome::ExpiredByOp => Status::Expired,
        Outcome::DeadlineReached { .. } => Status::Deadline,
        Outcome::Cancelled => Status::Cancelled,
        _ => Status::Rejected,
    }
}

/// Whether verified claims were asked for (`--verified-claims`) and the
/// tokens carry none that passed the checks.
pub(crate) fn verified_claims_missing(t: &crate::lib_api::TokenSet) -> bool {
    let asked = t
        .claims_request()
        .is_some_and(|r| !r.verified_claims(ClaimsTarget::IdToken).is_empty());
    asked
        && match t.verified_claims() {
            Ok(checked) => checked.requested.is_empty(),
            Err(_) => true,
        }
}

/// The exit code of an outcome.
pub(crate) fn exit_code(o: &Outcome) -> u8 {
    match status_of(o) {
        Status::Tokens => match o {
            Outcome::Tokens(t) if verified_claims_missing(t) => exit::UNVERIFIED,
            _ => exit::OK,
        },
        Status::Denied => exit::DENIED,
        Status::Expired => exit::EXPIRED,
        Status::Deadline => exit::DEADLINE,
        Status::Cancelled => exit::CANCELLED,
        Status::Pending | Status::Rejected => exit::ERROR,
    }
}

/// The JSON document of an outcome (with the tokens, when there are).
pub(crate) fn outcome_json(id: &str, o: &Outcome) -> Value {
    let status = status_of(o).as_str();
    match o {
        Outcome::Tokens(t) => {
            let claims = t.claims();
            let mut doc = json!({
                "id": id,
                "status": status,
                "issuer": claims.issuer(),
                "subject": claims.subject(),
                "claims": Value::Object(claims.to_json()),
                "token_type": t.token_type(),
                "access_token": t.access_token().secret(),
                "expires_at": t.expires_at().map(|e| e.as_secs()),
                "refresh_token": t.refresh_token().map(|r| r.secret().to_owned()),
                "scope": t.scope(),
                "id_token": t.id_token().raw().secret(),
            });
            match t.verified_claims() {
                Ok(checked) => {
                    doc["verified_claims"] = json!({
                        "requested": checked.requested.iter().map(assured_json).collect::<Vec<_>>(),
                        "unrequested": checked.unrequested.iter().map(assured_json).collect::<Vec<_>>(),
                    });
                }
                Err(e) => doc["verified_claims_error"] = Value::String(e.to_string()),
            }
            doc
        }
        Outcome::Denied { description } => {
            json!({"id": id, "status": status, "description": description})
        }
        Outcome::DeadlineReached { last_error, .. } => {
            json!({"id": id, "status": status, "last_error": last_error})
        }
        Outcome::Rejected(f) => json!({"id": id, "status": status, "error": f.to_string()}),
        _ => json!({"id": id, "status": status}),
    }
}

/// One checked `verified_claims` element as JSON.
pub(crate) fn assured_json(a: &AssuredClaims) -> Value {
    json!({
        "index": a.index,
        "verification": serde_json::to_value(&a.verification).unwrap_or(Value::Null),
        "claims": Value::Object(a.claims.clone()),
    })
}

/// The human lines of one checked `verified_claims` element: how it was
/// verified, then its claims.
fn assured_lines(s: &mut String, a: &AssuredClaims) {
    let v = &a.verification;
    let evidence: Vec<&str> = v
        .evidence
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|e| e.evidence_type())
        .collect();
    s.push_str(&format!(
        "    trust framework: {}, assurance level: {}, verified: {}, evidence: {}\n",
        one_line(&v.trust_framework),
        one_line(v.assurance_level.as_deref().unwrap_or("-")),
        one_line(v.time.as_deref().unwrap_or("-")),
        if evidence.is_empty() {
            "-".to_owned()
        } else {
            one_line(&evidence.join(", "))
        }
    ));
    for (name, value) in &a.claims {
        let text = match value {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        s.push_str(&format!("      {}: {}\n", one_line(name), one_line(&text)));
    }
}

/// The verified-claims part of the human summary.
fn verified_lines(s: &mut String, t: &crate::lib_api::TokenSet, colour: bool) {
    let asked = t
        .claims_request()
        .is_some_and(|r| !r.verified_claims(ClaimsTarget::IdToken).is_empty());
    match t.verified_claims() {
        Err(e) => s.push_str(&format!(
            "  verified claims {}: {} (the tokens are valid, but treat the identity as not verified)\n",
            paint(colour, Colour::Red, "REFUSED"),
            one_line(&e.to_string())
        )),
        Ok(checked) => {
            if checked.requested.is_empty() && asked {
                s.push_str(&format!(
                    "  verified claims: {} (treat the identity as not verified)\n",
                    paint(colour, Colour::Red, "none returned")
                ));
            }
            for a in &checked.requested {
                s.push_str("  verified claims:\n");
                assured_lines(s, a);
            }
            for a in &checked.unrequested {
                s.push_str("  verified claims (not requested):\n");
                assured_lines(s, a);
            }
        }
    }
}

/// Prints an outcome: JSON on stdout, or a human summary (claims on
/// stdout, other endings on stderr). `kept`: the tokens stay in the store
/// (a hint says how to see them again). Returns the exit code.
pub(crate) fn print_outcome(ui: &Ui, id: &str, o: &Outcome, kept: bool) -> u8 {
    let mut out = std::io::stdout().lock();
    if ui.json {
        let _ = writeln!(out, "{}", json_line(&outcome_json(id, o)));
        let _ = out.flush();
        return exit_code(o);
    }
    match o {
        Outcome::Tokens(t) => {
            let c = t.claims();
            let mut s = String::new();
            s.push_str(&format!(
                "{}: the OP approved and the ID token was validated.\n",
                paint(ui.colour_out, Colour::Green, "Verified")
            ));
            s.push_str(&format!("  subject:  {}\n", one_line(c.subject())));
            s.push_str(&format!("  issuer:   {}\n", one_line(c.issuer())));
            for (label, v) in [
                ("name", c.name()),
                ("email", c.email()),
                ("birthdate", c.birthdate()),
            ] {
                if let Some(v) = v {
                    s.push_str(&format!(
                        "  {label}:{} {}\n",
                        " ".repeat(9 - label.len()),
                        one_line(v)
                    ));
                }
            }
            if let Some(acr) = c.acr() {
                s.push_str(&format!("  acr:      {}\n", one_line(acr)));
            }
            verified_lines(&mut s, t, ui.colour_out);
            s.push_str(&format!(
                "  token:    {}{}\n",
                one_line(t.token_type()),
                t.expires_at()
                    .map(|e| format!(", expires {}", fmt_time(e.as_secs())))
                    .unwrap_or_default()
            ));
            let _ = out.write_all(s.as_bytes());
            let _ = out.flush();
            if kept {
                ui.say(format!(
                "The tokens stay sealed in the state directory: `dtr show {id} --json` prints them, `dtr ack {id}` deletes them."
                ));
            }
        }
        Outcome::Denied { description } => eprintln!(
            "dtr: verification {id} was {} by the OP{}",
            paint(ui.colour_err, Colour::Red, "denied"),
            description
                .as_deref()
                .map(|d| format!(": {}", one_line(d)))
                .unwrap_or_default()
        ),
        Outcome::ExpiredByOp => {
            eprintln!(
                "dtr: verification {id} {} at the OP before it was decided",
                paint(ui.colour_err, Colour::Red, "expired")
            )
        }
        Outcome::DeadlineReached { last_error, .. } => eprintln!(
            "dtr: verification {id} reached its {} before the OP decided{}",
            paint(ui.colour_err, Colour::Yellow, "deadline"),
            last_error
                .as_deref()
                .map(|e| format!(" (last problem: {})", one_line(e)))
                .unwrap_or_default()
        ),
        Outcome::Cancelled => eprintln!(
            "dtr: verification {id} was {}",
            paint(ui.colour_err, Colour::Yellow, "cancelled")
        ),
        Outcome::Rejected(f) => eprintln!(
            "dtr: verification {id} {}: {} (fix: report it to the OP's operator)",
            paint(ui.colour_err, Colour::Red, "failed"),
            one_line(&f.to_string())
        ),
        _ => eprintln!("dtr: verification {id} ended: {}", o.kind()),
    }
    exit_code(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_entries_shrink_to_keep_the_times_on_an_80_column_line() {
        let cause = RetryCause::ServerError { status: Some(503) };
        let times = |retry: Vec<String>| {
            let mut t = vec!["elapsed 1h02m05s".to_owned()];
            t.extend(retry);
            t.push("deadline in 1h02m05s".to_owned());
            t
        };
        let fixed = "elapsed 1h02m05s".len() + "deadline in 1h02m05s".len() + 6;
        // Room enough: the whole cause.
        let wide = retry_entries(cause, "28s", 200, fixed);
        assert_eq!(
            wide,
            [
                "retrying after server error (HTTP 503)",
                "next attempt in 28s"
            ]
        );
        // 78 columns: shorter words, every time still there.
        let narrow = retry_entries(cause, "28s", LIVE_WIDTH, fixed);
        assert_eq!(narrow, ["retrying after HTTP 503", "in 28s"]);
        let shorter = fixed - "1h02m".len();
        assert_eq!(
            retry_entries(cause, "28s", LIVE_WIDTH, shorter),
            ["retrying after HTTP 503", "next in 28s"]
        );
        let line = live_message(&times(narrow), Some("documents in review"), LIVE_WIDTH);
        assert!(line.chars().count() <= LIVE_WIDTH, "{line}");
        assert!(
            line.starts_with("elapsed 1h02m05s · retrying after HTTP 503"),
            "{line}"
        );
        assert!(line.contains("deadline in 1h02m05s"), "{line}");
        let short = retry_entries(RetryCause::Connect, "3s", 60, 30);
        assert_eq!(short, ["retrying after connection failure", "in 3s"]);
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(fmt_time(1_796_035_273), "2026-11-30 10:41:13 UTC");
        assert_eq!(fmt_duration(Duration::from_secs(6)), "6s");
        assert_eq!(fmt_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(fmt_duration(Duration::from_secs(3723)), "1h02m03s");
        assert_eq!(fmt_deadline(100, 200), "1970-01-01 00:01:40 UTC (passed)");
        assert!(fmt_deadline(200, 100).ends_with("(in 1m40s)"));
    }

    #[test]
    fn the_live_line_keeps_the_times_and_cuts_the_op_text() {
        let times = vec![
            "elapsed 1h02m03s".to_owned(),
            "next poll in 1m05s".to_owned(),
            fmt_deadline_short(10_000, 100),
        ];
        let long = "Documents received; a reviewer is comparing the selfie with the passport photo and checking the address history".repeat(2);
        // 80 columns: the spinner and a space, then the message.
        let line = live_message(&times, Some(&long), 78);
        assert!(line.chars().count() <= 78, "{line}");
        assert!(
            line.starts_with(
                "elapsed 1h02m03s · next poll in 1m05s · deadline in 2h45m00s · Documents"
            ),
            "{line}"
        );
        assert!(line.ends_with('…'), "{line}");
        // A short text is kept whole; no text: a placeholder.
        assert!(live_message(&times, Some("Final checks"), 78).ends_with(" · Final checks"));
        assert!(live_message(&times, None, 100).ends_with(" · waiting for the OP"));
        assert_eq!(fmt_deadline_short(5, 10), "deadline passed");
    }

    #[test]
    fn colour_only_when_asked_for() {
        assert_eq!(paint(false, Colour::Green, "Verified"), "Verified");
        assert_eq!(
            paint(true, Colour::Red, "denied"),
            "\x1b[1;31mdenied\x1b[0m"
        );
        assert!(!colour_wanted(false), "never without a terminal");
    }

    #[test]
    fn exit_codes_are_distinct() {
        let outcomes: Vec<Outcome> = vec![
            Outcome::Denied { description: None },
            Outcome::ExpiredByOp,
            Outcome::DeadlineReached {
                last_error: None,
                last_cause: None,
            },
            Outcome::Cancelled,
        ];
        let mut codes: Vec<u8> = outcomes.iter().map(exit_code).collect();
        codes.extend([
            exit::OK,
            exit::ERROR,
            exit::USAGE,
            exit::PENDING,
            exit::UNVERIFIED,
            exit::INTERRUPTED,
        ]);
        let n = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), n);
    }
}
