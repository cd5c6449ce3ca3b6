//! The container images the lab builds offline (`lab/scripts/build-image.sh`) and imports
//! into every node's containerd: their names, and what an image's OCI archive holds.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The name containerd pins as its sandbox image, and the kubelet expects.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.1";

/// The real agnhost, under the name deploy/examples uses.
pub const AGNHOST_IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";

/// What an image in an OCI archive (as `buildah push oci-archive:` writes it) says and holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciImage {
    /// Its reference, as `ctr images import` names it.
    pub name: String,
    /// The config's `User`, if set.
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    /// Every path its layers hold, absolute, directories without a trailing `/`.
    pub files: Vec<String>,
}

impl OciImage {
    /// Reads the archive's single image (with `tar`, which any lab machine has).
    pub fn read(archive: &Path) -> Result<OciImage> {
        let json = |member: &str| -> Result<Value> {
            serde_json::from_slice(&tar_member(archive, member)?)
                .with_context(|| format!("{member} in {}", archive.display()))
        };
        let blob = |digest: &Value| -> Result<String> {
            let d = digest.as_str().context("a digest is not a string")?;
            Ok(format!("blobs/{}", d.replacen(':', "/", 1)))
        };
        let index = json("index.json")?;
        let [entry] = index["manifests"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
        else {
            bail!("{} does not hold exactly one image", archive.display());
        };
        let name = entry["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .context("the image has no name")?
            .to_string();
        let manifest = json(&blob(&entry["digest"])?)?;
        let config = json(&blob(&manifest["config"]["digest"])?)?;
        let config = &config["config"];
        let mut files = vec![];
        for layer in manifest["layers"].as_array().into_iter().flatten() {
            let gzip = layer["mediaType"]
                .as_str()
                .is_some_and(|t| t.ends_with("+gzip"));
            let bytes = tar_member(archive, &blob(&layer["digest"])?)?;
            files.extend(list_tar(&bytes, gzip)?);
        }
        Ok(OciImage {
            name,
            user: config["User"]
                .as_str()
                .filter(|u| !u.is_empty())
                .map(String::from),
            entrypoint: config["Entrypoint"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(String::from))
                .collect(),
            files,
        })
    }
}

fn tar_member(archive: &Path, member: &str) -> Result<Vec<u8>> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(member)
        .output()
        .context("running tar")?;
    if !out.status.success() {
        bail!(
            "no {member} in {}: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The paths a layer holds (`./a/b`, `a/b/` and `a/b` all become `/a/b`).
fn list_tar(layer: &[u8], gzip: bool) -> Result<Vec<String>> {
    let mut tar = Command::new("tar")
        .args(if gzip { ["-tzf", "-"] } else { ["-tf", "-"] })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running tar")?;
    // Written from another thread: tar prints while it reads, and a full pipe would block both.
    let mut stdin = tar.stdin.take().expect("piped");
    let layer = layer.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&layer));
    let out = tar.wait_with_output()?;
    writer.join().expect("writer thread")?;
    if !out.status.success() {
        bail!(
            "listing a layer: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| format!("/{}", l.trim_start_matches("./").trim_end_matches('/')))
        .filter(|p| p != "/")
        .collect())
}
