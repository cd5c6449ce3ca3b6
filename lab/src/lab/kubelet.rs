//! Real node agents ([`super::LabConfig::kubelets`]): each node namespace runs its own containerd and
//! kubelet, which registers the Node. What it takes on this machine (cgroup v1, no
//! CAP_SYS_RESOURCE, host paths both write to) is in the README's section on the lab.
//!
//! Everything global they touch is undone by [`cleanup`], which `down` calls for live and
//! killed runs alike: the pods' processes (found by cgroup), the cgroup directories named after
//! the lab's prefix, the sysctls the kubelet sets, and the empty host directories the private
//! mount namespaces bind over.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};

use super::Lab;
use crate::binaries::NodeAgents;
use crate::images::PAUSE_IMAGE;
use crate::netns::{self, NetNs};
use crate::plan;
use crate::process::Proc;

const CGROUP_FS: &str = "/sys/fs/cgroup";

/// Host paths the kubelet and containerd use whatever their flags say; each node binds its own
/// directory over them in its private mount namespace. They must exist on the host.
const HOST_PATHS: [&str; 4] = [
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/run/containerd",
];

/// Sysctls the kubelet sets for the whole machine (its "kernel tunables").
const KUBELET_SYSCTLS: [&str; 6] = [
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];

/// Where the values from before the first kubelet lab are kept until the last one goes. Not in
/// a lab's directory: labs overlap, and the first one saw the machine's own values.
fn saved_sysctls() -> PathBuf {
    std::env::temp_dir().join("ferrolb-lab-kubelet-sysctls")
}

/// The cgroup parent of node `i`'s pods: named after the lab, so teardown finds it.
fn cgroup_root(prefix: &str, i: usize) -> String {
    format!("{prefix}-n{i}")
}

impl Lab {
    /// Starts containerd and the kubelet of node `i` (in `ns`, already on the LAN).
    pub(super) fn start_node_agent(
        &self,
        agents: &NodeAgents,
        ns: &NetNs,
        i: usize,
        name: &str,
    ) -> Result<Proc> {
        let dir = self.dir.join(name);
        let host = dir.join("host");
        for p in HOST_PATHS {
            std::fs::create_dir_all(host.join(p.trim_start_matches('/')))?;
        }
        let cni_conf = dir.join("cni");
        std::fs::create_dir_all(&cni_conf)?;
        let socket = dir.join("containerd.sock");

        let cgroup = cgroup_root(&self.prefix, i);
        create_cgroup(&cgroup)?;
        save_sysctls()?;

        let kubeconfig = dir.join("kubelet.kubeconfig");
        self.certificate_kubeconfig(
            &kubeconfig,
            &format!("kubelet-{name}"),
            &super::control_plane::lan_apiserver_url(self.ipv6_only),
            &format!("system:node:{name}"),
            &["system:nodes"],
        )?;

        std::fs::write(
            dir.join("containerd.toml"),
            containerd_config(&dir, &socket, &agents.cni_dir, &cni_conf),
        )?;
        std::fs::write(
            cni_conf.join("10-lab.conflist"),
            cni_config(i, self.ipv6_only),
        )?;
        let kubelet_config = serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            // This machine has cgroup v1 only; 1.36 refuses it unless told.
            "failCgroupV1": false,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": format!("/{cgroup}"),
            "containerRuntimeEndpoint": format!("unix://{}", socket.display()),
            "address": "::",
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "authentication": {
                "anonymous": {"enabled": false},
                "webhook": {"enabled": false},
                "x509": {"clientCAFile": self.ca.cert},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "failSwapOn": false,
            // Past the default 110 where the CNI has room (IPv6-only), down to the room it has
            // where it does not (dual-stack): see `plan::max_pods_per_kubelet`.
            "maxPods": plan::max_pods_per_kubelet(self.ipv6_only),
            // The lab's pods write next to nothing, but they share the host's disk with a build
            // tree; a percentage of a large disk (1% of 252 GB is 2.5 GB) evicted every pod of a
            // CI run whose build had left 2 GB free. Absolute floors keep the kubelet's guard.
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "256Mi",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "256Mi",
                "imagefs.inodesFree": "1%",
            },
            // The imported images cannot be pulled again.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "volumePluginDir": dir.join("volume-plugins"),
            "rotateCertificates": false,
            // It renews its Lease every quarter of this: the lab's heartbeat.
            "nodeLeaseDurationSeconds": (self.heartbeat.as_secs_f64() * 4.0).round().max(1.0) as u32,
        });
        std::fs::write(
            dir.join("kubelet.yaml"),
            serde_json::to_string_pretty(&kubelet_config)?,
        )?;
        let node_ips = if self.ipv6_only {
            plan::node_v6(i).to_string()
        } else {
            format!("{},{}", plan::node_v4(i), plan::node_v6(i))
        };
        let script = dir.join("run.sh");
        std::fs::write(
            &script,
            agent_script(
                agents,
                &dir,
                &socket,
                &self.log_path(&format!("containerd-{name}")),
                &[
                    format!("--config={}", dir.join("kubelet.yaml").display()),
                    format!("--kubeconfig={}", kubeconfig.display()),
                    format!("--hostname-override={name}"),
                    format!("--node-ip={node_ips}"),
                    "--root-dir=/var/lib/kubelet".into(),
                    "--v=1".into(),
                ],
            ),
        )?;

        for p in HOST_PATHS {
            std::fs::create_dir_all(p)?;
        }
        // nsenter, not `ip netns exec`: that remounts /sys and hides the cgroup hierarchies.
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", ns.name()))
            .args(["--", "unshare", "--mount", "--propagation", "slave", "sh"])
            .arg(&script);
        Proc::spawn_command(
            &format!("kubelet-{name}"),
            cmd,
            &self.log_path(&format!("kubelet-{name}")),
        )
    }

    /// Waits until every node's kubelet has registered its Node, then gives it its pod ranges.
    /// Not kube-controller-manager's node IPAM: it hands out blocks of one cluster range in
    /// the order Nodes appear, so node i would not get the plan's 203.0.113.(16i)/28.
    pub(super) async fn wait_for_registration(&mut self, within: Duration) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let deadline = Instant::now() + within;
        for node in &mut self.nodes {
            loop {
                if let Some(n) = nodes.get_opt(&node.name).await? {
                    if n.spec.as_ref().and_then(|s| s.pod_cidrs.as_ref()).is_none() {
                        let cidrs = if self.ipv6_only {
                            vec![plan::pod_cidr_v6(node.index)]
                        } else {
                            vec![plan::pod_cidr_v4(node.index), plan::pod_cidr_v6(node.index)]
                        };
                        let patch = serde_json::json!({
                            "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs}
                        });
                        nodes
                            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await?;
                    }
                    break;
                }
                let kubelet = node.kubelet.as_mut().expect("kubelet started");
                if !kubelet.running() || Instant::now() > deadline {
                    bail!(
                        "the kubelet of {} did not register its Node; its log ends with:\n{}",
                        node.name,
                        kubelet.log_tail(20)
                    );
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(())
    }

    /// The processes of pod `uid` on node `i` (its sandbox and its containers), found by the
    /// pod's cgroup: a way into the pod's namespaces (`/proc/PID/ns/net`, `/proc/PID/root`)
    /// when its image has no tools of its own. Empty if the pod runs no process there.
    pub fn pod_processes(&self, i: usize, uid: &str) -> Vec<i32> {
        let root = cgroup_root(&self.prefix, i);
        let pod = format!("pod{uid}");
        let mut pids = vec![];
        for node in cgroup_roots(|name| name == root) {
            if let Some(dir) = find_dir(&node, &pod, 4) {
                collect_pids(&dir, &mut pids);
            }
        }
        pids.sort();
        pids.dedup();
        pids
    }
}

/// The directory named `name` under `dir`, at most `depth` levels down.
fn find_dir(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let subdirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    if let Some(found) = subdirs
        .iter()
        .find(|p| p.file_name().is_some_and(|f| f == name))
    {
        return Some(found.clone());
    }
    if depth == 0 {
        return None;
    }
    subdirs.iter().find_map(|p| find_dir(p, name, depth - 1))
}

impl Lab {
    /// Node `i`'s agent dies with the machine: the kubelet, containerd, the shims and every
    /// pod process (those on the host network are in the node's namespace, the others in its
    /// cgroup), all SIGKILLed at once.
    pub(super) fn kill_node_agent(&mut self, i: usize) {
        let node = &mut self.nodes[i - 1];
        if let Some(mut kubelet) = node.kubelet.take() {
            kubelet.kill();
        }
        let mut pids = netns::pids(node.ns.name());
        for root in cgroup_roots(|name| name == cgroup_root(&self.prefix, i)) {
            collect_pids(&root, &mut pids);
        }
        let me = std::process::id() as i32;
        for pid in pids.into_iter().filter(|p| *p != me) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Starts node `i`'s containerd and kubelet again after [`Lab::kill_node_agent`], on the
    /// state they left, as after a reboot: the kubelet brings the node's pods back.
    pub(super) fn restart_node_agent(&mut self, i: usize) -> Result<()> {
        let agents = self
            .agents
            .clone()
            .context("the lab runs no kubelets to restart")?;
        let (ns, name) = (self.node(i).ns.clone(), self.node(i).name.clone());
        let kubelet = self.start_node_agent(&agents, &ns, i, &name)?;
        self.nodes[i - 1].kubelet = Some(kubelet);
        Ok(())
    }
}

/// Saves the kubelet's sysctls unless a kubelet lab already did (it saw the machine's own).
/// Called once a node cgroup exists, so another lab's teardown sees a kubelet lab running and
/// leaves the saved values alone.
fn save_sysctls() -> Result<()> {
    let path = saved_sysctls();
    if path.exists() {
        return Ok(());
    }
    let mut saved = String::new();
    for key in KUBELET_SYSCTLS {
        let value =
            std::fs::read_to_string(sysctl_path(key)).with_context(|| format!("reading {key}"))?;
        saved.push_str(&format!("{key}={}\n", value.trim()));
    }
    std::fs::write(&path, saved)?;
    Ok(())
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Undoes what the kubelets of the lab `prefix` changed outside its namespaces, once these are
/// gone (and with them the kubelets, containerd and host-network pods): kills the pods left in
/// other namespaces (found by cgroup), removes the cgroup directories, and, when no other
/// kubelet lab runs, restores the sysctls and removes the empty host directories. Safe to call
/// for a lab that ran no kubelets.
pub(super) fn cleanup(prefix: &str) -> Result<()> {
    let mine = |name: &str| name.starts_with(&format!("{prefix}-n"));
    let roots = cgroup_roots(mine);
    netns::stop_all(|| {
        let mut pids = vec![];
        for root in &roots {
            collect_pids(root, &mut pids);
        }
        pids
    });
    for root in roots {
        remove_cgroup_tree(&root)?;
    }
    restore_if_idle()
}

/// Prefixes of the labs that have node cgroups on this machine (a killed run's may outlive its
/// namespaces).
pub(super) fn prefixes_with_cgroups() -> Vec<String> {
    let mut prefixes: Vec<String> = cgroup_roots(is_node_cgroup)
        .iter()
        .filter_map(|r| {
            r.file_name()?
                .to_str()?
                .split_once('-')
                .map(|(p, _)| p.to_string())
        })
        .collect();
    prefixes.sort();
    prefixes.dedup();
    prefixes
}

fn is_node_cgroup(name: &str) -> bool {
    name.split_once('-')
        .is_some_and(|(p, rest)| super::is_prefix(p) && rest.starts_with('n'))
}

/// When no kubelet lab is left: restores the sysctls saved before the first one and removes the
/// empty host directories.
pub(super) fn restore_if_idle() -> Result<()> {
    if !cgroup_roots(is_node_cgroup).is_empty() {
        return Ok(());
    }
    if let Ok(saved) = std::fs::read_to_string(saved_sysctls()) {
        for line in saved.lines() {
            if let Some((key, value)) = line.split_once('=') {
                std::fs::write(sysctl_path(key), value)
                    .with_context(|| format!("restoring {key}={value}"))?;
            }
        }
        std::fs::remove_file(saved_sysctls())?;
        // Only a kubelet lab saved them: the host paths are then ours, and empty unless a
        // real kubelet came to this machine meanwhile.
        for p in HOST_PATHS {
            let _ = std::fs::remove_dir(p);
        }
    }
    Ok(())
}

/// Every cgroup v1 hierarchy (and the unified one, where runc also creates directories).
fn hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir(CGROUP_FS)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default()
}

/// Top-level cgroup directories whose names `keep` accepts, in every hierarchy.
fn cgroup_roots(keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut roots = vec![];
    for h in hierarchies() {
        if let Ok(entries) = std::fs::read_dir(&h) {
            for e in entries.flatten() {
                if e.path().is_dir() && keep(&e.file_name().to_string_lossy()) {
                    roots.push(e.path());
                }
            }
        }
    }
    roots
}

/// Creates `/name` in every hierarchy; cpuset needs its CPUs and memory nodes copied from the
/// parent before tasks can join.
fn create_cgroup(name: &str) -> Result<()> {
    for h in hierarchies() {
        let dir = h.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if h.join(file).exists() {
                let value = std::fs::read_to_string(h.join(file))?;
                std::fs::write(dir.join(file), value.trim())?;
            }
        }
    }
    Ok(())
}

fn collect_pids(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                collect_pids(&e.path(), pids);
            }
        }
    }
}

/// Removes a cgroup directory and its children, deepest first (cgroupfs takes rmdir only).
fn remove_cgroup_tree(dir: &Path) -> Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path())?;
            }
        }
    }
    // A cgroup whose last task just exited can refuse for a moment.
    for attempt in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) if attempt < 49 => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
        }
    }
    Ok(())
}

/// containerd for one node: its own root, state and socket; CRI pinned to the lab's pause
/// image; runc without systemd and without writing oom_score_adj (this VM lacks
/// CAP_SYS_RESOURCE: runc's nsexec fails on it otherwise).
fn containerd_config(dir: &Path, socket: &Path, cni_bin: &Path, cni_conf: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 3
root = "{d}/containerd/root"
state = "{d}/containerd/state"

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"

[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  disable_apparmor = true
  restrict_oom_score_adj = true
  tolerate_missing_hugetlb_controller = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"
"#,
        socket = socket.display(),
        cni_bin = cni_bin.display(),
        cni_conf = cni_conf.display(),
    )
}

/// A bridge network on the node's pod ranges (see `plan`), its address the pods' default
/// gateway. No masquerade: inside the cluster
/// pods are seen by their own addresses, as Kubernetes expects; the nodes and the control plane
/// route the pod ranges instead (lab/src/lab/network.rs). The client, outside, has no route.
fn cni_config(i: usize, ipv6_only: bool) -> String {
    let range = |subnet: String, gateway: IpAddr, first: IpAddr, last: IpAddr| {
        serde_json::json!([{
            "subnet": subnet,
            "gateway": gateway.to_string(),
            "rangeStart": first.to_string(),
            "rangeEnd": last.to_string(),
        }])
    };
    let gateway_v6 = plan::cni_gateway_v6(i);
    let first_v6 = Ipv6Addr::from(u128::from(gateway_v6) + 1);
    let mut ranges = vec![range(
        plan::pod_cidr_v6(i),
        gateway_v6.into(),
        first_v6.into(),
        plan::cni_last_v6(i).into(),
    )];
    if !ipv6_only {
        let gateway_v4 = plan::cni_gateway_v4(i);
        let first_v4 = Ipv4Addr::from(u32::from(gateway_v4) + 1);
        ranges.insert(
            0,
            range(
                plan::pod_cidr_v4(i),
                gateway_v4.into(),
                first_v4.into(),
                plan::cni_last_v4(i).into(),
            ),
        );
    }
    serde_json::to_string_pretty(&serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "lab",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "isDefaultGateway": true,
                "ipMasq": false,
                "ipam": {"type": "host-local", "ranges": ranges, "dataDir": "/run/containerd/cni-ipam"},
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    }))
    .expect("static JSON")
}

/// The node's agent as one shell in a private mount namespace: bind the node's directories over
/// the host paths, start containerd, import the lab's images, then become the kubelet.
fn agent_script(
    agents: &NodeAgents,
    dir: &Path,
    socket: &Path,
    containerd_log: &Path,
    kubelet_args: &[String],
) -> String {
    let q = |p: &Path| format!("'{}'", p.display());
    let mut s = String::from("set -eu\n");
    for p in HOST_PATHS {
        s.push_str(&format!(
            "mount --bind {} {p}\n",
            q(&dir.join("host").join(p.trim_start_matches('/')))
        ));
    }
    s.push_str(&format!(
        "export PATH={}:{}:$PATH\n",
        q(&agents.containerd_dir),
        q(&agents.cni_dir)
    ));
    s.push_str(&format!(
        "containerd --config {} >>{} 2>&1 &\n",
        q(&dir.join("containerd.toml")),
        q(containerd_log)
    ));
    s.push_str(&format!(
        "i=0\nuntil ctr --address {sock} version >/dev/null 2>&1; do\n  \
         i=$((i+1)); [ $i -lt 300 ] || {{ echo 'containerd did not start'; exit 1; }}; sleep 0.1\ndone\n",
        sock = q(socket)
    ));
    for image in agents.images() {
        s.push_str(&format!(
            "ctr --address {} -n k8s.io images import {}\n",
            q(socket),
            q(image)
        ));
    }
    s.push_str(&format!("exec {}", q(&agents.kubelet)));
    for a in kubelet_args {
        s.push_str(&format!(" '{a}'"));
    }
    s.push('\n');
    s
}
