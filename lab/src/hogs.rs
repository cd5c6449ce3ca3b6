//! Threads that spin, to saturate CPUs as other workloads of a busy machine would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

/// Spinning threads; they stop when this is dropped.
pub struct Hogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hogs {
    /// `n` threads spinning at the lab's own priority, on every CPU, or only on those of
    /// `cpus` (a list as taskset reads it, such as `0` or `0-1`).
    pub fn spin(n: usize, cpus: Option<&str>) -> Hogs {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                let cpus = cpus.map(str::to_string);
                std::thread::spawn(move || {
                    if let Some(cpus) = cpus {
                        let pinned = current_tid().and_then(|tid| pin_thread(&tid, &cpus).ok());
                        if pinned.is_none() {
                            tracing::warn!(cpus, "a spinning thread could not be pinned");
                        }
                    }
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Hogs { stop, threads }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A thread starved of CPU time as on a saturated machine: pinned to CPU 0 at the idle
/// scheduling class beside [`Starved::HOGS`] threads spinning there, so that each time it
/// wakes it waits a long while (about a second on the development machine) for its turn.
/// Runnable throughout, hardly running. Dropped, it is back on every CPU at the normal class.
pub struct Starved {
    tid: String,
    hogs: Option<Hogs>,
}

impl Starved {
    pub const HOGS: usize = 12;

    /// Starves thread `tid` (of any process).
    pub fn start(tid: &str) -> Result<Starved> {
        let hogs = Hogs::spin(Self::HOGS, Some("0"));
        pin_thread(tid, "0")?;
        let starved = Starved {
            tid: tid.to_string(),
            hogs: Some(hogs),
        };
        set_idle_class(tid, true)?;
        Ok(starved)
    }
}

impl Drop for Starved {
    fn drop(&mut self) {
        let _ = set_idle_class(&self.tid, false);
        let all = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
        let _ = pin_thread(&self.tid, all.trim());
        self.hogs.take();
    }
}

/// The calling thread's id.
pub fn current_tid() -> Option<String> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    Some(link.file_name()?.to_str()?.to_string())
}

/// Limits thread (or process) `tid` to the CPUs of `cpus`.
pub fn pin_thread(tid: &str, cpus: &str) -> Result<()> {
    host_command("taskset", &["-p", "-c", cpus, tid])
}

/// Puts thread `tid` in the idle scheduling class (it runs only when nothing else of its CPU
/// wants to), or back in the normal one.
pub fn set_idle_class(tid: &str, idle: bool) -> Result<()> {
    host_command(
        "chrt",
        &[if idle { "--idle" } else { "--other" }, "-p", "0", tid],
    )
}

/// Runs a command of the host's, quietly; fails unless it succeeds.
pub fn host_command(cmd: &str, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        bail!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
