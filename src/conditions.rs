//! Conditions as kstatus and `kubectl wait` expect them: `Ready` with a CamelCase reason, and a
//! `lastTransitionTime` that moves only when the status does (so status writes do not loop).

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use crate::api::CONDITION_READY;

/// A `Ready` condition.
pub fn ready(ok: bool, reason: &str, message: impl Into<String>, generation: Option<i64>) -> Condition {
    Condition {
        type_: CONDITION_READY.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Replaces the condition of the same type, keeping the old transition time when the status
/// did not change.
pub fn merge(existing: &[Condition], mut new: Condition) -> Vec<Condition> {
    let mut out: Vec<Condition> = existing.iter().filter(|c| c.type_ != new.type_).cloned().collect();
    if let Some(old) = existing.iter().find(|c| c.type_ == new.type_)
        && old.status == new.status
    {
        new.last_transition_time = old.last_transition_time.clone();
    }
    out.push(new);
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// The `Ready` condition among `conditions`, if any.
pub fn find_ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == CONDITION_READY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut first = ready(true, "Reconciled", "ok", Some(1));
        first.last_transition_time = Time(Timestamp::from_second(1000).unwrap());
        let merged = merge(&[first.clone()], ready(true, "Reconciled", "still ok", Some(2)));
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].last_transition_time, first.last_transition_time);
        assert_eq!(merged[0].message, "still ok");
        let flipped = merge(&merged, ready(false, "RegistryUnreachable", "down", Some(2)));
        assert_ne!(flipped[0].last_transition_time, first.last_transition_time);
        assert_eq!(flipped[0].status, "False");
    }

    #[test]
    fn other_condition_types_are_kept() {
        let mut other = ready(true, "X", "", None);
        other.type_ = "Deleting".into();
        let merged = merge(&[other], ready(false, "Conflict", "taken", None));
        assert_eq!(merged.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(), ["Deleting", "Ready"]);
        assert!(find_ready(&merged).is_some_and(|c| c.reason == "Conflict"));
    }
}
