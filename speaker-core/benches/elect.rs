//! What one change costs the speaker's election, at 10,000 Services on 100 nodes: electing
//! everything again (what the speaker did on every watch event, and twice a second besides)
//! against the [`Elector`]'s settle after one Service changes, one member leaves, and it comes
//! back.
//!
//! Run with `cargo bench -p speaker-core --bench elect`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use model::ServiceKey;
use speaker_core::decide::{Advertisement, Elector, Facts, NodeFacts, ServiceFacts, decide};
use speaker_core::election::NodeName;

const SERVICES: u32 = 10_000;
const NODES: u32 = 100;

fn facts() -> (Facts, BTreeSet<NodeName>) {
    let nodes: BTreeSet<NodeName> = (0..NODES)
        .map(|i| NodeName::new(format!("node-{i}")))
        .collect();
    let mut facts = Facts {
        nodes: nodes
            .iter()
            .map(|n| (n.clone(), NodeFacts::default()))
            .collect(),
        ..Facts::default()
    };
    for i in 0..SERVICES {
        // 10.0.0.0/8 stands in for a large pool; the benchmark sends nothing.
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        let key = ServiceKey::new("default", format!("svc-{i}"), format!("uid-{i}"));
        facts.services.push(ServiceFacts {
            service: key,
            addresses: vec![ip],
            local: i % 4 == 0,
            endpoint_nodes: (0..3)
                .map(|j| NodeName::new(format!("node-{}", (i + j * 37) % NODES)))
                .collect(),
            conflict_reported: false,
        });
        facts.advertisements.insert(
            ip,
            vec![Advertisement {
                name: "all".into(),
                nodes: None,
                interfaces: None,
            }],
        );
    }
    (facts, nodes)
}

fn settled(facts: &Facts, live: &BTreeSet<NodeName>) -> Elector {
    let mut elector = Elector::with_facts(facts);
    elector.set_live(live.clone());
    elector.settle();
    elector
}

fn one_change(c: &mut Criterion) {
    let (facts, live) = facts();
    let mut group = c.benchmark_group(format!("elect/{SERVICES}-services/{NODES}-nodes"));
    group.sample_size(10);
    group.bench_function("everything again", |b| b.iter(|| decide(&facts, &live)));

    let changed = {
        let mut s = facts.services[1].clone();
        s.local = true;
        s.endpoint_nodes = [NodeName::new("node-5")].into();
        s
    };
    group.bench_function("one Service changed", |b| {
        b.iter_batched(
            || settled(&facts, &live),
            |mut elector| {
                elector.set_service(&changed.service, Some(changed.clone()));
                elector.settle();
                elector
            },
            BatchSize::LargeInput,
        )
    });
    let without: BTreeSet<NodeName> = live
        .iter()
        .filter(|n| n.as_str() != "node-42")
        .cloned()
        .collect();
    group.bench_function("one member left", |b| {
        b.iter_batched(
            || settled(&facts, &live),
            |mut elector| {
                elector.set_live(without.clone());
                elector.settle();
                elector
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("one member back", |b| {
        b.iter_batched(
            || settled(&facts, &without),
            |mut elector| {
                elector.set_live(live.clone());
                elector.settle();
                elector
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, one_change);
criterion_main!(benches);
