//! Polling with a `deferred_auth_id` (or deferral code) and its errors, and
//! the start of a deferred authentication (`defer`).

use super::*;

/// A poll under one profile: a handle of the other profile is unknown here.
pub(super) fn poll_as(
    st: &mut OpState,
    client_id: &str,
    id: &str,
    proof: Option<&checks::Proof>,
    ietf: bool,
) -> http::Response<Full<Bytes>> {
    if st.auths.get(id).is_some_and(|r| r.ietf != ietf) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("unknown deferral"),
        );
    }
    poll(st, client_id, id, proof)
}

pub(super) fn poll(
    st: &mut OpState,
    client_id: &str,
    id: &str,
    proof: Option<&checks::Proof>,
) -> http::Response<Full<Bytes>> {
    let now = st.now();
    let auto = st.config.auto_approve;
    let enforce = st.config.enforce_interval;
    let expire = st.config.expire_authentications;
    let redelivery = st.config.redelivery_window;
    let script = st.config.progress_script.clone();
    let strict = st.config.strict_interval;
    let Some(rec) = st.auths.get_mut(id) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("unknown deferred_auth_id"),
        );
    };
    if rec.client_id != client_id {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("unknown deferred_auth_id"),
        );
    }
    if let Err(r) = check_binding(rec.jkt.as_deref(), proof) {
        return r;
    }
    // A poll of this authentication, processed: in strict mode the next one
    // counts from the moment this answer leaves.
    st.flights.mark_answer(id);
    if expire && rec.state == AuthState::Pending && rec.expires_at.is_some_and(|e| now >= e) {
        rec.state = AuthState::Expired;
    }
    match rec.state {
        AuthState::Expired => return oauth_error(StatusCode::BAD_REQUEST, "expired_token", None),
        AuthState::Redeemed => {
            // An OP with an idempotent re-delivery window answers a repeat
            // of the redeeming request with the same tokens.
            if let (Some(grace), Some((at, body))) = (redelivery, &rec.issued)
                && now < at.saturating_add(grace)
            {
                return json_response(StatusCode::OK, body);
            }
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                Some("already redeemed"),
            );
        }
        AuthState::Cancelled => {
            return oauth_error(StatusCode::BAD_REQUEST, "access_denied", Some("cancelled"));
        }
        _ => {}
    }
    let early = if strict {
        // From the moment the OP's previous answer (the exchange's or
        // initial token request's, then each poll's) left, no tolerance.
        st.flights.strict_early(id, now, rec.interval)
    } else {
        enforce
            && rec
                .last_poll
                .is_some_and(|last| now < last.saturating_add(Duration::from_secs(rec.interval)))
    };
    if early {
        rec.interval = rec.interval.saturating_add(5);
        rec.slow_downs += 1;
        rec.last_poll = Some(now);
        st.flights.slow_down();
        return oauth_error(StatusCode::BAD_REQUEST, "slow_down", None);
    }
    rec.last_poll = Some(now);
    rec.polls += 1;
    if rec.state == AuthState::Pending {
        let approve = match auto {
            AutoApprove::Never => false,
            AutoApprove::AfterPolls(n) => rec.polls >= n,
            AutoApprove::AfterDelay(d) => now >= rec.created_at.saturating_add(d),
        };
        if approve {
            rec.state = AuthState::Approved;
        }
    }
    match rec.state.clone() {
        AuthState::Pending => {
            let n = rec.polls as usize;
            let progress = script
                .get(n.saturating_sub(1))
                .or(script.last())
                .cloned()
                .unwrap_or_else(|| rec.progress.clone());
            match &rec.interaction_uri {
                Some(uri) if rec.ietf => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({
                        "error": "interaction_required",
                        "error_description": progress,
                        "interaction_uri": uri,
                    }),
                ),
                _ => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "authorization_pending",
                    Some(&progress),
                ),
            }
        }
        AuthState::Denied { description } => oauth_error(
            StatusCode::BAD_REQUEST,
            "access_denied",
            description.as_deref(),
        ),
        AuthState::Approved => {
            rec.state = AuthState::Redeemed;
            let grant = rec.grant.clone();
            let resp = token_response(st, client_id, &grant, proof);
            if let (Some(body), Some(rec)) = (st.last_token_body.take(), st.auths.get_mut(id)) {
                rec.issued = Some((now, body));
            }
            resp
        }
        AuthState::Expired | AuthState::Redeemed | AuthState::Cancelled => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", None)
        }
    }
}

/// The IETF deferred response: a new deferral, HTTP 400 with
/// `authorization_pending` (or `interaction_required`), `deferral_code`,
/// `expires_in` and `interval`.
pub(crate) fn defer(
    st: &mut OpState,
    client_id: &str,
    grant: Grant,
    params: &[(String, String)],
    proof: Option<&checks::Proof>,
    effects: &mut Vec<Effect>,
) -> http::Response<Full<Bytes>> {
    let now = st.now();
    let code = st.random(32);
    let interval = st.config.interval.unwrap_or(5);
    let expires_in = st.config.expires_in.unwrap_or(3600);
    let interaction_uri = st.config.interaction_uri.clone();
    let progress = st.config.progress.clone();
    st.auths.insert(
        code.clone(),
        AuthRecord {
            client_id: client_id.to_owned(),
            grant,
            created_at: now,
            expires_at: Some(now.saturating_add(Duration::from_secs(expires_in))),
            interval,
            last_poll: None,
            polls: 0,
            slow_downs: 0,
            state: AuthState::Pending,
            progress: progress.clone(),
            notification_token: param(params, "client_notification_token").map(str::to_owned),
            jkt: proof.map(|p| p.jkt.clone()),
            issued: None,
            ietf: true,
            interaction_uri: interaction_uri.clone(),
        },
    );
    if let AutoApprove::AfterDelay(d) = st.config.auto_approve {
        effects.push(Effect::ApproveAt(code.clone(), now.saturating_add(d)));
    }
    st.flights.mark_answer(&code);
    let mut body = json!({
        "error": if interaction_uri.is_some() { "interaction_required" } else { "authorization_pending" },
        "error_description": progress,
        "deferral_code": code,
        "expires_in": expires_in,
        "interval": interval,
    });
    if let Some(u) = interaction_uri {
        body["interaction_uri"] = Value::String(u);
    }
    json_response(StatusCode::BAD_REQUEST, &body)
}
