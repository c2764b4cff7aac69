//! Which workload watches run, as namespaces opt in to rollouts and out again.

use std::collections::BTreeSet;

use crate::namespaces::Namespaces;

/// One set of workload watches: over every namespace (`None`) or over one.
pub type WatchKey = Option<String>;

/// The watches to stop and to (re)start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchChanges {
    pub stop: Vec<WatchKey>,
    pub start: Vec<WatchKey>,
}

/// The namespaces opting in went from `before` to `now`. With `watched` all namespaces, one
/// cluster-wide watch runs while any namespace opts in, restarted when one joins so that the
/// workloads already there are listed again; with a list, one watch per namespace that both
/// opts in and is listed.
pub fn watch_changes(watched: &Namespaces, before: &BTreeSet<String>, now: &BTreeSet<String>) -> WatchChanges {
    match watched {
        Namespaces::All if now.is_empty() && !before.is_empty() => WatchChanges { stop: vec![None], start: vec![] },
        Namespaces::All if now.difference(before).next().is_some() => WatchChanges { stop: vec![], start: vec![None] },
        Namespaces::All => WatchChanges::default(),
        Namespaces::Only(names) => WatchChanges {
            stop: before.difference(now).filter(|n| names.contains(*n)).cloned().map(Some).collect(),
            start: now.difference(before).filter(|n| names.contains(*n)).cloned().map(Some).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn changes(stop: &[Option<&str>], start: &[Option<&str>]) -> WatchChanges {
        let keys = |k: &[Option<&str>]| k.iter().map(|n| n.map(String::from)).collect();
        WatchChanges { stop: keys(stop), start: keys(start) }
    }

    #[test]
    fn cluster_wide_one_watch_runs_while_a_namespace_opts_in_and_restarts_when_one_joins() {
        let all = Namespaces::All;
        assert_eq!(watch_changes(&all, &set(&[]), &set(&[])), changes(&[], &[]), "nobody opted in: no watch");
        assert_eq!(watch_changes(&all, &set(&[]), &set(&["a"])), changes(&[], &[None]));
        assert_eq!(watch_changes(&all, &set(&["a"]), &set(&["a", "b"])), changes(&[], &[None]), "b's workloads listed");
        assert_eq!(watch_changes(&all, &set(&["a", "b"]), &set(&["a"])), changes(&[], &[]), "a leaves nothing to list");
        assert_eq!(watch_changes(&all, &set(&["a"]), &set(&["b"])), changes(&[], &[None]));
        assert_eq!(watch_changes(&all, &set(&["a"]), &set(&[])), changes(&[None], &[]));
        assert_eq!(watch_changes(&all, &set(&["a"]), &set(&["a"])), changes(&[], &[]), "a relist changes nothing");
    }

    #[test]
    fn with_a_list_one_watch_per_namespace_that_opts_in_and_is_listed() {
        let listed = Namespaces::parse("a,b").unwrap();
        assert_eq!(watch_changes(&listed, &set(&[]), &set(&["a", "x"])), changes(&[], &[Some("a")]), "x not listed");
        assert_eq!(watch_changes(&listed, &set(&["a", "x"]), &set(&["a", "b"])), changes(&[], &[Some("b")]));
        assert_eq!(watch_changes(&listed, &set(&["a", "b"]), &set(&["b", "x"])), changes(&[Some("a")], &[]));
        assert_eq!(watch_changes(&listed, &set(&["b"]), &set(&[])), changes(&[Some("b")], &[]));
    }
}
