//! `Lab`: a running test bed. `Lab::start` builds it; dropping it tears everything down.
//!
//! This file holds the lab's shape (its config, nodes, pods, the build and the teardown); each
//! submodule adds one kind of `Lab` method: the network, the control plane, the nodes, the
//! workloads, ferrolb's own components, faults, and what tests observe.

mod components;
mod control_plane;
mod faults;
mod install;
mod kubelet;
mod network;
mod nodes;
pub(crate) mod observe;
mod workloads;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use kube::Client;
use tokio::task::JoinHandle;

use crate::binaries::{self, Binaries, NodeAgents};
use crate::forward::Forwarder;
use crate::netns::{self, NetNs};
use crate::pki::{self, Ca, Credentials};
use crate::plan;
use crate::process::Proc;

pub use components::ControllerOptions;
pub use control_plane::client_for;
pub use faults::ExternalHost;
pub use install::{CONTROLLER_DEPLOYMENT, NAMESPACE as FERROLB_NAMESPACE, SPEAKER_DAEMONSET};
pub use network::Capture;

use control_plane::lan_apiserver_url;
use network::{attach, control_plane_pod_routes, room_for_neighbours};

/// Every lab namespace starts with this, then 4 hex digits, then `-`.
pub const PREFIX_STEM: &str = "flb";

/// How ferrolb runs in a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Its API (CRDs, namespace, accounts, RBAC) only; the test starts the binaries as
    /// processes in the nodes' namespaces ([`Lab::start_speaker`], [`Lab::start_controller`]),
    /// to give them flags, kill them and read their logs.
    Processes,
    /// `kubectl apply -k deploy` and the gossip Secret, as the README asks: its pods run
    /// (needs kubelets).
    Kustomize,
    /// `helm install` of deploy/helm/ferrolb (needs kubelets).
    Helm,
}

#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Number of nodes (1 to 15).
    pub nodes: usize,
    /// The node (1-based) of each hello pod, in pod order: pod `hello-k` is the k-th entry.
    /// Real pods (agnhost, ready by their probe), so they need [`LabConfig::kubelets`].
    pub pods: Vec<usize>,
    /// The namespace and link prefix; a fresh one when `None`.
    pub prefix: Option<String>,
    /// How often each node renews its Lease (10 s, a kubelet's default); a kubelet is given
    /// the Lease duration that makes it renew this often (four times this, whole seconds).
    pub heartbeat: Duration,
    /// What Kubernetes sees is IPv6 only: Nodes' InternalIPs and pod CIDRs from
    /// 2001:db8::/64 and 2001:db8:1::/48, Services from an IPv6 range, the API server reached
    /// over IPv6. (The namespaces keep their IPv4 addresses, unused by the cluster.)
    pub ipv6_only: bool,
    /// Runs kube-controller-manager with its EndpointSlice mirroring controller, which
    /// turns hand-written Endpoints (a selectorless Service's) into EndpointSlices, and the
    /// ServiceAccount and root CA publisher controllers pods need (always on with kubelets).
    pub controller_manager: bool,
    /// Each node runs a real kubelet with its own containerd (lab/src/lab/kubelet.rs); the
    /// kubelets register the Nodes and keep their Leases, instead of the lab. kube-scheduler
    /// and kube-controller-manager's workload controllers run too, pods get a routed network
    /// (a CNI bridge per node) and reach the API server through the `kubernetes` Service.
    pub kubelets: bool,
    /// How ferrolb runs.
    pub install: Install,
    /// kube-proxy runs on nodes 1 to this many only (`None`: on every node). The scale bench's
    /// light nodes run a speaker and nothing else; traffic goes through the first few.
    pub kube_proxies: Option<usize>,
    /// kube-apiserver's `--feature-gates` (empty: its defaults), e.g. `WatchList=false` for a
    /// server like Kubernetes 1.33's, which does not stream a watch's first state.
    pub apiserver_feature_gates: Vec<String>,
}

impl LabConfig {
    /// `nodes` nodes with kubelets; two pods, on nodes 1 and 2 (both on node 1 when it is
    /// alone).
    pub fn with_nodes(nodes: usize) -> LabConfig {
        LabConfig {
            nodes,
            pods: vec![1, nodes.clamp(1, 2)],
            ..Default::default()
        }
    }

    /// `nodes` light nodes (up to [`plan::MAX_NODES`]): no kubelet, no pods, kube-proxy on the
    /// first `kube_proxies` only. For the scale bench.
    pub fn light(nodes: usize, kube_proxies: usize) -> LabConfig {
        LabConfig {
            kube_proxies: Some(kube_proxies),
            ..LabConfig::bare(nodes)
        }
    }

    /// `nodes` nodes without kubelets or pods: the lab registers the Nodes and keeps their
    /// Leases itself. Quicker, for tests of what needs no workload (the API, the controller).
    pub fn bare(nodes: usize) -> LabConfig {
        LabConfig {
            nodes,
            pods: vec![],
            kubelets: false,
            ..Default::default()
        }
    }
}

impl Default for LabConfig {
    /// Three nodes with kubelets; two pods, on nodes 1 and 2, so node 3 has no local
    /// endpoint; ferrolb as processes.
    fn default() -> Self {
        LabConfig {
            nodes: 3,
            pods: vec![1, 2],
            prefix: None,
            heartbeat: Duration::from_secs(10),
            ipv6_only: false,
            controller_manager: false,
            kubelets: true,
            install: Install::Processes,
            kube_proxies: None,
            apiserver_feature_gates: vec![],
        }
    }
}

pub struct LabNode {
    pub index: usize,
    pub name: String,
    pub ns: NetNs,
    pub ipv4: IpAddr,
    pub ipv6: IpAddr,
    kube_proxy: Option<Proc>,
    /// Whether the node runs kube-proxy (and so gets it back when revived).
    proxied: bool,
    speaker: Option<Proc>,
    heartbeat: Option<JoinHandle<()>>,
    /// The kubelet (with containerd beside it), when the lab runs them.
    kubelet: Option<Proc>,
    mac: String,
}

impl LabNode {
    /// The MAC address of the node's LAN interface (read once: the link lives as long as the
    /// node, and tests ask for it in tight loops).
    pub fn mac(&self) -> &str {
        &self.mac
    }
}

/// A hello pod: a real Pod pinned to its node, run by the node's kubelet.
pub struct LabPod {
    pub name: String,
    pub node: usize,
    /// Its addresses, from its status (the CNI's).
    pub ips: Vec<IpAddr>,
}

/// Removes every namespace of the lab and its directory when dropped: the last thing to go.
struct Teardown {
    prefix: String,
    dir: PathBuf,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        // Before `down`, which removes the lab's directory with its logs.
        keep_logs(&self.dir);
        if let Err(e) = down(&self.prefix) {
            eprintln!("lab {}: teardown: {e:#}", self.prefix);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// With `FERROLB_LAB_KEEP_LOGS=DIR`, the processes' logs of a lab being torn down are moved
/// there (for a bench run's post-mortem); otherwise they go with the lab.
fn keep_logs(lab_dir: &Path) {
    let Some(keep) = std::env::var_os("FERROLB_LAB_KEEP_LOGS") else {
        return;
    };
    let keep = Path::new(&keep);
    let moved = std::fs::create_dir_all(keep).and_then(|()| {
        for entry in std::fs::read_dir(lab_dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log") {
                std::fs::rename(&path, keep.join(path.file_name().expect("a file")))?;
            }
        }
        Ok(())
    });
    if let Err(e) = moved {
        eprintln!("keeping the logs in {}: {e}", keep.display());
    }
}

/// Tears down the lab with this prefix: processes, namespaces (and so their links).
pub fn down(prefix: &str) -> Result<()> {
    let dash = format!("{prefix}-");
    for ns in netns::list(|n| n.starts_with(&dash))? {
        netns::destroy(&ns)?;
    }
    kubelet::cleanup(prefix)?;
    let _ = std::fs::remove_dir_all(lab_dir(prefix));
    Ok(())
}

/// Tears down every lab on this machine, including those of killed runs.
pub fn down_all() -> Result<Vec<String>> {
    let mut prefixes = running_prefixes()?;
    prefixes.extend(kubelet::prefixes_with_cgroups());
    prefixes.sort();
    prefixes.dedup();
    for p in &prefixes {
        down(p)?;
    }
    kubelet::restore_if_idle()?;
    // Directories of labs whose namespaces are already gone.
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.strip_prefix("ferrolb-lab-").is_some_and(is_prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(prefixes)
}

/// Prefixes of the labs that have namespaces on this machine.
pub fn running_prefixes() -> Result<Vec<String>> {
    let mut prefixes: Vec<String> =
        netns::list(|n| n.split_once('-').is_some_and(|(p, _)| is_prefix(p)))?
            .into_iter()
            .filter_map(|n| n.split_once('-').map(|(p, _)| p.to_string()))
            .collect();
    prefixes.sort();
    prefixes.dedup();
    Ok(prefixes)
}

fn is_prefix(s: &str) -> bool {
    s.strip_prefix(PREFIX_STEM)
        .is_some_and(|hex| hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn lab_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ferrolb-lab-{prefix}"))
}

fn fresh_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = nanos ^ (std::process::id().rotate_left(16)) ^ (nanos >> 16);
    format!("{PREFIX_STEM}{:04x}", mixed & 0xffff)
}

pub struct Lab {
    // Field order is drop order: pods and processes go before the namespaces.
    pods: Vec<LabPod>,
    nodes: Vec<LabNode>,
    scheduler: Option<Proc>,
    controller_manager: Option<Proc>,
    apiserver: Option<Proc>,
    etcd: Proc,
    forwarder: Forwarder,
    client: Client,
    pub prefix: String,
    pub dir: PathBuf,
    pub bins: Binaries,
    /// What the nodes run pods with, when the lab runs kubelets.
    pub agents: Option<NodeAgents>,
    pub lan: NetNs,
    pub cp: NetNs,
    pub client_ns: NetNs,
    /// What `helm install` printed (its NOTES among it), with [`Install::Helm`].
    pub helm_install_output: Option<String>,
    foreign: usize,
    controllers: std::collections::BTreeMap<usize, Proc>,
    /// Where each controller replica runs.
    controller_ns: std::collections::BTreeMap<usize, NetNs>,
    ca: Ca,
    /// Admin kubeconfig reaching the API server through the forwarder (for this process).
    pub kubeconfig: PathBuf,
    /// Admin kubeconfig reaching the API server on the LAN (for processes inside the lab).
    pub lan_kubeconfig: PathBuf,
    apiserver_args: Vec<String>,
    heartbeat: Duration,
    ipv6_only: bool,
    _teardown: Teardown,
}

impl Lab {
    pub async fn start(config: LabConfig) -> Result<Lab> {
        if !nix::unistd::geteuid().is_root() {
            bail!("the lab needs root: it creates network namespaces, links and iptables rules");
        }
        if config.nodes == 0 || config.nodes > plan::MAX_NODES {
            bail!(
                "a lab has 1 to {} nodes, not {}",
                plan::MAX_NODES,
                config.nodes
            );
        }
        if config.kubelets && config.nodes > plan::MAX_NODES_WITH_PODS {
            bail!(
                "nodes with kubelets need pod ranges: at most {}, not {}",
                plan::MAX_NODES_WITH_PODS,
                config.nodes
            );
        }
        if let Some(bad) = config.pods.iter().find(|n| **n == 0 || **n > config.nodes) {
            bail!(
                "pod on node {bad}, but the lab has nodes 1 to {}",
                config.nodes
            );
        }
        if !config.kubelets && !config.pods.is_empty() {
            bail!("the lab's pods are real pods: they need kubelets (LabConfig::kubelets)");
        }
        if !config.kubelets && config.install != Install::Processes {
            bail!("ferrolb's pods need kubelets to run: install it as processes, or set kubelets");
        }
        let on = |i: usize| config.pods.iter().filter(|n| **n == i).count();
        let room = plan::cni_addresses(config.ipv6_only);
        if let Some(i) = (1..=config.nodes).find(|i| on(*i) > room) {
            bail!(
                "node {i}'s CNI has addresses for {room} pods; it was given {}",
                on(i)
            );
        }
        let bins = tokio::task::spawn_blocking(binaries::ensure).await??;
        let agents = if config.kubelets {
            Some(tokio::task::spawn_blocking(binaries::ensure_node_agents).await??)
        } else {
            None
        };
        let prefix = config.prefix.clone().unwrap_or_else(fresh_prefix);
        if !is_prefix(&prefix) {
            bail!("a lab prefix is {PREFIX_STEM} and 4 hex digits, not {prefix:?}");
        }
        let dir = lab_dir(&prefix);
        let teardown = Teardown {
            prefix: prefix.clone(),
            dir: dir.clone(),
        };
        if !netns::list(|n| n.starts_with(&format!("{prefix}-")))?.is_empty() {
            bail!("a lab with prefix {prefix} is already running");
        }
        std::fs::create_dir_all(&dir)?;
        tracing::info!(%prefix, dir = %dir.display(), "starting lab");
        room_for_neighbours(config.nodes)?;

        // The LAN: a bridge in its own namespace, so no node's iptables sees bridged frames.
        let lan = NetNs::create(&format!("{prefix}-lan"))?;
        lan.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        lan.ip(&["link", "set", "br0", "up"])?;
        let cp = NetNs::create(&format!("{prefix}-cp"))?;
        attach(
            &lan,
            &prefix,
            "cp",
            &cp,
            plan::apiserver_v4().into(),
            plan::apiserver_v6().into(),
        )?;
        let client_ns = NetNs::create(&format!("{prefix}-client"))?;
        attach(
            &lan,
            &prefix,
            "client",
            &client_ns,
            plan::client_v4().into(),
            plan::client_v6().into(),
        )?;

        // PKI and the control plane.
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir)?;
        let ca = Ca::create(&pki_dir)?;
        let serving = ca.server(
            "apiserver",
            &[
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "localhost",
            ],
            &[
                plan::apiserver_v4().into(),
                plan::apiserver_v6().into(),
                "127.0.0.1".parse()?,
                plan::kubernetes_service_v4().into(),
                plan::kubernetes_service_v6().into(),
            ],
        )?;
        let admin = ca.client("admin", "lab-admin", &["system:masters"])?;
        let (sa_key, sa_pub) = pki::service_account_key(&pki_dir)?;

        let etcd = Proc::spawn(
            &cp,
            "etcd",
            &bins.etcd,
            &args(&[
                "--name=lab",
                &format!("--data-dir={}", dir.join("etcd").display()),
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=lab=http://127.0.0.1:2380",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ]),
            &dir.join("etcd.log"),
        )?;
        let apiserver_args = args(&[
            "--etcd-servers=http://127.0.0.1:2379",
            // Both families: the IPv6-only mode reaches it over IPv6.
            "--bind-address=::",
            "--secure-port=6443",
            &format!("--advertise-address={}", plan::apiserver_v4()),
            &format!(
                "--service-cluster-ip-range={}",
                if config.ipv6_only {
                    plan::SERVICE_CIDR_V6
                } else {
                    plan::SERVICE_CIDRS
                }
            ),
            &format!("--tls-cert-file={}", serving.cert.display()),
            &format!("--tls-private-key-file={}", serving.key.display()),
            &format!("--client-ca-file={}", ca.cert.display()),
            &format!("--cert-dir={}", pki_dir.display()),
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            "--service-account-issuer=https://kubernetes.default.svc",
            &format!("--service-account-key-file={}", sa_pub.display()),
            &format!("--service-account-signing-key-file={}", sa_key.display()),
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
        ]);
        let mut apiserver_args = apiserver_args;
        if !config.apiserver_feature_gates.is_empty() {
            apiserver_args.push(format!(
                "--feature-gates={}",
                config.apiserver_feature_gates.join(",")
            ));
        }
        if config.kubelets {
            // Kubelets are authorized as their Nodes; logs and exec reach them by InternalIP
            // (their names do not resolve) with a client certificate they trust.
            let to_kubelets = ca.client(
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                &["system:masters"],
            )?;
            for arg in apiserver_args.iter_mut() {
                if arg == "--authorization-mode=RBAC" {
                    *arg = "--authorization-mode=Node,RBAC".into();
                }
            }
            // Real pods get their ServiceAccount's token, as in any cluster: the admission
            // plugin comes back (kube-controller-manager creates the accounts it needs).
            apiserver_args.retain(|arg| arg != "--disable-admission-plugins=ServiceAccount");
            // Pods reach it through the `kubernetes` Service: it keeps that Service's
            // endpoints itself (the default lease reconciler), at an address of the Service's
            // family.
            apiserver_args.retain(|arg| arg != "--endpoint-reconciler-type=none");
            if config.ipv6_only {
                for arg in apiserver_args.iter_mut() {
                    if arg.starts_with("--advertise-address=") {
                        *arg = format!("--advertise-address={}", plan::apiserver_v6());
                    }
                }
            }
            apiserver_args.extend(args(&[
                "--enable-admission-plugins=NodeRestriction",
                "--kubelet-preferred-address-types=InternalIP",
                &format!(
                    "--kubelet-client-certificate={}",
                    to_kubelets.cert.display()
                ),
                &format!("--kubelet-client-key={}", to_kubelets.key.display()),
            ]));
        }
        let apiserver = Proc::spawn(
            &cp,
            "kube-apiserver",
            &bins.kube_apiserver,
            &apiserver_args,
            &dir.join("kube-apiserver.log"),
        )?;

        let forwarder = Forwarder::start(&cp, SocketAddr::new("127.0.0.1".parse()?, 6443)).await?;
        let kubeconfig = dir.join("admin.kubeconfig");
        pki::write_kubeconfig(
            &kubeconfig,
            &format!("https://{}", forwarder.local_addr()),
            &ca.cert,
            "lab-admin",
            Credentials::Cert(&admin),
        )?;
        let lan_kubeconfig = dir.join("admin-lan.kubeconfig");
        pki::write_kubeconfig(
            &lan_kubeconfig,
            &lan_apiserver_url(config.ipv6_only),
            &ca.cert,
            "lab-admin",
            Credentials::Cert(&admin),
        )?;
        let client = client_for(&kubeconfig).await?;

        let mut lab = Lab {
            pods: vec![],
            nodes: vec![],
            scheduler: None,
            controller_manager: None,
            apiserver: Some(apiserver),
            etcd,
            forwarder,
            client,
            prefix: prefix.clone(),
            dir: dir.clone(),
            bins,
            agents: agents.clone(),
            lan,
            cp,
            helm_install_output: None,
            client_ns,
            foreign: 0,
            controllers: Default::default(),
            controller_ns: Default::default(),
            ca,
            kubeconfig,
            lan_kubeconfig,
            apiserver_args,
            heartbeat: config.heartbeat,
            ipv6_only: config.ipv6_only,
            _teardown: teardown,
        };
        lab.wait_for_apiserver(Duration::from_secs(90)).await?;
        match config.install {
            Install::Processes => lab.apply_api().await?,
            Install::Kustomize => lab.apply_deploy().await?,
            Install::Helm => lab.helm_install_output = Some(lab.helm_install(&[]).await?),
        }
        lab.wait_for_crds().await?;
        if config.install != Install::Processes {
            // The speakers' pods mount it; with kustomize it is the operator's to make.
            lab.gossip_key().await?;
        }
        // Pods need the ServiceAccounts and the root CA ConfigMap it publishes.
        if config.controller_manager || config.kubelets {
            lab.controller_manager = Some(lab.start_controller_manager(config.kubelets)?);
            lab.wait_for_default_service_account(Duration::from_secs(30))
                .await?;
        }
        if config.kubelets {
            lab.scheduler = Some(lab.start_scheduler()?);
            control_plane_pod_routes(&lab.cp, config.nodes)?;
        }

        // Nodes: a namespace on the LAN, a Node object with its heartbeat, kube-proxy.
        let proxy_kubeconfig = dir.join("kube-proxy.kubeconfig");
        lab.certificate_kubeconfig(
            &proxy_kubeconfig,
            "kube-proxy",
            &lan_apiserver_url(config.ipv6_only),
            "system:kube-proxy",
            &[],
        )?;
        for i in 1..=config.nodes {
            let node = lab
                .add_node(i, &config, &proxy_kubeconfig, agents.as_ref())
                .await?;
            lab.nodes.push(node);
        }
        if agents.is_some() {
            lab.wait_for_registration(Duration::from_secs(90)).await?;
        }
        lab.wait_for_kube_proxies(Duration::from_secs(60)).await?;
        lab.start_pods(&config.pods, Duration::from_secs(120))
            .await?;
        if config.install != Install::Processes {
            lab.wait_for_ferrolb(Duration::from_secs(180)).await?;
        }
        tracing::info!(%prefix, "lab is up");
        Ok(lab)
    }

    /// Whether the lab runs in its IPv6-only mode ([`LabConfig::ipv6_only`]).
    pub fn ipv6_only(&self) -> bool {
        self.ipv6_only
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn nodes(&self) -> &[LabNode] {
        &self.nodes
    }

    /// Node `i`, 1-based.
    pub fn node(&self, i: usize) -> &LabNode {
        &self.nodes[i - 1]
    }

    pub fn pods(&self) -> &[LabPod] {
        &self.pods
    }

    /// The log file of a lab process, for error messages and the curious.
    pub fn log_path(&self, process: &str) -> PathBuf {
        self.dir.join(format!("{process}.log"))
    }

    /// The last `lines` lines of a lab process's log, for failure messages.
    pub fn log_tail(&self, process: &str, lines: usize) -> String {
        crate::process::tail(&self.log_path(process), lines)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(h) = node.heartbeat.take() {
                h.abort();
            }
        }
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}
