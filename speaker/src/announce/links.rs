//! The node's network interfaces as the announcer sees them, and the rule that picks the ones
//! an address is announced on.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use ipnetwork::IpNetwork;
use speaker_core::MacAddr;

/// `IFF_NOARP` from `<linux/if.h>`: pnet exposes the raw flags but names only some of them.
const IFF_NOARP: u32 = 0x80;

/// Interface names that belong to container networking, overlays and kube-proxy: never a LAN
/// to announce on by default, even when they look like Ethernet.
const VIRTUAL_PREFIXES: [&str; 12] = [
    "veth",
    "cni",
    "docker",
    "kube-ipvs",
    "flannel",
    "cali",
    "cilium",
    "lxc",
    "vxlan",
    "tunl",
    "weave",
    "genev",
];

/// A network interface as the announcer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
    /// Administratively up (`IFF_UP`) and with carrier (`IFF_RUNNING`).
    pub up: bool,
    pub broadcast: bool,
    pub noarp: bool,
    pub loopback: bool,
    /// A bridge or bond member (`/sys/class/net/<name>/master` exists): its master carries the
    /// addresses and answers for it.
    pub enslaved: bool,
    pub addrs: Vec<IpNetwork>,
}

impl Link {
    /// Can carry ARP and Neighbor Discovery at all.
    fn speaks_arp(&self) -> bool {
        self.broadcast && !self.noarp && !self.loopback && self.mac != MacAddr::ZERO
    }

    fn looks_virtual(&self) -> bool {
        VIRTUAL_PREFIXES.iter().any(|p| self.name.starts_with(p))
    }

    /// Where this interface's Neighbor Advertisements come from: its link-local address, else
    /// any IPv6 address it holds (RFC 4861 wants an address of the sending interface).
    pub fn ndp_source(&self) -> Option<std::net::Ipv6Addr> {
        speaker_core::ndp::source_among(self.addrs.iter().filter_map(|net| match net {
            IpNetwork::V6(v6) => Some(v6.ip()),
            IpNetwork::V4(_) => None,
        }))
    }

    /// Holds an address a LAN could reach it by: any IPv4 one, or a non-link-local IPv6 one.
    fn has_lan_address(&self) -> bool {
        self.addrs.iter().any(|net| match net {
            IpNetwork::V4(_) => true,
            IpNetwork::V6(v6) => (v6.ip().segments()[0] & 0xffc0) != 0xfe80,
        })
    }

    /// Has an address on a subnet that contains `ip`. Host prefixes (/32, /128) say nothing
    /// about which LAN `ip` is on (kube-proxy in IPVS mode puts every service address on
    /// `kube-ipvs0` as one), so they do not count.
    fn on_subnet_of(&self, ip: IpAddr) -> bool {
        self.addrs.iter().any(|net| {
            let host_prefix = match net {
                IpNetwork::V4(_) => 32,
                IpNetwork::V6(_) => 128,
            };
            net.prefix() < host_prefix && net.contains(ip)
        })
    }
}

/// The interfaces of the calling thread's network namespace, with the addresses and flags
/// `choose_interfaces` needs. Interfaces without an Ethernet address (tun, wireguard) are left
/// out: ARP and NDP cannot run on them.
pub fn scan_links() -> std::io::Result<Vec<Link>> {
    let mut links: Vec<Link> = pnet::datalink::interfaces()
        .into_iter()
        .filter_map(|i| {
            let mac = i.mac?;
            let enslaved = Path::new("/sys/class/net")
                .join(&i.name)
                .join("master")
                .exists();
            Some(Link {
                up: i.is_up() && i.is_running(),
                broadcast: i.is_broadcast(),
                noarp: i.flags & IFF_NOARP != 0,
                loopback: i.is_loopback(),
                enslaved,
                mac: MacAddr(mac.octets()),
                index: i.index,
                addrs: i.ips,
                name: i.name,
            })
        })
        .collect();
    links.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(links)
}

/// Which interfaces announce `ip`.
///
/// 1. `advertised` = `Some(names)` (the union of the L2Advertisements' `interfaces`; `None` is
///    unrestricted): those of them that are up.
/// 2. Else the interfaces that can speak ARP and hold an address on a subnet containing `ip`,
///    those of them that are up. When such interfaces exist but all are down, the answer is
///    empty: the address belongs to that LAN, and announcing it on another would be wrong.
/// 3. Else every interface that is up, broadcast-capable, not NOARP, not loopback, not a
///    bridge or bond member, not named like container or overlay plumbing, and holds an IPv4
///    or non-link-local IPv6 address. The last condition is what leaves out a CNI's pod veths
///    under other names: they carry no address on the node's side, only a link-local one.
///
/// In every case intersected with `allowed` (the speaker's `--interfaces`; empty allows any),
/// sorted and deduplicated.
pub fn choose_interfaces(
    ip: IpAddr,
    advertised: Option<&[String]>,
    allowed: &[String],
    links: &[Link],
) -> Vec<String> {
    let chosen: Vec<&Link> = if let Some(names) = advertised {
        links
            .iter()
            .filter(|l| l.up && names.contains(&l.name))
            .collect()
    } else {
        let on_subnet: Vec<&Link> = links
            .iter()
            .filter(|l| l.speaks_arp() && l.on_subnet_of(ip))
            .collect();
        if on_subnet.is_empty() {
            links
                .iter()
                .filter(|l| {
                    l.up && l.speaks_arp()
                        && !l.enslaved
                        && !l.looks_virtual()
                        && l.has_lan_address()
                })
                .collect()
        } else {
            on_subnet.into_iter().filter(|l| l.up).collect()
        }
    };
    chosen
        .into_iter()
        .filter(|l| allowed.is_empty() || allowed.contains(&l.name))
        .map(|l| l.name.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The MACs this node may answer with: those of interfaces that can speak ARP and are
/// allowed (`--interfaces`), or, when nothing is set, that look like a LAN (not container or
/// overlay plumbing, not a bridge or bond member, with an address a LAN could reach). Pod
/// veths are left out; at most [`crate::membership::macs::MAX_MACS`] are kept, by name.
pub fn announce_macs(links: &[Link], allowed: &[String]) -> Vec<MacAddr> {
    let mut candidates: Vec<&Link> = links
        .iter()
        .filter(|l| l.speaks_arp())
        .filter(|l| {
            if allowed.is_empty() {
                !l.enslaved && !l.looks_virtual() && l.has_lan_address()
            } else {
                allowed.contains(&l.name)
            }
        })
        .collect();
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    let mut macs: Vec<MacAddr> = vec![];
    for link in candidates {
        if !macs.contains(&link.mac) {
            macs.push(link.mac);
        }
    }
    macs.truncate(crate::membership::macs::MAX_MACS);
    macs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, addrs: &[&str]) -> Link {
        Link {
            name: name.to_string(),
            index: 1,
            mac: MacAddr([2, 0, 0, 0, 0, name.len() as u8]),
            up: true,
            broadcast: true,
            noarp: false,
            loopback: false,
            enslaved: false,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    /// A node: two LANs, a bond member, a bridge for pods with its veths, kube-proxy's dummy
    /// and the loopback.
    fn node() -> Vec<Link> {
        vec![
            link("eth0", &["198.51.100.4/24", "2001:db8::4/64", "fe80::1/64"]),
            link("eth1", &["203.0.113.4/24"]),
            Link {
                enslaved: true,
                ..link("eth2", &[])
            },
            link("bond0", &["fe80::2/64"]),
            link("cni0", &["10.244.0.1/24"]),
            link("vethab12", &["fe80::3/64"]),
            link("lxc99", &["fe80::4/64"]),
            link("podveth7", &["fe80::5/64"]),
            Link {
                noarp: true,
                up: false,
                broadcast: false,
                ..link("kube-ipvs0", &["192.0.2.10/32", "198.51.100.9/32"])
            },
            Link {
                loopback: true,
                broadcast: false,
                mac: MacAddr::ZERO,
                ..link("lo", &["127.0.0.1/8", "::1/128"])
            },
        ]
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn advertisements_come_from_the_link_local_address() {
        let eth0 = link("eth0", &["198.51.100.4/24", "2001:db8::4/64", "fe80::1/64"]);
        assert_eq!(eth0.ndp_source(), Some("fe80::1".parse().unwrap()));
        let global_only = link("eth1", &["2001:db8::5/64"]);
        assert_eq!(
            global_only.ndp_source(),
            Some("2001:db8::5".parse().unwrap())
        );
        assert_eq!(link("eth2", &["203.0.113.4/24"]).ndp_source(), None);
    }

    /// A busy node's pods add nothing to what a speaker tells its peers.
    #[test]
    fn the_macs_a_node_answers_with_leave_its_pods_out() {
        let mut links: Vec<Link> = node()
            .into_iter()
            .enumerate()
            .map(|(i, l)| Link {
                mac: MacAddr([2, 0, 0, 0, 1, i as u8]),
                ..l
            })
            .collect();
        let mac_of =
            |links: &[Link], name: &str| links.iter().find(|l| l.name == name).unwrap().mac;
        let lan = vec![mac_of(&links, "eth0"), mac_of(&links, "eth1")];
        for i in 0..150u8 {
            links.push(Link {
                mac: MacAddr([2, 0, 0, 0, 2, i]),
                ..link(&format!("pod{i}"), &["fe80::9/64"])
            });
        }
        assert_eq!(announce_macs(&links, &[]), lan);
        assert_eq!(
            announce_macs(&links, &names(&["bond0", "eth1"])),
            vec![mac_of(&links, "bond0"), mac_of(&links, "eth1")]
        );
        let everything: Vec<String> = links.iter().map(|l| l.name.clone()).collect();
        assert_eq!(
            announce_macs(&links, &everything).len(),
            crate::membership::macs::MAX_MACS
        );
    }

    #[test]
    fn each_rule_in_turn() {
        let mut eth1_down = node();
        eth1_down[1].up = false;
        let mut all_down = node();
        all_down.iter_mut().for_each(|l| l.up = false);
        let advertised = names(&["eth1", "cni0", "eth9"]);
        let allowed = names(&["eth1", "bond0"]);
        // (case, address, advertised interfaces, --interfaces, links, expected)
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a [String]>,
            &'a [String],
            &'a [Link],
        );
        #[rustfmt::skip]
        let cases: &[(Case, &[&str])] = &[
            // Rule 1: the advertisement's names, only those that exist and are up, whatever
            // they look like.
            (("advertised", "192.0.2.10", Some(&advertised), &[], &node()), &["cni0", "eth1"]),
            (("advertised, down", "192.0.2.10", Some(&advertised), &[], &eth1_down), &["cni0"]),
            (("advertised, nothing", "192.0.2.10", Some(&[]), &[], &node()), &[]),
            // Rule 2: the interface on the address's subnet, for either family.
            (("subnet v4", "198.51.100.77", None, &[], &node()), &["eth0"]),
            (("subnet v6", "2001:db8::77", None, &[], &node()), &["eth0"]),
            (("other subnet", "203.0.113.200", None, &[], &node()), &["eth1"]),
            // A host route on kube-ipvs0 does not make it the address's LAN.
            (("ipvs host route", "198.51.100.9", None, &[], &node()), &["eth0"]),
            (("subnet, down", "203.0.113.200", None, &[], &eth1_down), &[]),
            // Rule 3: no subnet holds the address: every LAN-looking interface.
            (("fallback", "192.0.2.10", None, &[], &node()), &["eth0", "eth1"]),
            (("fallback v6", "2001:db8:1::10", None, &[], &node()), &["eth0", "eth1"]),
            (("fallback, down", "192.0.2.10", None, &[], &eth1_down), &["eth0"]),
            (("fallback, all down", "192.0.2.10", None, &[], &all_down), &[]),
            // --interfaces narrows every rule.
            (("allowed, advertised", "192.0.2.10", Some(&advertised), &allowed, &node()), &["eth1"]),
            (("allowed, subnet", "198.51.100.77", None, &allowed, &node()), &[]),
            (("allowed, fallback", "192.0.2.10", None, &allowed, &node()), &["eth1"]),
        ];
        for ((what, ip, advertised, allowed, links), expected) in cases {
            let got = choose_interfaces(ip.parse().unwrap(), *advertised, allowed, links);
            assert_eq!(got, names(expected), "{what}");
        }
    }

    #[test]
    fn the_fallback_leaves_out_what_is_not_a_lan() {
        let chosen = choose_interfaces("192.0.2.10".parse().unwrap(), None, &[], &node());
        for excluded in [
            "eth2",       // bond member
            "bond0",      // only a link-local address
            "cni0",       // container bridge, by name
            "vethab12",   // pod veth, by name
            "lxc99",      // pod veth, by name
            "podveth7",   // pod veth under another name: only link-local
            "kube-ipvs0", // NOARP, down
            "lo",
        ] {
            assert!(!chosen.contains(&excluded.to_string()), "{excluded}");
        }
        let mut noarp = node();
        noarp[0].noarp = true;
        noarp[1].broadcast = false;
        assert_eq!(
            choose_interfaces("192.0.2.10".parse().unwrap(), None, &[], &noarp),
            Vec::<String>::new()
        );
    }

    #[test]
    fn sorted_and_deduplicated() {
        let mut links = node();
        links.reverse();
        links.push(link("eth0", &["198.51.100.5/24"]));
        let advertised = names(&["eth1", "eth0", "eth0"]);
        assert_eq!(
            choose_interfaces(
                "192.0.2.10".parse().unwrap(),
                Some(&advertised),
                &[],
                &links
            ),
            names(&["eth0", "eth1"])
        );
        assert_eq!(
            choose_interfaces("198.51.100.77".parse().unwrap(), None, &[], &links),
            names(&["eth0"])
        );
    }

    #[test]
    fn scanning_finds_the_loopback() {
        // Every namespace has one; it must come out as a loopback that never speaks ARP.
        let links = scan_links().unwrap();
        let lo = links.iter().find(|l| l.name == "lo").expect("no lo");
        assert!(lo.loopback && !lo.speaks_arp());
    }
}
