//! The library's integration tests: one binary (one link of aws-lc), one
//! module per area. Everything runs against the in-process mock OP of
//! `oidc-dtr-testkit`, over loopback, except `interop_oidc_provider`, which
//! runs a real third-party OP (`oidc-provider`, under Node.js).

// Test helpers are `pub` for the modules of this one binary; nothing is
// reachable from outside it, so the workspace's `unreachable_pub` is noise here.
#![allow(unreachable_pub)]
// The examples run here (`examples.rs`, `axum_example.rs`) each bring
// their own copy of the examples' shared module, as they do when built
// alone.
#![allow(clippy::duplicate_mod)]

mod support;

mod assurance_checks;
mod assurance_flow;
mod assurance_requests;
mod assurance_spec_examples;
mod axum_example;
#[cfg(unix)]
mod crash;
mod dpop;
mod dpop_signer;
mod events;
mod examples;
mod fapi;
mod foundation;
mod handle;
mod http_edge;
mod hygiene;
mod ietf;
mod interop_oidc_provider;
mod jar;
mod jose_differential;
mod jose_vectors;
mod layers;
mod metrics;
mod mtls;
mod nothing_lost;
mod panics;
mod par;
mod ping;
mod poll_properties;
mod polling;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod postgres_fleet;
mod secrets;
mod signer;
mod store;
mod strict_interval;
mod tokens_in_hand;
mod validation;
