//! BFD (RFC 5880, asynchronous mode; RFC 5881 single hop): one session's state machine, the
//! packets it sends and the verdict it reaches when the peer falls silent.
//!
//! A BGP session's hold timer notices a dead router (or a dead path to it) after seconds; BFD
//! after `detect_mult` missed packets, a second or less. The speaker takes its BGP session down
//! the moment its BFD session leaves Up (RFC 5882).
//!
//! Pure: the caller owns the UDP socket (port 3784, TTL 255), the clock and the randomness (the
//! jitter of each transmission). It demultiplexes received packets to a session by Your
//! Discriminator, or by the peer's address while that is still 0.
//!
//! Not implemented: authentication (a packet with the A bit is refused), demand mode and the
//! echo function (this end asks for no echo packets).

mod packet;

use std::time::{Duration, Instant};

use model::bgp::BfdProfile;

pub use packet::{ControlPacket, DecodeError, Diag, LEN, State};

/// RFC 5880 §6.8.3: while a session is not Up, packets go no faster than once a second.
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// A session's timers, from a `BFDProfile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How often this end wants to send once the session is Up.
    pub desired_min_tx: Duration,
    /// How often this end can take packets; the peer sends no faster.
    pub required_min_rx: Duration,
    /// Packets the peer may miss in a row before this end declares the session down.
    pub detect_mult: u8,
    /// Send nothing until the peer has sent something.
    pub passive: bool,
}

impl From<&BfdProfile> for Config {
    fn from(profile: &BfdProfile) -> Self {
        Config {
            desired_min_tx: profile.transmit_interval,
            required_min_rx: profile.receive_interval,
            detect_mult: profile.detect_multiplier,
            passive: profile.passive,
        }
    }
}

impl Default for Config {
    /// A `BFDProfile` that sets nothing (MetalLB's and FRR's defaults: 300 ms × 3).
    fn default() -> Self {
        Config::from(&BfdProfile::defaults(""))
    }
}

/// A change of the session's state, with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub from: State,
    pub to: State,
    pub diag: Diag,
}

/// Why a received packet was not taken (RFC 5880 §6.8.6, the checks that need the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discarded {
    /// Your Discriminator is neither 0 nor this session's.
    NotOurs,
    /// Your Discriminator is 0, which only a peer that is Down or AdminDown may send.
    ZeroYourDiscriminatorWhileUp,
    /// This end is AdminDown.
    AdminDown,
}

/// What a received packet did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub change: Option<Change>,
    /// The peer polled: answer at once with [`Session::packet`]`(true)`, outside the schedule.
    pub answer_final: bool,
}

/// One BFD session, RFC 5880 §6.8.1's state variables and the two timers.
#[derive(Debug, Clone)]
pub struct Session {
    config: Config,
    state: State,
    remote_state: State,
    local_discriminator: u32,
    remote_discriminator: u32,
    local_diag: Diag,
    /// The peer's Desired Min TX and Required Min RX, as last received (§6.8.1: RemoteMinRx
    /// starts at 1 µs, so that this end sends before it has heard anything).
    remote_desired_min_tx: Duration,
    remote_min_rx: Duration,
    remote_detect_mult: u8,
    /// A Poll Sequence is running: packets carry P until one with F comes back (§6.5).
    polling: bool,
    /// The Desired Min TX the peer was last told of; a change starts a Poll Sequence.
    advertised_min_tx: Duration,
    /// When the peer was last heard (a packet taken); `None` before the first.
    last_heard: Option<Instant>,
    next_transmit: Option<Instant>,
}

impl Session {
    /// A session in state Down. `local_discriminator` must be nonzero and unique among this
    /// node's sessions (the caller draws it at random).
    pub fn new(config: Config, local_discriminator: u32, now: Instant) -> Session {
        assert_ne!(local_discriminator, 0, "a discriminator is never 0");
        let next_transmit = (!config.passive).then_some(now);
        Session {
            advertised_min_tx: SLOW_TX.max(config.desired_min_tx),
            config,
            state: State::Down,
            remote_state: State::Down,
            local_discriminator,
            remote_discriminator: 0,
            local_diag: Diag::None,
            remote_desired_min_tx: Duration::ZERO,
            remote_min_rx: Duration::from_micros(1),
            remote_detect_mult: 0,
            polling: false,
            last_heard: None,
            next_transmit,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn diag(&self) -> Diag {
        self.local_diag
    }

    pub fn local_discriminator(&self) -> u32 {
        self.local_discriminator
    }

    /// The Desired Min TX this end advertises: the configured one when Up, else at least 1 s.
    fn desired_min_tx(&self) -> Duration {
        if self.state == State::Up {
            self.config.desired_min_tx
        } else {
            SLOW_TX.max(self.config.desired_min_tx)
        }
    }

    /// The interval between this end's packets before jitter (§6.8.2); `None` while the peer
    /// asks for none (Required Min RX 0).
    pub fn transmit_interval(&self) -> Option<Duration> {
        (!self.remote_min_rx.is_zero()).then(|| self.desired_min_tx().max(self.remote_min_rx))
    }

    /// How long the peer may stay silent before this end declares the session down (§6.8.4):
    /// the peer's multiplier times the slower of what this end accepts and the peer sends.
    pub fn detection_time(&self) -> Duration {
        self.config
            .required_min_rx
            .max(self.remote_desired_min_tx)
            .saturating_mul(u32::from(self.remote_detect_mult))
    }

    /// The packet this end sends now; `final_` answers a Poll.
    pub fn packet(&self, final_: bool) -> ControlPacket {
        ControlPacket {
            diag: self.local_diag,
            state: self.state,
            // §6.5: never Poll and Final in one packet.
            poll: self.polling && !final_,
            final_,
            control_plane_independent: false,
            authentication_present: false,
            demand: false,
            multipoint: false,
            detect_mult: self.config.detect_mult,
            my_discriminator: self.local_discriminator,
            your_discriminator: self.remote_discriminator,
            desired_min_tx: self.desired_min_tx(),
            required_min_rx: self.config.required_min_rx,
            required_min_echo_rx: Duration::ZERO,
        }
    }

    /// Takes a decoded packet from the peer (§6.8.6).
    pub fn receive(&mut self, p: &ControlPacket, now: Instant) -> Result<Received, Discarded> {
        if p.your_discriminator != 0 && p.your_discriminator != self.local_discriminator {
            return Err(Discarded::NotOurs);
        }
        if p.your_discriminator == 0 && !matches!(p.state, State::Down | State::AdminDown) {
            return Err(Discarded::ZeroYourDiscriminatorWhileUp);
        }
        self.remote_discriminator = p.my_discriminator;
        self.remote_state = p.state;
        self.remote_desired_min_tx = p.desired_min_tx;
        self.remote_detect_mult = p.detect_mult;
        let min_rx_was = self.remote_min_rx;
        self.remote_min_rx = p.required_min_rx;
        if p.final_ {
            self.polling = false;
        }
        if self.state == State::AdminDown {
            return Err(Discarded::AdminDown);
        }
        self.last_heard = Some(now);
        // A passive end starts sending once it has heard the peer; a peer that lowered its
        // rate limit gets the new rate at once.
        if self.next_transmit.is_none() || self.remote_min_rx < min_rx_was {
            self.next_transmit = Some(now);
        }
        let from = self.state;
        let to = match (self.state, p.state) {
            (State::Down | State::Init | State::Up, State::AdminDown) if from != State::Down => {
                self.local_diag = Diag::NeighborSignaledSessionDown;
                State::Down
            }
            (State::Down, State::Down) => State::Init,
            (State::Down, State::Init) => State::Up,
            (State::Init, State::Init | State::Up) => State::Up,
            (State::Up, State::Down) => {
                self.local_diag = Diag::NeighborSignaledSessionDown;
                State::Down
            }
            (state, _) => state,
        };
        let change = self.enter(to);
        if change.is_some() {
            // Tell the peer of a new state at once, not a (slow) interval later.
            self.next_transmit = Some(now);
        }
        Ok(Received {
            change,
            answer_final: p.poll,
        })
    }

    fn enter(&mut self, to: State) -> Option<Change> {
        let from = self.state;
        if from == to {
            return None;
        }
        self.state = to;
        if to == State::Up {
            self.local_diag = Diag::None;
        }
        // The advertised rate changes with Up (1 s or the configured one): a Poll Sequence
        // tells the peer (§6.8.3).
        if self.desired_min_tx() != self.advertised_min_tx {
            self.advertised_min_tx = self.desired_min_tx();
            self.polling = true;
        }
        Some(Change {
            from,
            to,
            diag: self.local_diag,
        })
    }

    /// The session's timers at `now`: the detection time ran out while Init or Up (§6.8.4).
    pub fn expire(&mut self, now: Instant) -> Option<Change> {
        if !matches!(self.state, State::Init | State::Up) {
            return None;
        }
        let heard = self.last_heard?;
        if now.saturating_duration_since(heard) < self.detection_time() {
            return None;
        }
        self.local_diag = Diag::ControlDetectionTimeExpired;
        // §6.8.1: a silent peer's discriminator is forgotten.
        self.remote_discriminator = 0;
        self.remote_state = State::Down;
        self.enter(State::Down)
    }

    /// When [`Session::expire`] may next change something, if ever.
    pub fn detection_deadline(&self) -> Option<Instant> {
        if !matches!(self.state, State::Init | State::Up) {
            return None;
        }
        Some(self.last_heard? + self.detection_time())
    }

    /// When the next scheduled packet is due; `None` while nothing is to be sent (passive and
    /// not yet heard, or the peer asks for none).
    pub fn next_transmit(&self) -> Option<Instant> {
        self.transmit_interval()?;
        self.next_transmit
    }

    /// The scheduled packet, and the time of the one after it: the interval less a jitter of
    /// up to 25 % (10–25 % with a multiplier of 1, §6.8.7). `jitter` is a random number in
    /// [0, 1) the caller draws.
    pub fn transmit(&mut self, now: Instant, jitter: f64) -> Option<ControlPacket> {
        let interval = self.transmit_interval()?;
        self.next_transmit?;
        let jitter = jitter.clamp(0.0, 1.0);
        let cut = if self.config.detect_mult == 1 {
            0.10 + 0.15 * jitter
        } else {
            0.25 * jitter
        };
        self.next_transmit = Some(now + interval.mul_f64(1.0 - cut));
        Some(self.packet(false))
    }

    /// Takes the session administratively down (a graceful stop): the peer is told with
    /// Diag 7, which it does not count as a failure (RFC 5882 §3.2). Returns the change.
    pub fn admin_down(&mut self) -> Option<Change> {
        self.local_diag = Diag::AdministrativelyDown;
        self.enter(State::AdminDown)
    }
}

#[cfg(test)]
mod tests;
