//! Configuration: flags, `DTR_*` environment variables (clap merges those
//! two: a flag wins), then a named profile of the config file, then
//! defaults. Secrets are only ever read from files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::error::{CliError, io};
use crate::lib_api::{ClaimsRequest, ClaimsTarget, EvidenceRequest, VerifiedClaimsRequest};
use crate::state::{AuthSpec, CertSpec, ClientSpec, KeySpec};

/// The help heading of the high-assurance options (FAPI 2.0, PAR, JAR,
/// mutual TLS).
pub(crate) const HIGH: &str = "High assurance (FAPI 2.0, PAR, JAR, mTLS)";

/// The TLS identity and trust options: taken by `dtr verify`, and by the
/// commands that talk to the OP again (`wait`, `cancel`, `userinfo`),
/// where they replace the files recorded at `dtr verify` (files moved, or
/// a renewed certificate).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct TlsArgs {
    /// The client certificate chain (PEM, leaf first) for mutual TLS
    /// (RFC 8705), with --client-key. Without --client-secret-file and
    /// --private-key-file it authenticates the client (`tls_client_auth`);
    /// tokens are bound to it. Back-channel calls go to the OP's
    /// mtls_endpoint_aliases.
    #[arg(long, env = "DTR_CLIENT_CERT", value_name = "PATH", help_heading = HIGH)]
    pub client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM). A secret file: refused when
    /// others may read it.
    #[arg(
        long,
        env = "DTR_CLIENT_CERT_KEY",
        value_name = "PATH",
        help_heading = HIGH
    )]
    pub client_key: Option<PathBuf>,
    /// Extra trust roots (PEM certificates) for the OP's TLS endpoints,
    /// e.g. the private CA of its mTLS endpoints.
    #[arg(long, env = "DTR_CA", value_name = "PATH", help_heading = HIGH)]
    pub ca: Option<PathBuf>,
}

/// Who the client is and how it authenticates.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Client")]
pub(crate) struct ClientArgs {
    /// The OP's issuer URL (discovery runs on it).
    #[arg(long, env = "DTR_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,
    /// The client id registered at the OP.
    #[arg(long, env = "DTR_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,
    /// A file holding the client secret (`client_secret_basic`). Without
    /// it and --private-key-file, the client is public.
    #[arg(long, env = "DTR_CLIENT_SECRET_FILE", value_name = "PATH")]
    pub client_secret_file: Option<PathBuf>,
    /// A file holding the client's private key for `private_key_jwt`: PEM
    /// (PKCS#8, PKCS#1 or SEC 1) or a JWK.
    #[arg(
        long,
        env = "DTR_PRIVATE_KEY_FILE",
        value_name = "PATH",
        conflicts_with = "client_secret_file"
    )]
    pub private_key_file: Option<PathBuf>,
    /// The algorithm of the private key (RS256, PS256, ES256, ES384,
    /// EdDSA). Default: a JWK's `alg`, else from the key (RSA: RS256, or
    /// PS256 with --fapi2).
    #[arg(long, env = "DTR_PRIVATE_KEY_ALG", value_name = "ALG")]
    pub private_key_alg: Option<String>,
    /// The OP's cancellation endpoint (used by `dtr cancel`).
    #[arg(long, env = "DTR_CANCEL_ENDPOINT", value_name = "URL")]
    pub cancel_endpoint: Option<String>,
    /// Do not use DPoP (it is on by default).
    #[arg(long, env = "DTR_NO_DPOP")]
    pub no_dpop: bool,
    /// Which Deferred Token Response draft to speak: `oidc` (OpenID
    /// Connect: deferred_code) or `ietf` (IETF OAuth: completion_mode=deferred
    /// on the token request). Default: what the OP's metadata advertises
    /// (oidc when both). Not a config profile (that is --profile).
    #[arg(long, env = "DTR_DRAFT", value_name = "oidc|ietf", value_parser = parse_draft)]
    pub draft: Option<crate::lib_api::Profile>,
    /// Follow the FAPI 2.0 Security Profile: PAR, PKCE S256,
    /// sender-constrained tokens (DPoP, or mTLS with --client-cert), the
    /// `iss` of the redirect, PS256/ES256/EdDSA only; client secrets and
    /// public clients are refused (exit 2): authenticate with
    /// --private-key-file or --client-cert.
    #[arg(long, env = "DTR_FAPI2", help_heading = HIGH)]
    pub fapi2: bool,
    /// Push the authorization request to the OP first (PAR, RFC 9126): the
    /// browser carries only a `request_uri`. On anyway when the OP's
    /// metadata has require_pushed_authorization_requests, and with
    /// --fapi2.
    #[arg(long, env = "DTR_PAR", help_heading = HIGH)]
    pub par: bool,
    /// Sign the authorization request as a request object (JAR, RFC 9101)
    /// with --request-object-key, else with the --private-key-file key.
    #[arg(long, env = "DTR_REQUEST_OBJECT", help_heading = HIGH)]
    pub request_object: bool,
    /// A file holding the key that signs request objects (PEM or JWK; its
    /// public half registered at the OP). Implies --request-object.
    #[arg(
        long,
        env = "DTR_REQUEST_OBJECT_KEY",
        value_name = "PATH",
        help_heading = HIGH
    )]
    pub request_object_key: Option<PathBuf>,
    /// The algorithm of the request-object key (PS256, ES256, EdDSA, RS256,
    /// ES384). Default: --private-key-alg for the --private-key-file key,
    /// else from the key.
    #[arg(
        long,
        env = "DTR_REQUEST_OBJECT_ALG",
        value_name = "ALG",
        help_heading = HIGH
    )]
    pub request_object_alg: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The Deferred Token Response draft named by `--draft`, `DTR_DRAFT` or a
/// config profile's `draft` (not to be confused with a config profile).
pub(crate) fn parse_draft(s: &str) -> Result<crate::lib_api::Profile, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "oidc" => Ok(crate::lib_api::Profile::Oidc),
        "ietf" => Ok(crate::lib_api::Profile::Ietf),
        other => Err(format!(
            "unknown draft `{}`: expected `oidc` (OpenID Connect, deferred_code) or `ietf` (IETF OAuth, completion_mode=deferred)",
            crate::error::one_line(other)
        )),
    }
}

/// The `response_mode` of the authorization request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    /// Redirect with a query string (the default).
    Query,
    /// An auto-submitted form POST to the loopback listener.
    FormPost,
}

/// What the verification asks for.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Request")]
pub(crate) struct RequestArgs {
    /// Scopes to request besides `openid` (space-separated).
    #[arg(long, env = "DTR_SCOPE")]
    pub scope: Option<String>,
    /// The `claims` request parameter: JSON, or @FILE.
    #[arg(long, env = "DTR_CLAIMS", value_name = "JSON|@FILE")]
    pub claims: Option<String>,
    /// Claims wanted verified in the ID token's `verified_claims`
    /// (OpenID Connect for Identity Assurance), e.g.
    /// given_name,family_name,birthdate. Not with --claims.
    #[arg(
        long,
        env = "DTR_VERIFIED_CLAIMS",
        value_name = "CLAIM[,CLAIM...]",
        value_delimiter = ',',
        help_heading = ASSURANCE
    )]
    pub verified_claims: Vec<String>,
    /// Trust frameworks the verification may be done under (repeat it, or
    /// a comma list); with --verified-claims.
    #[arg(
        long,
        env = "DTR_TRUST_FRAMEWORK",
        value_name = "TF",
        value_delimiter = ',',
        help_heading = ASSURANCE
    )]
    pub trust_framework: Vec<String>,
    /// The assurance level asked for; with --verified-claims.
    #[arg(long, env = "DTR_ASSURANCE_LEVEL", value_name = "L", help_heading = ASSURANCE)]
    pub assurance_level: Option<String>,
    /// The oldest verification accepted, in seconds; with --verified-claims.
    #[arg(
        long,
        env = "DTR_VERIFICATION_MAX_AGE",
        value_name = "SECONDS",
        help_heading = ASSURANCE
    )]
    pub verification_max_age: Option<u64>,
    /// Evidence types accepted (document, electronic_record, vouch,
    /// electronic_signature; repeat it, or a comma list); with
    /// --verified-claims.
    #[arg(
        long,
        env = "DTR_EVIDENCE",
        value_name = "TYPE",
        value_delimiter = ',',
        help_heading = ASSURANCE
    )]
    pub evidence: Vec<String>,
    /// `acr_values` (space-separated, preferred first).
    #[arg(long, env = "DTR_ACR_VALUES")]
    pub acr_values: Option<String>,
    /// `login_hint`.
    #[arg(long, env = "DTR_LOGIN_HINT")]
    pub login_hint: Option<String>,
    /// `max_age` in seconds (the ID token's `auth_time` is then checked).
    #[arg(long, env = "DTR_MAX_AGE", value_name = "SECONDS")]
    pub max_age: Option<u64>,
    /// `authorization_details` (RFC 9396): a JSON array, or @FILE.
    #[arg(long, env = "DTR_AUTHORIZATION_DETAILS", value_name = "JSON|@FILE")]
    pub authorization_details: Option<String>,
    /// How the OP sends the browser back.
    #[arg(long, env = "DTR_RESPONSE_MODE", value_enum)]
    pub response_mode: Option<Mode>,
    /// The loopback port for the redirect (default 0: a random free port).
    #[arg(long, env = "DTR_REDIRECT_PORT", value_name = "PORT")]
    pub redirect_port: Option<u16>,
}

/// A profile of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Profile {
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    private_key_file: Option<PathBuf>,
    private_key_alg: Option<String>,
    cancel_endpoint: Option<String>,
    dpop: Option<bool>,
    scope: Option<String>,
    claims: Option<toml::Value>,
    verified_claims: Option<StringList>,
    trust_framework: Option<StringList>,
    assurance_level: Option<String>,
    verification_max_age: Option<u64>,
    evidence: Option<StringList>,
    acr_values: Option<String>,
    login_hint: Option<String>,
    max_age: Option<u64>,
    authorization_details: Option<toml::Value>,
    response_mode: Option<Mode>,
    redirect_port: Option<u16>,
    /// `oidc` or `ietf` (as --draft).
    draft: Option<String>,
    /// As --fapi2.
    fapi2: Option<bool>,
    /// As --par.
    par: Option<bool>,
    /// As --request-object.
    request_object: Option<bool>,
    /// As --request-object-key.
    request_object_key_file: Option<PathBuf>,
    /// As --request-object-alg.
    request_object_alg: Option<String>,
    /// As --client-cert.
    client_cert_file: Option<PathBuf>,
    /// As --client-key.
    client_key_file: Option<PathBuf>,
    /// As --ca.
    ca_file: Option<PathBuf>,
}

/// A list in the config file: an array of strings, or one comma-separated
/// string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum StringList {
    List(Vec<String>),
    Text(String),
}

impl StringList {
    fn into_vec(self) -> Vec<String> {
        match self {
            StringList::List(v) => v,
            StringList::Text(s) => s.split(',').map(str::to_owned).collect(),
        }
    }
}

/// The help heading of the identity-assurance options.
const ASSURANCE: &str = "Identity assurance (exit 8 when not delivered)";

/// The identity-assurance options (`--verified-claims` and its companions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AssuranceSpec {
    /// Claims wanted inside `verified_claims`.
    pub claims: Vec<String>,
    /// Allowed trust frameworks (any when empty).
    pub trust_frameworks: Vec<String>,
    /// The assurance level asked for.
    pub assurance_level: Option<String>,
    /// `max_age` of `verification.time`, in seconds.
    pub max_age: Option<u64>,
    /// Allowed evidence types (any when empty).
    pub evidence: Vec<String>,
}

impl AssuranceSpec {
    /// The typed `claims` request: one `verified_claims` request for the ID
    /// token, built with the library's builder (the library checks it
    /// against the OP's metadata when the authorization request is built).
    pub(crate) fn claims_request(&self) -> ClaimsRequest {
        let mut vc = VerifiedClaimsRequest::new();
        vc = match self.trust_frameworks.as_slice() {
            [] => vc,
            [one] => vc.trust_framework(one.clone()),
            many => vc.trust_frameworks(many.iter().cloned()),
        };
        if let Some(l) = &self.assurance_level {
            vc = vc.assurance_levels([l.clone()]);
        }
        vc = match self.max_age {
            Some(s) => vc.max_age(s),
            None => vc.time(),
        };
        for e in &self.evidence {
            vc = vc.evidence(EvidenceRequest::of_type(e.clone()));
        }
        for c in &self.claims {
            vc = vc.claim(c.clone());
        }
        ClaimsRequest::new().verified_claims_in(ClaimsTarget::IdToken, vc)
    }
}

/// A comma list from a flag or the profile: trimmed, empty items refused.
fn clean_list(flag: &str, items: Vec<String>) -> Result<Vec<String>, CliError> {
    let out: Vec<String> = items.iter().map(|s| s.trim().to_owned()).collect();
    if out.iter().any(String::is_empty) {
        return Err(CliError::usage(
            format!("{flag} has an empty item"),
            format!("give {flag} a comma-separated list without empty items"),
        ));
    }
    Ok(out)
}

/// The identity-assurance options, flags over the profile.
fn assurance(r: &RequestArgs, p: &mut Profile) -> Result<Option<AssuranceSpec>, CliError> {
    let pick = |flag: &Vec<String>, prof: Option<StringList>| {
        if flag.is_empty() {
            prof.map(StringList::into_vec).unwrap_or_default()
        } else {
            flag.clone()
        }
    };
    let claims = clean_list(
        "--verified-claims",
        pick(&r.verified_claims, p.verified_claims.take()),
    )?;
    let spec = AssuranceSpec {
        claims,
        trust_frameworks: clean_list(
            "--trust-framework",
            pick(&r.trust_framework, p.trust_framework.take()),
        )?,
        assurance_level: r.assurance_level.clone().or(p.assurance_level.take()),
        max_age: r.verification_max_age.or(p.verification_max_age.take()),
        evidence: clean_list("--evidence", pick(&r.evidence, p.evidence.take()))?,
    };
    if spec.claims.is_empty() {
        let stray = [
            ("--trust-framework", !spec.trust_frameworks.is_empty()),
            ("--assurance-level", spec.assurance_level.is_some()),
            ("--verification-max-age", spec.max_age.is_some()),
            ("--evidence", !spec.evidence.is_empty()),
        ]
        .into_iter()
        .find(|(_, set)| *set);
        if let Some((flag, _)) = stray {
            return Err(CliError::usage(
                format!("{flag} needs --verified-claims"),
                "name the claims to verify with --verified-claims, e.g. given_name,family_name,birthdate",
            ));
        }
        return Ok(None);
    }
    Ok(Some(spec))
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// The profile used without --profile.
    default_profile: Option<String>,
    /// Named profiles.
    #[serde(default)]
    profile: BTreeMap<String, Profile>,
}

impl ConfigFile {
    /// Reads the config file: `given` (--config / DTR_CONFIG) must exist;
    /// the default location may not.
    pub(crate) fn load(given: Option<&Path>) -> Result<(ConfigFile, Option<PathBuf>), CliError> {
        let (path, required) = match given {
            Some(p) => (p.to_path_buf(), true),
            None => match directories::ProjectDirs::from("org", "oidc-dtr", "dtr") {
                Some(d) => (d.config_dir().join("config.toml"), false),
                None => return Ok((ConfigFile::default(), None)),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok((ConfigFile::default(), None));
            }
            Err(e) => {
                return Err(CliError::usage(
                    format!("cannot read the config file {}: {e}", path.display()),
                    "check --config (DTR_CONFIG): the file must exist and be readable by you",
                ));
            }
        };
        let cfg: ConfigFile = toml::from_str(&text).map_err(|e| {
            CliError::usage(
                format!(
                    "the config file {} is not valid: {}",
                    path.display(),
                    e.message()
                ),
                "fix the file (see `dtr --help` for its format)",
            )
        })?;
        Ok((cfg, Some(path)))
    }

    /// The profile to use: `name`, else `default_profile`, else none.
    pub(crate) fn profile(
        &self,
        name: Option<&str>,
    ) -> Result<(Option<String>, Profile), CliError> {
        let name = name
            .map(str::to_owned)
            .or_else(|| self.default_profile.clone());
        match name {
            None => Ok((None, Profile::default())),
            Some(n) => match self.profile.get(&n) {
                Some(p) => Ok((Some(n), p.clone())),
                None => Err(CliError::usage(
                    format!("no profile `{n}` in the config file"),
                    format!(
                        "add a [profile.{n}] table to the config file, or pick one of: {}",
                        if self.profile.is_empty() {
                            "(none defined)".to_owned()
                        } else {
                            self.profile.keys().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ),
                )),
            },
        }
    }
}

/// Everything `dtr verify` needs, merged.
#[derive(Debug, Clone)]
pub(crate) struct VerifySettings {
    /// The client (without the redirect URI yet).
    pub client: ClientSpec,
    /// Scopes.
    pub scope: Option<String>,
    /// `claims`.
    pub claims: Option<serde_json::Value>,
    /// `verified_claims` wanted in the ID token (a typed `claims` request).
    pub assurance: Option<AssuranceSpec>,
    /// `acr_values`.
    pub acr_values: Option<String>,
    /// `login_hint`.
    pub login_hint: Option<String>,
    /// `max_age`.
    pub max_age: Option<u64>,
    /// `authorization_details` (JSON text).
    pub authorization_details: Option<String>,
    /// The response mode.
    pub response_mode: Mode,
    /// The loopback port.
    pub redirect_port: u16,
}

/// Merges flags/env over the profile.
pub(crate) fn merge(
    c: &ClientArgs,
    r: &RequestArgs,
    mut p: Profile,
) -> Result<VerifySettings, CliError> {
    let assurance = assurance(r, &mut p)?;
    let issuer = c.issuer.clone().or(p.issuer).ok_or_else(|| {
        CliError::usage(
            "no issuer given",
            "pass --issuer URL, set DTR_ISSUER, or use a profile with `issuer`",
        )
    })?;
    let client_id = c.client_id.clone().or(p.client_id).ok_or_else(|| {
        CliError::usage(
            "no client id given",
            "pass --client-id ID, set DTR_CLIENT_ID, or use a profile with `client_id`",
        )
    })?;
    let alg = c.private_key_alg.clone().or(p.private_key_alg);
    let auth = match (c.client_secret_file.clone(), c.private_key_file.clone()) {
        (Some(s), _) => AuthSpec::SecretFile {
            path: absolute(&s)?,
        },
        (None, Some(k)) => AuthSpec::PrivateKeyFile {
            path: absolute(&k)?,
            alg,
        },
        (None, None) => match (p.client_secret_file, p.private_key_file) {
            (Some(_), Some(_)) => {
                return Err(CliError::usage(
                    "the profile has both client_secret_file and private_key_file",
                    "keep one of them",
                ));
            }
            (Some(s), None) => AuthSpec::SecretFile {
                path: absolute(&s)?,
            },
            (None, Some(k)) => AuthSpec::PrivateKeyFile {
                path: absolute(&k)?,
                alg,
            },
            (None, None) => AuthSpec::None,
        },
    };
    let dpop = !c.no_dpop && p.dpop.unwrap_or(true);
    let client_cert = cert_spec(
        c.tls.client_cert.clone().or(p.client_cert_file),
        c.tls.client_key.clone().or(p.client_key_file),
    )?;
    // A client certificate without a secret or a private key
    // authenticates the client (RFC 8705 §2).
    let auth = match auth {
        AuthSpec::None if client_cert.is_some() => AuthSpec::TlsClientAuth,
        other => other,
    };
    let ca = c
        .tls
        .ca
        .clone()
        .or(p.ca_file)
        .map(|p| absolute(&p))
        .transpose()?;
    let fapi2 = c.fapi2 || p.fapi2.unwrap_or(false);
    let par = c.par || p.par.unwrap_or(false);
    let request_object_key = request_object_key(
        c.request_object || p.request_object.unwrap_or(false),
        c.request_object_key.clone().or(p.request_object_key_file),
        c.request_object_alg.clone().or(p.request_object_alg),
        &auth,
    )?;
    if fapi2 {
        fapi2_precheck(&auth, dpop)?;
    }
    let draft = match (c.draft, p.draft) {
        (Some(d), _) => Some(d),
        (None, Some(text)) => Some(parse_draft(&text).map_err(|e| {
            CliError::usage(
                format!("`draft` in the config profile: {e}"),
                "set draft = \"oidc\" or draft = \"ietf\"",
            )
        })?),
        (None, None) => None,
    };
    let claims = match (&r.claims, p.claims) {
        (Some(s), _) => Some(json_arg("--claims", s)?),
        (None, Some(toml::Value::String(s))) => Some(json_arg("claims", &s)?),
        (None, Some(v)) => Some(toml_to_json("claims", v)?),
        (None, None) => None,
    };
    if claims.is_some() && assurance.is_some() {
        return Err(CliError::usage(
            "--verified-claims cannot be combined with the raw --claims JSON (flag, DTR_CLAIMS or the profile's `claims`)",
            "use --verified-claims (with --trust-framework, --assurance-level, --evidence, ...) or --claims, not both",
        ));
    }
    if let Some(c) = &claims
        && !c.is_object()
    {
        return Err(CliError::usage(
            "--claims must be a JSON object",
            r#"pass e.g. --claims '{"id_token":{"verified_claims":null}}'"#,
        ));
    }
    let authorization_details = match (&r.authorization_details, p.authorization_details) {
        (Some(s), _) => Some(json_arg("--authorization-details", s)?),
        (None, Some(toml::Value::String(s))) => Some(json_arg("authorization_details", &s)?),
        (None, Some(v)) => Some(toml_to_json("authorization_details", v)?),
        (None, None) => None,
    };
    if let Some(d) = &authorization_details
        && !d.is_array()
    {
        return Err(CliError::usage(
            "--authorization-details must be a JSON array",
            r#"pass e.g. --authorization-details '[{"type":"identity_verification"}]'"#,
        ));
    }
    Ok(VerifySettings {
        client: ClientSpec {
            issuer,
            client_id,
            auth,
            dpop,
            cancel_endpoint: c.cancel_endpoint.clone().or(p.cancel_endpoint),
            redirect_uri: String::new(),
            draft,
            par,
            request_object_key,
            client_cert,
            ca,
            fapi2,
        },
        scope: r.scope.clone().or(p.scope),
        claims,
        assurance,
        acr_values: r.acr_values.clone().or(p.acr_values),
        login_hint: r.login_hint.clone().or(p.login_hint),
        max_age: r.max_age.or(p.max_age),
        authorization_details: authorization_details.map(|d| d.to_string()),
        response_mode: r.response_mode.or(p.response_mode).unwrap_or(Mode::Query),
        redirect_port: r.redirect_port.or(p.redirect_port).unwrap_or(0),
    })
}

/// The client certificate and its key: both or neither.
pub(crate) fn cert_spec(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<CertSpec>, CliError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(CertSpec {
            cert: absolute(&cert)?,
            key: absolute(&key)?,
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(CliError::usage(
            "--client-cert needs --client-key",
            "give the certificate's private key with --client-key PATH (DTR_CLIENT_CERT_KEY)",
        )),
        (None, Some(_)) => Err(CliError::usage(
            "--client-key needs --client-cert",
            "give the certificate chain with --client-cert PATH (DTR_CLIENT_CERT)",
        )),
    }
}

/// The request-object key: `--request-object-key`, else the
/// `private_key_jwt` key, when request objects are asked for (the key
/// flag asks for them too).
fn request_object_key(
    wanted: bool,
    path: Option<PathBuf>,
    alg: Option<String>,
    auth: &AuthSpec,
) -> Result<Option<KeySpec>, CliError> {
    if let Some(path) = path {
        return Ok(Some(KeySpec {
            path: absolute(&path)?,
            alg,
        }));
    }
    if !wanted {
        return Ok(None);
    }
    match auth {
        AuthSpec::PrivateKeyFile { path, alg: key_alg } => Ok(Some(KeySpec {
            path: path.clone(),
            alg: alg.or_else(|| key_alg.clone()),
        })),
        _ => Err(CliError::usage(
            "--request-object needs a signing key",
            "give --request-object-key PATH (PEM or JWK, its public half registered at the OP), or --private-key-file to sign with the client's private_key_jwt key",
        )),
    }
}

/// What FAPI 2.0 refuses, said in flags before anything is sent (the
/// library refuses it too, at build, in its own terms).
fn fapi2_precheck(auth: &AuthSpec, dpop: bool) -> Result<(), CliError> {
    const HOW: &str = "--private-key-file (a PS256, ES256 or EdDSA key: private_key_jwt) or --client-cert and --client-key (tls_client_auth)";
    const OR_DROP: &str =
        "or drop --fapi2 (DTR_FAPI2, the profile's fapi2) for an OP that does not require FAPI 2.0";
    match auth {
        AuthSpec::SecretFile { .. } => {
            return Err(CliError::usage(
                "--fapi2 forbids client secrets (client_secret_basic): FAPI 2.0 clients authenticate with private_key_jwt or mutual TLS",
                format!(
                    "drop --client-secret-file (DTR_CLIENT_SECRET_FILE, the profile's client_secret_file) and give {HOW}; {OR_DROP}"
                ),
            ));
        }
        AuthSpec::None => {
            return Err(CliError::usage(
                "--fapi2 forbids public clients: FAPI 2.0 clients authenticate with private_key_jwt or mutual TLS",
                format!("give {HOW}; {OR_DROP}"),
            ));
        }
        AuthSpec::PrivateKeyFile { .. } | AuthSpec::TlsClientAuth => {}
    }
    if !dpop && *auth != AuthSpec::TlsClientAuth {
        return Err(CliError::usage(
            "--fapi2 needs sender-constrained tokens, and --no-dpop leaves them unbound",
            format!(
                "drop --no-dpop (DTR_NO_DPOP, the profile's dpop = false), or authenticate with --client-cert and --client-key (certificate-bound tokens); {OR_DROP}"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn absolute(p: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(p).map_err(|e| io(format!("resolving {}", p.display()), e))
}

/// A JSON argument, inline or `@file`.
fn json_arg(name: &str, s: &str) -> Result<serde_json::Value, CliError> {
    let text = match s.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| io(format!("reading {name} from {path}"), e))?,
        None => s.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::usage(
            format!("{name} is not valid JSON: {e}"),
            format!("quote the JSON for the shell, or pass {name} @FILE"),
        )
    })
}

fn toml_to_json(name: &str, v: toml::Value) -> Result<serde_json::Value, CliError> {
    serde_json::to_value(v).map_err(|e| {
        CliError::usage(
            format!("`{name}` in the profile cannot be turned into JSON: {e}"),
            "write it as a JSON string instead",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(text: &str) -> Profile {
        let cfg: ConfigFile = toml::from_str(text).unwrap();
        cfg.profile(None).unwrap().1
    }

    #[test]
    fn flags_win_over_the_profile() {
        let p = profile(
            "default_profile = \"a\"\n[profile.a]\nissuer = \"https://p.example\"\nclient_id = \"pc\"\nscope = \"email\"\nmax_age = 60\ndpop = false\n",
        );
        let c = ClientArgs {
            client_id: Some("flag".into()),
            ..Default::default()
        };
        let s = merge(&c, &RequestArgs::default(), p).unwrap();
        assert_eq!(s.client.issuer, "https://p.example");
        assert_eq!(s.client.client_id, "flag");
        assert_eq!(s.scope.as_deref(), Some("email"));
        assert_eq!(s.max_age, Some(60));
        assert!(!s.client.dpop);
        assert_eq!(s.client.auth, AuthSpec::None);
        assert_eq!(s.response_mode, Mode::Query);
    }

    #[test]
    fn profile_claims_as_a_table_or_json_text() {
        let p = profile(
            "default_profile = \"a\"\n[profile.a]\nissuer = \"https://p\"\nclient_id = \"c\"\nclaims = { id_token = { acr = { essential = true } } }\nauthorization_details = '[{\"type\":\"kyc\"}]'\n",
        );
        let s = merge(&ClientArgs::default(), &RequestArgs::default(), p).unwrap();
        assert_eq!(s.claims.unwrap()["id_token"]["acr"]["essential"], true);
        assert_eq!(
            s.authorization_details.as_deref(),
            Some(r#"[{"type":"kyc"}]"#)
        );
    }

    #[test]
    fn verified_claims_from_the_profile_or_flags_build_a_typed_request() {
        let text = "default_profile = \"a\"\n[profile.a]\nissuer = \"https://p\"\nclient_id = \"c\"\nverified_claims = \"given_name, family_name\"\ntrust_framework = [\"eidas\", \"de_aml\"]\nverification_max_age = 600\nevidence = \"document\"\n";
        let s = merge(
            &ClientArgs::default(),
            &RequestArgs::default(),
            profile(text),
        )
        .unwrap();
        let a = s.assurance.clone().unwrap();
        assert_eq!(a.claims, ["given_name", "family_name"]);
        assert_eq!(a.trust_frameworks, ["eidas", "de_aml"]);
        let json = a.claims_request().to_json().unwrap();
        let vc = &json["id_token"]["verified_claims"];
        assert_eq!(
            vc["verification"]["trust_framework"]["values"],
            serde_json::json!(["eidas", "de_aml"])
        );
        assert_eq!(vc["verification"]["time"]["max_age"], 600);
        assert_eq!(
            vc["verification"]["evidence"][0]["type"]["value"],
            "document"
        );
        assert!(vc["verification"].get("assurance_level").is_none());
        assert_eq!(
            vc["claims"],
            serde_json::json!({"given_name": null, "family_name": null})
        );
        // Flags win over the profile.
        let r = RequestArgs {
            verified_claims: vec!["birthdate".into()],
            assurance_level: Some("high".into()),
            ..Default::default()
        };
        let a = merge(&ClientArgs::default(), &r, profile(text))
            .unwrap()
            .assurance
            .unwrap();
        assert_eq!(a.claims, ["birthdate"]);
        assert_eq!(a.assurance_level.as_deref(), Some("high"));
        assert_eq!(a.trust_frameworks, ["eidas", "de_aml"]);
        // Without a max age, the verification time is still asked for.
        let a = AssuranceSpec {
            claims: vec!["given_name".into()],
            ..Default::default()
        };
        let json = a.claims_request().to_json().unwrap();
        assert!(json["id_token"]["verified_claims"]["verification"]["time"].is_null());
        assert!(
            json["id_token"]["verified_claims"]["verification"]
                .as_object()
                .unwrap()
                .contains_key("time")
        );
        // An empty item, and the raw claims of the profile with the flag.
        let r = RequestArgs {
            verified_claims: vec!["given_name".into(), " ".into()],
            ..Default::default()
        };
        assert!(merge(&ClientArgs::default(), &r, profile(text)).is_err());
        let with_claims = "default_profile = \"a\"\n[profile.a]\nissuer = \"https://p\"\nclient_id = \"c\"\nclaims = '{}'\n";
        let r = RequestArgs {
            verified_claims: vec!["given_name".into()],
            ..Default::default()
        };
        let e = merge(&ClientArgs::default(), &r, profile(with_claims)).unwrap_err();
        assert_eq!(e.code, crate::error::exit::USAGE);
    }

    #[test]
    fn high_assurance_options_from_flags_or_the_profile() {
        let c = ClientArgs {
            issuer: Some("https://op.example".into()),
            client_id: Some("c".into()),
            fapi2: true,
            no_dpop: true,
            tls: TlsArgs {
                client_cert: Some("c.crt".into()),
                client_key: Some("c.key".into()),
                ca: Some("ca.pem".into()),
            },
            ..Default::default()
        };
        let s = merge(&c, &RequestArgs::default(), Profile::default()).unwrap();
        // A certificate alone authenticates: tls_client_auth, and the
        // certificate binds the tokens (so --no-dpop is fine under FAPI 2.0).
        assert_eq!(s.client.auth, AuthSpec::TlsClientAuth);
        let cert = s.client.client_cert.unwrap();
        assert!(cert.cert.is_absolute() && cert.key.ends_with("c.key"));
        assert!(s.client.ca.unwrap().is_absolute());
        assert!(s.client.fapi2 && !s.client.par);

        let p = profile(
            "default_profile = \"a\"\n[profile.a]\nissuer = \"https://p\"\nclient_id = \"c\"\nprivate_key_file = \"/k.pem\"\nfapi2 = true\npar = true\nrequest_object = true\n",
        );
        let s = merge(&ClientArgs::default(), &RequestArgs::default(), p).unwrap();
        assert!(s.client.fapi2 && s.client.par);
        assert_eq!(
            s.client.request_object_key,
            Some(KeySpec {
                path: "/k.pem".into(),
                alg: None
            })
        );

        // One half of the certificate pair.
        let half = ClientArgs {
            tls: TlsArgs {
                client_cert: Some("c.crt".into()),
                ..Default::default()
            },
            ..c.clone()
        };
        let e = merge(&half, &RequestArgs::default(), Profile::default()).unwrap_err();
        assert!(e.to_string().contains("--client-key"), "{e}");
        // FAPI 2.0 with a secret: exit 2, naming what to change.
        let secret = ClientArgs {
            client_secret_file: Some("s".into()),
            tls: TlsArgs::default(),
            no_dpop: false,
            ..c.clone()
        };
        let e = merge(&secret, &RequestArgs::default(), Profile::default()).unwrap_err();
        assert_eq!(e.code, crate::error::exit::USAGE);
        assert!(
            e.to_string().contains("drop --client-secret-file")
                && e.to_string().contains("--private-key-file"),
            "{e}"
        );
        // FAPI 2.0, private_key_jwt and --no-dpop: unbound tokens.
        let unbound = ClientArgs {
            private_key_file: Some("k.pem".into()),
            tls: TlsArgs::default(),
            ..c
        };
        let e = merge(&unbound, &RequestArgs::default(), Profile::default()).unwrap_err();
        assert!(e.to_string().contains("drop --no-dpop"), "{e}");
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        let none = Profile::default();
        let e = merge(
            &ClientArgs::default(),
            &RequestArgs::default(),
            none.clone(),
        )
        .unwrap_err();
        assert_eq!(e.code, crate::error::exit::USAGE);
        let c = ClientArgs {
            issuer: Some("https://x".into()),
            client_id: Some("c".into()),
            ..Default::default()
        };
        let r = RequestArgs {
            claims: Some("[1]".into()),
            ..Default::default()
        };
        assert!(
            merge(&c, &r, none.clone()).is_err(),
            "claims must be an object"
        );
        let r = RequestArgs {
            authorization_details: Some("{not json".into()),
            ..Default::default()
        };
        assert!(merge(&c, &r, none).is_err());
        let cfg: ConfigFile = toml::from_str("[profile.a]\nissuer = \"x\"\n").unwrap();
        assert!(cfg.profile(Some("b")).is_err());
        assert!(
            toml::from_str::<ConfigFile>("[profile.a]\nclient_secret = \"x\"\n").is_err(),
            "no secret in the config"
        );
    }
}
