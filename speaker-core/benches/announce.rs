//! What the announcer's machine costs per change with 10,000 addresses answered: the views
//! the sockets are set up from, worked out after every change of the addresses held.
//!
//! Run with `cargo bench -p speaker-core --bench announce`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use speaker_core::MacAddr;
use speaker_core::announce::machine::Machine;
use speaker_core::announce::{Config, Desired};

const ADDRESSES: u32 = 10_000;

fn address(i: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        (0x2001_0db8_u128 << 96) | (1 << 16) | u128::from(i),
    ))
}

/// A machine answering for `ADDRESSES` addresses on one interface, their bursts over.
fn answering() -> (Machine, Instant) {
    let mut machine = Machine::new(Config::default());
    machine.set_own_macs([MacAddr([2, 0, 0, 0, 0, 1])].into());
    let want = Desired {
        interfaces: ["eth0".to_string()].into(),
        probe: false,
        fence: false,
    };
    let desired: BTreeMap<IpAddr, Desired> =
        (0..ADDRESSES).map(|i| (address(i), want.clone())).collect();
    let start = Instant::now();
    machine.set_desired(start, &desired);
    let later = start + Duration::from_secs(60);
    machine.tick(later);
    assert_eq!(machine.views().answering.len(), ADDRESSES as usize);
    (machine, later)
}

fn views(c: &mut Criterion) {
    let (machine, _) = answering();
    c.bench_function("views of 10,000 answered addresses", |b| {
        b.iter(|| std::hint::black_box(machine.views()))
    });
}

criterion_group!(benches, views);
criterion_main!(benches);
