//! End-to-end tests of the `dtr` binary against the testkit's mock OP: the
//! test starts the OP, runs `dtr`, reads the printed URL, and plays the
//! browser (the OP's simulated browser, then an HTTP request to dtr's
//! loopback listener).

#[cfg(unix)]
mod support;

#[cfg(unix)]
mod fapi;
#[cfg(unix)]
mod flows;
#[cfg(unix)]
mod pty;
#[cfg(unix)]
mod ux;
