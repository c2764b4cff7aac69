//! Which Repository may use which path in a registry. Pure functions, no I/O.
//!
//! A Repository's path must begin with its own namespace unless its Registry allows that
//! namespace other prefixes; otherwise one namespace could declare (and grant itself push to)
//! another team's images. When two Repository objects claim one path, the older one keeps it.

use crate::api::NamespacePathPrefixes;

/// The path a Repository uses: `spec.name`, or `<namespace>/<metadata.name>`.
pub fn repository_path(namespace: &str, name: &str, spec_name: Option<&str>) -> String {
    match spec_name {
        Some(path) if !path.is_empty() => path.to_string(),
        _ => format!("{namespace}/{name}"),
    }
}

/// Why a path is not allowed for a namespace, or `Ok`.
pub fn check_path(namespace: &str, path: &str, allowed: &[NamespacePathPrefixes]) -> Result<(), String> {
    if has_prefix(path, namespace) {
        return Ok(());
    }
    let extra: Vec<&str> = allowed
        .iter()
        .filter(|a| a.namespace == namespace)
        .flat_map(|a| a.prefixes.iter().map(String::as_str))
        .collect();
    if extra.iter().any(|p| has_prefix(path, p)) {
        return Ok(());
    }
    let mut message = format!("path {path:?} must start with \"{namespace}/\"");
    if extra.is_empty() {
        message.push_str(" (the Registry allows this namespace no other prefix)");
    } else {
        message.push_str(&format!(" or one of the prefixes the Registry allows this namespace: {extra:?}"));
    }
    Err(message)
}

/// `path` lies under `prefix` as whole path components: `team-a/x` is under `team-a` and
/// `team-a/`, but `team-ab/x` is not under `team-a`.
fn has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    !prefix.is_empty()
        && path.len() > prefix.len() + 1
        && path.starts_with(prefix)
        && path.as_bytes()[prefix.len()] == b'/'
}

/// One Repository object's claim on a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub registry: String,
    pub path: String,
    pub namespace: String,
    pub name: String,
    /// `metadata.creationTimestamp` as seconds (older wins); `None` sorts last.
    pub created: Option<i64>,
}

/// The claim that owns `(registry, path)`: the oldest, ties broken by namespace and name, so
/// every replica and every pass decides the same.
pub fn path_owner<'a>(claims: impl IntoIterator<Item = &'a Claim>, registry: &str, path: &str) -> Option<&'a Claim> {
    claims.into_iter().filter(|c| c.registry == registry && c.path == path).min_by(|a, b| {
        let key = |c: &Claim| (c.created.unwrap_or(i64::MAX), c.namespace.clone(), c.name.clone());
        key(a).cmp(&key(b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(ns: &str, p: &[&str]) -> NamespacePathPrefixes {
        NamespacePathPrefixes { namespace: ns.into(), prefixes: p.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn default_path_is_namespace_slash_name() {
        assert_eq!(repository_path("team-a", "api", None), "team-a/api");
        assert_eq!(repository_path("team-a", "api", Some("")), "team-a/api");
        assert_eq!(repository_path("team-a", "api", Some("team-a/svc/api")), "team-a/svc/api");
    }

    #[test]
    fn own_namespace_prefix_is_allowed() {
        assert!(check_path("team-a", "team-a/app", &[]).is_ok());
        assert!(check_path("team-a", "team-a/deep/app", &[]).is_ok());
    }

    #[test]
    fn other_namespaces_and_lookalike_prefixes_are_refused() {
        let err = check_path("a", "b/app", &[]).unwrap_err();
        assert!(err.contains("must start with \"a/\""), "{err}");
        assert!(check_path("team-a", "team-ab/app", &[]).is_err(), "component boundary");
        assert!(check_path("team-a", "team-a", &[]).is_err(), "the bare namespace is not a repository under it");
        assert!(check_path("team-a", "team-a/", &[]).is_err());
    }

    #[test]
    fn registry_can_allow_extra_prefixes_per_namespace() {
        let allowed = [prefixes("platform", &["library/", "shared"])];
        assert!(check_path("platform", "library/busybox", &allowed).is_ok());
        assert!(check_path("platform", "shared/base", &allowed).is_ok());
        assert!(check_path("platform", "sharedx/base", &allowed).is_err());
        let err = check_path("team-a", "library/busybox", &allowed).unwrap_err();
        assert!(err.contains("no other prefix"), "{err}");
        let err = check_path("platform", "other/x", &allowed).unwrap_err();
        assert!(err.contains("library/"), "{err}");
    }

    #[test]
    fn oldest_claim_owns_a_path_and_ties_are_deterministic() {
        let claim = |ns: &str, name: &str, created: Option<i64>| Claim {
            registry: "main".into(),
            path: "shared/app".into(),
            namespace: ns.into(),
            name: name.into(),
            created,
        };
        let claims = [claim("b", "x", Some(20)), claim("a", "y", Some(10)), claim("c", "z", None)];
        assert_eq!(path_owner(&claims, "main", "shared/app").unwrap().namespace, "a");
        let tied = [claim("b", "x", Some(10)), claim("a", "y", Some(10))];
        assert_eq!(path_owner(&tied, "main", "shared/app").unwrap().namespace, "a");
        let mut reversed = tied.clone();
        reversed.reverse();
        assert_eq!(path_owner(&reversed, "main", "shared/app").unwrap().namespace, "a");
        assert!(path_owner(&claims, "other", "shared/app").is_none());
        assert!(path_owner(&claims, "main", "shared/other").is_none());
    }
}
