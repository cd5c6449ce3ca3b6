//! The failover instrument: new TCP connections to an address, one every few milliseconds for
//! a bounded time, each recorded with its time, outcome and the pod that answered.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::netns::NetNs;

#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub target: SocketAddr,
    /// Time between the starts of two attempts.
    pub interval: Duration,
    /// How long the handshake of one attempt may take: the path to the address works.
    pub connect_timeout: Duration,
    /// How long the answer may take after it: a pod slow to answer on a loaded machine is
    /// not a path that failed, so this is longer.
    pub answer_timeout: Duration,
    /// The probe stops after this long…
    pub duration: Duration,
    /// …or this many attempts, whichever comes first.
    pub max_attempts: usize,
}

impl ProbeConfig {
    pub fn new(target: SocketAddr, duration: Duration) -> ProbeConfig {
        ProbeConfig {
            target,
            interval: Duration::from_millis(10),
            connect_timeout: Duration::from_millis(200),
            answer_timeout: Duration::from_millis(200),
            duration,
            max_attempts: 100_000,
        }
    }

    /// The failover measurement's probe of `ip:80`: a new connection every 5 ms, each allowed
    /// 150 ms to connect, so a gap is measured to within 5 ms, and then a second for the pod's
    /// answer (a lost request is retransmitted after ≥ 200 ms, so a path that breaks after the
    /// handshake still fails the attempt).
    pub fn failover(ip: std::net::IpAddr, duration: Duration) -> ProbeConfig {
        ProbeConfig {
            interval: Duration::from_millis(5),
            connect_timeout: Duration::from_millis(150),
            answer_timeout: Duration::from_secs(1),
            ..ProbeConfig::new(SocketAddr::new(ip, 80), duration)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When the attempt started, from the start of the probe.
    pub at: Duration,
    /// The pod that answered, or why nobody did.
    pub outcome: Result<String, String>,
}

/// What one successful request learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The pod that answered.
    pub pod: String,
    /// The client address the pod saw, when it says (the lab's own pods do; agnhost's
    /// `serve-hostname` answers with its name alone).
    pub client: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub samples: Vec<Sample>,
}

impl ProbeReport {
    pub fn successes(&self) -> usize {
        self.samples.iter().filter(|s| s.outcome.is_ok()).count()
    }

    pub fn failures(&self) -> usize {
        self.samples.len() - self.successes()
    }

    /// The failed attempts whose connection never opened: new connections that found no path
    /// (a dead owner, a route to a node that is gone), as against connections opened and then
    /// reset or lost, which is what moving a path under connections in flight costs.
    pub fn unopened(&self) -> usize {
        self.samples
            .iter()
            .filter(|s| s.outcome.as_ref().is_err_and(|e| e.starts_with(UNOPENED)))
            .count()
    }

    /// The longest time without a successful new connection that is bounded by successes on
    /// both sides: from the last success before a run of failures to the first success after.
    pub fn longest_gap(&self) -> Option<Duration> {
        let oks: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| s.outcome.is_ok())
            .map(|s| s.at)
            .collect();
        oks.windows(2).map(|w| w[1] - w[0]).max()
    }

    /// Each distinct failure with how often it happened and when first and last (ms from the
    /// start), for reports.
    pub fn failure_summary(&self) -> String {
        let mut kinds: std::collections::BTreeMap<&str, (usize, Duration, Duration)> =
            Default::default();
        for s in &self.samples {
            if let Err(e) = &s.outcome {
                let entry = kinds.entry(e.as_str()).or_insert((0, s.at, s.at));
                entry.0 += 1;
                entry.2 = s.at;
            }
        }
        kinds
            .iter()
            .map(|(e, (n, first, last))| {
                format!("{n}× {e:?} {}..{} ms", first.as_millis(), last.as_millis())
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// How many attempts started at `from` or later, and how many of those were answered:
    /// whether a path works again at the end of a probe.
    pub fn answered_from(&self, from: Duration) -> (usize, usize) {
        let tail = self.samples.iter().filter(|s| s.at >= from);
        let (mut answered, mut all) = (0, 0);
        for s in tail {
            all += 1;
            answered += usize::from(s.outcome.is_ok());
        }
        (answered, all)
    }

    /// The pods that answered, in order of first answer.
    pub fn pods(&self) -> Vec<String> {
        let mut pods: Vec<String> = vec![];
        for s in &self.samples {
            if let Ok(p) = &s.outcome
                && !pods.contains(p)
            {
                pods.push(p.clone());
            }
        }
        pods
    }
}

/// How the message of an attempt that could not open its connection begins.
const UNOPENED: &str = "connect: ";

fn unopened(e: std::io::Error) -> String {
    format!("{UNOPENED}{e}")
}

/// One HTTP GET over a new connection, connected within `connect` and answered within `answer`
/// after that; the answering pod's name.
pub fn attempt(target: SocketAddr, connect: Duration, answer: Duration) -> Result<String, String> {
    let mut conn = TcpStream::connect_timeout(&target, connect).map_err(unopened)?;
    let reply = converse(&mut conn, "/hostname", answer)?;
    answer_in(&reply).map(|a| a.pod)
}

/// One HTTP/1.0 GET of `path` over a new connection, connect and answer together within
/// `timeout`: the whole reply, head and body.
pub fn get(target: SocketAddr, path: &str, timeout: Duration) -> Result<String, String> {
    let start = Instant::now();
    let mut conn = TcpStream::connect_timeout(&target, timeout).map_err(unopened)?;
    let left = timeout.saturating_sub(start.elapsed());
    converse(&mut conn, path, left)
}

/// Sends the GET of `path` on `conn` and reads the reply to its end within `within`.
fn converse(conn: &mut TcpStream, path: &str, within: Duration) -> Result<String, String> {
    conn.set_read_timeout(Some(within.max(Duration::from_millis(1))))
        .map_err(|e| e.to_string())?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    Ok(reply)
}

/// One HTTP GET over a new connection: who answered and, when it says, whom it saw.
/// `/hostname` is where agnhost's `netexec` gives its name (`serve-hostname` gives it on any
/// path, as the lab's own servers give their greeting).
pub fn request(target: SocketAddr, timeout: Duration) -> Result<Answer, String> {
    answer_in(&get(target, "/hostname", timeout)?)
}

/// The answer in a reply, or why it is none.
fn answer_in(reply: &str) -> Result<Answer, String> {
    parse_answer(reply).ok_or_else(|| format!("unexpected answer {reply:?}"))
}

/// One HTTP GET over a new connection: the client address the server saw (agnhost's
/// `netexec` says it at `/clientip`, as `address:port`; the lab's own servers always say it).
pub fn client_seen(target: SocketAddr, timeout: Duration) -> Result<IpAddr, String> {
    let reply = get(target, "/clientip", timeout)?;
    parse_client(&reply).ok_or_else(|| format!("no client address in {reply:?}"))
}

/// The client address in a reply to `/clientip`: the lab's `client <address>` line, or
/// agnhost's one-word `address:port` body.
fn parse_client(reply: &str) -> Option<IpAddr> {
    match parse_answer(reply)? {
        Answer {
            client: Some(client),
            ..
        } => client.parse().ok(),
        Answer { pod: body, .. } => body.parse::<SocketAddr>().ok().map(|a| a.ip()),
    }
}

/// The pod and client in an answer: the lab's `Hello from <pod>` / `client <address>`, or the
/// body of a 200 that is one word, as agnhost's `serve-hostname --http` sends its name.
fn parse_answer(reply: &str) -> Option<Answer> {
    let field = |prefix: &str| {
        reply
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
    };
    if let Some(pod) = field("Hello from ") {
        return Some(Answer {
            pod,
            client: field("client "),
        });
    }
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let ok = head.lines().next()?.split_whitespace().nth(1) == Some("200");
    let body = body.trim();
    (ok && !body.is_empty() && !body.contains(char::is_whitespace)).then(|| Answer {
        pod: body.to_string(),
        client: None,
    })
}

/// Runs the probe from inside `ns`, blocking the calling thread.
///
/// Attempts start every `interval` whether or not earlier ones have finished, each on its own
/// thread (threads inherit the namespace of the thread that spawns them), so an attempt stuck
/// on a dead node does not delay the next: the gap is measured to within one interval.
pub fn run(ns: &NetNs, config: &ProbeConfig) -> Result<ProbeReport> {
    run_until(ns, config, &AtomicBool::new(false))
}

/// [`run`], which also stops early once `stop` is set.
pub fn run_until(ns: &NetNs, config: &ProbeConfig, stop: &AtomicBool) -> Result<ProbeReport> {
    ns.enter(|| {
        let start = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut started = 0;
        while start.elapsed() < config.duration
            && started < config.max_attempts
            && !stop.load(Ordering::Relaxed)
        {
            let at = start.elapsed();
            let (tx, target) = (tx.clone(), config.target);
            let (connect, answer) = (config.connect_timeout, config.answer_timeout);
            std::thread::spawn(move || {
                let outcome = attempt(target, connect, answer);
                let _ = tx.send(Sample { at, outcome });
            });
            started += 1;
            let next = at + config.interval;
            if let Some(wait) = next.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        drop(tx);
        // Every attempt ends within its timeout; the channel closes when the last one does.
        let mut samples: Vec<Sample> = rx.iter().collect();
        samples.sort_by_key(|s| s.at);
        ProbeReport { samples }
    })
}

/// A probe running in the background while something happens, for at most its duration,
/// ended a quiet while after what it watches is over instead of at a fixed time.
pub struct Background {
    stop: Arc<AtomicBool>,
    run: tokio::task::JoinHandle<Result<ProbeReport>>,
}

impl Background {
    pub fn start(ns: &NetNs, config: ProbeConfig) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, flag) = (ns.clone(), stop.clone());
        let run = tokio::task::spawn_blocking(move || run_until(&ns, &config, &flag));
        Background { stop, run }
    }

    /// Probes on for `quiet` more (what comes after a change: a late failure shows there),
    /// then stops and reports.
    pub async fn finish_after(self, quiet: Duration) -> Result<ProbeReport> {
        tokio::time::sleep(quiet).await;
        self.stop.store(true, Ordering::Relaxed);
        self.run.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcomes: &[(u64, bool)]) -> ProbeReport {
        ProbeReport {
            samples: outcomes
                .iter()
                .map(|&(ms, ok)| Sample {
                    at: Duration::from_millis(ms),
                    outcome: if ok { Ok("p".into()) } else { Err("x".into()) },
                })
                .collect(),
        }
    }

    #[test]
    fn gap_spans_from_last_success_to_next_success() {
        let r = report(&[
            (0, true),
            (10, true),
            (20, false),
            (30, false),
            (40, true),
            (50, true),
        ]);
        assert_eq!(r.longest_gap(), Some(Duration::from_millis(30)));
        assert_eq!((r.successes(), r.failures()), (4, 2));
        assert_eq!(report(&[(0, false)]).longest_gap(), None);
        assert_eq!(r.answered_from(Duration::from_millis(30)), (2, 3));
    }

    /// A loopback server that answers every connection as `answer` says, on its own thread.
    fn server(answer: fn(TcpStream)) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming().take(1) {
                answer(conn.unwrap());
            }
        });
        at
    }

    #[test]
    fn a_slow_answer_counts_and_a_connection_that_never_opened_is_told_apart() {
        let (connect, answer) = (Duration::from_millis(150), Duration::from_secs(1));
        // Slower than the handshake's limit, well within the answer's: the path works.
        let slow = server(|mut c| {
            // The request read first: closing with it unread would reset the connection.
            let _ = c.read(&mut [0; 64]);
            std::thread::sleep(Duration::from_millis(400));
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\n\r\nslow-pod");
        });
        assert_eq!(attempt(slow, connect, answer), Ok("slow-pod".to_string()));
        // Opened, then closed without a word: a failure, but not an unopened one.
        let mute = server(drop);
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let samples = [mute, closed]
            .into_iter()
            .enumerate()
            .map(|(i, target)| Sample {
                at: Duration::from_millis(i as u64),
                outcome: attempt(target, connect, answer),
            })
            .collect();
        let r = ProbeReport { samples };
        assert_eq!(
            (r.failures(), r.unopened()),
            (2, 1),
            "{}",
            r.failure_summary()
        );
    }

    #[test]
    fn answers_of_the_lab_pods_and_of_agnhost_are_read() {
        let lab = parse_answer("HTTP/1.0 200 OK\r\n\r\nHello from hello-1\nclient 198.51.100.10\n");
        assert_eq!(
            lab,
            Some(Answer {
                pod: "hello-1".into(),
                client: Some("198.51.100.10".into())
            })
        );
        let agnhost = "HTTP/1.1 200 OK\r\nDate: Mon, 30 Nov 2026 20:00:00 GMT\r\n\
                       Content-Length: 20\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
                       hello-5d4c9b7f8-x2k9q";
        assert_eq!(
            parse_answer(agnhost),
            Some(Answer {
                pod: "hello-5d4c9b7f8-x2k9q".into(),
                client: None
            })
        );
        for bad in [
            "HTTP/1.1 503 Service Unavailable\r\n\r\nbusy",
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n<html> two words </html>",
            "garbage",
        ] {
            assert_eq!(parse_answer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_client_address_from_agnhost_and_from_the_lab_s_servers() {
        let seen = |r: &str| parse_client(r).map(|ip| ip.to_string());
        assert_eq!(
            seen("HTTP/1.1 200 OK\r\n\r\n198.51.100.10:40312"),
            Some("198.51.100.10".into())
        );
        assert_eq!(
            seen("HTTP/1.1 200 OK\r\n\r\n[2001:db8::10]:40312"),
            Some("2001:db8::10".into())
        );
        assert_eq!(
            seen("HTTP/1.0 200 OK\r\n\r\nHello from outside\nclient 198.51.100.11\n"),
            Some("198.51.100.11".into())
        );
        assert_eq!(seen("HTTP/1.1 200 OK\r\n\r\nhello-1"), None);
    }
}
