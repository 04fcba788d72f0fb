//! From the settings a verification recorded to a client: the secret and
//! key files (refused when others may read them), the client certificate
//! and trust roots of mutual TLS, the FAPI 2.0 mode, PAR and request
//! objects.

use std::path::Path;

use crate::error::CliError;
use crate::lib_api::{
    Algorithm, CancellationConfig, ClientAuth, ClientIdentity, ConfigError, DpopConfig, DtrClient,
    FileStore, HttpConfig, SigningKey,
};
use crate::settings::{TlsArgs, absolute, cert_spec};
use crate::state::{AuthSpec, CertSpec, ClientSpec, KeySpec};

/// Reads a secret file: the whole file, without the trailing newline.
/// A file that other users may read (group or world bits, on Unix) is
/// refused: the secret may already be known to them.
fn read_secret(path: &Path, what: &str, flag: &str) -> Result<String, CliError> {
    let cannot = |e: std::io::Error| {
        CliError::usage(
            format!("cannot read the {what} file {}: {e}", path.display()),
            format!("check {flag}: the file must exist and be readable by you"),
        )
    };
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(cannot)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(CliError::usage(
                format!(
                    "the {what} file {} may be read by other users (mode {:o}): refusing to use it",
                    path.display(),
                    mode & 0o777
                ),
                format!(
                    "run `chmod 600 {}`, and replace the {what} if others may have read it",
                    crate::shell_quote(&path.display().to_string())
                ),
            ));
        }
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(cannot)?;
    let trimmed = text.trim_end_matches(['\r', '\n']).to_owned();
    if trimmed.is_empty() {
        return Err(CliError::usage(
            format!("the {what} file {} is empty", path.display()),
            format!("put the {what} in it, or drop {flag}"),
        ));
    }
    Ok(trimmed)
}

/// Reads a public file (a certificate, trust roots): no permission check.
fn read_public(path: &Path, what: &str, flag: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| {
        CliError::usage(
            format!("cannot read the {what} file {}: {e}", path.display()),
            format!("check {flag}: the file must exist and be readable by you"),
        )
    })
}

/// Loads a signing key file (PEM or JWK, a secret file). Without `alg`,
/// the algorithm comes from the key: a JWK's `alg` or type, or the first
/// that loads a PEM key (FAPI 2.0 allows only PS256, ES256 and EdDSA).
fn load_key(
    spec: &KeySpec,
    fapi2: bool,
    what: &str,
    flag: &str,
    alg_flag: &str,
) -> Result<SigningKey, CliError> {
    let path = &spec.path;
    let text = read_secret(path, what, flag)?;
    let alg = match &spec.alg {
        Some(a) => Some(Algorithm::parse(a).ok_or_else(|| {
            CliError::usage(
                format!("unknown key algorithm `{}`", crate::error::one_line(a)),
                format!("use {alg_flag} with RS256, PS256, ES256, ES384 or EdDSA"),
            )
        })?),
        None => None,
    };
    let unusable = |e: &dyn std::fmt::Display| {
        CliError::usage(
            format!("the {what} in {} cannot be used: {e}", path.display()),
            format!("check the file and {alg_flag}"),
        )
    };
    if text.trim_start().starts_with('{') {
        let jwk: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            CliError::usage(
                format!("the {what} file {} is not a valid JWK: {e}", path.display()),
                "give a PEM file or a JWK with the private members",
            )
        })?;
        // An RSA JWK without `alg` is RS256, which FAPI 2.0 forbids: PS256.
        let rsa = jwk.get("kty").and_then(|k| k.as_str()) == Some("RSA");
        let default = alg.or((fapi2 && rsa).then_some(Algorithm::PS256));
        return SigningKey::from_jwk(&jwk, default).map_err(|e| unusable(&e));
    }
    if let Some(alg) = alg {
        return SigningKey::from_pem(alg, &text).map_err(|e| unusable(&e));
    }
    let candidates: &[Algorithm] = if fapi2 {
        &[Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA]
    } else {
        &[
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ]
    };
    candidates
        .iter()
        .find_map(|&a| SigningKey::from_pem(a, &text).ok())
        .ok_or_else(|| {
            unusable(&format!(
                "not a {} private key",
                if fapi2 {
                    "RSA, EC P-256 or Ed25519 (FAPI 2.0)"
                } else {
                    "RSA, EC P-256/P-384 or Ed25519"
                }
            ))
        })
}

fn client_auth(spec: &ClientSpec) -> Result<ClientAuth, CliError> {
    Ok(match &spec.auth {
        AuthSpec::None => ClientAuth::None,
        AuthSpec::SecretFile { path } => {
            let secret = read_secret(path, "client secret", "--client-secret-file")?;
            ClientAuth::ClientSecretBasic(secret.into())
        }
        AuthSpec::PrivateKeyFile { path, alg } => {
            let key = KeySpec {
                path: path.clone(),
                alg: alg.clone(),
            };
            ClientAuth::private_key_jwt(load_key(
                &key,
                spec.fapi2,
                "private key",
                "--private-key-file",
                "--private-key-alg",
            )?)
        }
        AuthSpec::TlsClientAuth => ClientAuth::TlsClientAuth,
    })
}

/// The client certificate and its key (a secret file).
fn load_identity(c: &CertSpec) -> Result<ClientIdentity, CliError> {
    let cert = read_public(&c.cert, "client certificate", "--client-cert")?;
    let key = read_secret(&c.key, "client certificate key", "--client-key")?;
    ClientIdentity::from_pem(cert, key).map_err(|e| {
        CliError::usage(
            format!(
                "the client certificate {} and key {} cannot be used: {e}",
                c.cert.display(),
                c.key.display()
            ),
            "give the PEM certificate chain (leaf first) with --client-cert and its PEM private key with --client-key",
        )
    })
}

/// The HTTP settings: the client certificate (and an earlier one that
/// authentications started with it still need), extra trust roots.
fn http_config(spec: &ClientSpec, previous: Option<&CertSpec>) -> Result<HttpConfig, CliError> {
    let mut http = HttpConfig::default();
    if let Some(c) = &spec.client_cert {
        http = http.client_identity(load_identity(c)?);
    }
    if let Some(p) = previous
        && spec.client_cert.as_ref() != Some(p)
    {
        http = http.previous_client_identity(load_identity(p)?);
    }
    if let Some(ca) = &spec.ca {
        let pem = read_public(ca, "CA certificates", "--ca")?;
        http = http.add_root_certificates_pem(pem).map_err(|e| {
            CliError::usage(
                format!("the CA file {} cannot be used: {e}", ca.display()),
                "give PEM CERTIFICATE blocks with --ca",
            )
        })?;
    }
    Ok(http)
}

/// The TLS files of `args` over those a verification recorded: for the
/// commands that talk to the OP again. Returns the recorded certificate
/// when it is replaced (authentications started with it keep it).
pub(crate) fn override_tls(
    spec: &mut ClientSpec,
    args: &TlsArgs,
) -> Result<Option<CertSpec>, CliError> {
    let mut previous = None;
    if let Some(cert) = cert_spec(args.client_cert.clone(), args.client_key.clone())? {
        previous = spec.client_cert.replace(cert);
        if spec.auth == AuthSpec::None {
            spec.auth = AuthSpec::TlsClientAuth;
        }
    }
    if let Some(ca) = &args.ca {
        spec.ca = Some(absolute(ca)?);
    }
    // The recorded pair is only worth keeping when its files still load.
    Ok(previous.filter(|p| load_identity(p).is_ok()))
}

/// Refuses (exit 2, nothing changed) to go on with a verification bound
/// to a client certificate (`bound`, its `x5t#S256`) that neither the
/// recorded nor the given files hold: the library would end it, rejected,
/// rather than poll with another certificate.
pub(crate) fn check_bound_certificate(
    spec: &ClientSpec,
    previous: Option<&CertSpec>,
    bound: Option<&str>,
    id: &str,
) -> Result<(), CliError> {
    let Some(bound) = bound else {
        return Ok(());
    };
    for c in spec.client_cert.iter().chain(previous) {
        if load_identity(c)?.thumbprint() == bound {
            return Ok(());
        }
    }
    Err(CliError::usage(
        format!(
            "verification {id} is bound to the client certificate with x5t#S256 {bound}, which none of the certificate files given or recorded holds (any more)"
        ),
        format!(
            "give that certificate and its key to this command: `--client-cert PATH --client-key PATH`; nothing was changed, verification {id} is still as it was"
        ),
    ))
}

/// Builds the client of a verification, on its store when given.
pub(crate) async fn build_client(
    spec: &ClientSpec,
    store: Option<FileStore>,
) -> Result<DtrClient, CliError> {
    build_client_with(spec, store, None).await
}

/// [`build_client`], keeping an earlier client certificate (see
/// [`override_tls`]).
pub(crate) async fn build_client_with(
    spec: &ClientSpec,
    store: Option<FileStore>,
    previous_cert: Option<&CertSpec>,
) -> Result<DtrClient, CliError> {
    let mut b = DtrClient::builder()
        .issuer(spec.issuer.clone())
        .client_id(spec.client_id.clone())
        .client_auth(client_auth(spec)?)
        .redirect_uri(spec.redirect_uri.clone())
        .http_config(http_config(spec, previous_cert)?)
        .pushed_authorization_requests(spec.par)
        .dpop(if spec.dpop {
            DpopConfig::enabled()
        } else {
            DpopConfig::disabled()
        });
    if let Some(k) = &spec.request_object_key {
        b = b.request_object_signing_key(load_key(
            k,
            spec.fapi2,
            "request-object key",
            "--request-object-key",
            "--request-object-alg",
        )?);
    }
    if spec.fapi2 {
        b = b.fapi2();
    }
    if let Some(url) = &spec.cancel_endpoint {
        let cfg = CancellationConfig::new(url).map_err(|e| {
            CliError::usage(
                format!("--cancel-endpoint is not usable: {e}"),
                "give the OP's cancellation endpoint as an https URL",
            )
        })?;
        b = b.cancellation(cfg);
    }
    if let Some(s) = store {
        b = b.store(s);
    }
    if let Some(d) = spec.draft {
        b = b.profile(d);
    }
    b.build().await.map_err(|e| match &e {
        oidc_dtr::Error::Config(ConfigError::Fapi2 { .. }) => CliError::usage(
            format!("--fapi2: {e}"),
            "change what is named: key algorithms with --private-key-alg or --request-object-alg (PS256, ES256 or EdDSA), DPoP by dropping --no-dpop; or drop --fapi2 (DTR_FAPI2) for an OP that does not require FAPI 2.0",
        ),
        _ => CliError::from_lib(&format!("setting up the client for {}", spec.issuer), &e),
    })
}
