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
        frr.spawn("bgpd", config, &["-S", "-Z", "-n"], false)?;
        frr.wait_ready()?;
        Ok(frr)
    }

    /// Starts zebra, bfdd and bgpd in `ns`, a whole router: zebra installs bgpd's best routes
    /// (several next hops with `maximum-paths`) in the namespace's kernel, and BFD works (bgpd
    /// asks bfdd for sessions through zebra). bfdd runs with its defaults (300 ms × 3);
    /// `config` is bgpd's.
    pub fn start_router(ns: &NetNs, config: &str) -> Result<Frr> {
        let mut frr = Frr::prepare(ns)?;
        let (uid, gid) = frr_user()?;
        chown(&frr.dir, Some(uid), Some(gid))?;
        let zserv = frr.dir.join("zserv.api").display().to_string();
        let bfdctl = frr.dir.join("bfdd.sock").display().to_string();
        frr.spawn_as_frr("zebra", "", &["-z", &zserv])?;
        wait_for_file(&frr.dir.join("zserv.api"))?;
        frr.spawn_as_frr("bfdd", "", &["-z", &zserv, "--bfdctl", &bfdctl])?;
        frr.spawn("bgpd", config, &["-S", "-z", &zserv], false)?;
        frr.wait_ready()?;
        Ok(frr)
    }

    fn prepare(ns: &NetNs) -> Result<Frr> {
        if !Path::new(DAEMONS).join("bgpd").exists() {
            bail!(
                "no {DAEMONS}/bgpd: FRR is installed by lab/scripts/setup.sh (Debian package frr)"
            );
        }
        let dir = router_dir("frr", ns)?;
        Ok(Frr {
            ns: ns.clone(),
            dir,
            daemons: vec![],
        })
    }

    /// Starts one daemon with its config, pid file and vty socket in this FRR's directory (no
    /// vty TCP port: vtysh talks over the socket), logging to `<daemon>.log` there.
    /// [`Frr::spawn`] as the package's `frr` user, who then owns its config.
    fn spawn_as_frr(&mut self, daemon: &str, config: &str, flags: &[&str]) -> Result<()> {
        self.spawn(
            daemon,
            config,
            &[&["-u", "frr", "-g", "frr"], flags].concat(),
            true,
        )
    }

    fn spawn(&mut self, daemon: &str, config: &str, flags: &[&str], as_frr: bool) -> Result<()> {
        let conf = self.dir.join(format!("{daemon}.conf"));
        std::fs::write(&conf, config)?;
        if as_frr {
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
        until_answering(
            "bgpd",
            || self.vtysh("show bgp summary json").is_ok(),
            || self.log_tail(30),
        )
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

/// A fresh scratch directory for a router daemon of `ns`, whose loopback comes up.
fn router_dir(kind: &str, ns: &NetNs) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ferrolb-{kind}-{}", ns.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    ns.ip(&["link", "set", "lo", "up"])?;
    Ok(dir)
}

/// Waits up to 10 s for a daemon to answer its control command.
fn until_answering(
    daemon: &str,
    answers: impl Fn() -> bool,
    log: impl Fn() -> String,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers() {
        if Instant::now() > deadline {
            bail!("{daemon} did not answer in 10 s:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
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

/// One path a router holds for a prefix, in the terms the tests compare across routers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePath {
    pub next_hop: String,
    pub as_path: Vec<u32>,
    /// `high:low`.
    pub communities: Vec<String>,
    /// `global:first:second`.
    pub large_communities: Vec<String>,
    pub local_pref: Option<u32>,
}

/// BIRD 2 (Debian's `bird2`) in a namespace: `config` is its whole bird.conf; it runs in the
/// foreground with its control socket in a scratch directory, read with `birdc`.
pub struct Bird {
    ns: NetNs,
    dir: PathBuf,
    daemon: Proc,
}

impl Bird {
    pub fn start(ns: &NetNs, config: &str) -> Result<Bird> {
        let dir = router_dir("bird", ns)?;
        std::fs::write(dir.join("bird.conf"), config)?;
        let path = |name: &str| dir.join(name).display().to_string();
        let daemon = Proc::spawn(
            ns,
            "bird",
            Path::new("/usr/sbin/bird"),
            &[
                "-f".into(),
                "-c".into(),
                path("bird.conf"),
                "-s".into(),
                path("bird.ctl"),
                "-P".into(),
                path("bird.pid"),
            ],
            &dir.join("bird.log"),
        )?;
        let bird = Bird {
            ns: ns.clone(),
            dir,
            daemon,
        };
        until_answering(
            "bird",
            || bird.birdc("show status").is_ok(),
            || bird.log_tail(30),
        )?;
        Ok(bird)
    }

    pub fn birdc(&self, command: &str) -> Result<String> {
        let socket = self.dir.join("bird.ctl").display().to_string();
        let mut cmd = self.ns.command("/usr/sbin/birdc");
        cmd.args(["-s", &socket]).args(command.split(' '));
        let out = cmd.output().context("birdc")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || text.contains("Unable to connect") {
            bail!(
                "birdc {command}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }

    /// The paths BIRD holds for `prefix` (`show route all for`), from its `BGP.*` lines.
    pub fn paths(&self, prefix: &str) -> Result<Vec<RoutePath>> {
        match self.birdc(&format!("show route all for {prefix}")) {
            Ok(text) => Ok(parse_bird_routes(&text)),
            // birdc exits non-zero when the table has no route for it.
            Err(e) if e.to_string().contains("Network not found") => Ok(vec![]),
            Err(e) => Err(e),
        }
    }

    /// Whether the BGP protocol `name` is Established.
    pub fn established(&self, name: &str) -> Result<bool> {
        Ok(self
            .birdc(&format!("show protocols {name}"))?
            .contains("Established"))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        crate::process::tail(&self.dir.join("bird.log"), lines)
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.daemon.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `show route all` output: a path starts at a line naming the prefix or a continuation
/// (`unicast [...]`), and its attributes follow as `BGP.<name>: <value>` lines.
fn parse_bird_routes(text: &str) -> Vec<RoutePath> {
    let mut paths: Vec<RoutePath> = vec![];
    for line in text.lines() {
        let line = line.trim();
        if line.contains("unicast [") {
            paths.push(RoutePath::default());
            continue;
        }
        let (Some(path), Some((name, value))) = (paths.last_mut(), line.split_once(": ")) else {
            continue;
        };
        let pairs = |value: &str| -> Vec<String> {
            value
                .split(") (")
                .map(|p| {
                    p.trim_matches(|c| c == '(' || c == ')')
                        .replace(", ", ":")
                        .replace(',', ":")
                })
                .filter(|p| !p.is_empty())
                .collect()
        };
        match name {
            "BGP.next_hop" => path.next_hop = value.split(' ').next().unwrap_or("").to_string(),
            "BGP.as_path" => {
                path.as_path = value.split(' ').filter_map(|a| a.parse().ok()).collect()
            }
            "BGP.local_pref" => path.local_pref = value.parse().ok(),
            "BGP.community" => path.communities = pairs(value),
            "BGP.large_community" => path.large_communities = pairs(value),
            _ => {}
        }
    }
    paths
}

/// GoBGP (Debian's `gobgpd`) in a namespace: `config` is its TOML configuration; its gRPC API
/// listens on the namespace's loopback, read with `gobgp -j`.
pub struct GoBgp {
    ns: NetNs,
    dir: PathBuf,
    daemon: Proc,
}

const GOBGP_API: &str = "127.0.0.1:50051";

impl GoBgp {
    pub fn start(ns: &NetNs, config: &str) -> Result<GoBgp> {
        let dir = router_dir("gobgp", ns)?;
        let conf = dir.join("gobgpd.toml");
        std::fs::write(&conf, config)?;
        let daemon = Proc::spawn(
            ns,
            "gobgpd",
            Path::new("/usr/bin/gobgpd"),
            &[
                "-f".into(),
                conf.display().to_string(),
                "-t".into(),
                "toml".into(),
                "--api-hosts".into(),
                GOBGP_API.into(),
            ],
            &dir.join("gobgpd.log"),
        )?;
        let gobgp = GoBgp {
            ns: ns.clone(),
            dir,
            daemon,
        };
        until_answering(
            "gobgpd",
            || gobgp.gobgp(&["global"]).is_ok(),
            || gobgp.log_tail(30),
        )?;
        Ok(gobgp)
    }

    /// `gobgp -j <args>` against this daemon, as JSON.
    pub fn gobgp(&self, args: &[&str]) -> Result<serde_json::Value> {
        let (host, port) = GOBGP_API.split_once(':').expect("host:port");
        let out = self
            .ns
            .command("/usr/bin/gobgp")
            .args(["-u", host, "-p", port, "-j"])
            .args(args)
            .output()
            .context("gobgp")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "gobgp {args:?}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_str(&text).with_context(|| format!("gobgp {args:?}: {text}"))
    }

    /// The paths GoBGP's global RIB holds for `prefix`.
    pub fn paths(&self, prefix: &str) -> Result<Vec<RoutePath>> {
        let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let rib = self.gobgp(&["global", "rib", "-a", family])?;
        let paths = rib[prefix].as_array().cloned().unwrap_or_default();
        Ok(paths.iter().map(gobgp_path).collect())
    }

    /// Whether the neighbour is Established.
    pub fn established(&self, neighbor: &str) -> Result<bool> {
        let v = self.gobgp(&["neighbor", neighbor])?;
        Ok(v["state"]["session_state"] == 6 || v["state"]["session_state"] == "established")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        crate::process::tail(&self.dir.join("gobgpd.log"), lines)
    }
}

impl Drop for GoBgp {
    fn drop(&mut self) {
        self.daemon.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A path of `gobgp -j global rib`: attributes by their type code (RFC 4271 and successors).
fn gobgp_path(path: &serde_json::Value) -> RoutePath {
    let mut out = RoutePath::default();
    for attr in path["attrs"].as_array().into_iter().flatten() {
        match attr["type"].as_u64() {
            Some(2) => {
                out.as_path = attr["as_paths"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|s| s["asns"].as_array().cloned().unwrap_or_default())
                    .filter_map(|a| a.as_u64().and_then(|a| u32::try_from(a).ok()))
                    .collect()
            }
            Some(3) | Some(14) => {
                out.next_hop = attr["nexthop"].as_str().unwrap_or("").to_string();
            }
            Some(5) => out.local_pref = attr["value"].as_u64().and_then(|v| u32::try_from(v).ok()),
            Some(8) => {
                out.communities = attr["communities"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_u64())
                    .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                    .collect()
            }
            Some(32) => {
                out.large_communities = attr["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| format!("{}:{}:{}", c["ASN"], c["LocalData1"], c["LocalData2"]))
                    .collect()
            }
            _ => {}
        }
    }
    out
}
