//! The table of good and bad pool addresses that the Rust parser, the CRD's CEL rules (client
//! side in unit tests) and the real API server (in the lab) must all agree on.

/// What must become of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Parses to the inclusive range `first..=last`; the schema admits it.
    Accept {
        first: &'static str,
        last: &'static str,
    },
    /// The parser refuses it. `schema` says whether the CRD's CEL rules refuse it as well; the
    /// gaps are IPv6 ranges CEL cannot order (it has no IPv6 arithmetic): one written backwards,
    /// and one whose ends are ordinary but which spans a never-announced block. The controller
    /// reports those on the pool's `Ready` condition, and they cost only themselves.
    Reject { schema: bool },
}

#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub input: &'static str,
    pub expect: Expect,
}

const fn accept(input: &'static str, first: &'static str, last: &'static str) -> Case {
    Case {
        input,
        expect: Expect::Accept { first, last },
    }
}

const fn reject(input: &'static str) -> Case {
    Case {
        input,
        expect: Expect::Reject { schema: true },
    }
}

pub const CASES: &[Case] = &[
    // CIDRs of both families, from a host route to a whole family.
    accept("198.51.100.0/28", "198.51.100.0", "198.51.100.15"),
    accept("198.51.100.7/32", "198.51.100.7", "198.51.100.7"),
    accept("203.0.113.0/24", "203.0.113.0", "203.0.113.255"),
    accept("1.0.0.0/8", "1.0.0.0", "1.255.255.255"),
    accept("2001:db8::/120", "2001:db8::", "2001:db8::ff"),
    accept(
        "2001:db8:1::/64",
        "2001:db8:1::",
        "2001:db8:1::ffff:ffff:ffff:ffff",
    ),
    accept("2001:db8::5/128", "2001:db8::5", "2001:db8::5"),
    accept("2001:DB8::/120", "2001:db8::", "2001:db8::ff"),
    // Ranges.
    accept(
        "198.51.100.10-198.51.100.20",
        "198.51.100.10",
        "198.51.100.20",
    ),
    accept(
        "198.51.100.10-198.51.100.10",
        "198.51.100.10",
        "198.51.100.10",
    ),
    accept(
        "198.51.100.250-198.51.101.5",
        "198.51.100.250",
        "198.51.101.5",
    ),
    accept("2001:db8::10-2001:db8::20", "2001:db8::10", "2001:db8::20"),
    // Single addresses.
    accept("198.51.100.7", "198.51.100.7", "198.51.100.7"),
    accept("2001:db8::7", "2001:db8::7", "2001:db8::7"),
    // Garbage and near misses.
    reject(""),
    reject("pool"),
    reject("198.51.100"),
    reject("198.51.100.256"),
    reject("198.51.100.07"),
    reject("198.51.100.0/33"),
    reject("2001:db8::/129"),
    reject("198.51.100.0/"),
    reject("198.51.100.0/-1"),
    reject("198.51.100.0/024"),
    reject("198.51.100.0/2x"),
    reject("/24"),
    reject(" 198.51.100.7"),
    reject("198.51.100.7 "),
    reject("198.51.100.10 - 198.51.100.20"),
    reject("fe80::1%eth0"),
    reject("::ffff:198.51.100.7"),
    reject("2001:db8:::1"),
    // Host bits set in a CIDR.
    reject("198.51.100.5/24"),
    reject("2001:db8::ff/120"),
    // Ranges that are not ranges.
    reject("198.51.100.20-198.51.100.10"),
    reject("198.51.100.10-"),
    reject("-198.51.100.10"),
    reject("198.51.100.10-198.51.100.20-198.51.100.30"),
    reject("198.51.100.0/28-198.51.100.40"),
    reject("198.51.100.1-2001:db8::1"),
    reject("2001:db8::1-198.51.100.1"),
    Case {
        input: "2001:db8::20-2001:db8::10",
        expect: Expect::Reject { schema: false },
    },
    // Addresses that are never handed out or announced, whole or in part.
    reject("0.0.0.0/0"),
    reject("0.0.0.0"),
    reject("0.1.2.3"),
    reject("127.0.0.1"),
    reject("127.0.0.0/8"),
    reject("169.254.10.0/24"),
    reject("224.0.0.1"),
    reject("239.0.0.0/8"),
    reject("255.255.255.255"),
    reject("198.51.100.0-224.0.0.0"),
    reject("126.0.0.0-128.0.0.0"),
    reject("::"),
    reject("::1"),
    reject("::/0"),
    reject("fe80::1"),
    reject("fe80::/64"),
    reject("ff02::1"),
    reject("2001:db8::1-ff00::1"),
    Case {
        input: "fe00::-fec0::",
        expect: Expect::Reject { schema: false },
    },
    // Next to them is fine.
    accept("126.255.255.255", "126.255.255.255", "126.255.255.255"),
    accept("128.0.0.0/8", "128.0.0.0", "128.255.255.255"),
    accept("223.255.255.0/24", "223.255.255.0", "223.255.255.255"),
    accept("fec0::1", "fec0::1", "fec0::1"),
];
