//! The commands: verify, wait, cancel, show, ack, list, purge.

// Size note: Kept whole (~960 lines): each command is a short function over the same
// shared helpers (client set-up, output, exit codes).

use std::time::Duration;

use crate::connect::{build_client, build_client_with, check_bound_certificate, override_tls};
use crate::display::{
    self, Colour, Countdown, Progress, Ui, fmt_deadline, fmt_time, now_secs, paint, print_outcome,
};
use crate::error::{CliError, exit, json_line, one_line, term_safe};
#[cfg(feature = "demo")]
use crate::lib_api::MockOp;
use crate::lib_api::{
    AssuranceError, AssuranceUnsupported, AuthHandle, CallbackResponse, CancelResult, ConfigError,
    DtrClient, Outcome, PollEvent, Profile, Record, Redemption, ResponseMode, Store, UnixTime,
};
use crate::loopback::Loopback;
use crate::settings::{Mode, TlsArgs, VerifySettings};
use crate::state::{Entry, StateDir, Status};

/// Who plays the browser.
pub(crate) enum Browser {
    /// The user: print the URL, and open the system browser when `open`.
    System {
        /// Try to open the system browser.
        open: bool,
    },
    /// The mock OP's simulated browser (`dtr demo`).
    #[cfg(feature = "demo")]
    Mock(MockOp),
}

/// Options of `verify` and `wait`.
#[derive(Debug, Clone)]
pub(crate) struct WaitOpts {
    /// Return once the OP acknowledged the request (`--no-wait`).
    pub no_wait: bool,
    /// Acknowledge (delete the stored tokens) once printed (`--ack`).
    pub ack: bool,
    /// How long the browser step may take.
    pub login_timeout: Duration,
    /// Use the device flow instead of a browser redirect (`--device`).
    pub device: bool,
    /// ` --state-dir DIR` when one was given, for resume hints (else empty).
    pub state_flag: String,
    /// Open URIs the OP sends the user to (interaction) in a browser: a
    /// terminal, a browser available, not `--no-browser`.
    pub open_browser: bool,
}

/// Prints a URI from the OP that the user must visit (terminal-safe, even
/// under --quiet: without it nothing moves), and opens it in a browser
/// when `open` (the system's, or `BROWSER`); says why when that fails.
fn show_uri(ui: &Ui, intro: &str, uri: &str, open: bool) {
    eprintln!("{intro}\n\n  {}\n", term_safe(uri));
    if !open {
        return;
    }
    if !(uri.starts_with("https://") || uri.starts_with("http://")) {
        ui.say(
            "(not opened in a browser: it is not an http(s) URL; open it yourself if you trust it)",
        );
        return;
    }
    match webbrowser::open(uri) {
        Ok(()) => ui.say("(opened in your browser)"),
        Err(e) => ui.say(format!(
            "(could not open a browser: {}; open the URL yourself, or set BROWSER)",
            one_line(&e.to_string())
        )),
    }
}

/// `dtr verify`.
pub(crate) async fn verify(
    ui: Ui,
    state: &StateDir,
    mut s: VerifySettings,
    profile: Option<String>,
    browser: Browser,
    opts: &WaitOpts,
) -> Result<u8, CliError> {
    let loopback = Loopback::bind(s.redirect_port).await?;
    s.client.redirect_uri = loopback.redirect_uri().to_owned();
    let store_name = state.new_store_name()?;
    let store = state.open_store(&store_name)?;
    // Until the exchange succeeded, nothing is pending: drop the file on
    // every way out.
    let mut cleanup = StoreCleanup {
        state,
        name: Some(store_name.clone()),
    };
    let client = build_client(&s.client, Some(store)).await?;
    // Stop the poll driver and close the store before the process exits,
    // whichever way this ends.
    let result: Result<u8, CliError> = async {
    let auth = if opts.device {
        match device_verification(&ui, &client, &s, &browser).await? {
            Ok(auth) => auth,
            Err(code) => return Ok(code),
        }
    } else {
        let mut req = client.authorize();
        if let Some(scope) = &s.scope {
            req = req.scope(scope);
        }
        if let Some(c) = &s.claims {
            req = req.claims(c.clone());
        }
        if let Some(a) = &s.assurance {
            req = req.claims_request(a.claims_request());
        }
        if let Some(a) = &s.acr_values {
            req = req.acr_values(a.clone());
        }
        if let Some(h) = &s.login_hint {
            req = req.login_hint(h.clone());
        }
        if let Some(m) = s.max_age {
            req = req.max_age(m);
        }
        if let Some(d) = &s.authorization_details {
            req = req.param("authorization_details", d.clone());
        }
        if s.response_mode == Mode::FormPost {
            req = req.response_mode(ResponseMode::FormPost);
        }
        // Pushed first (PAR) when asked for, required by the OP's
        // metadata, or under FAPI 2.0; signed as a request object when a
        // key is set.
        let (url, pending) = req
            .build_or_push()
            .await
            .map_err(|e| request_error(&client, &e))?;

        // The URL is what the user needs most: printed even under --quiet.
        match &browser {
            Browser::System { open } => show_uri(
                &ui,
                "Open this URL in a browser to verify your identity:",
                url.as_str(),
                *open,
            ),
            #[cfg(feature = "demo")]
            Browser::Mock(op) => {
                eprintln!("Open this URL in a browser to verify your identity:\n\n  {}\n", term_safe(url.as_str()));
                ui.say(
                    "(dtr demo plays the browser: the mock OP accepts the request and redirects back)",
                );
                spawn_mock_browser(op.clone(), url.clone());
            }
        }
        ui.say(format!(
            "Waiting for the browser to come back to {} ...",
            loopback.redirect_uri()
        ));

        let received = tokio::select! {
            r = loopback.receive(&client, &pending, ui.quiet) => r?,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("dtr: interrupted before the OP acknowledged the request; nothing was kept.");
                return Ok(exit::INTERRUPTED);
            }
            _ = tokio::time::sleep(opts.login_timeout) => {
                return Err(CliError::runtime(
                    format!("the browser did not come back within {}", display::fmt_duration(opts.login_timeout)),
                    "run `dtr verify` again and finish the steps at the OP, or raise --login-timeout",
                ));
            }
        };
        drop(loopback);
        match received {
            CallbackResponse::Acknowledgment(ack) => client
                .exchange(ack)
                .await
                .map_err(|e| CliError::from_lib("exchanging the deferred code", &e))?,
            // The IETF draft: a plain code, redeemed with completion_mode=deferred;
            // the OP answers with tokens at once or defers.
            CallbackResponse::Code(code) if client.profile() == Profile::Ietf => {
                match client
                    .redeem_code(code)
                    .await
                    .map_err(|e| CliError::from_lib("redeeming the authorization code", &e))?
                {
                    Redemption::Deferred(auth) => {
                        if let Some(uri) = auth.interaction_uri() {
                            show_uri(
                                &ui,
                                "The OP needs you at this URL to go on:",
                                &uri.to_string(),
                                opts.open_browser,
                            );
                        }
                        *auth
                    }
                    Redemption::Tokens(tokens) => {
                        return Ok(print_outcome(&ui, "-", &Outcome::Tokens(*tokens), false));
                    }
                    _ => {
                        return Err(CliError::runtime(
                            "the OP's token response is of a kind this version of dtr does not handle",
                            "update dtr",
                        ));
                    }
                }
            }
            CallbackResponse::Code(code) => {
                // `deferred_code code` answered at once: no deferral.
                let tokens = client
                    .exchange_code(code)
                    .await
                    .map_err(|e| CliError::from_lib("exchanging the authorization code", &e))?;
                return Ok(print_outcome(
                    &ui,
                    "-",
                    &Outcome::Tokens(tokens),
                    false,
                ));
            }
            CallbackResponse::Error(e) => {
                let denied = e.code.as_str() == "access_denied";
                let msg = format!("the OP refused the request: {}", one_line(&e.to_string()));
                if denied {
                    eprintln!(
                        "dtr: {msg} ({}: the user or the OP declined at the authorization step; nothing was kept)",
                        paint(ui.colour_err, Colour::Red, "denied")
                    );
                    return Ok(exit::DENIED);
                }
                return Err(CliError::runtime(
                    msg,
                    "check the requested scope, claims and acr values with the OP's documentation",
                ));
            }
            // A kind of answer newer than this `dtr`.
            _ => {
                return Err(CliError::runtime(
                    "the OP's redirect carried an answer this version of dtr does not handle",
                    "update dtr",
                ));
            }
        }
    };
    cleanup.name = None;
    let short = auth.id().fingerprint().to_string();
    // Follow this one authentication from here on. Its first poll (and so
    // its first event) comes no sooner than its interval after the
    // exchange: nothing can have been missed.
    let handle = client.watch(auth.id());
    let status = handle.status().await;
    let deadline = status
        .as_ref()
        .map(|s| s.deadline.as_secs())
        .or(auth.expires_at().map(UnixTime::as_secs));
    let entry = Entry {
        id: short.clone(),
        store: store_name,
        profile,
        client: s.client.clone(),
        created_at: auth.issued_at().as_secs(),
        deadline,
        status: Status::Pending,
        finished_at: None,
        acknowledged: false,
    };
    state.update_index(|idx| {
        idx.entries.retain(|e| e.id != entry.id);
        idx.entries.push(entry);
        Ok(())
    })?;
    ui.say(format!(
        "The OP accepted the request: verification {short} is {}{}.",
        paint(ui.colour_err, Colour::Yellow, "pending"),
        deadline
            .map(|d| format!(", deadline {}", fmt_deadline(d, now_secs())))
            .unwrap_or_default()
    ));
    if opts.no_wait {
        if ui.json {
            println!(
                "{}",
                json_line(&serde_json::json!({"id": short, "status": "pending", "deadline": deadline}))
            );
        } else {
            println!("{short}");
        }
        ui.say(format!(
            "Wait for it with: dtr{} wait {short}",
            opts.state_flag
        ));
        return Ok(exit::PENDING);
    }
    wait_loop(
        ui,
        state,
        handle,
        &short,
        auth.issued_at(),
        auth.interval(),
        opts,
    )
    .await
    }
    .await;
    client.shutdown().await;
    result
}

/// `dtr verify --device`: the device authorization grant (RFC 8628) with
/// `completion_mode=deferred`, for a machine without a browser. `Ok(auth)`
/// when the AS deferred; `Err(exit code)` when it answered at once (the
/// outcome is printed).
async fn device_verification(
    ui: &Ui,
    client: &DtrClient,
    s: &VerifySettings,
    browser: &Browser,
) -> Result<Result<oidc_dtr::DeferredAuthentication, u8>, CliError> {
    let device = client
        .device_authorization(s.scope.as_deref().unwrap_or(""))
        .await
        .map_err(|e| CliError::from_lib("starting the device flow", &e))?;
    // What the user needs most: printed even under --quiet.
    let uri = term_safe(device.verification_uri().as_str());
    let code = one_line(device.user_code());
    eprintln!("On any device, open:\n\n  {uri}\n\nand enter the code: {code}\n");
    if let Some(c) = device.verification_uri_complete() {
        eprintln!("(or open {} directly)\n", term_safe(c.as_str()));
    }
    match browser {
        #[cfg(feature = "demo")]
        Browser::Mock(op) => {
            ui.say("(dtr demo plays the user: the mock OP completes the device flow)");
            let op = op.clone();
            let code = device.user_code().to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                op.complete_device(&code);
            });
        }
        _ => {}
    }
    ui.say("Waiting for you to finish at that URL ...");
    let mut countdown = Countdown::start(
        *ui,
        device.expires_at().as_secs(),
        format!("enter {code} at {uri}"),
    );
    let redeem = client.device_token(&device);
    tokio::pin!(redeem);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let redeemed = loop {
        tokio::select! {
            r = &mut redeem => break r,
            _ = tick.tick() => countdown.tick(),
        }
    };
    countdown.finish();
    match redeemed.map_err(|e| CliError::from_lib("redeeming the device code", &e))? {
        Redemption::Deferred(auth) => Ok(Ok(*auth)),
        Redemption::Tokens(tokens) => Ok(Err(print_outcome(
            ui,
            "-",
            &Outcome::Tokens(*tokens),
            false,
        ))),
        _ => Err(CliError::runtime(
            "the OP's token response is of a kind this version of dtr does not handle",
            "update dtr",
        )),
    }
}

/// An error building the authorization request; the identity-assurance
/// ones name the flag to change and what the OP offers instead.
fn request_error(client: &DtrClient, e: &oidc_dtr::Error) -> CliError {
    let oidc_dtr::Error::Config(ConfigError::ClaimsRequest(a)) = e else {
        let what = if client.pushes_requests() {
            "pushing the authorization request (PAR)"
        } else {
            "building the authorization request"
        };
        return CliError::from_lib(what, e);
    };
    let offered = |member: &str| -> String {
        match client
            .metadata()
            .additional
            .get(member)
            .and_then(|v| v.as_array())
        {
            Some(list) => {
                let names: Vec<&str> = list.iter().filter_map(|v| v.as_str()).collect();
                format!("the OP offers: {}", one_line(&names.join(", ")))
            }
            None => format!("see `{member}` in the OP's discovery metadata"),
        }
    };
    let fix = match a {
        AssuranceError::Unsupported(u) => match u {
            AssuranceUnsupported::TrustFramework(_) => format!(
                "pick --trust-framework from what {}",
                offered("trust_frameworks_supported")
            ),
            AssuranceUnsupported::EvidenceType(_) => format!(
                "pick --evidence from what {}",
                offered("evidence_supported")
            ),
            AssuranceUnsupported::ClaimInVerifiedClaims(_) => format!(
                "drop it from --verified-claims; {}",
                offered("claims_in_verified_claims_supported")
            ),
            AssuranceUnsupported::ClaimsParameter | AssuranceUnsupported::VerifiedClaims => {
                "this OP does not offer identity assurance: drop --verified-claims and its companion flags".to_owned()
            }
            _ => "change --verified-claims or its companion flags to what the OP's discovery metadata lists".to_owned(),
        },
        _ => "check --verified-claims, --trust-framework, --assurance-level, --verification-max-age and --evidence".to_owned(),
    };
    CliError::usage(
        format!(
            "the verified-claims request cannot be sent to {}: {a}",
            client.metadata().issuer
        ),
        fix,
    )
}

/// Removes a store file unless disarmed.
struct StoreCleanup<'a> {
    state: &'a StateDir,
    name: Option<String>,
}

impl Drop for StoreCleanup<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.name.take() {
            let _ = self.state.remove_store(&n);
        }
    }
}

#[cfg(feature = "demo")]
fn spawn_mock_browser(op: MockOp, url: url::Url) {
    tokio::spawn(async move {
        let cb = match op.browse(&url).await {
            Ok(cb) => cb,
            Err(e) => {
                eprintln!("dtr demo: the simulated browser failed: {e}");
                return;
            }
        };
        if let Err(e) = crate::demo::deliver(&cb.url, cb.form_body.as_deref()).await {
            eprintln!("dtr demo: could not reach the loopback listener: {e}");
        }
    });
}

/// Waits for the outcome with live progress; Ctrl-C leaves it pending.
///
/// The authentication's own events (through its handle) drive the live
/// line; the timer only redraws it from the last known status.
async fn wait_loop(
    ui: Ui,
    state: &StateDir,
    mut handle: AuthHandle,
    short: &str,
    started: UnixTime,
    interval: Duration,
    opts: &WaitOpts,
) -> Result<u8, CliError> {
    let status = handle.status().await;
    let deadline = status.as_ref().map(|s| s.deadline.as_secs());
    let mut progress = Progress::start(ui, started, deadline, interval);
    progress.set_status(status);
    let waiter = handle.wait();
    tokio::pin!(waiter);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut events_open = true;
    loop {
        tokio::select! {
            r = &mut waiter => {
                progress.finish();
                let outcome = r.map_err(|e| CliError::from_lib("waiting for the outcome", &e))?;
                return finish(ui, state, short, &outcome, opts);
            }
            ev = handle.next_event(), if events_open => match ev {
                Some(PollEvent::Progress { description, .. }) => {
                    progress.set_text(&description);
                    progress.set_status(handle.status().await);
                }
                // IETF `interaction_required`: the user must act at the OP.
                // Printed even under --quiet: without it nothing moves.
                Some(PollEvent::Interaction { uri, .. }) => {
                    match uri {
                        Some(uri) => {
                            progress.suspend(|| show_uri(
                                &ui,
                                "\nThe OP needs you at this URL to go on:",
                                &uri.to_string(),
                                opts.open_browser,
                            ));
                        }
                        None => progress.suspend(|| ui.say("The OP no longer needs anything from you; waiting.")),
                    }
                    progress.set_status(handle.status().await);
                }
                // IETF: the AS named a URL that the SDK refuses to show
                // (not https, user info, ...): say why nothing is shown.
                Some(PollEvent::InteractionRefused { reason, .. }) => {
                    progress.suspend(|| ui.say(format!(
                        "The OP asked you to act at a URL that dtr refuses to show ({}); \
                         waiting. Ask the OP's operator if nothing moves.",
                        one_line(&reason.to_string())
                    )));
                    progress.set_status(handle.status().await);
                }
                // A failed poll the engine retries: the live line shows it
                // (from the status); without one, a plain line.
                Some(PollEvent::Retrying { cause, next_attempt, .. }) => {
                    progress.retrying(cause, next_attempt);
                    progress.set_status(handle.status().await);
                }
                // Held tokens, the outcome (the waiter returns it), or an
                // event newer than this `dtr`.
                Some(_) => progress.set_status(handle.status().await),
                None => events_open = false,
            },
            _ = tick.tick() => progress.tick(),
            _ = &mut ctrl_c => {
                progress.finish();
                eprintln!(
                    "\ndtr: interrupted. Verification {short} is still pending at the OP{}.",
                    deadline.map(|d| format!(" (deadline {})", fmt_deadline(d, now_secs()))).unwrap_or_default()
                );
                eprintln!("Resume waiting with: dtr{} wait {short}", opts.state_flag);
                return Ok(exit::INTERRUPTED);
            }
        }
    }
}

/// Records, prints and (with --ack) acknowledges an outcome.
fn finish(
    ui: Ui,
    state: &StateDir,
    short: &str,
    outcome: &Outcome,
    opts: &WaitOpts,
) -> Result<u8, CliError> {
    let status = display::status_of(outcome);
    let code = print_outcome(&ui, short, outcome, !opts.ack);
    let mut store = None;
    state.update_entry(short, |e| {
        e.status = status;
        e.finished_at.get_or_insert(now_secs());
        if opts.ack {
            e.acknowledged = true;
            store = Some(e.store.clone());
        }
    })?;
    if let Some(name) = store {
        state.remove_store(&name)?;
    }
    Ok(code)
}

/// The entry named on the command line.
fn pick(state: &StateDir, id: Option<&str>, latest: bool) -> Result<Entry, CliError> {
    let index = state.read_index()?;
    match (id, latest) {
        (Some(id), _) => index.find(id).cloned(),
        (None, true) => index.latest().cloned(),
        (None, false) => Err(CliError::usage(
            "no verification named",
            "give its id (see `dtr list`) or --latest",
        )),
    }
}

/// The stored record of an entry (the store stays open in the result).
async fn load_record(
    state: &StateDir,
    entry: &Entry,
) -> Result<(crate::lib_api::FileStore, Record), CliError> {
    if entry.acknowledged {
        return Err(CliError::usage(
            format!(
                "verification {} was acknowledged: its tokens are deleted",
                entry.id
            ),
            "start a new one with `dtr verify`; `dtr purge` removes it from the list",
        ));
    }
    let path = state.store_path(&entry.store);
    if !path.exists() {
        return Err(CliError::runtime(
            format!(
                "the store of verification {} is missing ({})",
                entry.id,
                path.display()
            ),
            "it cannot be resumed; `dtr purge` removes it from the list",
        ));
    }
    let store = state.open_store(&entry.store)?;
    let records = store.load_active().await.map_err(|e| {
        CliError::runtime(
            format!("reading the store of verification {}: {e}", entry.id),
            "check the state directory and its key file",
        )
    })?;
    let record = records
        .into_iter()
        .find(|r| r.fingerprint().to_string() == entry.id)
        .ok_or_else(|| {
            CliError::runtime(
                format!("verification {} is no longer in its store", entry.id),
                "its outcome was acknowledged or expired; `dtr purge` removes it from the list",
            )
        })?;
    Ok((store, record))
}

/// `dtr wait`.
pub(crate) async fn wait(
    ui: Ui,
    state: &StateDir,
    id: Option<&str>,
    latest: bool,
    tls: &TlsArgs,
    opts: &WaitOpts,
) -> Result<u8, CliError> {
    let mut entry = pick(state, id, latest)?;
    let previous = override_tls(&mut entry.client, tls)?;
    let (store, record) = load_record(state, &entry).await?;
    if !record.is_finished() {
        check_bound_certificate(
            &entry.client,
            previous.as_ref(),
            record.auth.client_cert_thumbprint(),
            &entry.id,
        )?;
    }
    let auth_id = record.id().clone();
    let client = build_client_with(&entry.client, Some(store), previous.as_ref()).await?;
    let handle = client.watch(&auth_id);
    // Stop the poll driver and close the store before the process exits,
    // whichever way this ends.
    let result: Result<u8, CliError> = async {
        if !record.is_finished() {
            ui.say(format!(
                "Resuming verification {} (started {}).",
                entry.id,
                fmt_time(entry.created_at)
            ));
        }
        wait_loop(
            ui,
            state,
            handle,
            &entry.id,
            record.auth.issued_at(),
            record.auth.interval(),
            opts,
        )
        .await
    }
    .await;
    client.shutdown().await;
    result
}

/// `dtr cancel`: tells the OP, and only then stops waiting. When no way
/// to tell the OP is known, nothing changes (exit 2) unless `local_only`.
pub(crate) async fn cancel(
    ui: Ui,
    state: &StateDir,
    id: &str,
    cancel_endpoint: Option<String>,
    local_only: bool,
    tls: &TlsArgs,
) -> Result<u8, CliError> {
    let mut entry = pick(state, Some(id), false)?;
    let previous = override_tls(&mut entry.client, tls)?;
    let (store, record) = load_record(state, &entry).await?;
    if record.is_finished() {
        ui.say(format!(
            "Verification {} has already ended ({}); nothing to cancel.",
            entry.id,
            entry.status.as_str()
        ));
        return Ok(exit::OK);
    }
    if cancel_endpoint.is_some() {
        entry.client.cancel_endpoint = cancel_endpoint;
    }
    check_bound_certificate(
        &entry.client,
        previous.as_ref(),
        record.auth.client_cert_thumbprint(),
        &entry.id,
    )?;
    let auth_id = record.id().clone();
    let client = build_client_with(&entry.client, Some(store), previous.as_ref()).await?;
    let result: Result<u8, CliError> = async {
        // The IETF draft cancels at the AS's revocation endpoint (from its
        // metadata); the OIDC one needs the endpoint configured. Without
        // either, the library would stop polling without telling the OP:
        // the verification would look cancelled here while the OP still
        // has it open, and could no longer be cancelled there.
        let can_tell = match record.auth.profile() {
            Profile::Ietf => client.metadata().revocation_endpoint().is_some(),
            _ => entry.client.cancel_endpoint.is_some(),
        };
        if !can_tell && !local_only {
            let how = match record.auth.profile() {
                Profile::Ietf => "the AS publishes no revocation_endpoint",
                _ => "no cancellation endpoint is known (--cancel-endpoint, DTR_CANCEL_ENDPOINT, or the profile's cancel_endpoint)",
            };
            return Err(CliError::usage(
                format!(
                    "verification {} cannot be cancelled at the OP: {how}; nothing was changed, it is still pending",
                    entry.id
                ),
                format!(
                    "pass --cancel-endpoint URL (the OP's cancellation endpoint), or `dtr cancel {} --local-only` to stop waiting here while the OP keeps it open",
                    entry.id
                ),
            ));
        }
        let told = client
            .cancel(&auth_id)
            .await
            .map_err(|e| {
                let mut err = CliError::from_lib("cancelling at the OP", &e);
                err.cause.push_str("; nothing was changed here: the verification is still pending");
                err
            })?;
        match told {
            CancelResult::LocalOnly => ui.say(format!(
                "dtr: stopped waiting here only (--local-only): the OP was not told and keeps verification {} open until it expires there",
                entry.id
            )),
            CancelResult::SentUnconfirmed => ui.say(
                "dtr: the revocation was sent, but the AS does not say it supports revoking \
                 deferral codes: its answer does not confirm the cancellation",
            ),
            _ => {}
        }
        let outcome = client
            .wait(&auth_id)
            .await
            .map_err(|e| CliError::from_lib("cancelling", &e))?;
        let status = display::status_of(&outcome);
        state.update_entry(&entry.id, |e| {
            e.status = status;
            e.finished_at.get_or_insert(now_secs());
        })?;
        if status == Status::Cancelled {
            ui.say(format!(
                "Verification {} is {}{}.",
                entry.id,
                paint(ui.colour_err, Colour::Yellow, "cancelled"),
                if told == CancelResult::LocalOnly { " here (not at the OP)" } else { "" }
            ));
            Ok(exit::OK)
        } else {
            // A poll in flight brought the outcome first.
            ui.say(format!(
                "Verification {} ended before the cancellation took effect:",
                entry.id
            ));
            Ok(print_outcome(&ui, &entry.id, &outcome, true))
        }
    }
    .await;
    client.shutdown().await;
    result
}

/// `dtr userinfo`: the UserInfo endpoint, called with a finished
/// verification's stored access token (and its DPoP key when bound).
pub(crate) async fn userinfo(
    ui: Ui,
    state: &StateDir,
    id: Option<&str>,
    latest: bool,
    tls: &TlsArgs,
) -> Result<u8, CliError> {
    let mut entry = pick(state, id, latest)?;
    let previous = override_tls(&mut entry.client, tls)?;
    let (store, record) = load_record(state, &entry).await?;
    let tokens = match record.outcome.as_ref().map(|o| &o.outcome) {
        Some(Outcome::Tokens(t)) => t.clone(),
        Some(_) => {
            return Err(CliError::usage(
                format!(
                    "verification {} ended without tokens ({})",
                    entry.id,
                    entry.status.as_str()
                ),
                "only a verification that received tokens has an access token to call UserInfo with",
            ));
        }
        None => {
            return Err(CliError::usage(
                format!("verification {} is still pending", entry.id),
                format!("wait for it first: `dtr wait {}`", entry.id),
            ));
        }
    };
    drop(store);
    let client = build_client_with(&entry.client, None, previous.as_ref()).await?;
    let result = client.userinfo(&tokens).await;
    client.shutdown().await;
    let info = result.map_err(|e| CliError::from_lib("calling the UserInfo endpoint", &e))?;
    let claims = serde_json::Value::Object(info.claims().unverified.clone());
    if ui.json {
        let checked = info.verified_claims();
        let doc = serde_json::json!({
            "id": entry.id,
            "subject": info.subject(),
            "claims": claims,
            "verified_claims": {
                "requested": checked.requested.iter().map(display::assured_json).collect::<Vec<_>>(),
                "unrequested": checked.unrequested.iter().map(display::assured_json).collect::<Vec<_>>(),
            },
        });
        println!("{}", json_line(&doc));
    } else {
        println!("UserInfo of verification {}:", entry.id);
        if let Some(map) = claims.as_object() {
            for (name, value) in map {
                let text = match value {
                    serde_json::Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                println!("  {}: {}", one_line(name), one_line(&text));
            }
        }
    }
    Ok(exit::OK)
}

/// `dtr show`.
pub(crate) async fn show(
    ui: Ui,
    state: &StateDir,
    id: Option<&str>,
    latest: bool,
) -> Result<u8, CliError> {
    let entry = pick(state, id, latest)?;
    let (_store, record) = load_record(state, &entry).await?;
    match &record.outcome {
        Some(o) => Ok(print_outcome(&ui, &entry.id, &o.outcome, true)),
        None => {
            let deadline = record.machine.deadline().as_secs();
            if ui.json {
                println!(
                    "{}",
                    json_line(
                        &serde_json::json!({"id": entry.id, "status": "pending", "deadline": deadline})
                    )
                );
            } else {
                eprintln!(
                    "Verification {} is pending (deadline {}); resume with: dtr wait {}",
                    entry.id,
                    fmt_deadline(deadline, now_secs()),
                    entry.id
                );
            }
            Ok(exit::PENDING)
        }
    }
}

/// `dtr ack`: the outcome has been taken; its tokens are deleted.
pub(crate) async fn ack(ui: Ui, state: &StateDir, id: &str) -> Result<u8, CliError> {
    let entry = pick(state, Some(id), false)?;
    if entry.acknowledged {
        ui.say(format!(
            "Verification {} is already acknowledged.",
            entry.id
        ));
        return Ok(exit::OK);
    }
    let (store, record) = load_record(state, &entry).await?;
    if !record.is_finished() {
        return Err(CliError::usage(
            format!("verification {} is still pending", entry.id),
            format!(
                "wait for it (`dtr wait {0}`) or cancel it (`dtr cancel {0}`)",
                entry.id
            ),
        ));
    }
    drop(store);
    state.update_entry(&entry.id, |e| e.acknowledged = true)?;
    state.remove_store(&entry.store)?;
    ui.say(format!(
        "Verification {} acknowledged; its tokens are deleted.",
        entry.id
    ));
    Ok(exit::OK)
}

/// `dtr list`.
pub(crate) fn list(ui: Ui, state: &StateDir) -> Result<u8, CliError> {
    let index = state.read_index()?;
    let now = now_secs();
    if ui.json {
        let items: Vec<_> = index
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.id, "status": e.status.as_str(), "issuer": e.client.issuer,
                    "client_id": e.client.client_id, "profile": e.profile,
                    "created_at": e.created_at, "deadline": e.deadline,
                    "finished_at": e.finished_at, "acknowledged": e.acknowledged,
                })
            })
            .collect();
        println!("{}", json_line(&serde_json::Value::Array(items)));
        return Ok(exit::OK);
    }
    if index.entries.is_empty() {
        ui.say("No verifications. Start one with `dtr verify`.");
        return Ok(exit::OK);
    }
    println!(
        "{:<8}  {:<STATUS_W$}  {:<16}  {:<16}  ISSUER / CLIENT",
        "ID", "STATUS", "STARTED (UTC)", "DEADLINE"
    );
    for e in &index.entries {
        let mut status = e.status.as_str().to_owned();
        if e.acknowledged {
            status.push_str(" (acked)");
        } else if e.status == Status::Pending && e.deadline.is_some_and(|d| d <= now) {
            status.push_str(" (overdue)");
        }
        let deadline = match (e.status, e.deadline) {
            (Status::Pending, Some(d)) if d > now => {
                format!("in {}", display::fmt_duration(Duration::from_secs(d - now)))
            }
            (Status::Pending, Some(_)) => "passed".to_owned(),
            (_, Some(d)) => fmt_minute(d),
            (_, None) => "-".to_owned(),
        };
        let pad = " ".repeat(STATUS_W.saturating_sub(status.chars().count()));
        let who = one_line(&format!("{} / {}", e.client.issuer, e.client.client_id));
        println!(
            "{:<8}  {}{pad}  {:<16}  {:<16}  {}",
            e.id,
            paint(ui.colour_out, display::status_colour(e.status), &status),
            fmt_minute(e.created_at),
            deadline,
            cut(&who, LIST_WIDTH - LIST_FIXED)
        );
    }
    Ok(exit::OK)
}

/// `dtr list` fits this many columns.
const LIST_WIDTH: usize = 100;
/// The width of its STATUS column.
const STATUS_W: usize = 17;
/// The columns before ISSUER / CLIENT (with their separators).
const LIST_FIXED: usize = 8 + 2 + STATUS_W + 2 + 16 + 2 + 16 + 2;

/// `2026-11-30 10:41` (UTC).
fn fmt_minute(secs: u64) -> String {
    fmt_time(secs).chars().take(16).collect()
}

/// `s` cut to `width` characters, with `…` when cut.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `dtr purge`: removes finished verifications (their stores and entries).
pub(crate) fn purge(ui: Ui, state: &StateDir) -> Result<u8, CliError> {
    let removed = state.update_index(|idx| {
        let (done, keep): (Vec<Entry>, Vec<Entry>) = idx
            .entries
            .drain(..)
            .partition(|e| e.status != Status::Pending);
        idx.entries = keep;
        Ok(done)
    })?;
    for e in &removed {
        state.remove_store(&e.store)?;
    }
    ui.say(format!(
        "Removed {} finished verification{}.",
        removed.len(),
        if removed.len() == 1 { "" } else { "s" }
    ));
    Ok(exit::OK)
}
