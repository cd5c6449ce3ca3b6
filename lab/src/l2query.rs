//! Asking the LAN who answers for an address, the way a client's kernel does, from inside a
//! namespace: one ARP request or Neighbor Solicitation, then every answer within a wait. The
//! announcer's tests use it to see exactly which MACs answer, which a client's neighbour table
//! (one entry, last writer wins) cannot show.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pnet::datalink::{self, Channel, NetworkInterface};
use pnet::ipnetwork::IpNetwork;
use speaker_core::arp::{self, Arp};
use speaker_core::ndp::{self, Ndp};
use speaker_core::{Frame, MacAddr, parse_frame};

use crate::netns::NetNs;

/// Sends one ARP request (IPv4) or Neighbor Solicitation to the solicited-node group (IPv6) for
/// `ip` out of `interface` inside namespace `ns`, and returns every distinct MAC that answered
/// within `wait`, in arrival order.
///
/// The question comes from the interface's own MAC and its first address of the family (for
/// IPv6 its link-local one when it has one); with no address of the family it is a probe from
/// the unspecified address, whose answers are broadcast or go to all nodes.
pub fn who_has(ns: &NetNs, interface: &str, ip: IpAddr, wait: Duration) -> Result<Vec<MacAddr>> {
    ns.enter(|| ask(interface, ip, wait))?
        .with_context(|| format!("who-has {ip} on {interface} in {}", ns.name()))
}

fn ask(interface: &str, ip: IpAddr, wait: Duration) -> Result<Vec<MacAddr>> {
    let mut asker = Asker::open(interface, ip, Duration::from_millis(20))?;
    asker.ask()?;
    let deadline = Instant::now() + wait;
    let mut answers = Vec::new();
    while Instant::now() < deadline {
        if let Some(mac) = asker.answer()?
            && !answers.contains(&mac)
        {
            answers.push(mac);
        }
    }
    Ok(answers)
}

/// Asks who has `ip` from inside `ns` every `every` until someone answers or `within` has
/// passed (so at most `within / every` questions); returns when the first answer arrived.
/// Times how soon a new address is answered on the LAN.
pub fn first_answer(
    ns: &NetNs,
    interface: &str,
    ip: IpAddr,
    every: Duration,
    within: Duration,
) -> Result<Option<Instant>> {
    ns.enter(|| -> Result<Option<Instant>> {
        let mut asker = Asker::open(interface, ip, Duration::from_millis(1))?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            asker.ask()?;
            let next = Instant::now() + every;
            while Instant::now() < next {
                if asker.answer()?.is_some() {
                    return Ok(Some(Instant::now()));
                }
            }
        }
        Ok(None)
    })?
    .with_context(|| format!("first answer for {ip} on {interface} in {}", ns.name()))
}

/// Sends one frame out of `interface` inside `ns`, built from that interface's MAC: what a
/// host on the LAN says that its kernel would not say by itself (a claim on an address, a
/// spoofed announcement).
pub fn send_frame(
    ns: &NetNs,
    interface: &str,
    build: impl FnOnce(MacAddr) -> Vec<u8> + Send,
) -> Result<()> {
    ns.enter(|| -> Result<()> {
        let (link, ours) = link(interface)?;
        let (mut tx, _rx) = channel(&link, None)?;
        tx.send_to(&build(ours), None)
            .context("frame larger than the send buffer")??;
        Ok(())
    })?
    .with_context(|| format!("send a frame on {interface} in {}", ns.name()))
}

fn link(interface: &str) -> Result<(NetworkInterface, MacAddr)> {
    let link = datalink::interfaces()
        .into_iter()
        .find(|i| i.name == interface)
        .with_context(|| format!("no interface {interface}"))?;
    let mac = MacAddr(link.mac.context("interface has no MAC address")?.octets());
    Ok((link, mac))
}

type Halves = (
    Box<dyn datalink::DataLinkSender>,
    Box<dyn datalink::DataLinkReceiver>,
);

fn channel(link: &NetworkInterface, read_timeout: Option<Duration>) -> Result<Halves> {
    let config = datalink::Config {
        read_timeout,
        write_timeout: Some(Duration::from_millis(100)),
        promiscuous: false,
        ..datalink::Config::default()
    };
    match datalink::channel(link, config)? {
        Channel::Ethernet(tx, rx) => Ok((tx, rx)),
        _ => bail!("not an Ethernet channel"),
    }
}

/// A packet channel on one interface asking about one address.
struct Asker {
    ours: MacAddr,
    ip: IpAddr,
    question: Vec<u8>,
    tx: Box<dyn datalink::DataLinkSender>,
    rx: Box<dyn datalink::DataLinkReceiver>,
}

impl Asker {
    /// `read_timeout` bounds each [`Asker::answer`].
    fn open(interface: &str, ip: IpAddr, read_timeout: Duration) -> Result<Asker> {
        let (link, ours) = link(interface)?;
        let question = match ip {
            IpAddr::V4(target) => arp::build_request(ours, source_v4(&link), target),
            IpAddr::V6(target) => ndp::build_solicitation(ours, source_v6(&link), target),
        };
        let (tx, rx) = channel(&link, Some(read_timeout))?;
        Ok(Asker {
            ours,
            ip,
            question,
            tx,
            rx,
        })
    }

    fn ask(&mut self) -> Result<()> {
        self.tx
            .send_to(&self.question, None)
            .context("frame larger than the send buffer")??;
        Ok(())
    }

    /// The MAC of the next answer received for the address, if one comes within the read
    /// timeout.
    fn answer(&mut self) -> Result<Option<MacAddr>> {
        let frame = match self.rx.next() {
            Ok(frame) => frame,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Ok(None),
            Err(e) => return Err(e).context("receive"),
        };
        let mac = match parse_frame(frame) {
            Ok(Frame::Arp(Arp::Reply(reply))) if IpAddr::V4(reply.sender_ip) == self.ip => {
                Some(reply.sender_mac)
            }
            Ok(Frame::Ndp(Ndp::Advertisement(na))) if IpAddr::V6(na.target) == self.ip => {
                Some(na.claimed_mac())
            }
            _ => None,
        };
        Ok(mac.filter(|mac| *mac != self.ours))
    }
}

fn source_v4(link: &NetworkInterface) -> Ipv4Addr {
    link.ips
        .iter()
        .find_map(|net| match net {
            IpNetwork::V4(v4) => Some(v4.ip()),
            IpNetwork::V6(_) => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

fn source_v6(link: &NetworkInterface) -> Ipv6Addr {
    ndp::source_among(link.ips.iter().filter_map(|net| match net {
        IpNetwork::V6(v6) => Some(v6.ip()),
        IpNetwork::V4(_) => None,
    }))
    .unwrap_or(Ipv6Addr::UNSPECIFIED)
}
