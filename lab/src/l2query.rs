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
    let link = datalink::interfaces()
        .into_iter()
        .find(|i| i.name == interface)
        .with_context(|| format!("no interface {interface}"))?;
    let ours = MacAddr(link.mac.context("interface has no MAC address")?.octets());
    let question = match ip {
        IpAddr::V4(target) => arp::build_request(ours, source_v4(&link), target),
        IpAddr::V6(target) => ndp::build_solicitation(ours, source_v6(&link), target),
    };
    let config = datalink::Config {
        read_timeout: Some(Duration::from_millis(20)),
        write_timeout: Some(Duration::from_millis(100)),
        promiscuous: false,
        ..datalink::Config::default()
    };
    let (mut tx, mut rx) = match datalink::channel(&link, config)? {
        Channel::Ethernet(tx, rx) => (tx, rx),
        _ => bail!("not an Ethernet channel"),
    };
    tx.send_to(&question, None)
        .context("frame larger than the send buffer")??;

    let deadline = Instant::now() + wait;
    let mut answers = Vec::new();
    while Instant::now() < deadline {
        let frame = match rx.next() {
            Ok(frame) => frame,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => return Err(e).context("receive"),
        };
        let answer = match parse_frame(frame) {
            Ok(Frame::Arp(Arp::Reply(reply))) if IpAddr::V4(reply.sender_ip) == ip => {
                Some(reply.sender_mac)
            }
            Ok(Frame::Ndp(Ndp::Advertisement(na))) if IpAddr::V6(na.target) == ip => {
                Some(na.claimed_mac())
            }
            _ => None,
        };
        if let Some(mac) = answer
            && mac != ours
            && !answers.contains(&mac)
        {
            answers.push(mac);
        }
    }
    Ok(answers)
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
