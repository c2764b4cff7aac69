use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Rules that expire old images, in exactly the shape of an AWS ECR lifecycle policy, plus what
/// ECR lacks: protection of images that workloads use, and a dry run.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "LifecyclePolicy",
    plural = "lifecyclepolicies",
    namespaced,
    status = "LifecyclePolicyStatus",
    shortname = "lcp",
    category = "berth",
    doc = "LifecyclePolicy expires old images from the Repositories that reference it, with the rules of an AWS ECR lifecycle policy.",
    printcolumn(name = "Rules", type_ = "integer", json_path = ".status.ruleCount"),
    printcolumn(name = "DryRun", type_ = "boolean", json_path = ".spec.dryRun"),
    printcolumn(name = "Expired", type_ = "integer", json_path = ".status.expiredCount"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct LifecyclePolicySpec {
    /// The rules, as in ECR's `{"rules": [...]}`. Every rule is evaluated; each image is expired
    /// by at most one rule, and an image whose tags match a rule can never be expired by a rule of
    /// lower priority (a higher `rulePriority` number).
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(s, s.rulePriority == r.rulePriority))").message("rulePriority values must be unique"))]
    #[x_kube(validation = Rule::new("self.all(r, r.selection.tagStatus != 'any' || self.all(s, s.rulePriority <= r.rulePriority))").message("a rule with tagStatus 'any' must have the highest rulePriority: it is applied last"))]
    #[x_kube(validation = Rule::new("self.filter(r, r.selection.tagStatus == 'untagged').size() <= 1").message("only one rule may select untagged images"))]
    #[schemars(length(min = 1, max = 100))]
    pub rules: Vec<LifecycleRule>,

    /// Never expire an image that a Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or
    /// CronJob in the cluster references, by digest or through a tag, or whose tag a workload's
    /// version policy (`berth.dev/rollout`) selects. Default true.
    #[serde(default = "default_true")]
    pub protect_in_use: bool,

    /// Evaluate and report in status what would expire, but delete nothing.
    #[serde(default)]
    pub dry_run: bool,

    /// How often the policy runs against each Repository, as a duration (`30m`, `1h`, `24h`).
    /// Default `1h`. A change to the policy runs it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h))+$')").message("interval must be a duration such as 30m, 1h or 24h"))]
    #[schemars(length(max = 32))]
    pub interval: Option<String>,

    /// At most this many manifests are deleted per Repository per run; the rest go in the next run.
    /// Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxDeletionsPerRun must be at least 1"))]
    pub max_deletions_per_run: Option<i32>,

    /// Who applies the rules to Repositories on an `ecr` Registry. `Berth` (the default): berth
    /// evaluates and deletes, with `protectInUse`, `dryRun` and `maxDeletionsPerRun`. `Native`:
    /// berth puts the rules on each ECR repository as its lifecycle policy and ECR applies them
    /// itself, without protecting images in use (status says which of those are at risk).
    /// Repositories on other registries always use `Berth`.
    #[serde(default)]
    pub mode: LifecycleMode,
}

/// Who applies a lifecycle policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum LifecycleMode {
    #[default]
    Berth,
    Native,
}

fn default_true() -> bool {
    true
}

/// One ECR lifecycle rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleRule {
    /// Order in which rules apply, lowest first. Unique within the policy; need not be consecutive.
    #[x_kube(validation = Rule::new("self >= 1").message("rulePriority must be a positive integer"))]
    pub rule_priority: i32,
    /// Free text describing the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Which images the rule looks at and how many (or how old) may remain.
    pub selection: Selection,
    /// What happens to the selected images. Only `expire`.
    pub action: RuleAction,
}

/// The images a rule considers, and its count condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.tagStatus != 'tagged' || (has(self.tagPrefixList) != has(self.tagPatternList))").message("tagStatus 'tagged' needs exactly one of tagPrefixList or tagPatternList"))]
#[x_kube(validation = Rule::new("self.tagStatus == 'tagged' || (!has(self.tagPrefixList) && !has(self.tagPatternList))").message("tagPrefixList and tagPatternList are only allowed with tagStatus 'tagged'"))]
#[x_kube(validation = Rule::new("self.countType != 'sinceImagePushed' || has(self.countUnit)").message("countUnit is required with countType 'sinceImagePushed'"))]
#[x_kube(validation = Rule::new("self.countType != 'imageCountMoreThan' || !has(self.countUnit)").message("countUnit is not allowed with countType 'imageCountMoreThan'"))]
pub struct Selection {
    /// `tagged` (images with a tag matching the prefix or pattern list), `untagged` (images with
    /// no tag), or `any` (every image; such a rule must come last).
    pub tag_status: TagStatus,
    /// Tag prefixes, all of which must each match one of the image's tags (`prod` matches
    /// `prod-1`). Only with tagStatus `tagged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 128)))]
    pub tag_prefix_list: Option<Vec<String>>,
    /// Tag patterns, all of which must each match one whole tag of the image; `*` matches any run
    /// of characters (`prod*` does not match `preprod-1`), at most 4 per pattern. Only with
    /// tagStatus `tagged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(p, !p.matches('^([^*]*[*]){5}'))").message("a tagPatternList entry may contain at most 4 '*' wildcards"))]
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 128)))]
    pub tag_pattern_list: Option<Vec<String>>,
    /// `imageCountMoreThan` keeps the newest `countNumber` matching images and expires the rest;
    /// `sinceImagePushed` expires matching images pushed more than `countNumber` days ago.
    pub count_type: CountType,
    /// Unit of `countNumber` for `sinceImagePushed`: only `days`. Not allowed with
    /// `imageCountMoreThan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_unit: Option<CountUnit>,
    /// The image count or the age in days; a positive integer.
    #[x_kube(validation = Rule::new("self >= 1").message("countNumber must be a positive integer (1 or more)"))]
    pub count_number: i64,
}

/// Which images a rule selects by tag.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

/// How a rule counts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CountType {
    ImageCountMoreThan,
    SinceImagePushed,
}

/// Unit of a `sinceImagePushed` count.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CountUnit {
    Days,
}

/// What a rule does to the images it selects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct RuleAction {
    /// Only `expire`: delete the image's manifest from the registry.
    #[serde(rename = "type")]
    pub type_: ActionType,
}

/// The one lifecycle action ECR defines.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    Expire,
}

/// Observed state of a LifecyclePolicy, summed over the Repositories that use it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecyclePolicyStatus {
    /// Current state: `Ready` is True when the policy is valid and its last run succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of rules in the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_count: Option<i32>,
    /// When the policy last ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<Time>,
    /// Images expired by the last run (or that would be, in a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_count: Option<i64>,
    /// Images the rules would expire but that workloads use, so were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_count: Option<i64>,
    /// Images kept by the rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_count: Option<i64>,
    /// The first expired digests of the last run (at most 20), as `<path>@<digest>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expired_images: Vec<String>,
}
