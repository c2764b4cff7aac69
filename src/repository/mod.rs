//! Pure Repository logic: who may claim a path (tenancy), immutable tags and their exclusions
//! (tags), and the push-time ledger with its stored form (ledger).

pub mod ledger;
pub mod tags;
pub mod tenancy;
