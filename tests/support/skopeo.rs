//! skopeo (Debian's package) as the registry client tests push and pull with.

use std::{path::Path, process::Output};

use tokio::process::Command;

/// Credentials for one skopeo call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Creds {
    /// Send no credentials at all.
    Anonymous,
    /// `user:password` basic credentials (for the token service, a robot or a ServiceAccount token).
    Basic { username: String, password: String },
}

/// Everything a skopeo call needs besides its arguments: a permissive signature policy and an
/// empty auth file of its own, so nothing on the machine changes what the test sees.
pub struct Skopeo {
    dir: tempfile::TempDir,
}

impl Default for Skopeo {
    fn default() -> Self {
        let dir = tempfile::Builder::new().prefix("berth-skopeo-").tempdir().expect("skopeo temp dir");
        std::fs::write(dir.path().join("policy.json"), r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        std::fs::write(dir.path().join("auth.json"), r#"{"auths":{}}"#).unwrap();
        Skopeo { dir }
    }
}

impl Skopeo {
    fn command(&self) -> Command {
        let mut cmd = Command::new("skopeo");
        cmd.arg("--policy").arg(self.dir.path().join("policy.json"));
        cmd.env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"));
        cmd.kill_on_drop(true);
        cmd
    }

    async fn run(mut cmd: Command) -> Output {
        cmd.output().await.expect("running skopeo (is Debian's skopeo installed?)")
    }

    /// Copies `oci:<layout>:<tag>` to `docker://<dest>`; `all` copies every image of an index.
    pub async fn push(&self, layout: &Path, tag: &str, dest: &str, creds: &Creds, all: bool) -> Output {
        let mut cmd = self.command();
        cmd.arg("copy").arg("--dest-tls-verify=false");
        if all {
            cmd.arg("--all");
        }
        creds_args(&mut cmd, "--dest-", creds);
        cmd.arg(format!("oci:{}:{tag}", layout.display())).arg(format!("docker://{dest}"));
        Self::run(cmd).await
    }

    /// Copies the one image of the OCI layout `layout` to `docker://<dest>`.
    pub async fn push_layout(&self, layout: &Path, dest: &str) -> Output {
        let mut cmd = self.command();
        cmd.arg("copy").arg("--dest-tls-verify=false").arg("--dest-no-creds");
        cmd.arg(format!("oci:{}", layout.display())).arg(format!("docker://{dest}"));
        Self::run(cmd).await
    }

    /// Copies `docker://<src>` into a fresh OCI layout under `into` (a pull).
    pub async fn pull(&self, src: &str, into: &Path, creds: &Creds) -> Output {
        let mut cmd = self.command();
        cmd.arg("copy").arg("--src-tls-verify=false");
        creds_args(&mut cmd, "--src-", creds);
        cmd.arg(format!("docker://{src}")).arg(format!("oci:{}:pulled", into.display()));
        Self::run(cmd).await
    }

    /// `skopeo list-tags`; `Err` carries skopeo's stderr.
    pub async fn list_tags(&self, repo: &str, creds: &Creds) -> Result<Vec<String>, String> {
        let mut cmd = self.command();
        cmd.arg("list-tags").arg("--tls-verify=false");
        creds_args(&mut cmd, "--", creds);
        cmd.arg(format!("docker://{repo}"));
        let out = Self::run(cmd).await;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let mut tags: Vec<String> = v["Tags"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
            .unwrap_or_default();
        tags.sort();
        Ok(tags)
    }

    /// The digest of `docker://<reference>` (`skopeo inspect --raw` hashed, as the registry does).
    pub async fn digest(&self, reference: &str, creds: &Creds) -> Result<String, String> {
        use sha2::{Digest, Sha256};
        let mut cmd = self.command();
        cmd.arg("inspect").arg("--raw").arg("--tls-verify=false");
        creds_args(&mut cmd, "--", creds);
        cmd.arg(format!("docker://{reference}"));
        let out = Self::run(cmd).await;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(format!("sha256:{}", hex(&Sha256::digest(&out.stdout))))
    }
}

fn creds_args(cmd: &mut Command, prefix: &str, creds: &Creds) {
    match creds {
        Creds::Anonymous => {
            cmd.arg(format!("{prefix}no-creds"));
        }
        Creds::Basic { username, password } => {
            cmd.arg(format!("{prefix}creds")).arg(format!("{username}:{password}"));
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
