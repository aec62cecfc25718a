//! The gateway's parsers of untrusted input, in a crate of their own so that the fuzz targets
//! (`fuzz/`, built with sanitizer instrumentation on nightly) compile these few modules and
//! not the gateway's server, database and Kubernetes dependencies. The gateway re-exports
//! them (`xin_gateway::providers`, `xin_gateway::widget::{issue_session, check_session}`).

pub mod providers;
pub mod session;
