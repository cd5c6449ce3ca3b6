//! The fast path against real kernels: a watcher and two nodes in namespaces of the test's own
//! on a bridge (documentation addresses only). The nodes' kernels answer the echo requests; a
//! node whose link is taken away falls silent, as a dead one does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use speaker_core::election::NodeName;
use speaker_core::reach::Config;
use tokio::sync::watch;

use crate::announce::lab_tests::Net;

/// Far beyond the ~100 ms a verdict takes: a bound on waiting, not a measure of speed.
const WAIT: Duration = Duration::from_secs(5);

/// Waits until the unreachable set is `want`; returns how long that took.
async fn becomes(rx: &mut watch::Receiver<BTreeSet<NodeName>>, want: &[&str]) -> Duration {
    let want: BTreeSet<NodeName> = want.iter().map(|n| NodeName::new(*n)).collect();
    let start = Instant::now();
    let reached = tokio::time::timeout(WAIT, rx.wait_for(|now| *now == want))
        .await
        .is_ok();
    assert!(reached, "unreachable is {:?}, not {want:?}", *rx.borrow());
    start.elapsed()
}

#[tokio::test]
#[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
async fn a_node_whose_link_goes_is_unreachable_and_back_when_it_returns() {
    if std::env::var_os("FERROLB_LAB").is_none() {
        return;
    }
    for v6 in [false, true] {
        let mut net = Net::new(if v6 { "reach6" } else { "reach4" });
        let watcher_ns = net.host("watcher", 1);
        let _alive = net.host("alive", 2);
        let dying = net.host("dying", 3);
        let addr = |n: u8| -> IpAddr {
            if v6 {
                format!("2001:db8::{n:x}").parse().unwrap()
            } else {
                format!("198.51.100.{n}").parse().unwrap()
            }
        };
        let metrics = super::Metrics::default();
        let (watcher, mut unreachable) = watcher_ns
            .enter({
                let metrics = metrics.clone();
                move || super::start(Config::default(), metrics)
            })
            .unwrap();
        // "ghost" is an address of the test's LAN that no host has: never heard from, so
        // never judged (as a node whose echo is filtered).
        watcher.watch(BTreeMap::from([
            (NodeName::new("alive"), addr(2)),
            (NodeName::new("dying"), addr(3)),
            (NodeName::new("ghost"), addr(9)),
        ]));
        // Both answer for a while: nobody is judged.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            unreachable.borrow().is_empty(),
            "v6 {v6}: {:?}",
            *unreachable.borrow()
        );

        dying.ip(&["link", "set", "eth0", "down"]).unwrap();
        let took = becomes(&mut unreachable, &["dying"]).await;
        eprintln!("v6 {v6}: judged unreachable {took:?} after its link went down");
        assert_eq!(metrics.verdicts.get(), 1);

        dying.ip(&["link", "set", "eth0", "up"]).unwrap();
        becomes(&mut unreachable, &[]).await;

        drop(watcher);
    }
}
