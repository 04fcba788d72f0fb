//! The library's integration tests: one binary (one link of aws-lc), one
//! module per area. Everything runs against the in-process mock OP of
//! `oidc-dtr-testkit`, over loopback.

mod support;

mod axum_example;
#[cfg(unix)]
mod crash;
mod dpop;
mod foundation;
mod http_edge;
mod hygiene;
mod layers;
mod ping;
mod poll_properties;
mod polling;
#[cfg(feature = "postgres")]
mod postgres;
mod secrets;
mod store;
mod validation;
