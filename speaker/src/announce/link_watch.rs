//! The node's interfaces as they change: a thread subscribed to the kernel's rtnetlink
//! notifications of links and addresses reads them again ([`scan_links`]) after each burst,
//! and publishes the result to every consumer (the speaker's loop and the announcer).
//!
//! The notifications say only that something changed; the rescan reads what. Their contents
//! are not parsed: a burst (an interface coming up brings several) makes one rescan.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, setsockopt,
    socket, sockopt,
};
use nix::sys::time::TimeVal;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::links::{Link, scan_links};

/// How long after a notification the rescan waits for the rest of its burst.
const COALESCE: Duration = Duration::from_millis(20);
/// A rescan without a notification, in case some were lost (the socket's buffer overflowed and
/// the kernel said so only by an error).
const SAFETY_RESCAN: Duration = Duration::from_secs(10);
/// How long a read blocks: how soon the thread notices that nobody listens any more.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Subscribes to link and address changes in the calling thread's network namespace, reads
/// the interfaces once, and starts the thread that keeps the returned value current. The
/// thread ends within [`READ_TIMEOUT`] of the last receiver being dropped.
///
/// # Errors
///
/// When the netlink socket cannot be opened, or the interfaces cannot be listed.
pub fn watch_links() -> io::Result<watch::Receiver<Vec<Link>>> {
    let socket = subscribe()?;
    let (tx, rx) = watch::channel(scan_links()?);
    // The thread inherits this thread's namespace, where its rescans must look.
    std::thread::Builder::new()
        .name("link-watch".to_string())
        .spawn(move || follow(&socket, &tx))?;
    Ok(rx)
}

fn subscribe() -> io::Result<OwnedFd> {
    let socket = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let groups =
        (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR).cast_unsigned();
    bind(socket.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    let seconds = libc::time_t::try_from(READ_TIMEOUT.as_secs()).unwrap_or(libc::time_t::MAX);
    let timeout = TimeVal::new(seconds, 0);
    setsockopt(&socket, sockopt::ReceiveTimeout, &timeout)?;
    Ok(socket)
}

fn follow(socket: &OwnedFd, tx: &watch::Sender<Vec<Link>>) {
    // Notifications are not parsed, only counted as one: any size does.
    let mut buffer = vec![0u8; 16 * 1024];
    let mut scanned = Instant::now();
    while !tx.is_closed() {
        let notified = match recv(socket.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
            // ENOBUFS: the kernel dropped notifications; something changed.
            Ok(_) | Err(Errno::ENOBUFS) => true,
            Err(Errno::EAGAIN | Errno::EINTR) => false,
            Err(error) => {
                // Falls back to rescanning once a second rather than spinning.
                warn!(%error, "cannot read link notifications");
                std::thread::sleep(READ_TIMEOUT);
                true
            }
        };
        if !notified && scanned.elapsed() < SAFETY_RESCAN {
            continue;
        }
        if notified {
            std::thread::sleep(COALESCE);
            drain(socket, &mut buffer);
        }
        scanned = Instant::now();
        match scan_links() {
            Ok(links) => {
                tx.send_if_modified(|current| {
                    let changed = *current != links;
                    if changed {
                        debug!("interfaces changed");
                        *current = links;
                    }
                    changed
                });
            }
            Err(error) => warn!(%error, "cannot list network interfaces"),
        }
    }
    debug!("nobody follows the interfaces any more");
}

/// Reads what is queued without waiting: the rest of the burst the rescan covers.
fn drain(socket: &OwnedFd, buffer: &mut [u8]) {
    loop {
        match recv(socket.as_raw_fd(), buffer, MsgFlags::MSG_DONTWAIT) {
            Ok(_) | Err(Errno::ENOBUFS | Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}
