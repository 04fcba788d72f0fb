//! Signed request objects: JWT-Secured Authorization Requests (JAR,
//! RFC 9101), as OpenID Connect Core §6.1 and the FAPI 2.0 Message Signing
//! profile (signing authorization requests, requirements for clients: a
//! JAR sent to the PAR endpoint, `aud` the issuer, an `nbf`, and an `exp`
//! at most 60 minutes later) use them.
//!
//! Every authorization parameter goes inside the JWT (RFC 9101 §4): state,
//! nonce, the PKCE challenge, `claims`, `response_type`, `redirect_uri`,
//! `scope`, ... The claims that make it a JWT of this client for this OP
//! are added: `iss` = the client id, `aud` = the issuer (RFC 9101 §4 and
//! FAPI 2.0 Message Signing: a single string), `iat`, `nbf`, `exp`, a fresh
//! `jti`. The header's `typ` is `oauth-authz-req+jwt` (RFC 9101 §4, §10.8).
//!
//! Pure: the time and the `jti` come in as arguments; the key signs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::error::{ConfigError, Error};
use crate::jose::signer::UnsignedJws;
use crate::jose::{Algorithm, Signer};
use crate::time::UnixTime;

/// Who signs the client's request objects, and their lifetime.
#[derive(Clone)]
pub(crate) struct RequestObjectSigning {
    /// The key (in process) or the external signer (a KMS, an HSM).
    pub(crate) signer: Arc<dyn Signer>,
    /// Whether the signer is an in-process key, whose signature is ready
    /// at once (so a URL can be built without awaiting).
    pub(crate) in_process: bool,
    /// `exp` - `nbf`.
    pub(crate) lifetime: Duration,
}

impl fmt::Debug for RequestObjectSigning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestObjectSigning")
            .field("alg", &self.signer.algorithm())
            .field("in_process", &self.in_process)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// The `typ` of a request object (RFC 9101 §4).
pub(crate) const REQUEST_OBJECT_TYP: &str = "oauth-authz-req+jwt";

/// The longest lifetime (`exp` - `nbf`) the SDK gives a request object: the
/// FAPI 2.0 Message Signing profile allows at most 60 minutes.
pub const MAX_REQUEST_OBJECT_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// The default lifetime of a request object: enough for a browser to reach
/// the OP, short enough that a leaked one is soon worthless.
pub const DEFAULT_REQUEST_OBJECT_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Whether `alg` may sign a request object: asymmetric algorithms only
/// (never `none`, which [`Algorithm`] cannot even express, nor HMAC).
pub(crate) fn check_request_object_alg(alg: Algorithm) -> Result<(), ConfigError> {
    if alg.is_hmac() {
        return Err(ConfigError::Invalid {
            field: "request_object",
            reason: format!(
                "{alg} is a MAC: request objects are signed with the client's private key (PS256, ES256, EdDSA, RS256)"
            ),
        });
    }
    Ok(())
}

/// Checks a configured lifetime: positive and at most
/// [`MAX_REQUEST_OBJECT_LIFETIME`].
pub(crate) fn check_lifetime(lifetime: Duration) -> Result<(), ConfigError> {
    if lifetime.as_secs() == 0 || lifetime > MAX_REQUEST_OBJECT_LIFETIME {
        return Err(ConfigError::Invalid {
            field: "request_object_lifetime",
            reason: "must be between 1 second and 60 minutes".into(),
        });
    }
    Ok(())
}

/// What a request object is made of, besides the authorization parameters.
pub(crate) struct RequestObjectContext<'a> {
    pub client_id: &'a str,
    pub issuer: &'a str,
    pub now: UnixTime,
    pub lifetime: Duration,
    pub jti: String,
}

/// The claims of a request object: every authorization parameter, then the
/// JWT claims (which the parameters cannot override). `claims` is carried
/// as a JSON object and `max_age` as a number (OIDC Core §6.1); every other
/// parameter as the string it would be in a query.
pub(crate) fn request_object_claims(
    params: &[(String, String)],
    ctx: &RequestObjectContext<'_>,
) -> Result<Value, Error> {
    let mut claims = Map::new();
    for (name, value) in params {
        let v = match name.as_str() {
            "claims" => serde_json::from_str::<Value>(value).map_err(|e| ConfigError::Invalid {
                field: "claims",
                reason: format!("not JSON: {e}"),
            })?,
            "max_age" => match value.parse::<u64>() {
                Ok(n) => json!(n),
                Err(_) => json!(value),
            },
            _ => json!(value),
        };
        claims.insert(name.clone(), v);
    }
    let lifetime = ctx.lifetime.min(MAX_REQUEST_OBJECT_LIFETIME);
    let now = ctx.now.as_secs();
    claims.insert("iss".into(), json!(ctx.client_id));
    claims.insert("aud".into(), json!(ctx.issuer));
    claims.insert("client_id".into(), json!(ctx.client_id));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert(
        "exp".into(),
        json!(ctx.now.saturating_add(lifetime).as_secs()),
    );
    claims.insert("jti".into(), json!(ctx.jti));
    Ok(Value::Object(claims))
}

/// A request object to sign: `typ: oauth-authz-req+jwt`, the signer's
/// `alg` and `kid`, and `claims`.
pub(crate) fn unsigned_request_object(
    signer: &dyn Signer,
    claims: &Value,
) -> Result<UnsignedJws, Error> {
    check_request_object_alg(signer.algorithm())?;
    let mut header = Map::new();
    header.insert("typ".into(), json!(REQUEST_OBJECT_TYP));
    Ok(UnsignedJws::for_signer(signer, header, claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(part: &str) -> Value {
        serde_json::from_slice(&crate::jose::b64_decode(part).unwrap()).unwrap()
    }

    #[test]
    fn claims_carry_every_parameter_and_the_jwt_claims() {
        let params = vec![
            ("response_type".to_owned(), "deferred_code".to_owned()),
            ("state".to_owned(), "st".to_owned()),
            ("max_age".to_owned(), "600".to_owned()),
            (
                "claims".to_owned(),
                r#"{"id_token":{"acr":null}}"#.to_owned(),
            ),
            // A parameter may not override a JWT claim.
            ("iss".to_owned(), "someone-else".to_owned()),
        ];
        let ctx = RequestObjectContext {
            client_id: "c1",
            issuer: "https://op.example",
            now: UnixTime::from_secs(1000),
            lifetime: Duration::from_secs(300),
            jti: "j1".into(),
        };
        let c = request_object_claims(&params, &ctx).unwrap();
        assert_eq!(c["response_type"], "deferred_code");
        assert_eq!(c["state"], "st");
        assert_eq!(c["max_age"], 600);
        assert_eq!(c["claims"]["id_token"]["acr"], Value::Null);
        assert_eq!(c["iss"], "c1");
        assert_eq!(c["client_id"], "c1");
        assert_eq!(c["aud"], "https://op.example");
        assert_eq!(
            (c["iat"].as_u64(), c["nbf"].as_u64()),
            (Some(1000), Some(1000))
        );
        assert_eq!(c["exp"], 1300);
        assert_eq!(c["jti"], "j1");
    }

    #[test]
    fn lifetime_is_capped_at_sixty_minutes() {
        let ctx = RequestObjectContext {
            client_id: "c1",
            issuer: "https://op.example",
            now: UnixTime::from_secs(0),
            lifetime: Duration::from_secs(10 * 3600),
            jti: "j".into(),
        };
        let c = request_object_claims(&[], &ctx).unwrap();
        assert_eq!(
            c["exp"].as_u64().unwrap() - c["nbf"].as_u64().unwrap(),
            3600
        );
        assert!(check_lifetime(Duration::from_secs(3601)).is_err());
        assert!(check_lifetime(Duration::ZERO).is_err());
        assert!(check_lifetime(Duration::from_secs(3600)).is_ok());
    }

    #[test]
    fn signed_with_the_jar_typ_and_never_hmac() {
        use crate::jose::SigningKey;
        let key = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid("k1");
        let jwt = unsigned_request_object(&key, &json!({"iss": "c1"}))
            .unwrap()
            .sign_now(&key)
            .unwrap()
            .unwrap();
        let header = decode(jwt.split('.').next().unwrap());
        assert_eq!(header["typ"], REQUEST_OBJECT_TYP);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], "k1");
        let mac = SigningKey::hmac(Algorithm::HS256, &[7u8; 32]).unwrap();
        assert!(unsigned_request_object(&mac, &json!({})).is_err());
    }
}
