//! `dtr`: deferred identity verification (OpenID Connect Deferred Token
//! Response) from a terminal. See `dtr --help` and the README.

#![forbid(unsafe_code)]

mod display;
mod error;
mod flow;
mod lib_api;
mod loopback;
mod settings;
mod state;

#[cfg(feature = "demo")]
mod demo;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::display::Ui;
use crate::error::CliError;
use crate::flow::{Browser, WaitOpts};
use crate::settings::{ClientArgs, ConfigFile, RequestArgs};
use crate::state::StateDir;

const AFTER_HELP: &str = "\
Exit codes:
  0    tokens received (or the command did what was asked)
  1    error (network, OP, store, or an answer that failed validation)
  2    usage or configuration error
  3    denied by the OP
  4    expired at the OP
  5    deadline reached before the OP decided
  6    cancelled
  7    still pending (--no-wait; `dtr show` of a pending verification)
  130  interrupted (Ctrl-C): a pending verification stays pending; resume with `dtr wait`

Configuration: flags, then DTR_* environment variables, then the profile
(--profile, DTR_PROFILE, or `default_profile`) of the config file
(--config, DTR_CONFIG, default: the platform's config dir, e.g.
~/.config/dtr/config.toml):

  default_profile = \"acme\"
  [profile.acme]
  issuer = \"https://op.example.com\"
  client_id = \"s6BhdRkqt3\"
  client_secret_file = \"~/.secrets/acme\"   # or private_key_file + private_key_alg
  scope = \"profile email\"
  draft = \"ietf\"                          # or \"oidc\"; default: what the OP advertises
  acr_values = \"urn:example:loa:high\"
  claims = '{\"id_token\":{\"verified_claims\":null}}'
  # or, typed (not with `claims`): verified_claims = [\"given_name\", \"birthdate\"],
  # trust_framework = [\"eidas\"], assurance_level, verification_max_age, evidence

Secrets are only read from files, never from the command line.
State (sealed with a key file beside it, mode 0600) lives in the platform's
state dir (e.g. ~/.local/state/dtr), or --state-dir / DTR_STATE_DIR.";

/// Deferred identity verification from a terminal: asks an OpenID Provider
/// to verify someone and waits, for hours if need be, for its decision.
#[derive(Parser, Debug)]
#[command(name = "dtr", version, after_help = AFTER_HELP)]
struct Cli {
    /// Where pending verifications are kept.
    #[arg(long, global = true, env = "DTR_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The config file with named profiles.
    #[arg(long, global = true, env = "DTR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The profile of the config file to use.
    #[arg(long, global = true, env = "DTR_PROFILE", value_name = "NAME")]
    profile: Option<String>,
    /// Print outcomes as JSON on stdout (the default when stdout is not a terminal).
    #[arg(long, global = true)]
    json: bool,
    /// Print only the essentials (the URL to open, outcomes, errors).
    #[arg(long, short, global = true, env = "DTR_QUIET")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Starts a verification: prints the URL to open, receives the redirect
    /// on a loopback port, then waits for the OP's decision.
    Verify(Box<VerifyArgs>),
    /// Resumes waiting for a pending verification (also after a reboot).
    Wait {
        /// The verification's id (see `dtr list`).
        #[arg(required_unless_present = "latest")]
        id: Option<String>,
        /// The most recently started verification.
        #[arg(long, conflicts_with = "id")]
        latest: bool,
        /// Delete the stored tokens once printed.
        #[arg(long)]
        ack: bool,
    },
    /// Lists pending and finished verifications.
    List,
    /// Prints a finished verification's validated claims (and tokens, with
    /// --json) again, until acknowledged.
    Show {
        /// The verification's id.
        #[arg(required_unless_present = "latest")]
        id: Option<String>,
        /// The most recently started verification.
        #[arg(long, conflicts_with = "id")]
        latest: bool,
    },
    /// Cancels a pending verification at the OP.
    Cancel {
        /// The verification's id.
        id: String,
        /// The OP's cancellation endpoint, if not given at `dtr verify`.
        #[arg(long, env = "DTR_CANCEL_ENDPOINT", value_name = "URL")]
        cancel_endpoint: Option<String>,
    },
    /// Acknowledges a finished verification: deletes its stored tokens.
    Ack {
        /// The verification's id.
        id: String,
    },
    /// Removes finished verifications (and their stored tokens).
    Purge,
    /// Runs the whole flow against a mock OP started in this process.
    #[cfg(feature = "demo")]
    Demo {
        /// How long the mock OP "reviews" before approving, in seconds.
        #[arg(long, default_value_t = 6, value_name = "SECONDS")]
        review_time: u64,
        /// Which draft the mock OP and dtr speak (`oidc` or `ietf`).
        #[arg(long, env = "DTR_DRAFT", value_name = "oidc|ietf")]
        draft: Option<crate::lib_api::Profile>,
        /// Use the device flow (implies `--draft ietf`).
        #[arg(long)]
        device: bool,
    },
}

/// The options of `dtr verify`.
#[derive(clap::Args, Debug)]
struct VerifyArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    request: RequestArgs,
    /// Do not open a browser; only print the URL.
    #[arg(long, env = "DTR_NO_BROWSER")]
    no_browser: bool,
    /// Return once the OP accepted the request (exit 7); `dtr wait` later.
    #[arg(long)]
    no_wait: bool,
    /// Delete the stored tokens once printed.
    #[arg(long)]
    ack: bool,
    /// Use the device flow (RFC 8628, with the IETF draft's
    /// completion_mode=deferred): print a code to enter at the OP on any
    /// device, for machines without a browser.
    #[arg(long, env = "DTR_DEVICE")]
    device: bool,
    /// How long the browser step may take, in seconds.
    #[arg(
        long,
        env = "DTR_LOGIN_TIMEOUT",
        default_value_t = 1800,
        value_name = "SECONDS"
    )]
    login_timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dtr: error: cannot start the async runtime: {e}");
            return ExitCode::from(error::exit::ERROR);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dtr: error: {e}");
            e.code
        }
    };
    // The commands shut their client down (driver stopped, store closed)
    // before returning: nothing is left to wait for.
    drop(runtime);
    ExitCode::from(code)
}

async fn run(cli: Cli) -> Result<u8, CliError> {
    let terminal_ok = std::env::var_os("TERM").is_none_or(|t| t != "dumb");
    let ui = Ui {
        live: !cli.quiet && terminal_ok && std::io::stderr().is_terminal(),
        quiet: cli.quiet,
        json: cli.json || !std::io::stdout().is_terminal(),
    };
    let state_flag = cli
        .state_dir
        .as_ref()
        .map(|p| format!(" --state-dir {}", shell_quote(&p.display().to_string())))
        .unwrap_or_default();
    let state = StateDir::resolve(cli.state_dir.clone())?;
    match cli.command {
        Command::Verify(args) => {
            let VerifyArgs {
                client,
                request,
                no_browser,
                no_wait,
                ack,
                device,
                login_timeout,
            } = *args;
            let (config, _) = ConfigFile::load(cli.config.as_deref())?;
            let (profile_name, profile) = config.profile(cli.profile.as_deref())?;
            let settings = settings::merge(&client, &request, profile)?;
            let open = !no_browser
                && std::io::stdin().is_terminal()
                && std::io::stderr().is_terminal()
                && has_display();
            let opts = WaitOpts {
                no_wait,
                ack,
                login_timeout: Duration::from_secs(login_timeout),
                state_flag,
                device,
            };
            flow::verify(
                ui,
                &state,
                settings,
                profile_name,
                Browser::System { open },
                &opts,
            )
            .await
        }
        Command::Wait { id, latest, ack } => {
            let opts = WaitOpts {
                no_wait: false,
                ack,
                login_timeout: Duration::ZERO,
                state_flag,
                device: false,
            };
            flow::wait(ui, &state, id.as_deref(), latest, &opts).await
        }
        Command::List => flow::list(ui, &state),
        Command::Show { id, latest } => flow::show(ui, &state, id.as_deref(), latest).await,
        Command::Cancel {
            id,
            cancel_endpoint,
        } => flow::cancel(ui, &state, &id, cancel_endpoint).await,
        Command::Ack { id } => flow::ack(ui, &state, &id).await,
        Command::Purge => flow::purge(ui, &state),
        #[cfg(feature = "demo")]
        Command::Demo {
            review_time,
            draft,
            device,
        } => demo::run(ui, Duration::from_secs(review_time), draft, device).await,
    }
}

/// Whether a graphical browser could show up.
fn has_display() -> bool {
    if cfg!(target_os = "linux") || cfg!(target_os = "freebsd") {
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    } else {
        true
    }
}

/// Quotes a path for a copy-pasteable shell hint.
fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
