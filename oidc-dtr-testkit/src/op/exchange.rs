//! The Deferred Code Exchange: redeeming a deferred code for a
//! `deferred_auth_id` (or the tokens at once).

use super::*;

/// How long codes (deferred or plain) stay redeemable.
pub(super) const CODE_LIFETIME: Duration = Duration::from_secs(600);

/// Looks up an unused, unexpired code of `kind` issued to `client_id`, and
/// marks it used.
pub(super) fn redeem_code(
    st: &mut OpState,
    client_id: &str,
    code: &str,
    kind: CodeKind,
) -> Result<CodeRecordSnapshot, http::Response<Full<Bytes>>> {
    let now = st.now();
    let invalid = |why: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", Some(why));
    let rec = st
        .codes
        .get_mut(code)
        .ok_or_else(|| invalid("unknown code"))?;
    if rec.kind != kind {
        return Err(invalid("wrong kind of code"));
    }
    if rec.client_id != client_id {
        return Err(invalid("code was issued to another client"));
    }
    if rec.used {
        return Err(invalid("code already used"));
    }
    if now > rec.created_at.saturating_add(CODE_LIFETIME) {
        return Err(invalid("code expired"));
    }
    rec.used = true;
    Ok(CodeRecordSnapshot {
        redirect_uri: rec.redirect_uri.clone(),
        nonce: rec.nonce.clone(),
        code_challenge: rec.code_challenge.clone(),
        scope: rec.scope.clone(),
        auth_time: rec.auth_time,
        claims: rec.claims.clone(),
    })
}

pub(super) struct CodeRecordSnapshot {
    pub(super) redirect_uri: String,
    pub(super) nonce: Option<String>,
    pub(super) code_challenge: Option<String>,
    pub(super) scope: String,
    pub(super) auth_time: UnixTime,
    pub(super) claims: Option<String>,
}

pub(super) fn exchange(
    st: &mut OpState,
    client_id: &str,
    code: &str,
    params: &[(String, String)],
    proof: Option<&checks::Proof>,
    effects: &mut Vec<Effect>,
) -> http::Response<Full<Bytes>> {
    let rec = match redeem_code(st, client_id, code, CodeKind::Deferred) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let now = st.now();
    let id = st.random(32);
    let cfg = &st.config;
    let interval = cfg.interval.unwrap_or(5);
    let expires_in = cfg.expires_in;
    let interim = cfg.interim_id_token;
    let grant = Grant {
        claims: rec.claims,
        ..st.grant(rec.nonce, rec.scope, rec.auth_time)
    };
    let record = AuthRecord {
        client_id: client_id.to_owned(),
        grant,
        created_at: now,
        expires_at: expires_in.map(|s| now.saturating_add(Duration::from_secs(s))),
        interval,
        last_poll: None,
        polls: 0,
        slow_downs: 0,
        state: AuthState::Pending,
        progress: st.config.progress.clone(),
        notification_token: param(params, "deferred_notification_token").map(str::to_owned),
        jkt: proof.map(|p| p.jkt.clone()),
        issued: None,
        ietf: false,
        interaction_uri: None,
    };
    if let AutoApprove::AfterDelay(d) = st.config.auto_approve {
        effects.push(Effect::ApproveAt(id.clone(), now.saturating_add(d)));
    }
    let mut body = Map::new();
    body.insert("deferred_auth_id".into(), Value::String(id.clone()));
    if let Some(e) = expires_in {
        body.insert("expires_in".into(), json!(e));
    }
    if let Some(i) = st.config.interval {
        body.insert("interval".into(), json!(i));
    }
    if interim {
        let fault = st.config.interim_id_token_fault.clone();
        match issue_id_token(st, client_id, &record.grant, None, now, fault.as_ref()) {
            Ok(Some(jwt)) => {
                body.insert("interim_id_token".into(), Value::String(jwt));
            }
            Ok(None) => {}
            Err(_) => return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        }
    }
    st.flights.mark_answer(&id);
    st.auths.insert(id, record);
    json_response(StatusCode::OK, &Value::Object(body))
}
