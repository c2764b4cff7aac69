//! Lifecycle policy input: ECR's JSON exactly as `aws ecr put-lifecycle-policy` takes it, or a
//! `LifecyclePolicy` object, validated with ECR's rules. Every error names the rule priority and
//! the field.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::api::LifecyclePolicySpec;

/// ECR's limit on the policy text.
pub const MAX_POLICY_TEXT: usize = 30_720;

/// A validated policy, rules sorted by priority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub priority: i64,
    pub description: Option<String>,
    pub selection: Selection,
    pub count: Count,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    TaggedPrefixes(Vec<String>),
    TaggedPatterns(Vec<String>),
    Untagged,
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// `imageCountMoreThan`: keep the newest N.
    MoreThan(u64),
    /// `sinceImagePushed` in days.
    SinceDays(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

fn err(message: impl Into<String>) -> PolicyError {
    PolicyError(message.into())
}

/// Fields of ECR's archive tier, which berth does not implement.
const ARCHIVE_FIELDS: &[&str] = &["storageClass", "targetStorageClass", "transition"];
const ARCHIVE_COUNT_TYPES: &[&str] = &["sinceImagePulled", "sinceImageTransitioned"];

/// Parses ECR's lifecycle policy JSON text.
pub fn parse_ecr_json(text: &str) -> Result<Policy, PolicyError> {
    if text.chars().count() > MAX_POLICY_TEXT {
        return Err(err(format!(
            "the policy text is {} characters; ECR allows at most {MAX_POLICY_TEXT}",
            text.chars().count()
        )));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| err(format!("the policy is not valid JSON: {e}")))?;
    policy_from_value(&value)
}

/// Parses a policy file: ECR JSON (`{"rules": [...]}`) or a LifecyclePolicy manifest, in YAML
/// or JSON.
pub fn parse_policy_document(text: &str) -> Result<Policy, PolicyError> {
    let value: Value = serde_yaml::from_str(text).map_err(|e| err(format!("the policy is not JSON or YAML: {e}")))?;
    match value.get("kind").and_then(Value::as_str) {
        Some("LifecyclePolicy") => {
            let spec = value.get("spec").ok_or_else(|| err("the LifecyclePolicy has no spec"))?;
            policy_from_value(spec)
        }
        Some(other) => Err(err(format!("expected ECR policy JSON or a LifecyclePolicy, got kind {other:?}"))),
        None => {
            if serde_json::from_str::<Value>(text).is_ok() {
                parse_ecr_json(text)
            } else {
                policy_from_value(&value)
            }
        }
    }
}

/// Validates a LifecyclePolicy object's rules the same way as ECR JSON.
pub fn policy_from_spec(spec: &LifecyclePolicySpec) -> Result<Policy, PolicyError> {
    let value = serde_json::json!({"rules": serde_json::to_value(&spec.rules).map_err(|e| err(e.to_string()))?});
    policy_from_value(&value)
}

fn policy_from_value(value: &Value) -> Result<Policy, PolicyError> {
    let obj = value.as_object().ok_or_else(|| err("the policy must be an object with \"rules\""))?;
    for key in obj.keys() {
        if key != "rules" {
            // A LifecyclePolicy spec carries berth's own fields beside the rules.
            if !matches!(key.as_str(), "protectInUse" | "dryRun" | "interval" | "maxDeletionsPerRun") {
                return Err(err(format!("unknown field {key:?} in the policy (expected \"rules\")")));
            }
        }
    }
    let rules = obj.get("rules").and_then(Value::as_array).ok_or_else(|| err("the policy needs a \"rules\" array"))?;
    if rules.is_empty() {
        return Err(err("the policy needs at least one rule"));
    }
    let mut parsed = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        parsed.push(parse_rule(index, rule)?);
    }
    let mut priorities = BTreeSet::new();
    for r in &parsed {
        if !priorities.insert(r.priority) {
            return Err(err(format!("rule {}: rulePriority {} is used by more than one rule", r.priority, r.priority)));
        }
    }
    parsed.sort_by_key(|r| r.priority);
    let highest = parsed.last().map(|r| r.priority).unwrap_or_default();
    for r in &parsed {
        if r.selection == Selection::Any && r.priority != highest {
            return Err(err(format!(
                "rule {}: selection.tagStatus \"any\" must be on the rule with the highest rulePriority (here {highest})",
                r.priority
            )));
        }
    }
    let untagged: Vec<i64> = parsed.iter().filter(|r| r.selection == Selection::Untagged).map(|r| r.priority).collect();
    if untagged.len() > 1 {
        return Err(err(format!(
            "rules {untagged:?}: only one rule may select untagged images (selection.tagStatus \"untagged\")"
        )));
    }
    Ok(Policy { rules: parsed })
}

fn parse_rule(index: usize, rule: &Value) -> Result<Rule, PolicyError> {
    let obj = rule.as_object().ok_or_else(|| err(format!("rules[{index}] must be an object")))?;
    let priority = match obj.get("rulePriority") {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|p| p >= 1) => n.as_i64().unwrap_or_default(),
        Some(other) => {
            return Err(err(format!("rules[{index}]: rulePriority must be a positive integer, got {other}")));
        }
        None => return Err(err(format!("rules[{index}]: rulePriority is required"))),
    };
    let at = |field: &str| format!("rule {priority}: {field}");
    for key in obj.keys() {
        if !matches!(key.as_str(), "rulePriority" | "description" | "selection" | "action") {
            return Err(err(format!("{}: unknown field", at(key))));
        }
    }
    let description = match obj.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(err(format!("{} must be a string", at("description")))),
    };
    let action =
        obj.get("action").and_then(Value::as_object).ok_or_else(|| err(format!("{} is required", at("action"))))?;
    for key in action.keys() {
        if ARCHIVE_FIELDS.contains(&key.as_str()) {
            return Err(err(format!("{}: ECR's archive tier is not supported by berth", at(&format!("action.{key}")))));
        }
        if key != "type" {
            return Err(err(format!("{}: unknown field", at(&format!("action.{key}")))));
        }
    }
    match action.get("type").and_then(Value::as_str) {
        Some("expire") => {}
        Some("transition") => {
            return Err(err(format!(
                "{}: \"transition\" (ECR's archive tier) is not supported by berth",
                at("action.type")
            )));
        }
        Some(other) => return Err(err(format!("{} must be \"expire\", got {other:?}", at("action.type")))),
        None => return Err(err(format!("{} is required", at("action.type")))),
    }
    let sel = obj
        .get("selection")
        .and_then(Value::as_object)
        .ok_or_else(|| err(format!("{} is required", at("selection"))))?;
    for key in sel.keys() {
        if ARCHIVE_FIELDS.contains(&key.as_str()) {
            return Err(err(format!(
                "{}: ECR's archive tier is not supported by berth",
                at(&format!("selection.{key}"))
            )));
        }
        if !matches!(
            key.as_str(),
            "tagStatus" | "tagPrefixList" | "tagPatternList" | "countType" | "countUnit" | "countNumber"
        ) {
            return Err(err(format!("{}: unknown field", at(&format!("selection.{key}")))));
        }
    }
    let list = |field: &str| -> Result<Option<Vec<String>>, PolicyError> {
        match sel.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    return Err(err(format!("{} must not be empty", at(&format!("selection.{field}")))));
                }
                items
                    .iter()
                    .map(|i| match i.as_str() {
                        Some(s) if !s.is_empty() => Ok(s.to_string()),
                        _ => {
                            Err(err(format!("{} entries must be non-empty strings", at(&format!("selection.{field}")))))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }
            Some(_) => Err(err(format!("{} must be a list of strings", at(&format!("selection.{field}"))))),
        }
    };
    let prefixes = list("tagPrefixList")?;
    let patterns = list("tagPatternList")?;
    let selection = match sel.get("tagStatus").and_then(Value::as_str) {
        Some("tagged") => match (prefixes, patterns) {
            (Some(p), None) => Selection::TaggedPrefixes(p),
            (None, Some(p)) => {
                if let Some(bad) = p.iter().find(|p| p.matches('*').count() > 4) {
                    return Err(err(format!(
                        "{}: {bad:?} has more than 4 '*' wildcards",
                        at("selection.tagPatternList")
                    )));
                }
                Selection::TaggedPatterns(p)
            }
            _ => {
                return Err(err(format!(
                    "{}: tagStatus \"tagged\" needs exactly one of tagPrefixList or tagPatternList",
                    at("selection")
                )));
            }
        },
        Some(status @ ("untagged" | "any")) => {
            if prefixes.is_some() || patterns.is_some() {
                return Err(err(format!(
                    "{}: tagPrefixList and tagPatternList are only allowed with tagStatus \"tagged\", not {status:?}",
                    at("selection")
                )));
            }
            if status == "untagged" { Selection::Untagged } else { Selection::Any }
        }
        Some(other) => {
            return Err(err(format!(
                "{} must be \"tagged\", \"untagged\" or \"any\", got {other:?}",
                at("selection.tagStatus")
            )));
        }
        None => return Err(err(format!("{} is required", at("selection.tagStatus")))),
    };
    let number = match sel.get("countNumber") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => n.as_u64().unwrap_or(1),
        Some(other) => {
            return Err(err(format!("{} must be a positive integer, got {other}", at("selection.countNumber"))));
        }
        None => return Err(err(format!("{} is required", at("selection.countNumber")))),
    };
    let unit = sel.get("countUnit").and_then(|v| if v.is_null() { None } else { Some(v) });
    let count = match sel.get("countType").and_then(Value::as_str) {
        Some("imageCountMoreThan") => {
            if unit.is_some() {
                return Err(err(format!(
                    "{} is not allowed with countType imageCountMoreThan",
                    at("selection.countUnit")
                )));
            }
            Count::MoreThan(number)
        }
        Some("sinceImagePushed") => match unit.and_then(Value::as_str) {
            Some("days") => Count::SinceDays(number),
            Some(other) => {
                return Err(err(format!("{} must be \"days\", got {other:?}", at("selection.countUnit"))));
            }
            None => {
                return Err(err(format!("{} is required with countType sinceImagePushed", at("selection.countUnit"))));
            }
        },
        Some(other) if ARCHIVE_COUNT_TYPES.contains(&other) => {
            return Err(err(format!(
                "{}: {other:?} belongs to ECR's archive tier and is not supported by berth",
                at("selection.countType")
            )));
        }
        Some(other) => {
            return Err(err(format!(
                "{} must be \"imageCountMoreThan\" or \"sinceImagePushed\", got {other:?}",
                at("selection.countType")
            )));
        }
        None => return Err(err(format!("{} is required", at("selection.countType")))),
    };
    Ok(Rule { priority, description, selection, count })
}
