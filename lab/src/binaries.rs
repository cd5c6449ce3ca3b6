//! The Kubernetes binaries the lab runs, built by `lab/scripts/build-k8s.sh`, and the images
//! its kubelets run, built by `lab/scripts/build-image.sh`; all cached outside the repository.
//! The same script builds the tools that check the monitoring files: Prometheus's promtool and
//! the Grafana dashboard checker.

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
    /// The images every node's containerd imports, as OCI archives for `ctr images import`:
    /// pause ([`crate::PAUSE_IMAGE`]), agnhost ([`crate::AGNHOST_IMAGE`]) and ferrolb's own,
    /// of the binaries [`FerrolbBinaries::find`] finds.
    pub pause_image: PathBuf,
    pub agnhost_image: PathBuf,
    pub ferrolb_image: PathBuf,
}

impl NodeAgents {
    pub fn containerd(&self) -> PathBuf {
        self.containerd_dir.join("containerd")
    }

    pub fn ctr(&self) -> PathBuf {
        self.containerd_dir.join("ctr")
    }

    pub fn images(&self) -> [&Path; 3] {
        [&self.pause_image, &self.agnhost_image, &self.ferrolb_image]
    }
}

/// ferrolb's binaries as cargo built them, for the lab's ferrolb image.
#[derive(Debug, Clone)]
pub struct FerrolbBinaries {
    pub controller: PathBuf,
    pub speaker: PathBuf,
}

impl FerrolbBinaries {
    /// `FERROLB_CONTROLLER_BINARY` and `FERROLB_SPEAKER_BINARY` (the variables the controller's
    /// and the speaker's lab tests read), else the binaries of the cargo build that built the
    /// running program: beside it (the `lab` binary) or one level up (a test, in `deps/`).
    pub fn find() -> Result<FerrolbBinaries> {
        let exe = std::env::current_exe()?;
        let dir = exe
            .parent()
            .context("the running program has no directory")?;
        let dir = if dir.ends_with("deps") {
            dir.parent().unwrap_or(dir)
        } else {
            dir
        };
        let find = |var: &str, name: &str| -> Result<PathBuf> {
            let path = std::env::var_os(var).map_or_else(|| dir.join(name), PathBuf::from);
            if !path.is_file() {
                bail!(
                    "no {name} at {} for the lab's ferrolb image: build it first (cargo build \
                     -p controller -p speaker, or the workspace's cargo test), or set {var}",
                    path.display()
                );
            }
            Ok(path)
        };
        Ok(FerrolbBinaries {
            controller: find("FERROLB_CONTROLLER_BINARY", "ferrolb-controller")?,
            speaker: find("FERROLB_SPEAKER_BINARY", "ferrolb-speaker")?,
        })
    }

    /// The ferrolb image of these binaries, built unless cached (under a second then).
    pub fn image(&self) -> Result<PathBuf> {
        let controller = self.controller.to_string_lossy();
        let speaker = self.speaker.to_string_lossy();
        built("build-image.sh", &["ferrolb", &controller, &speaker])
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Runs a build script of lab/scripts and returns the path it prints.
fn built(script_name: &str, args: &[&str]) -> Result<PathBuf> {
    let what = args.first().copied().unwrap_or_default();
    let out = Command::new("bash")
        .arg(script(script_name))
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run lab/scripts/{script_name}"))?;
    if !out.status.success() {
        bail!("building {what} with lab/scripts/{script_name} failed; see the output above");
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Finds the cached kubelet, containerd, CNI plugins and images, building what is missing;
/// fails when ferrolb's binaries are not built ([`FerrolbBinaries::find`]).
pub fn ensure_node_agents() -> Result<NodeAgents> {
    let ferrolb = FerrolbBinaries::find()?;
    let containerd_dir = built("build-k8s.sh", &["containerd"])?;
    let cni_dir = built("build-k8s.sh", &["cni-plugins"])?;
    let agents = NodeAgents {
        kubelet: built("build-k8s.sh", &["kubelet"])?.join("kubelet"),
        pause_image: built("build-image.sh", &["pause"])?,
        agnhost_image: built("build-image.sh", &["agnhost"])?,
        ferrolb_image: ferrolb.image()?,
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
        agents.agnhost_image.clone(),
        agents.ferrolb_image.clone(),
    ] {
        if !path.is_file() {
            bail!("{} is missing after the build", path.display());
        }
    }
    Ok(agents)
}

/// Finds the cached binaries, building whatever is missing (minutes, with progress on stderr).
pub fn ensure() -> Result<Binaries> {
    let dir = |what: &str| built("build-k8s.sh", &[what]);
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

/// Prometheus and promtool (one build, one directory).
#[derive(Debug, Clone)]
pub struct PrometheusBinaries {
    pub prometheus: PathBuf,
    pub promtool: PathBuf,
}

/// Finds the cached prometheus and promtool, building them if missing (minutes, cold).
pub fn ensure_prometheus() -> Result<PrometheusBinaries> {
    let dir = built("build-k8s.sh", &["prometheus"])?;
    let bins = PrometheusBinaries {
        prometheus: dir.join("prometheus"),
        promtool: dir.join("promtool"),
    };
    for path in [&bins.prometheus, &bins.promtool] {
        if !path.is_file() {
            bail!("{} is missing after the build", path.display());
        }
    }
    Ok(bins)
}

/// Finds the cached Grafana dashboard checker (`lab/tools/dashboard-check`), building it if
/// missing or if its sources changed.
pub fn ensure_dashboard_check() -> Result<PathBuf> {
    let path = built("build-k8s.sh", &["dashboard-check"])?.join("dashboard-check");
    if !path.is_file() {
        bail!("{} is missing after the build", path.display());
    }
    Ok(path)
}
