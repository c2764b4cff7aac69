//! An image's file tree as its layers build it, reduced to the files an inventory reads:
//! layers applied in order, whiteouts (`.wh.<name>`) and opaque directories (`.wh..wh..opq`)
//! honoured, with caps on sizes so a hostile layer cannot exhaust memory.
//!
//! A layer is streamed once: every entry is looked at, only the few the inventory needs are
//! kept ([`wanted`]). Executables are read (up to [`Limits::binary_bytes`]) only to take out
//! the package data they carry (Go build info, cargo-auditable's section), so a 100 MiB Go
//! binary keeps a few KiB.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::inventory::{golang, rust};

/// The files an inventory needs, by absolute path (`/etc/os-release`), after every layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Files {
    pub files: BTreeMap<String, Vec<u8>>,
    /// Symbolic links, path -> target as written.
    pub links: BTreeMap<String, String>,
    /// Executables that carry package data, reduced to that data.
    pub binaries: BTreeMap<String, Binary>,
    /// Files the inventory would have read but that were over a cap, with the cap's name: the
    /// scan can say what it did not look at.
    pub skipped: BTreeMap<String, &'static str>,
}

/// What an executable says about how it was built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binary {
    /// Go build info (toolchain version and module list).
    pub go: Option<golang::BuildInfo>,
    /// cargo-auditable's `.dep-v0` section, as stored (zlib-compressed JSON).
    pub cargo_auditable: Option<Vec<u8>>,
}

impl Binary {
    /// Takes the package data out of an ELF file; `None` when it carries none.
    pub fn from_elf(elf: &[u8]) -> Option<Binary> {
        let binary = Binary { go: golang::build_info(elf), cargo_auditable: rust::audit_section(elf) };
        (binary.go.is_some() || binary.cargo_auditable.is_some()).then_some(binary)
    }

    fn size(&self) -> u64 {
        let go = self.go.as_ref().map_or(0, |g| g.go_version.len() + g.modinfo.len());
        (go + self.cargo_auditable.as_ref().map_or(0, Vec::len)) as u64
    }
}

/// How deep symbolic links are followed before giving up (Linux's `MAXSYMLINKS`).
const MAX_LINK_HOPS: usize = 40;

impl Files {
    /// The real path `path` names once every symbolic link in it is followed (`/etc/os-release`
    /// -> `/usr/lib/os-release`); `None` after too many links (a loop).
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut pending: Vec<String> = components(path).rev().map(str::to_owned).collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            match component.as_str() {
                "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            resolved.push(component);
            let here = format!("/{}", resolved.join("/"));
            if let Some(target) = self.links.get(&here) {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return None;
                }
                resolved.pop();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(components(target).rev().map(str::to_owned));
            }
        }
        Some(format!("/{}", resolved.join("/")))
    }

    /// A file's content, following symbolic links.
    pub fn read(&self, path: &str) -> Option<&[u8]> {
        self.files.get(&self.resolve(path)?).map(Vec::as_slice)
    }

    /// The kept files under a directory (`/var/lib/dpkg/status.d`), by real path.
    pub fn under<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        self.files
            .range(prefix.clone()..)
            .take_while(move |(path, _)| path.starts_with(&prefix))
            .map(|(path, data)| (path.as_str(), data.as_slice()))
    }

    fn kept_bytes(&self) -> u64 {
        let files: usize = self.files.iter().map(|(p, d)| p.len() + d.len()).sum();
        let links: usize = self.links.iter().map(|(p, t)| p.len() + t.len()).sum();
        let binaries: u64 = self.binaries.iter().map(|(p, b)| p.len() as u64 + b.size()).sum();
        (files + links) as u64 + binaries
    }
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// A path made absolute and clean: `./etc/../etc/os-release` -> `/etc/os-release`; `..`
/// stops at the root, so no entry can name a path outside the image.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for component in components(path) {
        match component {
            "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Caps on what reading layers may cost. A layer over a cap fails with an error naming it,
/// except an executable over [`Limits::binary_bytes`], which is listed in [`Files::skipped`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Uncompressed size of one layer: a gzip bomb stops here.
    pub layer_bytes: u64,
    /// Entries in one layer.
    pub entries: u64,
    /// One kept file (a package database, a `package.json`).
    pub file_bytes: u64,
    /// One executable read to look for build info; larger ones are skipped.
    pub binary_bytes: u64,
    /// Everything kept, after every layer so far.
    pub kept_bytes: u64,
    /// One JSON document of an image layout (index, manifest).
    pub document_bytes: u64,
    /// One layer as stored (compressed), downloaded from a registry to be read.
    pub download_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            layer_bytes: 8 << 30,
            entries: 1_000_000,
            file_bytes: 64 << 20,
            binary_bytes: 256 << 20,
            kept_bytes: 256 << 20,
            document_bytes: 4 << 20,
            download_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer media type {0:?} is not supported (tar, tar+gzip, tar+zstd)")]
    UnsupportedMediaType(String),
    #[error("layer is larger than {limit} bytes uncompressed")]
    LayerTooLarge { limit: u64 },
    #[error("layer is {size} bytes as stored, more than the {limit} a scan downloads (--scan-max-layer-bytes)")]
    DownloadTooLarge { size: u64, limit: u64 },
    #[error("layer has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("{path} is larger than {limit} bytes")]
    FileTooLarge { path: String, limit: u64 },
    #[error("the files kept from the image exceed {limit} bytes")]
    TooMuchKept { limit: u64 },
    #[error("layer does not decompress: {0}")]
    Decompress(#[source] io::Error),
    #[error("layer is not a valid tar archive: {0}")]
    Tar(#[source] io::Error),
    #[error("image layout: reading {path}: {source}")]
    LayoutRead { path: PathBuf, source: io::Error },
    #[error("image layout: {path} is not valid: {source}")]
    LayoutJson { path: PathBuf, source: serde_json::Error },
    #[error("image layout: {0}")]
    Layout(String),
    #[error("image layout: blob {digest} does not match its digest")]
    DigestMismatch { digest: String },
}

impl LayerError {
    /// A static name for the failure: the `reason` of a failed scan, a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            LayerError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            LayerError::LayerTooLarge { .. } | LayerError::DownloadTooLarge { .. } => "LayerTooLarge",
            LayerError::TooManyEntries { .. } => "TooManyEntries",
            LayerError::FileTooLarge { .. } => "FileTooLarge",
            LayerError::TooMuchKept { .. } => "TooMuchKept",
            LayerError::Decompress(_) => "InvalidCompression",
            LayerError::Tar(_) => "InvalidLayer",
            LayerError::LayoutRead { .. }
            | LayerError::LayoutJson { .. }
            | LayerError::Layout(_)
            | LayerError::DigestMismatch { .. } => "InvalidImageLayout",
        }
    }
}

/// What the inventory does with a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// Kept whole: os-release, package databases, package manifests.
    Metadata,
    /// An ELF executable: read to take out Go build info or cargo-auditable data.
    Binary,
}

const ELF_MAGIC: &[u8] = b"\x7fELF";
/// Smaller than an ELF header (52 bytes for 32-bit) cannot be an executable.
const ELF_MIN: u64 = 52;

/// Whether the inventory reads the file at `path` (absolute, normalized) of `size` bytes that
/// starts with `first_bytes` (at least 4 bytes when the file has them).
pub fn wanted(path: &str, size: u64, first_bytes: &[u8]) -> Option<Wanted> {
    if is_metadata(path) {
        return Some(Wanted::Metadata);
    }
    (size >= ELF_MIN && first_bytes.starts_with(ELF_MAGIC)).then_some(Wanted::Binary)
}

/// Paths the inventory reads whole. Each database sits at one path, also under `/usr` where a
/// merged-`/usr` image keeps it.
fn is_metadata(path: &str) -> bool {
    const EXACT: &[&str] = &[
        "/etc/os-release",
        "/usr/lib/os-release",
        "/var/lib/dpkg/status",
        "/lib/apk/db/installed",
        "/usr/lib/apk/db/installed",
        "/var/lib/rpm/rpmdb.sqlite",
        "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    ];
    if EXACT.contains(&path) {
        return true;
    }
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    if dir == "/var/lib/dpkg/status.d" {
        // distroless keeps one paragraph file per package, beside `<name>.md5sums`.
        return !name.ends_with(".md5sums");
    }
    if path.ends_with(".dist-info/METADATA")
        || path.ends_with(".egg-info/PKG-INFO")
        // distutils installs `<name>-<version>.egg-info` as a single PKG-INFO file.
        || name.ends_with(".egg-info")
    {
        return true;
    }
    if name == "Cargo.lock" {
        return true;
    }
    if name == "package.json" {
        // A package's own manifest: `node_modules/<name>/package.json` or
        // `node_modules/@scope/<name>/package.json`, not one deeper inside the package.
        if let Some((_, rest)) = path.rsplit_once("/node_modules/") {
            let parts: Vec<&str> = rest.split('/').collect();
            return match parts.as_slice() {
                [_, "package.json"] => true,
                [scope, _, "package.json"] => scope.starts_with('@'),
                _ => false,
            };
        }
    }
    false
}

/// How a layer blob is compressed, from its media type.
fn compression(media_type: &str) -> Result<Compression, LayerError> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Compression::Zstd),
        other => Err(LayerError::UnsupportedMediaType(other.to_owned())),
    }
}

enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Applies one layer blob as stored in a registry: `media_type` says how it is compressed.
pub fn apply_blob(files: &mut Files, media_type: &str, blob: impl Read, limits: &Limits) -> Result<(), LayerError> {
    match compression(media_type)? {
        Compression::None => apply(files, blob, limits),
        Compression::Gzip => {
            let failed = Cell::new(false);
            let decoder = Flagged { inner: flate2::read::MultiGzDecoder::new(blob), failed: &failed };
            apply_with(files, decoder, limits, &failed)
        }
        Compression::Zstd => {
            let failed = Cell::new(false);
            let inner = ruzstd::streaming_decoder::StreamingDecoder::new(blob).map_err(|e| {
                LayerError::Decompress(io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))
            })?;
            apply_with(files, Flagged { inner, failed: &failed }, limits, &failed)
        }
    }
}

/// Applies one uncompressed tar layer over the tree.
pub fn apply(files: &mut Files, layer: impl Read, limits: &Limits) -> Result<(), LayerError> {
    apply_with(files, layer, limits, &Cell::new(false))
}

fn apply_with(
    files: &mut Files,
    layer: impl Read,
    limits: &Limits,
    decode_failed: &Cell<bool>,
) -> Result<(), LayerError> {
    let over = Cell::new(false);
    let capped = Capped { inner: layer, read: 0, limit: limits.layer_bytes, over: &over };
    let mut applier = Applier { kept: files.kept_bytes(), files, limits, added: BTreeSet::new() };
    applier.run(capped).map_err(|e| match e {
        LayerError::Tar(_) if over.get() => LayerError::LayerTooLarge { limit: limits.layer_bytes },
        LayerError::Tar(source) if decode_failed.get() => LayerError::Decompress(source),
        e => e,
    })
}

/// Fails the read past `limit` bytes, and says so in `over` (the tar reader may wrap the
/// error).
struct Capped<'a, R> {
    inner: R,
    read: u64,
    limit: u64,
    over: &'a Cell<bool>,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            self.over.set(true);
            return Err(io::Error::other("layer over its size limit"));
        }
        Ok(n)
    }
}

/// Notes in `failed` that the inner reader (a decoder) failed.
struct Flagged<'a, R> {
    inner: R,
    failed: &'a Cell<bool>,
}

impl<R: Read> Read for Flagged<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed.set(true))
    }
}

struct Applier<'a> {
    files: &'a mut Files,
    limits: &'a Limits,
    kept: u64,
    /// Paths this layer wrote: its own whiteouts hide only lower layers' files.
    added: BTreeSet<String>,
}

impl Applier<'_> {
    fn run(&mut self, layer: impl Read) -> Result<(), LayerError> {
        let mut archive = tar::Archive::new(layer);
        let mut count = 0u64;
        for entry in archive.entries().map_err(LayerError::Tar)? {
            let mut entry = entry.map_err(LayerError::Tar)?;
            count += 1;
            if count > self.limits.entries {
                return Err(LayerError::TooManyEntries { limit: self.limits.entries });
            }
            let kind = entry.header().entry_type();
            if kind.is_pax_global_extensions()
                || kind.is_pax_local_extensions()
                || kind.is_gnu_longname()
                || kind.is_gnu_longlink()
            {
                continue;
            }
            let path = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
            if path == "/" {
                continue;
            }
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
            if name == ".wh..wh..opq" {
                self.remove_under(dir);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let hidden = format!("{dir}/{hidden}");
                self.remove(&hidden);
                self.remove_under(&hidden);
                continue;
            }
            if kind.is_dir() {
                // A directory merges with a lower one, but replaces a lower file or link.
                self.remove(&path);
                continue;
            }
            self.remove(&path);
            self.remove_under(&path);
            self.added.insert(path.clone());
            if kind.is_symlink() {
                let target =
                    entry.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
                self.keep_link(path, target)?;
            } else if kind.is_hard_link() {
                let target =
                    entry.link_name_bytes().map(|t| normalize(&String::from_utf8_lossy(&t))).unwrap_or_default();
                self.keep_hard_link(path, &target)?;
            } else if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
                let size = entry.size();
                self.keep_file(path, size, &mut entry)?;
            }
            // Devices and fifos only hide what was below them.
        }
        Ok(())
    }

    fn keep_file(&mut self, path: String, size: u64, entry: &mut impl Read) -> Result<(), LayerError> {
        // tar yields exactly `size` bytes of data for the entry, whatever follows it.
        let mut head = Vec::with_capacity(4);
        entry.by_ref().take(4).read_to_end(&mut head).map_err(LayerError::Tar)?;
        let Some(want) = wanted(&path, size, &head) else {
            return Ok(());
        };
        let limit = match want {
            Wanted::Metadata => self.limits.file_bytes,
            Wanted::Binary => self.limits.binary_bytes,
        };
        if size > limit {
            return match want {
                Wanted::Metadata => Err(LayerError::FileTooLarge { path, limit }),
                Wanted::Binary => {
                    self.files.skipped.insert(path, "binaryBytes");
                    Ok(())
                }
            };
        }
        let mut data = Vec::with_capacity(size as usize);
        data.extend_from_slice(&head);
        entry.by_ref().take(size.saturating_sub(head.len() as u64)).read_to_end(&mut data).map_err(LayerError::Tar)?;
        match want {
            Wanted::Metadata => {
                self.charge((path.len() + data.len()) as u64)?;
                self.files.files.insert(path, data);
            }
            Wanted::Binary => {
                if let Some(binary) = Binary::from_elf(&data) {
                    self.charge(path.len() as u64 + binary.size())?;
                    self.files.binaries.insert(path, binary);
                }
            }
        }
        Ok(())
    }

    fn keep_link(&mut self, path: String, target: String) -> Result<(), LayerError> {
        self.charge((path.len() + target.len()) as u64)?;
        self.files.links.insert(path, target);
        Ok(())
    }

    /// A hard link is a second name for a file earlier in the archive: it gets a copy of what
    /// was kept of it, when its own name is one the inventory reads.
    fn keep_hard_link(&mut self, path: String, target: &str) -> Result<(), LayerError> {
        if let Some(data) = self.files.files.get(target) {
            if wanted(&path, data.len() as u64, data) == Some(Wanted::Metadata) {
                let data = data.clone();
                self.charge((path.len() + data.len()) as u64)?;
                self.files.files.insert(path, data);
            }
        } else if let Some(binary) = self.files.binaries.get(target) {
            let binary = binary.clone();
            self.charge(path.len() as u64 + binary.size())?;
            self.files.binaries.insert(path, binary);
        } else if let Some(link) = self.files.links.get(target) {
            let link = link.clone();
            self.keep_link(path, link)?;
        } else if let Some(cap) = self.files.skipped.get(target) {
            self.files.skipped.insert(path, cap);
        }
        Ok(())
    }

    fn charge(&mut self, bytes: u64) -> Result<(), LayerError> {
        self.kept += bytes;
        if self.kept > self.limits.kept_bytes {
            return Err(LayerError::TooMuchKept { limit: self.limits.kept_bytes });
        }
        Ok(())
    }

    /// Removes what a lower layer had at exactly `path`.
    fn remove(&mut self, path: &str) {
        if self.added.contains(path) {
            return;
        }
        if let Some(data) = self.files.files.remove(path) {
            self.kept = self.kept.saturating_sub((path.len() + data.len()) as u64);
        }
        if let Some(target) = self.files.links.remove(path) {
            self.kept = self.kept.saturating_sub((path.len() + target.len()) as u64);
        }
        if let Some(binary) = self.files.binaries.remove(path) {
            self.kept = self.kept.saturating_sub(path.len() as u64 + binary.size());
        }
        self.files.skipped.remove(path);
    }

    /// Removes what lower layers had under directory `dir` (not `dir` itself).
    fn remove_under(&mut self, dir: &str) {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut doomed: BTreeSet<String> = BTreeSet::new();
        doomed.extend(keys_under(&self.files.files, &prefix));
        doomed.extend(keys_under(&self.files.links, &prefix));
        doomed.extend(keys_under(&self.files.binaries, &prefix));
        doomed.extend(keys_under(&self.files.skipped, &prefix));
        for path in doomed {
            self.remove(&path);
        }
    }
}

fn keys_under<V>(map: &BTreeMap<String, V>, prefix: &str) -> Vec<String> {
    map.range(prefix.to_owned()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(k, _)| k.clone()).collect()
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

const INDEX_TYPES: &[&str] =
    &["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];

/// Reads the image of an OCI image layout directory (`oci-layout`, `index.json`,
/// `blobs/sha256/...`) into its file tree: index -> manifest (linux/amd64 when the index
/// lists several) -> layers in order. Every blob read is checked against its digest.
pub fn from_oci_layout(dir: &Path, limits: &Limits) -> Result<Files, LayerError> {
    let index_path = dir.join("index.json");
    let index: Index = parse_json(&index_path, &read_capped(&index_path, limits)?)?;
    let mut descriptor = choose(index.manifests)?;
    // An index may point at a nested index (a multi-platform image); follow a few levels.
    for _ in 0..4 {
        let (path, bytes) = read_blob(dir, &descriptor.digest, limits)?;
        let manifest: Manifest = parse_json(&path, &bytes)?;
        let nested = INDEX_TYPES.contains(&descriptor.media_type.as_str())
            || INDEX_TYPES.contains(&manifest.media_type.as_str())
            || manifest.manifests.is_some();
        if nested {
            descriptor = choose(manifest.manifests.unwrap_or_default())?;
            continue;
        }
        let mut files = Files::default();
        for layer in &manifest.layers {
            let path = blob_path(dir, &layer.digest)?;
            let file = fs::File::open(&path).map_err(|source| LayerError::LayoutRead { path: path.clone(), source })?;
            let mut hashing = Hashing { inner: io::BufReader::new(file), hasher: Sha256::new() };
            apply_blob(&mut files, &layer.media_type, &mut hashing, limits)?;
            // The tar ends before the blob does (padding, the gzip trailer): hash the rest.
            io::copy(&mut hashing, &mut io::sink()).map_err(|source| LayerError::LayoutRead { path, source })?;
            if format!("sha256:{:x}", hashing.hasher.finalize()) != layer.digest {
                return Err(LayerError::DigestMismatch { digest: layer.digest.clone() });
            }
        }
        return Ok(files);
    }
    Err(LayerError::Layout("image indexes nested too deep".into()))
}

/// The one manifest of an index, or the linux/amd64 one of several.
fn choose(manifests: Vec<Descriptor>) -> Result<Descriptor, LayerError> {
    if manifests.len() <= 1 {
        return manifests.into_iter().next().ok_or_else(|| LayerError::Layout("the index lists no manifest".into()));
    }
    manifests
        .into_iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"))
        .ok_or_else(|| LayerError::Layout("several manifests and none for linux/amd64".into()))
}

/// `blobs/sha256/<hex>`, refusing a digest that is not one (it could name any path).
fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, LayerError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| LayerError::Layout(format!("unsupported digest {digest:?}")))?;
    Ok(dir.join("blobs").join("sha256").join(hex))
}

fn read_blob(dir: &Path, digest: &str, limits: &Limits) -> Result<(PathBuf, Vec<u8>), LayerError> {
    let path = blob_path(dir, digest)?;
    let bytes = read_capped(&path, limits)?;
    if format!("sha256:{:x}", Sha256::digest(&bytes)) != digest {
        return Err(LayerError::DigestMismatch { digest: digest.to_owned() });
    }
    Ok((path, bytes))
}

fn read_capped(path: &Path, limits: &Limits) -> Result<Vec<u8>, LayerError> {
    let read_error = |source| LayerError::LayoutRead { path: path.to_owned(), source };
    let mut bytes = Vec::new();
    fs::File::open(path)
        .map_err(read_error)?
        .take(limits.document_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limits.document_bytes {
        return Err(LayerError::Layout(format!("{} is larger than {} bytes", path.display(), limits.document_bytes)));
    }
    Ok(bytes)
}

fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, LayerError> {
    serde_json::from_slice(bytes).map_err(|source| LayerError::LayoutJson { path: path.to_owned(), source })
}

/// Hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;
    use tar::{EntryType, Header};

    use super::*;
    use crate::scanning::inventory::inventory;

    /// One tar entry, its name written as is (`..` and all, which `tar::Builder` refuses).
    enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
    }

    fn tar(entries: &[E]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            let mut header = Header::new_gnu();
            let (kind, name, link, data): (EntryType, &str, &str, &[u8]) = match entry {
                E::File(name, data) => (EntryType::Regular, name, "", data),
                E::Dir(name) => (EntryType::Directory, name, "", b""),
                E::Symlink(name, target) => (EntryType::Symlink, name, target, b""),
                E::HardLink(name, target) => (EntryType::Link, name, target, b""),
            };
            header.set_entry_type(kind);
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn build(layers: &[&[E]]) -> Result<Files, LayerError> {
        let mut files = Files::default();
        for layer in layers {
            apply(&mut files, tar(layer).as_slice(), &Limits::default())?;
        }
        Ok(files)
    }

    fn paths(files: &Files) -> Vec<&str> {
        files.files.keys().map(String::as_str).collect()
    }

    const PKG: &[u8] = br#"{"name":"x","version":"1.0.0"}"#;
    const OS_RELEASE: &[u8] = b"ID=debian\nVERSION_ID=\"12\"\n";

    /// A little-endian ELF64 with the given sections (no segments).
    pub(crate) fn elf(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = vec![0u8; 64];
        let mut placed = Vec::new();
        for (_, data) in sections {
            placed.push((out.len() as u64, data.len() as u64));
            out.extend_from_slice(data);
        }
        let mut names = vec![0u8];
        let mut name_offsets = Vec::new();
        for (name, _) in sections.iter().chain([&(".shstrtab", &[][..])]) {
            name_offsets.push(names.len() as u32);
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let strtab_at = out.len() as u64;
        out.extend_from_slice(&names);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        let mut header = |name: u32, kind: u32, offset: u64, size: u64| {
            out.extend_from_slice(&name.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&0u64.to_le_bytes()); // flags
            out.extend_from_slice(&0u64.to_le_bytes()); // addr
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&[0; 8]); // link, info
            out.extend_from_slice(&1u64.to_le_bytes()); // addralign
            out.extend_from_slice(&0u64.to_le_bytes()); // entsize
        };
        header(0, 0, 0, 0);
        for (i, (offset, size)) in placed.iter().enumerate() {
            header(name_offsets[i], 1, *offset, *size);
        }
        header(name_offsets[sections.len()], 3, strtab_at, names.len() as u64);
        let count = sections.len() as u16 + 2;
        let mut ident = vec![0x7f, b'E', b'L', b'F', 2, 1, 1];
        ident.resize(16, 0);
        let mut head = ident;
        head.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        head.extend_from_slice(&62u16.to_le_bytes()); // x86-64
        head.extend_from_slice(&1u32.to_le_bytes());
        head.extend_from_slice(&0u64.to_le_bytes()); // entry
        head.extend_from_slice(&0u64.to_le_bytes()); // phoff
        head.extend_from_slice(&shoff.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes()); // flags
        for half in [64u16, 56, 0, 64, count, count - 1] {
            head.extend_from_slice(&half.to_le_bytes());
        }
        out[..64].copy_from_slice(&head);
        out
    }

    #[test]
    fn keeps_only_what_the_inventory_reads() {
        let files = build(&[&[
            E::Dir("./"),
            E::Dir("./etc/"),
            E::File("./etc/os-release", OS_RELEASE),
            E::File("./etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
            E::File("var/lib/dpkg/status.d/base", b"Package: base-files\nVersion: 12.4\n"),
            E::File("var/lib/dpkg/status.d/base.md5sums", b"x  /etc/issue\n"),
            E::File("usr/lib/node_modules/npm/node_modules/abbrev/package.json", PKG),
            E::File("usr/lib/node_modules/npm/node_modules/abbrev/lib/package.json", PKG),
            E::File("app/node_modules/@scope/name/package.json", PKG),
            E::File("app/package.json", PKG),
            E::File("src/Cargo.lock", b"version = 4\n"),
            E::File("usr/bin/plain-elf", &elf(&[(".text", b"\x90\x90")])),
        ]])
        .unwrap();
        assert_eq!(
            paths(&files),
            [
                "/app/node_modules/@scope/name/package.json",
                "/etc/os-release",
                "/src/Cargo.lock",
                "/usr/lib/node_modules/npm/node_modules/abbrev/package.json",
                "/var/lib/dpkg/status.d/base",
            ]
        );
        assert!(files.binaries.is_empty());
    }

    #[test]
    fn whiteouts_hide_lower_files_and_directories() {
        let lower: &[E] = &[
            E::File("app/node_modules/a/package.json", PKG),
            E::File("app/node_modules/b/package.json", PKG),
            E::File("srv/node_modules/c/package.json", PKG),
            E::File("srv/node_modules/d/package.json", PKG),
            E::Symlink("etc/os-release", "../usr/lib/os-release"),
            E::File("usr/lib/os-release", OS_RELEASE),
        ];
        let files = build(&[
            lower,
            &[
                E::File("app/node_modules/.wh.a", b""),
                E::File("srv/.wh.node_modules", b""),
                E::File("etc/.wh.os-release", b""),
            ],
        ])
        .unwrap();
        assert_eq!(paths(&files), ["/app/node_modules/b/package.json", "/usr/lib/os-release"]);
        assert!(files.links.is_empty());
        // A whiteout hides only lower layers: the same layer may put the path back, in
        // either order.
        let files =
            build(&[lower, &[E::File("app/node_modules/a/package.json", PKG), E::File("app/node_modules/.wh.a", b"")]])
                .unwrap();
        assert!(files.files.contains_key("/app/node_modules/a/package.json"));
    }

    #[test]
    fn opaque_directories_empty_lower_contents() {
        let lower: &[E] = &[
            E::File("app/node_modules/a/package.json", PKG),
            E::File("app/node_modules/b/package.json", PKG),
            E::File("app/node_modules-other/node_modules/c/package.json", PKG),
        ];
        let files = build(&[
            lower,
            &[
                E::File("app/node_modules/c/package.json", PKG),
                E::Dir("app/node_modules/"),
                E::File("app/node_modules/.wh..wh..opq", b""),
            ],
        ])
        .unwrap();
        assert_eq!(
            paths(&files),
            ["/app/node_modules-other/node_modules/c/package.json", "/app/node_modules/c/package.json"]
        );
    }

    #[test]
    fn a_file_replaces_a_lower_directory_and_a_directory_a_lower_link() {
        let files = build(&[
            &[E::File("app/node_modules/a/package.json", PKG), E::Symlink("etc/os-release", "../usr/lib/os-release")],
            &[E::File("app/node_modules/a", b"now a file"), E::Dir("etc/os-release")],
        ])
        .unwrap();
        assert!(files.files.is_empty() && files.links.is_empty(), "{files:?}");
    }

    #[test]
    fn symlinked_os_release_is_read_through_its_link() {
        let files = build(&[
            &[E::File("usr/lib/os-release", OS_RELEASE)],
            &[E::Symlink("etc/os-release", "../usr/lib/os-release"), E::Symlink("lib", "usr/lib")],
        ])
        .unwrap();
        assert_eq!(files.resolve("/etc/os-release").unwrap(), "/usr/lib/os-release");
        assert_eq!(files.read("/lib/os-release"), Some(OS_RELEASE));
        assert_eq!(inventory(&files).os.unwrap().version_id.unwrap(), "12");
        // Absolute targets start again at the image root; `..` stops there.
        let mut files = files.clone();
        files.links.insert("/etc/os-release".into(), "/../../usr/./lib/os-release".into());
        assert_eq!(files.read("/etc/os-release"), Some(OS_RELEASE));
    }

    #[test]
    fn link_loops_end() {
        let mut files = Files::default();
        files.links.insert("/a".into(), "/b".into());
        files.links.insert("/b".into(), "a".into());
        files.links.insert("/self".into(), "self/x".into());
        assert_eq!(files.resolve("/a"), None);
        assert_eq!(files.resolve("/self"), None);
        assert_eq!(files.read("/a/etc/os-release"), None);
    }

    #[test]
    fn paths_cannot_escape_the_root() {
        let files = build(&[&[
            E::File("../../etc/os-release", OS_RELEASE),
            E::File("./var/../var/lib/dpkg/../dpkg/status", b"Package: a\n"),
            E::File("/lib/apk/db/installed", b"P:a\nV:1\n"),
        ]])
        .unwrap();
        assert_eq!(paths(&files), ["/etc/os-release", "/lib/apk/db/installed", "/var/lib/dpkg/status"]);
        assert_eq!(normalize("../../.."), "/");
        assert_eq!(normalize("a//b/./c/../d/"), "/a/b/d");
    }

    #[test]
    fn hard_links_copy_what_was_kept() {
        let files = build(&[&[
            E::File("usr/lib/os-release", OS_RELEASE),
            E::HardLink("etc/os-release", "./usr/lib/os-release"),
            E::HardLink("etc/not-wanted", "usr/lib/os-release"),
            E::HardLink("var/lib/dpkg/status", "nothing/there"),
        ]])
        .unwrap();
        assert_eq!(paths(&files), ["/etc/os-release", "/usr/lib/os-release"]);
        assert_eq!(files.files["/etc/os-release"], OS_RELEASE);
    }

    #[test]
    fn binaries_keep_only_their_build_data() {
        let go = crate::scanning::inventory::golang::tests::inline_blob(
            "go1.22.5",
            "path\texample.com/app\nmod\texample.com/app\t(devel)\t\n\
             dep\tgolang.org/x/text\tv0.3.0\th1:x=\n",
        );
        let audit = crate::scanning::inventory::rust::tests::zlib(
            br#"{"packages":[{"name":"smallvec","version":"1.6.0","source":"crates.io"}]}"#,
        );
        let go_elf = elf(&[(".text", &[0x90; 4096]), (".go.buildinfo", &go)]);
        let rust_elf = elf(&[(".text", &[0x90; 4096]), (".dep-v0", &audit)]);
        let files = build(&[&[
            E::File("usr/bin/goapp", &go_elf),
            E::File("usr/bin/rustapp", &rust_elf),
            E::HardLink("usr/bin/goapp-again", "usr/bin/goapp"),
        ]])
        .unwrap();
        assert_eq!(
            files.binaries.keys().collect::<Vec<_>>(),
            ["/usr/bin/goapp", "/usr/bin/goapp-again", "/usr/bin/rustapp"]
        );
        let found: Vec<String> = inventory(&files)
            .packages
            .iter()
            .map(|p| format!("{} {} {} {}", p.ecosystem, p.name, p.version, p.location))
            .collect();
        assert_eq!(
            found,
            [
                "Go example.com/app (devel) /usr/bin/goapp",
                "Go example.com/app (devel) /usr/bin/goapp-again",
                "Go golang.org/x/text 0.3.0 /usr/bin/goapp",
                "Go golang.org/x/text 0.3.0 /usr/bin/goapp-again",
                "crates.io smallvec 1.6.0 /usr/bin/rustapp",
                "Go stdlib 1.22.5 /usr/bin/goapp",
                "Go stdlib 1.22.5 /usr/bin/goapp-again",
            ]
        );
        // Without a `.go.buildinfo` section the blob is found at a 16-byte boundary.
        let unnamed = elf(&[(".text", &[0x90; 4096]), (".data", &go)]);
        let info = Binary::from_elf(&unnamed).unwrap().go.unwrap();
        assert_eq!(info.go_version, "go1.22.5");
        // Larger than the cap: skipped, and said so.
        let mut files = Files::default();
        let limits = Limits { binary_bytes: 1024, ..Limits::default() };
        apply(&mut files, tar(&[E::File("usr/bin/goapp", &go_elf)]).as_slice(), &limits).unwrap();
        assert!(files.binaries.is_empty());
        assert_eq!(files.skipped["/usr/bin/goapp"], "binaryBytes");
    }

    #[test]
    fn sample_databases_through_a_layer() {
        let files = build(&[&[
            E::File("etc/os-release", b"ID=alpine\nVERSION_ID=3.20.3\n"),
            E::File("lib/apk/db/installed", b"P:musl\nV:1.2.5-r0\no:musl\n\nP:libcrypto3\nV:3.3.2-r0\no:openssl\n"),
            E::File(
                "app/Cargo.lock",
                b"[[package]]\nname = \"time\"\nversion = \"0.1.45\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
            ),
        ]])
        .unwrap();
        let found: Vec<String> =
            inventory(&files).packages.iter().map(|p| format!("{} {} {}", p.ecosystem, p.name, p.version)).collect();
        assert_eq!(found, ["Alpine:v3.20 libcrypto3 3.3.2-r0", "Alpine:v3.20 musl 1.2.5-r0", "crates.io time 0.1.45"]);
    }

    /// An endless tar: one entry claiming 1 TiB, then zeros.
    fn endless() -> impl Read {
        let mut header = Header::new_gnu();
        header.set_path("big").unwrap();
        header.set_size(1 << 40);
        header.set_cksum();
        io::Cursor::new(header.as_bytes().to_vec()).chain(io::repeat(0))
    }

    #[test]
    fn layer_size_cap_stops_a_bomb() {
        let limits = Limits { layer_bytes: 4 << 20, ..Limits::default() };
        let error = apply(&mut Files::default(), endless(), &limits).unwrap_err();
        assert!(matches!(error, LayerError::LayerTooLarge { limit } if limit == 4 << 20));
        // gzip: 32 MiB of zeros in a file, some 32 KiB compressed.
        let zeros = vec![0u8; 32 << 20];
        let bomb = gzip(&tar(&[E::File("var/lib/dpkg/status", &zeros)]));
        assert!(bomb.len() < 256 << 10, "{}", bomb.len());
        for path in ["var/lib/dpkg/status", "unwanted"] {
            let bomb = gzip(&tar(&[E::File(path, &zeros)]));
            let error = apply_blob(
                &mut Files::default(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
                bomb.as_slice(),
                &limits,
            )
            .unwrap_err();
            assert_eq!(error.reason(), "LayerTooLarge", "{path}: {error}");
        }
    }

    #[test]
    fn other_caps() {
        let many: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
        let entries: Vec<E> = many.iter().map(|n| E::File(n, b"")).collect();
        let limits = Limits { entries: 10, ..Limits::default() };
        let error = apply(&mut Files::default(), tar(&entries).as_slice(), &limits).unwrap_err();
        assert_eq!(error.reason(), "TooManyEntries");

        let limits = Limits { file_bytes: 100, ..Limits::default() };
        let layer = tar(&[E::File("var/lib/dpkg/status", &[b'a'; 101])]);
        let error = apply(&mut Files::default(), layer.as_slice(), &limits).unwrap_err();
        assert!(matches!(&error, LayerError::FileTooLarge { path, .. } if path == "/var/lib/dpkg/status"), "{error}");

        let limits = Limits { kept_bytes: 1000, ..Limits::default() };
        let big = vec![b'x'; 600];
        let mut files = Files::default();
        let first = tar(&[E::File("a/node_modules/x/package.json", &big)]);
        apply(&mut files, first.as_slice(), &limits).unwrap();
        let second = tar(&[E::File("b/node_modules/x/package.json", &big)]);
        let error = apply(&mut files, second.as_slice(), &limits).unwrap_err();
        assert_eq!(error.reason(), "TooMuchKept");
        // What a later layer deletes no longer counts.
        let mut files = Files::default();
        apply(&mut files, first.as_slice(), &limits).unwrap();
        let replace = tar(&[E::File("a/node_modules/.wh.x", b""), E::File("b/node_modules/x/package.json", &big)]);
        apply(&mut files, replace.as_slice(), &limits).unwrap();
    }

    #[test]
    fn bad_layers_are_errors() {
        let apply_bytes = |bytes: &[u8]| apply(&mut Files::default(), bytes, &Limits::default());
        for bytes in [
            &b"definitely not a tar archive"[..],
            &[b'x'; 1024][..],
            &tar(&[E::File("var/lib/dpkg/status", &[b'a'; 2000])])[..1200],
            &tar(&[E::File("etc/os-release", OS_RELEASE)])[..300],
        ] {
            let error = apply_bytes(bytes).unwrap_err();
            assert_eq!(error.reason(), "InvalidLayer", "{error}");
        }
        let gzip_type = "application/vnd.oci.image.layer.v1.tar+gzip";
        let error = apply_blob(&mut Files::default(), gzip_type, &tar(&[E::File("a", b"b")])[..], &Limits::default())
            .unwrap_err();
        assert_eq!(error.reason(), "InvalidCompression", "{error}");
        let truncated = gzip(&tar(&[E::File("var/lib/dpkg/status", &[b'a'; 20000])]));
        let error = apply_blob(&mut Files::default(), gzip_type, &truncated[..truncated.len() / 2], &Limits::default())
            .unwrap_err();
        assert_eq!(error.reason(), "InvalidCompression", "{error}");
        let zstd_type = "application/vnd.oci.image.layer.v1.tar+zstd";
        let error = apply_blob(&mut Files::default(), zstd_type, &b"not zstd"[..], &Limits::default()).unwrap_err();
        assert_eq!(error.reason(), "InvalidCompression", "{error}");
        let error = apply_blob(
            &mut Files::default(),
            "application/vnd.oci.image.layer.v1.tar+lz4",
            &b""[..],
            &Limits::default(),
        )
        .unwrap_err();
        assert!(matches!(error, LayerError::UnsupportedMediaType(_)));
        // An empty layer is an empty tree.
        assert!(apply_bytes(b"").is_ok());
        assert!(apply_bytes(&tar(&[])).is_ok());
    }

    /// Writes an OCI image layout of the given (uncompressed) layers, gzip-compressed.
    fn layout(dir: &Path, layers: &[Vec<u8>]) {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let hex = format!("{:x}", Sha256::digest(bytes));
            fs::write(blobs.join(&hex), bytes).unwrap();
            format!("sha256:{hex}")
        };
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|layer| {
                let blob = gzip(layer);
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": put(&blob), "size": blob.len(),
                })
            })
            .collect();
        let config = put(b"{}");
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config, "size": 2},
            "layers": layers,
        }))
        .unwrap();
        let manifest = put(&manifest);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest,
             "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
        ]});
        fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    }

    #[test]
    fn image_layouts_in_layer_order_with_digests_checked() {
        let dir = tempfile::tempdir().unwrap();
        layout(
            dir.path(),
            &[
                tar(&[E::File("app/node_modules/a/package.json", PKG)]),
                tar(&[E::File("app/node_modules/.wh.a", b""), E::File("etc/os-release", OS_RELEASE)]),
            ],
        );
        let files = from_oci_layout(dir.path(), &Limits::default()).unwrap();
        assert_eq!(paths(&files), ["/etc/os-release"]);

        // A blob that does not match its digest.
        let blobs = dir.path().join("blobs/sha256");
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(blobs.join(&manifest_digest[7..])).unwrap()).unwrap();
        let layer = blobs.join(&manifest["layers"][1]["digest"].as_str().unwrap()[7..]);
        let mut bytes = fs::read(&layer).unwrap();
        bytes.extend_from_slice(b"trailing");
        fs::write(&layer, bytes).unwrap();
        let error = from_oci_layout(dir.path(), &Limits::default()).unwrap_err();
        assert!(matches!(error, LayerError::DigestMismatch { .. }), "{error}");

        // A digest that names a path, not a blob.
        fs::write(dir.path().join("index.json"), br#"{"manifests":[{"digest":"sha256:../../../etc/passwd"}]}"#)
            .unwrap();
        let error = from_oci_layout(dir.path(), &Limits::default()).unwrap_err();
        assert_eq!(error.reason(), "InvalidImageLayout", "{error}");
        fs::write(dir.path().join("index.json"), b"{\"manifests\":[]}").unwrap();
        assert!(from_oci_layout(dir.path(), &Limits::default()).is_err());
        fs::write(dir.path().join("index.json"), b"[not json").unwrap();
        assert!(from_oci_layout(dir.path(), &Limits::default()).is_err());
        assert!(from_oci_layout(&dir.path().join("missing"), &Limits::default()).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = apply(&mut Files::default(), bytes.as_slice(), &Limits::default());
            let _ = apply_blob(
                &mut Files::default(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
                bytes.as_slice(),
                &Limits::default(),
            );
        }

        #[test]
        fn corrupted_tars_never_panic(
            flips in proptest::collection::vec((0usize..3072, any::<u8>()), 1..8),
        ) {
            let mut layer = tar(&[
                E::File("etc/os-release", OS_RELEASE),
                E::Symlink("lib", "usr/lib"),
                E::File("app/node_modules/a/package.json", PKG),
            ]);
            for (at, byte) in flips {
                let at = at % layer.len();
                layer[at] = byte;
            }
            let _ = apply(&mut Files::default(), layer.as_slice(), &Limits::default());
        }

        #[test]
        fn kept_paths_are_normal(
            names in proptest::collection::vec("[a./]{0,6}(os-release|status|\\.wh\\.[a.]{1,3})", 1..12),
        ) {
            let entries: Vec<E> = names
                .iter()
                .map(|n| E::File(n, b"x"))
                .chain(names.iter().map(|n| E::Symlink(n, "../..")))
                .collect();
            let mut files = Files::default();
            let _ = apply(&mut files, tar(&entries).as_slice(), &Limits::default());
            for path in files.files.keys().chain(files.links.keys()) {
                prop_assert!(path.starts_with('/'));
                prop_assert_eq!(&normalize(path), path);
            }
        }
    }

    /// A zstd layer (made by `testdata/make_zstd_layer.sh` with Debian's zstd) reads like a
    /// gzip one; cut short, it is a reason, not a panic.
    #[test]
    fn zstd_layers_are_read() {
        let zstd_type = "application/vnd.oci.image.layer.v1.tar+zstd";
        let blob = include_bytes!("testdata/layer.tar.zst");
        let mut files = Files::default();
        apply_blob(&mut files, zstd_type, &blob[..], &Limits::default()).unwrap();
        assert_eq!(files.read("/etc/os-release"), Some(&b"ID=debian\nVERSION_ID=\"12\"\n"[..]));
        let inventory = crate::scanning::inventory::inventory(&files);
        assert_eq!(inventory.packages.len(), 1, "{inventory:?}");
        assert_eq!(inventory.packages[0].ecosystem, "Debian:12");
        let error =
            apply_blob(&mut Files::default(), zstd_type, &blob[..blob.len() / 2], &Limits::default()).unwrap_err();
        assert_eq!(error.reason(), "InvalidCompression", "{error}");
    }
}
