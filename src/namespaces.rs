//! Where berth may read Secrets and write: every namespace (the cluster-wide install), or only
//! the namespaces it is installed for (`--namespaces`, the chart's `rbac.scope: namespaces`,
//! whose RBAC grants those rights nowhere else). Pure: berth asks before it acts, so an object
//! outside the list is reported (`NamespaceNotManaged`) instead of failing on a refused request.

use std::{collections::BTreeSet, fmt};

/// The condition reason for something berth may not touch in that namespace.
pub const NOT_MANAGED: &str = "NamespaceNotManaged";

/// A set of namespaces: all of them, or a list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Namespaces {
    #[default]
    All,
    Only(BTreeSet<String>),
}

impl Namespaces {
    /// `a,b,c`: namespace names, at least one.
    pub fn parse(list: &str) -> Result<Namespaces, String> {
        let names: BTreeSet<String> =
            list.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect();
        if names.is_empty() {
            return Err("name at least one namespace".into());
        }
        if let Some(bad) = names.iter().find(|n| !is_dns_label(n)) {
            return Err(format!("{bad:?} is not a namespace name"));
        }
        Ok(Namespaces::Only(names))
    }

    /// Exactly one namespace, or all of them (`--namespace`).
    pub fn one(namespace: Option<&str>) -> Namespaces {
        match namespace {
            Some(ns) => Namespaces::Only([ns.to_string()].into()),
            None => Namespaces::All,
        }
    }

    pub fn allows(&self, namespace: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Only(names) => names.contains(namespace),
        }
    }

    /// The namespaces both sets hold.
    pub fn intersect(&self, other: &Namespaces) -> Namespaces {
        match (self, other) {
            (Namespaces::All, o) | (o, Namespaces::All) => o.clone(),
            (Namespaces::Only(a), Namespaces::Only(b)) => Namespaces::Only(a.intersection(b).cloned().collect()),
        }
    }

    /// Why berth leaves `what` in `namespace` alone, for a condition message; `None` when it may
    /// act there.
    pub fn refusal(&self, namespace: &str, what: &str) -> Option<String> {
        if self.allows(namespace) {
            return None;
        }
        Some(format!(
            "{what} is in namespace {namespace}, which berth is not installed for (it reads Secrets and writes \
             only in {self}): add {namespace} to the chart's rbac.namespaces (berth --namespaces)"
        ))
    }
}

impl fmt::Display for Namespaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Namespaces::All => f.write_str("every namespace"),
            Namespaces::Only(names) => f.write_str(&names.iter().cloned().collect::<Vec<_>>().join(", ")),
        }
    }
}

fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(names: &[&str]) -> Namespaces {
        Namespaces::Only(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn a_list_parses_into_names_and_rejects_what_is_no_namespace() {
        assert_eq!(Namespaces::parse("b, a,,a"), Ok(only(&["a", "b"])));
        assert!(Namespaces::parse(" , ").is_err());
        assert!(Namespaces::parse("team-a,Team-B").unwrap_err().contains("Team-B"));
        assert!(Namespaces::parse("-a").is_err());
        assert!(Namespaces::parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn all_allows_everything_and_a_list_only_its_names() {
        assert!(Namespaces::All.allows("kube-system"));
        assert!(only(&["a"]).allows("a"));
        assert!(!only(&["a"]).allows("kube-system"));
        assert!(!only(&["a"]).allows(""));
        assert_eq!(Namespaces::one(Some("a")), only(&["a"]));
        assert_eq!(Namespaces::one(None), Namespaces::All);
    }

    #[test]
    fn intersections_keep_what_both_allow() {
        assert_eq!(Namespaces::All.intersect(&Namespaces::All), Namespaces::All);
        assert_eq!(Namespaces::All.intersect(&only(&["a"])), only(&["a"]));
        assert_eq!(only(&["a", "b"]).intersect(&Namespaces::All), only(&["a", "b"]));
        assert_eq!(only(&["a", "b"]).intersect(&only(&["b", "c"])), only(&["b"]));
        assert_eq!(only(&["a"]).intersect(&only(&["c"])), only(&[]));
    }

    #[test]
    fn a_refusal_names_the_namespace_the_list_and_the_fix() {
        assert_eq!(Namespaces::All.refusal("x", "it"), None);
        assert_eq!(only(&["a"]).refusal("a", "it"), None);
        let message = only(&["a", "b"]).refusal("x", "pull secret target").unwrap();
        assert!(message.contains("namespace x"), "{message}");
        assert!(message.contains("only in a, b"), "{message}");
        assert!(message.contains("rbac.namespaces"), "{message}");
    }
}
