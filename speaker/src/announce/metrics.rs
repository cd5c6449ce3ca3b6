//! The announcer's Prometheus metrics, under `ferrolb_speaker_`. Every label has a bounded set
//! of values: a protocol (`arp`, `ndp`) or a speaker-core drop reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `arp` or `ndp`.
    pub protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A `speaker_core::FrameDrop::reason()`.
    pub reason: &'static str,
}

/// Shared by the announcer's threads; clones count into the same series.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Addresses answered for now, including those still being released.
    pub announced_addresses: Gauge,
    /// ARP requests and probes, and Neighbor Solicitations, for any address.
    pub requests_received: Family<ProtocolLabels, Counter>,
    pub requests_answered: Family<ProtocolLabels, Counter>,
    pub gratuitous_sent: Family<ProtocolLabels, Counter>,
    /// Foreign hosts seen answering for an address we probe or announce.
    pub conflicts: Counter,
    /// Received frames that were not well-formed ARP or Neighbor Discovery, by reason.
    pub frames_dropped: Family<ReasonLabels, Counter>,
}

pub(crate) const ARP: ProtocolLabels = ProtocolLabels { protocol: "arp" };
pub(crate) const NDP: ProtocolLabels = ProtocolLabels { protocol: "ndp" };

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("ferrolb");
        r.register(
            "speaker_announced_addresses",
            "Addresses this speaker answers ARP or NDP for, including those being released",
            m.announced_addresses.clone(),
        );
        r.register(
            "speaker_requests_received",
            "ARP requests and Neighbor Solicitations received, for any address",
            m.requests_received.clone(),
        );
        r.register(
            "speaker_requests_answered",
            "ARP requests and Neighbor Solicitations answered for an announced address",
            m.requests_answered.clone(),
        );
        r.register(
            "speaker_gratuitous_sent",
            "Gratuitous ARPs and unsolicited Neighbor Advertisements sent",
            m.gratuitous_sent.clone(),
        );
        r.register(
            "speaker_conflicts",
            "Foreign hosts seen answering for an address this speaker probes or announces",
            m.conflicts.clone(),
        );
        r.register(
            "speaker_frames_dropped",
            "Received ARP or Neighbor Discovery frames ignored as malformed, by reason",
            m.frames_dropped.clone(),
        );
        m
    }
}
