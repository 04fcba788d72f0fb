//! Discovery, the IO half: fetching the OP's metadata from its two
//! well-known locations (the parsing and the checks are in
//! `proto::discovery`).

use crate::engine::transport::HttpEdge;
use crate::error::{ConfigError, DiscoveryError, Error, HttpError, ResponseError, sanitize};
use crate::proto::discovery::{CONTEXT, ProviderMetadata, well_known_urls};
use crate::proto::message::{HttpRequest, endpoint_label, parse_url, success_object};

/// Fetches and checks the metadata of `issuer`.
pub(crate) async fn discover(http: &HttpEdge, issuer: &str) -> Result<ProviderMetadata, Error> {
    let issuer_url = parse_url(issuer, "issuer")?;
    if issuer_url.query().is_some() {
        return Err(ConfigError::InvalidUrl {
            field: "issuer",
            reason: "must not have a query".into(),
        }
        .into());
    }
    let mut tried = Vec::new();
    let mut last_err: Option<Error> = None;
    for url in well_known_urls(&issuer_url) {
        tried.push(endpoint_label(&url));
        let result = async {
            let resp = http.send(HttpRequest::get(url.clone())).await?;
            let obj = success_object(&resp, &url, CONTEXT, "issuer")?;
            Ok::<_, Error>(ProviderMetadata::from_object(obj)?)
        }
        .await;
        match result {
            Ok(md) => {
                if md.issuer != issuer {
                    return Err(DiscoveryError::IssuerMismatch {
                        expected: issuer.to_owned(),
                        found: sanitize(&md.issuer, 200),
                    }
                    .into());
                }
                return Ok(md);
            }
            // Only "not here" answers move on to the next location; a
            // document that is present but wrong is an error as it stands.
            Err(e @ Error::Http(HttpError::Status { .. } | HttpError::Redirect { .. }))
            | Err(e @ Error::OAuth(_)) => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(DiscoveryError::Unavailable {
        tried,
        source: std::sync::Arc::new(
            last_err.unwrap_or_else(|| {
                ResponseError::new(CONTEXT, None, "no location answered").into()
            }),
        ),
    }
    .into())
}
