//! A real router for BGP mode's tests: FRR's daemons (from Debian's `frr` package, installed
//! by lab/scripts/setup.sh) inside a namespace the test made, with their own configuration,
//! pid files and vty sockets in a scratch directory, asked through `vtysh` what they hold.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::unistd::{Gid, Uid, User, chown};

use crate::netns::NetNs;
use crate::process::Proc;

const DAEMONS: &str = "/usr/lib/frr";
const VTYSH: &str = "/usr/bin/vtysh";

/// A running FRR; stopped when dropped.
pub struct Frr {
    ns: NetNs,
    dir: PathBuf,
    daemons: Vec<Proc>,
}

/// zebra and bfdd refuse to run as a user outside FRR's vty group; they run as the package's
/// `frr` user, which then owns the directory and their files.
fn frr_user() -> Result<(Uid, Gid)> {
    let user = User::from_name("frr")?.context("no user frr (the frr package makes it)")?;
    Ok((user.uid, user.gid))
}

impl Frr {
    /// Starts bgpd alone in `ns` with `config` (frr.conf syntax for bgpd): without zebra
    /// (`-Z`, no route installation), as root (`-S`), listening on port 179 of every address.
    pub fn start(ns: &NetNs, config: &str) -> Result<Frr> {
        let mut frr = Frr::prepare(ns)?;
        frr.spawn("bgpd", config, &["-S", "-Z", "-n"])?;
        frr.wait_ready()?;
        Ok(frr)
    }

    /// Starts zebra, bfdd and bgpd in `ns`: BFD needs all three (bgpd asks bfdd for sessions
    /// through zebra). bfdd runs with its defaults (300 ms × 3); `config` is bgpd's.
    pub fn start_with_bfd(ns: &NetNs, config: &str) -> Result<Frr> {
        let mut frr = Frr::prepare(ns)?;
        let (uid, gid) = frr_user()?;
        chown(&frr.dir, Some(uid), Some(gid))?;
        let zserv = frr.dir.join("zserv.api").display().to_string();
        let bfdctl = frr.dir.join("bfdd.sock").display().to_string();
        let user = ["-u", "frr", "-g", "frr"];
        frr.spawn("zebra", "", &[&user[..], &["-z", &zserv]].concat())?;
        wait_for_file(&frr.dir.join("zserv.api"))?;
        frr.spawn(
            "bfdd",
            "",
            &[&user[..], &["-z", &zserv, "--bfdctl", &bfdctl]].concat(),
        )?;
        frr.spawn("bgpd", config, &["-S", "-n", "-z", &zserv])?;
        frr.wait_ready()?;
        Ok(frr)
    }

    fn prepare(ns: &NetNs) -> Result<Frr> {
        if !Path::new(DAEMONS).join("bgpd").exists() {
            bail!(
                "no {DAEMONS}/bgpd: FRR is installed by lab/scripts/setup.sh (Debian package frr)"
            );
        }
        let dir = std::env::temp_dir().join(format!("ferrolb-frr-{}", ns.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(Frr {
            ns: ns.clone(),
            dir,
            daemons: vec![],
        })
    }

    /// Starts one daemon with its config, pid file and vty socket in this FRR's directory (no
    /// vty TCP port: vtysh talks over the socket), logging to `<daemon>.log` there.
    fn spawn(&mut self, daemon: &str, config: &str, flags: &[&str]) -> Result<()> {
        let conf = self.dir.join(format!("{daemon}.conf"));
        std::fs::write(&conf, config)?;
        if flags.contains(&"frr") {
            let (uid, gid) = frr_user()?;
            chown(&conf, Some(uid), Some(gid))?;
        }
        let path = |p: &Path| p.display().to_string();
        let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        args.extend([
            "-f".into(),
            path(&conf),
            "-i".into(),
            path(&self.dir.join(format!("{daemon}.pid"))),
            "--vty_socket".into(),
            path(&self.dir),
            "-P".into(),
            "0".into(),
            "--log".into(),
            "stdout".into(),
        ]);
        let proc = Proc::spawn(
            &self.ns,
            daemon,
            &Path::new(DAEMONS).join(daemon),
            &args,
            &self.dir.join(format!("{daemon}.log")),
        )?;
        self.daemons.push(proc);
        Ok(())
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.vtysh("show bgp summary json").is_err() {
            if Instant::now() > deadline {
                bail!("bgpd did not answer in 10 s:\n{}", self.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
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

    /// The last lines of each daemon's log.
    pub fn log_tail(&self, lines: usize) -> String {
        ["zebra", "bfdd", "bgpd"]
            .iter()
            .map(|d| self.dir.join(format!("{d}.log")))
            .filter(|log| log.exists())
            .map(|log| format!("{}:\n{}", log.display(), crate::process::tail(&log, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for daemon in self.daemons.iter_mut().rev() {
            daemon.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits up to 10 s for a daemon's socket to appear.
fn wait_for_file(path: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("no {} after 10 s", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
