//! The announcer: answers ARP requests and Neighbor Solicitations for the addresses this node
//! owns, on the interfaces chosen for each, and tells the LAN when ownership moves.
//!
//! - [`choose_interfaces`] (pure) picks where an address is announced, from [`scan_links`].
//! - [`watch_links`] reads the interfaces again whenever the kernel says a link or an address
//!   changed; the announcer and the speaker's loop both follow it.
//! - [`Announcer`] takes the complete desired set on every change. A new address is probed
//!   (RFC 5227 ARP probe / DAD solicitation) unless told not to, then answered and announced
//!   with a burst of gratuitous ARPs or unsolicited NAs. A foreign host answering for it is a
//!   [`Event::Conflict`]; a released address is answered until its successor announces.
//! - Inside: `machine` decides (no I/O, no clock of its own), `port` owns one interface's
//!   packet sockets and receive threads, `control` wires the two on a thread of its own.
//!
//! Every frame goes through raw `AF_PACKET` sockets (pnet datalink channels, not promiscuous),
//! two per interface: one bound to ARP, one to IPv6, with a kernel filter that passes only
//! Neighbor Discovery (and drops other VLANs' frames on both). Requests are answered on
//! the interface's receive thread, straight from the frame, without a round trip through
//! async code: this is the failover path.
//!
//! # Network namespaces
//!
//! Every socket is created on a thread spawned by [`Announcer::start`] (or by threads it
//! spawns), never on a tokio worker. Threads inherit the network namespace of the thread that
//! creates them, so a caller that entered a namespace (`setns`) before calling `start` gets
//! every socket in that namespace, whatever thread later calls the handle's methods. The same
//! holds for [`watch_links`]: its netlink socket, and every interface lookup, belong to the
//! namespace of the thread that calls it, which must be the announcer's.

mod control;
mod link_watch;
mod links;
mod metrics;
mod port;

#[cfg(test)]
pub(crate) mod lab_tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use speaker_core::MacAddr;
use tokio::sync::{mpsc, oneshot, watch};

pub use link_watch::watch_links;
pub use links::{Link, announce_macs, choose_interfaces, scan_links};
pub use metrics::Metrics;
pub use speaker_core::announce::{Config, Desired, Event};

use control::{Control, Input, Wanted};

/// A cheap handle on the announcer's threads; when the last clone is dropped they stop
/// answering and close their sockets.
#[derive(Clone)]
pub struct Announcer {
    inner: Arc<Inner>,
}

struct Inner {
    input: std::sync::mpsc::Sender<Input>,
    answering: watch::Receiver<BTreeSet<IpAddr>>,
    /// Read by every port before it answers: set when the control thread cannot be trusted.
    muted: Arc<AtomicBool>,
}

/// How often the control thread proves it is turning, busy or idle.
pub const HEARTBEAT: Duration = Duration::from_millis(100);

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.input.send(Input::Shutdown);
    }
}

impl Announcer {
    /// Starts the control thread, in the calling thread's network namespace (see the module
    /// documentation), with the interfaces from `links` ([`watch_links`], called in the same
    /// namespace), read again when that watch changes and twice a second. Needs no tokio
    /// runtime.
    ///
    /// # Panics
    ///
    /// If the operating system refuses a new thread.
    pub fn start(
        config: Config,
        metrics: Metrics,
        heartbeat: common::health::Heartbeat,
        links: watch::Receiver<Vec<Link>>,
    ) -> (Announcer, mpsc::UnboundedReceiver<Event>) {
        let (input, inputs) = std::sync::mpsc::channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let (answering_tx, answering) = watch::channel(BTreeSet::new());
        let muted = Arc::new(AtomicBool::new(false));
        let control = Control::new(
            config,
            metrics,
            input.clone(),
            events,
            answering_tx,
            muted.clone(),
            heartbeat,
            links,
        );
        std::thread::Builder::new()
            .name("announcer".to_string())
            .spawn(move || control.run(inputs))
            .expect("cannot start the announcer thread");
        let inner = Arc::new(Inner {
            input,
            answering,
            muted,
        });
        (Announcer { inner }, events_rx)
    }

    /// The complete set of addresses this node owns now, with their interfaces. Idempotent;
    /// call it on every change (it also takes the interfaces' latest state).
    pub fn set_desired(&self, desired: BTreeMap<IpAddr, Desired>) {
        let _ = self.inner.input.send(Input::Desired(Wanted::All(desired)));
    }

    /// What changed in the set of addresses this node owns (`None`: owned no longer): the
    /// work, and the message, are the size of the change, not of the set.
    pub fn update(&self, changes: BTreeMap<IpAddr, Option<Desired>>) {
        if !changes.is_empty() {
            let _ = self
                .inner
                .input
                .send(Input::Desired(Wanted::Changes(changes)));
        }
    }

    /// MACs of the other ferrolb speakers' interfaces: their answers to our probe, and their
    /// announcements, are not conflicts.
    pub fn set_peer_macs(&self, macs: BTreeSet<MacAddr>) {
        let _ = self.inner.input.send(Input::Peers(macs));
    }

    /// Probes for each of these owned addresses: any other node answering for one comes back
    /// as an [`Event::PeerAnswers`] (or a [`Event::Conflict`] from a foreign host).
    pub fn audit(&self, ips: Vec<IpAddr>) {
        let _ = self.inner.input.send(Input::Audit(ips));
    }

    /// Stops (or resumes) answering on every interface at once, without the control thread:
    /// for when that thread is stuck and the addresses must go to other nodes.
    pub fn mute(&self, muted: bool) {
        self.inner.muted.store(muted, Ordering::Relaxed);
    }

    /// Addresses answered for right now, including ones still being released.
    pub fn answering(&self) -> BTreeSet<IpAddr> {
        self.inner.answering.borrow().clone()
    }

    /// For shutdown: behaves as `set_desired(empty)` and waits until every address is
    /// released (successor seen or grace expired), at most `max_wait`.
    pub async fn release_all(&self, max_wait: Duration) {
        let (done, released) = oneshot::channel();
        if self.inner.input.send(Input::ReleaseAll(done)).is_err() {
            return;
        }
        let _ = tokio::time::timeout(max_wait, released).await;
    }
}
