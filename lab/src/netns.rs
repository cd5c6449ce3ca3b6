//! Network namespaces and the `ip` commands that shape them. Every lab object lives in a
//! namespace whose name starts with the lab's prefix, so `down --all` can find what a killed
//! run left behind.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

/// Runs a command and fails with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `ip ARGS…`, failing with its message.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = run(Command::new("ip").args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named network namespace. Dropping it does not delete it: the lab's teardown does, so that
/// the order (processes first) is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn create(name: &str) -> Result<NetNs> {
        ip(&["netns", "add", name])?;
        let ns = NetNs {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NS ARGS…`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that will run inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs a program inside this namespace to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = run(self.command(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Runs `f` on a new thread that has entered this namespace. Sockets `f` creates stay in
    /// it wherever they are used afterwards.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = Path::new("/var/run/netns").join(&self.name);
        let file = File::open(&path).with_context(|| format!("no namespace {}", self.name))?;
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into {}", path.display()))?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
        })
    }

    /// Enters this namespace for the rest of the calling thread's life (for threads the lab
    /// starts to serve or probe from inside a namespace).
    pub fn enter_for_thread(&self) -> Result<()> {
        let path = Path::new("/var/run/netns").join(&self.name);
        let file = File::open(&path).with_context(|| format!("no namespace {}", self.name))?;
        setns(&file, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("setns into {}", self.name))?;
        Ok(())
    }
}

/// Names of the existing namespaces accepted by `keep`.
pub fn list(keep: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| keep(n))
        .map(str::to_string)
        .collect())
}

/// Signals the processes `pids` lists until it lists none: SIGTERM for 2 s, then SIGKILL, for
/// at most 5 s.
pub fn stop_all(pids: impl Fn() -> Vec<i32>) {
    for attempt in 0..50 {
        let pids = pids();
        if pids.is_empty() {
            break;
        }
        let signal = if attempt < 20 {
            nix::sys::signal::Signal::SIGTERM
        } else {
            nix::sys::signal::Signal::SIGKILL
        };
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The processes inside the namespace `name` (`ip netns pids`).
pub fn pids(name: &str) -> Vec<i32> {
    run(Command::new("ip").args(["netns", "pids", name]))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills every process inside the namespace, then deletes it. A namespace gone meanwhile (the
/// run that made it tearing down at the same time) is not an error: it is what was wanted.
pub fn destroy(name: &str) -> Result<()> {
    stop_all(|| pids(name));
    match ip(&["netns", "del", name]) {
        Err(_) if list(|n| n == name)?.is_empty() => Ok(()),
        other => other.map(drop),
    }
}

/// A namespace for one unit test, `flbt<pid>-<tag>`, deleted when dropped (also when the test
/// panics). The first one a process makes removes those of test runs that died.
pub struct Scratch(NetNs);

impl Scratch {
    pub fn new(tag: &str) -> Result<Scratch> {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(remove_scratch_of_dead_runs);
        Ok(Scratch(NetNs::create(&format!(
            "{}-{tag}",
            scratch_prefix()
        ))?))
    }
}

/// The prefix of this process's scratch namespaces.
pub fn scratch_prefix() -> String {
    format!("flbt{}", std::process::id())
}

impl std::ops::Deref for Scratch {
    type Target = NetNs;
    fn deref(&self) -> &NetNs {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(error) = destroy(self.0.name()) {
            eprintln!("cannot delete namespace {}: {error:#}", self.0.name());
        }
    }
}

/// Removes the scratch namespaces whose process is gone.
pub fn remove_scratch_of_dead_runs() {
    let stale = list(|name| {
        let Some(pid) = name.strip_prefix("flbt").and_then(|r| r.split('-').next()) else {
            return false;
        };
        pid.parse::<u32>()
            .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    })
    .unwrap_or_default();
    for name in stale {
        let _ = destroy(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two teardowns of one lab at once (a test's guard and `down --all` from `.ci/run`) both
    /// succeed: the second finds the namespace gone, which is what it wanted.
    #[test]
    #[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
    fn destroying_a_namespace_already_gone_succeeds() {
        crate::require_lab!();
        let name = format!("{}-gone", scratch_prefix());
        NetNs::create(&name).unwrap();
        destroy(&name).unwrap();
        destroy(&name).unwrap();
        assert!(list(|n| n == name).unwrap().is_empty());
    }
}
