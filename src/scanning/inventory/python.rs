//! Python distributions, from their installed metadata: `*.dist-info/METADATA` (wheels, pip)
//! and `*.egg-info/PKG-INFO` or a single `*.egg-info` file (setuptools, distutils). The
//! `Name:` and `Version:` headers, as written: matching normalizes names (PEP 503).

use crate::scanning::{Package, layers::Files};

/// Every Python distribution whose metadata the image has.
pub fn packages(files: &Files) -> Vec<Package> {
    files
        .files
        .iter()
        .filter(|(path, _)| {
            path.ends_with(".dist-info/METADATA") || path.ends_with(".egg-info/PKG-INFO") || path.ends_with(".egg-info")
        })
        .filter_map(|(path, text)| parse(&String::from_utf8_lossy(text), path))
        .collect()
}

/// One metadata file: email-style headers up to the first blank line.
pub fn parse(text: &str, location: &str) -> Option<Package> {
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "name" if name.is_none() => name = Some(value),
            "version" if version.is_none() => version = Some(value),
            _ => {}
        }
    }
    Some(Package {
        name: name.filter(|n| !n.is_empty())?.to_owned(),
        version: version.filter(|v| !v.is_empty())?.to_owned(),
        ecosystem: "PyPI".to_owned(),
        source: None,
        location: location.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_headers_only() {
        let text = "Metadata-Version: 2.1\nName: Jinja2\nVersion: 2.10\nSummary: x\n\
                    Classifier: a\n  continued\n\nName: body-is-not-a-header\n";
        let package = parse(text, "/site/Jinja2-2.10.dist-info/METADATA").unwrap();
        assert_eq!((package.name.as_str(), package.version.as_str()), ("Jinja2", "2.10"));
        assert_eq!(package.ecosystem, "PyPI");
        assert_eq!(parse("Name: x\n", "/m"), None);
        assert_eq!(parse("\nName: x\nVersion: 1\n", "/m"), None);
    }

    #[test]
    fn finds_every_kind_of_metadata() {
        let mut files = Files::default();
        for (path, name) in [
            ("/usr/lib/python3/dist-packages/six-1.16.0.egg-info", "six"),
            ("/app/pkg.egg-info/PKG-INFO", "pkg"),
            ("/site/requests-2.19.1.dist-info/METADATA", "requests"),
        ] {
            files.files.insert(path.into(), format!("Name: {name}\nVersion: 1.0\n").into_bytes());
        }
        files.files.insert("/etc/os-release".into(), b"Name: no\nVersion: 1\n".to_vec());
        let mut names: Vec<String> = packages(&files).into_iter().map(|p| p.name).collect();
        names.sort();
        assert_eq!(names, ["pkg", "requests", "six"]);
    }
}
