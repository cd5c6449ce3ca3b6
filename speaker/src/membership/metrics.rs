//! The membership's Prometheus metrics, `ferrolb_speaker_*`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Change {
    Up,
    Down,
    /// Another member came back as a new generation (a restart, or a false "down" it heard).
    Restarted,
    /// This speaker heard it had been declared down, and rejoined as a new generation.
    Rejoined,
}

impl Change {
    const ALL: [Change; 4] = [
        Change::Up,
        Change::Down,
        Change::Restarted,
        Change::Rejoined,
    ];
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl EncodeLabelValue for Change {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(
            encoder,
            match self {
                Change::Up => "up",
                Change::Down => "down",
                Change::Restarted => "restarted",
                Change::Rejoined => "rejoined",
            },
        )
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(
            encoder,
            match self {
                Direction::In => "in",
                Direction::Out => "out",
            },
        )
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    pub change: Change,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: Direction,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    /// Live members by node name, ourselves included (0 after `leave()`).
    pub members: Gauge,
    /// Other members' identities coming up and being declared down (or leaving).
    pub member_changes: Family<ChangeLabels, Counter>,
    /// Datagrams dropped because they were not sealed with our key (or not gossip at all).
    pub auth_failures: Counter,
    /// Datagrams received (all of them, before authentication) and sent.
    pub packets: Family<DirectionLabels, Counter>,
    /// Their UDP payload bytes: what the gossip costs the network (headers not counted).
    pub bytes: Family<DirectionLabels, Counter>,
    /// Local health: 0 when this speaker has no sign of being slow; its probe period and
    /// suspicions are stretched by score + 1.
    pub health_score: Gauge,
    /// Probe rounds and suspicions judged one round trip later because their timer fired
    /// late (this speaker was starved).
    pub deferred_verdicts: Counter,
    /// Suspicions of this speaker that it refuted: others did not hear from it in time.
    pub refutations: Counter,
    /// "You are down" messages foca wanted to send to a member we hold alive (it refuted the
    /// suspicion in time), withheld.
    pub turn_undead_withheld: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::unregistered();
        let r = registry.sub_registry_with_prefix("ferrolb");
        r.register(
            "speaker_members",
            "Live gossip members (speakers) by node, this one included",
            m.members.clone(),
        );
        r.register(
            "speaker_member_changes",
            "Gossip members that came up, went down or restarted; rejoined: this speaker, declared down",
            m.member_changes.clone(),
        );
        // Every series from the start: a scrape before the first change reads 0, not nothing,
        // and increase() in an alert sees the first one.
        for change in Change::ALL {
            let _ = m.member_changes.get_or_create(&ChangeLabels { change });
        }
        r.register(
            "speaker_gossip_auth_failures",
            "Gossip datagrams dropped as not authentic under our key",
            m.auth_failures.clone(),
        );
        r.register(
            "speaker_gossip_packets",
            "Gossip datagrams received and sent",
            m.packets.clone(),
        );
        r.register(
            "speaker_gossip_bytes",
            "UDP payload bytes of the gossip datagrams received and sent",
            m.bytes.clone(),
        );
        r.register(
            "speaker_gossip_health_score",
            "Local health score: evidence that this speaker is slow; timeouts are stretched by score + 1",
            m.health_score.clone(),
        );
        r.register(
            "speaker_gossip_deferred_verdicts",
            "Probe rounds and suspicions judged a round trip later because their timer fired late",
            m.deferred_verdicts.clone(),
        );
        r.register(
            "speaker_gossip_refutations",
            "Suspicions of this speaker that it refuted",
            m.refutations.clone(),
        );
        r.register(
            "speaker_gossip_down_notices_withheld",
            "Messages telling a live member it was declared down, withheld (it had refuted in time)",
            m.turn_undead_withheld.clone(),
        );
        m
    }

    /// Metrics that no registry exports (tests, or a caller without /metrics).
    pub fn unregistered() -> Metrics {
        Metrics {
            members: Gauge::default(),
            member_changes: Family::default(),
            auth_failures: Counter::default(),
            packets: Family::default(),
            bytes: Family::default(),
            health_score: Gauge::default(),
            deferred_verdicts: Counter::default(),
            refutations: Counter::default(),
            turn_undead_withheld: Counter::default(),
        }
    }

    pub(crate) fn changed(&self, change: Change) {
        self.member_changes
            .get_or_create(&ChangeLabels { change })
            .inc();
    }

    pub(crate) fn packet(&self, direction: Direction, bytes: usize) {
        let labels = DirectionLabels { direction };
        self.packets.get_or_create(&labels).inc();
        self.bytes.get_or_create(&labels).inc_by(bytes as u64);
    }

    /// Datagrams counted in `direction` so far.
    pub fn packets(&self, direction: Direction) -> u64 {
        self.packets
            .get_or_create(&DirectionLabels { direction })
            .get()
    }

    /// Member changes of kind `change` counted so far.
    pub fn changes(&self, change: Change) -> u64 {
        self.member_changes
            .get_or_create(&ChangeLabels { change })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.members.set(3);
        m.changed(Change::Up);
        m.changed(Change::Down);
        m.changed(Change::Down);
        m.auth_failures.inc();
        m.packet(Direction::In, 100);
        m.packet(Direction::Out, 60);
        m.packet(Direction::Out, 40);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "ferrolb_speaker_members 3",
            "ferrolb_speaker_member_changes_total{change=\"up\"} 1",
            "ferrolb_speaker_member_changes_total{change=\"down\"} 2",
            "ferrolb_speaker_member_changes_total{change=\"restarted\"} 0",
            "ferrolb_speaker_member_changes_total{change=\"rejoined\"} 0",
            "ferrolb_speaker_gossip_auth_failures_total 1",
            "ferrolb_speaker_gossip_packets_total{direction=\"in\"} 1",
            "ferrolb_speaker_gossip_packets_total{direction=\"out\"} 2",
            "ferrolb_speaker_gossip_bytes_total{direction=\"in\"} 100",
            "ferrolb_speaker_gossip_bytes_total{direction=\"out\"} 100",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
