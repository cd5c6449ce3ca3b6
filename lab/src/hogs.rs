//! Threads that spin, to saturate CPUs as other workloads of a busy machine would.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

use crate::netns::run;

/// Spinning threads; they stop when this is dropped.
pub struct Hogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hogs {
    /// `n` threads spinning at the lab's own priority, on every CPU, or only on `cpu`.
    pub fn spin(n: usize, cpu: Option<usize>) -> Hogs {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    if let Some(cpu) = cpu {
                        // Pid 0: the calling thread.
                        if let Err(e) = pin(Pid::from_raw(0), cpu) {
                            tracing::warn!(cpu, "a spinning thread could not be pinned: {e}");
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
/// Runnable throughout, hardly running. Dropped, it is back on its CPUs at the normal class
/// (before the spinning threads stop: fields drop after `drop`).
pub struct Starved {
    tid: Pid,
    cpus: CpuSet,
    _hogs: Hogs,
}

impl Starved {
    pub const HOGS: usize = 12;

    /// Starves thread `tid` (of any process).
    pub fn start(tid: i32) -> Result<Starved> {
        let tid = Pid::from_raw(tid);
        let cpus = sched_getaffinity(tid)?;
        let hogs = Hogs::spin(Self::HOGS, Some(0));
        pin(tid, 0)?;
        let starved = Starved {
            tid,
            cpus,
            _hogs: hogs,
        };
        set_idle_class(tid, true)?;
        Ok(starved)
    }
}

impl Drop for Starved {
    fn drop(&mut self) {
        let _ = set_idle_class(self.tid, false);
        let _ = sched_setaffinity(self.tid, &self.cpus);
    }
}

/// Limits thread (or process) `tid` to CPU `cpu`.
fn pin(tid: Pid, cpu: usize) -> Result<()> {
    let mut only = CpuSet::new();
    only.set(cpu)?;
    Ok(sched_setaffinity(tid, &only)?)
}

/// Puts thread `tid` in the idle scheduling class (it runs only when nothing else of its CPU
/// wants to), or back in the normal one. (nix has no sched_setscheduler; chrt does it.)
fn set_idle_class(tid: Pid, idle: bool) -> Result<()> {
    let policy = if idle { "--idle" } else { "--other" };
    run(Command::new("chrt").args([policy, "-p", "0", &tid.to_string()]))?;
    Ok(())
}
