use super::*;

const MS: Duration = Duration::from_millis(1);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A clock and a `Reach` over nodes "a" (192.0.2.1) and "b" (2001:db8::2), driven in 1 ms steps
/// as the speaker's thread would: replies first, then requests, then the verdict.
struct Run {
    reach: Reach<&'static str>,
    start: Instant,
    now: Instant,
}

impl Run {
    fn new() -> Run {
        let start = Instant::now();
        let mut reach = Reach::new(Config::default());
        reach.watch(
            start,
            BTreeMap::from([("a", ip("192.0.2.1")), ("b", ip("2001:db8::2"))]),
        );
        Run {
            reach,
            start,
            now: start,
        }
    }

    fn at(&self) -> Duration {
        self.now - self.start
    }

    /// Runs until `until` (from the start); `answers(node_addr, now)` says whether a request
    /// sent now is answered (at once). Returns when each node was first judged unreachable.
    fn run(
        &mut self,
        until: Duration,
        answers: impl Fn(IpAddr, Duration) -> bool,
    ) -> BTreeMap<&'static str, Duration> {
        let mut judged = BTreeMap::new();
        while self.at() < until {
            for probe in self.reach.poll(self.now) {
                if answers(probe.addr, self.at()) {
                    self.reach.on_reply(probe.addr);
                }
            }
            for node in self.reach.unreachable(self.now) {
                judged.entry(node).or_insert(self.at());
            }
            self.now += MS;
        }
        judged
    }
}

#[test]
fn a_node_that_falls_silent_is_unreachable_after_the_silence() {
    let mut run = Run::new();
    let dies = Duration::from_millis(500);
    let judged = run.run(Duration::from_millis(1000), |addr, at| {
        addr != ip("192.0.2.1") || at < dies
    });
    assert_eq!(judged.keys().copied().collect::<Vec<_>>(), ["a"]);
    let after = judged["a"] - dies;
    assert!(
        after >= Duration::from_millis(100) && after <= Duration::from_millis(110),
        "judged {after:?} after it fell silent"
    );
    assert_eq!(run.reach.unreachable(run.now), BTreeSet::from(["a"]));
}

#[test]
fn the_verdict_ends_with_the_first_reply() {
    let mut run = Run::new();
    run.run(Duration::from_millis(400), |addr, at| {
        addr != ip("192.0.2.1") || at < Duration::from_millis(100)
    });
    assert_eq!(run.reach.unreachable(run.now), BTreeSet::from(["a"]));
    run.reach.on_reply(ip("192.0.2.1"));
    assert!(run.reach.unreachable(run.now).is_empty());
    // A late reply to any request counts; so does one arriving between two polls.
    let judged = run.run(Duration::from_millis(600), |_, _| true);
    assert!(judged.is_empty(), "{judged:?}");
}

#[test]
fn a_node_that_never_answered_is_never_judged() {
    let mut run = Run::new();
    let judged = run.run(Duration::from_secs(3), |addr, _| addr != ip("2001:db8::2"));
    assert!(
        judged.is_empty(),
        "echo filtered is left to the membership: {judged:?}"
    );
}

#[test]
fn random_losses_short_of_the_silence_judge_nobody() {
    let mut run = Run::new();
    // Seven requests in a row lost, again and again: one short of `min_lost`.
    let judged = run.run(Duration::from_secs(5), |_, at| {
        at < Duration::from_millis(50) || (at.as_millis() / 10) % 8 == 7
    });
    assert!(judged.is_empty(), "{judged:?}");
}

#[test]
fn a_paused_prober_judges_nobody() {
    let mut run = Run::new();
    run.run(Duration::from_millis(100), |_, _| true);
    // The thread is descheduled for 300 ms: it sends nothing, then one request per node.
    run.now += Duration::from_millis(300);
    let probes = run.reach.poll(run.now);
    assert_eq!(probes.len(), 2, "one request per node, not the missed ones");
    assert!(run.reach.unreachable(run.now).is_empty());
    let later = run.now + Duration::from_millis(40);
    assert!(
        run.reach.unreachable(later).is_empty(),
        "one lost request is not a silence"
    );
}

#[test]
fn a_verdict_outliving_the_hold_is_dropped_until_the_node_answers() {
    let mut run = Run::new();
    let judged = run.run(Duration::from_millis(2500), |addr, at| {
        addr != ip("192.0.2.1") || at < Duration::from_millis(100)
    });
    assert!(judged.contains_key("a"));
    assert!(
        run.reach.unreachable(run.now).is_empty(),
        "the membership still counts it live: echo is filtered, not the node dead"
    );
    let judged = run.run(Duration::from_millis(3500), |addr, _| {
        addr != ip("192.0.2.1")
    });
    assert!(judged.is_empty(), "distrusted: {judged:?}");
    // It answers again: judged again when it falls silent.
    let judged = run.run(Duration::from_millis(4000), |addr, at| {
        addr != ip("192.0.2.1") || at < Duration::from_millis(3600)
    });
    assert!(judged.contains_key("a"), "{judged:?}");
}

#[test]
fn watching_keeps_what_is_known_and_starts_over_on_a_new_address() {
    let mut run = Run::new();
    run.run(Duration::from_millis(50), |_, _| true);
    run.reach.watch(
        run.now,
        BTreeMap::from([("a", ip("192.0.2.1")), ("b", ip("2001:db8::3"))]),
    );
    let judged = run.run(Duration::from_millis(500), |_, _| false);
    assert_eq!(
        judged.keys().copied().collect::<Vec<_>>(),
        ["a"],
        "b moved and has not answered at its new address"
    );
    run.reach
        .watch(run.now, BTreeMap::from([("b", ip("2001:db8::3"))]));
    assert!(
        run.reach.unreachable(run.now).is_empty(),
        "a is no longer watched"
    );
    assert_eq!(
        run.reach.watched().collect::<Vec<_>>(),
        [(&"b", ip("2001:db8::3"))]
    );
}

#[test]
fn requests_go_every_interval_with_distinct_sequences() {
    let mut run = Run::new();
    let mut sent: Vec<(Duration, Probe)> = vec![];
    while run.at() < Duration::from_millis(100) {
        sent.extend(run.reach.poll(run.now).into_iter().map(|p| (run.at(), p)));
        run.now += MS;
    }
    assert_eq!(sent.len(), 20, "two nodes, every 10 ms");
    let sequences: BTreeSet<u16> = sent.iter().map(|(_, p)| p.sequence).collect();
    assert_eq!(sequences.len(), 20);
    assert_eq!(
        run.reach.next_due(),
        Some(run.start + Duration::from_millis(100))
    );
}

/// Watching 40 nodes with a budget of 1000 requests a second: each is asked every 40 ms, the
/// requests of a whole second stay within the budget, and a node falling silent is judged
/// after 400 ms (the silence stretched alike), not after 100 ms on too few requests.
#[test]
fn many_watched_nodes_share_the_request_budget() {
    let start = Instant::now();
    let mut reach: Reach<usize> = Reach::new(Config::default());
    let nodes: BTreeMap<usize, IpAddr> = (1..=40)
        .map(|k| (k, IpAddr::from([198, 51, 100, k as u8])))
        .collect();
    reach.watch(start, nodes);
    assert_eq!(
        reach.timing(),
        (Duration::from_millis(40), Duration::from_millis(400))
    );
    let dies = Duration::from_millis(1000);
    let silent = ip("198.51.100.7");
    let (mut now, mut in_a_second, mut judged) = (start, 0, None);
    while now - start < Duration::from_millis(2000) {
        let at = now - start;
        for probe in reach.poll(now) {
            if at < Duration::from_secs(1) {
                in_a_second += 1;
            }
            if probe.addr != silent || at < dies {
                reach.on_reply(probe.addr);
            }
        }
        if judged.is_none() && reach.unreachable(now).contains(&7) {
            judged = Some(at - dies);
        }
        now += MS;
    }
    assert!(
        in_a_second <= 1000,
        "{in_a_second} requests in the first second"
    );
    let after = judged.expect("the silent node is judged");
    assert!(
        after >= Duration::from_millis(400) && after <= Duration::from_millis(440),
        "judged {after:?} after it fell silent"
    );
    // Back to full speed once few are watched.
    reach.watch(now, BTreeMap::from([(1, ip("198.51.100.1"))]));
    assert_eq!(
        reach.timing(),
        (Duration::from_millis(10), Duration::from_millis(100))
    );
}

#[test]
fn the_stretch_is_one_within_the_budget_and_grows_linearly_past_it() {
    let config = Config::default();
    assert_eq!(config.stretch(0), 1.0);
    assert_eq!(config.stretch(10), 1.0);
    assert_eq!(config.stretch(20), 2.0);
    assert_eq!(config.stretch(99), 9.9);
}
