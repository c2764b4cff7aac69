//! OSV vulnerability records, loaded from a folder laid out like the OSV bucket
//! (`<Ecosystem>/all.zip`) and indexed by ecosystem and package name.
//!
//! Loading is bounded because the archives come from outside (a URL, an OCI artifact, a
//! volume): an entry larger than [`Limits::max_entry_bytes`] uncompressed, or more than
//! [`Limits::max_total_bytes`] uncompressed over one load, refuses the whole load (a zip bomb,
//! or data that would not fit the memory the operator was given). Sizes are checked against
//! the bytes actually inflated, not only the sizes the archive declares. A record that does not
//! parse is skipped and counted in [`DatabaseInfo`]; one bad record must not hide the others.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::{BufReader, Read, Seek},
    mem::size_of,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Deserializer, Serialize};

/// One OSV record, the fields matching reads (<https://ossf.github.io/osv-schema/>). Loaded
/// records keep only `severity` of their `database_specific` and `ecosystem_specific` objects
/// (see `compact`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Record {
    pub id: String,
    pub modified: Option<String>,
    pub withdrawn: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub aliases: Vec<String>,
    /// Debian's and Ubuntu's records name the upstream CVE here.
    #[serde(deserialize_with = "null_as_default")]
    pub upstream: Vec<String>,
    pub summary: Option<String>,
    pub details: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub severity: Vec<SeverityScore>,
    #[serde(deserialize_with = "null_as_default")]
    pub affected: Vec<Affected>,
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SeverityScore {
    /// `CVSS_V2`, `CVSS_V3`, `CVSS_V4`, `Ubuntu`.
    #[serde(rename = "type")]
    pub type_: String,
    /// A vector (`CVSS:3.1/AV:N/...`) or a word.
    pub score: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Affected {
    pub package: Option<PackageRef>,
    #[serde(deserialize_with = "null_as_default")]
    pub severity: Vec<SeverityScore>,
    #[serde(deserialize_with = "null_as_default")]
    pub ranges: Vec<Range>,
    #[serde(deserialize_with = "null_as_default")]
    pub versions: Vec<String>,
    pub ecosystem_specific: Option<serde_json::Value>,
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PackageRef {
    pub ecosystem: String,
    pub name: String,
    pub purl: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Range {
    /// `ECOSYSTEM`, `SEMVER` or `GIT` (commits: not used for installed packages).
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(deserialize_with = "null_as_default")]
    pub events: Vec<Event>,
}

/// One event of a range; exactly one field is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Event {
    pub introduced: Option<String>,
    pub fixed: Option<String>,
    pub last_affected: Option<String>,
    pub limit: Option<String>,
}

/// `"aliases": null` (seen in records converted from YAML) reads as an empty list rather than
/// making the record unreadable.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Caps on what one load reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest record (one zip entry), uncompressed. The largest records of the Go and PyPI
    /// data are ~20 KiB; records with long `versions` lists reach a few hundred KiB.
    pub max_entry_bytes: u64,
    /// Uncompressed bytes over every archive of one load: the bound on the JSON parsed, and so
    /// (roughly, see [`DatabaseInfo::memory_bytes`]) on the memory the records take.
    pub max_total_bytes: u64,
    /// Entries in one archive (each costs a central directory record even when empty).
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_entry_bytes: 16 << 20, max_total_bytes: 1 << 30, max_entries: 1_000_000 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OsvError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{ecosystem}/all.zip is not a readable zip archive: {source}")]
    Zip { ecosystem: String, source: zip::result::ZipError },
    #[error(
        "{ecosystem}/all.zip: entry {entry} is larger than {limit} bytes uncompressed; refused (a zip bomb, or raise the limit)"
    )]
    EntryTooLarge { ecosystem: String, entry: String, limit: u64 },
    #[error(
        "{ecosystem}/all.zip: the vulnerability data is larger than its budget of {limit} bytes uncompressed; refused (a zip bomb, or raise the budget)"
    )]
    OverBudget { ecosystem: String, limit: u64 },
    #[error("{ecosystem}/all.zip has {entries} entries, more than the limit of {limit}")]
    TooManyEntries { ecosystem: String, entries: usize, limit: usize },
    #[error("{}: no vulnerability data (expected <Ecosystem>/all.zip)", dir.display())]
    NoData { dir: PathBuf },
}

impl OsvError {
    /// A static label for metrics and conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            OsvError::Io { .. } => "Io",
            OsvError::Zip { .. } => "NotAZipArchive",
            OsvError::EntryTooLarge { .. } => "EntryTooLarge",
            OsvError::OverBudget { .. } => "OverBudget",
            OsvError::TooManyEntries { .. } => "TooManyEntries",
            OsvError::NoData { .. } => "NoData",
        }
    }
}

/// What one archive (one ecosystem) brought.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseInfo {
    /// Records read, withdrawn ones included.
    pub records: usize,
    /// Withdrawn records: read, not matched.
    pub withdrawn: usize,
    /// Entries that are not a readable record (JSON that does not parse, no `id`): left out.
    pub skipped: usize,
    /// The first skipped entry and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_skipped: Option<String>,
    /// Records whose id was already read (from this archive or an earlier one); the one with the
    /// later `modified` is kept, as the OSV schema says.
    pub duplicates: usize,
    /// The newest `modified` of its records (RFC 3339, UTC): how current the data is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_modified: Option<String>,
    /// JSON bytes inflated from the archive.
    pub uncompressed_bytes: u64,
    /// An estimate of the heap its indexed records and their index entries take: the sizes of
    /// the structs plus the capacity of every `String`, `Vec` and JSON value they own, 16 bytes
    /// of allocator overhead per allocation, and the hash table's slots for its keys. Records
    /// named by no package (or withdrawn) are dropped after loading and not counted. It does not
    /// count memory the allocator keeps after the load (the inflate buffers, freed JSON). Checked
    /// against a counting allocator on the Go, PyPI, npm and Debian archives of the test data:
    /// within 1% of the bytes allocated plus 16 per allocation.
    pub memory_bytes: u64,
}

/// The loaded records, indexed by (ecosystem without its release, normalized package name).
/// Each record is stored once, shared by every package it names. Withdrawn records are not
/// indexed.
#[derive(Debug, Default)]
pub struct Database {
    pub(crate) by_package: HashMap<(String, String), Vec<Arc<Record>>>,
    info: BTreeMap<String, DatabaseInfo>,
}

impl Database {
    /// Loads every `<Ecosystem>/all.zip` under `dir` with the default [`Limits`].
    pub fn load_dir(dir: &Path) -> Result<Database, OsvError> {
        Database::load_dir_with(dir, &Limits::default())
    }

    /// Loads every `<Ecosystem>/all.zip` under `dir`; folders without one are ignored, no
    /// archive at all is an error (a scan must not report "no findings" for want of data).
    pub fn load_dir_with(dir: &Path, limits: &Limits) -> Result<Database, OsvError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OsvError::Io { path, source }
        };
        let mut folders = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let archive = entry.path().join("all.zip");
            if archive.is_file() {
                folders.push((entry.file_name().to_string_lossy().into_owned(), archive));
            }
        }
        if folders.is_empty() {
            return Err(OsvError::NoData { dir: dir.to_path_buf() });
        }
        folders.sort();
        let mut builder = Builder::default();
        for (ecosystem, archive) in folders {
            let file = fs::File::open(&archive).map_err(io(&archive))?;
            builder.add_archive(&ecosystem, BufReader::new(file), limits)?;
        }
        Ok(builder.finish())
    }

    /// One archive's records, as read from `<ecosystem>/all.zip`, with the default [`Limits`].
    pub fn from_zip(ecosystem: &str, bytes: &[u8]) -> Result<Database, OsvError> {
        Database::from_zip_with(ecosystem, bytes, &Limits::default())
    }

    pub fn from_zip_with(ecosystem: &str, bytes: &[u8], limits: &Limits) -> Result<Database, OsvError> {
        let mut builder = Builder::default();
        builder.add_archive(ecosystem, std::io::Cursor::new(bytes), limits)?;
        Ok(builder.finish())
    }

    /// Records already parsed; each is counted under the ecosystem (without release) of its
    /// first affected package.
    pub fn from_records(records: impl IntoIterator<Item = Record>) -> Database {
        let mut builder = Builder::default();
        for record in records {
            let ecosystem = record
                .affected
                .iter()
                .find_map(|a| a.package.as_ref())
                .map(|p| base_ecosystem(&p.ecosystem).to_string())
                .unwrap_or_default();
            builder.add_record(&ecosystem, record);
        }
        builder.finish()
    }

    /// The records that name `name` in `ecosystem` (`Debian:12` finds those of `Debian:12` and
    /// of other releases: matching checks the release). Names are normalized as the ecosystem
    /// does (PyPI: PEP 503).
    pub fn candidates(&self, ecosystem: &str, name: &str) -> &[Arc<Record>] {
        let base = base_ecosystem(ecosystem);
        self.by_package.get(&(base.to_string(), normalize(base, name))).map(Vec::as_slice).unwrap_or(&[])
    }

    /// What each archive brought, by ecosystem (the archive's folder name).
    pub fn info(&self) -> &BTreeMap<String, DatabaseInfo> {
        &self.info
    }

    /// No record is indexed (no data, or only withdrawn records).
    pub fn is_empty(&self) -> bool {
        self.by_package.is_empty()
    }
}

/// `Debian:12` -> `Debian`; `Maven:https://...` -> `Maven`.
pub fn base_ecosystem(ecosystem: &str) -> &str {
    ecosystem.split(':').next().unwrap_or(ecosystem)
}

/// A package name as the ecosystem compares names: PEP 503 for PyPI (lower case, runs of
/// `-`, `_`, `.` as one `-`), as written elsewhere.
pub fn normalize(ecosystem: &str, name: &str) -> String {
    if ecosystem == "PyPI" {
        let mut out = String::with_capacity(name.len());
        let mut dash = false;
        for c in name.chars() {
            if matches!(c, '-' | '_' | '.') {
                dash = true;
            } else {
                if dash && !out.is_empty() {
                    out.push('-');
                }
                dash = false;
                out.push(c.to_ascii_lowercase());
            }
        }
        out
    } else {
        name.to_string()
    }
}

/// A record as read, before the index is built.
struct Loaded {
    record: Record,
    /// The archive it came from, for [`DatabaseInfo`].
    archive: String,
}

#[derive(Default)]
struct Builder {
    by_id: HashMap<String, Loaded>,
    info: BTreeMap<String, DatabaseInfo>,
    /// Uncompressed bytes read so far over every archive.
    total: u64,
}

impl Builder {
    fn add_archive<R: Read + Seek>(&mut self, ecosystem: &str, reader: R, limits: &Limits) -> Result<(), OsvError> {
        let zip_error = |source| OsvError::Zip { ecosystem: ecosystem.to_string(), source };
        let mut archive = zip::ZipArchive::new(reader).map_err(zip_error)?;
        if archive.len() > limits.max_entries {
            return Err(OsvError::TooManyEntries {
                ecosystem: ecosystem.to_string(),
                entries: archive.len(),
                limit: limits.max_entries,
            });
        }
        self.info.entry(ecosystem.to_string()).or_default();
        let mut buf = Vec::new();
        for index in 0..archive.len() {
            let mut file = archive.by_index(index).map_err(zip_error)?;
            if file.is_dir() || !file.name().ends_with(".json") {
                continue;
            }
            let name = file.name().to_string();
            let too_large = || OsvError::EntryTooLarge {
                ecosystem: ecosystem.to_string(),
                entry: name.clone(),
                limit: limits.max_entry_bytes,
            };
            let over_budget =
                || OsvError::OverBudget { ecosystem: ecosystem.to_string(), limit: limits.max_total_bytes };
            // The declared size refuses an honest oversized entry before inflating it; the
            // `take` refuses one whose header lies.
            if file.size() > limits.max_entry_bytes {
                return Err(too_large());
            }
            if self.total.saturating_add(file.size()) > limits.max_total_bytes {
                return Err(over_budget());
            }
            buf.clear();
            (&mut file)
                .take(limits.max_entry_bytes.saturating_add(1))
                .read_to_end(&mut buf)
                .map_err(|e| zip_error(zip::result::ZipError::Io(e)))?;
            let read = buf.len() as u64;
            if read > limits.max_entry_bytes {
                return Err(too_large());
            }
            self.total += read;
            if self.total > limits.max_total_bytes {
                return Err(over_budget());
            }
            drop(file);
            let info = self.info.entry(ecosystem.to_string()).or_default();
            info.uncompressed_bytes += read;
            match serde_json::from_slice::<Record>(&buf) {
                Ok(record) if !record.id.is_empty() => self.add_record(ecosystem, record),
                Ok(_) => skip(info, &name, "no id"),
                Err(e) => skip(info, &name, &e.to_string()),
            }
        }
        Ok(())
    }

    fn add_record(&mut self, archive: &str, mut record: Record) {
        let info = self.info.entry(archive.to_string()).or_default();
        info.records += 1;
        if record.withdrawn.is_some() {
            info.withdrawn += 1;
        }
        if let Some(modified) = &record.modified
            && info.newest_modified.as_deref().is_none_or(|newest| newer(modified, newest))
        {
            info.newest_modified = Some(modified.clone());
        }
        compact(&mut record);
        match self.by_id.get_mut(&record.id) {
            Some(existing) => {
                info.duplicates += 1;
                let later = match (&record.modified, &existing.record.modified) {
                    (Some(new), Some(old)) => newer(new, old),
                    (Some(_), None) => true,
                    _ => false,
                };
                if later {
                    *existing = Loaded { record, archive: archive.to_string() };
                }
            }
            None => {
                self.by_id.insert(record.id.clone(), Loaded { record, archive: archive.to_string() });
            }
        }
    }

    fn finish(self) -> Database {
        let Builder { by_id, mut info, .. } = self;
        let mut loaded: Vec<Loaded> = by_id.into_values().collect();
        // Index order (and so candidate order) does not depend on hash order.
        loaded.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        let mut by_package: HashMap<(String, String), Vec<Arc<Record>>> = HashMap::new();
        // A hash table slot holds the key and the value, at a load factor of at most 7/8, plus
        // one control byte.
        let slot = size_of::<((String, String), Vec<Arc<Record>>)>() * 8 / 7 + 1;
        for Loaded { record, archive } in loaded {
            if record.withdrawn.is_some() {
                continue;
            }
            let mut keys: Vec<(String, String)> = record
                .affected
                .iter()
                .filter_map(|a| a.package.as_ref())
                .map(|p| {
                    let base = base_ecosystem(&p.ecosystem);
                    (base.to_string(), normalize(base, &p.name))
                })
                .collect();
            keys.sort();
            keys.dedup();
            if keys.is_empty() {
                continue;
            }
            let mut memory = (record_heap(&record) + size_of::<Record>() + 2 * size_of::<usize>() + ALLOC) as u64;
            let record = Arc::new(record);
            for key in keys {
                memory += size_of::<Arc<Record>>() as u64;
                let records = by_package.entry(key).or_insert_with_key(|(e, n)| {
                    memory += (slot + e.capacity() + n.capacity() + 2 * ALLOC) as u64;
                    Vec::new()
                });
                if records.is_empty() {
                    memory += ALLOC as u64;
                }
                records.push(Arc::clone(&record));
            }
            info.entry(archive).or_default().memory_bytes += memory;
        }
        for records in by_package.values_mut() {
            records.shrink_to_fit();
        }
        Database { by_package, info }
    }
}

fn skip(info: &mut DatabaseInfo, entry: &str, why: &str) {
    info.skipped += 1;
    if info.first_skipped.is_none() {
        info.first_skipped = Some(format!("{entry}: {why}"));
    }
}

/// RFC 3339 UTC timestamps as OSV writes them compare as text, except that fractional seconds
/// (`...:25.5Z`) must sort after whole ones (`...:25Z`): compare the seconds, then the fraction.
fn newer(a: &str, b: &str) -> bool {
    fn split(t: &str) -> (&str, &str) {
        let t = t.trim_end_matches('Z');
        t.split_once('.').unwrap_or((t, ""))
    }
    split(a) > split(b)
}

/// Records live as long as the database, so they are made small once: vectors lose the slack
/// serde's doubling left, and the free-form `database_specific` and `ecosystem_specific`
/// objects keep only `severity`, the one key berth reads. Every JSON object costs a B-tree node
/// of 11 slots (~650 bytes) however few keys it has: in Go's vulndb (`imports`, `symbols`,
/// `url`, `review_status`) that was 60% of the memory the records took.
fn compact(record: &mut Record) {
    fn keep_severity(value: &mut Option<serde_json::Value>) {
        let severity = value.as_mut().and_then(|v| v.as_object_mut()).and_then(|map| map.remove("severity"));
        *value = severity.map(|s| serde_json::Value::Object([("severity".to_string(), s)].into_iter().collect()));
    }
    keep_severity(&mut record.database_specific);
    record.aliases.shrink_to_fit();
    record.upstream.shrink_to_fit();
    record.severity.shrink_to_fit();
    record.affected.shrink_to_fit();
    for affected in &mut record.affected {
        keep_severity(&mut affected.ecosystem_specific);
        keep_severity(&mut affected.database_specific);
        affected.severity.shrink_to_fit();
        affected.versions.shrink_to_fit();
        affected.ranges.shrink_to_fit();
        for range in &mut affected.ranges {
            range.events.shrink_to_fit();
        }
    }
}

/// Allocator overhead assumed per allocation (glibc: an 8-byte header, 16-byte granularity).
const ALLOC: usize = 16;

fn string_heap(s: &String) -> usize {
    if s.capacity() == 0 { 0 } else { s.capacity() + ALLOC }
}

fn opt_string_heap(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, string_heap)
}

fn vec_heap<T>(v: &Vec<T>, each: impl Fn(&T) -> usize) -> usize {
    let own = if v.capacity() == 0 { 0 } else { v.capacity() * size_of::<T>() + ALLOC };
    own + v.iter().map(each).sum::<usize>()
}

fn strings_heap(v: &Vec<String>) -> usize {
    vec_heap(v, string_heap)
}

fn scores_heap(v: &Vec<SeverityScore>) -> usize {
    vec_heap(v, |s| string_heap(&s.type_) + string_heap(&s.score))
}

/// A JSON value's heap. serde_json's `Map` is a `BTreeMap`, whose every node has room for 11
/// entries whatever it holds, so a small object costs a whole node; bigger maps are counted as
/// nodes about two thirds full.
fn value_heap(value: &Option<serde_json::Value>) -> usize {
    fn heap(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::String(s) => string_heap(s),
            serde_json::Value::Array(items) => vec_heap(items, heap),
            serde_json::Value::Object(map) => {
                let node = 11 * (size_of::<String>() + size_of::<serde_json::Value>()) + 16 + ALLOC;
                let nodes = if map.is_empty() { 0 } else { map.len().div_ceil(8) };
                nodes * node + map.iter().map(|(k, v)| string_heap(k) + heap(v)).sum::<usize>()
            }
            _ => 0,
        }
    }
    value.as_ref().map_or(0, heap)
}

fn record_heap(r: &Record) -> usize {
    string_heap(&r.id)
        + opt_string_heap(&r.modified)
        + opt_string_heap(&r.withdrawn)
        + strings_heap(&r.aliases)
        + strings_heap(&r.upstream)
        + opt_string_heap(&r.summary)
        + opt_string_heap(&r.details)
        + scores_heap(&r.severity)
        + value_heap(&r.database_specific)
        + vec_heap(&r.affected, |a| {
            a.package
                .as_ref()
                .map_or(0, |p| string_heap(&p.ecosystem) + string_heap(&p.name) + opt_string_heap(&p.purl))
                + scores_heap(&a.severity)
                + strings_heap(&a.versions)
                + vec_heap(&a.ranges, |range| {
                    string_heap(&range.type_)
                        + vec_heap(&range.events, |e| {
                            opt_string_heap(&e.introduced)
                                + opt_string_heap(&e.fixed)
                                + opt_string_heap(&e.last_affected)
                                + opt_string_heap(&e.limit)
                        })
                })
                + value_heap(&a.ecosystem_specific)
                + value_heap(&a.database_specific)
        })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, body) in entries {
            w.start_file(*name, options).unwrap();
            w.write_all(body).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn json(id: &str, name: &str, modified: &str) -> Vec<u8> {
        serde_json::json!({
            "id": id,
            "modified": modified,
            "summary": format!("{id} summary"),
            "affected": [{
                "package": { "ecosystem": "npm", "name": name },
                "ranges": [{ "type": "ECOSYSTEM", "events": [{ "introduced": "0" }, { "fixed": "1.0.0" }] }]
            }]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn reads_records_and_indexes_them() {
        let a = json("GHSA-a", "left-pad", "2024-01-01T00:00:00Z");
        let b = json("GHSA-b", "left-pad", "2024-02-01T00:00:00Z");
        let db =
            Database::from_zip("npm", &zip(&[("GHSA-a.json", &a), ("GHSA-b.json", &b), ("README.txt", b"x")])).unwrap();
        let ids: Vec<&str> = db.candidates("npm", "left-pad").iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["GHSA-a", "GHSA-b"]);
        let info = &db.info()["npm"];
        assert_eq!((info.records, info.skipped, info.withdrawn), (2, 0, 0));
        assert_eq!(info.newest_modified.as_deref(), Some("2024-02-01T00:00:00Z"));
        assert_eq!(info.uncompressed_bytes, (a.len() + b.len()) as u64);
        assert!(info.memory_bytes > 0);
    }

    #[test]
    fn malformed_records_are_skipped_and_counted() {
        let good = json("GHSA-a", "left-pad", "2024-01-01T00:00:00Z");
        let db = Database::from_zip(
            "npm",
            &zip(&[
                ("bad.json", b"{ not json"),
                ("GHSA-a.json", &good),
                ("noid.json", b"{\"summary\": \"no id\"}"),
                ("wrongtype.json", b"{\"id\": \"X\", \"affected\": \"everything\"}"),
            ]),
        )
        .unwrap();
        let info = &db.info()["npm"];
        assert_eq!((info.records, info.skipped), (1, 3));
        assert!(info.first_skipped.as_deref().unwrap().starts_with("bad.json: "), "{:?}", info.first_skipped);
        assert_eq!(db.candidates("npm", "left-pad").len(), 1);
    }

    #[test]
    fn null_lists_read_as_empty() {
        let body = br#"{"id": "PYSEC-1", "aliases": null, "upstream": null, "severity": null,
            "affected": [{"package": {"ecosystem": "PyPI", "name": "Foo_Bar"}, "versions": null, "ranges": null}]}"#;
        let db = Database::from_zip("PyPI", &zip(&[("PYSEC-1.json", body)])).unwrap();
        assert_eq!(db.info()["PyPI"].skipped, 0);
        assert_eq!(db.candidates("PyPI", "foo.bar")[0].id, "PYSEC-1");
    }

    #[test]
    fn free_form_objects_keep_only_severity() {
        let body = serde_json::json!({
            "id": "GHSA-1",
            "database_specific": { "severity": "HIGH", "cwe_ids": ["CWE-1"], "github_reviewed": true },
            "affected": [
                {
                    "package": { "ecosystem": "Go", "name": "example.com/m" },
                    "ecosystem_specific": { "imports": [{ "path": "example.com/m", "symbols": ["F"] }] },
                    "database_specific": { "severity": "LOW", "source": "x" }
                }
            ]
        })
        .to_string();
        let db = Database::from_zip("Go", &zip(&[("r.json", body.as_bytes())])).unwrap();
        let r = &db.candidates("Go", "example.com/m")[0];
        assert_eq!(r.database_specific, Some(serde_json::json!({ "severity": "HIGH" })));
        assert_eq!(r.affected[0].ecosystem_specific, None);
        assert_eq!(r.affected[0].database_specific, Some(serde_json::json!({ "severity": "LOW" })));
    }

    #[test]
    fn withdrawn_records_are_counted_not_indexed() {
        let mut withdrawn: serde_json::Value =
            serde_json::from_slice(&json("GHSA-w", "left-pad", "2024-01-01T00:00:00Z")).unwrap();
        withdrawn["withdrawn"] = "2024-03-01T00:00:00Z".into();
        let db = Database::from_zip("npm", &zip(&[("GHSA-w.json", withdrawn.to_string().as_bytes())])).unwrap();
        assert!(db.candidates("npm", "left-pad").is_empty());
        assert!(db.is_empty());
        let info = &db.info()["npm"];
        assert_eq!((info.records, info.withdrawn, info.memory_bytes), (1, 1, 0));
    }

    #[test]
    fn the_later_modified_of_a_duplicate_id_is_kept() {
        let old = json("GHSA-a", "old-name", "2024-01-01T00:00:00Z");
        let new = json("GHSA-a", "new-name", "2024-01-01T00:00:00.5Z");
        for entries in [[("1.json", &old), ("2.json", &new)], [("1.json", &new), ("2.json", &old)]] {
            let entries: Vec<(&str, &[u8])> = entries.iter().map(|(n, b)| (*n, b.as_slice())).collect();
            let db = Database::from_zip("npm", &zip(&entries)).unwrap();
            assert!(db.candidates("npm", "old-name").is_empty());
            assert_eq!(db.candidates("npm", "new-name").len(), 1);
            assert_eq!(db.info()["npm"].duplicates, 1);
            assert_eq!(db.info()["npm"].newest_modified.as_deref(), Some("2024-01-01T00:00:00.5Z"));
        }
    }

    #[test]
    fn timestamps_with_fractions_order_after_whole_seconds() {
        assert!(newer("2024-01-01T00:00:00.5Z", "2024-01-01T00:00:00Z"));
        assert!(newer("2024-01-01T00:00:01Z", "2024-01-01T00:00:00.999999Z"));
        assert!(!newer("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"));
    }

    const SMALL: Limits = Limits { max_entry_bytes: 1 << 20, max_total_bytes: 4 << 20, max_entries: 100 };

    #[test]
    fn a_zip_bomb_entry_is_refused() {
        // 64 MiB of zeros inflates from ~64 KiB.
        let bomb = vec![b'0'; 64 << 20];
        let archive = zip(&[("bomb.json", &bomb)]);
        assert!(archive.len() < 1 << 20);
        let err = Database::from_zip_with("npm", &archive, &SMALL).unwrap_err();
        assert!(matches!(err, OsvError::EntryTooLarge { ref entry, .. } if entry == "bomb.json"), "{err}");
        assert_eq!(err.reason(), "EntryTooLarge");
        assert!(err.to_string().contains("bomb.json"), "{err}");
    }

    /// Rewrites the uncompressed size every header of the archive declares.
    fn lie_about_sizes(mut archive: Vec<u8>, size: u32) -> Vec<u8> {
        let mut i = 0;
        while i + 4 <= archive.len() {
            let at = match &archive[i..i + 4] {
                [0x50, 0x4b, 0x03, 0x04] => Some(i + 22), // local file header
                [0x50, 0x4b, 0x01, 0x02] => Some(i + 24), // central directory header
                _ => None,
            };
            if let Some(at) = at {
                archive[at..at + 4].copy_from_slice(&size.to_le_bytes());
            }
            i += 1;
        }
        archive
    }

    #[test]
    fn an_entry_lying_about_its_size_is_refused() {
        let bomb = vec![b' '; 8 << 20];
        let archive = lie_about_sizes(zip(&[("liar.json", &bomb)]), 100);
        let err = Database::from_zip_with("npm", &archive, &SMALL).unwrap_err();
        // Refused while inflating: the zip reader does not stop at the declared size.
        assert!(matches!(err, OsvError::EntryTooLarge { .. }), "{err}");
    }

    #[test]
    fn the_total_budget_is_enforced() {
        let big = vec![b' '; 900 << 10];
        let entries: Vec<(String, Vec<u8>)> = (0..5).map(|i| (format!("{i}.json"), big.clone())).collect();
        let entries: Vec<(&str, &[u8])> = entries.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        let err = Database::from_zip_with("npm", &zip(&entries), &SMALL).unwrap_err();
        assert!(matches!(err, OsvError::OverBudget { limit, .. } if limit == 4 << 20), "{err}");
        // The budget spans archives.
        let dir = tempfile::tempdir().unwrap();
        for ecosystem in ["a", "b", "c"] {
            fs::create_dir(dir.path().join(ecosystem)).unwrap();
            fs::write(dir.path().join(ecosystem).join("all.zip"), zip(&entries[..2])).unwrap();
        }
        let err = Database::load_dir_with(dir.path(), &SMALL).unwrap_err();
        assert!(matches!(err, OsvError::OverBudget { ref ecosystem, .. } if ecosystem == "c"), "{err}");
    }

    #[test]
    fn too_many_entries_are_refused() {
        let entries: Vec<(String, Vec<u8>)> = (0..101).map(|i| (format!("{i}.txt"), Vec::new())).collect();
        let entries: Vec<(&str, &[u8])> = entries.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        let err = Database::from_zip_with("npm", &zip(&entries), &SMALL).unwrap_err();
        assert!(matches!(err, OsvError::TooManyEntries { entries: 101, .. }), "{err}");
    }

    #[test]
    fn not_a_zip_is_an_error() {
        let err = Database::from_zip("npm", b"PK\x03\x04 truncated").unwrap_err();
        assert_eq!(err.reason(), "NotAZipArchive");
    }

    #[test]
    fn load_dir_reads_each_ecosystem_folder() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("npm")).unwrap();
        fs::write(
            dir.path().join("npm/all.zip"),
            zip(&[("a.json", &json("GHSA-a", "left-pad", "2024-01-01T00:00:00Z"))]),
        )
        .unwrap();
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let db = Database::load_dir(dir.path()).unwrap();
        assert_eq!(db.info().keys().collect::<Vec<_>>(), ["npm"]);
        assert_eq!(db.candidates("npm", "left-pad").len(), 1);
    }

    #[test]
    fn a_folder_without_data_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = Database::load_dir(dir.path()).unwrap_err();
        assert_eq!(err.reason(), "NoData");
        let err = Database::load_dir(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.reason(), "Io");
    }

    #[test]
    fn a_record_is_indexed_under_each_package_once() {
        let body = serde_json::json!({
            "id": "DEBIAN-CVE-2022-1271",
            "affected": [
                { "package": { "ecosystem": "Debian:12", "name": "gzip" } },
                { "package": { "ecosystem": "Debian:12", "name": "xz-utils" } },
                { "package": { "ecosystem": "Debian:11", "name": "gzip" } },
            ]
        })
        .to_string();
        let db = Database::from_zip("Debian", &zip(&[("r.json", body.as_bytes())])).unwrap();
        assert_eq!(db.candidates("Debian:12", "gzip").len(), 1);
        assert!(Arc::ptr_eq(&db.candidates("Debian:12", "gzip")[0], &db.candidates("Debian:7", "xz-utils")[0]));
    }
}
