//! Red Hat family packages, from rpm's sqlite database (`/var/lib/rpm/rpmdb.sqlite`, rpm 4.16+:
//! RHEL 9, Rocky, Alma, Fedora; `/usr/lib/sysimage/rpm/` in newer releases), read without a
//! SQLite library: the `Packages` table's b-tree is walked page by page and each row's blob is
//! an rpm header, of which `NAME`, `EPOCH`, `VERSION`, `RELEASE` and `SOURCERPM` are read.
//!
//! Only the main database file is read: rpm checkpoints its write-ahead log when it closes, as
//! image builds do. BerkeleyDB (`Packages`, RHEL 8 and older) and ndb (`Packages.db`, SUSE)
//! databases are not read.
//!
//! Versions are rpm's `[epoch:]version-release` (`1:3.0.7-27.el9`; no epoch written when it is
//! 0 or absent), as the OSV records of Red Hat family distributions write them. The source
//! package is the `SOURCERPM`'s name (`openssl-3.0.7-27.el9.src.rpm` -> `openssl`), at the
//! binary's version: a source rpm has no epoch of its own in its file name.

use std::collections::BTreeSet;

use crate::scanning::{Package, SourcePackage, layers::Files};

pub(super) const PATHS: &[&str] = &["/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite"];

/// Every package of the image's rpm database, with ecosystem `ecosystem`.
pub fn packages(files: &Files, ecosystem: &str) -> Vec<Package> {
    let mut seen = BTreeSet::new();
    let mut packages = Vec::new();
    for path in PATHS {
        let (Some(real), Some(db)) = (files.resolve(path), files.read(path)) else {
            continue;
        };
        if seen.insert(real.clone()) {
            packages.extend(parse(db, &real, ecosystem).unwrap_or_default());
        }
    }
    packages
}

/// The packages of one `rpmdb.sqlite`; `None` when it is not one that can be read.
pub fn parse(db: &[u8], location: &str, ecosystem: &str) -> Option<Vec<Package>> {
    let blobs = sqlite::table_blobs(db, "Packages")?;
    Some(
        blobs
            .iter()
            .filter_map(|blob| header(blob))
            .filter(|h| h.name != "gpg-pubkey")
            .map(|h| {
                let version = match h.epoch {
                    Some(epoch) if epoch > 0 => format!("{epoch}:{}-{}", h.version, h.release),
                    _ => format!("{}-{}", h.version, h.release),
                };
                let source = h
                    .source_rpm
                    .as_deref()
                    .and_then(source_name)
                    .filter(|source| *source != h.name)
                    .map(|source| SourcePackage { name: source.to_owned(), version: version.clone() });
                Package {
                    name: h.name,
                    version,
                    ecosystem: ecosystem.to_owned(),
                    source,
                    location: location.to_owned(),
                }
            })
            .collect(),
    )
}

/// `openssl-3.0.7-27.el9.src.rpm` -> `openssl`.
fn source_name(source_rpm: &str) -> Option<&str> {
    let stem = source_rpm.strip_suffix(".src.rpm").or_else(|| source_rpm.strip_suffix(".nosrc.rpm"))?;
    let (rest, _release) = stem.rsplit_once('-')?;
    let (name, _version) = rest.rsplit_once('-')?;
    (!name.is_empty()).then_some(name)
}

/// What is read of an rpm header.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    name: String,
    epoch: Option<u32>,
    version: String,
    release: String,
    source_rpm: Option<String>,
}

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_SOURCERPM: u32 = 1044;
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

/// An rpm header as the database stores it (no lead, no magic): index entry count and data
/// size (big-endian u32), the index entries (tag, type, offset, count), then the data.
fn header(blob: &[u8]) -> Option<Header> {
    let u32_at =
        |bytes: &[u8], at: usize| -> Option<u32> { Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?)) };
    let entries = u32_at(blob, 0)? as usize;
    let data_len = u32_at(blob, 4)? as usize;
    let data_start = entries.checked_mul(16)?.checked_add(8)?;
    let data = blob.get(data_start..data_start.checked_add(data_len)?)?;
    let (mut name, mut version, mut release, mut epoch, mut source_rpm) = (None, None, None, None, None);
    for i in 0..entries {
        let at = 8 + 16 * i;
        let (tag, kind, offset) = (u32_at(blob, at)?, u32_at(blob, at + 4)?, u32_at(blob, at + 8)?);
        let offset = offset as usize;
        let string = || -> Option<String> {
            if kind != TYPE_STRING && kind != TYPE_I18NSTRING {
                return None;
            }
            let bytes = data.get(offset..)?;
            let end = bytes.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
        };
        match tag {
            TAG_NAME => name = string(),
            TAG_VERSION => version = string(),
            TAG_RELEASE => release = string(),
            TAG_SOURCERPM => source_rpm = string(),
            TAG_EPOCH if kind == TYPE_INT32 => epoch = u32_at(data, offset),
            _ => {}
        }
    }
    Some(Header {
        name: name.filter(|n| !n.is_empty())?,
        epoch,
        version: version.filter(|v| !v.is_empty())?,
        release: release.filter(|r| !r.is_empty())?,
        source_rpm,
    })
}

/// Just enough of the SQLite file format (sqlite.org/fileformat.html) to read one rowid
/// table's BLOB column: page 1's schema table gives the table's root page; its b-tree is walked
/// with every page number bounds-checked and each page visited once, so a corrupt or hostile
/// file ends the walk instead of looping.
mod sqlite {
    use std::collections::BTreeSet;

    struct Db<'a> {
        bytes: &'a [u8],
        page_size: usize,
        usable: usize,
    }

    impl<'a> Db<'a> {
        fn open(bytes: &'a [u8]) -> Option<Db<'a>> {
            if !bytes.starts_with(b"SQLite format 3\0") || bytes.len() < 100 {
                return None;
            }
            let page_size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
                1 => 65536,
                n if n >= 512 && n.is_power_of_two() => n as usize,
                _ => return None,
            };
            let usable = page_size.checked_sub(bytes[20] as usize)?;
            (usable >= 480).then_some(Db { bytes, page_size, usable })
        }

        fn pages(&self) -> usize {
            self.bytes.len() / self.page_size
        }

        fn page(&self, number: u32) -> Option<&'a [u8]> {
            let index = (number as usize).checked_sub(1)?;
            let start = index.checked_mul(self.page_size)?;
            self.bytes.get(start..start.checked_add(self.page_size)?)
        }

        /// Every row's record (its full payload, overflow pages joined) of the table b-tree
        /// rooted at `root`, in b-tree order.
        fn rows(&self, root: u32) -> Option<Vec<Vec<u8>>> {
            let mut rows = Vec::new();
            let mut visited = BTreeSet::new();
            let mut pending = vec![root];
            while let Some(number) = pending.pop() {
                if !visited.insert(number) || visited.len() > self.pages() {
                    return None;
                }
                let page = self.page(number)?;
                // Page 1 starts with the 100-byte file header; cell offsets still count from
                // the page's start.
                let header_at = if number == 1 { 100 } else { 0 };
                let header = page.get(header_at..header_at + 12)?;
                let cells = u16::from_be_bytes([header[3], header[4]]) as usize;
                let (header_len, interior) = match header[0] {
                    13 => (8, false),
                    5 => (12, true),
                    _ => return None,
                };
                let pointers = header_at + header_len;
                let mut children = Vec::new();
                for i in 0..cells {
                    let at = pointers + 2 * i;
                    let offset = u16::from_be_bytes([*page.get(at)?, *page.get(at + 1)?]);
                    let cell = page.get(offset as usize..)?;
                    if interior {
                        children.push(u32::from_be_bytes(cell.get(..4)?.try_into().ok()?));
                    } else {
                        rows.push(self.payload(cell, &mut visited)?);
                    }
                }
                if interior {
                    children.push(u32::from_be_bytes(header[8..12].try_into().ok()?));
                    // Depth first, left to right.
                    pending.extend(children.into_iter().rev());
                }
            }
            Some(rows)
        }

        /// A table leaf cell's payload: size, rowid, the local part, then overflow pages.
        fn payload(&self, cell: &[u8], visited: &mut BTreeSet<u32>) -> Option<Vec<u8>> {
            let (size, used) = varint(cell)?;
            let (_rowid, used_rowid) = varint(cell.get(used..)?)?;
            let size = usize::try_from(size).ok()?;
            if size > self.bytes.len() {
                return None;
            }
            let body = cell.get(used + used_rowid..)?;
            let usable = self.usable;
            let max_local = usable - 35;
            let local = if size <= max_local {
                size
            } else {
                let min_local = (usable - 12) * 32 / 255 - 23;
                let k = min_local + (size - min_local) % (usable - 4);
                if k <= max_local { k } else { min_local }
            };
            let mut payload = body.get(..local)?.to_vec();
            if local < size {
                let mut next = u32::from_be_bytes(body.get(local..local + 4)?.try_into().ok()?);
                while payload.len() < size {
                    if next == 0 || !visited.insert(next) {
                        return None;
                    }
                    let page = self.page(next)?;
                    next = u32::from_be_bytes(page[..4].try_into().ok()?);
                    let take = (size - payload.len()).min(usable - 4);
                    payload.extend_from_slice(page.get(4..4 + take)?);
                }
            }
            Some(payload)
        }
    }

    /// SQLite's varint: big-endian 7-bit groups, the ninth byte whole.
    fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
        let mut value = 0u64;
        for (i, &b) in bytes.iter().take(9).enumerate() {
            if i == 8 {
                return Some(((value << 8) | u64::from(b), 9));
            }
            value = (value << 7) | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                return Some((value, i + 1));
            }
        }
        None
    }

    /// A record's columns: serial type and bytes of each.
    fn columns(record: &[u8]) -> Option<Vec<(u64, &[u8])>> {
        let (header_len, mut at) = varint(record)?;
        let header_len = usize::try_from(header_len).ok()?;
        let mut body = header_len;
        let mut columns = Vec::new();
        while at < header_len {
            let (serial, used) = varint(record.get(at..header_len)?)?;
            at += used;
            let len = match serial {
                0 | 8 | 9 => 0,
                1..=4 => serial as usize,
                5 => 6,
                6 | 7 => 8,
                n if n >= 12 => usize::try_from((n - 12) / 2).ok()?,
                _ => return None,
            };
            columns.push((serial, record.get(body..body.checked_add(len)?)?));
            body += len;
        }
        Some(columns)
    }

    /// The last BLOB column of every row of table `name` (rpm's `Packages` is
    /// `(hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL)`).
    pub fn table_blobs(bytes: &[u8], name: &str) -> Option<Vec<Vec<u8>>> {
        let db = Db::open(bytes)?;
        // The schema table's rows: type, name, tbl_name, rootpage (an integer), sql.
        let root = db.rows(1)?.iter().find_map(|row| {
            let columns = columns(row)?;
            let (_, kind) = columns.first()?;
            let (_, table) = columns.get(1)?;
            let &(serial, root) = columns.get(3)?;
            if *kind != b"table" || *table != name.as_bytes() || !(1..=4).contains(&serial) {
                return None;
            }
            Some(root.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)))
        })?;
        Some(
            db.rows(root)?
                .iter()
                .filter_map(|row| {
                    let columns = columns(row)?;
                    let (_, blob) = columns.into_iter().rev().find(|(serial, _)| *serial >= 12 && serial % 2 == 0)?;
                    Some(blob.to_vec())
                })
                .collect(),
        )
    }

    #[cfg(test)]
    mod tests {
        use super::varint;

        #[test]
        fn varints() {
            assert_eq!(varint(&[0x05]), Some((5, 1)));
            assert_eq!(varint(&[0x81, 0x00]), Some((128, 2)));
            assert_eq!(varint(&[0xff; 9]), Some((u64::MAX, 9)));
            assert_eq!(varint(&[0x80]), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use proptest::prelude::*;

    use super::*;

    /// A real rpm 4.18 sqlite database (see `testdata/make_rpmdb.sh`).
    fn rpmdb() -> Vec<u8> {
        let gz: &[u8] = include_bytes!("testdata/rpmdb.sqlite.gz");
        let mut db = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut db).unwrap();
        db
    }

    #[test]
    fn reads_a_real_rpm_database() {
        let db = rpmdb();
        let packages = parse(&db, "/var/lib/rpm/rpmdb.sqlite", "Rocky Linux:9").unwrap();
        assert_eq!(packages.len(), 16);
        let find = |name: &str| packages.iter().find(|p| p.name == name).unwrap();
        let libs = find("openssl-libs");
        assert_eq!(libs.version, "1:3.0.7-27.el9");
        assert_eq!(libs.source, Some(SourcePackage { name: "openssl".into(), version: "1:3.0.7-27.el9".into() }));
        assert_eq!(find("openssl").source, None);
        assert_eq!(find("bash").version, "5.1.8-9.el9");
        assert_eq!(find("tzdata").version, "2024a-1.el9");
        assert_eq!(find("filler12").version, "1.12-1.el9");
        assert!(packages.iter().all(|p| p.ecosystem == "Rocky Linux:9"));
    }

    #[test]
    fn through_the_inventory() {
        let mut files = Files::default();
        files.files.insert("/usr/lib/sysimage/rpm/rpmdb.sqlite".into(), rpmdb());
        files.links.insert("/var/lib/rpm".into(), "../../usr/lib/sysimage/rpm".into());
        files.files.insert("/etc/os-release".into(), b"ID=\"rocky\"\nVERSION_ID=\"9.3\"\n".to_vec());
        let inventory = crate::scanning::inventory::inventory(&files);
        assert_eq!(inventory.packages.len(), 16);
        assert!(
            inventory
                .packages
                .iter()
                .all(|p| p.ecosystem == "Rocky Linux:9" && p.location == "/usr/lib/sysimage/rpm/rpmdb.sqlite")
        );
    }

    #[test]
    fn source_names() {
        assert_eq!(source_name("openssl-3.0.7-27.el9.src.rpm"), Some("openssl"));
        assert_eq!(source_name("python-urllib3-1.26.5-3.el9.src.rpm"), Some("python-urllib3"));
        assert_eq!(source_name("x.src.rpm"), None);
        assert_eq!(source_name("openssl-3.0.7-27.el9.x86_64.rpm"), None);
    }

    #[test]
    fn not_a_database() {
        assert_eq!(parse(b"", "/db", "Red Hat"), None);
        assert_eq!(parse(b"SQLite format 3\0", "/db", "Red Hat"), None);
        let mut db = rpmdb();
        db.truncate(db.len() / 2);
        assert_eq!(parse(&db, "/db", "Red Hat"), None);
        assert_eq!(header(&[0, 0, 0, 200, 0, 0, 0, 0]), None);
        assert_eq!(header(&[0xff; 64]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn corrupt_databases_never_panic(
            flips in proptest::collection::vec((0usize..90_000, any::<u8>()), 1..16),
        ) {
            let mut db = rpmdb();
            for (at, byte) in flips {
                let at = at % db.len();
                db[at] = byte;
            }
            let _ = parse(&db, "/db", "Red Hat");
        }
    }
}
