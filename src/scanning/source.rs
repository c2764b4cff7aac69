//! Where the vulnerability data comes from, and keeping it current: a mounted folder, an HTTP(S)
//! server in the OSV bucket layout (`<base>/<Ecosystem>/all.zip`), or an OCI artifact in a
//! registry berth manages (air-gapped sites), each read into the [`VulnerabilityData`] holder.
//!
//! Every source ends as a folder of `<Ecosystem>/all.zip`: the folder itself, or a cache folder
//! the downloads are written to (`<cache>/<Ecosystem>/all.zip`, with `all.zip.json` beside it
//! saying what the archive is: its digest, and for a URL the validators to ask with). The
//! folder is read again only when its archives changed (name, size, mtime, ctime, inode), and
//! the data is replaced only when its version, a digest over the archives, changed.
//!
//! A failed load keeps the data loaded before in use and says why ([`VulnerabilityData::fail`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    fmt::Write as _,
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;
use reqwest::{StatusCode, Url, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{
    data::{Loaded, State, VulnerabilityData},
    osv::{Database, Limits},
};
use crate::registry::{Backend, StreamError, is_index};

/// The largest archive one download writes (the OSV bucket's largest, Debian's and Ubuntu's,
/// are a few hundred MiB compressed); a bigger one is refused, not written.
pub const MAX_DOWNLOAD_BYTES: u64 = 4 << 30;

/// The OSV ecosystems berth's inventory reports packages in: what a URL source downloads when
/// no list is given.
pub const DEFAULT_ECOSYSTEMS: &[&str] = &[
    "AlmaLinux",
    "Alpine",
    "Chainguard",
    "Debian",
    "Go",
    "Mageia",
    "Photon OS",
    "PyPI",
    "Red Hat",
    "Rocky Linux",
    "Ubuntu",
    "Wolfi",
    "crates.io",
    "npm",
];

const ARCHIVE: &str = "all.zip";
/// What a cached archive is ([`Cached`]), beside it.
const CACHED: &str = "all.zip.json";
/// A download in progress, renamed to [`ARCHIVE`] once complete.
const PARTIAL: &str = "all.zip.part";
/// The annotation `oras push` writes with each file's name.
const TITLE: &str = "org.opencontainers.image.title";

/// A configured vulnerability data source (`--vulnerability-data`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A folder of `<Ecosystem>/all.zip` (a mounted volume), read where it is.
    Dir(PathBuf),
    /// An HTTP(S) server in the OSV bucket layout: `<base>/<Ecosystem>/all.zip` for each
    /// ecosystem, downloaded into the cache folder.
    Url { base: Url, ecosystems: Vec<String> },
    /// An OCI artifact whose layers are titled `<Ecosystem>/all.zip` (`oras push REF
    /// Debian/all.zip:application/zip ...`), downloaded into the cache folder.
    Oci {
        /// The name of the berth Registry object holding it.
        registry: String,
        repository: String,
        /// A tag, or a digest (`sha256:<hex>`).
        reference: String,
    },
}

impl fmt::Display for Source {
    /// For status and logs: a URL without its credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Dir(dir) => write!(f, "{}", dir.display()),
            Source::Url { base, .. } => f.write_str(&redact(base)),
            Source::Oci { registry, repository, reference } => {
                let separator = if reference.starts_with("sha256:") { '@' } else { ':' };
                write!(f, "oci://{registry}/{repository}{separator}{reference}")
            }
        }
    }
}

/// Reads `--vulnerability-data`: `http://` or `https://` is the base of the OSV bucket layout
/// (e.g. `https://osv-vulnerabilities.storage.googleapis.com`), downloading `ecosystems`
/// ([`DEFAULT_ECOSYSTEMS`] when empty); `oci://<Registry name>/<repository>[:<tag>|@sha256:<hex>]`
/// (tag `latest` by default) is an OCI artifact; anything else a folder.
pub fn parse(s: &str, ecosystems: &[String]) -> Result<Source, String> {
    const FORMS: &str = "a folder, an http(s):// URL, or oci://<registry>/<repository>[:<tag>|@sha256:<digest>]";
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("the vulnerability data source is empty: give {FORMS}"));
    }
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return parse_url(s, ecosystems);
    }
    if let Some(rest) = s.strip_prefix("oci://") {
        return parse_oci(rest)
            .map_err(|e| format!("{s:?}: {e} (expected oci://<registry>/<repository>[:<tag>|@sha256:<digest>])"));
    }
    if let Some((scheme, _)) = s.split_once("://")
        && !scheme.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        let hint = if scheme == "gs" {
            "; the OSV bucket over HTTPS is https://osv-vulnerabilities.storage.googleapis.com"
        } else {
            ""
        };
        return Err(format!("{scheme}:// is not a vulnerability data source: give {FORMS}{hint}"));
    }
    if lower.starts_with("oci:") {
        return Err(format!("{s:?}: an OCI source is written oci://<registry>/<repository>[:<tag>]"));
    }
    Ok(Source::Dir(PathBuf::from(s)))
}

fn parse_url(s: &str, ecosystems: &[String]) -> Result<Source, String> {
    // The input is not echoed: it may carry credentials.
    let base = Url::parse(s).map_err(|e| format!("the vulnerability data URL does not parse: {e}"))?;
    if base.host_str().is_none_or(str::is_empty) {
        return Err("the vulnerability data URL has no host".into());
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(format!(
            "{}: the vulnerability data URL is the base of <Ecosystem>/all.zip and takes no query or fragment",
            redact(&base)
        ));
    }
    let ecosystems: BTreeSet<String> = if ecosystems.is_empty() {
        DEFAULT_ECOSYSTEMS.iter().map(|e| e.to_string()).collect()
    } else {
        ecosystems.iter().map(|e| e.trim().to_string()).collect()
    };
    for ecosystem in &ecosystems {
        check_ecosystem(ecosystem)?;
    }
    Ok(Source::Url { base, ecosystems: ecosystems.into_iter().collect() })
}

fn parse_oci(rest: &str) -> Result<Source, String> {
    let (registry, path) = rest.split_once('/').ok_or("no repository")?;
    if !crate::auth::robot::valid_name(registry) {
        return Err(format!("{registry:?} is not the name of a Registry object (a lowercase DNS subdomain)"));
    }
    let (repository, reference) = match path.split_once('@') {
        Some((repository, digest)) => {
            if !crate::registry::is_sha256_digest(digest) {
                return Err(format!("{digest:?} is not a digest (sha256:<64 hex digits>)"));
            }
            (repository, digest)
        }
        None => match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => {
                if !crate::rollout::valid_tag(tag) {
                    return Err(format!("{tag:?} is not a tag"));
                }
                (repository, tag)
            }
            _ => (path, "latest"),
        },
    };
    if !crate::auth::scope::valid_repository_path(repository) {
        let also = if repository.contains(':') { " (give a tag or a digest, not both)" } else { "" };
        return Err(format!("{repository:?} is not a repository path{also}"));
    }
    Ok(Source::Oci { registry: registry.into(), repository: repository.into(), reference: reference.into() })
}

/// An ecosystem names a folder of the cache: one path segment, nothing hidden.
fn check_ecosystem(ecosystem: &str) -> Result<(), String> {
    let ok = !ecosystem.is_empty()
        && ecosystem.len() <= 128
        && !ecosystem.starts_with('.')
        && ecosystem.trim() == ecosystem
        && !ecosystem.chars().any(|c| c == '/' || c == '\\' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(format!("{ecosystem:?} is not an ecosystem name (an OSV ecosystem, e.g. Debian, PyPI, crates.io)"))
    }
}

/// A URL as logs and status may show it: without user name or password.
fn redact(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// `<base>/<Ecosystem>/all.zip`, the ecosystem encoded as one path segment (`Red%20Hat`).
pub fn archive_url(base: &Url, ecosystem: &str) -> Url {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push(ecosystem).push(ARCHIVE);
    }
    url
}

/// What the archives of a folder look like on disk: a change of any archive (or of which
/// there are) changes it. ctime and the inode catch a copy that keeps size and mtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp(Vec<(String, FileStamp)>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    dev: u64,
    ino: u64,
}

/// The `<Ecosystem>/all.zip` of a folder, as `Database::load_dir_with` finds them, by name.
fn archives(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let archive = entry.path().join(ARCHIVE);
        if archive.is_file() {
            found.push((entry.file_name().to_string_lossy().into_owned(), archive));
        }
    }
    found.sort();
    Ok(found)
}

/// Stats the archives of a folder (blocking; cheap: no archive is read).
pub fn stamp(dir: &Path) -> Result<Stamp, String> {
    let mut stamps = Vec::new();
    for (ecosystem, archive) in archives(dir)? {
        let m = std::fs::metadata(&archive).map_err(|e| format!("{}: {e}", archive.display()))?;
        stamps.push((
            ecosystem,
            FileStamp {
                size: m.size(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
                dev: m.dev(),
                ino: m.ino(),
            },
        ));
    }
    Ok(Stamp(stamps))
}

fn hex_digest(hash: &[u8]) -> String {
    let mut s = String::with_capacity(7 + 2 * hash.len());
    s.push_str("sha256:");
    for b in hash {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `sha256:<hex>` of a file's bytes.
fn file_digest(path: &Path) -> Result<String, String> {
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex_digest(&hasher.finalize()))
}

/// The version of a set of archives: `sha256` over each one's name and the digest of its bytes,
/// in name order. The same bytes give the same version wherever they came from.
pub fn version(digests: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (ecosystem, digest) in digests {
        hasher.update(ecosystem.as_bytes());
        hasher.update([0]);
        hasher.update(digest.as_bytes());
        hasher.update([b'\n']);
    }
    hex_digest(&hasher.finalize())
}

/// One load of a folder, with what it was loaded from.
struct Load {
    loaded: Loaded,
    stamp: Stamp,
    /// Each archive's `sha256:<hex>`, by ecosystem.
    digests: BTreeMap<String, String>,
}

/// Loads a folder of `<Ecosystem>/all.zip` (blocking: call it from `spawn_blocking`), its
/// version a digest over the archives (see [`version`]).
pub fn load_dir(dir: &Path, limits: &Limits) -> Result<Loaded, String> {
    load_checked(dir, limits, dir.display().to_string()).map(|load| load.loaded)
}

/// Loads a folder and digests its archives; a folder that changes meanwhile (a volume being
/// updated) is read again, so the version names the bytes that were loaded.
fn load_checked(dir: &Path, limits: &Limits, source: String) -> Result<Load, String> {
    const ATTEMPTS: usize = 3;
    for _ in 0..ATTEMPTS {
        let before = stamp(dir)?;
        let db = Database::load_dir_with(dir, limits).map_err(|e| e.to_string())?;
        let mut digests = BTreeMap::new();
        for (ecosystem, archive) in archives(dir)? {
            digests.insert(ecosystem, file_digest(&archive)?);
        }
        if stamp(dir)? == before {
            let version = version(&digests);
            return Ok(Load { loaded: Loaded::new(db, version, source), stamp: before, digests });
        }
    }
    Err(format!("{}: the archives changed while they were read, {ATTEMPTS} times", dir.display()))
}

/// What a cached archive is, kept beside it as `all.zip.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cached {
    /// `sha256:<hex>` of the archive.
    digest: String,
    /// The URL it was downloaded from, without credentials (a URL source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
}

/// The record of a cached archive, when both are there.
async fn read_cached(folder: &Path) -> Option<Cached> {
    if !tokio::fs::try_exists(folder.join(ARCHIVE)).await.unwrap_or(false) {
        return None;
    }
    let bytes = tokio::fs::read(folder.join(CACHED)).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn write_cached(folder: &Path, cached: &Cached) -> Result<(), String> {
    let path = folder.join(CACHED);
    let tmp = folder.join(format!("{CACHED}.part"));
    let body = serde_json::to_vec_pretty(cached).map_err(|e| e.to_string())?;
    tokio::fs::write(&tmp, body).await.map_err(|e| format!("{}: {e}", tmp.display()))?;
    tokio::fs::rename(&tmp, &path).await.map_err(|e| format!("{}: {e}", path.display()))
}

/// Removes a cached archive and what berth keeps beside it (best effort), and its folder when
/// nothing else is in it.
async fn remove_cached(folder: &Path) {
    for name in [ARCHIVE, CACHED, PARTIAL] {
        let _ = tokio::fs::remove_file(folder.join(name)).await;
    }
    let _ = tokio::fs::remove_dir(folder).await;
}

/// Moves a complete download into place: on disk first, so a crash cannot leave a torn
/// archive under the name a restart trusts.
async fn commit(folder: &Path) -> Result<(), String> {
    let tmp = folder.join(PARTIAL);
    let io = |e: std::io::Error| format!("{}: {e}", tmp.display());
    tokio::fs::File::open(&tmp).await.map_err(io)?.sync_all().await.map_err(io)?;
    tokio::fs::rename(&tmp, folder.join(ARCHIVE)).await.map_err(io)
}

/// Removes the cached archives of ecosystems the source no longer has, so the folder holds
/// what the source holds.
async fn keep_only(cache: &Path, wanted: &BTreeSet<&str>) {
    let Ok(mut entries) = tokio::fs::read_dir(cache).await else { return };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let folder = entry.path();
        if !wanted.contains(name.as_str()) && tokio::fs::try_exists(folder.join(ARCHIVE)).await.unwrap_or(false) {
            tracing::info!(ecosystem = %name, "the vulnerability data source no longer has this ecosystem; removing its cached archive");
            remove_cached(&folder).await;
        }
    }
}

/// One blob for [`OciFetcher`] to write to a file.
pub struct BlobRequest {
    pub backend: Arc<dyn Backend>,
    pub repository: String,
    pub digest: String,
    /// Written whole (created or truncated); its bytes must match `digest`.
    pub dest: PathBuf,
    /// A bigger blob is an error.
    pub max_bytes: u64,
}

type FindBackend = dyn Fn(String) -> BoxFuture<'static, Result<Arc<dyn Backend>, String>> + Send + Sync;
type FetchBlob = dyn Fn(BlobRequest) -> BoxFuture<'static, Result<u64, String>> + Send + Sync;

/// How an OCI source reaches its registry, from the operator: the backend of a Registry object
/// by name (asked on every refresh, so changed credentials are used), and how a blob is
/// streamed to a file (`Backend::blob` buffers at most 16 MiB, too little for an archive).
///
/// Wiring, once `Backend::blob_to_file(repository, digest, dest, max_bytes)` exists:
/// ```ignore
/// OciFetcher::new(
///     move |name| { let ctx = ctx.clone(); async move { /* Registry `name` -> ctx.backend(&registry) */ } },
///     |r: BlobRequest| async move {
///         r.backend.blob_to_file(&r.repository, &r.digest, &r.dest, r.max_bytes).await.map_err(|e| e.to_string())
///     },
/// )
/// ```
#[derive(Clone)]
pub struct OciFetcher {
    backend: Arc<FindBackend>,
    blob_to_file: Arc<FetchBlob>,
}

impl OciFetcher {
    pub fn new<B, BF, F, FF>(backend: B, blob_to_file: F) -> OciFetcher
    where
        B: Fn(String) -> BF + Send + Sync + 'static,
        BF: Future<Output = Result<Arc<dyn Backend>, String>> + Send + 'static,
        F: Fn(BlobRequest) -> FF + Send + Sync + 'static,
        FF: Future<Output = Result<u64, String>> + Send + 'static,
    {
        OciFetcher {
            backend: Arc::new(move |name| Box::pin(backend(name))),
            blob_to_file: Arc::new(move |request| Box::pin(blob_to_file(request))),
        }
    }
}

/// One archive of an OCI artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactArchive {
    pub ecosystem: String,
    pub digest: String,
    pub size: u64,
}

/// The archives of an artifact manifest: its layers titled `<Ecosystem>/all.zip`. Other layers
/// are ignored; a manifest without any is an error.
pub fn artifact_archives(manifest: &[u8]) -> Result<Vec<ArtifactArchive>, String> {
    #[derive(Deserialize)]
    struct Manifest {
        #[serde(default)]
        layers: Vec<Layer>,
    }
    #[derive(Deserialize)]
    struct Layer {
        digest: String,
        size: u64,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    let manifest: Manifest =
        serde_json::from_slice(manifest).map_err(|e| format!("the manifest is not an OCI image manifest: {e}"))?;
    let mut archives: Vec<ArtifactArchive> = Vec::new();
    for layer in manifest.layers {
        let Some(ecosystem) = layer.annotations.get(TITLE).and_then(|t| t.strip_suffix("/all.zip")) else {
            continue;
        };
        check_ecosystem(ecosystem)?;
        if !crate::registry::is_sha256_digest(&layer.digest) {
            return Err(format!("the layer of {ecosystem}/all.zip has digest {:?}, not sha256:<hex>", layer.digest));
        }
        if archives.iter().any(|a| a.ecosystem == ecosystem) {
            return Err(format!("two layers are titled {ecosystem}/all.zip"));
        }
        archives.push(ArtifactArchive { ecosystem: ecosystem.into(), digest: layer.digest, size: layer.size });
    }
    if archives.is_empty() {
        return Err(format!(
            "no layer is titled <Ecosystem>/all.zip (annotation {TITLE}; `oras push <ref> Debian/all.zip:application/zip` writes it)"
        ));
    }
    Ok(archives)
}

/// What one refresh brought: new data, a failure, or both (data cached by an earlier run, loaded
/// while its source does not answer).
#[derive(Default)]
struct Pass {
    loaded: Option<Loaded>,
    failure: Option<String>,
}

/// What one URL download found.
enum Fetched {
    /// 304, or the same bytes again.
    Unchanged,
    Downloaded(u64),
    NotFound,
}

/// Keeps one source's data current across refreshes.
struct Loader {
    source: Source,
    /// Where URL and OCI sources are downloaded to.
    cache: PathBuf,
    limits: Limits,
    oci: Option<OciFetcher>,
    http: reqwest::Client,
    max_download_bytes: u64,
    /// The folder as last loaded.
    stamp: Option<Stamp>,
    /// The version last handed out.
    version: Option<String>,
    /// Loads done (a folder read and parsed).
    loads: u64,
}

impl Loader {
    fn new(source: Source, cache: PathBuf, limits: Limits, oci: Option<OciFetcher>) -> Result<Loader, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // Between reads, not over the whole download: an archive may take minutes.
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Loader {
            source,
            cache,
            limits,
            oci,
            http,
            max_download_bytes: MAX_DOWNLOAD_BYTES,
            stamp: None,
            version: None,
            loads: 0,
        })
    }

    /// The folder the data is loaded from.
    fn dir(&self) -> &Path {
        match &self.source {
            Source::Dir(dir) => dir,
            Source::Url { .. } | Source::Oci { .. } => &self.cache,
        }
    }

    /// Brings the cache up to date with the source (nothing for a folder), then loads the folder
    /// if it changed. `force` loads it and hands it out even when unchanged (after a failure,
    /// to clear it).
    async fn pass(&mut self, force: bool) -> Pass {
        let synced = match &self.source {
            Source::Dir(_) => Ok(()),
            Source::Url { .. } => self.sync_url().await,
            Source::Oci { .. } => self.sync_oci().await,
        };
        match synced {
            Ok(()) => match self.load(force).await {
                Ok(loaded) => Pass { loaded, failure: None },
                Err(failure) => Pass { loaded: None, failure: Some(failure) },
            },
            Err(failure) => {
                // A restart while the source does not answer: what an earlier run downloaded
                // serves meanwhile (the failure is still reported).
                let loaded = if self.version.is_none() { self.load(true).await.ok().flatten() } else { None };
                Pass { loaded, failure: Some(failure) }
            }
        }
    }

    /// Loads the folder when it changed; `None` when it did not, or its version is the one
    /// handed out already (unless `force`).
    async fn load(&mut self, force: bool) -> Result<Option<Loaded>, String> {
        let dir = self.dir().to_path_buf();
        let now = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || stamp(&dir)).await.map_err(|e| format!("reading the folder: {e}"))??
        };
        if !force && self.stamp.as_ref() == Some(&now) {
            return Ok(None);
        }
        let limits = self.limits;
        let source = self.source.to_string();
        let load = tokio::task::spawn_blocking(move || load_checked(&dir, &limits, source))
            .await
            .map_err(|e| format!("loading the vulnerability data: {e}"))??;
        self.loads += 1;
        if !matches!(self.source, Source::Dir(_)) {
            self.check_cache(&load.digests).await?;
        }
        self.stamp = Some(load.stamp.clone());
        if !force && self.version.as_deref() == Some(load.loaded.version.as_str()) {
            return Ok(None);
        }
        self.version = Some(load.loaded.version.clone());
        Ok(Some(load.loaded))
    }

    /// Compares the cached archives with the digests recorded when they were written: one that
    /// differs (a torn or altered file) loses its record, so the next refresh downloads it again
    /// instead of trusting a 304 or a matching layer digest.
    async fn check_cache(&self, digests: &BTreeMap<String, String>) -> Result<(), String> {
        let mut altered = Vec::new();
        for (ecosystem, digest) in digests {
            let folder = self.cache.join(ecosystem);
            if let Some(cached) = read_cached(&folder).await
                && &cached.digest != digest
            {
                let _ = tokio::fs::remove_file(folder.join(CACHED)).await;
                altered.push(ecosystem.as_str());
            }
        }
        if altered.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the cached archives of {} do not match the digests recorded when they were downloaded; they are downloaded again at the next refresh",
                altered.join(", ")
            ))
        }
    }

    /// Downloads each ecosystem's archive that changed. One that is missing (404) or fails is
    /// reported and the others load (a missing or failed one from the copy downloaded before,
    /// if any); no
    /// answer at all is an error, even with copies from before (they stay in use).
    async fn sync_url(&self) -> Result<(), String> {
        let Source::Url { base, ecosystems } = &self.source else { return Ok(()) };
        tokio::fs::create_dir_all(&self.cache).await.map_err(|e| format!("{}: {e}", self.cache.display()))?;
        let mut answered = 0;
        let mut problems = Vec::new();
        for ecosystem in ecosystems {
            let url = archive_url(base, ecosystem);
            let folder = self.cache.join(ecosystem);
            let cached = read_cached(&folder).await.filter(|c| c.url.as_deref() == Some(redact(&url).as_str()));
            match self.fetch_url(&url, &folder, cached.as_ref()).await {
                Ok(Fetched::Unchanged) => answered += 1,
                Ok(Fetched::Downloaded(bytes)) => {
                    tracing::info!(url = %redact(&url), bytes, "downloaded vulnerability data");
                    answered += 1;
                }
                Ok(Fetched::NotFound) => {
                    // A copy from before stays in use: stale records find more than none, and
                    // a mirror that lost a file for a while must not make images look clean.
                    if cached.is_some() {
                        problems
                            .push(format!("{}: 404 Not Found (the copy downloaded before stays in use)", redact(&url)));
                    } else {
                        problems.push(format!("{}: 404 Not Found", redact(&url)));
                    }
                }
                Err(e) => {
                    // A failure keeps the copy downloaded before from the same URL, if any.
                    if cached.is_some() {
                        problems.push(format!("{e} (the copy downloaded before stays in use)"));
                    } else {
                        remove_cached(&folder).await;
                        problems.push(e);
                    }
                }
            }
        }
        if answered == 0 {
            return Err(format!(
                "no vulnerability data could be downloaded from {}: {}",
                redact(base),
                problems.join("; ")
            ));
        }
        for problem in &problems {
            tracing::warn!(source = %redact(base), %problem, "an ecosystem's vulnerability data is missing; the others load");
        }
        keep_only(&self.cache, &ecosystems.iter().map(String::as_str).collect()).await;
        Ok(())
    }

    /// One conditional GET of `<base>/<Ecosystem>/all.zip` into `folder`.
    async fn fetch_url(&self, url: &Url, folder: &Path, cached: Option<&Cached>) -> Result<Fetched, String> {
        let shown = redact(url);
        let mut request = self.http.get(url.clone());
        if let Some(cached) = cached {
            if let Some(etag) = &cached.etag {
                request = request.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(date) = &cached.last_modified {
                request = request.header(header::IF_MODIFIED_SINCE, date);
            }
        }
        let response = request.send().await.map_err(|e| format!("{shown}: {}", http_error(e)))?;
        match response.status() {
            StatusCode::NOT_MODIFIED if cached.is_some() => return Ok(Fetched::Unchanged),
            StatusCode::NOT_FOUND => return Ok(Fetched::NotFound),
            StatusCode::OK => {}
            status => return Err(format!("{shown} answered {status}")),
        }
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (etag, last_modified) = (header(header::ETAG), header(header::LAST_MODIFIED));
        tokio::fs::create_dir_all(folder).await.map_err(|e| format!("{}: {e}", folder.display()))?;
        let (digest, bytes) = match self.download(response, &folder.join(PARTIAL)).await {
            Ok(done) => done,
            Err(e) => {
                let _ = tokio::fs::remove_file(folder.join(PARTIAL)).await;
                return Err(format!("{shown}: {e}"));
            }
        };
        let same = cached.is_some_and(|c| c.digest == digest);
        if same {
            // The same bytes under new validators: the archive is left as it is (not reloaded).
            let _ = tokio::fs::remove_file(folder.join(PARTIAL)).await;
        } else {
            commit(folder).await?;
        }
        write_cached(folder, &Cached { digest, url: Some(shown), etag, last_modified }).await?;
        Ok(if same { Fetched::Unchanged } else { Fetched::Downloaded(bytes) })
    }

    /// Streams a body into `dest`, at most `max_download_bytes`; returns its digest and size.
    async fn download(&self, response: reqwest::Response, dest: &Path) -> Result<(String, u64), String> {
        let max = self.max_download_bytes;
        crate::registry::stream_to_file(response, dest, max).await.map_err(|e| match e {
            StreamError::TooLarge => format!("the archive is larger than the download limit of {max} bytes; refused"),
            StreamError::Read(e) => http_error(e),
            StreamError::Write(e) => format!("{}: {e}", dest.display()),
        })
    }

    /// Reads the artifact's manifest and downloads each archive whose layer digest is not the
    /// one cached: an unchanged manifest downloads nothing, a changed one only what changed.
    async fn sync_oci(&self) -> Result<(), String> {
        let Source::Oci { registry, repository, reference } = &self.source else { return Ok(()) };
        let shown = self.source.to_string();
        let fetcher = self.oci.as_ref().ok_or_else(|| {
            format!("{shown}: an OCI source needs the operator's registries, which this process does not have")
        })?;
        let backend = (fetcher.backend)(registry.clone()).await.map_err(|e| format!("{shown}: {e}"))?;
        let manifest = backend.manifest(repository, reference).await.map_err(|e| format!("{shown}: {e}"))?;
        let manifest_digest = &manifest.descriptor.digest;
        if is_index(&manifest.descriptor.media_type) {
            return Err(format!(
                "{shown} ({manifest_digest}) is an image index; push the archives as one artifact (oras push)"
            ));
        }
        let archives = artifact_archives(&manifest.body).map_err(|e| format!("{shown} ({manifest_digest}): {e}"))?;
        tokio::fs::create_dir_all(&self.cache).await.map_err(|e| format!("{}: {e}", self.cache.display()))?;
        for archive in &archives {
            let folder = self.cache.join(&archive.ecosystem);
            if read_cached(&folder).await.is_some_and(|c| c.digest == archive.digest) {
                continue;
            }
            let what = format!("{shown}: {}/all.zip ({})", archive.ecosystem, archive.digest);
            if archive.size > self.max_download_bytes {
                return Err(format!(
                    "{what} is {} bytes, larger than the download limit of {} bytes; refused",
                    archive.size, self.max_download_bytes
                ));
            }
            tokio::fs::create_dir_all(&folder).await.map_err(|e| format!("{}: {e}", folder.display()))?;
            let request = BlobRequest {
                backend: backend.clone(),
                repository: repository.clone(),
                digest: archive.digest.clone(),
                dest: folder.join(PARTIAL),
                max_bytes: self.max_download_bytes,
            };
            let bytes = match (fetcher.blob_to_file)(request).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    let _ = tokio::fs::remove_file(folder.join(PARTIAL)).await;
                    return Err(format!("{what}: {e}"));
                }
            };
            commit(&folder).await?;
            write_cached(&folder, &Cached { digest: archive.digest.clone(), ..Cached::default() }).await?;
            tracing::info!(source = %shown, ecosystem = %archive.ecosystem, bytes, "downloaded vulnerability data");
        }
        keep_only(&self.cache, &archives.iter().map(|a| a.ecosystem.as_str()).collect()).await;
        Ok(())
    }
}

/// A reqwest error with its causes (reqwest's own message says only "error sending request"),
/// without the URL (the caller names it, without credentials).
fn http_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    message
}

/// Hands a refresh's outcome to the holder: new data first, then a failure (which keeps that
/// data in use).
fn apply(data: &VulnerabilityData, source: &Source, pass: Pass) {
    if let Some(loaded) = pass.loaded {
        let info = loaded.db.info();
        tracing::info!(
            %source,
            version = %loaded.version,
            ecosystems = %info.keys().cloned().collect::<Vec<_>>().join(","),
            records = info.values().map(|i| i.records).sum::<usize>(),
            skipped = info.values().map(|i| i.skipped).sum::<usize>(),
            memory_bytes = info.values().map(|i| i.memory_bytes).sum::<u64>(),
            updated_at = loaded.updated_at.as_deref().unwrap_or("unknown"),
            "vulnerability data loaded"
        );
        data.set(loaded);
    }
    if let Some(message) = pass.failure {
        tracing::warn!(%source, error = %message, "vulnerability data did not load; the data loaded before (if any) stays in use");
        data.fail(message);
    }
}

/// Keeps `data` current from `source` until `shutdown` turns true: loads once now, then every
/// `refresh`. New data is set only when its version changed; a failure is set with
/// [`VulnerabilityData::fail`] (the data loaded before stays in use), and the next success clears
/// it. URL and OCI sources download into `cache` (keep it on a persistent volume so a restart
/// does not download again); archives are loaded within `limits`. `oci` is how an OCI source
/// reaches its registry ([`OciFetcher`]); without it an OCI source fails with a message saying so.
pub async fn run(
    source: Source,
    data: Arc<VulnerabilityData>,
    refresh: Duration,
    cache: PathBuf,
    limits: Limits,
    oci: Option<OciFetcher>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut loader = match Loader::new(source.clone(), cache, limits, oci) {
        Ok(loader) => loader,
        Err(message) => {
            tracing::error!(%source, error = %message, "cannot read vulnerability data");
            data.fail(message);
            return;
        }
    };
    let mut retry = RETRY_FIRST;
    loop {
        let force = matches!(data.state(), State::Failed { .. });
        tokio::select! {
            pass = loader.pass(force) => apply(&data, &source, pass),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        // A failed pass is tried again soon (30 s, doubling up to the refresh interval): a pod
        // that starts while its source is briefly away is not left without data for an hour.
        let wait = match data.state() {
            State::Failed { .. } => {
                let wait = retry.min(refresh);
                retry = (retry * 2).min(refresh);
                wait
            }
            _ => {
                retry = RETRY_FIRST;
                refresh
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// The first retry after a failed pass.
const RETRY_FIRST: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        io::Write,
        sync::{
            Mutex,
            atomic::{AtomicBool, Ordering},
        },
    };

    use axum::{
        body::Body,
        extract::{Request, State as AxumState},
        response::{IntoResponse, Response},
    };

    use super::*;
    use crate::registry::sha256_digest;

    /// Entries stored, not deflated, so two archives of equally long records are equally long.
    fn zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, body) in entries {
            w.start_file(name.as_str(), options).unwrap();
            w.write_all(body).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    /// An archive of one record per id, each naming package `pkg` in `ecosystem`.
    fn archive(ecosystem: &str, ids: &[&str]) -> Vec<u8> {
        let entries: Vec<(String, Vec<u8>)> = ids
            .iter()
            .map(|id| {
                let record = serde_json::json!({
                    "id": id,
                    "modified": "2024-01-01T00:00:00Z",
                    "affected": [{
                        "package": { "ecosystem": ecosystem, "name": "pkg" },
                        "ranges": [{ "type": "ECOSYSTEM", "events": [{ "introduced": "0" }, { "fixed": "1.0.0" }] }]
                    }]
                });
                (format!("{id}.json"), record.to_string().into_bytes())
            })
            .collect();
        zip(&entries)
    }

    fn put(dir: &Path, ecosystem: &str, bytes: &[u8]) {
        std::fs::create_dir_all(dir.join(ecosystem)).unwrap();
        std::fs::write(dir.join(ecosystem).join(ARCHIVE), bytes).unwrap();
    }

    fn ecosystems(loaded: &Loaded) -> Vec<&str> {
        loaded.db.info().keys().map(String::as_str).collect()
    }

    fn loader(source: Source, cache: &Path) -> Loader {
        Loader::new(source, cache.to_path_buf(), Limits::default(), None).unwrap()
    }

    #[test]
    fn parse_reads_each_form() {
        assert_eq!(parse("/var/lib/osv", &[]), Ok(Source::Dir("/var/lib/osv".into())));
        assert_eq!(parse(" data ", &[]), Ok(Source::Dir("data".into())));
        let asked = ["Red Hat".to_string(), "Debian".into(), "Debian".into(), "crates.io".into()];
        assert_eq!(
            parse("https://osv-vulnerabilities.storage.googleapis.com", &asked),
            Ok(Source::Url {
                base: Url::parse("https://osv-vulnerabilities.storage.googleapis.com/").unwrap(),
                ecosystems: vec!["Debian".into(), "Red Hat".into(), "crates.io".into()],
            })
        );
        let Ok(Source::Url { base, ecosystems }) = parse("HTTP://mirror.local:8080/osv/", &[]) else { panic!() };
        assert_eq!(base.as_str(), "http://mirror.local:8080/osv/");
        assert_eq!(ecosystems.len(), DEFAULT_ECOSYSTEMS.len(), "no list: the ecosystems berth reports");
        assert!(ecosystems.iter().any(|e| e == "Debian") && ecosystems.iter().any(|e| e == "Red Hat"));
        let oci = |registry: &str, repository: &str, reference: &str| {
            Ok(Source::Oci { registry: registry.into(), repository: repository.into(), reference: reference.into() })
        };
        assert_eq!(parse("oci://airgap/security/osv", &[]), oci("airgap", "security/osv", "latest"));
        assert_eq!(parse("oci://airgap/security/osv:2024-10-01", &[]), oci("airgap", "security/osv", "2024-10-01"));
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(parse(&format!("oci://air.gap/osv@{digest}"), &[]), oci("air.gap", "osv", &digest));
    }

    #[test]
    fn parse_says_what_is_wrong() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let cases: &[(&str, &[&str], &str)] = &[
            ("", &[], "is empty"),
            ("   ", &[], "is empty"),
            ("gs://osv-vulnerabilities", &[], "https://osv-vulnerabilities.storage.googleapis.com"),
            ("ftp://mirror/osv", &[], "ftp:// is not a vulnerability data source"),
            ("oci:airgap/osv", &[], "oci://<registry>/<repository>"),
            ("oci://", &[], "no repository"),
            ("oci://airgap", &[], "no repository"),
            ("oci://AirGap/osv", &[], "not the name of a Registry object"),
            ("oci://airgap/", &[], "not a repository path"),
            ("oci://airgap/OSV", &[], "not a repository path"),
            ("oci://airgap/osv:", &[], "not a tag"),
            ("oci://airgap/osv:-x", &[], "not a tag"),
            ("oci://airgap/osv@sha256:abc", &[], "not a digest"),
            ("oci://airgap/osv@sha512:abc", &[], "not a digest"),
            (&format!("oci://airgap/osv:v1@{digest}"), &[], "not both"),
            ("https://", &[], "does not parse"),
            ("https://mirror/osv?x=1", &[], "no query or fragment"),
            ("https://mirror/osv#top", &[], "no query or fragment"),
            ("https://mirror/osv", &["../etc"], "not an ecosystem name"),
            ("https://mirror/osv", &["Debian/12"], "not an ecosystem name"),
            ("https://mirror/osv", &[" "], "not an ecosystem name"),
        ];
        for (input, ecosystems, expected) in cases {
            let ecosystems: Vec<String> = ecosystems.iter().map(|e| e.to_string()).collect();
            let err = parse(input, &ecosystems).unwrap_err();
            assert!(err.contains(expected), "{input:?}: {err:?} should say {expected:?}");
        }
    }

    #[test]
    fn credentials_in_a_url_are_never_shown() {
        let source = parse("https://berth:s3cret@mirror.local/osv", &["npm".into()]).unwrap();
        assert_eq!(source.to_string(), "https://mirror.local/osv");
        let err = parse("https://berth:s3cret@mirror.local/osv?token=x", &[]).unwrap_err();
        assert!(!err.contains("s3cret") && err.contains("mirror.local"), "{err}");
        let digest = format!("sha256:{}", "0".repeat(64));
        let oci = Source::Oci { registry: "airgap".into(), repository: "osv".into(), reference: digest.clone() };
        assert_eq!(oci.to_string(), format!("oci://airgap/osv@{digest}"));
    }

    #[test]
    fn archive_urls_encode_the_ecosystem_as_one_segment() {
        for base in ["https://mirror.local/osv", "https://mirror.local/osv/"] {
            let base = Url::parse(base).unwrap();
            assert_eq!(archive_url(&base, "Red Hat").as_str(), "https://mirror.local/osv/Red%20Hat/all.zip");
            assert_eq!(archive_url(&base, "crates.io").as_str(), "https://mirror.local/osv/crates.io/all.zip");
        }
        let root = Url::parse("https://osv-vulnerabilities.storage.googleapis.com").unwrap();
        assert_eq!(archive_url(&root, "Go").as_str(), "https://osv-vulnerabilities.storage.googleapis.com/Go/all.zip");
        assert_eq!(archive_url(&root, "a?b#c").path(), "/a%3Fb%23c/all.zip");
    }

    #[test]
    fn the_version_names_the_bytes_wherever_they_are() {
        let npm = archive("npm", &["GHSA-1", "GHSA-2"]);
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        put(a.path(), "npm", &npm);
        put(b.path(), "npm", &npm);
        let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        std::fs::File::options().write(true).open(b.path().join("npm/all.zip")).unwrap().set_modified(old).unwrap();
        let version = load_dir(a.path(), &Limits::default()).unwrap().version;
        assert!(version.starts_with("sha256:") && version.len() == 71, "{version}");
        assert_eq!(load_dir(b.path(), &Limits::default()).unwrap().version, version, "elsewhere, another mtime");
        assert_eq!(load_dir(a.path(), &Limits::default()).unwrap().version, version, "again");
        assert_eq!(
            version,
            super::version(&BTreeMap::from([("npm".to_string(), sha256_digest(&npm))])),
            "names and archive digests"
        );

        put(b.path(), "npm", &archive("npm", &["GHSA-1", "GHSA-3"]));
        assert_ne!(load_dir(b.path(), &Limits::default()).unwrap().version, version, "other bytes");
        let c = tempfile::tempdir().unwrap();
        put(c.path(), "PyPI", &npm);
        assert_ne!(load_dir(c.path(), &Limits::default()).unwrap().version, version, "the same bytes, another name");
        put(a.path(), "PyPI", &archive("PyPI", &["PYSEC-1"]));
        assert_ne!(load_dir(a.path(), &Limits::default()).unwrap().version, version, "one more archive");
    }

    #[test]
    fn real_osv_archives_load_with_a_stable_version() {
        let data = crate::scanning::test_data_dir().join("osv-db");
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for ecosystem in ["Debian", "npm"] {
            let bytes = std::fs::read(data.join(ecosystem).join(ARCHIVE)).unwrap();
            put(a.path(), ecosystem, &bytes);
            put(b.path(), ecosystem, &bytes);
        }
        let loaded = load_dir(a.path(), &Limits::default()).unwrap();
        assert_eq!(ecosystems(&loaded), ["Debian", "npm"]);
        assert!(loaded.db.info()["Debian"].records > 200, "{:?}", loaded.db.info()["Debian"]);
        assert!(!loaded.db.candidates("npm", "lodash").is_empty());
        assert!(loaded.updated_at.is_some());
        assert_eq!(loaded.source, a.path().display().to_string());
        assert_eq!(load_dir(b.path(), &Limits::default()).unwrap().version, loaded.version);
    }

    #[test]
    fn a_folder_over_the_memory_budget_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "npm", &archive("npm", &["GHSA-1", "GHSA-2", "GHSA-3"]));
        let small = Limits { max_total_bytes: 200, ..Limits::default() };
        let err = load_dir(dir.path(), &small).unwrap_err();
        assert!(err.contains("budget"), "{err}");
        let err = load_dir(&dir.path().join("missing"), &Limits::default()).unwrap_err();
        assert!(err.contains("missing"), "{err}");
        let err = load_dir(tempfile::tempdir().unwrap().path(), &Limits::default()).unwrap_err();
        assert!(err.contains("no vulnerability data"), "{err}");
    }

    #[tokio::test]
    async fn a_folder_is_read_again_only_when_its_archives_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("npm/all.zip");
        put(dir.path(), "npm", &archive("npm", &["GHSA-1"]));
        let mut loader = loader(Source::Dir(dir.path().into()), Path::new("/nonexistent"));
        let first = loader.pass(false).await;
        assert!(first.failure.is_none(), "{:?}", first.failure);
        let v1 = first.loaded.unwrap().version;
        assert_eq!(loader.loads, 1);

        let again = loader.pass(false).await;
        assert!(again.loaded.is_none() && again.failure.is_none());
        assert_eq!(loader.loads, 1, "unchanged: not read");

        // Touched, same bytes: read again, but the data is the same, so nothing new.
        let later = std::fs::metadata(&path).unwrap().modified().unwrap() + Duration::from_secs(5);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        let touched = loader.pass(false).await;
        assert!(touched.loaded.is_none() && touched.failure.is_none());
        assert_eq!(loader.loads, 2);

        put(dir.path(), "npm", &archive("npm", &["GHSA-1", "GHSA-2"]));
        let v2 = loader.pass(false).await.loaded.unwrap().version;
        assert_ne!(v2, v1);

        put(dir.path(), "PyPI", &archive("PyPI", &["PYSEC-1"]));
        let both = loader.pass(false).await.loaded.unwrap();
        assert_eq!(ecosystems(&both), ["PyPI", "npm"]);
        assert_eq!(loader.loads, 4);

        let forced = loader.pass(true).await;
        assert_eq!(forced.loaded.unwrap().version, both.version, "forced: handed out again, unchanged");
    }

    #[tokio::test]
    async fn a_copy_keeping_size_and_mtime_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("npm/all.zip");
        let (one, two) = (archive("npm", &["GHSA-1"]), archive("npm", &["GHSA-2"]));
        assert_eq!(one.len(), two.len());
        put(dir.path(), "npm", &one);
        let mut loader = loader(Source::Dir(dir.path().into()), Path::new("/nonexistent"));
        let v1 = loader.pass(false).await.loaded.unwrap().version;
        let before = std::fs::metadata(&path).unwrap();
        // `cp -p` or rsync: new bytes under the old size and mtime, renamed into place.
        let tmp = dir.path().join("npm/new");
        std::fs::write(&tmp, &two).unwrap();
        std::fs::File::options().write(true).open(&tmp).unwrap().set_modified(before.modified().unwrap()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!((after.len(), after.modified().unwrap()), (before.len(), before.modified().unwrap()));
        let v2 = loader.pass(false).await.loaded.expect("the new bytes are loaded").version;
        assert_ne!(v1, v2);
    }

    #[tokio::test]
    async fn a_broken_folder_fails_and_is_read_again_once_fixed() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "npm", b"not a zip");
        let mut loader = loader(Source::Dir(dir.path().into()), Path::new("/nonexistent"));
        let pass = loader.pass(false).await;
        assert!(pass.loaded.is_none());
        assert!(
            pass.failure.as_deref().unwrap().contains("npm/all.zip is not a readable zip archive"),
            "{:?}",
            pass.failure
        );
        put(dir.path(), "npm", &archive("npm", &["GHSA-1"]));
        let pass = loader.pass(false).await;
        assert!(pass.failure.is_none() && pass.loaded.is_some());
    }

    #[tokio::test]
    async fn run_loads_follows_changes_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "npm", &archive("npm", &["GHSA-1"]));
        let data = Arc::new(VulnerabilityData::new(true));
        let mut states = data.subscribe();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(run(
            Source::Dir(dir.path().into()),
            data.clone(),
            Duration::from_millis(20),
            PathBuf::from("/nonexistent"),
            Limits::default(),
            None,
            shutdown,
        ));
        let wait = |states: &mut watch::Receiver<State>, f: fn(&State) -> bool| {
            let mut states = states.clone();
            async move { tokio::time::timeout(Duration::from_secs(20), states.wait_for(f)).await.unwrap().unwrap().clone() }
        };
        let State::Ready(v1) = wait(&mut states, |s| matches!(s, State::Ready(_))).await else { unreachable!() };
        put(dir.path(), "npm", b"broken");
        let failed = wait(&mut states, |s| matches!(s, State::Failed { .. })).await;
        assert!(matches!(&failed, State::Failed { previous: Some(p), .. } if p.version == v1.version));
        assert_eq!(data.current().unwrap().version, v1.version, "the earlier data stays in use");
        put(dir.path(), "npm", &archive("npm", &["GHSA-1", "GHSA-2"]));
        let State::Ready(v2) = wait(&mut states, |s| matches!(s, State::Ready(_))).await else { unreachable!() };
        assert_ne!(v2.version, v1.version);
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("run stops on shutdown").unwrap();
    }

    #[tokio::test]
    async fn an_oci_source_without_registries_says_so() {
        let data = Arc::new(VulnerabilityData::new(true));
        let (_stop, shutdown) = watch::channel(false);
        let source = parse("oci://airgap/osv", &[]).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let task = tokio::spawn(run(
            source,
            data.clone(),
            Duration::from_secs(3600),
            cache.path().into(),
            Limits::default(),
            None,
            shutdown,
        ));
        let mut states = data.subscribe();
        tokio::time::timeout(Duration::from_secs(10), states.wait_for(|s| matches!(s, State::Failed { .. })))
            .await
            .unwrap()
            .unwrap();
        let err = data.current().unwrap_err();
        assert!(err.contains("oci://airgap/osv:latest") && err.contains("registries"), "{err}");
        task.abort();
    }

    // --- A URL source against a local HTTP server. ---

    #[derive(Clone)]
    struct Served {
        body: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
        /// Without Content-Length.
        chunked: bool,
    }

    #[derive(Clone, Debug)]
    struct Seen {
        path: String,
        if_none_match: Option<String>,
        if_modified_since: Option<String>,
        status: u16,
    }

    /// Serves `all.zip` archives by raw request path, answering conditional requests as a
    /// bucket does, and records what it was asked.
    #[derive(Default)]
    struct Mirror {
        files: Mutex<HashMap<String, Served>>,
        seen: Mutex<Vec<Seen>>,
        /// Answers 503 to everything.
        broken: AtomicBool,
    }

    impl Mirror {
        fn serve(&self, ecosystem: &str, body: Vec<u8>, etag: Option<&str>, last_modified: Option<&str>) {
            let path = format!("/osv/{}/all.zip", ecosystem.replace(' ', "%20"));
            let served = Served {
                body,
                etag: etag.map(str::to_string),
                last_modified: last_modified.map(str::to_string),
                chunked: false,
            };
            self.files.lock().unwrap().insert(path, served);
        }

        fn chunked(&self, ecosystem: &str) {
            self.files.lock().unwrap().get_mut(&format!("/osv/{ecosystem}/all.zip")).unwrap().chunked = true;
        }

        fn remove(&self, ecosystem: &str) {
            self.files.lock().unwrap().remove(&format!("/osv/{ecosystem}/all.zip"));
        }

        /// What was asked since the last call.
        fn take(&self) -> Vec<Seen> {
            std::mem::take(&mut self.seen.lock().unwrap())
        }
    }

    async fn answer(AxumState(mirror): AxumState<Arc<Mirror>>, request: Request) -> Response {
        use axum::http::StatusCode as S;
        let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut seen = Seen {
            path: request.uri().path().to_string(),
            if_none_match: header(header::IF_NONE_MATCH),
            if_modified_since: header(header::IF_MODIFIED_SINCE),
            status: 0,
        };
        let file = mirror.files.lock().unwrap().get(&seen.path).cloned();
        let response = if mirror.broken.load(Ordering::SeqCst) {
            S::SERVICE_UNAVAILABLE.into_response()
        } else if let Some(file) = file {
            let unchanged = match (&seen.if_none_match, &file.etag) {
                (Some(asked), Some(etag)) => asked == etag,
                (Some(_), None) => false,
                (None, _) => seen.if_modified_since.is_some() && seen.if_modified_since == file.last_modified,
            };
            let mut response = if unchanged {
                S::NOT_MODIFIED.into_response()
            } else if file.chunked {
                let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                    file.body.chunks(512).map(|c| Ok(c.to_vec())).collect();
                Body::from_stream(futures::stream::iter(chunks)).into_response()
            } else {
                Body::from(file.body.clone()).into_response()
            };
            for (name, value) in [(header::ETAG, &file.etag), (header::LAST_MODIFIED, &file.last_modified)] {
                if let Some(value) = value {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
            }
            response
        } else {
            S::NOT_FOUND.into_response()
        };
        seen.status = response.status().as_u16();
        mirror.seen.lock().unwrap().push(seen);
        response
    }

    /// Starts the mirror; returns the base URL of its OSV layout.
    async fn start(mirror: Arc<Mirror>) -> Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(answer).with_state(mirror);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Url::parse(&format!("http://{addr}/osv")).unwrap()
    }

    fn url_source(base: &Url, ecosystems: &[&str]) -> Source {
        let ecosystems: Vec<String> = ecosystems.iter().map(|e| e.to_string()).collect();
        parse(base.as_str(), &ecosystems).unwrap()
    }

    fn cached(cache: &Path, ecosystem: &str) -> Cached {
        serde_json::from_slice(&std::fs::read(cache.join(ecosystem).join(CACHED)).unwrap()).unwrap()
    }

    const MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

    #[tokio::test]
    async fn a_url_source_downloads_once_then_asks_with_its_validators() {
        let mirror = Arc::new(Mirror::default());
        mirror.serve("npm", archive("npm", &["GHSA-1"]), Some("\"v1\""), Some(MODIFIED));
        mirror.serve("Red Hat", archive("Red Hat", &["RHSA-1"]), None, Some(MODIFIED));
        let base = start(mirror.clone()).await;
        let cache = tempfile::tempdir().unwrap();
        let mut loader = loader(url_source(&base, &["npm", "Red Hat"]), cache.path());

        let first = loader.pass(false).await;
        assert!(first.failure.is_none(), "{:?}", first.failure);
        let v1 = first.loaded.unwrap();
        assert_eq!(ecosystems(&v1), ["Red Hat", "npm"]);
        assert_eq!(v1.source, base.as_str());
        let seen = mirror.take();
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["/osv/Red%20Hat/all.zip", "/osv/npm/all.zip"]);
        assert!(seen.iter().all(|s| s.if_none_match.is_none() && s.if_modified_since.is_none() && s.status == 200));
        assert_eq!(std::fs::read(cache.path().join("npm/all.zip")).unwrap(), archive("npm", &["GHSA-1"]));
        let npm = cached(cache.path(), "npm");
        assert_eq!((npm.etag.as_deref(), npm.last_modified.as_deref()), (Some("\"v1\""), Some(MODIFIED)));
        assert_eq!(npm.digest, sha256_digest(&archive("npm", &["GHSA-1"])));
        assert!(!cache.path().join("npm").join(PARTIAL).exists());

        // Unchanged: 304s, the archives are not rewritten, nothing is read again.
        let before = std::fs::metadata(cache.path().join("npm/all.zip")).unwrap();
        let again = loader.pass(false).await;
        assert!(again.loaded.is_none() && again.failure.is_none(), "{:?}", again.failure);
        let seen = mirror.take();
        assert_eq!(seen[0].if_none_match, None, "Red Hat gave no ETag");
        assert_eq!(seen[0].if_modified_since.as_deref(), Some(MODIFIED));
        assert_eq!(seen[1].if_none_match.as_deref(), Some("\"v1\""));
        assert_eq!(seen[1].if_modified_since.as_deref(), Some(MODIFIED));
        assert!(seen.iter().all(|s| s.status == 304), "{seen:?}");
        let after = std::fs::metadata(cache.path().join("npm/all.zip")).unwrap();
        assert_eq!(
            (after.ino(), after.mtime(), after.mtime_nsec()),
            (before.ino(), before.mtime(), before.mtime_nsec())
        );
        assert_eq!(loader.loads, 1);

        // A new ETag and new bytes: downloaded, and a new version.
        mirror.serve("npm", archive("npm", &["GHSA-1", "GHSA-2"]), Some("\"v2\""), Some(MODIFIED));
        let changed = loader.pass(false).await;
        let v2 = changed.loaded.expect("the new archive is loaded");
        assert_ne!(v2.version, v1.version);
        assert_eq!(v2.db.info()["npm"].records, 2);
        assert_eq!(cached(cache.path(), "npm").etag.as_deref(), Some("\"v2\""));
        assert_eq!(mirror.take().iter().map(|s| s.status).collect::<Vec<_>>(), [304, 200]);

        // A restart with the cache kept: conditional requests only, the same version.
        let mut restarted = super::tests::loader(url_source(&base, &["npm", "Red Hat"]), cache.path());
        let pass = restarted.pass(false).await;
        assert_eq!(pass.loaded.expect("loaded from the cache").version, v2.version);
        assert!(mirror.take().iter().all(|s| s.status == 304));
    }

    #[tokio::test]
    async fn the_same_bytes_under_a_new_etag_are_not_read_again() {
        let mirror = Arc::new(Mirror::default());
        let npm = archive("npm", &["GHSA-1"]);
        mirror.serve("npm", npm.clone(), Some("\"a\""), None);
        let base = start(mirror.clone()).await;
        let cache = tempfile::tempdir().unwrap();
        let mut loader = loader(url_source(&base, &["npm"]), cache.path());
        assert!(loader.pass(false).await.loaded.is_some());
        let before = std::fs::metadata(cache.path().join("npm/all.zip")).unwrap();
        mirror.serve("npm", npm, Some("\"b\""), None);
        let pass = loader.pass(false).await;
        assert!(pass.loaded.is_none() && pass.failure.is_none());
        assert_eq!(mirror.take().last().unwrap().status, 200);
        let after = std::fs::metadata(cache.path().join("npm/all.zip")).unwrap();
        assert_eq!(after.ino(), before.ino(), "not replaced");
        assert_eq!(loader.loads, 1, "not read again");
        assert_eq!(cached(cache.path(), "npm").etag.as_deref(), Some("\"b\""), "the new validators are kept");
    }

    #[tokio::test]
    async fn a_missing_ecosystem_is_reported_and_the_others_load() {
        let mirror = Arc::new(Mirror::default());
        mirror.serve("npm", archive("npm", &["GHSA-1"]), Some("\"1\""), None);
        mirror.serve("PyPI", archive("PyPI", &["PYSEC-1"]), Some("\"1\""), None);
        let base = start(mirror.clone()).await;
        let cache = tempfile::tempdir().unwrap();
        let mut loader = loader(url_source(&base, &["Debian", "PyPI", "npm"]), cache.path());
        let pass = loader.pass(false).await;
        assert!(pass.failure.is_none(), "{:?}", pass.failure);
        assert_eq!(ecosystems(&pass.loaded.unwrap()), ["PyPI", "npm"]);
        assert!(!cache.path().join("Debian").exists());

        // Gone from the server: the copy from before stays in use (nothing changed: no reload).
        mirror.remove("PyPI");
        let pass = loader.pass(false).await;
        assert!(pass.failure.is_none(), "{:?}", pass.failure);
        assert!(cache.path().join("PyPI").join("all.zip").exists(), "the copy from before stays");

        // None at all is an error, and names what was asked.
        mirror.remove("npm");
        let pass = loader.pass(false).await;
        assert!(pass.loaded.is_none());
        let failure = pass.failure.unwrap();
        assert!(failure.contains("no vulnerability data could be downloaded"), "{failure}");
        assert!(failure.contains("/osv/Debian/all.zip: 404"), "{failure}");
    }

    #[tokio::test]
    async fn ecosystems_no_longer_asked_for_leave_the_cache() {
        let mirror = Arc::new(Mirror::default());
        mirror.serve("npm", archive("npm", &["GHSA-1"]), Some("\"1\""), None);
        mirror.serve("PyPI", archive("PyPI", &["PYSEC-1"]), Some("\"1\""), None);
        let base = start(mirror.clone()).await;
        let cache = tempfile::tempdir().unwrap();
        std::fs::create_dir(cache.path().join("lost+found")).unwrap();
        assert!(loader(url_source(&base, &["PyPI", "npm"]), cache.path()).pass(false).await.loaded.is_some());
        let pass = loader(url_source(&base, &["npm"]), cache.path()).pass(false).await;
        assert_eq!(ecosystems(&pass.loaded.unwrap()), ["npm"]);
        assert!(!cache.path().join("PyPI").exists());
        assert!(cache.path().join("lost+found").exists(), "folders berth did not write stay");
    }

    #[tokio::test]
    async fn an_archive_over_the_download_limit_is_refused() {
        let mirror = Arc::new(Mirror::default());
        let small = archive("npm", &["GHSA-1"]);
        mirror.serve("npm", small.clone(), Some("\"small\""), None);
        let base = start(mirror.clone()).await;
        let cache = tempfile::tempdir().unwrap();
        let mut loader = loader(url_source(&base, &["npm"]), cache.path());
        loader.max_download_bytes = small.len() as u64 + 100;
        let v1 = loader.pass(false).await.loaded.unwrap().version;

        let big = archive("npm", &["GHSA-1", "GHSA-2", "GHSA-3", "GHSA-4"]);
        assert!(big.len() as u64 > loader.max_download_bytes);
        for chunked in [false, true] {
            mirror.serve("npm", big.clone(), Some("\"big\""), None);
            if chunked {
                mirror.chunked("npm");
            }
            let pass = loader.pass(false).await;
            assert!(pass.loaded.is_none());
            let failure = pass.failure.unwrap();
            assert!(failure.contains("larger than the download limit"), "chunked {chunked}: {failure}");
            assert!(failure.contains("stays in use"), "{failure}");
            assert!(!cache.path().join("npm").join(PARTIAL).exists(), "the partial download is removed");
            assert_eq!(std::fs::read(cache.path().join("npm/all.zip")).unwrap(), small, "the earlier copy is kept");
        }
        loader.max_download_bytes = MAX_DOWNLOAD_BYTES;
        let pass = loader.pass(false).await;
        assert_ne!(pass.loaded.unwrap().version, v1);
    }

    #[tokio::test]
    async fn a_failing_server_keeps_the_earlier_data_until_it_answers_again() {
        let mirror = Arc::new(Mirror::default());
        mirror.serve("npm", archive("npm", &["GHSA-1"]), Some("\"1\""), None);
        let base = start(mirror.clone()).await;
        let source = url_source(&base, &["npm"]);
        let cache = tempfile::tempdir().unwrap();
        let data = VulnerabilityData::new(true);
        let mut loader = loader(source.clone(), cache.path());
        apply(&data, &source, loader.pass(false).await);
        let v1 = data.current().unwrap().version.clone();

        mirror.broken.store(true, Ordering::SeqCst);
        apply(&data, &source, loader.pass(false).await);
        assert_eq!(data.current().unwrap().version, v1, "the earlier data stays in use");
        let State::Failed { message, .. } = data.state() else { panic!("the failure is reported") };
        assert!(message.contains("503 Service Unavailable") && message.contains("stays in use"), "{message}");
        assert!(!message.contains("s3cret"));

        // A restart while the server is down: the cache serves, and the failure is reported.
        let restarted_data = VulnerabilityData::new(true);
        let mut restarted = super::tests::loader(source.clone(), cache.path());
        apply(&restarted_data, &source, restarted.pass(false).await);
        assert_eq!(restarted_data.current().unwrap().version, v1);
        assert!(matches!(restarted_data.state(), State::Failed { .. }));

        // Answering again (304): the failure clears, with the same data.
        mirror.broken.store(false, Ordering::SeqCst);
        let force = matches!(data.state(), State::Failed { .. });
        apply(&data, &source, loader.pass(force).await);
        assert!(matches!(data.state(), State::Ready(ref loaded) if loaded.version == v1), "{:?}", data.state());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_naming_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let source = parse(&format!("http://berth:s3cret@{addr}/osv"), &["npm".into()]).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let pass = loader(source, cache.path()).pass(false).await;
        let failure = pass.failure.unwrap();
        assert!(failure.contains(&format!("http://{addr}/osv/npm/all.zip")), "{failure}");
        assert!(failure.to_lowercase().contains("connect"), "the cause is given: {failure}");
        assert!(!failure.contains("s3cret"), "{failure}");
    }

    #[tokio::test]
    async fn a_cached_archive_that_changed_on_disk_is_downloaded_again() {
        let mirror = Arc::new(Mirror::default());
        let npm = archive("npm", &["GHSA-1"]);
        mirror.serve("npm", npm.clone(), Some("\"1\""), None);
        let base = start(mirror.clone()).await;
        let cache = tempfile::tempdir().unwrap();
        let mut loader = loader(url_source(&base, &["npm"]), cache.path());
        let v1 = loader.pass(false).await.loaded.unwrap().version;
        mirror.take();

        std::fs::write(cache.path().join("npm/all.zip"), archive("npm", &["GHSA-9", "GHSA-10"])).unwrap();
        let pass = loader.pass(false).await;
        assert!(pass.failure.as_deref().unwrap().contains("do not match"), "{:?}", pass.failure);
        assert!(pass.loaded.is_none());

        let pass = loader.pass(true).await;
        assert!(pass.failure.is_none(), "{:?}", pass.failure);
        assert_eq!(pass.loaded.unwrap().version, v1);
        let seen = mirror.take();
        assert_eq!((seen[1].if_none_match.as_deref(), seen[1].status), (None, 200), "asked without validators");
        assert_eq!(std::fs::read(cache.path().join("npm/all.zip")).unwrap(), npm);
    }

    // The OCI source against a real registry: tests/image_scans.rs.

    #[test]
    fn artifact_archives_are_the_layers_titled_ecosystem_all_zip() {
        let layer = |title: Option<&str>, digest: &str| {
            let mut layer = serde_json::json!({ "mediaType": "application/zip", "digest": digest, "size": 10 });
            if let Some(title) = title {
                layer["annotations"] = serde_json::json!({ TITLE: title });
            }
            layer
        };
        let manifest =
            |layers: Vec<serde_json::Value>| serde_json::to_vec(&serde_json::json!({ "layers": layers })).unwrap();
        let (a, b) = (format!("sha256:{}", "a".repeat(64)), format!("sha256:{}", "b".repeat(64)));
        let found = artifact_archives(&manifest(vec![
            layer(Some("Debian/all.zip"), &a),
            layer(Some("README.md"), &b),
            layer(None, &b),
            layer(Some("Red Hat/all.zip"), &b),
        ]))
        .unwrap();
        assert_eq!(
            found,
            [
                ArtifactArchive { ecosystem: "Debian".into(), digest: a.clone(), size: 10 },
                ArtifactArchive { ecosystem: "Red Hat".into(), digest: b.clone(), size: 10 },
            ]
        );
        let refused = [
            (manifest(vec![layer(Some("README.md"), &a)]), "no layer is titled"),
            (manifest(vec![]), "no layer is titled"),
            (manifest(vec![layer(Some("../all.zip"), &a)]), "not an ecosystem name"),
            (manifest(vec![layer(Some("osv/Debian/all.zip"), &a)]), "not an ecosystem name"),
            (manifest(vec![layer(Some("Go/all.zip"), "sha256:../../x")]), "not sha256:<hex>"),
            (manifest(vec![layer(Some("Go/all.zip"), &a), layer(Some("Go/all.zip"), &b)]), "two layers"),
            (b"<html>".to_vec(), "not an OCI image manifest"),
        ];
        for (body, expected) in refused {
            let err = artifact_archives(&body).unwrap_err();
            assert!(err.contains(expected), "{err:?} should say {expected:?}");
        }
    }
}
