//! The Kubernetes binaries the lab runs, built by `lab/scripts/build-k8s.sh` and cached
//! outside the repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_proxy: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-k8s.sh")
}

/// Finds the cached binaries, building whatever is missing (minutes, with progress on stderr).
pub fn ensure() -> Result<Binaries> {
    let dir = |what: &str| -> Result<PathBuf> {
        let out = Command::new("bash")
            .arg(script())
            .arg(what)
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("cannot run lab/scripts/build-k8s.sh")?;
        if !out.status.success() {
            bail!("building the Kubernetes {what} binaries failed; see the output above");
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    let k8s = dir("kubernetes")?;
    let bins = Binaries {
        etcd: dir("etcd")?.join("etcd"),
        kube_apiserver: k8s.join("kube-apiserver"),
        kube_controller_manager: dir("controller-manager")?.join("kube-controller-manager"),
        kube_proxy: k8s.join("kube-proxy"),
        kubectl: k8s.join("kubectl"),
        helm: dir("helm")?.join("helm"),
    };
    for path in [
        &bins.etcd,
        &bins.kube_apiserver,
        &bins.kube_controller_manager,
        &bins.kube_proxy,
        &bins.kubectl,
        &bins.helm,
    ] {
        if !path.is_file() {
            bail!("{} is missing after the build", path.display());
        }
    }
    Ok(bins)
}
