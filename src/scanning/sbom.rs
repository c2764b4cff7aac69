//! The SBOM berth attaches to a scanned image, as an OCI 1.1 referrer: an artifact manifest
//! (`artifactType: application/vnd.cyclonedx+json`, the empty config, one layer holding the
//! CycloneDX document) whose `subject` is the image. Registries with the referrers API index it
//! themselves; on the others (Distribution 2.8 and 3.x) clients find it through the tag scheme,
//! an image index tagged `sha256-<hex of the subject digest>` listing the referrers. Pure: the
//! controller uploads what these functions build.

use serde_json::{Value, json};

use crate::registry::{Descriptor, sha256_digest};

/// The SBOM's artifact type and layer media type.
pub const ARTIFACT_TYPE: &str = "application/vnd.cyclonedx+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The OCI empty descriptor's content, used as the artifact's config.
pub const EMPTY_CONFIG: &[u8] = b"{}";
pub const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The layer's file name (`oras pull` writes it under this name).
pub const FILE_NAME: &str = "sbom.cdx.json";

/// The referrer manifest for an SBOM of `sbom_size` bytes at `sbom_digest` about `subject`.
pub fn manifest(sbom_digest: &str, sbom_size: u64, subject: &Descriptor) -> Vec<u8> {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_CONFIG_MEDIA_TYPE,
            "digest": sha256_digest(EMPTY_CONFIG),
            "size": EMPTY_CONFIG.len(),
            "data": "e30=",
        },
        "layers": [{
            "mediaType": ARTIFACT_TYPE,
            "digest": sbom_digest,
            "size": sbom_size,
            "annotations": {"org.opencontainers.image.title": FILE_NAME},
        }],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        "annotations": {"dev.berth.sbom.generator": "berth"},
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// The tag of the referrers tag scheme for `digest` (`sha256:abc...` -> `sha256-abc...`).
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// The tag-scheme index with the referrer `manifest_digest` (of `manifest_size` bytes) added:
/// `existing` is the index now at the tag, if any. `None` when it lists the referrer already
/// (nothing to write). Other entries are kept as they are: berth is not their only writer.
pub fn add_to_index(
    existing: Option<&[u8]>,
    manifest_digest: &str,
    manifest_size: u64,
) -> Result<Option<Vec<u8>>, String> {
    let mut index: Value = match existing {
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| format!("the referrers index is not JSON: {e}"))?,
        None => json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}),
    };
    if !index.is_object() {
        return Err("the referrers index is not a JSON object".into());
    }
    if index.get("manifests").is_none() || index["manifests"].is_null() {
        index["manifests"] = json!([]);
    }
    let manifests = index["manifests"].as_array_mut().ok_or("the referrers index's manifests is not a list")?;
    if manifests.iter().any(|m| m["digest"].as_str() == Some(manifest_digest)) {
        return Ok(None);
    }
    manifests.push(json!({
        "mediaType": MANIFEST_MEDIA_TYPE,
        "digest": manifest_digest,
        "size": manifest_size,
        "artifactType": ARTIFACT_TYPE,
        "annotations": {"dev.berth.sbom.generator": "berth"},
    }));
    serde_json::to_vec(&index).map(Some).map_err(|e| e.to_string())
}

/// Whether an index of referrers (from the API or the tag) lists `manifest_digest`.
pub fn lists(index: &[u8], manifest_digest: &str) -> bool {
    serde_json::from_slice::<Value>(index)
        .ok()
        .and_then(|v| v["manifests"].as_array().cloned())
        .is_some_and(|m| m.iter().any(|d| d["digest"].as_str() == Some(manifest_digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Descriptor {
        Descriptor {
            digest: format!("sha256:{}", "a".repeat(64)),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 1234,
        }
    }

    #[test]
    fn the_manifest_is_an_oci_artifact_about_its_subject() {
        let m: Value = serde_json::from_slice(&manifest("sha256:bb", 10, &subject())).unwrap();
        assert_eq!(m["artifactType"], ARTIFACT_TYPE);
        assert_eq!(m["config"]["mediaType"], EMPTY_CONFIG_MEDIA_TYPE);
        assert_eq!(
            m["config"]["digest"], "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "the OCI empty descriptor"
        );
        assert_eq!(m["layers"][0]["digest"], "sha256:bb");
        assert_eq!(m["subject"]["digest"], subject().digest);
        assert_eq!(m["subject"]["size"], 1234);
        assert_eq!(manifest("sha256:bb", 10, &subject()), manifest("sha256:bb", 10, &subject()), "deterministic");
    }

    #[test]
    fn the_tag_scheme_index_gains_the_referrer_once_and_keeps_others() {
        assert_eq!(referrers_tag("sha256:abc"), "sha256-abc");
        let first = add_to_index(None, "sha256:m1", 5).unwrap().unwrap();
        assert!(lists(&first, "sha256:m1"));
        assert_eq!(add_to_index(Some(&first), "sha256:m1", 5).unwrap(), None, "already listed");
        let other = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:sig","size":3,"artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json"}]}"#;
        let both = add_to_index(Some(other), "sha256:m1", 5).unwrap().unwrap();
        assert!(lists(&both, "sha256:sig") && lists(&both, "sha256:m1"));
        assert!(add_to_index(Some(b"not json"), "sha256:m1", 5).is_err());
        assert!(add_to_index(Some(b"[]"), "sha256:m1", 5).is_err());
        let null_list =
            add_to_index(Some(br#"{"schemaVersion":2,"manifests":null}"#), "sha256:m1", 5).unwrap().unwrap();
        assert!(lists(&null_list, "sha256:m1"));
    }
}
