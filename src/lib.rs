//! berth: container repositories declared as code for any Kubernetes cluster.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod conditions;
pub mod controllers;
pub mod duration;
pub mod hosts;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod namespaces;
pub mod registry;
pub mod repository;
pub mod rollout;
pub mod runtime;
pub mod scanning;
pub mod workloads;
