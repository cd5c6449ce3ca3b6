//! Heap bytes the speaker's [`Elector`] holds per Service once settled, for 10,000 Services on
//! 10 and on 100 nodes, counted by a wrapper around the system allocator (requested bytes,
//! without malloc's own overhead). The facts are built before counting starts; what is counted
//! is what the elector keeps of them (it clones what it is given, as the speaker's loop does).
//!
//! Run with `cargo bench -p speaker-core --bench memory`.

use std::alloc::System;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use model::ServiceKey;
use speaker_core::decide::{Advertisement, Elector, NodeFacts, ServiceFacts};
use speaker_core::election::NodeName;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SERVICES: u32 = 10_000;

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    println!("heap held by a settled Elector (bytes requested from the system allocator)");
    // Advertisements that name their interfaces, as many operators' do, give every owned
    // address a list of them.
    for (nodes, interfaces) in [
        (10, None),
        (100, None),
        (100, Some(vec!["eth0".to_string()])),
    ] {
        let live: BTreeSet<NodeName> = (0..nodes)
            .map(|i| NodeName::new(format!("node-{i}")))
            .collect();
        let services: Vec<ServiceFacts> = (0..SERVICES)
            .map(|i| ServiceFacts {
                // Names as long as a real cluster's, and a real UID's 36 characters.
                service: ServiceKey::new(
                    "shop-frontend",
                    format!("checkout-api-{i}"),
                    format!("5f0c7a2e-1b3d-4c8e-9a6f-{i:012}"),
                ),
                // 10.0.0.0/8 stands in for a large pool; the benchmark sends nothing.
                addresses: vec![IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))],
                local: false,
                endpoint_nodes: BTreeSet::new(),
                conflict_reported: false,
            })
            .collect();
        let advertisement = vec![Advertisement {
            name: "default-l2".into(),
            nodes: None,
            interfaces: interfaces.clone(),
        }];
        let region = Region::new(GLOBAL);
        let mut elector = Elector::new();
        for node in &live {
            elector.set_node(node, Some(NodeFacts::default()));
        }
        for service in &services {
            elector.set_advertisements(service.addresses[0], advertisement.clone());
            elector.set_service(&service.service, Some(service.clone()));
        }
        elector.set_live(live.clone());
        elector.settle();
        let change = region.change();
        // A realloc's growth or shrinkage is already in `bytes_allocated` or
        // `bytes_deallocated`; `bytes_reallocated` repeats it, so it is not added.
        let held = change.bytes_allocated as isize - change.bytes_deallocated as isize;
        // Blocks matter beside bytes: glibc spends at least 32 bytes on each, however small.
        let blocks = change.allocations as isize - change.deallocations as isize;
        println!(
            "{SERVICES} Services, {nodes:>3} nodes, interfaces {:<8}  {:>6.2} MiB  {:>5} bytes/Service  {:.2} blocks/Service",
            format!("{interfaces:?}"),
            held as f64 / (1024.0 * 1024.0),
            held / SERVICES as isize,
            blocks as f64 / SERVICES as f64
        );
        drop(elector);
    }
}
