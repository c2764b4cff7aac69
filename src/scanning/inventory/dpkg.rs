//! Debian packages, from dpkg's database: `/var/lib/dpkg/status` and, in distroless images,
//! one file per package under `/var/lib/dpkg/status.d/`.
//!
//! Each package is an RFC 822-style paragraph. A package counts when its state (the third
//! word of `Status:`) is `installed`: `install ok installed`, also `hold ok installed` (held,
//! still installed); not `deinstall ok config-files` or `half-installed`. distroless files
//! carry no `Status:` at all: they list what is installed. OSV's Debian records name source
//! packages, so `Source: name (version)` is kept, its version defaulting to the binary's.

use super::paragraphs;
use crate::scanning::{Package, SourcePackage, layers::Files};

pub(super) const STATUS: &str = "/var/lib/dpkg/status";
pub(super) const STATUS_D: &str = "/var/lib/dpkg/status.d";

/// Every installed package of the image's dpkg database, with ecosystem `ecosystem`.
pub fn packages(files: &Files, ecosystem: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    if let (Some(path), Some(text)) = (files.resolve(STATUS), files.read(STATUS)) {
        packages.extend(parse(&String::from_utf8_lossy(text), &path, ecosystem, true));
    }
    for (path, text) in files.under(STATUS_D) {
        if path.ends_with(".md5sums") {
            continue;
        }
        packages.extend(parse(&String::from_utf8_lossy(text), path, ecosystem, false));
    }
    packages
}

/// The installed packages of one status file; `need_status`: a paragraph without `Status:`
/// is not installed (the main database), or is (distroless `status.d`).
pub fn parse(text: &str, location: &str, ecosystem: &str, need_status: bool) -> Vec<Package> {
    paragraphs(text, ':')
        .into_iter()
        .filter_map(|fields| {
            let field = |name: &str| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
            let installed = match field("Status") {
                Some(status) => status.split_whitespace().nth(2) == Some("installed"),
                None => !need_status,
            };
            if !installed {
                return None;
            }
            let name = field("Package").filter(|n| !n.is_empty())?;
            let version = field("Version").filter(|v| !v.is_empty())?;
            let source = field("Source").and_then(|s| source(s, version));
            Some(Package {
                name: name.to_owned(),
                version: version.to_owned(),
                ecosystem: ecosystem.to_owned(),
                source: source.filter(|s| s.name != name || s.version != version),
                location: location.to_owned(),
            })
        })
        .collect()
}

/// `Source: openssl` or `Source: bash (5.2.15-2)`.
fn source(field: &str, binary_version: &str) -> Option<SourcePackage> {
    let mut words = field.split_whitespace();
    let name = words.next()?;
    let version =
        words.next().and_then(|v| v.strip_prefix('(')).and_then(|v| v.strip_suffix(')')).unwrap_or(binary_version);
    Some(SourcePackage { name: name.to_owned(), version: version.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS_TEXT: &str = "Package: bash\n\
Essential: yes\n\
Status: install ok installed\n\
Priority: required\n\
Version: 5.2.15-2+b13\n\
Source: bash (5.2.15-2)\n\
Description: GNU Bourne Again SHell\n Bash is an sh-compatible command language interpreter.\n .\n More text.\n\
\n\
Package: libssl3\n\
Status: install ok installed\n\
Source: openssl\n\
Version: 3.0.20-1~deb12u2\n\
\n\
Package: zlib1g\n\
status: hold ok installed\n\
Version: 1:1.2.13.dfsg-1\n\
Source: zlib\n\
\n\
Package: removed\n\
Status: deinstall ok config-files\n\
Version: 1.0\n\
\n\
\n\
Package: halfway\n\
Status: install reinstreq half-installed\n\
Version: 1.0\n\
\n\
Package: no-version\n\
Status: install ok installed\n\
\n\
Package: plain\n\
Status: install ok installed\n\
Version: 2.0\n\
Source: plain\n";

    fn summary(packages: &[Package]) -> Vec<String> {
        packages
            .iter()
            .map(|p| match &p.source {
                Some(s) => format!("{} {} src {} {}", p.name, p.version, s.name, s.version),
                None => format!("{} {}", p.name, p.version),
            })
            .collect()
    }

    #[test]
    fn installed_packages_with_sources() {
        let packages = parse(STATUS_TEXT, STATUS, "Debian:12", true);
        assert_eq!(
            summary(&packages),
            [
                "bash 5.2.15-2+b13 src bash 5.2.15-2",
                "libssl3 3.0.20-1~deb12u2 src openssl 3.0.20-1~deb12u2",
                "zlib1g 1:1.2.13.dfsg-1 src zlib 1:1.2.13.dfsg-1",
                "plain 2.0",
            ]
        );
        assert!(packages.iter().all(|p| p.ecosystem == "Debian:12"));
        assert!(packages.iter().all(|p| p.location == STATUS));
    }

    #[test]
    fn distroless_status_d() {
        let mut files = Files::default();
        files.files.insert(
            format!("{STATUS_D}/base"),
            b"Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n".to_vec(),
        );
        files.files.insert(
            format!("{STATUS_D}/libssl3"),
            b"Package: libssl3\nSource: openssl\nVersion: 3.0.20-1~deb12u2\n".to_vec(),
        );
        files.files.insert(format!("{STATUS_D}/libssl3.md5sums"), b"abc  /usr/lib/x\n".to_vec());
        let packages = packages(&files, "Debian:12");
        assert_eq!(
            summary(&packages),
            ["base-files 12.4+deb12u5", "libssl3 3.0.20-1~deb12u2 src openssl 3.0.20-1~deb12u2"]
        );
        assert_eq!(packages[1].location, "/var/lib/dpkg/status.d/libssl3");
    }

    #[test]
    fn garbage_gives_nothing() {
        assert!(parse("\u{0}\u{1}binary\n:::\n\n", STATUS, "Debian:12", true).is_empty());
        assert!(parse("", STATUS, "Debian:12", false).is_empty());
    }
}
