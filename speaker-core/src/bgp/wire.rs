//! BGP messages on the wire: OPEN and UPDATE through netgauze-bgp-pkt; the header, KEEPALIVE
//! and NOTIFICATION, which are a few fixed bytes, directly (so that a NOTIFICATION with a
//! subcode newer than the library still reads as one).

use std::net::IpAddr;

use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::community::{Community, LargeCommunity};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{
    As4PathSegment, AsPath, AsPathSegmentType, Communities, LargeCommunities, LocalPreference,
    MpReach, MpUnreach, NextHop, Origin, PathAttribute, PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::WritablePdu;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;

use super::{AS_TRANS, Families, Notification, Open, PeerConfig};

/// The fixed header: marker, length, type.
pub const HEADER_LEN: usize = 19;
/// RFC 4271's largest message (no extended messages, RFC 8654, are offered).
pub const MAX_LEN: usize = 4096;

const OPEN: u8 = 1;
const UPDATE: u8 = 2;
const NOTIFICATION: u8 = 3;
const KEEPALIVE: u8 = 4;
const ROUTE_REFRESH: u8 = 5;

/// A message received, as the state machine takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update,
    Notification(Notification),
    Keepalive,
    /// The router asks for every route again.
    RouteRefresh,
}

/// The length of the message at the start of `buf`, once its header is there; a header that
/// is not a BGP header is an error to answer with its Notification (RFC 4271 §6.1).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, Notification> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16].iter().any(|b| *b != 0xff) {
        return Err(Notification::new(1, 1));
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    if !(HEADER_LEN..=MAX_LEN).contains(&len) {
        return Err(Notification::new(1, 2));
    }
    Ok(Some(len))
}

/// Decodes one whole message (`frame_len` bytes). `asn4`: both OPENs carried the 4-byte ASN
/// capability, which changes how AS_PATH is read.
pub fn decode(frame: &[u8], asn4: bool) -> Result<Message, Notification> {
    let len = frame_len(frame)?.ok_or(Notification::new(1, 2))?;
    if len != frame.len() {
        return Err(Notification::new(1, 2));
    }
    match frame[18] {
        KEEPALIVE if len == HEADER_LEN => Ok(Message::Keepalive),
        KEEPALIVE => Err(Notification::new(1, 2)),
        NOTIFICATION if len >= HEADER_LEN + 2 => Ok(Message::Notification(Notification::new(
            frame[19], frame[20],
        ))),
        NOTIFICATION => Err(Notification::new(1, 2)),
        OPEN | UPDATE | ROUTE_REFRESH => {
            let mut context = BgpParsingContext::new(
                asn4,
                Default::default(),
                Default::default(),
                false,
                false,
                false,
                false,
            );
            let parsed = BgpMessage::parse(&mut SliceReader::new(frame), &mut context);
            match parsed {
                Ok(BgpMessage::Open(open)) => Ok(Message::Open(read_open(&open))),
                Ok(BgpMessage::Update(_)) => Ok(Message::Update),
                Ok(BgpMessage::RouteRefresh(_)) => Ok(Message::RouteRefresh),
                Ok(_) => Err(Notification::new(1, 3)),
                Err(_) => Err(Notification::new(
                    match frame[18] {
                        OPEN => 2,
                        UPDATE => 3,
                        _ => 7,
                    },
                    0,
                )),
            }
        }
        _ => Err(Notification::new(1, 3)),
    }
}

fn read_open(open: &BgpOpenMessage) -> Open {
    let capabilities = open.capabilities();
    let asn4 = capabilities.iter().find_map(|c| match c {
        BgpCapability::FourOctetAs(four) => Some(four.asn4()),
        _ => None,
    });
    let mut families = Families::default();
    let mut multiprotocol = false;
    for capability in &capabilities {
        if let BgpCapability::MultiProtocolExtensions(mp) = capability {
            multiprotocol = true;
            match mp.address_type() {
                AddressType::Ipv4Unicast => families.ipv4 = true,
                AddressType::Ipv6Unicast => families.ipv6 = true,
                _ => {}
            }
        }
    }
    // Without the capability, a session carries IPv4 unicast alone (RFC 4760 §8).
    if !multiprotocol {
        families.ipv4 = true;
    }
    Open {
        version: open.version(),
        asn: asn4.unwrap_or(u32::from(open.my_as())),
        hold_time: open.hold_time(),
        router_id: open.bgp_id(),
        four_octet_asn: asn4.is_some(),
        families,
    }
}

fn write(message: BgpMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    message
        .write(&mut out)
        .expect("a message built here is writable");
    out
}

/// This end's OPEN: 4-byte ASN capability (AS_TRANS in the 2-byte field when needed), one
/// multiprotocol capability per family offered.
pub fn encode_open(config: &PeerConfig) -> Vec<u8> {
    let mut capabilities = vec![BgpCapability::FourOctetAs(FourOctetAsCapability::new(
        config.local_asn,
    ))];
    for (offered, address_type) in [
        (config.families.ipv4, AddressType::Ipv4Unicast),
        (config.families.ipv6, AddressType::Ipv6Unicast),
    ] {
        if offered {
            capabilities.push(BgpCapability::MultiProtocolExtensions(
                MultiProtocolExtensionsCapability::new(address_type),
            ));
        }
    }
    let my_as = u16::try_from(config.local_asn).unwrap_or(AS_TRANS);
    let hold = u16::try_from(config.hold_time.as_secs()).unwrap_or(u16::MAX);
    write(BgpMessage::Open(BgpOpenMessage::new(
        my_as,
        hold,
        config.router_id,
        vec![BgpOpenMessageParameter::new_capabilities(capabilities)],
    )))
}

pub fn encode_keepalive() -> Vec<u8> {
    header(KEEPALIVE, HEADER_LEN)
}

pub fn encode_notification(n: Notification) -> Vec<u8> {
    let mut out = header(NOTIFICATION, HEADER_LEN + 2);
    out.extend_from_slice(&[n.code, n.subcode]);
    out
}

fn header(kind: u8, len: usize) -> Vec<u8> {
    let mut out = vec![0xff; 16];
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.push(kind);
    out
}

/// What every route of one UPDATE carries besides its prefix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// Standard communities, as 32-bit values (`65535:65281` is `0xFFFF_FF01`).
    pub communities: Vec<u32>,
    pub large_communities: Vec<(u32, u32, u32)>,
    /// Sent to iBGP peers only.
    pub local_pref: Option<u32>,
}

/// A prefix: an address and a length.
pub type Prefix = (IpAddr, u8);

/// Prefixes per UPDATE, so that each stays under 4096 bytes (an IPv6 /128 takes 17 bytes).
const PREFIXES_PER_UPDATE: usize = 150;

/// UPDATEs announcing `prefixes` (one family: the next hop's) with this node as next hop.
/// eBGP: AS_PATH is this node's ASN; iBGP: empty, with LOCAL_PREF.
pub fn encode_announce(
    config: &PeerConfig,
    next_hop: IpAddr,
    prefixes: &[Prefix],
    attributes: &Attributes,
) -> Result<Vec<Vec<u8>>, String> {
    let mut messages = vec![];
    for chunk in prefixes.chunks(PREFIXES_PER_UPDATE) {
        let mut attrs = vec![
            attribute(false, true, PathAttributeValue::Origin(Origin::IGP))?,
            attribute(
                false,
                true,
                PathAttributeValue::AsPath(AsPath::As4PathSegments(
                    if config.ibgp() {
                        vec![]
                    } else {
                        vec![As4PathSegment::new(
                            AsPathSegmentType::AsSequence,
                            vec![config.local_asn],
                        )]
                    }
                    .into(),
                )),
            )?,
        ];
        if config.ibgp()
            && let Some(preference) = attributes.local_pref
        {
            attrs.push(attribute(
                false,
                true,
                PathAttributeValue::LocalPreference(LocalPreference::new(preference)),
            )?);
        }
        if !attributes.communities.is_empty() {
            let communities: Vec<Community> = attributes
                .communities
                .iter()
                .map(|c| Community::new(*c))
                .collect();
            attrs.push(attribute(
                true,
                true,
                PathAttributeValue::Communities(Communities::new(communities)),
            )?);
        }
        if !attributes.large_communities.is_empty() {
            let large: Vec<LargeCommunity> = attributes
                .large_communities
                .iter()
                .map(|(g, l1, l2)| LargeCommunity::new(*g, *l1, *l2))
                .collect();
            attrs.push(attribute(
                true,
                true,
                PathAttributeValue::LargeCommunities(LargeCommunities::new(large)),
            )?);
        }
        let nlri = match next_hop {
            IpAddr::V4(hop) => {
                attrs.push(attribute(
                    false,
                    true,
                    PathAttributeValue::NextHop(NextHop::new(hop)),
                )?);
                v4_nlri(chunk)?
            }
            IpAddr::V6(hop) => {
                attrs.push(attribute(
                    true,
                    false,
                    PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                        next_hop_global: hop,
                        next_hop_local: None,
                        nlri: v6_nlri(chunk)?.into(),
                    }),
                )?);
                vec![]
            }
        };
        messages.push(write(BgpMessage::Update(BgpUpdateMessage::new(
            vec![],
            attrs,
            nlri,
        ))));
    }
    Ok(messages)
}

/// UPDATEs withdrawing `prefixes`, all of one family.
pub fn encode_withdraw(prefixes: &[Prefix]) -> Result<Vec<Vec<u8>>, String> {
    let mut messages = vec![];
    for chunk in prefixes.chunks(PREFIXES_PER_UPDATE) {
        let update = match chunk.first() {
            None => continue,
            Some((IpAddr::V4(_), _)) => BgpUpdateMessage::new(v4_nlri(chunk)?, vec![], vec![]),
            Some((IpAddr::V6(_), _)) => BgpUpdateMessage::new(
                vec![],
                vec![attribute(
                    true,
                    false,
                    PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast {
                        nlri: v6_nlri(chunk)?.into(),
                    }),
                )?],
                vec![],
            ),
        };
        messages.push(write(BgpMessage::Update(update)));
    }
    Ok(messages)
}

fn attribute(
    optional: bool,
    transitive: bool,
    value: PathAttributeValue,
) -> Result<PathAttribute, String> {
    // Extended length always: an attribute of many prefixes passes 255 bytes.
    PathAttribute::from(optional, transitive, false, true, value)
        .map_err(|(_, e)| format!("invalid path attribute: {e:?}"))
}

fn v4_nlri(prefixes: &[Prefix]) -> Result<Vec<Ipv4UnicastAddress>, String> {
    prefixes
        .iter()
        .map(|(ip, len)| {
            let IpAddr::V4(ip) = ip else {
                return Err(format!("{ip} in an IPv4 UPDATE"));
            };
            let net = ipnet::Ipv4Net::new(*ip, *len).map_err(|e| e.to_string())?;
            let unicast = Ipv4Unicast::from_net(net.trunc()).map_err(|e| format!("{e:?}"))?;
            Ok(Ipv4UnicastAddress::new_no_path_id(unicast))
        })
        .collect()
}

fn v6_nlri(prefixes: &[Prefix]) -> Result<Vec<Ipv6UnicastAddress>, String> {
    prefixes
        .iter()
        .map(|(ip, len)| {
            let IpAddr::V6(ip) = ip else {
                return Err(format!("{ip} in an IPv6 UPDATE"));
            };
            let net = ipnet::Ipv6Net::new(*ip, *len).map_err(|e| e.to_string())?;
            let unicast = Ipv6Unicast::from_net(net.trunc()).map_err(|e| format!("{e:?}"))?;
            Ok(Ipv6UnicastAddress::new(None, unicast))
        })
        .collect()
}

#[cfg(test)]
mod tests;
