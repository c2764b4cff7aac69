//! Small OCI image layouts for tests to push with skopeo: real gzip-tar layers, configs and
//! manifests, so the registry stores exactly what a build tool would have sent. Distinct seeds
//! give distinct digests; the same seed gives the same digest (nothing depends on the clock:
//! `created` is 1970, as reproducible builds write it).

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::skopeo::hex;

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A descriptor of a blob written to the layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: &'static str,
    pub digest: String,
    pub size: usize,
}

/// An OCI image layout directory. Each `add_*` call writes the blobs and tags the result in
/// `index.json`, so one layout can hold several tags.
pub struct OciLayout {
    dir: tempfile::TempDir,
    tagged: Vec<(String, Descriptor)>,
}

impl Default for OciLayout {
    fn default() -> Self {
        let dir = tempfile::Builder::new().prefix("berth-oci-").tempdir().expect("OCI layout temp dir");
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(dir.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let layout = OciLayout { dir, tagged: Vec::new() };
        layout.write_index();
        layout
    }
}

impl OciLayout {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a single-platform (linux/amd64) image whose one layer holds `seed`, tags it `tag`
    /// in the layout and returns its manifest descriptor (the digest the registry will report).
    pub fn add_image(&mut self, tag: &str, seed: &str) -> Descriptor {
        let manifest = self.write_image(seed, "amd64");
        self.tag(tag, manifest)
    }

    /// Writes a multi-arch index with one image per architecture (each with content from `seed`
    /// and the architecture), tags it and returns the index descriptor and the child manifests.
    pub fn add_index(&mut self, tag: &str, seed: &str, architectures: &[&str]) -> (Descriptor, Vec<Descriptor>) {
        let children: Vec<Descriptor> =
            architectures.iter().map(|a| self.write_image(&format!("{seed}/{a}"), a)).collect();
        let manifests: Vec<Value> = children
            .iter()
            .zip(architectures)
            .map(|(d, arch)| {
                json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size,
                       "platform": {"architecture": arch, "os": "linux"}})
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests});
        let desc = self.write_blob(INDEX, &serde_json::to_vec(&index).unwrap());
        (self.tag(tag, desc), children)
    }

    /// Writes a runnable linux/amd64 image: one layer with `entries`, the config's `Cmd` and
    /// `Env`, as a build tool would. Tags it and returns the manifest descriptor.
    pub fn add_runnable(&mut self, tag: &str, entries: &[Entry], cmd: &[&str], user: Option<&str>) -> Descriptor {
        let tar = tar_with_entries(entries);
        let diff_id = format!("sha256:{}", hex(&Sha256::digest(&tar)));
        let layer = self.write_blob(LAYER, &gzip(&tar));
        let mut config = json!({
            "Cmd": cmd,
            "Env": ["PATH=/bin"],
        });
        if let Some(user) = user {
            config["User"] = json!(user);
        }
        let config = json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let config = self.write_blob(CONFIG, &serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
        });
        let desc = self.write_blob(MANIFEST, &serde_json::to_vec(&manifest).unwrap());
        self.tag(tag, desc)
    }

    fn write_image(&self, seed: &str, arch: &str) -> Descriptor {
        let tar = tar_with_file("berth-test.txt", seed.as_bytes());
        let diff_id = format!("sha256:{}", hex(&Sha256::digest(&tar)));
        let layer = self.write_blob(LAYER, &gzip(&tar));
        let config = json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": {"dev.berth.test.seed": seed}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let config = self.write_blob(CONFIG, &serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
        });
        self.write_blob(MANIFEST, &serde_json::to_vec(&manifest).unwrap())
    }

    fn write_blob(&self, media_type: &'static str, bytes: &[u8]) -> Descriptor {
        let hex_digest = hex(&Sha256::digest(bytes));
        std::fs::write(self.blob_path(&hex_digest), bytes).unwrap();
        Descriptor { media_type, digest: format!("sha256:{hex_digest}"), size: bytes.len() }
    }

    fn blob_path(&self, hex_digest: &str) -> PathBuf {
        self.dir.path().join("blobs/sha256").join(hex_digest)
    }

    fn tag(&mut self, tag: &str, desc: Descriptor) -> Descriptor {
        self.tagged.retain(|(t, _)| t != tag);
        self.tagged.push((tag.to_string(), desc.clone()));
        self.write_index();
        desc
    }

    fn write_index(&self) {
        let manifests: Vec<Value> = self
            .tagged
            .iter()
            .map(|(tag, d)| {
                json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size,
                       "annotations": {"org.opencontainers.image.ref.name": tag}})
            })
            .collect();
        let index = json!({"schemaVersion": 2, "manifests": manifests});
        std::fs::write(self.dir.path().join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// One entry of a runnable image's layer.
pub enum Entry {
    File { path: String, mode: u32, content: Vec<u8> },
    Dir { path: String, mode: u32 },
    Symlink { path: String, target: String },
}

fn tar_with_entries(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::File { path, mode, content } => {
                header.set_size(content.len() as u64);
                header.set_mode(*mode);
                builder.append_data(&mut header, path, content.as_slice()).unwrap();
            }
            Entry::Dir { path, mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_mode(*mode);
                builder.append_data(&mut header, path, std::io::empty()).unwrap();
            }
            Entry::Symlink { path, target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(0o777);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

fn tar_with_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    builder.append_data(&mut header, name, content).unwrap();
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}
