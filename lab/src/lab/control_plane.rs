//! The control plane: kube-apiserver's readiness, stop and restart; kubectl as the admin or a
//! ServiceAccount; manifests, Events and clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::Lab;
use crate::pki::{self, Credentials};
use crate::plan;
use crate::process::Proc;

impl Lab {
    pub(super) async fn wait_for_apiserver(&mut self, within: Duration) -> Result<()> {
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

    /// Applies deploy/ exactly as an operator would (`kubectl apply -k deploy`).
    pub(super) async fn apply_deploy(&self) -> Result<()> {
        let deploy = deploy_dir()?;
        self.kubectl(&["apply", "--server-side", "-k", &deploy])
            .await?;
        Ok(())
    }

    /// Applies deploy/ without its Deployment and DaemonSet: ferrolb's API, namespace,
    /// accounts and RBAC, for a lab whose tests run the binaries themselves
    /// ([`super::Install::Processes`]); with kubelets, the workloads would run beside them.
    pub async fn apply_api(&self) -> Result<()> {
        let deploy = deploy_dir()?;
        let rendered = self.kubectl(&["kustomize", &deploy]).await?;
        let api: Vec<&str> = rendered
            .split("\n---\n")
            .filter(|doc| {
                !doc.lines()
                    .any(|l| l == "kind: Deployment" || l == "kind: DaemonSet")
            })
            .collect();
        self.kubectl_as(
            &self.lan_kubeconfig,
            &["apply", "--server-side", "-f", "-"],
            Some(&api.join("\n---\n")),
        )
        .await?;
        Ok(())
    }

    /// Waits until ferrolb's CRDs are served.
    pub(super) async fn wait_for_crds(&self) -> Result<()> {
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

    /// `kubectl ARGS…` as an operator runs a plugin: kubectl finds `kubectl-NAME` in `dir`, put
    /// first on PATH, and the plugin reads the admin kubeconfig from `KUBECONFIG`. The whole
    /// output, whatever the exit code.
    pub async fn kubectl_plugin(&self, dir: &Path, args: &[&str]) -> Result<std::process::Output> {
        let mut cmd = self.cp.command(&self.bins.kubectl);
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", dir.display()))
            .env("KUBECONFIG", &self.lan_kubeconfig)
            .args(args);
        Ok(tokio::task::spawn_blocking(move || cmd.output()).await??)
    }

    /// A kubeconfig for ServiceAccount `namespace/name`, with a token from the TokenRequest
    /// API: how the lab runs ferrolb under its own RBAC.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        self.token_kubeconfig(namespace, name, None).await
    }

    /// [`Lab::service_account_kubeconfig`] with a token bound to Node `node`: the API server
    /// then names the node in the requests' `userInfo.extra["authentication.kubernetes.io/
    /// node-name"]`, as it does for a token bound to a Pod on that node (the lab has no kubelet
    /// and so no speaker Pods). The speaker's admission policy reads it.
    pub async fn node_service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
    ) -> Result<PathBuf> {
        self.token_kubeconfig(namespace, name, Some(node)).await
    }

    async fn token_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        node: Option<&str>,
    ) -> Result<PathBuf> {
        let mut args = vec!["create", "token", name, "-n", namespace, "--duration=24h"];
        let bound = node.map(|n| format!("--bound-object-name={n}"));
        if let Some(bound) = &bound {
            args.extend(["--bound-object-kind=Node", bound]);
        }
        let token = self.kubectl(&args).await?;
        let file = match node {
            None => format!("sa-{namespace}-{name}.kubeconfig"),
            Some(n) => format!("sa-{namespace}-{name}-{n}.kubeconfig"),
        };
        let path = self.dir.join(file);
        let user = format!("system:serviceaccount:{namespace}:{name}");
        pki::write_kubeconfig(
            &path,
            &lan_apiserver_url(self.ipv6_only),
            &self.ca.cert,
            &user,
            Credentials::Token(token.trim()),
        )?;
        Ok(path)
    }

    /// A client in this process with the credentials of `kubeconfig` (one of
    /// [`Lab::service_account_kubeconfig`]'s), through the forwarder: a ServiceAccount's view
    /// of the API for tests.
    pub async fn client_as(&self, kubeconfig: &Path) -> Result<Client> {
        let mut config = Kubeconfig::read_from(kubeconfig)?;
        let server = format!("https://{}", self.forwarder.local_addr());
        for named in &mut config.clusters {
            if let Some(cluster) = named.cluster.as_mut() {
                cluster.server = Some(server.clone());
            }
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config =
            kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
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

    /// Writes `path`: a kubeconfig reaching the API server at `server` as `user` (in
    /// `groups`), with a client certificate of the lab's CA (its files named after `file`).
    pub(super) fn certificate_kubeconfig(
        &self,
        path: &Path,
        file: &str,
        server: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<()> {
        let creds = self.ca.client(file, user, groups)?;
        pki::write_kubeconfig(path, server, &self.ca.cert, user, Credentials::Cert(&creds))
    }

    /// kube-controller-manager in the control plane's namespace, as kubeadm runs it (each
    /// controller under its own ServiceAccount), with the controllers the lab has a use for:
    /// EndpointSlice mirroring; every namespace's `default` ServiceAccount and the
    /// `kube-root-ca.crt` ConfigMap, which a pod's token volume needs. With kubelets also what
    /// real workloads need: Deployments, ReplicaSets and DaemonSets, EndpointSlices of pods,
    /// garbage collection (ReplicaSets and pods go with their owners), namespace deletion, and
    /// node lifecycle: it lifts the not-ready taint a kubelet registers with (nothing would be
    /// scheduled otherwise) and marks a silent node NotReady after the default grace period
    /// of 50 s, whose pods the taint eviction controller then evicts (after their 300 s
    /// default toleration); the pod GC removes pods of deleted Nodes.
    pub(super) fn start_controller_manager(&self, with_kubelets: bool) -> Result<Proc> {
        let kubeconfig = self.dir.join("kube-controller-manager.kubeconfig");
        self.certificate_kubeconfig(
            &kubeconfig,
            "kube-controller-manager",
            LOCAL_APISERVER,
            "system:kube-controller-manager",
            &[],
        )?;
        let mut controllers =
            String::from("endpointslicemirroring,serviceaccount,root-ca-cert-publisher");
        if with_kubelets {
            controllers.push_str(
                ",deployment-controller,replicaset-controller,daemonset-controller\
                 ,endpointslice-controller,garbage-collector-controller,namespace-controller\
                 ,node-lifecycle-controller,taint-eviction-controller\
                 ,pod-garbage-collector-controller",
            );
        }
        let kubeconfig = format!("={}", kubeconfig.display());
        Proc::spawn(
            &self.cp,
            "kube-controller-manager",
            &self.bins.kube_controller_manager,
            &super::args(&[
                &format!("--kubeconfig{kubeconfig}"),
                &format!("--authentication-kubeconfig{kubeconfig}"),
                &format!("--authorization-kubeconfig{kubeconfig}"),
                "--use-service-account-credentials=true",
                &format!("--controllers={controllers}"),
                &format!("--root-ca-file={}", self.ca.cert.display()),
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--v=1",
            ]),
            &self.log_path("kube-controller-manager"),
        )
    }

    /// kube-scheduler in the control plane's namespace (with kubelets: without them nothing
    /// runs pods), as the user `system:kube-scheduler` the default RBAC binds.
    pub(super) fn start_scheduler(&self) -> Result<Proc> {
        let kubeconfig = self.dir.join("kube-scheduler.kubeconfig");
        self.certificate_kubeconfig(
            &kubeconfig,
            "kube-scheduler",
            LOCAL_APISERVER,
            "system:kube-scheduler",
            &[],
        )?;
        let kubeconfig = format!("={}", kubeconfig.display());
        Proc::spawn(
            &self.cp,
            "kube-scheduler",
            &self.bins.kube_scheduler,
            &super::args(&[
                &format!("--kubeconfig{kubeconfig}"),
                &format!("--authentication-kubeconfig{kubeconfig}"),
                &format!("--authorization-kubeconfig{kubeconfig}"),
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--v=1",
            ]),
            &self.log_path("kube-scheduler"),
        )
    }

    /// Waits until kube-controller-manager has made the `default` ServiceAccount of
    /// `default`: before that, the admission plugin refuses pods there.
    pub(super) async fn wait_for_default_service_account(&self, within: Duration) -> Result<()> {
        let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(self.client.clone(), "default");
        let deadline = Instant::now() + within;
        while accounts.get_opt("default").await?.is_none() {
            if Instant::now() > deadline {
                bail!(
                    "kube-controller-manager made no default ServiceAccount within {within:?}; see {}",
                    self.log_path("kube-controller-manager").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Stops kube-apiserver (etcd keeps running): SIGTERM, and SIGKILL a second later. Its
    /// graceful shutdown never ends within 5 s here (it drains watches), and to the clients
    /// an outage is an outage: the connections close either way.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut p) = self.apiserver.take() {
            p.stop(Duration::from_secs(1));
        }
    }

    /// Restarts kube-controller-manager, when the lab runs it. After API server restarts its
    /// watches back off (up to 30 s), and its node lifecycle controller counts the Lease
    /// renewals it has not yet seen as silence: two outages close together can make it mark a
    /// live node NotReady and that node's pods unready. A fresh one lists at once.
    pub fn restart_controller_manager(&mut self) -> Result<()> {
        if let Some(mut old) = self.controller_manager.take() {
            old.kill();
            self.controller_manager = Some(self.start_controller_manager(self.agents.is_some())?);
        }
        Ok(())
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

    /// Whether etcd is still running (for tests of the teardown).
    pub fn etcd_pid(&self) -> Option<u32> {
        self.etcd.pid()
    }

    /// The forwarder's address: `https://` this reaches the API server from the host.
    pub fn apiserver_local_addr(&self) -> SocketAddr {
        self.forwarder.local_addr()
    }
}

/// The API server as the nodes reach it: over IPv6 in the IPv6-only mode.
/// The API server from inside the control plane's namespace.
const LOCAL_APISERVER: &str = "https://127.0.0.1:6443";

pub(super) fn lan_apiserver_url(ipv6_only: bool) -> String {
    if ipv6_only {
        format!("https://[{}]:6443", plan::apiserver_v6())
    } else {
        format!("https://{}:6443", plan::apiserver_v4())
    }
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

/// The repository's deploy/, as kubectl's `-k` takes it.
fn deploy_dir() -> Result<String> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    Ok(deploy.canonicalize()?.display().to_string())
}
