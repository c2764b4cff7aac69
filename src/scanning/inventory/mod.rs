//! What an image contains, from its files: a pure function of the layers' merged file tree
//! (`layers::Files`). One file per source of packages; a file that does not parse gives no
//! packages rather than failing the rest.

pub mod apk;
pub mod dpkg;
pub mod golang;
pub mod npm;
pub mod os;
pub mod python;
pub mod rpm;
pub mod rust;

use super::{Inventory, Package, layers::Files};

/// Reads the operating system and every package the image's files describe, sorted, without
/// duplicates (same name, version, ecosystem and location).
pub fn inventory(files: &Files) -> Inventory {
    let os = os::detect(files);
    let os_ecosystem = os.as_ref().and_then(os::ecosystem);
    // Without a known release, OS packages keep their family's name: no release-scoped
    // record matches them, which is right when the release is unknown.
    let family = |name: &str| os_ecosystem.clone().unwrap_or_else(|| name.to_owned());

    let mut packages = Vec::new();
    packages.extend(dpkg::packages(files, &family("Debian")));
    packages.extend(apk::packages(files, &family("Alpine")));
    packages.extend(rpm::packages(files, &family("Red Hat")));
    packages.extend(python::packages(files));
    packages.extend(npm::packages(files));
    for (path, text) in &files.files {
        if path.ends_with("/Cargo.lock") {
            packages.extend(rust::cargo_lock(path, &String::from_utf8_lossy(text)));
        }
    }
    for (path, binary) in &files.binaries {
        if let Some(go) = &binary.go {
            packages.extend(golang::packages(path, go));
        }
        if let Some(section) = &binary.cargo_auditable {
            packages.extend(rust::auditable(path, section));
        }
    }
    Inventory { os, packages: sorted(packages) }
}

fn sorted(mut packages: Vec<Package>) -> Vec<Package> {
    packages.sort_by(|a, b| {
        (&a.name, &a.version, &a.ecosystem, &a.location, &a.source).cmp(&(
            &b.name,
            &b.version,
            &b.ecosystem,
            &b.location,
            &b.source,
        ))
    });
    packages.dedup_by(|a, b| {
        a.name == b.name && a.version == b.version && a.ecosystem == b.ecosystem && a.location == b.location
    });
    packages
}

/// RFC 822-style paragraphs (dpkg status, apk installed): fields `Key<sep> value`, one
/// paragraph per blank-line-separated block; continuation lines (leading space) are skipped.
fn paragraphs(text: &str, separator: char) -> Vec<Vec<(String, String)>> {
    let mut paragraphs = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((key, value)) = line.split_once(separator) {
            current.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    paragraphs
}

#[cfg(test)]
mod tests;
