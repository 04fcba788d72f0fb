//! `dtr`: deferred identity verification (OpenID Connect Deferred Token
//! Response) from a terminal. See `dtr --help` and the README.

#![forbid(unsafe_code)]

mod connect;
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
use crate::settings::{ClientArgs, ConfigFile, RequestArgs, TlsArgs};
use crate::state::StateDir;

const AFTER_HELP: &str = "\
Exit codes:
  0    tokens received (or the command did what was asked)
  1    error (network, OP, store, or an answer that failed validation)
  2    usage or configuration error: a bad flag, a missing or invalid
       config file, an unknown id, a verification already acknowledged,
       a cancellation the OP cannot be told of (see `dtr cancel --help`),
       a key file others may read, a setting --fapi2 forbids (a client
       secret, a public client, --no-dpop, an RS256 key)
  3    denied by the OP
  4    expired at the OP
  5    deadline reached before the OP decided
  6    cancelled
  7    still pending (--no-wait; `dtr show` of a pending verification)
  8    tokens received, but the verified claims asked for (--verified-claims)
       were not delivered or failed the checks: the identity is not verified
  130  interrupted (Ctrl-C): a pending verification stays pending; resume with `dtr wait`

Output: colour (status words only) on a terminal, unless NO_COLOR is set
or TERM=dumb; none when piped. Text from the OP is shown with control,
bidi and invisible format characters escaped, in JSON as well.

Configuration: flags, then DTR_* environment variables, then the config
profile (--profile, DTR_PROFILE, or `default_profile`) of the config file
(--config, DTR_CONFIG, default: the platform's config dir, e.g.
~/.config/dtr/config.toml):

  default_profile = \"acme\"
  [profile.acme]
  issuer = \"https://op.example.com\"
  client_id = \"s6BhdRkqt3\"
  client_secret_file = \"~/.secrets/acme\"   # or private_key_file + private_key_alg
  # FAPI 2.0 / high assurance: fapi2 = true, par = true, request_object = true,
  # request_object_key_file, request_object_alg, client_cert_file,
  # client_key_file, ca_file
  scope = \"profile email\"
  draft = \"ietf\"                          # or \"oidc\"; default: what the OP advertises
  acr_values = \"urn:example:loa:high\"
  claims = '{\"id_token\":{\"verified_claims\":null}}'
  # or, typed (not with `claims`): verified_claims = [\"given_name\", \"birthdate\"],
  # trust_framework = [\"eidas\"], assurance_level, verification_max_age, evidence

Secrets are only read from files, never from the command line.
State (sealed with a key file beside it, mode 0600) lives in the platform's
state dir (e.g. ~/.local/state/dtr), or --state-dir / DTR_STATE_DIR.";

/// The help heading of the options every command takes.
const GLOBAL: &str = "Global options";
/// The help heading of `dtr verify`'s own options.
const FLOW: &str = "Flow";

const VERIFY_HELP: &str = "\
Examples:
  # A typed identity-assurance request, waiting for the decision:
  dtr verify --issuer https://op.example.com --client-id s6BhdRkqt3 \\
      --verified-claims given_name,family_name,birthdate --trust-framework eidas

  # A config profile, return at once, wait later (exit 7 now):
  dtr --profile acme verify --no-wait
  dtr wait --latest

  # The IETF draft's device flow on a machine without a browser:
  dtr verify --issuer https://as.example.com --client-id c1 --draft ietf --device

  # A FAPI 2.0 OP: private_key_jwt with an ES256 key, PAR, a signed request
  # object, DPoP (on by default):
  dtr verify --issuer https://op.example.com --client-id c1 --fapi2 \
      --private-key-file ~/.keys/c1.pem --request-object

  # Mutual TLS (tls_client_auth, certificate-bound tokens) at an OP with a
  # private CA; `dtr wait` later uses the same certificate:
  dtr verify --issuer https://op.example.com --client-id c1 --fapi2 \
      --client-cert c1.crt --client-key c1.key --ca op-ca.pem --no-dpop

Global options (--state-dir, --config, --profile, --json, --quiet) may come
before or after `verify`. Exit codes: see `dtr --help`.";

const CANCEL_HELP: &str = "\
Examples:
  dtr cancel 6e94c9ba --cancel-endpoint https://op.example.com/df-authentication/cancel
  dtr cancel 6e94c9ba --local-only   # the OP is not told; it stays open there

Exit codes: 0 cancelled at the OP (or, with --local-only, here); 2 the OP
cannot be told (no --cancel-endpoint / DTR_CANCEL_ENDPOINT, no revocation
endpoint): nothing was changed, the verification stays pending and can be
cancelled later; 1 the OP could not be reached or refused: nothing was
changed either.";

#[cfg(feature = "demo")]
const DEMO_HELP: &str = "\
Examples:
  dtr demo                      # approved: exit 0
  dtr demo --deny               # exit 3
  dtr demo --expire             # exit 4
  dtr demo --no-decision --review-time 3   # dtr's deadline passes: exit 5
  dtr demo --draft ietf --device";

/// Deferred identity verification from a terminal: asks an OpenID Provider
/// to verify someone and waits, for hours if need be, for its decision.
#[derive(Parser, Debug)]
#[command(name = "dtr", version, after_help = AFTER_HELP)]
struct Cli {
    /// Where pending verifications are kept.
    #[arg(
        long,
        global = true,
        env = "DTR_STATE_DIR",
        value_name = "DIR",
        help_heading = GLOBAL
    )]
    state_dir: Option<PathBuf>,
    /// The config file with named profiles.
    #[arg(
        long,
        global = true,
        env = "DTR_CONFIG",
        value_name = "FILE",
        help_heading = GLOBAL
    )]
    config: Option<PathBuf>,
    /// The config profile (a `[profile.NAME]` table of the config file) to
    /// use. Not the protocol draft: that is --draft / DTR_DRAFT.
    #[arg(
        long,
        global = true,
        env = "DTR_PROFILE",
        value_name = "NAME",
        help_heading = GLOBAL
    )]
    profile: Option<String>,
    /// Print outcomes as JSON on stdout (the default when stdout is not a terminal).
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,
    /// Print only the essentials (the URL to open, outcomes, errors).
    #[arg(long, short, global = true, env = "DTR_QUIET", help_heading = GLOBAL)]
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
        #[command(flatten)]
        tls: TlsArgs,
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
    /// Cancels a pending verification at the OP. When the OP cannot be
    /// told (no cancellation endpoint known), nothing changes and dtr exits
    /// 2, unless --local-only asks to stop waiting here only.
    #[command(after_help = CANCEL_HELP)]
    Cancel {
        /// The verification's id.
        id: String,
        /// The OP's cancellation endpoint, if not given at `dtr verify`.
        #[arg(long, env = "DTR_CANCEL_ENDPOINT", value_name = "URL")]
        cancel_endpoint: Option<String>,
        /// Stop waiting here even though the OP cannot be told: the
        /// verification stays open at the OP until it expires there.
        #[arg(long)]
        local_only: bool,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Calls the OP's UserInfo endpoint with a finished verification's
    /// stored access token (DPoP-bound when it is) and prints the claims.
    Userinfo {
        /// The verification's id.
        #[arg(required_unless_present = "latest")]
        id: Option<String>,
        /// The most recently started verification.
        #[arg(long, conflicts_with = "id")]
        latest: bool,
        #[command(flatten)]
        tls: TlsArgs,
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
    #[command(after_help = DEMO_HELP)]
    Demo {
        /// How long the mock OP "reviews" before deciding, in seconds.
        #[arg(long, default_value_t = 6, value_name = "SECONDS")]
        review_time: u64,
        /// The mock OP denies after its review (exit 3).
        #[arg(long, conflicts_with_all = ["expire", "no_decision"])]
        deny: bool,
        /// The mock OP lets the verification expire after its review (exit 4).
        #[arg(long, conflicts_with = "no_decision")]
        expire: bool,
        /// The mock OP never decides: dtr's deadline (the review time) passes (exit 5).
        #[arg(long)]
        no_decision: bool,
        /// Which draft the mock OP and dtr speak (`oidc` or `ietf`).
        #[arg(long, env = "DTR_DRAFT", value_name = "oidc|ietf", value_parser = settings::parse_draft)]
        draft: Option<crate::lib_api::Profile>,
        /// Use the device flow (implies `--draft ietf`).
        #[arg(long)]
        device: bool,
    },
}

/// The options of `dtr verify`.
#[derive(clap::Args, Debug)]
#[command(after_help = VERIFY_HELP)]
struct VerifyArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    request: RequestArgs,
    /// Do not open a browser; only print the URL.
    #[arg(long, env = "DTR_NO_BROWSER", help_heading = FLOW)]
    no_browser: bool,
    /// Return once the OP accepted the request (exit 7); `dtr wait` later.
    #[arg(long, help_heading = FLOW)]
    no_wait: bool,
    /// Delete the stored tokens once printed.
    #[arg(long, help_heading = FLOW)]
    ack: bool,
    /// Use the device flow (RFC 8628, with the IETF draft's
    /// completion_mode=deferred): print a code to enter at the OP on any
    /// device, for machines without a browser.
    #[arg(long, env = "DTR_DEVICE", help_heading = FLOW)]
    device: bool,
    /// How long the browser step may take, in seconds.
    #[arg(
        long,
        env = "DTR_LOGIN_TIMEOUT",
        default_value_t = 1800,
        value_name = "SECONDS",
        help_heading = FLOW
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
        colour_out: display::colour_wanted(std::io::stdout().is_terminal()),
        colour_err: display::colour_wanted(std::io::stderr().is_terminal()),
    };
    let can_open =
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal() && has_display();
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
            let open = !no_browser && can_open;
            let opts = WaitOpts {
                no_wait,
                ack,
                login_timeout: Duration::from_secs(login_timeout),
                state_flag,
                device,
                open_browser: open,
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
        Command::Wait {
            id,
            latest,
            ack,
            tls,
        } => {
            let opts = WaitOpts {
                no_wait: false,
                ack,
                login_timeout: Duration::ZERO,
                state_flag,
                device: false,
                open_browser: can_open,
            };
            flow::wait(ui, &state, id.as_deref(), latest, &tls, &opts).await
        }
        Command::List => flow::list(ui, &state),
        Command::Show { id, latest } => flow::show(ui, &state, id.as_deref(), latest).await,
        Command::Cancel {
            id,
            cancel_endpoint,
            local_only,
            tls,
        } => flow::cancel(ui, &state, &id, cancel_endpoint, local_only, &tls).await,
        Command::Userinfo { id, latest, tls } => {
            flow::userinfo(ui, &state, id.as_deref(), latest, &tls).await
        }
        Command::Ack { id } => flow::ack(ui, &state, &id).await,
        Command::Purge => flow::purge(ui, &state),
        #[cfg(feature = "demo")]
        Command::Demo {
            review_time,
            deny,
            expire,
            no_decision,
            draft,
            device,
        } => {
            let decision = if deny {
                demo::Decision::Deny
            } else if expire {
                demo::Decision::Expire
            } else if no_decision {
                demo::Decision::None
            } else {
                demo::Decision::Approve
            };
            demo::run(
                ui,
                Duration::from_secs(review_time),
                decision,
                draft,
                device,
            )
            .await
        }
    }
}

/// Whether a browser could show up: `BROWSER` names one, or (on Linux and
/// the BSDs) there is a graphical display.
fn has_display() -> bool {
    if std::env::var_os("BROWSER").is_some_and(|b| !b.is_empty()) {
        return true;
    }
    if cfg!(target_os = "linux") || cfg!(target_os = "freebsd") {
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    } else {
        true
    }
}

/// Quotes a path for a copy-pasteable shell hint.
pub(crate) fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
