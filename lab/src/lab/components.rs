//! ferrolb's own processes in the lab: controller replicas and per-node speakers, started as
//! deploy/ runs them, and signalled or killed by tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

use super::{Lab, args};
use crate::process::Proc;

/// The Secret holding the speakers' gossip key (`key`), in both install forms.
const GOSSIP_SECRET: &str = "ferrolb-gossip";

/// How [`Lab::start_controller_with`] runs a controller replica.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// The node whose namespace it runs in; `None`: the control plane's.
    pub node: Option<usize>,
    /// Its Lease duration (`--lease-duration-seconds`, whole seconds).
    pub lease_duration: Duration,
}

impl Default for ControllerOptions {
    /// In the control plane, with a 4 s Lease: shorter than the Deployment's 15 s, so that
    /// takeover tests take seconds.
    fn default() -> Self {
        ControllerOptions {
            node: None,
            lease_duration: Duration::from_secs(4),
        }
    }
}

impl Lab {
    /// Starts replica `replica` of ferrolb-controller (the binary at `binary`) in the
    /// control-plane namespace, as its ServiceAccount (a TokenRequest token), with leader
    /// election, as the Deployment in deploy/ runs it.
    pub async fn start_controller(&mut self, binary: &Path, replica: usize) -> Result<()> {
        self.start_controller_with(binary, replica, ControllerOptions::default())
            .await
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
        let options = ControllerOptions {
            node,
            ..ControllerOptions::default()
        };
        self.start_controller_with(binary, replica, options).await
    }

    /// [`Lab::start_controller`] where and with the Lease duration that `options` say.
    pub async fn start_controller_with(
        &mut self,
        binary: &Path,
        replica: usize,
        options: ControllerOptions,
    ) -> Result<()> {
        if !binary.is_file() {
            bail!(
                "no controller binary at {} (cargo build -p controller)",
                binary.display()
            );
        }
        if options.lease_duration.subsec_nanos() != 0 {
            bail!(
                "the controller takes a Lease duration in whole seconds, not {:?}",
                options.lease_duration
            );
        }
        let kubeconfig = self
            .service_account_kubeconfig("ferrolb-system", "ferrolb-controller")
            .await?;
        let name = format!("controller-{replica}");
        let ns = match options.node {
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
                &format!(
                    "--lease-duration-seconds={}",
                    options.lease_duration.as_secs()
                ),
                &format!("--identity={name}"),
                &format!("--metrics-addr=127.0.0.1:{}", 9650 + replica),
                "--log-level=info,kube=warn",
            ]),
            &[("KUBECONFIG", kubeconfig.as_os_str())],
            &self.log_path(&name),
        )?;
        self.controllers.insert(replica, proc);
        self.controller_ns.insert(replica, ns);
        Ok(())
    }

    /// Starts ferrolb-speaker (the binary at `binary`) in node `i`'s namespace, as the
    /// speaker's ServiceAccount with a token bound to the node, with the gossip key the lab keeps in the `ferrolb-gossip`
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
        // Bound to its Node, as a DaemonSet Pod's token names the Pod's node.
        let kubeconfig = self
            .node_service_account_kubeconfig(
                "ferrolb-system",
                "ferrolb-speaker",
                &self.node(i).name,
            )
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
        let env = vec![("KUBECONFIG", kubeconfig.as_os_str())];
        let proc = Proc::spawn_with_env(
            &node.ns,
            &name,
            binary,
            &args(&flags),
            &env,
            &self.log_path(&name),
        )?;
        self.nodes[i - 1].speaker = Some(proc);
        Ok(())
    }

    /// The gossip key file: the key of the `ferrolb-gossip` Secret, which is made first if no
    /// one (the Helm chart does) has made it.
    pub(super) async fn gossip_key(&self) -> Result<PathBuf> {
        let path = self.dir.join("gossip.key");
        if path.exists() {
            return Ok(path);
        }
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(self.client.clone(), super::install::NAMESPACE);
        let existing = secrets
            .get_opt(GOSSIP_SECRET)
            .await?
            .and_then(|s| s.data?.remove("key"));
        let key = match existing {
            Some(key) => String::from_utf8(key.0)?,
            None => {
                let key = format!("{:032x}{:032x}", rand_u128(), rand_u128());
                let literal = format!("--from-literal=key={key}");
                self.kubectl(&[
                    "-n",
                    super::install::NAMESPACE,
                    "create",
                    "secret",
                    "generic",
                    GOSSIP_SECRET,
                    &literal,
                ])
                .await?;
                key
            }
        };
        std::fs::write(&path, &key)?;
        Ok(path)
    }

    /// Sends `signal` to node `i`'s speaker (SIGTERM: a rolling restart or a drain).
    pub fn signal_speaker(&self, i: usize, signal: nix::sys::signal::Signal) -> Result<()> {
        match &self.node(i).speaker {
            Some(p) => p.signal(signal),
            None => bail!("no speaker runs on node {i}"),
        }
    }

    /// Node `i`'s speaker's process id, while it runs.
    pub fn speaker_pid(&self, i: usize) -> Option<u32> {
        self.node(i).speaker.as_ref()?.pid()
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

    /// Controller replica `replica`'s process id, while it runs.
    pub fn controller_pid(&self, replica: usize) -> Option<u32> {
        self.controllers.get(&replica)?.pid()
    }

    /// Whether controller replica `replica` is running; its log's last lines when it is not.
    pub fn controller_exited(&mut self, replica: usize) -> Option<String> {
        let p = self.controllers.get_mut(&replica)?;
        (!p.running()).then(|| p.log_tail(20))
    }
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
