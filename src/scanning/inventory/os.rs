//! The operating system, from os-release (`/etc/os-release`, else `/usr/lib/os-release`, as
//! the os-release specification reads them), and the OSV ecosystem its packages belong to.
//!
//! | `ID` | ecosystem | from `VERSION_ID` |
//! |---|---|---|
//! | `debian` | `Debian:12` | as is (`Debian` when there is none: testing, sid) |
//! | `ubuntu` | `Ubuntu:22.04:LTS`, `Ubuntu:24.10` | as is, `:LTS` when `PRETTY_NAME` says LTS |
//! | `alpine` | `Alpine:v3.20` | major.minor, `v` prefix |
//! | `rhel` | `Red Hat:enterprise_linux:9` | major |
//! | `rocky` | `Rocky Linux:9` | major |
//! | `almalinux` | `AlmaLinux:9` | major |
//! | `mageia` | `Mageia:9` | as is |
//! | `photon` | `Photon OS:5.0` | as is |
//! | `wolfi` | `Wolfi` | none |
//! | `chainguard` | `Chainguard` | none |
//!
//! As the OSV schema defines them: Debian's release is its number, Ubuntu's carries a
//! mandatory `:LTS` on LTS releases, Alpine's is the release branch. Red Hat's ecosystem is a
//! CPE (`Red Hat:enterprise_linux:9::appstream`, `...::baseos`) naming a product stream, which
//! the rpm database does not record: the ecosystem given here is the prefix those share, for
//! matching to treat as such. Other distributions (SUSE, whose ecosystem is a product name)
//! get no ecosystem: their packages keep their package manager's family name with no release.

use crate::scanning::{Os, layers::Files};

const PATHS: &[&str] = &["/etc/os-release", "/usr/lib/os-release"];

/// The image's operating system, when an os-release file names one.
pub fn detect(files: &Files) -> Option<Os> {
    let text = PATHS.iter().find_map(|path| files.read(path))?;
    parse(&String::from_utf8_lossy(text))
}

/// An os-release file: `KEY=value` lines, values quoted or not, `#` comments.
pub fn parse(text: &str) -> Option<Os> {
    let mut os = Os::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key.trim() {
            "ID" => os.id = value,
            "VERSION_ID" => os.version_id = Some(value).filter(|v| !v.is_empty()),
            "PRETTY_NAME" => os.pretty_name = Some(value).filter(|v| !v.is_empty()),
            _ => {}
        }
    }
    (!os.id.is_empty()).then_some(os)
}

/// A shell-style value: `"..."` with `\` escapes, `'...'` literal, or bare.
fn unquote(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.to_owned();
    }
    value.to_owned()
}

/// The OSV ecosystem of the operating system's packages (see the table above).
pub fn ecosystem(os: &Os) -> Option<String> {
    let version = os.version_id.as_deref();
    let major = || version.and_then(|v| v.split('.').next()).filter(|m| !m.is_empty());
    let ecosystem = match os.id.as_str() {
        "debian" => match version {
            Some(v) => format!("Debian:{v}"),
            None => "Debian".to_owned(),
        },
        "ubuntu" => {
            let lts = os.pretty_name.as_deref().is_some_and(|p| p.split_whitespace().any(|w| w == "LTS"));
            format!("Ubuntu:{}{}", version?, if lts { ":LTS" } else { "" })
        }
        "alpine" => {
            let mut parts = version?.split(['.', '_']);
            let (major, minor) = (parts.next()?, parts.next()?);
            format!("Alpine:v{major}.{minor}")
        }
        "rhel" => format!("Red Hat:enterprise_linux:{}", major()?),
        "rocky" => format!("Rocky Linux:{}", major()?),
        "almalinux" => format!("AlmaLinux:{}", major()?),
        "mageia" => format!("Mageia:{}", version?),
        "photon" => format!("Photon OS:{}", version?),
        "wolfi" => "Wolfi".to_owned(),
        "chainguard" => "Chainguard".to_owned(),
        _ => return None,
    };
    Some(ecosystem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eco(text: &str) -> Option<String> {
        ecosystem(&parse(text).unwrap())
    }

    #[test]
    fn parses_quoted_values() {
        let os = parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
             VERSION_ID=\"12\"\n# comment\nID=debian\nHOME_URL='https://www.debian.org/'\n\
             ODD=\"a \\\"quoted\\\" word\"\n",
        )
        .unwrap();
        assert_eq!(
            os,
            Os {
                id: "debian".into(),
                version_id: Some("12".into()),
                pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
            }
        );
        assert_eq!(unquote("\"a \\\"b\\\" \\\\c\""), "a \"b\" \\c");
        assert_eq!(parse("NAME=nothing\n"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn ecosystems() {
        for (text, want) in [
            ("ID=debian\nVERSION_ID=\"12\"", Some("Debian:12")),
            ("ID=debian\nPRETTY_NAME=\"Debian GNU/Linux trixie/sid\"", Some("Debian")),
            ("ID=ubuntu\nVERSION_ID=\"22.04\"\nPRETTY_NAME=\"Ubuntu 22.04.4 LTS\"", Some("Ubuntu:22.04:LTS")),
            ("ID=ubuntu\nVERSION_ID=\"24.10\"\nPRETTY_NAME=\"Ubuntu 24.10\"", Some("Ubuntu:24.10")),
            ("ID=alpine\nVERSION_ID=3.20.3", Some("Alpine:v3.20")),
            ("ID=alpine\nVERSION_ID=3.21.0_alpha20240807", Some("Alpine:v3.21")),
            ("ID=alpine\nVERSION_ID=3", None),
            ("ID=\"rhel\"\nVERSION_ID=\"9.4\"", Some("Red Hat:enterprise_linux:9")),
            ("ID=\"rocky\"\nVERSION_ID=\"9.3\"", Some("Rocky Linux:9")),
            ("ID=\"almalinux\"\nVERSION_ID=\"8.10\"", Some("AlmaLinux:8")),
            ("ID=wolfi\nVERSION_ID=20230201", Some("Wolfi")),
            ("ID=\"sles\"\nVERSION_ID=\"15.5\"", None),
        ] {
            assert_eq!(eco(text).as_deref(), want, "{text}");
        }
    }
}
