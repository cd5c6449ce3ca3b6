//! Leader election on a `coordination.k8s.io` Lease, with client-go's semantics, and the fence
//! every write passes.
//!
//! A replica takes the Lease when its holder has not renewed it for `duration` as measured by
//! this replica's own monotonic clock from when it last saw the record change (so clock skew
//! between machines does not matter). The leader renews every `retry`; each renewal that
//! succeeds extends its right to write to the moment the request was sent plus
//! `renew_deadline`, which is shorter than `duration`. The leader stops writing, and the
//! process exits, when that moment passes without a renewal: a leader cut off from the API
//! server is silent well before another replica may take over, and a fresh start rebuilds its
//! state from the cluster. (kube-lease-manager backs off on API errors and never reports "not
//! leader", so a partitioned leader kept writing; hence this module.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

/// Timing of the election, derived from the Lease duration as client-go's defaults are
/// (15 s / 10 s / 2 s): renew deadline 2/3 of the duration, a try every 1/5 of it but at least
/// every 2 s, each try given at most half the renew deadline and never more than 10 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub duration: Duration,
    pub renew_deadline: Duration,
    pub retry: Duration,
    /// How long one try may take. A request sent into a partition hangs until TCP gives up;
    /// without a bound, a leader whose path came back would still wait on it past its
    /// deadline instead of renewing over a fresh connection.
    pub attempt_timeout: Duration,
}

/// The shortest Lease duration accepted: below it the renewals crowd the API server and a
/// short stall of the leader hands over needlessly.
pub const MIN_DURATION_SECONDS: u64 = 3;

/// Reads and writes a release may take when the Lease keeps changing under it.
const RELEASE_ATTEMPTS: u32 = 3;

impl Timing {
    pub fn from_duration_seconds(seconds: u64) -> Result<Timing, String> {
        if !(MIN_DURATION_SECONDS..=3600).contains(&seconds) {
            return Err(format!(
                "--lease-duration-seconds must be between {MIN_DURATION_SECONDS} and 3600, not {seconds}"
            ));
        }
        let duration = Duration::from_secs(seconds);
        let renew_deadline = duration * 2 / 3;
        Ok(Timing {
            duration,
            renew_deadline,
            retry: (duration / 5).min(Duration::from_secs(2)),
            attempt_timeout: (renew_deadline / 2).min(Duration::from_secs(10)),
        })
    }
}

/// The right to write, held until a moment of this process's monotonic clock. Cloned into
/// everything that writes; [`Fence::check`] before each write.
#[derive(Debug, Clone)]
pub struct Fence(Arc<Mutex<Option<Instant>>>);

/// A write refused because the Lease is not (or no longer) ours.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("not the leader: the Lease's renew deadline has passed")]
pub struct Fenced;

impl Fence {
    /// A fence that never closes, for a single replica without leader election.
    pub fn open() -> Fence {
        Fence(Arc::new(Mutex::new(None)))
    }

    fn until(deadline: Instant) -> Fence {
        Fence(Arc::new(Mutex::new(Some(deadline))))
    }

    pub fn check(&self) -> Result<(), Fenced> {
        match *self.0.lock().expect("not poisoned") {
            Some(deadline) if Instant::now() >= deadline => Err(Fenced),
            _ => Ok(()),
        }
    }

    /// Closes the fence now: nothing is written after this.
    pub fn close(&self) {
        *self.0.lock().expect("not poisoned") = Some(Instant::now());
    }

    fn extend(&self, deadline: Instant) {
        let mut current = self.0.lock().expect("not poisoned");
        if current.is_none_or(|c| c < deadline) {
            *current = Some(deadline);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        *self.0.lock().expect("not poisoned")
    }
}

/// The outcome of one round of acquiring or renewing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// This replica holds the Lease.
    Held,
    /// Another replica holds it, and its hold has not run out.
    HeldByOther,
    /// Someone wrote the Lease between this round's read and write: nothing is known, try
    /// again (client-go retries until the renew deadline too).
    Conflict,
}

/// What this replica last saw of the Lease, and when (by its own clock).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    seen_at: Instant,
}

/// Whether a Lease held by someone else may be taken now: it is free, or its record has not
/// changed for `duration` since this replica first saw it that way.
fn expired(observed: &Observed, now: Instant, duration: Duration) -> bool {
    observed.holder.as_deref().is_none_or(str::is_empty)
        || now.duration_since(observed.seen_at) >= duration
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    observed: Option<Observed>,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observed: None,
        }
    }

    /// Waits until this replica holds the Lease; returns the fence of its leadership.
    pub async fn acquire(&mut self) -> Fence {
        loop {
            let sent = Instant::now();
            let attempt =
                tokio::time::timeout(self.timing.attempt_timeout, self.try_acquire_or_renew());
            // A try that ran out of time decides nothing, like a conflict.
            match attempt.await.unwrap_or(Ok(Round::Conflict)) {
                Ok(Round::Held) => return Fence::until(sent + self.timing.renew_deadline),
                Ok(Round::HeldByOther | Round::Conflict) => {}
                Err(e) => tracing::warn!("leader election: {e}"),
            }
            tokio::time::sleep(self.timing.retry).await;
        }
    }

    /// Renews the Lease every `retry` for as long as it can; returns when the renew deadline
    /// passed without a renewal. The fence closes at that same moment.
    pub async fn keep(&mut self, fence: &Fence) {
        loop {
            let Some(deadline) = fence.deadline() else {
                return;
            };
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            tokio::time::sleep(self.timing.retry.min(deadline - now)).await;
            let sent = Instant::now();
            if sent >= deadline {
                return;
            }
            let limit = self.timing.attempt_timeout.min(deadline - sent);
            let attempt = tokio::time::timeout(limit, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(Round::Held)) => fence.extend(sent + self.timing.renew_deadline),
                Ok(Ok(Round::HeldByOther)) => {
                    tracing::warn!("the Lease is held by another replica");
                    return;
                }
                Ok(Ok(Round::Conflict)) => {
                    tracing::info!("the Lease changed while being renewed; trying again");
                }
                Ok(Err(e)) => tracing::warn!("cannot renew the Lease: {e}"),
                Err(_) => tracing::warn!(?limit, "renewing the Lease did not finish in time"),
            }
        }
    }

    /// Gives the Lease up (client-go's `ReleaseOnCancel`): on a graceful stop the standby takes
    /// over at once instead of after the whole duration. Only a Lease still ours is touched.
    pub async fn release(&mut self) {
        // A renewal cancelled when the leader stopped may still reach the API server after
        // the read below: the write then meets a newer resourceVersion (409), and is retried
        // on a fresh read rather than leaving the standby to wait out the whole duration.
        for attempt in 1..=RELEASE_ATTEMPTS {
            match self.try_release().await {
                Ok(()) => {
                    tracing::info!("released the Lease");
                    return;
                }
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < RELEASE_ATTEMPTS => {
                    tracing::info!("the Lease changed while being released; trying again");
                }
                Err(e) => {
                    tracing::warn!("cannot release the Lease: {e}");
                    return;
                }
            }
        }
    }

    async fn try_release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        lease.spec = Some(spec);
        self.api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// One round of client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&mut self) -> Result<Round, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let seconds = i32::try_from(self.timing.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Round::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Round::Conflict),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let seen = Observed {
            holder: spec.holder_identity.clone(),
            renew: spec.renew_time.clone(),
            seen_at: Instant::now(),
        };
        // The clock starts when the record last changed, as this replica saw it.
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.holder != seen.holder || o.renew != seen.renew);
        if changed {
            self.observed = Some(seen);
        }
        let observed = self.observed.as_ref().expect("set above");
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !mine && !expired(observed, Instant::now(), self.timing.duration) {
            return Ok(Round::HeldByOther);
        }
        let mut new = spec.clone();
        new.holder_identity = Some(self.identity.clone());
        new.lease_duration_seconds = Some(seconds);
        new.renew_time = Some(now.clone());
        if !mine {
            new.acquire_time = Some(now);
            new.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(new);
        // `replace` carries the resourceVersion read above: if anyone wrote the Lease since,
        // the API server refuses (409) and this round decides nothing, never both replicas
        // winning. A leader's renewal that conflicts is not a lost Lease: the next round reads
        // who holds it.
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Round::Held),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Round::Conflict),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_follows_client_go_and_refuses_what_would_spin() {
        let t = Timing::from_duration_seconds(15).unwrap();
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry, Duration::from_secs(2));
        assert_eq!(t.attempt_timeout, Duration::from_secs(5));
        for seconds in [3, 4, 15, 60, 300, 3600] {
            let t = Timing::from_duration_seconds(seconds).unwrap();
            assert!(t.retry < t.renew_deadline && t.renew_deadline < t.duration);
            // A renewal that hangs leaves time for another before the deadline.
            assert!(t.attempt_timeout + t.retry < t.renew_deadline, "{t:?}");
        }
        let short = Timing::from_duration_seconds(4).unwrap();
        assert_eq!(short.retry, Duration::from_millis(800));
        for bad in [0, 1, 2, 3601] {
            let err = Timing::from_duration_seconds(bad).unwrap_err();
            assert!(err.contains("between 3 and 3600"), "{err}");
        }
    }

    #[test]
    fn a_fence_closes_at_its_deadline_and_only_moves_later() {
        assert!(Fence::open().check().is_ok());
        let fence = Fence::until(Instant::now() + Duration::from_secs(60));
        assert!(fence.check().is_ok());
        let earlier = Instant::now() - Duration::from_millis(1);
        fence.extend(earlier);
        assert!(
            fence.check().is_ok(),
            "an earlier deadline never shortens the right"
        );
        let closed = Fence::until(earlier);
        assert!(closed.check().is_err());
        closed.extend(Instant::now() + Duration::from_secs(60));
        assert!(closed.check().is_ok());
    }

    #[test]
    fn a_lease_expires_by_the_local_clock_since_it_last_changed() {
        let t0 = Instant::now();
        let held = Observed {
            holder: Some("other".into()),
            renew: None,
            seen_at: t0,
        };
        let duration = Duration::from_secs(4);
        assert!(!expired(&held, t0 + Duration::from_secs(3), duration));
        assert!(expired(&held, t0 + Duration::from_secs(4), duration));
        let free = Observed {
            holder: Some(String::new()),
            ..held.clone()
        };
        assert!(expired(&free, t0, duration));
    }
}
