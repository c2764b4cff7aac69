//! berth's custom resources: group `berth.dev`, version `v1alpha1`.
//!
//! Every field carries a doc comment because the generated schema turns it into what
//! `kubectl explain` shows. Rules the API server can check itself are CEL
//! (`x-kubernetes-validations`) so bad input is rejected at admission, not reconcile time.

// Repeated `printcolumn(type_ = ...)` arguments of kube's derive look like duplicated
// attributes to clippy; they are one column each.
#[allow(clippy::duplicated_attributes)]
mod access_policy;
#[allow(clippy::duplicated_attributes)]
mod image_scan;
#[allow(clippy::duplicated_attributes)]
mod lifecycle_policy;
#[allow(clippy::duplicated_attributes)]
mod registry;
#[allow(clippy::duplicated_attributes)]
mod repository;

pub use access_policy::*;
pub use image_scan::*;
pub use lifecycle_policy::*;
pub use registry::*;
pub use repository::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

/// The API group of every berth resource.
pub const GROUP: &str = "berth.dev";

/// Every CRD berth serves, in a stable order (the order `berth crds` prints them in).
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Registry::crd(), Repository::crd(), LifecyclePolicy::crd(), AccessPolicy::crd(), ImageScan::crd()]
}

/// The YAML file name under `crds/` for a CRD, e.g. `repositories.berth.dev.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// Renders one CRD as the YAML committed under `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(crd)
}

/// A reference to a Secret in a named namespace, and optionally one key in it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[x_kube(validation = Rule::new("self.size() > 0").message("name must not be empty"))]
    #[schemars(length(max = 253))]
    pub name: String,
    /// Namespace of the Secret. Required on cluster-scoped objects; on namespaced objects it
    /// defaults to the object's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key within the Secret's data. Each field that takes a SecretReference says which key it
    /// reads when this is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A reference to another object by name, in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct LocalObjectReference {
    /// Name of the referenced object.
    #[x_kube(validation = Rule::new("self.size() > 0").message("name must not be empty"))]
    #[schemars(length(max = 253))]
    pub name: String,
}

/// The condition type that every berth resource reports; `kubectl wait --for=condition=Ready`
/// and kstatus-aware tools (Argo CD, Flux) read it.
pub const CONDITION_READY: &str = "Ready";
