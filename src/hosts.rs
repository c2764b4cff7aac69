//! The host names a registry is pulled by, and which of them an image reference names. Pure.
//!
//! berth reaches a registry at its `url`, but nodes often pull it by another name (an Ingress
//! host, a node port such as `127.0.0.1:30500`): the Registry's `aliases` list those.
//! Everything berth derives from a registry's host takes every one of its names: the `auths`
//! keys of pull secrets, which Registry a workload's image is in (rollouts), and which images
//! workloads and pods use (lifecycle protection, deletion).
//!
//! Names compare as the image reference grammar and the kubelet compare them: case-insensitively
//! for berth's own matching (aliases are lower case, and so is a URL's host once parsed), ports
//! exactly (`r.example:443` is not `r.example`), `index.docker.io` as `docker.io`, and a
//! reference without a host (`nginx`, `team/app`) on `docker.io`, `nginx` as `library/nginx`.

use std::collections::BTreeMap;

use crate::api::RegistrySpec;

/// Where a reference without a registry host pulls from.
pub const DOCKER_HUB: &str = "docker.io";
/// The old name of `docker.io`, which the reference grammar reads as `docker.io`.
const LEGACY_DOCKER_HUB: &str = "index.docker.io";

/// Aliases one Registry may list.
pub const MAX_ALIASES: usize = 32;
/// The longest alias: a 253-character DNS name and `:65535`.
pub const MAX_ALIAS_LEN: usize = 259;

/// `host[:port]` of a registry URL: lower case (the URL parser lowers it), without the scheme's
/// default port. The first part of every image reference that uses the URL's name.
pub fn url_host(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    Some(match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// The form host names compare in: lower case, `index.docker.io` as `docker.io`.
pub fn canonical(host: &str) -> String {
    let lower = host.to_ascii_lowercase();
    if lower == LEGACY_DOCKER_HUB { DOCKER_HUB.to_string() } else { lower }
}

fn dns_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Why `alias` is not a `host[:port]` that image references can name, if it is not. The same
/// rules as the CRD's admission rules, for objects those did not check.
pub fn check_alias(alias: &str) -> Result<(), String> {
    if alias.contains('/') {
        return Err(format!("{alias:?} is not host[:port]: no scheme and no path"));
    }
    if alias.is_empty() || alias.len() > MAX_ALIAS_LEN {
        return Err(format!("{alias:?} must be 1 to {MAX_ALIAS_LEN} characters"));
    }
    let (host, port) = match alias.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest.split_once(']').ok_or_else(|| format!("{alias:?}: unclosed '['"))?;
            // An IPv6 address always has a ':' (the admission rule asks for one too).
            if !inside.contains(':')
                || !inside.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'a'..=b'f' | b':' | b'.'))
            {
                return Err(format!("{alias:?}: an IPv6 address in brackets is lower-case hex digits, ':' and '.'"));
            }
            match after {
                "" => (alias, None),
                _ => (
                    &alias[..inside.len() + 2],
                    Some(after.strip_prefix(':').ok_or_else(|| format!("{alias:?}: only :port may follow ']'"))?),
                ),
            }
        }
        None => match alias.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (alias, None),
        },
    };
    if !host.starts_with('[') && !host.split('.').all(dns_label) {
        return Err(format!(
            "{alias:?}: a host name is lower-case letters, digits and '-', in dot-separated labels of at most 63"
        ));
    }
    if let Some(p) = port
        && (p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|c| c.is_ascii_digit())
            || !(1..=65535).contains(&p.parse::<u32>().unwrap_or(0)))
    {
        return Err(format!("{alias:?}: the port must be a number from 1 to 65535"));
    }
    if port.is_none() && !host.contains('.') && !host.starts_with('[') && host != "localhost" {
        return Err(format!(
            "{alias:?} has no '.' and no port: an image reference reads such a first component as a Docker Hub path, not a host"
        ));
    }
    Ok(())
}

/// Every name a Registry is pulled by, as pull secrets write them (the kubelet compares their
/// case): its `url`'s host first, then its valid aliases (lower case), each once.
pub fn of_registry(spec: &RegistrySpec) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let aliases = spec.aliases.iter().filter(|a| check_alias(a).is_ok()).cloned();
    for host in url_host(&spec.url).into_iter().chain(aliases) {
        if !out.contains(&host) {
            out.push(host);
        }
    }
    out
}

/// An image reference's registry host as written (`docker.io` when it names none) and the rest,
/// `path[:tag][@digest]`, split as the distribution reference library splits them: the first
/// component is a host when it has a `.` or a `:`, is `localhost`, or has an upper-case letter.
pub fn split_reference(reference: &str) -> (&str, &str) {
    match reference.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, reference),
    }
}

/// When `reference` names repository `path` under one of `hosts` (as [`of_registry`] gives
/// them; compared canonically), what follows the path: `""`, `:tag`, `@digest` or
/// `:tag@digest`. `app2` and `app/sub` are not `app`.
pub fn repository_suffix<'a>(reference: &'a str, hosts: &[String], path: &str) -> Option<&'a str> {
    let (host, rest) = split_reference(reference);
    let host = canonical(host);
    if !hosts.iter().any(|h| canonical(h) == host) {
        return None;
    }
    let suffix = match rest.strip_prefix(path) {
        Some(s) => s,
        // `nginx` and `docker.io/nginx` are `docker.io/library/nginx`.
        None if host == DOCKER_HUB => {
            let short = path.strip_prefix("library/").filter(|p| !p.contains('/'))?;
            rest.strip_prefix(short)?
        }
        None => return None,
    };
    (suffix.is_empty() || suffix.starts_with([':', '@'])).then_some(suffix)
}

/// Which Registry object each host name belongs to. When two claim one name, a Registry's `url`
/// host wins over another's alias, and otherwise the Registry whose name sorts first: every
/// replica decides the same.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Index {
    /// canonical host -> (is an alias, Registry name)
    by_host: BTreeMap<String, (bool, String)>,
}

impl Index {
    pub fn new<'a>(registries: impl IntoIterator<Item = (&'a str, &'a RegistrySpec)>) -> Index {
        let mut by_host: BTreeMap<String, (bool, String)> = BTreeMap::new();
        for (name, spec) in registries {
            for (i, host) in of_registry(spec).iter().enumerate() {
                // `of_registry` puts the url's host first, when the url has one.
                let alias = i > 0 || url_host(&spec.url).is_none();
                let claim = (alias, name.to_string());
                let host = canonical(host);
                match by_host.get(&host) {
                    Some(held) if *held <= claim => {}
                    _ => {
                        by_host.insert(host, claim);
                    }
                }
            }
        }
        Index { by_host }
    }

    /// The Registry pulled by `host` (compared canonically), if berth knows one.
    pub fn registry(&self, host: &str) -> Option<&str> {
        self.by_host.get(&canonical(host)).map(|(_, name)| name.as_str())
    }
}

#[cfg(test)]
mod tests;
