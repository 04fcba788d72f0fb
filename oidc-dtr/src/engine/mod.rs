//! The IO layer: the one HTTP transport, discovery fetches, the JWKS cache,
//! and the poll driver (one tokio task and one timer queue for every pending
//! authentication). It drives the pure protocol core (`crate::proto`) and
//! never names the client facade.

pub(crate) mod config;
pub(crate) mod discovery;
pub(crate) mod driver;
pub(crate) mod fleet;
pub(crate) mod guard;
pub(crate) mod jwks_cache;
pub(crate) mod outcome_map;
pub(crate) mod stats;
pub(crate) mod transport;
