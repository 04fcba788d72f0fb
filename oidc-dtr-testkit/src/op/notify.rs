//! Approval on a schedule, and the ping callbacks sent to the client
//! (`notify`, `ping_now`).

use super::*;

/// Approves `id` at `at` (by the OP's clock), then pings.
pub(super) fn schedule_approval(state: Arc<Mutex<OpState>>, id: String, at: UnixTime) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let clock = lock(&state).clock.clone();
    rt.spawn(async move {
        clock.sleep_until(at).await;
        let approved = {
            let mut st = lock(&state);
            match st.auths.get_mut(&id) {
                Some(r) if r.state == AuthState::Pending => {
                    r.state = AuthState::Approved;
                    true
                }
                _ => false,
            }
        };
        if approved {
            notify(&state, &id);
        }
    });
}

/// Where and how to ping for `id`.
pub(super) struct PingTarget {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
    /// The body member: `deferred_auth_id` or (IETF) `deferral_code`.
    key: &'static str,
}

pub(super) fn ping_target(st: &OpState, id: &str) -> Option<PingTarget> {
    let rec = st.auths.get(id)?;
    let endpoint = st
        .clients
        .get(&rec.client_id)?
        .notification_endpoint
        .clone()?;
    Some(PingTarget {
        http: st.ping_http.clone(),
        endpoint,
        token: rec.notification_token.clone(),
        key: if rec.ietf {
            "deferral_code"
        } else {
            "deferred_auth_id"
        },
    })
}

/// Sends the Ping Callback for a finished authentication, in the
/// background, when the client registered an endpoint.
pub(crate) fn notify(state: &Arc<Mutex<OpState>>, id: &str) {
    let target = {
        let st = lock(state);
        if !st.config.send_pings {
            return;
        }
        ping_target(&st, id)
    };
    let Some(t) = target else {
        return;
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let state = state.clone();
    let id = id.to_owned();
    rt.spawn(async move {
        let status = send_ping(&t.http, &t.endpoint, t.key, &id, t.token.as_deref()).await;
        lock(&state).pings.push(PingRecord {
            deferred_auth_id: id,
            forged: false,
            status,
        });
    });
}

/// Sends a ping now (early, duplicate or forged), returning the RP's status.
pub(crate) async fn ping_now(
    state: &Arc<Mutex<OpState>>,
    id: &str,
    forged_token: Option<&str>,
) -> Option<u16> {
    let t = ping_target(&lock(state), id)?;
    let token = forged_token.map(str::to_owned).or(t.token);
    let status = send_ping(&t.http, &t.endpoint, t.key, id, token.as_deref()).await;
    lock(state).pings.push(PingRecord {
        deferred_auth_id: id.to_owned(),
        forged: forged_token.is_some(),
        status,
    });
    status
}

/// POSTs `{key: id}` with the bearer token (none when the client sent
/// none: the IETF AS then omits the header); never follows a redirect.
pub(super) async fn send_ping(
    http: &reqwest::Client,
    endpoint: &str,
    key: &str,
    id: &str,
    token: Option<&str>,
) -> Option<u16> {
    let mut body = Map::new();
    body.insert(key.to_owned(), Value::String(id.to_owned()));
    let mut req = http
        .post(endpoint)
        .header("content-type", "application/json")
        .body(Value::Object(body).to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.send().await.ok().map(|r| r.status().as_u16())
}
