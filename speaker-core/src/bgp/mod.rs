//! BGP mode: one session to one router, as the RFC 4271 §8 state machine sees it, for a
//! speaker that only originates a few host routes and never selects or installs any.
//!
//! The speaker only connects; it does not listen on port 179. A router configured with the
//! node as a neighbour finds the port closed and waits for the node's connection, so there is
//! never a connection collision (§6.8) to resolve.
//!
//! Pure: the caller owns the TCP connection, the wire format and the clock. It feeds
//! [`Input`]s and the timers' expiry, and carries out the [`Output`]s in order.

mod notification;
pub mod rib;
pub mod wire;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub use notification::{Notification, describe};

pub use model::bgp::AS_TRANS;

/// The hold time an OPEN is waited for with (RFC 4271 §8.2.2 suggests 4 minutes).
pub const OPEN_HOLD: Duration = Duration::from_secs(240);

/// Address families a session carries (unicast only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Families {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Families {
    fn both(self, other: Families) -> Families {
        Families {
            ipv4: self.ipv4 && other.ipv4,
            ipv6: self.ipv6 && other.ipv6,
        }
    }

    fn any(self) -> bool {
        self.ipv4 || self.ipv6
    }
}

/// One session's settings, from a `BGPPeer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub local_asn: u32,
    pub peer_asn: u32,
    pub router_id: Ipv4Addr,
    /// Proposed in OPEN; 0 (no keepalives) or at least 3 s, whole seconds.
    pub hold_time: Duration,
    /// `None`: a third of the negotiated hold time.
    pub keepalive_time: Option<Duration>,
    /// Between connection attempts, and before starting again after the session went down.
    pub connect_retry: Duration,
    /// The families this end offers (MP-BGP, RFC 4760).
    pub families: Families,
}

impl PeerConfig {
    pub fn ibgp(&self) -> bool {
        self.local_asn == self.peer_asn
    }
}

/// What a received OPEN says, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-byte field, or the 4-byte capability's value when present (RFC 6793).
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub four_octet_asn: bool,
    /// The multiprotocol capabilities; without any, IPv4 unicast (RFC 4760 §8).
    pub families: Families,
}

/// What both ends agreed on in their OPENs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The smaller of both hold times; zero: no keepalives, no hold timer.
    pub hold_time: Duration,
    pub keepalive_time: Option<Duration>,
    pub families: Families,
    pub four_octet_asn: bool,
    pub peer_router_id: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// What happened on the connection, as the caller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Open the session (and keep it open: it restarts after going down).
    Start,
    /// Close it for good (a graceful stop, or the peer removed).
    Stop,
    TcpConnected,
    /// The connection failed, or closed.
    TcpClosed,
    Open(Open),
    Keepalive,
    Update,
    Notification(Notification),
    /// A message the caller could not decode; the Notification to send.
    Malformed(Notification),
    /// The BFD session that watches this one left Up.
    BfdDown,
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection to the peer (closing any previous one).
    Connect,
    SendOpen,
    SendKeepalive,
    SendNotification(Notification),
    /// Close the connection (after sending what came before).
    Close,
    /// The session is Established: advertise every route now.
    Established(Negotiated),
    /// The session left Established, or failed before it: why, for the peer's condition.
    Down(Down),
}

/// Why a session is not (or no longer) Established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    ConnectionFailed,
    ConnectionClosed,
    HoldTimerExpired(Duration),
    BfdDown,
    /// The router sent this.
    PeerNotification(Notification),
    /// This end sent this, about what the router sent.
    SentNotification(Notification),
    Stopped,
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Down::ConnectionFailed => f.write_str("the TCP connection to the router failed"),
            Down::ConnectionClosed => f.write_str("the router closed the TCP connection"),
            Down::HoldTimerExpired(hold) => write!(
                f,
                "no message from the router within the hold time ({} s)",
                hold.as_secs()
            ),
            Down::BfdDown => f.write_str("BFD declared the path to the router down"),
            Down::PeerNotification(n) => write!(f, "the router sent NOTIFICATION {n}"),
            Down::SentNotification(n) => write!(f, "sent NOTIFICATION {n}"),
            Down::Stopped => f.write_str("stopped"),
        }
    }
}

/// One session's state machine and its three timers.
#[derive(Debug, Clone)]
pub struct Session {
    config: PeerConfig,
    state: State,
    started: bool,
    negotiated: Option<Negotiated>,
    connect_retry_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
}

impl Session {
    pub fn new(config: PeerConfig) -> Session {
        Session {
            config,
            state: State::Idle,
            started: false,
            negotiated: None,
            connect_retry_at: None,
            hold_at: None,
            keepalive_at: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The earliest timer, for the caller to call [`Session::expire`] then.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.connect_retry_at, self.hold_at, self.keepalive_at]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Output> {
        use State::*;
        match (self.state, input) {
            (_, Input::Stop) => {
                self.started = false;
                let mut out = vec![];
                if matches!(self.state, OpenSent | OpenConfirm | Established) {
                    out.push(Output::SendNotification(Notification::ADMIN_SHUTDOWN));
                }
                self.down(out, Down::Stopped, now)
            }
            (Idle, Input::Start) => {
                self.started = true;
                self.connect(now)
            }
            (_, Input::Start) => vec![],
            (Idle, _) => vec![],
            (Connect | Active, Input::TcpConnected) => {
                self.state = OpenSent;
                self.connect_retry_at = None;
                self.hold_at = Some(now + OPEN_HOLD);
                vec![Output::SendOpen]
            }
            (Connect, Input::TcpClosed) => {
                // Wait out the connect-retry timer, then try again.
                self.state = Active;
                vec![Output::Close, Output::Down(Down::ConnectionFailed)]
            }
            (Active, Input::TcpClosed) => vec![],
            (_, Input::TcpClosed) => self.down(vec![], Down::ConnectionClosed, now),
            (_, Input::Notification(n)) => self.down(vec![], Down::PeerNotification(n), now),
            (_, Input::Malformed(n)) => self.send_and_down(n, now),
            (OpenConfirm | Established, Input::BfdDown) => {
                let out = vec![Output::SendNotification(Notification::BFD_DOWN)];
                self.down(out, Down::BfdDown, now)
            }
            (_, Input::BfdDown) => vec![],
            (OpenSent, Input::Open(open)) => match self.check(&open) {
                Err(n) => self.send_and_down(n, now),
                Ok(negotiated) => {
                    self.state = OpenConfirm;
                    self.negotiated = Some(negotiated);
                    self.hold_at =
                        (!negotiated.hold_time.is_zero()).then(|| now + negotiated.hold_time);
                    self.keepalive_at = negotiated.keepalive_time.map(|k| now + k);
                    vec![Output::SendKeepalive]
                }
            },
            (OpenConfirm, Input::Keepalive) => {
                self.state = Established;
                self.heard(now);
                let negotiated = self.negotiated.expect("OpenConfirm has negotiated");
                vec![Output::Established(negotiated)]
            }
            (Established, Input::Keepalive | Input::Update) => {
                self.heard(now);
                vec![]
            }
            // No connection yet: nothing can have been received.
            (Connect | Active, _) => vec![],
            // A message the state does not expect (RFC 6608's subcodes).
            (state, _) => {
                let subcode = match state {
                    OpenSent => 1,
                    OpenConfirm => 2,
                    _ => 3,
                };
                self.send_and_down(Notification::fsm_error(subcode), now)
            }
        }
    }

    /// The timers that are due at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Output> {
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if due(self.hold_at) {
            let hold = match self.state {
                State::OpenSent => OPEN_HOLD,
                _ => self.negotiated.map_or(OPEN_HOLD, |n| n.hold_time),
            };
            let out = vec![Output::SendNotification(Notification::HOLD_TIMER_EXPIRED)];
            return self.down(out, Down::HoldTimerExpired(hold), now);
        }
        let mut out = vec![];
        if due(self.keepalive_at) {
            out.push(Output::SendKeepalive);
            self.keepalive_at = self
                .negotiated
                .and_then(|n| n.keepalive_time)
                .map(|k| now + k);
        }
        if due(self.connect_retry_at) {
            out.extend(self.connect(now));
        }
        out
    }

    fn connect(&mut self, now: Instant) -> Vec<Output> {
        self.state = State::Connect;
        self.connect_retry_at = Some(now + self.config.connect_retry);
        vec![Output::Connect]
    }

    fn heard(&mut self, now: Instant) {
        if let Some(n) = self.negotiated
            && !n.hold_time.is_zero()
        {
            self.hold_at = Some(now + n.hold_time);
        }
    }

    fn send_and_down(&mut self, n: Notification, now: Instant) -> Vec<Output> {
        self.down(
            vec![Output::SendNotification(n)],
            Down::SentNotification(n),
            now,
        )
    }

    /// Closes the connection and goes Idle; a started session connects again after the
    /// connect-retry time.
    fn down(&mut self, mut out: Vec<Output>, why: Down, now: Instant) -> Vec<Output> {
        if self.state != State::Idle || why == Down::Stopped {
            out.push(Output::Close);
        }
        out.push(Output::Down(why));
        self.state = State::Idle;
        self.negotiated = None;
        self.hold_at = None;
        self.keepalive_at = None;
        self.connect_retry_at = self.started.then(|| now + self.config.connect_retry);
        out
    }

    /// RFC 4271 §6.2's checks of an OPEN, and what both ends agree on.
    fn check(&self, open: &Open) -> Result<Negotiated, Notification> {
        if open.version != 4 {
            return Err(Notification::UNSUPPORTED_VERSION);
        }
        if open.asn != self.config.peer_asn {
            return Err(Notification::BAD_PEER_AS);
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(Notification::UNACCEPTABLE_HOLD_TIME);
        }
        if open.router_id.is_unspecified()
            || (self.config.ibgp() && open.router_id == self.config.router_id)
        {
            return Err(Notification::BAD_BGP_IDENTIFIER);
        }
        // A 4-byte own ASN needs a peer that reads it (every router of this century does).
        if self.config.local_asn > u32::from(u16::MAX) && !open.four_octet_asn {
            return Err(Notification::UNSUPPORTED_CAPABILITY);
        }
        let families = self.config.families.both(open.families);
        if !families.any() {
            return Err(Notification::UNSUPPORTED_CAPABILITY);
        }
        let hold_time = self
            .config
            .hold_time
            .min(Duration::from_secs(u64::from(open.hold_time)));
        let keepalive_time = (!hold_time.is_zero()).then(|| {
            let third = hold_time / 3;
            self.config.keepalive_time.map_or(third, |k| k.min(third))
        });
        Ok(Negotiated {
            hold_time,
            keepalive_time,
            families,
            four_octet_asn: open.four_octet_asn,
            peer_router_id: open.router_id,
        })
    }
}

#[cfg(test)]
mod tests;
