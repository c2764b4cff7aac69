//! Go modules compiled into a binary, from the build info the Go linker leaves in it (what
//! `go version -m` prints): the `\xff Go buildinf:` blob in `.go.buildinfo`.
//!
//! Versions are given as OSV's `Go` ecosystem (the Go vulnerability database) writes them:
//! without the `v` (`v0.3.0` -> `0.3.0`), the toolchain as module `stdlib` (`go1.26.8` ->
//! `1.26.8`). The main module built from a work tree has no version: it is kept with version
//! `(devel)`, which no version order parses, so matching skips it.

use object::{Object, ObjectSection, ObjectSegment};

use crate::scanning::Package;

/// The two strings of a Go binary's build info.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// `runtime.Version()`: `go1.26.8`.
    pub go_version: String,
    /// `debug.ReadBuildInfo()` as text: `path`, `mod`, `dep`, `=>` and `build` lines.
    pub modinfo: String,
}

/// The version given to a module that has none to match on: the main module of a work-tree
/// build, a module replaced by a local directory.
pub const DEVEL: &str = "(devel)";

const MAGIC: &[u8] = b"\xff Go buildinf:";
const ALIGN: usize = 16;
/// Strings longer than this are not build info.
const MAX_STRING: u64 = 16 << 20;

/// The build info of an ELF Go binary, in both formats: go1.18+ (strings inline, after the
/// header) and older (pointers to the `runtime.buildVersion` and `runtime.modinfo` strings).
pub fn build_info(elf: &[u8]) -> Option<BuildInfo> {
    if !elf.starts_with(b"\x7fELF") {
        return None;
    }
    let file = object::File::parse(elf).ok()?;
    let blob = match file.section_by_name(".go.buildinfo") {
        Some(section) => section.data().ok()?,
        // Without section headers, the blob is at a 16-byte boundary in the data.
        None => {
            let at =
                (0..elf.len().saturating_sub(MAGIC.len())).step_by(ALIGN).find(|&i| elf[i..].starts_with(MAGIC))?;
            &elf[at..]
        }
    };
    parse_blob(blob, |address, size| {
        file.segments().find_map(|segment| segment.data_range(address, size).ok().flatten())
    })
}

/// The build info from the blob that starts with the magic; `read(address, size)` reads the
/// binary's memory, for the pointer format.
pub fn parse_blob<'a>(blob: &'a [u8], read: impl Fn(u64, u64) -> Option<&'a [u8]>) -> Option<BuildInfo> {
    if blob.len() < 32 || !blob.starts_with(MAGIC) {
        return None;
    }
    let pointer_size = blob[14] as usize;
    let flags = blob[15];
    let (version, modinfo) = if flags & 2 != 0 {
        let (version, rest) = varint_string(&blob[32..])?;
        let (modinfo, _) = varint_string(rest)?;
        (version.to_vec(), modinfo.to_vec())
    } else {
        if pointer_size != 4 && pointer_size != 8 {
            return None;
        }
        let big_endian = flags & 1 != 0;
        let pointer = |bytes: &[u8]| -> Option<u64> {
            let bytes = bytes.get(..pointer_size)?;
            let mut value = 0u64;
            for (i, &b) in bytes.iter().enumerate() {
                let shift = if big_endian { pointer_size - 1 - i } else { i };
                value |= u64::from(b) << (8 * shift);
            }
            Some(value)
        };
        // Each pointer leads to a Go string header: data pointer, length.
        let string = |at: u64| -> Option<Vec<u8>> {
            let header = read(at, 2 * pointer_size as u64)?;
            let data = pointer(header)?;
            let len = pointer(&header[pointer_size..])?;
            if len > MAX_STRING {
                return None;
            }
            read(data, len).map(<[u8]>::to_vec)
        };
        (string(pointer(&blob[16..])?)?, string(pointer(&blob[16 + pointer_size..])?)?)
    };
    if version.is_empty() {
        return None;
    }
    // The module text is framed by two 16-byte sentinels; without them there is none.
    let modinfo = if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        &modinfo[16..modinfo.len() - 16]
    } else {
        &[][..]
    };
    Some(BuildInfo {
        go_version: String::from_utf8_lossy(&version).into_owned(),
        modinfo: String::from_utf8_lossy(modinfo).into_owned(),
    })
}

/// A uvarint-length-prefixed string, and what follows it.
fn varint_string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let len = usize::try_from(len).ok()?;
            let rest = &bytes[i + 1..];
            return (len <= rest.len()).then(|| rest.split_at(len));
        }
    }
    None
}

/// The Go toolchain version as the vulnerability database's `stdlib` names it: `go1.26.8` ->
/// `1.26.8`, `go1.22` -> `1.22.0`, `go1.21rc2` -> `1.21.0-rc.2`; `None` for a development
/// toolchain (`devel go1.23-abc...`).
pub fn stdlib_version(go_version: &str) -> Option<String> {
    // `go1.26.8 X:boringcrypto`: experiments follow a space.
    let version = go_version.split_whitespace().next()?.strip_prefix("go")?;
    let (release, pre) = match version.find(['r', 'b']) {
        Some(at) => {
            let (release, tail) = version.split_at(at);
            let pre = tail
                .strip_prefix("rc")
                .map(|n| format!("rc.{n}"))
                .or_else(|| tail.strip_prefix("beta").map(|n| format!("beta.{n}")))?;
            (release, Some(pre))
        }
        None => (version, None),
    };
    let mut numbers: Vec<&str> = release.split('.').collect();
    if numbers.is_empty()
        || numbers.len() > 3
        || numbers.iter().any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    while numbers.len() < 3 {
        numbers.push("0");
    }
    let release = numbers.join(".");
    Some(match pre {
        Some(pre) => format!("{release}-{pre}"),
        None => release,
    })
}

/// The packages a binary's build info lists: the main module, every dependency (a replaced
/// one at its replacement: the code that was compiled), and `stdlib`.
pub fn packages(location: &str, info: &BuildInfo) -> Vec<Package> {
    let package = |name: &str, version: &str| Package {
        name: name.to_owned(),
        version: version.to_owned(),
        ecosystem: "Go".to_owned(),
        source: None,
        location: location.to_owned(),
    };
    let mut modules: Vec<(String, String)> = Vec::new();
    for line in info.modinfo.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["mod" | "dep", path, version, ..] => modules.push((path.to_string(), module_version(version))),
            ["mod" | "dep", path] => modules.push((path.to_string(), DEVEL.to_owned())),
            ["=>", path, version, ..] => {
                if let Some(last) = modules.last_mut() {
                    *last = if version.is_empty() {
                        // A local directory: not the module's published code.
                        (last.0.clone(), DEVEL.to_owned())
                    } else {
                        (path.to_string(), module_version(version))
                    };
                }
            }
            _ => {}
        }
    }
    let mut packages: Vec<Package> = modules.iter().map(|(path, version)| package(path, version)).collect();
    packages.push(package("stdlib", &stdlib_version(&info.go_version).unwrap_or_else(|| DEVEL.to_owned())));
    packages
}

fn module_version(version: &str) -> String {
    if version.is_empty() || version == DEVEL {
        return DEVEL.to_owned();
    }
    version.strip_prefix('v').unwrap_or(version).to_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MODINFO: &str = "path\texample.com/app\n\
        mod\texample.com/app\t(devel)\t\n\
        dep\tgolang.org/x/net\tv0.0.0-20190311183353-d8887717615a\th1:abc=\n\
        dep\tgithub.com/a/b\tv1.0.0\th1:x=\n\
        =>\tgithub.com/fork/b\tv1.0.1-fix\th1:y=\n\
        dep\texample.com/local\tv1.2.3\n\
        =>\t../local\t\t\n\
        build\t-compiler=gc\n";

    fn framed(modinfo: &str) -> Vec<u8> {
        let mut framed = b"0123456789abcdef".to_vec();
        framed.extend_from_slice(modinfo.as_bytes());
        framed.extend_from_slice(b"\n123456789abcdef");
        framed
    }

    fn varint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    /// A go1.18+ blob: header, then the two strings inline.
    pub(crate) fn inline_blob(go_version: &str, modinfo: &str) -> Vec<u8> {
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&[8, 2]);
        blob.resize(32, 0);
        varint(go_version.len(), &mut blob);
        blob.extend_from_slice(go_version.as_bytes());
        let modinfo = framed(modinfo);
        varint(modinfo.len(), &mut blob);
        blob.extend_from_slice(&modinfo);
        blob
    }

    #[test]
    fn reads_the_inline_format() {
        let info = parse_blob(&inline_blob("go1.26.8", MODINFO), |_, _| None).unwrap();
        assert_eq!(info.go_version, "go1.26.8");
        assert_eq!(info.modinfo, MODINFO);
    }

    #[test]
    fn reads_the_pointer_format_both_byte_orders() {
        for big_endian in [false, true] {
            // Memory: at 0x1000 two string headers, at 0x2000 and 0x3000 their data.
            let modinfo = framed(MODINFO);
            let word =
                |v: u64| -> Vec<u8> { if big_endian { v.to_be_bytes().to_vec() } else { v.to_le_bytes().to_vec() } };
            let headers = [word(0x2000), word(8), word(0x3000), word(modinfo.len() as u64)].concat();
            let memory: Vec<(u64, Vec<u8>)> =
                vec![(0x1000, headers), (0x2000, b"go1.16.4".to_vec()), (0x3000, modinfo)];
            let mut blob = MAGIC.to_vec();
            blob.extend_from_slice(&[8, u8::from(big_endian)]);
            blob.extend(word(0x1000));
            blob.extend(word(0x1010));
            let read = |address: u64, size: u64| -> Option<&[u8]> {
                memory.iter().find_map(|(start, data)| {
                    let offset = address.checked_sub(*start)? as usize;
                    data.get(offset..offset + size as usize)
                })
            };
            let info = parse_blob(&blob, read).unwrap();
            assert_eq!(info.go_version, "go1.16.4");
            assert_eq!(info.modinfo, MODINFO);
        }
    }

    #[test]
    fn bad_blobs_give_nothing() {
        assert_eq!(parse_blob(b"", |_, _| None), None);
        assert_eq!(parse_blob(&MAGIC.repeat(3), |_, _| None), None);
        let mut truncated = inline_blob("go1.26.8", MODINFO);
        truncated.truncate(40);
        assert_eq!(parse_blob(&truncated, |_, _| None), None);
        // Pointer format pointing nowhere.
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&[8, 0]);
        blob.resize(32, 0xff);
        assert_eq!(parse_blob(&blob, |_, _| None), None);
        assert_eq!(build_info(b"\x7fELF not really"), None);
    }

    #[test]
    fn modules_with_replacements_and_stdlib() {
        let info = BuildInfo { go_version: "go1.26.8".into(), modinfo: MODINFO.into() };
        let found: Vec<(String, String)> = packages("/app", &info).into_iter().map(|p| (p.name, p.version)).collect();
        let expect = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        assert_eq!(
            found,
            vec![
                expect("example.com/app", "(devel)"),
                expect("golang.org/x/net", "0.0.0-20190311183353-d8887717615a"),
                expect("github.com/fork/b", "1.0.1-fix"),
                expect("example.com/local", "(devel)"),
                expect("stdlib", "1.26.8"),
            ]
        );
    }

    #[test]
    fn toolchain_versions() {
        for (go, want) in [
            ("go1.26.8", Some("1.26.8")),
            ("go1.22", Some("1.22.0")),
            ("go1.21rc2", Some("1.21.0-rc.2")),
            ("go1.19beta1", Some("1.19.0-beta.1")),
            ("go1.26.8 X:boringcrypto", Some("1.26.8")),
            ("devel go1.23-abcdef", None),
            ("go1.x", None),
            ("", None),
        ] {
            assert_eq!(stdlib_version(go).as_deref(), want, "{go}");
        }
    }
}
