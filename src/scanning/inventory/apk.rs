//! Alpine packages, from apk's database `/lib/apk/db/installed` (`/usr/lib/apk/db/installed`
//! in merged-`/usr` images): one paragraph per package of `K:value` lines, `P:` the name, `V:`
//! the version, `o:` the origin (source) package, which OSV's Alpine records name.

use super::paragraphs;
use crate::scanning::{Package, SourcePackage, layers::Files};

pub(super) const PATHS: &[&str] = &["/lib/apk/db/installed", "/usr/lib/apk/db/installed"];

/// Every installed package of the image's apk database, with ecosystem `ecosystem`.
pub fn packages(files: &Files, ecosystem: &str) -> Vec<Package> {
    let mut seen: Vec<String> = Vec::new();
    let mut packages = Vec::new();
    for path in PATHS {
        let (Some(real), Some(text)) = (files.resolve(path), files.read(path)) else {
            continue;
        };
        if seen.contains(&real) {
            continue;
        }
        packages.extend(parse(&String::from_utf8_lossy(text), &real, ecosystem));
        seen.push(real);
    }
    packages
}

/// The packages of one apk database.
pub fn parse(text: &str, location: &str, ecosystem: &str) -> Vec<Package> {
    paragraphs(text, ':')
        .into_iter()
        .filter_map(|fields| {
            // Keys are case-sensitive single letters (`o` origin, `O` owner).
            let field =
                |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
            let name = field("P")?;
            let version = field("V")?;
            Some(Package {
                name: name.to_owned(),
                version: version.to_owned(),
                ecosystem: ecosystem.to_owned(),
                source: field("o")
                    .filter(|origin| *origin != name)
                    .map(|origin| SourcePackage { name: origin.to_owned(), version: version.to_owned() }),
                location: location.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTALLED: &str = "C:Q1Hf8Dbn3W7/Lz8rL7Ab5rY9C1fHs=\n\
P:musl\n\
V:1.2.5-r0\n\
A:x86_64\n\
S:411604\n\
I:651264\n\
T:the musl c library (libc) implementation\n\
U:https://musl.libc.org/\n\
L:MIT\n\
o:musl\n\
m:Natanael Copa <ncopa@alpinelinux.org>\n\
F:lib\n\
R:libc.musl-x86_64.so.1\n\
\n\
C:Q1abc=\n\
P:libcrypto3\n\
V:3.3.2-r0\n\
o:openssl\n\
O:root\n\
\n\
P:no-version\n\
\n";

    #[test]
    fn installed_packages_with_origins() {
        let mut files = Files::default();
        files.files.insert("/lib/apk/db/installed".into(), INSTALLED.as_bytes().to_vec());
        let packages = packages(&files, "Alpine:v3.20");
        let found: Vec<String> = packages
            .iter()
            .map(|p| {
                let source = p.source.as_ref().map(|s| s.name.as_str()).unwrap_or("-");
                format!("{} {} {} {}", p.name, p.version, source, p.ecosystem)
            })
            .collect();
        assert_eq!(found, ["musl 1.2.5-r0 - Alpine:v3.20", "libcrypto3 3.3.2-r0 openssl Alpine:v3.20"]);
        assert_eq!(packages[0].location, "/lib/apk/db/installed");
    }

    #[test]
    fn merged_usr_is_read_once() {
        let mut files = Files::default();
        files.files.insert("/usr/lib/apk/db/installed".into(), INSTALLED.as_bytes().to_vec());
        files.links.insert("/lib".into(), "usr/lib".into());
        assert_eq!(packages(&files, "Alpine:v3.20").len(), 2);
    }
}
