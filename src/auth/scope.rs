//! The `scope` parameters of a token request, parsed into what berth can decide on.
//!
//! Anything berth does not understand is dropped, never reinterpreted: a scope that does not
//! parse, names an unknown resource type or asks only for unknown actions simply is not granted,
//! which is what the protocol expects (a partial or empty grant is not an error). Dropping keeps
//! the token endpoint from ever granting more than what was asked in a form it understood.
//!
//! Grammar (distribution's "Token Scope Documentation"): `type[(class)]:name:actions`. A name may
//! hold `:` (a `host:port/...` prefix), so the type ends at the first `:` and the actions start
//! after the last one.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::api::Action;

/// Distinct scopes kept from one request. docker and skopeo ask for one or two; a request with
/// more than this is not a real client, and the cap bounds the work and the token's size.
pub const MAX_SCOPES: usize = 64;
/// Bytes of `scope` values read from one request; the rest is ignored.
pub const MAX_SCOPE_INPUT: usize = 16 * 1024;
/// Longest repository path distribution accepts.
pub const MAX_REPOSITORY_PATH: usize = 255;
/// Longest single scope worth parsing: type and class, a maximal path and every action.
const MAX_SCOPE_LEN: usize = MAX_REPOSITORY_PATH + 64;

/// What a scope is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// A repository path such as `team-a/app` (no registry host).
    Repository(String),
    /// `registry:catalog:*`, listing every repository (`GET /v2/_catalog`).
    Catalog,
}

/// One requested scope after parsing. For [`Resource::Catalog`] the actions are always all three
/// (the only catalog scope the registry knows is `registry:catalog:*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub resource: Resource,
    /// Never empty: a scope without a known action is dropped while parsing.
    pub actions: BTreeSet<Action>,
}

impl Scope {
    /// A repository scope, for callers and tests that build scopes directly.
    pub fn repository(path: impl Into<String>, actions: impl IntoIterator<Item = Action>) -> Scope {
        Scope { resource: Resource::Repository(path.into()), actions: actions.into_iter().collect() }
    }

    /// The catalog scope.
    pub fn catalog() -> Scope {
        Scope { resource: Resource::Catalog, actions: ALL_ACTIONS.into_iter().collect() }
    }
}

/// Every repository action, which `*` stands for.
pub const ALL_ACTIONS: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

/// Why a single scope was dropped. Only for logs and tests: the token endpoint never reports it
/// to the client, which just gets a token without that scope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope is empty or longer than {MAX_SCOPE_LEN} bytes")]
    Length,
    #[error("scope is not type:name:actions")]
    Shape,
    #[error("resource type {0:?} is not repository or registry")]
    UnknownType(String),
    #[error("resource class {0:?} is malformed")]
    BadClass(String),
    #[error("{0:?} is not a repository path (lower-case components joined by '/', at most 255 bytes)")]
    BadName(String),
    #[error("registry resource {0:?} is not catalog")]
    UnknownRegistryResource(String),
    #[error("no known action in {0:?}")]
    NoActions(String),
}

/// Parses the `scope` values of one request (several `scope=` parameters, each holding one or
/// more space-separated scopes) into distinct scopes, in the order first asked. Scopes on the
/// same resource are merged (docker may ask for `pull` and `pull,push` separately). Invalid
/// scopes are dropped; at most [`MAX_SCOPES`] are kept and at most [`MAX_SCOPE_INPUT`] bytes read.
pub fn parse_scopes<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
    let mut scopes: Vec<Scope> = Vec::new();
    let mut seen: HashMap<Resource, usize> = HashMap::new();
    let mut budget = MAX_SCOPE_INPUT;
    'values: for value in values {
        for item in value.split_ascii_whitespace() {
            if item.len() > budget {
                break 'values;
            }
            budget -= item.len();
            let Ok(scope) = parse_scope(item) else { continue };
            match seen.get(&scope.resource) {
                Some(&i) => scopes[i].actions.extend(scope.actions),
                None if scopes.len() < MAX_SCOPES => {
                    seen.insert(scope.resource.clone(), scopes.len());
                    scopes.push(scope);
                }
                None => {}
            }
        }
    }
    scopes
}

/// Parses one scope such as `repository:team-a/app:pull,push`.
///
/// A resource class (`repository(plugin):x:pull`, sent by docker for plugins) is accepted and
/// dropped: distribution matches tokens on type and name only, so the class changes nothing the
/// registry checks, and authorization is decided on the name either way. Unknown actions in a
/// list are ignored (`pull,shout` asks for `pull`); a list with none known drops the scope.
pub fn parse_scope(scope: &str) -> Result<Scope, ScopeError> {
    if scope.is_empty() || scope.len() > MAX_SCOPE_LEN {
        return Err(ScopeError::Length);
    }
    let (kind, rest) = scope.split_once(':').ok_or(ScopeError::Shape)?;
    let (name, actions) = rest.rsplit_once(':').ok_or(ScopeError::Shape)?;
    let (kind, class) = split_class(kind)?;
    match kind {
        "repository" => {
            if !valid_repository_path(name) {
                return Err(ScopeError::BadName(name.to_string()));
            }
            let mut set = BTreeSet::new();
            for action in actions.split(',') {
                match action {
                    "pull" => _ = set.insert(Action::Pull),
                    "push" => _ = set.insert(Action::Push),
                    "delete" => _ = set.insert(Action::Delete),
                    "*" => set.extend(ALL_ACTIONS),
                    _ => {}
                }
            }
            if set.is_empty() {
                return Err(ScopeError::NoActions(actions.to_string()));
            }
            Ok(Scope { resource: Resource::Repository(name.to_string()), actions: set })
        }
        "registry" if class.is_none() => {
            if name != "catalog" {
                return Err(ScopeError::UnknownRegistryResource(name.to_string()));
            }
            if !actions.split(',').any(|a| a == "*") {
                return Err(ScopeError::NoActions(actions.to_string()));
            }
            Ok(Scope::catalog())
        }
        "registry" => Err(ScopeError::BadClass(class.unwrap_or_default().to_string())),
        other => Err(ScopeError::UnknownType(other.to_string())),
    }
}

/// Splits `type(class)` into type and class; a class must be `[a-zA-Z0-9]+` as the grammar says.
fn split_class(kind: &str) -> Result<(&str, Option<&str>), ScopeError> {
    let Some((kind, class)) = kind.split_once('(') else {
        return Ok((kind, None));
    };
    match class.strip_suffix(')') {
        Some(class) if !class.is_empty() && class.bytes().all(|b| b.is_ascii_alphanumeric()) => Ok((kind, Some(class))),
        _ => Err(ScopeError::BadClass(class.to_string())),
    }
}

/// A repository path as distribution and the Repository CRD accept it: components
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`, at most 255 bytes. A `host:port/` prefix is
/// not part of a path in a registry berth serves, so it is refused.
pub fn valid_repository_path(path: &str) -> bool {
    !path.is_empty() && path.len() <= MAX_REPOSITORY_PATH && path.split('/').all(valid_component)
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !is_alnum(*first) || !is_alnum(*last) {
        return false;
    }
    // Between alphanumeric runs: exactly one `.`, one or two `_`, or any number of `-`.
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let sep = bytes[i];
        while i < bytes.len() && bytes[i] == sep {
            i += 1;
        }
        let run = i - start;
        let ok = match sep {
            b'.' => run == 1,
            b'_' => run <= 2,
            b'-' => true,
            _ => false,
        };
        // A run of one separator followed by another kind (`a.-b`) ends here at a non-alnum.
        if !ok || i >= bytes.len() || !is_alnum(bytes[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// How a granted scope appears in the token's `access` claim, e.g.
/// `{"type":"repository","name":"team/app","actions":["pull","push"]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    /// A repository grant; actions come out in the order pull, push, delete.
    pub fn repository(path: &str, actions: &BTreeSet<Action>) -> Access {
        Access {
            kind: "repository".to_string(),
            name: path.to_string(),
            actions: actions.iter().map(|a| action_name(*a).to_string()).collect(),
        }
    }

    /// The catalog grant, which the registry only recognizes as `*`.
    pub fn catalog() -> Access {
        Access { kind: "registry".to_string(), name: "catalog".to_string(), actions: vec!["*".to_string()] }
    }
}

/// The protocol's name of an action.
pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Pull => "pull",
        Action::Push => "push",
        Action::Delete => "delete",
    }
}

#[cfg(test)]
mod tests;
