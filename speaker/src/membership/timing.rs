//! How fast the speakers probe each other, suspect, and give up on a member, and how that
//! maps onto foca's [`foca::Config`].

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use anyhow::ensure;
use foca::PeriodicParams;

use super::envelope::{MAX_DATAGRAM, OVERHEAD};

/// Past this, a starved speaker would take minutes to declare a dead peer down.
pub const MAX_HEALTH_MULTIPLIER: u32 = 32;

/// The SWIM timing. The defaults are tuned for a LAN (sub-millisecond round trips) so that
/// a member that dies without a word is declared down in roughly 250-400 ms:
///
/// - a live member probes one other member every `probe_period` (100 ms). The dead one is
///   probed within about one period by some peer (each of n-1 peers picks it with
///   probability 1/(n-1) per round, round-robin), and the probe is judged failed at the end
///   of that period: ~100-200 ms in;
/// - it is then suspect for `suspect_to_down_after` (150 ms) before the prober declares it
///   down, and the verdict reaches everyone within a `gossip_interval` (50 ms).
///
/// What keeps a busy machine from being declared down falsely: a probe fails only when
/// neither the direct ping (`probe_rtt`, 40 ms, for what is a ~0.2 ms round trip) nor any of
/// the `num_indirect_probes` (3) relayed pings are answered within the whole period, i.e.
/// the member was unresponsive for 100 ms; and it then still has 150 ms to hear the
/// suspicion (gossiped to it every 50 ms) and refute it. Missing both means a stall of a
/// quarter of a second: past that, failing over is the right call. If it happens anyway,
/// the member learns it was declared down and rejoins at once as a newer generation, so a
/// false positive costs one flap, not an outage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How often each member probes one other member. Must exceed `probe_rtt`.
    pub probe_period: Duration,
    /// How long a direct probe may take before peers are asked to relay it.
    pub probe_rtt: Duration,
    /// How many peers relay a probe that got no direct answer.
    pub num_indirect_probes: NonZeroUsize,
    /// How long a member that failed a probe stays suspect (and can refute it) before it is
    /// declared down.
    pub suspect_to_down_after: Duration,
    /// How long an identity declared down is remembered, so stale gossip cannot revive it.
    /// Restarted and rejoined speakers are newer identities and are admitted regardless, so
    /// this only bounds memory of long-gone members: 1 h.
    pub remove_down_after: Duration,
    /// How many times each membership update is piggybacked; 8 covers clusters up to a
    /// hundred-odd nodes (memberlist's 4 * log10(n + 1)).
    pub max_transmissions: NonZeroU8,
    /// How often pending membership updates are pushed to 3 random members, besides riding
    /// on probes: the time a down verdict takes to spread.
    pub gossip_interval: Duration,
    /// How often we announce ourselves to seeds that are not members (late starters,
    /// healed partitions); four times as often while we know no live peer.
    pub announce_interval: Duration,
    /// How long after the first `set_seeds` an unanswered speaker concludes it is alone
    /// (`View::joined` becomes true).
    pub alone_after: Duration,
    /// Local health (Lifeguard): a speaker with evidence that it is itself slow (its timers
    /// fire late, its probes fail, it had to refute a suspicion) stretches its probe period
    /// and its suspicions by up to this factor, and judges no probe or suspicion on a late
    /// wake-up before it has listened for another `probe_rtt`. 1 turns this off.
    pub max_health_multiplier: u32,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            probe_period: Duration::from_millis(100),
            probe_rtt: Duration::from_millis(40),
            num_indirect_probes: NonZeroUsize::new(3).expect("non-zero"),
            suspect_to_down_after: Duration::from_millis(150),
            remove_down_after: Duration::from_secs(3600),
            max_transmissions: NonZeroU8::new(8).expect("non-zero"),
            gossip_interval: Duration::from_millis(50),
            announce_interval: Duration::from_secs(2),
            alone_after: Duration::from_secs(3),
            // memberlist's AwarenessMaxMultiplier.
            max_health_multiplier: 8,
        }
    }
}

/// What an operator may set of the timing (`None`: derived from the cluster's size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub probe_period: Option<Duration>,
    pub probe_rtt: Option<Duration>,
    pub suspect_to_down_after: Option<Duration>,
    pub max_health_multiplier: Option<u32>,
}

impl Timing {
    /// The timing for a cluster of `members` speakers: the defaults up to ten, then a
    /// suspicion that grows with log10 of the size (as memberlist's and Lifeguard's do: more
    /// members, more relays that may be slow, and a refutation needs more hops to reach
    /// everyone) and more retransmissions (memberlist's 4 * log10(n + 1)). The probe period
    /// stays: each member is still probed about once a period whatever the size.
    pub fn for_members(members: usize, overrides: Overrides) -> Timing {
        let base = Timing::default();
        let scale = (members.max(1) as f64).log10().max(1.0);
        let transmissions = (4.0 * ((members + 1) as f64).log10()).ceil() as u8;
        Timing {
            probe_period: overrides.probe_period.unwrap_or(base.probe_period),
            probe_rtt: overrides.probe_rtt.unwrap_or(base.probe_rtt),
            suspect_to_down_after: overrides
                .suspect_to_down_after
                .unwrap_or(base.suspect_to_down_after.mul_f64(scale)),
            max_transmissions: NonZeroU8::new(transmissions.max(base.max_transmissions.get()))
                .expect("at least the default"),
            max_health_multiplier: overrides
                .max_health_multiplier
                .unwrap_or(base.max_health_multiplier),
            ..base
        }
    }

    /// The foca configuration for this timing, or what is inconsistent about it.
    pub(crate) fn foca_config(&self) -> anyhow::Result<foca::Config> {
        ensure!(
            !self.probe_rtt.is_zero() && self.probe_rtt < self.probe_period,
            "gossip timing: probe_rtt (--gossip-probe-timeout-ms, {:?}) must be non-zero and below probe_period (--gossip-probe-period-ms, {:?})",
            self.probe_rtt,
            self.probe_period
        );
        ensure!(
            (1..=MAX_HEALTH_MULTIPLIER).contains(&self.max_health_multiplier),
            "gossip timing: the local health multiplier (--gossip-local-health-max, {}) must be 1 to {MAX_HEALTH_MULTIPLIER}",
            self.max_health_multiplier
        );
        for (name, value) in [
            ("suspect_to_down_after", self.suspect_to_down_after),
            ("remove_down_after", self.remove_down_after),
            ("gossip_interval", self.gossip_interval),
            ("announce_interval", self.announce_interval),
        ] {
            ensure!(!value.is_zero(), "gossip timing: {name} must not be zero");
        }
        let one = NonZeroUsize::MIN;
        Ok(foca::Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: self.num_indirect_probes,
            max_transmissions: self.max_transmissions,
            suspect_to_down_after: self.suspect_to_down_after,
            remove_down_after: Some(self.remove_down_after),
            max_packet_size: NonZeroUsize::new(MAX_DATAGRAM - OVERHEAD).expect("1400 > 28"),
            // A member declared down hears so and rejoins as a new generation at once.
            notify_down_members: true,
            // Ask a random member for its roster now and then, so rosters converge even
            // if one join's feed was lost.
            periodic_announce: Some(PeriodicParams {
                frequency: Duration::from_secs(10),
                num_members: one,
            }),
            // Knock on members we consider down: heals partitions even without seeds.
            periodic_announce_to_down_members: Some(PeriodicParams {
                frequency: Duration::from_secs(30),
                num_members: one,
            }),
            periodic_gossip: Some(PeriodicParams {
                frequency: self.gossip_interval,
                num_members: NonZeroUsize::new(3).expect("non-zero"),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_valid_foca_config() {
        let config = Timing::default().foca_config().unwrap();
        assert_eq!(config.max_packet_size.get(), MAX_DATAGRAM - OVERHEAD);
    }

    #[test]
    fn timing_grows_with_the_cluster_and_yields_to_the_operator() {
        let none = Overrides::default();
        assert_eq!(Timing::for_members(4, none), Timing::default());
        assert_eq!(Timing::for_members(10, none), Timing::default());
        let hundred = Timing::for_members(100, none);
        assert_eq!(hundred.suspect_to_down_after, Duration::from_millis(300));
        assert_eq!(hundred.max_transmissions.get(), 9);
        assert_eq!(hundred.probe_period, Timing::default().probe_period);
        let thousand = Timing::for_members(1000, none);
        assert_eq!(thousand.suspect_to_down_after, Duration::from_millis(450));
        assert_eq!(thousand.max_transmissions.get(), 13);
        for timing in [hundred, thousand] {
            timing.foca_config().unwrap();
        }
        let set = Overrides {
            probe_period: Some(Duration::from_millis(200)),
            probe_rtt: Some(Duration::from_millis(80)),
            suspect_to_down_after: Some(Duration::from_millis(500)),
            max_health_multiplier: Some(1),
        };
        let tuned = Timing::for_members(100, set);
        assert_eq!(
            (
                tuned.probe_period,
                tuned.probe_rtt,
                tuned.suspect_to_down_after,
                tuned.max_health_multiplier
            ),
            (
                Duration::from_millis(200),
                Duration::from_millis(80),
                Duration::from_millis(500),
                1
            )
        );
        let broken = Overrides {
            probe_rtt: Some(Duration::from_millis(300)),
            ..set
        };
        assert!(Timing::for_members(3, broken).foca_config().is_err());
    }

    #[test]
    fn inconsistent_timing_is_refused() {
        let slow_rtt = Timing {
            probe_rtt: Duration::from_millis(100),
            ..Timing::default()
        };
        assert!(
            slow_rtt
                .foca_config()
                .unwrap_err()
                .to_string()
                .contains("probe_rtt")
        );
        let no_suspicion = Timing {
            suspect_to_down_after: Duration::ZERO,
            ..Timing::default()
        };
        let error = no_suspicion.foca_config().unwrap_err().to_string();
        assert!(error.contains("suspect_to_down_after"), "{error}");
        for multiplier in [0, MAX_HEALTH_MULTIPLIER + 1] {
            let unhealthy = Timing {
                max_health_multiplier: multiplier,
                ..Timing::default()
            };
            let error = unhealthy.foca_config().unwrap_err().to_string();
            assert!(error.contains("--gossip-local-health-max"), "{error}");
        }
    }
}
