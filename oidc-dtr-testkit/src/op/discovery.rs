//! Discovery: the OP's metadata document (`/.well-known/openid-configuration`).

use super::*;

impl OpState {
    pub(crate) fn metadata(&self) -> Value {
        let cfg = &self.config;
        let mut response_types = vec!["code"];
        let mut grant_types = vec!["authorization_code"];
        if cfg.advertise_dtr && cfg.profiles.oidc() {
            response_types.extend(["deferred_code", "deferred_code code"]);
            grant_types.push(GRANT_TYPE_DEFERRED);
        }
        if cfg.advertise_dtr && cfg.profiles.ietf() {
            grant_types.extend([GRANT_TYPE_IETF_DEFERRED, GRANT_TYPE_DEVICE_CODE]);
        }
        let mut md = json!({
            "issuer": cfg.metadata_issuer.clone().unwrap_or_else(|| self.issuer.clone()),
            "authorization_endpoint": self.url("/authorize"),
            "token_endpoint": self.url("/token"),
            "userinfo_endpoint": self.url("/userinfo"),
            "jwks_uri": cfg.jwks_uri.clone().unwrap_or_else(|| self.url("/jwks")),
            "response_types_supported": response_types,
            "response_modes_supported": ["query", "form_post"],
            "grant_types_supported": grant_types,
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "ES384", "EdDSA"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": cfg.advertise_iss_parameter,
        });
        if cfg.identity_assurance {
            crate::assurance::advertise(&mut md);
        }
        if cfg.profiles.ietf() {
            md["deferred_token_response_supported"] = json!(cfg.advertise_dtr);
            md["revocation_endpoint"] = json!(self.url("/revoke"));
            md["device_authorization_endpoint"] = json!(self.url("/device_authorization"));
            let mut types = vec!["access_token", "refresh_token"];
            if cfg.advertise_deferral_revocation {
                types.push(DEFERRAL_CODE_TOKEN_TYPE);
            }
            md["revocation_endpoint_token_type_values_supported"] = json!(types);
        }
        crate::par::advertise(self, &mut md);
        if cfg.fapi2 {
            md["token_endpoint_auth_methods_supported"] = json!([
                "private_key_jwt",
                "tls_client_auth",
                "self_signed_tls_client_auth"
            ]);
            md["token_endpoint_auth_signing_alg_values_supported"] =
                json!(["PS256", "ES256", "EdDSA"]);
            md["dpop_signing_alg_values_supported"] = json!(["PS256", "ES256", "EdDSA"]);
        }
        for (name, value) in &cfg.extra_metadata {
            md[name.as_str()] = value.clone();
        }
        md
    }
}
