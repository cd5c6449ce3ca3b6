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
    /// Runs only with kubelets: without them there is nothing to schedule.
    pub kube_scheduler: PathBuf,
    pub kube_proxy: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
}

/// What a node needs to run pods: only built when a lab asks for kubelets.
#[derive(Debug, Clone)]
pub struct NodeAgents {
    pub kubelet: PathBuf,
    /// Holds containerd, ctr and containerd-shim-runc-v2 (found by containerd on PATH).
    pub containerd_dir: PathBuf,
    /// Holds the CNI plugins.
    pub cni_dir: PathBuf,
    /// The pause image, an OCI archive for `ctr images import`.
    pub pause_image: PathBuf,
}

impl NodeAgents {
    pub fn containerd(&self) -> PathBuf {
        self.containerd_dir.join("containerd")
    }

    pub fn ctr(&self) -> PathBuf {
        self.containerd_dir.join("ctr")
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Runs a build script of lab/scripts and returns the path it prints.
fn built(script_name: &str, what: &str) -> Result<PathBuf> {
    let out = Command::new("bash")
        .arg(script(script_name))
        .arg(what)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run lab/scripts/{script_name}"))?;
    if !out.status.success() {
        bail!("building {what} with lab/scripts/{script_name} failed; see the output above");
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Finds the cached kubelet, containerd, CNI plugins and pause image, building what is missing.
pub fn ensure_node_agents() -> Result<NodeAgents> {
    let containerd_dir = built("build-k8s.sh", "containerd")?;
    let cni_dir = built("build-k8s.sh", "cni-plugins")?;
    let agents = NodeAgents {
        kubelet: built("build-k8s.sh", "kubelet")?.join("kubelet"),
        pause_image: built("build-pause-image.sh", "pause")?,
        containerd_dir,
        cni_dir,
    };
    for path in [
        agents.kubelet.clone(),
        agents.containerd(),
        agents.ctr(),
        agents.containerd_dir.join("containerd-shim-runc-v2"),
        agents.cni_dir.join("bridge"),
        agents.cni_dir.join("host-local"),
        agents.cni_dir.join("loopback"),
        agents.cni_dir.join("portmap"),
        agents.pause_image.clone(),
    ] {
        if !path.is_file() {
            bail!("{} is missing after the build", path.display());
        }
    }
    Ok(agents)
}

/// Finds the cached binaries, building whatever is missing (minutes, with progress on stderr).
pub fn ensure() -> Result<Binaries> {
    let dir = |what: &str| built("build-k8s.sh", what);
    let k8s = dir("kubernetes")?;
    let bins = Binaries {
        etcd: dir("etcd")?.join("etcd"),
        kube_apiserver: k8s.join("kube-apiserver"),
        kube_controller_manager: dir("controller-manager")?.join("kube-controller-manager"),
        kube_scheduler: dir("scheduler")?.join("kube-scheduler"),
        kube_proxy: k8s.join("kube-proxy"),
        kubectl: k8s.join("kubectl"),
        helm: dir("helm")?.join("helm"),
    };
    for path in [
        &bins.etcd,
        &bins.kube_apiserver,
        &bins.kube_controller_manager,
        &bins.kube_scheduler,
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
