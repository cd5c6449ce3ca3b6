//! NOTIFICATION codes (RFC 4271 §4.5 and the registries since), and their names in words.

/// A NOTIFICATION's error code and subcode (its data is the caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
}

impl Notification {
    pub const UNSUPPORTED_VERSION: Notification = Notification::new(2, 1);
    pub const BAD_PEER_AS: Notification = Notification::new(2, 2);
    pub const BAD_BGP_IDENTIFIER: Notification = Notification::new(2, 3);
    pub const UNACCEPTABLE_HOLD_TIME: Notification = Notification::new(2, 6);
    pub const UNSUPPORTED_CAPABILITY: Notification = Notification::new(2, 7);
    pub const HOLD_TIMER_EXPIRED: Notification = Notification::new(4, 0);
    /// Cease, Administrative Shutdown (RFC 4486).
    pub const ADMIN_SHUTDOWN: Notification = Notification::new(6, 2);
    /// Cease, BFD Down (RFC 9384).
    pub const BFD_DOWN: Notification = Notification::new(6, 10);

    pub const fn new(code: u8, subcode: u8) -> Notification {
        Notification { code, subcode }
    }

    /// Finite State Machine Error, with RFC 6608's subcode for the state.
    pub const fn fsm_error(subcode: u8) -> Notification {
        Notification::new(5, subcode)
    }
}

/// The code's and subcode's names, e.g. "OPEN Message Error / Bad Peer AS".
pub fn describe(n: Notification) -> String {
    let code = match n.code {
        1 => "Message Header Error",
        2 => "OPEN Message Error",
        3 => "UPDATE Message Error",
        4 => "Hold Timer Expired",
        5 => "Finite State Machine Error",
        6 => "Cease",
        7 => "ROUTE-REFRESH Message Error",
        _ => return format!("code {} subcode {}", n.code, n.subcode),
    };
    let subcode = match (n.code, n.subcode) {
        (_, 0) => None,
        (1, 1) => Some("Connection Not Synchronized"),
        (1, 2) => Some("Bad Message Length"),
        (1, 3) => Some("Bad Message Type"),
        (2, 1) => Some("Unsupported Version Number"),
        (2, 2) => Some("Bad Peer AS"),
        (2, 3) => Some("Bad BGP Identifier"),
        (2, 4) => Some("Unsupported Optional Parameter"),
        (2, 6) => Some("Unacceptable Hold Time"),
        (2, 7) => Some("Unsupported Capability"),
        (3, 1) => Some("Malformed Attribute List"),
        (3, 3) => Some("Missing Well-known Attribute"),
        (3, 10) => Some("Invalid Network Field"),
        (3, 11) => Some("Malformed AS_PATH"),
        (5, 1) => Some("Unexpected Message in OpenSent State"),
        (5, 2) => Some("Unexpected Message in OpenConfirm State"),
        (5, 3) => Some("Unexpected Message in Established State"),
        (6, 1) => Some("Maximum Number of Prefixes Reached"),
        (6, 2) => Some("Administrative Shutdown"),
        (6, 3) => Some("Peer De-configured"),
        (6, 4) => Some("Administrative Reset"),
        (6, 5) => Some("Connection Rejected"),
        (6, 6) => Some("Other Configuration Change"),
        (6, 7) => Some("Connection Collision Resolution"),
        (6, 8) => Some("Out of Resources"),
        (6, 9) => Some("Hard Reset"),
        (6, 10) => Some("BFD Down"),
        _ => None,
    };
    match (subcode, n.subcode) {
        (Some(s), _) => format!("{code} / {s}"),
        (None, 0) => code.to_string(),
        (None, other) => format!("{code} / subcode {other}"),
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}/{})", describe(*self), self.code, self.subcode)
    }
}
