//! Client authentication at the token endpoint (OIDC Core §9).
//!
//! A fresh set of credentials is produced for *every* request: that is what
//! lets the JWT-based methods mint a new assertion per poll.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use crate::error::{ConfigError, Error};
use crate::secret::ClientSecret;

/// How the client authenticates to the token endpoint.
#[derive(Clone)]
#[non_exhaustive]
pub enum ClientAuth {
    /// A public client (`none`): only `client_id` is sent. Public clients
    /// should sender-constrain their tokens with DPoP.
    None,
    /// `client_secret_basic`: HTTP Basic with the form-urlencoded id and secret
    /// (RFC 6749 §2.3.1).
    ClientSecretBasic(ClientSecret),
    /// `client_secret_post`: `client_id` and `client_secret` in the body.
    ClientSecretPost(ClientSecret),
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method_name())
    }
}

impl ClientAuth {
    /// The registered name of the method (`token_endpoint_auth_method`).
    pub fn method_name(&self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::ClientSecretBasic(_) => "client_secret_basic",
            ClientAuth::ClientSecretPost(_) => "client_secret_post",
        }
    }

    /// Whether the credentials travel only in headers (so a JSON body can be
    /// used, as G1 requires for JSON cancellation requests).
    pub fn is_header_based(&self) -> bool {
        matches!(self, ClientAuth::ClientSecretBasic(_))
    }

    /// Whether this is a public client.
    pub fn is_public(&self) -> bool {
        matches!(self, ClientAuth::None)
    }

    /// Adds the credentials to a request's headers and form parameters.
    pub(crate) fn apply(
        &self,
        client_id: &str,
        headers: &mut HeaderMap,
        params: &mut Vec<(&'static str, String)>,
    ) -> Result<(), Error> {
        match self {
            ClientAuth::None => params.push(("client_id", client_id.to_owned())),
            ClientAuth::ClientSecretPost(secret) => {
                params.push(("client_id", client_id.to_owned()));
                params.push(("client_secret", secret.secret().to_owned()));
            }
            ClientAuth::ClientSecretBasic(secret) => {
                headers.insert(AUTHORIZATION, basic_header(client_id, secret.secret())?);
            }
        }
        Ok(())
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, as RFC 6749 §2.3.1
/// requires (many clients forget the url-encoding step).
fn basic_header(client_id: &str, secret: &str) -> Result<HeaderValue, Error> {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(client_id), enc(secret));
    let mut v = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(raw.as_bytes())))
        .map_err(|_| ConfigError::Invalid {
            field: "client_secret",
            reason: "cannot be sent in a header".into(),
        })?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_url_encodes_before_base64() {
        let mut h = HeaderMap::new();
        let mut p = Vec::new();
        ClientAuth::ClientSecretBasic(ClientSecret::new("p@ss:w rd"))
            .apply("my client", &mut h, &mut p)
            .unwrap();
        assert!(p.is_empty());
        let v = h.get(AUTHORIZATION).unwrap().to_str().unwrap();
        let decoded = STANDARD.decode(v.strip_prefix("Basic ").unwrap()).unwrap();
        assert_eq!(
            std::str::from_utf8(&decoded).unwrap(),
            "my+client:p%40ss%3Aw+rd"
        );
        assert!(h.get(AUTHORIZATION).unwrap().is_sensitive());
    }

    #[test]
    fn post_and_none_use_the_body() {
        let mut h = HeaderMap::new();
        let mut p = Vec::new();
        ClientAuth::ClientSecretPost(ClientSecret::new("s"))
            .apply("c", &mut h, &mut p)
            .unwrap();
        assert_eq!(
            p,
            vec![
                ("client_id", "c".to_owned()),
                ("client_secret", "s".to_owned())
            ]
        );
        assert!(h.is_empty());
        let mut p = Vec::new();
        ClientAuth::None.apply("c", &mut h, &mut p).unwrap();
        assert_eq!(p, vec![("client_id", "c".to_owned())]);
    }

    #[test]
    fn debug_shows_only_the_method() {
        let a = ClientAuth::ClientSecretPost(ClientSecret::new("topsecret"));
        assert_eq!(format!("{a:?}"), "client_secret_post");
    }
}
