//! Processes the lab starts (etcd, kube-apiserver, kube-proxy, ferrolb): each inside a
//! namespace, its output in a log file, stopped when its handle drops.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::NetNs;

#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `program args…` inside `ns`, appending its stdout and stderr to `log`.
    pub fn spawn(
        ns: &NetNs,
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Proc> {
        Proc::spawn_with_env(ns, name, program, args, &[], log)
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        ns: &NetNs,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &OsStr)],
        log: &Path,
    ) -> Result<Proc> {
        let mut cmd = ns.command(program);
        cmd.args(args).envs(env.iter().map(|(k, v)| (*k, *v)));
        Proc::spawn_command(name, cmd, log)
    }

    /// Starts a prepared command (for processes that enter their namespaces themselves).
    pub fn spawn_command(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("log file {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The process id (of `ip netns exec`, which execs the program: the same process).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn signal(&self, signal: Signal) -> Result<()> {
        if let Some(pid) = self.pid() {
            kill(Pid::from_raw(pid as i32), signal)
                .with_context(|| format!("signal {} to {}", signal, self.name))?;
        }
        Ok(())
    }

    /// SIGKILL at once, as a dead machine would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// A field of `/proc/PID/status` (`VmRSS`, `CapEff`, ...), its value trimmed.
pub fn proc_status(pid: u32, field: &str) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Every process whose command line contains `text`, as `PID: command line`: what a torn-down
/// lab must have left none of.
pub fn mentioning(text: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(text)
                .then(|| format!("{}: {cmdline}", entry.file_name().to_string_lossy()))
        })
        .collect()
}

/// A process's resident set now, in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    proc_status_kib(pid, "VmRSS")
}

/// A `/proc/<pid>/status` field given in kB (`VmRSS`, `RssAnon`, …), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let text = proc_status(pid, field)?;
    Ok(text.trim_end_matches(" kB").trim().parse()?)
}

#[cfg(test)]
mod tests {
    use super::{proc_status, rss_kib};

    #[test]
    fn proc_status_reads_whole_field_names() {
        let me = std::process::id();
        assert_eq!(proc_status(me, "Pid").unwrap(), me.to_string());
        assert!(proc_status(me, "VmRSS").unwrap().ends_with(" kB"));
        // "Vm" is a prefix of several fields but not a field.
        assert!(proc_status(me, "Vm").is_err());
    }

    #[test]
    fn rss_is_read_in_kib_and_grows_with_touched_memory() {
        let me = std::process::id();
        let before = rss_kib(me).unwrap();
        let touched = vec![1u8; 64 << 20];
        let after = rss_kib(me).unwrap();
        assert!(after >= before + 32 * 1024, "{before} KiB -> {after} KiB");
        drop(std::hint::black_box(touched));
    }
}
