//! berth: container repositories declared as code for any Kubernetes cluster.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod http;
pub mod metrics;
pub mod operator;
