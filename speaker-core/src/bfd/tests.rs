use super::*;

const MS: Duration = Duration::from_millis(1);

/// Two sessions on a simulated wire, stepped a millisecond at a time. Packets go through the
/// codec; the jitter comes from a fixed sequence, so every run is the same.
struct Wire {
    start: Instant,
    now: Instant,
    ends: [Session; 2],
    /// Whether each end's packets arrive (false: that end is dead or cut off).
    delivers: [bool; 2],
    changes: Vec<(usize, Duration, Change)>,
    sent: [Vec<(Duration, ControlPacket)>; 2],
    discarded: [usize; 2],
    seed: u64,
}

impl Wire {
    fn new(a: Config, b: Config) -> Wire {
        let start = Instant::now();
        Wire {
            start,
            now: start,
            ends: [
                Session::new(a, 0x1111, start),
                Session::new(b, 0x2222, start),
            ],
            delivers: [true, true],
            changes: vec![],
            sent: [vec![], vec![]],
            discarded: [0, 0],
            seed: 7,
        }
    }

    fn jitter(&mut self) -> f64 {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }

    fn at(&self) -> Duration {
        self.now - self.start
    }

    fn deliver(&mut self, from: usize, packet: ControlPacket) {
        let at = self.at();
        self.sent[from].push((at, packet.clone()));
        if !self.delivers[from] {
            return;
        }
        let packet = ControlPacket::decode(&packet.encode()).unwrap();
        let to = 1 - from;
        let Ok(received) = self.ends[to].receive(&packet, self.now) else {
            self.discarded[to] += 1;
            return;
        };
        if let Some(change) = received.change {
            self.changes.push((to, at, change));
        }
        if received.answer_final {
            let answer = self.ends[to].packet(true);
            self.deliver(to, answer);
        }
    }

    fn run(&mut self, until: Duration) {
        while self.at() < until {
            self.now += MS;
            for end in 0..2 {
                if let Some(change) = self.ends[end].expire(self.now) {
                    self.changes.push((end, self.at(), change));
                }
                if self.ends[end]
                    .next_transmit()
                    .is_some_and(|t| t <= self.now)
                {
                    let jitter = self.jitter();
                    if let Some(packet) = self.ends[end].transmit(self.now, jitter) {
                        self.deliver(end, packet);
                    }
                }
            }
        }
    }

    fn states(&self) -> [State; 2] {
        [self.ends[0].state(), self.ends[1].state()]
    }
}

#[test]
fn two_ends_come_up_and_then_send_at_the_configured_rate() {
    let mut wire = Wire::new(Config::default(), Config::default());
    wire.run(Duration::from_millis(50));
    assert_eq!(wire.states(), [State::Up, State::Up], "{:?}", wire.changes);
    // Down -> Init -> Up on one end, Down -> Up on the other (it heard Init).
    let transitions: Vec<(usize, State, State)> = wire
        .changes
        .iter()
        .map(|(e, _, c)| (*e, c.from, c.to))
        .collect();
    assert_eq!(
        transitions,
        [
            (1, State::Down, State::Init),
            (0, State::Down, State::Up),
            (1, State::Init, State::Up)
        ]
    );
    // Before Up, at most one packet a second (besides the answers to a change); once Up,
    // 300 ms less jitter, and the Poll that announced the faster rate was answered.
    wire.run(Duration::from_secs(5));
    let up_at = wire.changes.last().unwrap().1;
    for end in 0..2 {
        let scheduled: Vec<Duration> = wire.sent[end]
            .iter()
            .filter(|(at, p)| *at > up_at + MS && !p.final_)
            .map(|(at, _)| *at)
            .collect();
        for gap in scheduled.windows(2).map(|w| w[1] - w[0]) {
            assert!(
                (225 * MS..=300 * MS).contains(&gap),
                "end {end}: a gap of {gap:?} between packets"
            );
        }
        assert!(!wire.ends[end].packet(false).poll, "end {end} still polls");
        assert!(
            wire.sent[1 - end].iter().any(|(_, p)| p.final_),
            "no Final from {}",
            1 - end
        );
    }
}

#[test]
fn a_silent_peer_is_declared_down_after_the_detection_time_and_not_before() {
    let mut wire = Wire::new(Config::default(), Config::default());
    wire.run(Duration::from_secs(2));
    assert_eq!(wire.states(), [State::Up, State::Up]);
    wire.delivers[1] = false;
    let silent_from = wire.at();
    let last_heard = wire.sent[1]
        .iter()
        .map(|(at, _)| *at)
        .filter(|at| *at <= silent_from)
        .max()
        .unwrap();
    wire.run(Duration::from_secs(4));
    let (_, at, change) = wire
        .changes
        .iter()
        .copied()
        .find(|(end, at, _)| *end == 0 && *at > silent_from)
        .unwrap();
    assert_eq!(
        change,
        Change {
            from: State::Up,
            to: State::Down,
            diag: Diag::ControlDetectionTimeExpired
        }
    );
    // 3 × 300 ms after the last packet heard, to the millisecond of the simulation.
    assert_eq!(at - last_heard, Duration::from_millis(900));
    // The dead end's discriminator is forgotten; the living end's packets say Down with
    // Your Discriminator 0, and the other end, heard again, brings the session back up.
    assert_eq!(wire.ends[0].packet(false).your_discriminator, 0);
    assert_eq!(
        wire.ends[0].packet(false).diag,
        Diag::ControlDetectionTimeExpired
    );
    wire.delivers[1] = true;
    wire.run(Duration::from_secs(8));
    assert_eq!(wire.states(), [State::Up, State::Up]);
}

#[test]
fn detection_time_is_the_peers_multiplier_times_the_slower_rate() {
    let slow_sender = Config {
        desired_min_tx: Duration::from_millis(500),
        detect_mult: 5,
        ..Config::default()
    };
    let mut wire = Wire::new(Config::default(), slow_sender);
    wire.run(Duration::from_secs(4));
    assert_eq!(wire.states(), [State::Up, State::Up]);
    // End 0 waits 5 × max(300, 500) ms; end 1 waits 3 × max(300, 300) ms.
    assert_eq!(wire.ends[0].detection_time(), Duration::from_millis(2500));
    assert_eq!(wire.ends[1].detection_time(), Duration::from_millis(900));
    // End 0 sends no faster than end 1 accepts, and end 1 no faster than it wants.
    assert_eq!(
        wire.ends[0].transmit_interval(),
        Some(Duration::from_millis(300))
    );
    assert_eq!(
        wire.ends[1].transmit_interval(),
        Some(Duration::from_millis(500))
    );
}

#[test]
fn every_received_state_moves_the_session_as_rfc_5880_says() {
    use State::*;
    let now = Instant::now();
    // (local state, received state) -> (new state, diag)
    let table = [
        (Down, AdminDown, Down, Diag::None),
        (Down, Down, Init, Diag::None),
        (Down, Init, Up, Diag::None),
        (Down, Up, Down, Diag::None),
        (Init, AdminDown, Down, Diag::NeighborSignaledSessionDown),
        (Init, Down, Init, Diag::None),
        (Init, Init, Up, Diag::None),
        (Init, Up, Up, Diag::None),
        (Up, AdminDown, Down, Diag::NeighborSignaledSessionDown),
        (Up, Down, Down, Diag::NeighborSignaledSessionDown),
        (Up, Init, Up, Diag::None),
        (Up, Up, Up, Diag::None),
    ];
    for (local, received, expected, diag) in table {
        let mut session = Session::new(Config::default(), 1, now);
        session.state = local;
        let mut packet = Session::new(Config::default(), 2, now).packet(false);
        packet.state = received;
        packet.your_discriminator = 1;
        let got = session.receive(&packet, now).unwrap();
        assert_eq!(
            (session.state(), session.diag()),
            (expected, diag),
            "{local:?} receiving {received:?}"
        );
        assert_eq!(
            got.change.is_some(),
            local != expected,
            "{local:?} receiving {received:?}"
        );
    }
}

#[test]
fn packets_for_another_session_or_with_a_premature_zero_are_discarded() {
    let now = Instant::now();
    let mut session = Session::new(Config::default(), 1, now);
    let mut packet = Session::new(Config::default(), 2, now).packet(false);
    packet.your_discriminator = 99;
    assert_eq!(session.receive(&packet, now), Err(Discarded::NotOurs));
    packet.your_discriminator = 0;
    packet.state = State::Up;
    assert_eq!(
        session.receive(&packet, now),
        Err(Discarded::ZeroYourDiscriminatorWhileUp)
    );
    assert_eq!(session.state(), State::Down);
    packet.state = State::Down;
    assert!(session.receive(&packet, now).is_ok());
    assert_eq!(session.state(), State::Init);
}

#[test]
fn a_passive_end_waits_to_be_spoken_to() {
    let passive = Config {
        passive: true,
        ..Config::default()
    };
    let mut wire = Wire::new(passive.clone(), passive.clone());
    wire.run(Duration::from_secs(3));
    assert!(wire.sent.iter().all(Vec::is_empty));
    assert_eq!(wire.states(), [State::Down, State::Down]);

    let mut wire = Wire::new(passive, Config::default());
    wire.run(Duration::from_secs(3));
    assert_eq!(wire.states(), [State::Up, State::Up]);
    // The passive end's first packet came after the active end's first.
    assert!(wire.sent[0][0].0 >= wire.sent[1][0].0);
}

#[test]
fn a_peer_asking_for_no_packets_gets_none() {
    let now = Instant::now();
    let mut session = Session::new(Config::default(), 1, now);
    let mut packet = Session::new(Config::default(), 2, now).packet(false);
    packet.required_min_rx = Duration::ZERO;
    session.receive(&packet, now).unwrap();
    assert_eq!(session.transmit_interval(), None);
    assert_eq!(session.next_transmit(), None);
    assert_eq!(session.transmit(now, 0.5), None);
}

#[test]
fn jitter_cuts_up_to_a_quarter_and_at_least_a_tenth_with_a_multiplier_of_one() {
    let now = Instant::now();
    for (mult, lowest, highest) in [(3u8, 0.75, 1.0), (1, 0.75, 0.90)] {
        let config = Config {
            detect_mult: mult,
            ..Config::default()
        };
        for jitter in [0.0, 0.25, 0.5, 0.999] {
            let mut session = Session::new(config.clone(), 1, now);
            session.transmit(now, jitter).unwrap();
            let gap = (session.next_transmit().unwrap() - now).as_secs_f64();
            assert!(
                (lowest - 1e-9..=highest + 1e-9).contains(&gap),
                "multiplier {mult}, jitter {jitter}: {gap} s after a 1 s interval"
            );
        }
    }
}

#[test]
fn an_administrative_stop_is_not_a_failure_to_the_peer() {
    let mut wire = Wire::new(Config::default(), Config::default());
    wire.run(Duration::from_secs(2));
    assert_eq!(wire.states(), [State::Up, State::Up]);
    let change = wire.ends[0].admin_down().unwrap();
    assert_eq!(change.to, State::AdminDown);
    wire.run(Duration::from_secs(4));
    assert_eq!(wire.states(), [State::AdminDown, State::Down]);
    // The stopped end takes nothing from the peer any more.
    assert!(wire.discarded[0] > 0);
    // The peer went down because it was told, not because packets were missed.
    assert_eq!(wire.ends[1].diag(), Diag::NeighborSignaledSessionDown);
    assert_eq!(wire.ends[0].packet(false).diag, Diag::AdministrativelyDown);
}
