//! `Lab`: a running test bed. `Lab::start` builds it; dropping it tears everything down.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::task::JoinHandle;

use crate::binaries::{self, Binaries};
use crate::cluster::{self, Endpoint, ServiceSpec};
use crate::forward::Forwarder;
use crate::hello::HelloServer;
use crate::netns::{self, NetNs};
use crate::pki::{self, Ca, Credentials};
use crate::plan;
use crate::probe::{self, Answer, ProbeConfig, ProbeReport};
use crate::process::Proc;

/// Every lab namespace starts with this, then 4 hex digits, then `-`.
pub const PREFIX_STEM: &str = "flb";

#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Number of nodes (1 to 15).
    pub nodes: usize,
    /// The node (1-based) of each hello pod, in pod order: pod `hello-k` is the k-th entry.
    pub pods: Vec<usize>,
    /// The namespace and link prefix; a fresh one when `None`.
    pub prefix: Option<String>,
    /// How often each node renews its Lease, like a kubelet (10 s).
    pub heartbeat: Duration,
}

impl LabConfig {
    /// `nodes` nodes; two pods, on nodes 1 and 2 (both on node 1 when it is alone).
    pub fn with_nodes(nodes: usize) -> LabConfig {
        LabConfig {
            nodes,
            pods: vec![1, nodes.clamp(1, 2)],
            ..Default::default()
        }
    }
}

impl Default for LabConfig {
    /// Three nodes; two pods, on nodes 1 and 2, so node 3 has no local endpoint.
    fn default() -> Self {
        LabConfig {
            nodes: 3,
            pods: vec![1, 2],
            prefix: None,
            heartbeat: Duration::from_secs(10),
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
    speaker: Option<Proc>,
    heartbeat: Option<JoinHandle<()>>,
}

impl LabNode {
    /// The MAC address of the node's LAN interface.
    pub fn mac(&self) -> Result<String> {
        link_mac(&self.ns, "eth0")
    }
}

pub struct LabPod {
    pub name: String,
    pub node: usize,
    pub ns: NetNs,
    pub ipv4: IpAddr,
    pub ipv6: IpAddr,
    pub ready: bool,
    _server: HelloServer,
}

/// Removes every namespace of the lab and its directory when dropped: the last thing to go.
struct Teardown {
    prefix: String,
    dir: PathBuf,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Err(e) = down(&self.prefix) {
            eprintln!("lab {}: teardown: {e:#}", self.prefix);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Tears down the lab with this prefix: processes, namespaces (and so their links).
pub fn down(prefix: &str) -> Result<()> {
    let dash = format!("{prefix}-");
    for ns in netns::list(|n| n.starts_with(&dash))? {
        netns::destroy(&ns)?;
    }
    let _ = std::fs::remove_dir_all(lab_dir(prefix));
    Ok(())
}

/// Tears down every lab on this machine, including those of killed runs.
pub fn down_all() -> Result<Vec<String>> {
    let prefixes = running_prefixes()?;
    for p in &prefixes {
        down(p)?;
    }
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

fn link_mac(ns: &NetNs, link: &str) -> Result<String> {
    let out = ns.ip(&["link", "show", link])?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("no MAC on {link} in {}", ns.name()))
}

pub struct Lab {
    // Field order is drop order: pods and processes go before the namespaces.
    pods: Vec<LabPod>,
    nodes: Vec<LabNode>,
    apiserver: Option<Proc>,
    etcd: Proc,
    forwarder: Forwarder,
    client: Client,
    pub prefix: String,
    pub dir: PathBuf,
    pub bins: Binaries,
    pub lan: NetNs,
    pub cp: NetNs,
    pub client_ns: NetNs,
    services: Vec<(String, String)>,
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
        if let Some(bad) = config.pods.iter().find(|n| **n == 0 || **n > config.nodes) {
            bail!(
                "pod on node {bad}, but the lab has nodes 1 to {}",
                config.nodes
            );
        }
        let bins = tokio::task::spawn_blocking(binaries::ensure).await??;
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
                "192.0.2.1".parse()?,
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
            "--bind-address=0.0.0.0",
            "--secure-port=6443",
            &format!("--advertise-address={}", plan::apiserver_v4()),
            &format!("--service-cluster-ip-range={}", plan::SERVICE_CIDRS),
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
            &lan_apiserver_url(),
            &ca.cert,
            "lab-admin",
            Credentials::Cert(&admin),
        )?;
        let client = client_for(&kubeconfig).await?;

        let mut lab = Lab {
            pods: vec![],
            nodes: vec![],
            apiserver: Some(apiserver),
            etcd,
            forwarder,
            client,
            prefix: prefix.clone(),
            dir: dir.clone(),
            bins,
            lan,
            cp,
            client_ns,
            services: vec![],
            foreign: 0,
            controllers: Default::default(),
            controller_ns: Default::default(),
            ca,
            kubeconfig,
            lan_kubeconfig,
            apiserver_args,
            heartbeat: config.heartbeat,
            _teardown: teardown,
        };
        lab.wait_for_apiserver(Duration::from_secs(90)).await?;
        lab.apply_deploy().await?;

        // Nodes: a namespace on the LAN, a Node object with its heartbeat, kube-proxy.
        let proxy_creds = lab.ca.client("kube-proxy", "system:kube-proxy", &[])?;
        let proxy_kubeconfig = dir.join("kube-proxy.kubeconfig");
        pki::write_kubeconfig(
            &proxy_kubeconfig,
            &lan_apiserver_url(),
            &lab.ca.cert,
            "system:kube-proxy",
            Credentials::Cert(&proxy_creds),
        )?;
        for i in 1..=config.nodes {
            let node = lab.add_node(i, &config, &proxy_kubeconfig).await?;
            lab.nodes.push(node);
        }
        // Pods behind their nodes.
        let mut per_node = vec![0usize; config.nodes + 1];
        for (k, &node) in config.pods.iter().enumerate() {
            per_node[node] += 1;
            let pod = lab.add_pod(&format!("hello-{}", k + 1), node, per_node[node])?;
            lab.pods.push(pod);
        }
        lab.wait_for_kube_proxies(Duration::from_secs(60)).await?;
        tracing::info!(%prefix, "lab is up");
        Ok(lab)
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

    async fn wait_for_apiserver(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ready = self
                .client
                .request_text(http::Request::get("/readyz").body(vec![])?)
                .await;
            if matches!(&ready, Ok(body) if body.trim() == "ok") {
                return Ok(());
            }
            let running = self.apiserver.as_mut().is_some_and(Proc::running);
            if !running || Instant::now() > deadline {
                let log = self
                    .apiserver
                    .as_ref()
                    .map(|p| p.log_tail(15))
                    .unwrap_or_default();
                bail!("kube-apiserver did not become ready ({ready:?}); its log ends with:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Applies deploy/ exactly as an operator would (`kubectl apply -k deploy`) and waits for
    /// the CRDs to be served.
    async fn apply_deploy(&self) -> Result<()> {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let deploy = deploy.canonicalize()?.display().to_string();
        self.kubectl(&["apply", "--server-side", "-k", &deploy])
            .await?;
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/ipaddresspools.ferrolb.io",
            "crd/l2advertisements.ferrolb.io",
        ])
        .await?;
        Ok(())
    }

    async fn add_node(
        &mut self,
        i: usize,
        config: &LabConfig,
        proxy_kubeconfig: &Path,
    ) -> Result<LabNode> {
        let name = format!("node-{i}");
        let ns = NetNs::create(&format!("{}-n{i}", self.prefix))?;
        let (ipv4, ipv6): (IpAddr, IpAddr) = (plan::node_v4(i).into(), plan::node_v6(i).into());
        attach(&self.lan, &self.prefix, &format!("n{i}"), &ns, ipv4, ipv6)?;
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            // A link flap keeps the node's IPv6 address, as its network configuration would.
            ("net.ipv6.conf.eth0.keep_addr_on_down", "1"),
        ] {
            ns.sysctl(key, value)?;
        }
        pod_routes(&ns, i, config.nodes)?;
        cluster::create_node(
            &self.client,
            &name,
            &[ipv4, ipv6],
            &[plan::pod_cidr_v4(i), plan::pod_cidr_v6(i)],
        )
        .await?;
        let heartbeat = cluster::heartbeat(&self.client, &name, config.heartbeat);
        let kube_proxy = self.start_kube_proxy(&ns, &name, proxy_kubeconfig)?;
        Ok(LabNode {
            index: i,
            name,
            ns,
            ipv4,
            ipv6,
            kube_proxy: Some(kube_proxy),
            speaker: None,
            heartbeat: Some(heartbeat),
        })
    }

    /// kube-proxy in iptables mode: the default of kubeadm, k3s and most bare-metal clusters.
    /// The conntrack flags at 0 leave the read-only conntrack sysctls of a namespace alone.
    fn start_kube_proxy(&self, ns: &NetNs, node: &str, kubeconfig: &Path) -> Result<Proc> {
        Proc::spawn(
            ns,
            &format!("kube-proxy-{node}"),
            &self.bins.kube_proxy,
            &args(&[
                &format!("--kubeconfig={}", kubeconfig.display()),
                &format!("--hostname-override={node}"),
                "--proxy-mode=iptables",
                &format!("--cluster-cidr={}", plan::CLUSTER_CIDRS),
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0s",
                "--conntrack-tcp-timeout-close-wait=0s",
                "--healthz-bind-address=0.0.0.0:10256",
                "--metrics-bind-address=127.0.0.1:10249",
                "--v=1",
            ]),
            &self.log_path(&format!("kube-proxy-{node}")),
        )
    }

    fn add_pod(&self, name: &str, node: usize, k: usize) -> Result<LabPod> {
        if k > plan::MAX_PODS_PER_NODE {
            bail!("at most {} pods fit on one node", plan::MAX_PODS_PER_NODE);
        }
        let host = &self.nodes[node - 1].ns;
        let ns = NetNs::create(&format!("{}-n{node}p{k}", self.prefix))?;
        let (ipv4, ipv6) = (plan::pod_v4(node, k), plan::pod_v6(node, k));
        let link = format!("pod{k}");
        veth(host, &link, &ns)?;
        host.ip(&["link", "set", &link, "up"])?;
        // Routed like Calico: the node answers every ARP of the pod (proxy ARP), so the pod
        // needs only an on-link default route; IPv6 goes via the node's link-local address.
        host.sysctl(&format!("net.ipv4.conf.{link}.proxy_arp"), "1")?;
        // And at once, as Calico sets it: the kernel's default delays each proxy ARP reply by
        // up to 0.8 s, which stalls a pod's first reply to every new (masqueraded) peer.
        host.sysctl(&format!("net.ipv4.neigh.{link}.proxy_delay"), "0")?;
        host.ip(&["route", "add", &format!("{ipv4}/32"), "dev", &link])?;
        host.ip(&["-6", "route", "add", &format!("{ipv6}/128"), "dev", &link])?;
        ns.ip(&["addr", "add", &format!("{ipv4}/32"), "dev", "eth0"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{ipv6}/128"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", "default", "dev", "eth0"])?;
        let host_ll = link_local(host, &link)?;
        ns.ip(&[
            "-6", "route", "add", "default", "via", &host_ll, "dev", "eth0",
        ])?;
        let server = HelloServer::start(&ns, name)?;
        Ok(LabPod {
            name: name.to_string(),
            node,
            ns,
            ipv4: ipv4.into(),
            ipv6: ipv6.into(),
            ready: true,
            _server: server,
        })
    }

    async fn wait_for_kube_proxies(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        for node in &mut self.nodes {
            let ns = node.ns.clone();
            let target = SocketAddr::new(node.ipv4, 10256);
            loop {
                let ns = ns.clone();
                let ok = tokio::task::spawn_blocking(move || {
                    ns.enter(|| http_status(target, "/healthz"))
                })
                .await??
                .is_ok_and(|code| code == 200);
                if ok {
                    break;
                }
                let proxy = node.kube_proxy.as_mut().expect("kube-proxy started");
                if !proxy.running() || Instant::now() > deadline {
                    bail!(
                        "kube-proxy on {} is not healthy; its log ends with:\n{}",
                        node.name,
                        proxy.log_tail(15)
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// `kubectl ARGS…` as the lab admin, from inside the control-plane namespace.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_as(&self.lan_kubeconfig, args, None).await
    }

    /// `kubectl ARGS…` with `stdin`, as the user of `kubeconfig`.
    pub async fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String> {
        let mut cmd = self.cp.command(&self.bins.kubectl);
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args);
        let input = stdin.map(str::to_string);
        let out = tokio::task::spawn_blocking(move || -> Result<std::process::Output> {
            use std::io::Write;
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn()?;
            if let Some(input) = input {
                child
                    .stdin
                    .take()
                    .expect("piped")
                    .write_all(input.as_bytes())?;
            }
            drop(child.stdin.take());
            Ok(child.wait_with_output()?)
        })
        .await??;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A kubeconfig for ServiceAccount `namespace/name`, with a token from the TokenRequest
    /// API: how the lab runs ferrolb under its own RBAC.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let token = self
            .kubectl(&["create", "token", name, "-n", namespace, "--duration=24h"])
            .await?;
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        let user = format!("system:serviceaccount:{namespace}:{name}");
        pki::write_kubeconfig(
            &path,
            &lan_apiserver_url(),
            &self.ca.cert,
            &user,
            Credentials::Token(token.trim()),
        )?;
        Ok(path)
    }

    /// Creates a LoadBalancer Service in front of the lab's hello pods, with EndpointSlices
    /// that follow the pods' readiness.
    pub async fn expose(
        &mut self,
        spec: &ServiceSpec,
    ) -> Result<k8s_openapi::api::core::v1::Service> {
        let svc = cluster::create_service(&self.client, spec).await?;
        self.services
            .push((spec.namespace.clone(), spec.name.clone()));
        self.write_slices(&spec.namespace, &spec.name).await?;
        Ok(svc)
    }

    async fn write_slices(&self, namespace: &str, service: &str) -> Result<()> {
        let endpoints: Vec<Endpoint> = self
            .pods
            .iter()
            .flat_map(|p| {
                [p.ipv4, p.ipv6].map(|ip| Endpoint {
                    pod: p.name.clone(),
                    node: format!("node-{}", p.node),
                    ip,
                    ready: p.ready,
                })
            })
            .collect();
        cluster::write_endpoint_slices(&self.client, namespace, service, &endpoints).await
    }

    /// Marks a pod ready or not in the EndpointSlices of every exposed Service.
    pub async fn set_pod_ready(&mut self, pod: &str, ready: bool) -> Result<()> {
        let p = self
            .pods
            .iter_mut()
            .find(|p| p.name == pod)
            .with_context(|| format!("no pod {pod}"))?;
        p.ready = ready;
        for (ns, name) in self.services.clone() {
            self.write_slices(&ns, &name).await?;
        }
        Ok(())
    }

    /// The addresses in a Service's `status.loadBalancer.ingress`, in order.
    pub async fn ingress(&self, namespace: &str, name: &str) -> Result<Vec<IpAddr>> {
        let svc = kube::Api::<k8s_openapi::api::core::v1::Service>::namespaced(
            self.client.clone(),
            namespace,
        )
        .get(name)
        .await?;
        Ok(crds::read::service(&svc).ingress)
    }

    /// Writes `status.loadBalancer.ingress` by hand, as the controller would.
    pub async fn set_ingress(&self, namespace: &str, name: &str, ips: &[IpAddr]) -> Result<()> {
        cluster::set_ingress(&self.client, namespace, name, ips).await
    }

    /// Points the client's neighbour entry for `ip` at node `i`, as if that node had answered
    /// ARP/NDP for it (until the speaker does it for real).
    pub fn point_client_at(&self, ip: IpAddr, i: usize) -> Result<()> {
        let mac = self.node(i).mac()?;
        self.client_ns.ip(&[
            "neigh",
            "replace",
            &ip.to_string(),
            "lladdr",
            &mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
        Ok(())
    }

    /// The client's neighbour entry for `ip` (`ip neigh show`), for evidence.
    pub fn client_neighbour(&self, ip: IpAddr) -> Result<String> {
        Ok(self
            .client_ns
            .ip(&["neigh", "show", &ip.to_string()])?
            .trim()
            .to_string())
    }

    /// One HTTP GET from the client to `ip:port` on a new connection: who answered, and
    /// which client address it saw.
    pub async fn get(&self, ip: IpAddr, port: u16) -> Result<Answer> {
        self.get_within(ip, port, Duration::from_secs(2)).await
    }

    /// [`Lab::get`] with its own time limit.
    pub async fn get_within(&self, ip: IpAddr, port: u16, timeout: Duration) -> Result<Answer> {
        let ns = self.client_ns.clone();
        let target = SocketAddr::new(ip, port);
        tokio::task::spawn_blocking(move || ns.enter(|| probe::request(target, timeout)))
            .await??
            .map_err(|e| anyhow::anyhow!("GET http://{target}/ from the client: {e}"))
    }

    /// Runs the failover probe from the client namespace.
    pub async fn probe(&self, config: ProbeConfig) -> Result<ProbeReport> {
        let ns = self.client_ns.clone();
        tokio::task::spawn_blocking(move || probe::run(&ns, &config)).await?
    }

    /// Starts capturing ARP and NDP on the LAN bridge (tcpdump, with link-level headers and
    /// timestamps); stop it with [`Capture::finish`].
    pub fn capture_neighbour_traffic(&self, name: &str) -> Result<Capture> {
        let log = self.dir.join(format!("capture-{name}.txt"));
        let proc = Proc::spawn(
            &self.lan,
            &format!("tcpdump-{name}"),
            Path::new("tcpdump"),
            &args(&[
                "-i",
                "br0",
                "-tt",
                "-e",
                "-n",
                "-l",
                "arp or (icmp6 and (ip6[40] == 135 or ip6[40] == 136))",
            ]),
            &log,
        )?;
        // tcpdump needs a moment before it sees packets.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Capture { proc, log })
    }

    /// Starts replica `replica` of ferrolb-controller (the binary at `binary`) in the
    /// control-plane namespace, as its ServiceAccount (a TokenRequest token), with leader
    /// election, as the Deployment in deploy/ runs it.
    pub async fn start_controller(&mut self, binary: &Path, replica: usize) -> Result<()> {
        self.start_controller_on(binary, replica, None).await
    }

    /// [`Lab::start_controller`] in node `node`'s namespace instead (`None`: the control
    /// plane's), so that its path to the API server can be cut on its own
    /// ([`Lab::cut_api_path`]).
    pub async fn start_controller_on(
        &mut self,
        binary: &Path,
        replica: usize,
        node: Option<usize>,
    ) -> Result<()> {
        if !binary.is_file() {
            bail!(
                "no controller binary at {} (cargo build -p controller)",
                binary.display()
            );
        }
        let kubeconfig = self
            .service_account_kubeconfig("ferrolb-system", "ferrolb-controller")
            .await?;
        let name = format!("controller-{replica}");
        let ns = match node {
            None => self.cp.clone(),
            Some(i) => self.node(i).ns.clone(),
        };
        if let Some(mut old) = self.controllers.remove(&replica) {
            old.kill();
        }
        let proc = Proc::spawn_with_env(
            &ns,
            &name,
            binary,
            &args(&[
                "--leader-elect",
                "--lease-name=ferrolb-controller",
                "--lease-namespace=ferrolb-system",
                // Shorter than the Deployment's 15 s, so that takeover tests take seconds.
                "--lease-duration-seconds=4",
                &format!("--identity={name}"),
                &format!("--metrics-addr=127.0.0.1:{}", 9650 + replica),
                "--log-level=info,kube=warn",
            ]),
            &[("KUBECONFIG", &kubeconfig)],
            &self.log_path(&name),
        )?;
        self.controllers.insert(replica, proc);
        self.controller_ns.insert(replica, ns);
        Ok(())
    }

    /// Cuts (or restores) node `i`'s path to the API server, both ways, without touching its
    /// link: a partition, not a death. Everything in the node's namespace is cut off.
    pub fn cut_api_path(&self, i: usize, cut: bool) -> Result<()> {
        let op = if cut { "-I" } else { "-D" };
        let ns = &self.node(i).ns;
        let server = plan::apiserver_v4().to_string();
        for (chain, peer, port) in [("OUTPUT", "-d", "--dport"), ("INPUT", "-s", "--sport")] {
            ns.exec(
                "iptables",
                &[
                    "-w", op, chain, peer, &server, "-p", "tcp", port, "6443", "-j", "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Starts ferrolb-speaker (the binary at `binary`) in node `i`'s namespace, as the
    /// speaker's ServiceAccount, with the gossip key the lab keeps in the `ferrolb-gossip`
    /// Secret, as the DaemonSet in deploy/ runs it.
    pub async fn start_speaker(&mut self, binary: &Path, i: usize) -> Result<()> {
        self.start_speaker_with(binary, i, &[]).await
    }

    /// [`Lab::start_speaker`] with extra flags, as a DaemonSet's `args` would add them.
    pub async fn start_speaker_with(
        &mut self,
        binary: &Path,
        i: usize,
        extra: &[&str],
    ) -> Result<()> {
        if !binary.is_file() {
            bail!(
                "no speaker binary at {} (cargo build -p speaker)",
                binary.display()
            );
        }
        let key = self.gossip_key().await?;
        let kubeconfig = self
            .service_account_kubeconfig("ferrolb-system", "ferrolb-speaker")
            .await?;
        let name = format!("speaker-node-{i}");
        // A restart: the old speaker goes first, or the new one finds its ports taken.
        if let Some(mut old) = self.nodes[i - 1].speaker.take() {
            old.kill();
        }
        let node = &self.nodes[i - 1];
        let node_arg = format!("--node-name={}", node.name);
        let key_arg = format!("--gossip-key-file={}", key.display());
        let mut flags = vec![
            node_arg.as_str(),
            key_arg.as_str(),
            "--log-level=info,kube=warn",
        ];
        flags.extend_from_slice(extra);
        let proc = Proc::spawn_with_env(
            &node.ns,
            &name,
            binary,
            &args(&flags),
            &[("KUBECONFIG", &kubeconfig)],
            &self.log_path(&name),
        )?;
        self.nodes[i - 1].speaker = Some(proc);
        Ok(())
    }

    /// The gossip key file, made once along with the `ferrolb-gossip` Secret it mirrors.
    async fn gossip_key(&self) -> Result<PathBuf> {
        let path = self.dir.join("gossip.key");
        if !path.exists() {
            let key = format!("{:032x}{:032x}", rand_u128(), rand_u128());
            let literal = format!("--from-literal=key={key}");
            self.kubectl(&[
                "-n",
                "ferrolb-system",
                "create",
                "secret",
                "generic",
                "ferrolb-gossip",
                &literal,
            ])
            .await?;
            std::fs::write(&path, &key)?;
        }
        Ok(path)
    }

    /// Sends `signal` to node `i`'s speaker (SIGTERM: a rolling restart or a drain).
    pub fn signal_speaker(&self, i: usize, signal: nix::sys::signal::Signal) -> Result<()> {
        match &self.node(i).speaker {
            Some(p) => p.signal(signal),
            None => bail!("no speaker runs on node {i}"),
        }
    }

    /// Whether node `i`'s speaker has exited; its log's last lines if so.
    pub fn speaker_exited(&mut self, i: usize) -> Option<String> {
        let p = self.nodes[i - 1].speaker.as_mut()?;
        (!p.running()).then(|| p.log_tail(20))
    }

    /// Kills controller replica `replica` at once (SIGKILL), as a crash would.
    pub fn kill_controller(&mut self, replica: usize) {
        if let Some(mut p) = self.controllers.remove(&replica) {
            p.kill();
        }
    }

    /// Sends `signal` to controller replica `replica` (a crash is SIGKILL), without waiting.
    pub fn signal_controller(
        &self,
        replica: usize,
        signal: nix::sys::signal::Signal,
    ) -> Result<()> {
        match self.controllers.get(&replica) {
            Some(p) => p.signal(signal),
            None => bail!("controller replica {replica} is not running"),
        }
    }

    /// Whether controller replica `replica` is running; its log's last lines when it is not.
    pub fn controller_exited(&mut self, replica: usize) -> Option<String> {
        let p = self.controllers.get_mut(&replica)?;
        (!p.running()).then(|| p.log_tail(20))
    }

    /// The `/metrics` text of controller replica `replica`.
    pub async fn controller_metrics(&self, replica: usize) -> Result<String> {
        let ns = self
            .controller_ns
            .get(&replica)
            .cloned()
            .unwrap_or_else(|| self.cp.clone());
        let target = SocketAddr::new("127.0.0.1".parse()?, 9650 + replica as u16);
        tokio::task::spawn_blocking(move || ns.enter(|| http_get(target, "/metrics"))).await??
    }

    /// `kubectl apply` of `yaml` as the lab's admin.
    pub async fn apply(&self, yaml: &str) -> Result<()> {
        self.kubectl_as(&self.lan_kubeconfig, &["apply", "-f", "-"], Some(yaml))
            .await?;
        Ok(())
    }

    /// The reasons and notes of an object's Events (events.k8s.io), one per line.
    pub async fn events(&self, namespace: &str, name: &str) -> Result<String> {
        self.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-n",
            namespace,
            "--field-selector",
            &format!("regarding.name={name}"),
            "-o",
            "custom-columns=REASON:.reason,NOTE:.note",
            "--no-headers",
        ])
        .await
    }

    /// [`Lab::events`] once they contain `needle`, or as they are after 15 s.
    pub async fn eventually_events(
        &self,
        namespace: &str,
        name: &str,
        needle: &str,
    ) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.events(namespace, name).await?;
            if text.contains(needle) || Instant::now() > deadline {
                return Ok(text);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether node `i`'s kube-proxy has programmed rules for traffic to `ip` (its NAT table
    /// matches the address): only then can that node serve it.
    pub fn proxy_programs(&self, i: usize, ip: IpAddr) -> Result<bool> {
        let (save, host) = match ip {
            IpAddr::V4(_) => ("iptables-save", format!("-d {ip}/32 ")),
            IpAddr::V6(_) => ("ip6tables-save", format!("-d {ip}/128 ")),
        };
        let rules = self.node(i).ns.exec(save, &["-t", "nat"])?;
        Ok(rules.contains(&host))
    }

    /// Node `i`'s speaker's `/metrics` (it listens on the node's address, port 9651).
    pub async fn speaker_metrics(&self, i: usize) -> Result<String> {
        let node = self.node(i);
        let (ns, target) = (node.ns.clone(), SocketAddr::new(node.ipv4, 9651));
        tokio::task::spawn_blocking(move || ns.enter(|| http_get(target, "/metrics"))).await??
    }

    // Faults.

    /// Node `i` dies as a machine would: its speaker and kube-proxy killed, heartbeat stopped,
    /// LAN link down.
    pub fn kill_node(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i - 1];
        for mut p in [node.speaker.take(), node.kube_proxy.take()]
            .into_iter()
            .flatten()
        {
            p.kill();
        }
        if let Some(h) = node.heartbeat.take() {
            h.abort();
        }
        self.lan
            .ip(&["link", "set", &format!("{}-n{i}", self.prefix), "down"])?;
        Ok(())
    }

    /// Brings node `i` back after [`Lab::kill_node`], as a rebooted machine: LAN link up,
    /// kube-proxy and the heartbeat running again. Its speaker is the caller's to start.
    pub async fn revive_node(&mut self, i: usize) -> Result<()> {
        self.lan
            .ip(&["link", "set", &format!("{}-n{i}", self.prefix), "up"])?;
        let node = &self.nodes[i - 1];
        let kube_proxy = if node.kube_proxy.is_none() {
            Some(self.start_kube_proxy(
                &node.ns,
                &node.name,
                &self.dir.join("kube-proxy.kubeconfig"),
            )?)
        } else {
            None
        };
        let heartbeat = node
            .heartbeat
            .is_none()
            .then(|| cluster::heartbeat(&self.client, &node.name, self.heartbeat));
        let node = &mut self.nodes[i - 1];
        if kube_proxy.is_some() {
            node.kube_proxy = kube_proxy;
        }
        if heartbeat.is_some() {
            node.heartbeat = heartbeat;
        }
        Ok(())
    }

    /// Restarts every running kube-proxy. After an API server restart client-go's watches back
    /// off for up to 30 s (resetting only after 2 quiet minutes); a fresh kube-proxy lists at
    /// once, so tests that restart the API server repeatedly use this between measurements.
    pub fn restart_kube_proxies(&mut self) -> Result<()> {
        let kubeconfig = self.dir.join("kube-proxy.kubeconfig");
        for i in 0..self.nodes.len() {
            if let Some(mut old) = self.nodes[i].kube_proxy.take() {
                old.kill();
                let node = &self.nodes[i];
                let fresh = self.start_kube_proxy(&node.ns, &node.name, &kubeconfig)?;
                self.nodes[i].kube_proxy = Some(fresh);
            }
        }
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) a label on node `i`'s Node object.
    pub async fn label_node(&self, i: usize, key: &str, value: Option<&str>) -> Result<()> {
        let label = match value {
            Some(v) => format!("{key}={v}"),
            None => format!("{key}-"),
        };
        self.kubectl(&["label", "--overwrite", "node", &self.node(i).name, &label])
            .await?;
        Ok(())
    }

    /// Stops node `i`'s Lease heartbeat, as a dead kubelet would.
    pub fn stop_heartbeat(&mut self, i: usize) {
        if let Some(h) = self.nodes[i - 1].heartbeat.take() {
            h.abort();
        }
    }

    /// Sets node `i`'s LAN interface (`eth0` inside the node) down or up.
    /// Routes through a link go with it; coming back up, the node's routes to the other
    /// nodes' pods are restored, as a host's network configuration would.
    pub fn set_link(&self, i: usize, up: bool) -> Result<()> {
        let ns = &self.node(i).ns;
        ns.ip(&["link", "set", "eth0", if up { "up" } else { "down" }])?;
        if up {
            // The connected routes come back a moment after the link does.
            let deadline = Instant::now() + Duration::from_secs(3);
            while let Err(e) = pod_routes(ns, i, self.nodes.len()) {
                if Instant::now() > deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Marks node `i` unschedulable, or schedulable again.
    pub async fn cordon(&self, i: usize, cordoned: bool) -> Result<()> {
        let verb = if cordoned { "cordon" } else { "uncordon" };
        self.kubectl(&[verb, &self.node(i).name]).await?;
        Ok(())
    }

    /// Stops kube-apiserver (etcd keeps running).
    pub fn stop_apiserver(&mut self) {
        if let Some(mut p) = self.apiserver.take() {
            p.stop(Duration::from_secs(5));
        }
    }

    /// Starts kube-apiserver again with the same flags and waits until it is ready.
    pub async fn start_apiserver(&mut self) -> Result<()> {
        if self.apiserver.is_none() {
            self.apiserver = Some(Proc::spawn(
                &self.cp,
                "kube-apiserver",
                &self.bins.kube_apiserver,
                &self.apiserver_args,
                &self.log_path("kube-apiserver"),
            )?);
        }
        self.wait_for_apiserver(Duration::from_secs(90)).await
    }

    /// A host on the LAN that is not a node and owns `ips` (the kernel answers ARP/NDP for
    /// them): a foreign claim on an address.
    pub fn add_foreign_host(&mut self, ips: &[IpAddr]) -> Result<NetNs> {
        self.foreign += 1;
        let k = self.foreign;
        let ns = NetNs::create(&format!("{}-f{k}", self.prefix))?;
        attach(
            &self.lan,
            &self.prefix,
            &format!("f{k}"),
            &ns,
            plan::foreign_v4(k).into(),
            plan::foreign_v6(k).into(),
        )?;
        for ip in ips {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            ns.ip(&[
                "addr",
                "add",
                &format!("{ip}/{len}"),
                "dev",
                "eth0",
                "nodad",
            ])?;
        }
        Ok(ns)
    }

    /// Whether etcd is still running (for tests of the teardown).
    pub fn etcd_pid(&self) -> Option<u32> {
        self.etcd.pid()
    }

    /// The forwarder's address: `https://` this reaches the API server from the host.
    pub fn apiserver_local_addr(&self) -> SocketAddr {
        self.forwarder.local_addr()
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

/// A running packet capture.
pub struct Capture {
    proc: Proc,
    log: PathBuf,
}

impl Capture {
    /// Stops the capture; the captured lines (tcpdump's own messages left out).
    pub fn finish(mut self) -> String {
        std::thread::sleep(Duration::from_millis(200));
        self.proc.stop(Duration::from_secs(2));
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// host-gw routing in node `i`: every other node's pods through that node (`replace`, so that
/// it can run again after a link flap).
fn pod_routes(ns: &NetNs, i: usize, nodes: usize) -> Result<()> {
    for j in (1..=nodes).filter(|j| *j != i) {
        ns.ip(&[
            "route",
            "replace",
            &plan::pod_cidr_v4(j),
            "via",
            &plan::node_v4(j).to_string(),
        ])?;
        ns.ip(&[
            "-6",
            "route",
            "replace",
            &plan::pod_cidr_v6(j),
            "via",
            &plan::node_v6(j).to_string(),
        ])?;
    }
    Ok(())
}

fn lan_apiserver_url() -> String {
    format!("https://{}:6443", plan::apiserver_v4())
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A veth pair: `outer_name` in `outer`, `eth0` in `inner`.
fn veth(outer: &NetNs, outer_name: &str, inner: &NetNs) -> Result<()> {
    let args = [
        "link",
        "add",
        outer_name,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        inner.name(),
    ];
    outer.ip(&args)?;
    Ok(())
}

/// Connects `ns` to the LAN bridge with a veth (`<prefix>-<tag>` on the bridge, `eth0` inside).
fn attach(lan: &NetNs, prefix: &str, tag: &str, ns: &NetNs, v4: IpAddr, v6: IpAddr) -> Result<()> {
    let outer = format!("{prefix}-{tag}");
    veth(lan, &outer, ns)?;
    lan.ip(&["link", "set", &outer, "master", "br0", "up"])?;
    ns.ip(&[
        "addr",
        "add",
        &format!("{v4}/{}", plan::LAN_PREFIX_V4),
        "dev",
        "eth0",
    ])?;
    ns.ip(&[
        "addr",
        "add",
        &format!("{v6}/{}", plan::LAN_PREFIX_V6),
        "dev",
        "eth0",
        "nodad",
    ])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    Ok(())
}

/// The link-local address of `link` in `ns`, once the kernel has made it.
fn link_local(ns: &NetNs, link: &str) -> Result<String> {
    for _ in 0..100 {
        let out = ns.ip(&["-6", "addr", "show", "dev", link, "scope", "link"])?;
        if let Some(addr) = out.split_whitespace().skip_while(|w| *w != "inet6").nth(1)
            && !out.contains("tentative")
        {
            return Ok(addr.split('/').next().unwrap_or(addr).to_string());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("no link-local address on {link} in {}", ns.name())
}

/// The whole reply to `GET path` at `target` (plain HTTP).
fn http_get(target: SocketAddr, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect_timeout(&target, Duration::from_millis(500))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: {target}\r\n\r\n").as_bytes())?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    Ok(reply)
}

/// The status code of `GET path` at `target` (plain HTTP).
fn http_status(target: SocketAddr, path: &str) -> Result<u16> {
    http_get(target, path)?
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status from {target}"))
}

/// A client for a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    Ok(Client::try_from(config)?)
}

/// 128 random bits from the kernel, for keys.
fn rand_u128() -> u128 {
    use std::io::Read;
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom is readable");
    u128::from_le_bytes(buf)
}
