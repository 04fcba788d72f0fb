//! The HTTP side of Pushed Authorization Requests (RFC 9126): the form
//! built in `proto::par` is sent with the client authentication of the
//! token endpoint and, for a DPoP-bound request, a DPoP proof of the key
//! whose thumbprint is the `dpop_jkt` (RFC 9449 §10); a `use_dpop_nonce`
//! answer is retried once with the server's nonce, as at the token
//! endpoint. Under mutual TLS the request goes to the OP's
//! `mtls_endpoint_aliases` entry for the PAR endpoint when it publishes one
//! (RFC 8705 §5), as every other request that authenticates the client.

use std::future::Future;
use std::pin::Pin;

use http::HeaderMap;

use crate::client::ClientInner;
use crate::error::Error;
use crate::jose::dpop::DpopRef;
use crate::proto::message::{HttpRequest, HttpResponse};
use crate::proto::par::{ParRequest, PushTransport};

impl PushTransport for ClientInner {
    fn send_par<'a>(
        &'a self,
        request: ParRequest,
        dpop: Option<DpopRef<'a>>,
    ) -> Pin<Box<dyn Future<Output = Result<HttpResponse, Error>> + Send + 'a>> {
        Box::pin(async move {
            // Under mutual TLS, the alias (RFC 8705 §5): the plain endpoint
            // of an OP that publishes one may not ask for a certificate.
            let request = &ParRequest {
                endpoint: self.back_channel_endpoint(
                    "pushed_authorization_request_endpoint",
                    &request.endpoint,
                ),
                params: request.params,
            };
            let build = move || async move {
                // Fresh credentials for every attempt (a new assertion).
                let mut headers = HeaderMap::new();
                let mut auth: Vec<(&'static str, String)> = Vec::new();
                self.apply_client_auth(&request.endpoint, &mut headers, &mut auth)
                    .await?;
                let mut req = HttpRequest::post_form(
                    request.endpoint.clone(),
                    auth.iter()
                        .map(|(k, v)| (*k, v.as_str()))
                        .chain(request.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                );
                req.headers.extend(headers);
                Ok(req)
            };
            self.send_with_dpop(dpop, build).await
        })
    }
}
