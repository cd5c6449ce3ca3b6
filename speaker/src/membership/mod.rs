//! The speakers' membership: which speakers are alive, learned by SWIM gossip ([foca]) over
//! UDP, every datagram sealed with ChaCha20-Poly1305 under the cluster's gossip key.
//!
//! [`Membership::start`] binds the socket and spawns the one task that owns it and the foca
//! instance; the rest of the speaker reads the [`View`] from a watch and steers the task
//! through the cheap [`Membership`] handle: seeds to announce to, leave and rejoin.
//!
//! - [`identity`]: [`MemberId`], a speaker as the cluster knows it.
//! - [`macs`]: the MACs each speaker answers with, in bounded records beside the gossip.
//! - [`key`], `envelope`: the gossip key and the sealed wire format.
//! - [`timing`]: SWIM timing and why it detects a dead speaker in a few hundred ms.
//! - [`view`]: what a caller sees, and when it may believe it (`joined`).
//! - `driver`: the task; `timers`: foca's timer queue; `seeds`: when each seed is announced to.

mod driver;
pub mod envelope;
mod health;
pub mod identity;
pub mod key;
pub mod macs;
pub mod metrics;
mod seeds;
mod timers;
pub mod timing;
pub mod view;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, debug};

pub use identity::MemberId;
pub use key::GossipKey;
pub use metrics::Metrics;
pub use timing::{Overrides, Timing};
pub use view::View;

use driver::{Command, Driver};

/// How to take part in the gossip.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// Who we are; `me.addr` is where peers reach us (node IP : gossip port). A port of 0
    /// becomes the port `bind` got (tests bind port 0).
    pub me: MemberId,
    /// The MACs of the interfaces this speaker may announce on (at most
    /// [`macs::MAX_MACS`] are sent).
    pub macs: Vec<[u8; 6]>,
    /// The local address to listen on, usually `0.0.0.0:port` or `[::]:port`.
    pub bind: SocketAddr,
    pub key: GossipKey,
    pub timing: Timing,
    /// Beaten at least every [`HEARTBEAT`] while the task makes progress.
    pub heartbeat: common::health::Heartbeat,
}

/// The local address the gossip socket binds for peers reaching us at `me`: the unspecified
/// address of `me`'s family. An IPv6 node address needs an IPv6 socket: bound to `0.0.0.0`, an
/// IPv6-only cluster's speakers never heard each other and each concluded it was alone.
pub fn bind_addr(me: SocketAddr) -> SocketAddr {
    let any: std::net::IpAddr = match me {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(any, me.port())
}

/// How often the membership task proves it is turning, busy or idle.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(100);

/// Handle to the membership task; clones are cheap and steer the same task. Dropping every
/// clone stops the task at once *without* a leave message, as a crash would: call
/// [`Membership::leave`] first for a graceful exit.
#[derive(Clone, Debug)]
pub struct Membership {
    commands: mpsc::UnboundedSender<Command>,
}

impl Membership {
    /// Binds the UDP socket and starts the task. Returns the handle and a watch of the
    /// [`View`], which starts with only us and `joined == false`.
    pub async fn start(
        config: MembershipConfig,
        metrics: Metrics,
    ) -> anyhow::Result<(Membership, watch::Receiver<View>)> {
        let MembershipConfig {
            mut me,
            macs,
            bind,
            key,
            timing,
            heartbeat,
        } = config;
        timing.foca_config()?;
        let socket = UdpSocket::bind(bind)
            .await
            .with_context(|| format!("cannot bind the gossip socket to {bind}"))?;
        if me.addr.port() == 0 {
            me.addr.set_port(socket.local_addr()?.port());
        }
        let span = tracing::info_span!("membership", node = %me.node, addr = %me.addr);
        let (commands, receiver) = mpsc::unbounded_channel();
        let (view, view_rx) = watch::channel(View::default());
        let driver = Driver::new(
            me, macs, socket, &key, timing, receiver, view, metrics, heartbeat,
        )?;
        tokio::spawn(driver.run().instrument(span));
        Ok((Membership { commands }, view_rx))
    }

    /// The gossip addresses of the speakers to announce ourselves to (node addresses and the
    /// gossip port, one per node, in the family of `me.addr`; ours may be among them). Call
    /// it as often as you like: the same list again does nothing. A seed new to the list is
    /// announced to at once; seeds that are not members again after `Timing::announce_interval`,
    /// backing off to four times that while they stay silent, so late starters and partitions
    /// heal without a node that is gone being sent to on every call.
    pub fn set_seeds(&self, seeds: Vec<SocketAddr>) {
        self.command(Command::SetSeeds(seeds));
    }

    /// Leaves the cluster gracefully: the others learn it from us at once instead of by
    /// probing. Returns once the leave has been sent; from then on we stay silent and the
    /// view is empty until [`Membership::rejoin`]. Idempotent.
    pub async fn leave(&self) {
        let (done, wait) = oneshot::channel();
        self.command(Command::Leave(done));
        let _ = wait.await;
    }

    /// Rejoins after [`Membership::leave`] as a new identity (a higher generation), announcing
    /// to the seeds; `joined` starts over as at start. Does nothing unless we left.
    pub async fn rejoin(&self) {
        let (done, wait) = oneshot::channel();
        self.command(Command::Rejoin(done));
        let _ = wait.await;
    }

    fn command(&self, command: Command) {
        if self.commands.send(command).is_err() {
            debug!("membership task is gone");
        }
    }
}
