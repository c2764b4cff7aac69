use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who may pull, push or delete in which Repositories of this namespace, and where berth writes
/// ready-made pull secrets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    plural = "accesspolicies",
    namespaced,
    status = "AccessPolicyStatus",
    shortname = "acp",
    category = "berth",
    doc = "AccessPolicy grants subjects (ServiceAccounts, robots, anonymous) pull, push or delete on Repositories of its namespace, and can materialize rotating pull secrets.",
    printcolumn(name = "Repositories", type_ = "integer", json_path = ".status.repositoryCount"),
    printcolumn(name = "Grants", type_ = "integer", json_path = ".status.grantCount"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// The Repositories (in this namespace) the grants apply to.
    pub repositories: RepositorySelector,
    /// Who may do what in those Repositories.
    #[schemars(length(min = 1, max = 64))]
    pub grants: Vec<Grant>,
    /// Pull secrets berth writes and rotates for the policy's Repositories. For those in `ecr`
    /// Registries they hold an ECR token fetched under the Registry's `ecr.pullSecretRoleArn`,
    /// which can pull from the policy's repositories only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secrets: Option<PullSecrets>,
}

/// Repositories chosen by name, by label, or both (a Repository matching either is chosen).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.names) && self.names.size() > 0) || has(self.selector)").message("repositories needs names, a selector, or both"))]
pub struct RepositorySelector {
    /// Names of Repository objects in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253)))]
    pub names: Option<Vec<String>>,
    /// A label selector over the Repository objects of this namespace. An empty selector (`{}`)
    /// chooses every Repository in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Subjects and the actions they are granted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.subjects.exists(s, s.kind == 'Anonymous') || self.actions.all(a, a == 'pull')").message("anonymous subjects may only be granted pull: pushing and deleting always need an identity"))]
pub struct Grant {
    /// Who is granted.
    #[schemars(length(min = 1, max = 64))]
    pub subjects: Vec<Subject>,
    /// What they may do: `pull`, `push`, `delete`. Each is granted only as listed: docker and
    /// skopeo ask for `pull` as well when they push, so a pusher needs both.
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b == a))").message("each action may appear only once"))]
    pub actions: Vec<Action>,
}

/// A subject of a grant, shaped like an RBAC subject.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind != 'ServiceAccount' || has(self.name)").message("a ServiceAccount subject needs a name"))]
#[x_kube(validation = Rule::new("self.kind != 'Namespace' || (has(self.name) && !has(self.namespace))").message("a Namespace subject names the namespace in name (every ServiceAccount of it is granted) and takes no namespace"))]
#[x_kube(validation = Rule::new("self.kind != 'Robot' || (has(self.name) && !has(self.namespace))").message("a Robot subject needs a name and takes no namespace (robots belong to the policy's namespace)"))]
#[x_kube(validation = Rule::new("self.kind != 'Anonymous' || (!has(self.name) && !has(self.namespace))").message("an Anonymous subject takes no name or namespace"))]
#[x_kube(validation = Rule::new("self.kind != 'AWSPrincipal' || (has(self.name) && !has(self.namespace))").message("an AWSPrincipal subject names a 12-digit account id or an IAM ARN (arn:aws:iam::<account>:root, role/<name> or user/<name>) and takes no namespace"))]
pub struct Subject {
    /// `ServiceAccount` (one ServiceAccount, authenticated by its token), `Namespace` (every
    /// ServiceAccount of the namespace in `name`), `Robot` (credentials berth generates, named
    /// `name`), `Anonymous` (anyone, without credentials) or `AWSPrincipal` (an AWS account id
    /// or IAM role or user ARN in `name`; on `ecr` Registries only, where berth writes it into
    /// the repository policy).
    pub kind: SubjectKind,
    /// The ServiceAccount's, namespace's or robot's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Namespace of a ServiceAccount subject; defaults to the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// The kinds of subject a grant can name.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SubjectKind {
    ServiceAccount,
    Namespace,
    Robot,
    Anonymous,
    #[serde(rename = "AWSPrincipal")]
    AwsPrincipal,
}

/// A registry action, as in the token protocol's scopes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
}

/// Where berth writes `kubernetes.io/dockerconfigjson` Secrets with short-lived, pull-only robot
/// credentials for the policy's Repositories.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullSecrets {
    /// Namespaces that get the Secret. Default: the policy's own namespace. Another namespace
    /// gets it only if it accepts it: the annotation `berth.dev/accept-pull-secrets-from` on
    /// that Namespace lists this policy's namespace (comma-separated, or `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63)))]
    pub namespaces: Vec<String>,
    /// Name of the Secret in each namespace. Default `berth-pull`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("secretName must be a valid Secret name (lower-case DNS subdomain)"))]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// ServiceAccounts (in each of those namespaces) whose `imagePullSecrets` get the Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub service_accounts: Vec<String>,
    /// How long each generated credential lives, as a duration (default `12h`, at least `10m`).
    /// berth rotates it after two thirds of that. ECR's tokens live as long as ECR says (12h)
    /// and are refreshed after two thirds of that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h))+$')").message("lifetime must be a duration such as 12h or 90m"))]
    #[schemars(length(max = 32))]
    pub lifetime: Option<String>,
}

/// Observed state of an AccessPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// Current state: `Ready` is True when every grant and pull secret is in effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Repositories the policy currently applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_count: Option<i32>,
    /// Grants in the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_count: Option<i32>,
    /// Namespaces that hold a current pull secret of this policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secret_namespaces: Vec<String>,
}
