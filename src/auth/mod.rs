//! The registry token service, the pure part: berth is the registry's token server (the
//! `auth.token.realm` of Distribution's token authentication), and this module decides and
//! signs without any I/O.
//!
//! A token request flows through it like this:
//! 1. [`limit`] refuses a client that failed to log in too often, with that name or any.
//! 2. The HTTP layer authenticates the caller into a [`Principal`]: a ServiceAccount token (by
//!    TokenReview), a robot or pull-secret password ([`robot::check`] against the stored
//!    hashes), berth itself, or nobody.
//! 3. [`parse_scopes`] turns the `scope` parameters into [`Scope`]s, dropping what it does not
//!    understand.
//! 4. [`authorize`] intersects them with what the [`AccessIndex`] (built from Repositories and
//!    AccessPolicies whenever they change) allows the principal.
//! 5. A [`Signer`] signs [`Claims`] carrying the granted [`Access`] list.
//!
//! Keys rotate by [`rotation_plan`], on the clock of [`next_key_event`]; the registry trusts the
//! certificates of [`bundle`].

pub mod decide;
pub mod keys;
pub mod keystore;
pub mod limit;
pub mod robot;
pub mod scope;
pub mod service;

pub use decide::{AccessIndex, AwsGrant, PolicySummary, PolicyWarning, Principal, RepoInput, authorize};
pub use keys::{
    Claims, KeyValidity, RotationPlan, RotationPolicy, Signer, SigningKey, WaitingKey, bundle, bundle_sha256,
    next_key_event, rotation_plan, waiting_keys,
};
pub use keystore::keys_from_secret;
pub use limit::{FailedLogins, LoginLimits, Verdict};
pub use robot::StoredCredential;
pub use scope::{Access, Resource, Scope, ScopeError, parse_scope, parse_scopes};
pub use service::TokenService;

/// What can go wrong in the token service's own machinery (never a caller's bad input: that is
/// dropped or refused without an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating a signing key: {0}")]
    KeyGeneration(String),
    #[error("signing key: {0}")]
    InvalidKey(String),
    #[error("signing certificate: {0}")]
    InvalidCertificate(String),
    #[error("the signing certificate does not hold the signing key's public key")]
    KeyMismatch,
    #[error("signing a token failed")]
    Signing,
    #[error("encoding a token: {0}")]
    Claims(#[source] serde_json::Error),
}

impl Error {
    /// A fixed label for metrics and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::KeyGeneration(_) => "KeyGeneration",
            Error::InvalidKey(_) => "InvalidKey",
            Error::InvalidCertificate(_) => "InvalidCertificate",
            Error::KeyMismatch => "KeyMismatch",
            Error::Signing => "Signing",
            Error::Claims(_) => "Claims",
        }
    }
}
