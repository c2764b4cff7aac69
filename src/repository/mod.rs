//! Pure Repository logic: who may claim a path (tenancy), immutable tags and their exclusions
//! (tags), the push-time ledger with its stored form (ledger), what a reconcile learned
//! applied to the ledger (observed), what an ECR repository should look like (ecr), and
//! berth's statements in ECR repository policies (ecr_policy).

pub mod ecr;
pub mod ecr_policy;
pub mod ledger;
pub mod observed;
pub mod tags;
pub mod tenancy;
