//! BGP mode's I/O: one task per router session. It carries out `speaker_core::bgp`'s state
//! machine over a TCP connection (signed with TCP MD5 when the peer has a password) and keeps
//! what the router was sent equal to the routes it is given, sending only the differences.
//!
//! A session carries the family of its own address: the next hop of each route is the
//! session's local address, so an IPv4 session advertises the IPv4 prefixes and an IPv6
//! session the IPv6 ones (peer a router over both to advertise both).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::Instant;

use speaker_core::bfd::State as BfdState;
use speaker_core::bgp::rib::{self, Routes};
use speaker_core::bgp::wire::{self, Message};
use speaker_core::bgp::{Input, Negotiated, Output, PeerConfig, Session, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One router, as a session needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub address: SocketAddr,
    /// The local address to connect from; `None`: the kernel's choice (the route's source).
    pub source: Option<IpAddr>,
    /// The TCP MD5 key (RFC 2385).
    pub password: Option<Vec<u8>>,
    /// The IP TTL / hop limit of its packets ([`model::bgp::BgpPeer::ttl`]).
    pub ttl: u8,
    /// Its `families` are set from `address` by [`run`].
    pub config: PeerConfig,
}

/// What a session reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// Why it last went down or could not connect, for the status and the Event.
    pub last_down: Option<String>,
    /// The hold time both ends agreed on, while Established.
    pub hold_time: Option<std::time::Duration>,
    /// Prefixes the router holds from this session.
    pub advertised: usize,
    pub updates_sent: u64,
    /// Times it reached Established.
    pub established: u64,
    /// Times it went down from OpenSent, OpenConfirm or Established.
    pub downs: u64,
    /// Times its BFD session left Up.
    pub bfd_downs: u64,
    /// The BFD session's state, for peers with a BFD profile.
    pub bfd: Option<BfdState>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            state: State::Idle,
            last_down: None,
            hold_time: None,
            advertised: 0,
            updates_sent: 0,
            established: 0,
            downs: 0,
            bfd_downs: 0,
            bfd: None,
        }
    }
}

/// The established connection: where UPDATEs go, and their next hop.
struct Established {
    negotiated: Negotiated,
    next_hop: IpAddr,
}

/// Runs the session to `peer` until `stop` turns true: then it closes with a Cease (RFC 4486
/// administrative shutdown) and returns. `routes` are the prefixes to advertise; `bfd`, the
/// state of the BFD session to the same router, if it has one: leaving Up takes the session
/// down at once (RFC 5882 §4.3) instead of after the hold time.
pub async fn run(
    mut peer: Peer,
    mut routes: watch::Receiver<Routes>,
    status: watch::Sender<Status>,
    mut stop: watch::Receiver<bool>,
    mut bfd: Option<watch::Receiver<BfdState>>,
) {
    peer.config.families = speaker_core::bgp::Families {
        ipv4: peer.address.is_ipv4(),
        ipv6: peer.address.is_ipv6(),
    };
    let mut session = Session::new(peer.config.clone());
    let mut connecting: Option<JoinHandle<io::Result<TcpStream>>> = None;
    let mut reader: Option<OwnedReadHalf> = None;
    let mut writer: Option<OwnedWriteHalf> = None;
    let mut local: Option<IpAddr> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(wire::MAX_LEN);
    let mut established: Option<Established> = None;
    let mut sent = Routes::new();
    let mut stopping = *stop.borrow();
    let mut bfd_up = false;
    let mut pending = session.handle(
        if stopping { Input::Stop } else { Input::Start },
        Instant::now(),
    );
    loop {
        // Carry out what the state machine asked for, in order; a failed write is the
        // connection closing, which the machine is told next.
        let mut inputs = Vec::new();
        for output in pending.drain(..) {
            let written = match output {
                Output::Connect => {
                    if let Some(old) = connecting.take()
                        && !old.is_finished()
                    {
                        old.abort();
                        // The router's kernel drops SYNs without the right MD5 signature: a
                        // silent router is most often that.
                        status.send_modify(|s| {
                            s.last_down = Some(format!(
                                "no answer from {} within {:?}: a wrong or missing TCP MD5 password, a firewall, or a router not configured for this node",
                                peer.address, peer.config.connect_retry
                            ))
                        });
                    }
                    reader = None;
                    writer = None;
                    connecting = Some(tokio::spawn(connect(
                        peer.address,
                        peer.source,
                        peer.password.clone(),
                        peer.ttl,
                    )));
                    Ok(())
                }
                Output::SendOpen => send(&mut writer, &wire::encode_open(&peer.config)).await,
                Output::SendKeepalive => send(&mut writer, &wire::encode_keepalive()).await,
                Output::SendNotification(n) => {
                    send(&mut writer, &wire::encode_notification(n)).await
                }
                Output::Close => {
                    if let Some(old) = connecting.take() {
                        old.abort();
                    }
                    if let Some(mut w) = writer.take() {
                        let _ = w.shutdown().await;
                    }
                    reader = None;
                    buf.clear();
                    Ok(())
                }
                Output::Established(negotiated) => {
                    let Some(next_hop) = local else {
                        inputs.push(Input::TcpClosed);
                        continue;
                    };
                    let state = Established {
                        negotiated,
                        next_hop,
                    };
                    sent.clear();
                    // A copy: the watch's read guard must not be held across the writes (it
                    // would block the owner's next update, and it is not Send).
                    let wanted = routes.borrow_and_update().clone();
                    let result = sync(&mut writer, &peer, &state, &wanted, &mut sent).await;
                    let hold_time = state.negotiated.hold_time;
                    established = Some(state);
                    status.send_modify(|s| {
                        s.established += 1;
                        s.last_down = None;
                        s.hold_time = Some(hold_time);
                    });
                    result.map(|updates| status.send_modify(|s| s.updates_sent += updates))
                }
                Output::Down(why) => {
                    established = None;
                    sent.clear();
                    tracing::info!(peer = %peer.name, %why, "BGP session down");
                    status.send_modify(|s| {
                        s.last_down = Some(why.to_string());
                        s.hold_time = None;
                        s.downs += 1;
                    });
                    Ok(())
                }
            };
            if written.is_err() {
                inputs.push(Input::TcpClosed);
            }
        }
        status.send_modify(|s| {
            s.state = session.state();
            s.advertised = sent.len();
        });
        if stopping && session.state() == State::Idle {
            return;
        }
        let now = Instant::now();
        for input in inputs {
            pending.extend(session.handle(input, now));
        }
        if !pending.is_empty() {
            continue;
        }

        let deadline = session.next_deadline();
        let asn4 = established
            .as_ref()
            .is_some_and(|e| e.negotiated.four_octet_asn);
        tokio::select! {
            result = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                connecting = None;
                pending = match result {
                    Ok(Ok(stream)) => {
                        local = stream.local_addr().ok().map(|a| a.ip());
                        let _ = stream.set_nodelay(true);
                        let (r, w) = stream.into_split();
                        reader = Some(r);
                        writer = Some(w);
                        buf.clear();
                        session.handle(Input::TcpConnected, Instant::now())
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(peer = %peer.name, %error, "BGP connection failed");
                        status.send_modify(|s| {
                            s.last_down = Some(format!("cannot connect to {}: {error}", peer.address))
                        });
                        session.handle(Input::TcpClosed, Instant::now())
                    }
                    // Aborted by a newer attempt: nothing to tell.
                    Err(_) => vec![],
                };
            }
            message = receive(reader.as_mut(), &mut buf, asn4), if reader.is_some() => {
                let now = Instant::now();
                pending = match message {
                    Ok(Message::Open(open)) => session.handle(Input::Open(open), now),
                    Ok(Message::Keepalive) => session.handle(Input::Keepalive, now),
                    Ok(Message::Update) => session.handle(Input::Update, now),
                    Ok(Message::Notification(n)) => session.handle(Input::Notification(n), now),
                    Ok(Message::RouteRefresh) => {
                        // The router asks for everything again (RFC 2918).
                        let mut out = session.handle(Input::Update, now);
                        if let Some(state) = &established {
                            sent.clear();
                            let routes = routes.borrow_and_update().clone();
                            match sync(&mut writer, &peer, state, &routes, &mut sent).await {
                                Ok(updates) => status.send_modify(|s| s.updates_sent += updates),
                                Err(_) => out.extend(session.handle(Input::TcpClosed, now)),
                            }
                        }
                        out
                    }
                    Err(Received::Closed) => session.handle(Input::TcpClosed, now),
                    Err(Received::Malformed(n)) => session.handle(Input::Malformed(n), now),
                };
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                pending = session.expire(Instant::now());
            }
            changed = routes.changed() => {
                if changed.is_err() {
                    // The owner is gone: stop as on a signal.
                    stopping = true;
                    pending = session.handle(Input::Stop, Instant::now());
                } else if let Some(state) = &established {
                    let wanted = routes.borrow_and_update().clone();
                    match sync(&mut writer, &peer, state, &wanted, &mut sent).await {
                        Ok(updates) => status.send_modify(|s| s.updates_sent += updates),
                        Err(_) => pending = session.handle(Input::TcpClosed, Instant::now()),
                    }
                }
            }
            changed = async { bfd.as_mut().expect("guarded").changed().await }, if bfd.is_some() => {
                let state = match changed {
                    Ok(()) => bfd.as_mut().map(|b| *b.borrow_and_update()),
                    // The BFD task is gone: the session goes on without it.
                    Err(_) => None,
                };
                if state.is_none() {
                    bfd = None;
                }
                let up = state == Some(BfdState::Up);
                status.send_modify(|s| {
                    s.bfd = state;
                    s.bfd_downs += u64::from(bfd_up && !up);
                });
                if bfd_up && !up {
                    pending = session.handle(Input::BfdDown, Instant::now());
                }
                bfd_up = up;
            }
            _ = stop.changed() => {
                if *stop.borrow_and_update() {
                    stopping = true;
                    pending = session.handle(Input::Stop, Instant::now());
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Opens the TCP connection: the MD5 key set before the SYN (the router drops unsigned
/// segments), from `source` when given.
async fn connect(
    address: SocketAddr,
    source: Option<IpAddr>,
    password: Option<Vec<u8>>,
    ttl: u8,
) -> io::Result<TcpStream> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let raw = socket2::SockRef::from(&socket);
    match address {
        SocketAddr::V4(_) => raw.set_ttl_v4(ttl.into())?,
        SocketAddr::V6(_) => raw.set_unicast_hops_v6(ttl.into())?,
    }
    if let Some(key) = &password {
        tcp_md5::set_key(socket.as_fd(), address.ip(), key)?;
    }
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    socket.connect(address).await
}

async fn send(writer: &mut Option<OwnedWriteHalf>, bytes: &[u8]) -> io::Result<()> {
    match writer {
        Some(w) => w.write_all(bytes).await,
        None => Err(io::ErrorKind::NotConnected.into()),
    }
}

enum Received {
    Closed,
    Malformed(speaker_core::bgp::Notification),
}

/// The next whole message.
async fn receive(
    reader: Option<&mut OwnedReadHalf>,
    buf: &mut Vec<u8>,
    asn4: bool,
) -> Result<Message, Received> {
    let reader = reader.expect("guarded by the select");
    loop {
        match wire::frame_len(buf) {
            Err(n) => return Err(Received::Malformed(n)),
            Ok(Some(len)) if buf.len() >= len => {
                let message = wire::decode(&buf[..len], asn4);
                buf.drain(..len);
                return message.map_err(Received::Malformed);
            }
            Ok(_) => {}
        }
        // Cancel-safe: bytes read land in `buf`, which outlives the select.
        match reader.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(Received::Closed),
            Ok(_) => {}
        }
    }
}

/// Sends the UPDATEs that take the router from `sent` to `wanted` (of the session's family),
/// and records them as sent; returns how many UPDATEs went.
async fn sync(
    writer: &mut Option<OwnedWriteHalf>,
    peer: &Peer,
    state: &Established,
    wanted: &Routes,
    sent: &mut Routes,
) -> io::Result<u64> {
    let families = state.negotiated.families;
    let wanted = rib::of_families(
        wanted,
        families.ipv4 && state.next_hop.is_ipv4(),
        families.ipv6 && state.next_hop.is_ipv6(),
    );
    let changes = rib::changes(sent, &wanted);
    let mut messages = Vec::new();
    let withdraw = rib::wire_prefixes(&changes.withdraw);
    messages.extend(wire::encode_withdraw(&withdraw).map_err(io::Error::other)?);
    for (attributes, prefixes) in &changes.announce {
        messages.extend(
            wire::encode_announce(
                &peer.config,
                state.next_hop,
                &rib::wire_prefixes(prefixes),
                &rib::wire_attributes(attributes),
            )
            .map_err(io::Error::other)?,
        );
    }
    for message in &messages {
        send(writer, message).await?;
    }
    *sent = wanted;
    Ok(messages.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    /// The speaker spawns sessions on its multi-threaded runtime: the task must be `Send`
    /// (a watch guard held across a write once made it not, which only a current-thread test
    /// runtime let through).
    #[test]
    fn a_session_task_can_move_between_threads() {
        fn send<T: Send>(_: &T) {}
        let (_routes, routes) = watch::channel(Routes::new());
        let (status, _status) = watch::channel(Status::default());
        let (_stop, stop) = watch::channel(false);
        let peer = Peer {
            name: "tor".into(),
            address: "192.0.2.1:179".parse().unwrap(),
            source: None,
            password: None,
            ttl: 1,
            config: PeerConfig {
                local_asn: 64513,
                peer_asn: 64512,
                router_id: Ipv4Addr::new(192, 0, 2, 11),
                hold_time: Duration::from_secs(90),
                keepalive_time: None,
                connect_retry: Duration::from_secs(5),
                families: speaker_core::bgp::Families::default(),
            },
        };
        let task = run(peer, routes, status, stop, None);
        send(&task);
    }
}
