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
    Inventory { os, packages: sorted(packages), unreadable: unreadable(files) }
}

/// The OS package databases in `files` that do not parse: present and not empty, yet not text,
/// or without one package in them (dpkg, apk), or not an rpm SQLite database.
fn unreadable(files: &Files) -> Vec<String> {
    let mut out = Vec::new();
    let mut text_db = |path: &str, bytes: &[u8], name_key: &str, separator: char| {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match std::str::from_utf8(bytes) {
            Err(e) => out.push(format!("{path}: not text ({e})")),
            Ok(text) => {
                let named =
                    paragraphs(text, separator).iter().any(|p| p.iter().any(|(k, v)| k == name_key && !v.is_empty()));
                if !named {
                    out.push(format!("{path}: no package in it (no `{name_key}{separator}` field)"));
                }
            }
        }
    };
    if let (Some(path), Some(bytes)) = (files.resolve(dpkg::STATUS), files.read(dpkg::STATUS)) {
        text_db(&path, bytes, "Package", ':');
    }
    for (path, bytes) in files.under(dpkg::STATUS_D) {
        if !path.ends_with(".md5sums") {
            text_db(path, bytes, "Package", ':');
        }
    }
    for path in apk::PATHS {
        if let (Some(real), Some(bytes)) = (files.resolve(path), files.read(path)) {
            text_db(&real, bytes, "P", ':');
        }
    }
    for path in rpm::PATHS {
        if let (Some(real), Some(db)) = (files.resolve(path), files.read(path))
            && rpm::parse(db, &real, "").is_none()
        {
            out.push(format!("{real}: not an rpm SQLite database that can be read"));
        }
    }
    out.sort();
    out.dedup();
    out
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
