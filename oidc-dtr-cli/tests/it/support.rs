//! Helpers: a mock OP, a state directory, the `dtr` binary.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

// The mock OP.
pub(crate) use oidc_dtr_testkit::{
    AssuranceFault, AuthSnapshot, AuthState, AuthorizeOutcome, Endpoint, MockOp, OpConfig,
    OpProfiles, RegisteredClient,
};

/// A guard against a hang (not a timing assertion): generous.
pub(crate) const HANG: Duration = Duration::from_secs(60);

/// A mock OP with a one-second interval, and a fresh state directory.
pub(crate) struct Env {
    pub op: MockOp,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub(crate) async fn new(f: impl FnOnce(&mut OpConfig)) -> Env {
        Env::signing(oidc_dtr::jose::Algorithm::RS256, f).await
    }

    /// [`Env::new`] with an OP that signs its ID tokens with `alg`.
    pub(crate) async fn signing(
        alg: oidc_dtr::jose::Algorithm,
        f: impl FnOnce(&mut OpConfig),
    ) -> Env {
        let mut config = OpConfig::default();
        config.interval = Some(1);
        config.progress_script = vec!["Documents received".into(), "A reviewer is on it".into()];
        f(&mut config);
        let op = MockOp::builder()
            .config(config)
            .signing_alg(alg)
            .start()
            .await
            .unwrap();
        Env {
            op,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `dtr` with the state dir set, no config file, nothing inherited.
    pub(crate) fn dtr(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dtr"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("DTR_STATE_DIR", self.state_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// `dtr verify` for the OP's public client, not waiting.
    pub(crate) fn verify(&self, extra: &[&str]) -> Running {
        let mut c = self.dtr();
        c.args([
            "verify",
            "--issuer",
            self.op.issuer(),
            "--client-id",
            MockOp::PUBLIC_CLIENT_ID,
            "--no-browser",
        ])
        .args(extra);
        Running::spawn(c)
    }

    /// Runs `dtr args...` to the end.
    pub(crate) async fn run(&self, args: &[&str]) -> Done {
        let out = tokio::time::timeout(HANG, self.dtr().args(args).output())
            .await
            .expect("dtr hung")
            .unwrap();
        Done {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// The only authentication at the OP.
    pub(crate) fn the_auth(&self) -> AuthSnapshot {
        let all = self.op.authentications();
        assert_eq!(all.len(), 1, "one authentication at the OP");
        all.into_iter().next().unwrap()
    }
}

/// A finished run.
#[derive(Debug)]
pub(crate) struct Done {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Done {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// A running `dtr` whose stderr is read line by line.
pub(crate) struct Running {
    pub child: Child,
    lines: Lines<BufReader<ChildStderr>>,
    pub stderr: String,
}

impl Running {
    pub(crate) fn spawn(mut c: Command) -> Running {
        let mut child = c.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        Running {
            child,
            lines: BufReader::new(stderr).lines(),
            stderr: String::new(),
        }
    }

    /// Reads stderr up to the first line containing `needle`.
    pub(crate) async fn line_with(&mut self, needle: &str) -> String {
        let fut = async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                self.stderr.push_str(&line);
                self.stderr.push('\n');
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("stderr ended without `{needle}`:\n{}", self.stderr);
        };
        tokio::time::timeout(HANG, fut).await.expect("dtr hung")
    }

    /// The authorization URL dtr printed.
    pub(crate) async fn auth_url(&mut self) -> url::Url {
        let line = self.line_with("/authorize?").await;
        url::Url::parse(line.trim()).unwrap()
    }

    /// Waits for the end: exit code, stdout, the rest of stderr.
    pub(crate) async fn finish(mut self) -> Done {
        while let Some(line) = tokio::time::timeout(HANG, self.lines.next_line())
            .await
            .expect("dtr hung")
            .unwrap()
        {
            self.stderr.push_str(&line);
            self.stderr.push('\n');
        }
        let out = tokio::time::timeout(HANG, self.child.wait_with_output())
            .await
            .expect("dtr hung")
            .unwrap();
        Done {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: self.stderr,
        }
    }

    /// Sends SIGINT (as Ctrl-C does).
    pub(crate) fn interrupt(&self) {
        use nix::sys::signal::{Signal, kill};
        let pid = i32::try_from(self.child.id().unwrap()).unwrap();
        kill(nix::unistd::Pid::from_raw(pid), Signal::SIGINT).unwrap();
    }
}

/// Plays the browser: the OP's UI, then the redirect (or auto-posted form)
/// to dtr's loopback listener. Returns the listener's HTTP status.
pub(crate) async fn play_browser(op: &MockOp, url: &url::Url) -> u16 {
    let cb = op.browse(url).await.unwrap();
    let http = reqwest::Client::new();
    let resp = match cb.form_body {
        Some(body) => http
            .post(cb.url.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap(),
        None => http.get(cb.url.clone()).send().await.unwrap(),
    };
    resp.status().as_u16()
}

/// Files under `dir`, recursively.
pub(crate) fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `dtr show ID` in a pseudo-terminal: the human summary (stdout and stderr).
pub(crate) async fn show_in_terminal(env: &Env, id: &str) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dtr"));
    cmd.env("DTR_STATE_DIR", env.state_dir())
        .env("XDG_CONFIG_HOME", env.dir.path().join("config"))
        .env("TERM", "dumb")
        .args(["show", id]);
    tokio::task::spawn_blocking(move || {
        let mut s = rexpect::session::spawn_command(cmd, Some(HANG.as_millis() as u64)).unwrap();
        let out = s.exp_eof().unwrap();
        let status = s.process.wait().unwrap();
        assert!(
            matches!(status, rexpect::process::wait::WaitStatus::Exited(_, 0)),
            "{status:?}: {out}"
        );
        out
    })
    .await
    .unwrap()
}

/// `dtr args...` in a pseudo-terminal (stdin, stdout and stderr), with
/// `TERM=xterm`, `NO_COLOR` unset unless in `vars`: the exit code and
/// everything it printed.
pub(crate) async fn in_terminal(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dtr"));
    cmd.env("DTR_STATE_DIR", env.state_dir())
        .env("XDG_CONFIG_HOME", env.dir.path().join("config"))
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("BROWSER")
        .args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || {
        let mut s = rexpect::session::spawn_command(cmd, Some(HANG.as_millis() as u64)).unwrap();
        // rexpect hands bytes over as one char each: decode them as UTF-8.
        let raw = s.exp_eof().unwrap();
        let out = match raw
            .chars()
            .map(u8::try_from)
            .collect::<Result<Vec<u8>, _>>()
        {
            Ok(bytes) => String::from_utf8(bytes).unwrap_or(raw),
            Err(_) => raw,
        };
        match s.process.wait().unwrap() {
            rexpect::process::wait::WaitStatus::Exited(_, code) => (code, out),
            other => panic!("{other:?}: {out}"),
        }
    })
    .await
    .unwrap()
}

/// `text` without SGR colour sequences.
pub(crate) fn strip_sgr(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
