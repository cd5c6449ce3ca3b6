//! A real router for BGP mode's tests: FRR's bgpd (from Debian's `frr` package, installed by
//! lab/scripts/setup.sh) inside a namespace the test made, with its own configuration, pid
//! file and vty socket in a scratch directory, asked through `vtysh` for what it received.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::NetNs;
use crate::process::Proc;

const BGPD: &str = "/usr/lib/frr/bgpd";
const VTYSH: &str = "/usr/bin/vtysh";

/// A running bgpd; stopped when dropped.
pub struct Frr {
    ns: NetNs,
    dir: PathBuf,
    bgpd: Proc,
}

impl Frr {
    /// Starts bgpd in `ns` with `config` (frr.conf syntax for bgpd). It runs without zebra
    /// (`-Z`, no route installation) and as root (`-S`), listening on port 179 of every
    /// address of `ns`.
    pub fn start(ns: &NetNs, config: &str) -> Result<Frr> {
        if !Path::new(BGPD).exists() {
            bail!("no {BGPD}: FRR is installed by lab/scripts/setup.sh (Debian package frr)");
        }
        let dir = std::env::temp_dir().join(format!("ferrolb-frr-{}", ns.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("bgpd.conf");
        std::fs::write(&conf, config)?;
        ns.ip(&["link", "set", "lo", "up"])?;
        let path = |p: &Path| p.display().to_string();
        let bgpd = Proc::spawn(
            ns,
            "bgpd",
            Path::new(BGPD),
            &[
                "-S".into(),
                "-Z".into(),
                "-n".into(),
                "-f".into(),
                path(&conf),
                "-i".into(),
                path(&dir.join("bgpd.pid")),
                "--vty_socket".into(),
                path(&dir),
                // No vty TCP port: vtysh talks over the socket in `dir`.
                "-P".into(),
                "0".into(),
                "--log".into(),
                "stdout".into(),
            ],
            &dir.join("bgpd.log"),
        )?;
        let frr = Frr {
            ns: ns.clone(),
            dir,
            bgpd,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while frr.vtysh("show bgp summary json").is_err() {
            if Instant::now() > deadline {
                bail!("bgpd did not answer in 10 s:\n{}", frr.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(frr)
    }

    /// Runs one vtysh command against this bgpd and returns its output.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        let socket = self.dir.display().to_string();
        let out = self
            .ns
            .command(VTYSH)
            .args(["--vty_socket", &socket, "-c", command])
            .output()
            .context("vtysh")?;
        if !out.status.success() {
            bail!(
                "vtysh -c {command:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A vtysh command's JSON output.
    pub fn json(&self, command: &str) -> Result<serde_json::Value> {
        let text = self.vtysh(&format!("{command} json"))?;
        serde_json::from_str(&text).with_context(|| format!("{command} json: {text}"))
    }

    /// The neighbour's BGP state as bgpd sees it ("Established", "Active", …).
    pub fn neighbor_state(&self, neighbor: &str) -> Result<String> {
        let v = self.json(&format!("show bgp neighbors {neighbor}"))?;
        Ok(v[neighbor]["bgpState"].as_str().unwrap_or("").to_string())
    }

    /// The paths bgpd holds for `prefix` (`show bgp <afi> unicast <prefix> json`'s `paths`).
    pub fn paths(&self, prefix: &str) -> Result<Vec<serde_json::Value>> {
        let afi = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let v = self.json(&format!("show bgp {afi} unicast {prefix}"))?;
        Ok(v["paths"].as_array().cloned().unwrap_or_default())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        crate::process::tail(&self.dir.join("bgpd.log"), lines)
    }

    pub fn pid(&self) -> Option<u32> {
        self.bgpd.pid()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        self.bgpd.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
