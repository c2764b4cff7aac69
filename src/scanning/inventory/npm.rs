//! npm packages, from every package's own `package.json` under `node_modules` (nested
//! `node_modules` too: each copy installed is reported, at its location). `name` and
//! `version` as written; a manifest without both is not a package.

use serde::Deserialize;

use crate::scanning::{Package, layers::Files};

#[derive(Deserialize)]
struct Manifest {
    name: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

/// Every package installed under a `node_modules` directory of the image.
pub fn packages(files: &Files) -> Vec<Package> {
    files
        .files
        .iter()
        .filter(|(path, _)| path.ends_with("/package.json") && path.contains("/node_modules/"))
        .filter_map(|(path, json)| parse(json, path))
        .collect()
}

/// One `package.json`.
pub fn parse(json: &[u8], location: &str) -> Option<Package> {
    let manifest: Manifest = serde_json::from_slice(json).ok()?;
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    };
    Some(Package {
        name: text(manifest.name)?,
        version: text(manifest.version)?,
        ecosystem: "npm".to_owned(),
        source: None,
        location: location.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_scoped_packages() {
        let mut files = Files::default();
        for (path, json) in [
            ("/app/node_modules/a/package.json", r#"{"name":"a","version":"1.0.0"}"#),
            ("/app/node_modules/a/node_modules/b/package.json", r#"{"name":"b","version":"0.1.0","dependencies":{}}"#),
            ("/app/node_modules/@s/c/package.json", r#"{"name":"@s/c","version":"2.0.0"}"#),
            ("/app/node_modules/noversion/package.json", r#"{"name":"noversion"}"#),
            ("/app/node_modules/bad/package.json", "{not json"),
            ("/app/node_modules/num/package.json", r#"{"name":"num","version":1}"#),
            ("/app/package.json", r#"{"name":"app","version":"1.0.0"}"#),
        ] {
            files.files.insert(path.into(), json.as_bytes().to_vec());
        }
        let found: Vec<String> =
            packages(&files).into_iter().map(|p| format!("{}@{} {}", p.name, p.version, p.location)).collect();
        assert_eq!(
            found,
            [
                "@s/c@2.0.0 /app/node_modules/@s/c/package.json",
                "b@0.1.0 /app/node_modules/a/node_modules/b/package.json",
                "a@1.0.0 /app/node_modules/a/package.json",
            ]
        );
    }
}
