//! Issuing tokens: ID Token claims and signing, and the token response.

use super::*;

pub(super) fn id_token_claims(
    st: &OpState,
    client_id: &str,
    grant: &Grant,
    access_token: Option<&str>,
    now: UnixTime,
) -> Value {
    let mut c = json!({
        "iss": st.issuer,
        "sub": grant.subject,
        "aud": client_id,
        "exp": now.as_secs() + 600,
        "iat": now.as_secs(),
        "auth_time": grant.auth_time.as_secs(),
    });
    if let Some(n) = &grant.nonce {
        c["nonce"] = Value::String(n.clone());
    }
    if let Some(at) = access_token {
        c["at_hash"] = Value::String(half_hash(st.key.algorithm(), at));
    }
    if let Some(obj) = c.as_object_mut() {
        for (k, v) in &st.config.extra_claims {
            obj.insert(k.clone(), v.clone());
        }
    }
    if st.config.identity_assurance {
        let fault = st.config.assurance_fault;
        crate::assurance::insert(&mut c, grant.claims.as_deref(), "id_token", now, fault);
    }
    crate::pages::add_claims(st, grant, &mut c);
    c
}

/// A compact JWS with exactly `header` as its header.
pub(super) fn sign_compact(
    key: &SigningKey,
    header: &Value,
    claims: &Value,
) -> Result<String, KeyError> {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64(&sig)))
}

/// Issues an ID token, broken as `fault` says. `Ok(None)`: no ID token at
/// all ([`IdTokenFault::MissingIdToken`]).
pub(super) fn issue_id_token(
    st: &OpState,
    client_id: &str,
    grant: &Grant,
    access_token: Option<&str>,
    now: UnixTime,
    fault: Option<&IdTokenFault>,
) -> Result<Option<String>, KeyError> {
    let mut c = id_token_claims(st, client_id, grant, access_token, now);
    let secs = now.as_secs();
    let alg = st.key.algorithm();
    let mut header = json!({"alg": alg.as_str()});
    if let Some(kid) = st.key.kid() {
        header["kid"] = Value::String(kid.to_owned());
    }
    let mut key = st.key.clone();
    match fault {
        None | Some(IdTokenFault::BadSignature) => {}
        Some(IdTokenFault::WrongIssuer) => c["iss"] = json!("https://evil.example"),
        Some(IdTokenFault::WrongAudience) => c["aud"] = json!("someone-else"),
        Some(IdTokenFault::ExtraAudience { azp }) => {
            c["aud"] = json!([client_id, "https://other.example/api"]);
            if *azp {
                c["azp"] = json!(client_id);
            }
        }
        Some(IdTokenFault::WrongAzp) => c["azp"] = json!("https://other.example/api"),
        Some(IdTokenFault::MissingNonce) => {
            if let Some(o) = c.as_object_mut() {
                o.remove("nonce");
            }
        }
        Some(IdTokenFault::WrongNonce) => c["nonce"] = json!("not-the-nonce-you-sent"),
        Some(IdTokenFault::Expired) => {
            c["exp"] = json!(secs.saturating_sub(3600));
            c["iat"] = json!(secs.saturating_sub(7200));
        }
        Some(IdTokenFault::NotYetValid) => c["nbf"] = json!(secs + 3600),
        Some(IdTokenFault::IssuedInFuture) => {
            c["iat"] = json!(secs + 3600);
            c["exp"] = json!(secs + 7200);
        }
        Some(IdTokenFault::AlgNone) => {
            let input = format!(
                "{}.{}.",
                b64(br#"{"alg":"none"}"#),
                b64(c.to_string().as_bytes())
            );
            return Ok(Some(input));
        }
        Some(IdTokenFault::WrongAtHash) => {
            c["at_hash"] = json!(half_hash(alg, "some-other-access-token"))
        }
        Some(IdTokenFault::UnknownKid) => {
            key = new_key(alg)?;
            header["kid"] = json!(key.kid().unwrap_or("stray"));
        }
        Some(IdTokenFault::NoKid) => {
            if let Some(o) = header.as_object_mut() {
                o.remove("kid");
            }
        }
        Some(IdTokenFault::CritHeader) => header["crit"] = json!(["exp"]),
        Some(IdTokenFault::Jwe) => {
            let h = b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#);
            return Ok(Some(format!("{h}.a2V5.aXY.Y2lwaGVy.dGFn")));
        }
        Some(IdTokenFault::MissingAuthTime) => {
            if let Some(o) = c.as_object_mut() {
                o.remove("auth_time");
            }
        }
        Some(IdTokenFault::OldAuthTime(d)) => {
            c["auth_time"] = json!(secs.saturating_sub(d.as_secs()))
        }
        Some(IdTokenFault::OtherSubject) => c["sub"] = json!(format!("{}-impostor", grant.subject)),
        Some(IdTokenFault::MissingIdToken) => return Ok(None),
    }
    let mut jwt = sign_compact(&key, &header, &c)?;
    if fault == Some(&IdTokenFault::BadSignature) {
        // Change the first signature character: the signature no longer
        // verifies, and the token still decodes.
        if let Some(dot) = jwt.rfind('.') {
            let first = jwt.as_bytes().get(dot + 1).copied();
            let swapped = if first == Some(b'A') { "B" } else { "A" };
            jwt.replace_range(dot + 1..dot + 2, swapped);
        }
    }
    Ok(Some(jwt))
}

/// The final token response: access token, ID token, refresh token.
pub(crate) fn token_response(
    st: &mut OpState,
    client_id: &str,
    grant: &Grant,
    proof: Option<&checks::Proof>,
) -> http::Response<Full<Bytes>> {
    let dpop = proof.is_some();
    let now = st.now();
    let access_token = st.random(32);
    let fault = st.config.id_token_fault.clone();
    let Ok(id_token) = issue_id_token(
        st,
        client_id,
        grant,
        Some(&access_token),
        now,
        fault.as_ref(),
    ) else {
        return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None);
    };
    let refresh = st.random(32);
    let mut body = json!({
        "access_token": access_token,
        "token_type": if dpop && !st.config.dpop_downgrade { "DPoP" } else { "Bearer" },
        "expires_in": 3600,
        "refresh_token": refresh,
        "scope": grant.scope,
    });
    if let Some(t) = id_token {
        body["id_token"] = Value::String(t);
    }
    let jkt = proof
        .filter(|_| !st.config.dpop_downgrade)
        .map(|p| p.jkt.clone());
    st.last_access_token = Some(access_token.clone());
    st.access_tokens.insert(access_token, (grant.clone(), jkt));
    let resp = json_response(StatusCode::OK, &body);
    st.last_token_body = Some(body);
    resp
}
