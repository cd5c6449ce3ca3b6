//! BFD's I/O (RFC 5881, single hop): one task holds every session of this node, receives
//! on UDP port 3784 (IPv4 and IPv6) and sends each session's packets from a port of its own
//! (49152–65535) with TTL / hop limit 255. The sessions themselves are `speaker_core::bfd`'s
//! pure state machines; their state is published on a watch channel per peer, which the BGP
//! session to the same router follows (a BFD down takes the BGP session down at once).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use speaker_core::bfd::{Config, ControlPacket, Session, State};
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// RFC 5881 §4: control packets go to this port.
pub const CONTROL_PORT: u16 = 3784;
/// RFC 5881 §4: and come from one of these.
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

enum Command {
    Add {
        peer: IpAddr,
        local: Option<IpAddr>,
        config: Config,
        state: watch::Sender<State>,
    },
    Remove(IpAddr),
}

/// The handle of the BFD task; the task ends when it is dropped.
#[derive(Clone)]
pub struct Bfd {
    commands: mpsc::UnboundedSender<Command>,
}

impl Bfd {
    /// Binds port 3784 on every address (both families) and starts the task.
    pub async fn start() -> io::Result<Bfd> {
        let v4 =
            UdpSocket::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), CONTROL_PORT)).await?;
        let v6 = bind_v6_only(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), CONTROL_PORT))?;
        // Each datagram's TTL / hop limit comes with it: RFC 5881 §5 takes only 255.
        setsockopt(&v4, sockopt::Ipv4RecvTtl, &true).map_err(io::Error::from)?;
        setsockopt(&v6, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(serve(v4, v6, rx));
        Ok(Bfd { commands })
    }

    /// Starts a session with `peer` (from `local`, else the route's source) and returns its
    /// state as it changes; a session already there is replaced.
    pub fn add(
        &self,
        peer: IpAddr,
        local: Option<IpAddr>,
        config: Config,
    ) -> watch::Receiver<State> {
        let (state, rx) = watch::channel(State::Down);
        let _ = self.commands.send(Command::Add {
            peer,
            local,
            config,
            state,
        });
        rx
    }

    /// Ends the session with `peer`, telling it AdminDown first.
    pub fn remove(&self, peer: IpAddr) {
        let _ = self.commands.send(Command::Remove(peer));
    }
}

fn bind_v6_only(address: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_only_v6(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    UdpSocket::from_std(socket.into())
}

struct Entry {
    session: Session,
    socket: UdpSocket,
    state: watch::Sender<State>,
}

impl Entry {
    fn publish(&self) {
        let now = self.session.state();
        self.state
            .send_if_modified(|s| std::mem::replace(s, now) != now);
    }
}

/// A socket to send one session's packets from: a free source port of the range, TTL 255.
async fn sender(peer: IpAddr, local: Option<IpAddr>) -> io::Result<UdpSocket> {
    let any: IpAddr = match peer {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let start = SOURCE_PORTS.start() + (rand::random::<u16>() % 16384);
    let mut last = io::Error::other("no free source port");
    for offset in 0..=(SOURCE_PORTS.end() - SOURCE_PORTS.start()) {
        let port = SOURCE_PORTS.start()
            + (start - SOURCE_PORTS.start() + offset)
                % (SOURCE_PORTS.end() - SOURCE_PORTS.start() + 1);
        match UdpSocket::bind(SocketAddr::new(local.unwrap_or(any), port)).await {
            Ok(socket) => {
                let raw = socket2::SockRef::from(&socket);
                match peer {
                    IpAddr::V4(_) => raw.set_ttl_v4(255)?,
                    IpAddr::V6(_) => raw.set_unicast_hops_v6(255)?,
                }
                socket.connect(SocketAddr::new(peer, CONTROL_PORT)).await?;
                return Ok(socket);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn serve(v4: UdpSocket, v6: UdpSocket, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut sessions: HashMap<IpAddr, Entry> = HashMap::new();
    let mut buf4 = [0u8; 128];
    let mut buf6 = [0u8; 128];
    loop {
        let deadline = sessions
            .values()
            .flat_map(|e| [e.session.next_transmit(), e.session.detection_deadline()])
            .flatten()
            .min();
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Add { peer, local, config, state }) => {
                    match sender(peer, local).await {
                        Ok(socket) => {
                            let discriminator = loop {
                                let d: u32 = rand::random();
                                if d != 0 && sessions.values().all(|e| e.session.local_discriminator() != d) {
                                    break d;
                                }
                            };
                            let entry = Entry {
                                session: Session::new(config, discriminator, Instant::now()),
                                socket,
                                state,
                            };
                            entry.publish();
                            sessions.insert(peer, entry);
                        }
                        Err(error) => tracing::warn!(%peer, %error, "no BFD session"),
                    }
                }
                Some(Command::Remove(peer)) => {
                    if let Some(mut entry) = sessions.remove(&peer) {
                        entry.session.admin_down();
                        let _ = entry.socket.send(&entry.session.packet(false).encode()).await;
                    }
                }
            },
            received = v4.async_io(Interest::READABLE, || receive(&v4, &mut buf4)) => {
                if let Ok((len, from)) = received {
                    take(&mut sessions, from, &buf4[..len]).await;
                }
            }
            received = v6.async_io(Interest::READABLE, || receive(&v6, &mut buf6)) => {
                if let Ok((len, from)) = received {
                    take(&mut sessions, from, &buf6[..len]).await;
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                let now = Instant::now();
                for (peer, entry) in sessions.iter_mut() {
                    if let Some(change) = entry.session.expire(now) {
                        tracing::info!(%peer, from = ?change.from, to = ?change.to, diag = ?change.diag, "BFD session changed");
                    }
                    // Only the sessions whose packet is due (the deadline was the earliest).
                    if entry.session.next_transmit().is_some_and(|at| at <= now)
                        && let Some(packet) = entry.session.transmit(now, rand::random::<f64>())
                    {
                        let _ = entry.socket.send(&packet.encode()).await;
                    }
                    entry.publish();
                }
            }
        }
    }
}

/// The next datagram that came with TTL (hop limit) 255, with its sender: from a neighbour on
/// the link (RFC 5881 §5, the generalized TTL security of RFC 5082), not from farther away.
/// Others are read and dropped; `WouldBlock` when the queue is empty.
fn receive(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
    loop {
        let mut iov = [io::IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!(nix::libc::c_int);
        let message = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        let ttl = message
            .cmsgs()
            .map_err(io::Error::from)?
            .find_map(|c| match c {
                ControlMessageOwned::Ipv4Ttl(ttl) => Some(ttl),
                ControlMessageOwned::Ipv6HopLimit(hops) => Some(hops),
                _ => None,
            });
        let from = message.address.and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        });
        match (ttl, from) {
            (Some(255), Some(from)) => return Ok((message.bytes, from)),
            (ttl, from) => {
                tracing::debug!(
                    ?from,
                    ?ttl,
                    "BFD packet not from a neighbour on the link: dropped"
                )
            }
        }
    }
}

async fn take(sessions: &mut HashMap<IpAddr, Entry>, from: IpAddr, payload: &[u8]) {
    let from = match from {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(from, IpAddr::V4),
        v4 => v4,
    };
    let Some(entry) = sessions.get_mut(&from) else {
        return;
    };
    let Ok(packet) = ControlPacket::decode(payload) else {
        return;
    };
    match entry.session.receive(&packet, Instant::now()) {
        Ok(received) => {
            if let Some(change) = received.change {
                tracing::info!(peer = %from, from = ?change.from, to = ?change.to, diag = ?change.diag, "BFD session changed");
            }
            if received.answer_final {
                let _ = entry
                    .socket
                    .send(&entry.session.packet(true).encode())
                    .await;
            }
            entry.publish();
        }
        Err(discarded) => tracing::debug!(peer = %from, ?discarded, "BFD packet discarded"),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}
