//! Liveness: the loops a process cannot work without beat a heartbeat, and `/healthz` fails
//! when one has not beaten for longer than it may. A stuck loop then fails the liveness probe
//! and the kubelet restarts the process, instead of a node that looks healthy and does
//! nothing.
//!
//! A loop that owns its thread ([`Liveness::register_thread`]) is judged by its own time only:
//! time spent waiting for a CPU is not counted against it. On a node whose CPUs are saturated a
//! runnable thread can wait seconds for its turn; that is starvation, not a hang, and a speaker
//! that stepped aside for it would move its addresses for nothing (and load the peers that take
//! them over, which then starve in turn).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The heartbeats of one process.
#[derive(Clone, Debug)]
pub struct Liveness {
    started: Instant,
    beats: Arc<Mutex<Vec<Heartbeat>>>,
}

/// One loop's heartbeat; clones beat the same heart.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    name: &'static str,
    max_age: Duration,
    started: Instant,
    /// Milliseconds from `started` to the last beat.
    last: Arc<AtomicU64>,
    /// For a loop with a thread of its own: that thread's scheduler clocks at the last beat.
    thread: Option<Arc<Mutex<Option<ThreadMark>>>>,
}

/// A loop's thread since its last beat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinceBeat {
    /// By the clock.
    pub age: Duration,
    /// Running on a CPU.
    pub on_cpu: Duration,
    /// Runnable but waiting for a CPU, in waits that have ended (the kernel clocks a wait when
    /// it ends).
    pub waiting: Duration,
    /// Runnable now: running, or in a wait for a CPU not yet clocked.
    pub runnable: bool,
}

impl SinceBeat {
    /// The time the thread could have beaten: of a runnable thread its CPU time, of one
    /// asleep or blocked all time but its waits for a CPU.
    pub fn own_age(&self) -> Duration {
        if self.runnable {
            self.on_cpu.min(self.age)
        } else {
            self.age.saturating_sub(self.waiting)
        }
    }

    /// Neither running nor waiting for a CPU: asleep, or blocked (on a lock, in a syscall).
    pub fn blocked(&self) -> Duration {
        self.age.saturating_sub(self.on_cpu + self.waiting)
    }
}

/// Where the beating thread's scheduler clocks stood at a beat.
#[derive(Clone, Copy, Debug)]
struct ThreadMark {
    tid: u32,
    /// Milliseconds from `started` to the beat.
    at_ms: u64,
    clocks: SchedClocks,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            started: Instant::now(),
            beats: Arc::default(),
        }
    }
}

impl Liveness {
    /// A heartbeat that must beat at least every `max_age`; it counts as beaten now.
    pub fn register(&self, name: &'static str, max_age: Duration) -> Heartbeat {
        self.add(name, max_age, None)
    }

    /// As [`Self::register`], for a loop that beats from one thread of its own: its age counts
    /// only the time that thread could have beaten ([`Heartbeat::own_age`]).
    pub fn register_thread(&self, name: &'static str, max_age: Duration) -> Heartbeat {
        self.add(name, max_age, Some(Arc::default()))
    }

    fn add(
        &self,
        name: &'static str,
        max_age: Duration,
        thread: Option<Arc<Mutex<Option<ThreadMark>>>>,
    ) -> Heartbeat {
        let beat = Heartbeat {
            name,
            max_age,
            started: self.started,
            last: Arc::default(),
            thread,
        };
        beat.beat();
        self.beats.lock().expect("not poisoned").push(beat.clone());
        beat
    }

    /// The loops that have not beaten in time, with how long they have gone without
    /// ([`Heartbeat::own_age`]).
    pub fn stale(&self) -> Vec<(&'static str, Duration)> {
        self.beats
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|b| {
                let age = b.own_age();
                (age > b.max_age).then_some((b.name, age))
            })
            .collect()
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(thread) = &self.thread {
            // Read on the beating thread: it is running, so its wait clock is current.
            let mark = current_tid().and_then(|tid| {
                Some(ThreadMark {
                    tid,
                    at_ms: ms,
                    clocks: sched_clocks(tid)?,
                })
            });
            *thread.lock().expect("not poisoned") = mark;
        }
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How long ago it last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// How long the loop has gone without beating, not counting the time its thread waited
    /// for a CPU: of a thread that is runnable now (running, or waiting for its turn) only the
    /// CPU time since the beat counts, for the wait it is in has not been clocked yet; of one
    /// that is not (asleep or blocked), all time but the waits for a CPU. A hung thread ages
    /// as before, a spinning one by its CPU time, a starved one barely. The plain [`Self::age`]
    /// for a loop without a thread of its own, or where the kernel keeps no such clocks.
    pub fn own_age(&self) -> Duration {
        self.since_beat()
            .map_or_else(|| self.age(), |t| t.own_age())
    }

    /// What the beating thread did since its last beat, for a loop with a thread of its own
    /// where the kernel keeps the clocks: what [`Self::own_age`] is made of.
    pub fn since_beat(&self) -> Option<SinceBeat> {
        let mark = self.mark()?;
        // The state before the clocks: a wait that ends in between then only lowers the age.
        let runnable = is_runnable(mark.tid)?;
        let now = sched_clocks(mark.tid)?;
        let since = |mark: ThreadMark| {
            self.started
                .elapsed()
                .saturating_sub(Duration::from_millis(mark.at_ms))
        };
        Some(match self.mark() {
            // It beat meanwhile: it turns.
            Some(newer) if newer.at_ms != mark.at_ms => SinceBeat {
                age: since(newer),
                on_cpu: Duration::ZERO,
                waiting: Duration::ZERO,
                runnable: false,
            },
            _ => SinceBeat {
                age: since(mark),
                on_cpu: now.on_cpu.saturating_sub(mark.clocks.on_cpu),
                waiting: now.waiting.saturating_sub(mark.clocks.waiting),
                runnable,
            },
        })
    }

    fn mark(&self) -> Option<ThreadMark> {
        *self.thread.as_ref()?.lock().expect("not poisoned")
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A thread's scheduler clocks (`/proc/<pid>/task/<tid>/schedstat`): time it ran on a CPU,
/// and time it was runnable but waiting for one. The wait clock advances when the wait ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SchedClocks {
    on_cpu: Duration,
    waiting: Duration,
}

fn parse_schedstat(text: &str) -> Option<SchedClocks> {
    let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
    let on_cpu = Duration::from_nanos(fields.next()?.ok()?);
    let waiting = Duration::from_nanos(fields.next()?.ok()?);
    Some(SchedClocks { on_cpu, waiting })
}

/// Whether a thread is runnable, from its `stat` line: the state follows the command name,
/// which is in parentheses and may hold any character.
fn parse_runnable(stat: &str) -> Option<bool> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.trim_start().starts_with('R'))
}

/// Thread `tid` of this process's scheduler clocks; None where the kernel keeps none (not
/// Linux, or schedstats compiled out).
fn sched_clocks(tid: u32) -> Option<SchedClocks> {
    parse_schedstat(&std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?)
}

/// Whether thread `tid` of this process is runnable now (running or waiting for a CPU).
fn is_runnable(tid: u32) -> Option<bool> {
    parse_runnable(&std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?)
}

/// The calling thread's id, as `/proc/thread-self` names it.
fn current_tid() -> Option<u32> {
    thread_local! {
        static TID: Option<u32> = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse().ok());
    }
    TID.with(|t| *t)
}

/// Makes any panic end the process (after the usual message), as `panic = "abort"` would: a
/// panicking task must not leave a half-working process behind, answering ARP while its
/// gossip is dead, or looking healthy while its announcer is gone.
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heart_that_stops_is_stale_and_one_that_beats_is_not() {
        let liveness = Liveness::default();
        let steady = liveness.register("steady", Duration::from_millis(40));
        let stuck = liveness.register("stuck", Duration::from_millis(40));
        assert!(liveness.stale().is_empty());
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(10));
            steady.beat();
        }
        let stale = liveness.stale();
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!(stale[0].0, "stuck");
        assert!(stale[0].1 >= Duration::from_millis(40));
        assert!(steady.age() < Duration::from_millis(40));
        assert!(stuck.age() >= Duration::from_millis(40));
    }

    #[test]
    fn scheduler_clocks_and_state_are_read_as_the_kernel_writes_them() {
        assert_eq!(
            parse_schedstat("202891 1690690 2\n"),
            Some(SchedClocks {
                on_cpu: Duration::from_nanos(202_891),
                waiting: Duration::from_nanos(1_690_690),
            })
        );
        assert_eq!(parse_schedstat(""), None);
        // A command name may hold parentheses and spaces.
        assert_eq!(parse_runnable("42 (a) S (b) R 1 42 42 0"), Some(true));
        assert_eq!(parse_runnable("42 (tokio-rt) S 1 42 42 0"), Some(false));
        assert_eq!(parse_runnable("42 tokio"), None);
    }

    #[test]
    fn own_age_counts_cpu_of_a_runnable_thread_and_all_but_waits_of_another() {
        let ms = Duration::from_millis;
        let runnable = SinceBeat {
            age: ms(3000),
            on_cpu: ms(40),
            waiting: ms(900),
            runnable: true,
        };
        assert_eq!(runnable.own_age(), ms(40));
        assert_eq!(runnable.blocked(), ms(2060));
        let asleep = SinceBeat {
            runnable: false,
            ..runnable
        };
        assert_eq!(asleep.own_age(), ms(2100));
        let spinning = SinceBeat {
            age: ms(1500),
            on_cpu: ms(1500),
            waiting: ms(0),
            runnable: true,
        };
        assert_eq!((spinning.own_age(), spinning.blocked()), (ms(1500), ms(0)));
    }

    /// Runs `work` on a thread of its own, where it beats `heart` (registered per thread).
    fn on_thread(
        heart: &Heartbeat,
        work: impl FnOnce(&Heartbeat) + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let heart = heart.clone();
        std::thread::spawn(move || {
            heart.beat();
            work(&heart);
        })
    }

    /// Polls `heart.own_age()` every 5 ms until it exceeds `limit` or `within` ends.
    fn own_age_exceeds(heart: &Heartbeat, limit: Duration, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if heart.own_age() > limit {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_thread_that_blocks_or_spins_without_beating_is_late() {
        assert!(
            sched_clocks(current_tid().unwrap()).is_some(),
            "no schedstat here"
        );
        let limit = Duration::from_millis(150);
        let liveness = Liveness::default();
        let blocked = liveness.register_thread("blocked", limit);
        let blocked_thread = on_thread(&blocked, |_| std::thread::sleep(Duration::from_secs(1)));
        assert!(own_age_exceeds(&blocked, limit, Duration::from_secs(1)));
        blocked_thread.join().unwrap();

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinning = liveness.register_thread("spinning", limit);
        let spinner = on_thread(&spinning, {
            let stop = stop.clone();
            move |_| {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    std::hint::spin_loop();
                }
            }
        });
        let late = own_age_exceeds(&spinning, limit, Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        assert!(
            late,
            "a thread spinning without a beat never counted as late"
        );
        let stale: Vec<_> = liveness.stale().into_iter().map(|(n, _)| n).collect();
        assert_eq!(stale, ["blocked", "spinning"]);
    }

    /// The speaker's announcer on a saturated node: runnable, but waiting up to seconds for
    /// its turn ([`lab::hogs::Starved`]); it beats whenever it gets to run.
    #[test]
    fn a_thread_waiting_for_a_cpu_is_not_late() {
        use std::sync::atomic::AtomicBool;
        assert!(
            sched_clocks(current_tid().unwrap()).is_some(),
            "no schedstat here"
        );
        let limit = Duration::from_millis(25);
        let liveness = Liveness::default();
        let heart = liveness.register_thread("starved", limit);
        let stop = Arc::new(AtomicBool::new(false));
        let (tid, its_tid) = std::sync::mpsc::channel();
        let beating = on_thread(&heart, {
            let stop = stop.clone();
            move |heart| {
                tid.send(current_tid().unwrap()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    heart.beat();
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        // Starved from here, not by itself: a starved thread takes seconds to run a command.
        let tid = i32::try_from(its_tid.recv().unwrap()).unwrap();
        let starved = lab::hogs::Starved::start(tid).unwrap();
        let (mut longest_wall, mut longest_own) = (Duration::ZERO, Duration::ZERO);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            longest_own = longest_own.max(heart.own_age());
            longest_wall = longest_wall.max(heart.age());
        }
        drop(starved);
        stop.store(true, Ordering::Relaxed);
        beating.join().unwrap();
        assert!(
            longest_wall > 4 * limit,
            "the thread never waited long for a CPU (longest {longest_wall:?}): nothing was tested"
        );
        assert!(
            longest_own <= limit,
            "a thread that only waited for a CPU counted as late: {longest_own:?} of its own time \
             without a beat, {longest_wall:?} by the clock"
        );
    }
}
