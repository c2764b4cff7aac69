//! berth's statements in an ECR repository policy, and merging them into the policy a
//! repository has. Pure.
//!
//! ECR authorizes by IAM, so an AccessPolicy's `AWSPrincipal` grants on an `ecr` Registry become
//! statements of each selected repository's policy: one per AccessPolicy and action, with a
//! `Sid` of `Berth`, 16 hex digits naming the AccessPolicy, and `Pull`, `Push` or `Delete`.
//! berth owns every statement whose `Sid` starts with `Berth` and no other: statements people or
//! other tools wrote stay as they are, in their order, and a policy berth cannot read is an
//! error, never overwritten.
//!
//! ECR (like IAM) may store a policy otherwise than it was sent: other whitespace and key order,
//! a one-element list as a plain string, an account id as `arn:aws:iam::<id>:root`. A policy that
//! differs only so is [`Merged::Unchanged`], so berth does not rewrite it on every reconcile.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::{api::Action, auth::AwsGrant};

/// The start of the `Sid` of every statement berth owns.
pub const SID_PREFIX: &str = "Berth";
/// The policy language version berth writes when the policy has none.
pub const VERSION: &str = "2012-10-17";

/// What pulling an image takes.
pub const PULL: [&str; 3] = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"];
/// What pushing an image takes.
pub const PUSH: [&str; 5] = [
    "ecr:PutImage",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:BatchCheckLayerAvailability",
];
/// What deleting an image takes (finding it first included).
pub const DELETE: [&str; 3] = ["ecr:BatchDeleteImage", "ecr:DescribeImages", "ecr:ListImages"];

/// The ECR API actions a berth action stands for.
pub fn ecr_actions(action: Action) -> &'static [&'static str] {
    match action {
        Action::Pull => &PULL,
        Action::Push => &PUSH,
        Action::Delete => &DELETE,
    }
}

/// The `Sid` of the statement granting `action` for the AccessPolicy `namespace/policy`:
/// letters and digits only, as IAM wants.
pub fn sid(namespace: &str, policy: &str, action: Action) -> String {
    let digest = Sha256::digest(format!("{namespace}/{policy}").as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let suffix = match action {
        Action::Pull => "Pull",
        Action::Push => "Push",
        Action::Delete => "Delete",
    };
    format!("{SID_PREFIX}{hex}{suffix}")
}

/// berth's statements for a repository's grants: per AccessPolicy and action, one `Allow` of
/// that action's ECR actions to the principals granted it (sorted), the statements sorted by
/// `Sid`.
pub fn berth_statements(grants: &[AwsGrant]) -> Vec<Value> {
    let mut by_sid: BTreeMap<String, (Action, BTreeSet<&str>)> = BTreeMap::new();
    for grant in grants {
        for action in &grant.actions {
            let sid = sid(&grant.namespace, &grant.policy, *action);
            by_sid.entry(sid).or_insert_with(|| (*action, BTreeSet::new())).1.insert(&grant.principal);
        }
    }
    by_sid
        .into_iter()
        .map(|(sid, (action, principals))| {
            json!({
                "Sid": sid,
                "Effect": "Allow",
                "Principal": {"AWS": principals},
                "Action": ecr_actions(action),
            })
        })
        .collect()
}

/// What to do with a repository's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Merged {
    /// It already says what it should (or berth has nothing to do with it).
    Unchanged,
    /// Set it to this text.
    Set(String),
    /// Delete it: it held only berth's statements, and none are left.
    Delete,
}

fn is_berth(statement: &Value) -> bool {
    statement.get("Sid").and_then(Value::as_str).is_some_and(|s| s.starts_with(SID_PREFIX))
}

/// The policy as a JSON object and its statements (a lone statement object counts as a list
/// of one, as IAM reads it), or why berth cannot read it.
fn read(text: &str) -> Result<(Map<String, Value>, Vec<Value>), String> {
    const LEFT: &str = "berth leaves a repository policy it cannot read as it is";
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the repository policy is not JSON ({e}); {LEFT}"))?;
    let Value::Object(doc) = value else {
        return Err(format!("the repository policy is not a JSON object; {LEFT}"));
    };
    let statements = match doc.get("Statement") {
        Some(Value::Array(list)) => list.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        Some(_) => return Err(format!("the repository policy's Statement is not a list of statements; {LEFT}")),
        None => return Err(format!("the repository policy has no Statement list; {LEFT}")),
    };
    Ok((doc, statements))
}

/// The `Sid`s of berth's statements in a policy, in its order; none when it cannot be read.
pub fn berth_sids(policy: Option<&str>) -> Vec<String> {
    let Some(Ok((_, statements))) = policy.map(read) else { return Vec::new() };
    statements
        .iter()
        .filter(|s| is_berth(s))
        .filter_map(|s| s.get("Sid").and_then(Value::as_str).map(String::from))
        .collect()
}

/// The repository policy with berth's statements replaced by `berth` (from
/// [`berth_statements`]): every statement of `existing` whose `Sid` does not start with `Berth`
/// kept, in its order, then berth's, sorted by `Sid`; `existing`'s `Version` and other fields
/// kept. An `existing` that is not JSON or has no `Statement` list is an error: berth does not
/// overwrite a policy it cannot read.
pub fn merge(existing: Option<&str>, berth: &[Value]) -> Result<Merged, String> {
    if let Some(s) = berth.iter().find(|s| !is_berth(s)) {
        return Err(format!("a statement berth writes needs a Sid starting with {SID_PREFIX}: {s}"));
    }
    let (mut doc, statements) = match existing {
        Some(text) => read(text)?,
        None => (Map::new(), Vec::new()),
    };
    let had_berth = statements.iter().any(is_berth);
    if !had_berth && berth.is_empty() {
        // Somebody else's policy, or none: nothing of berth's to add or take away.
        return Ok(Merged::Unchanged);
    }
    let mut ours = berth.to_vec();
    ours.sort_by(|a, b| a["Sid"].as_str().cmp(&b["Sid"].as_str()));
    let merged: Vec<Value> = statements.iter().filter(|s| !is_berth(s)).cloned().chain(ours).collect();
    if merged.is_empty() {
        return Ok(Merged::Delete);
    }
    let before = existing.map(|_| Value::Object(doc.clone()));
    doc.entry("Version").or_insert_with(|| VERSION.into());
    doc.insert("Statement".into(), Value::Array(merged));
    let after = Value::Object(doc);
    if before.is_some_and(|b| normalized(&b) == normalized(&after)) {
        return Ok(Merged::Unchanged);
    }
    serde_json::to_string(&after).map(Merged::Set).map_err(|e| format!("writing the repository policy: {e}"))
}

/// A policy as IAM means it, for comparison: statements as a list, and in each statement the
/// principal, action and resource lists sorted sets (a lone string as a list of one), and
/// `arn:<partition>:iam::<account>:root` as the account id ECR may have turned it from.
fn normalized(policy: &Value) -> Value {
    let mut policy = policy.clone();
    let Some(doc) = policy.as_object_mut() else { return policy };
    if let Some(one @ Value::Object(_)) = doc.get("Statement") {
        doc.insert("Statement".into(), Value::Array(vec![one.clone()]));
    }
    if let Some(Value::Array(statements)) = doc.get_mut("Statement") {
        for statement in statements.iter_mut().filter_map(Value::as_object_mut) {
            for key in ["Action", "NotAction", "Resource", "NotResource"] {
                if let Some(v) = statement.get_mut(key) {
                    *v = string_set(v, str::to_string);
                }
            }
            for key in ["Principal", "NotPrincipal"] {
                if let Some(Value::Object(principal)) = statement.get_mut(key) {
                    for (kind, v) in principal.iter_mut() {
                        *v = if kind == "AWS" { string_set(v, account_of_root) } else { string_set(v, str::to_string) };
                    }
                }
            }
        }
    }
    policy
}

/// A string or a list of strings as a sorted list; anything else as it is.
fn string_set(v: &Value, canonical: impl Fn(&str) -> String) -> Value {
    let items: Option<BTreeSet<String>> = match v {
        Value::String(s) => Some([canonical(s)].into()),
        Value::Array(list) => list.iter().map(|i| i.as_str().map(&canonical)).collect(),
        _ => None,
    };
    items.map(|set| Value::Array(set.into_iter().map(Value::String).collect())).unwrap_or_else(|| v.clone())
}

/// `arn:aws:iam::123456789012:root` (any partition) as `123456789012`: the same principal.
fn account_of_root(principal: &str) -> String {
    let account = principal
        .strip_prefix("arn:")
        .and_then(|rest| rest.split_once(":iam::"))
        .filter(|(partition, _)| partition.starts_with("aws"))
        .and_then(|(_, rest)| rest.strip_suffix(":root"))
        .filter(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()));
    account.unwrap_or(principal).to_string()
}

#[cfg(test)]
mod tests;
