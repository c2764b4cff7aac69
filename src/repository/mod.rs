//! Pure Repository logic: who may claim a path (tenancy), immutable tags and their exclusions
//! (tags), the push-time ledger with its stored form (ledger), and what a reconcile learned
//! applied to the ledger (observed).

pub mod ecr;
pub mod ledger;
pub mod observed;
pub mod tags;
pub mod tenancy;
