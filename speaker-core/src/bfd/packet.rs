//! The BFD Control packet (RFC 5880 §4.1), without authentication: 24 bytes.

use std::time::Duration;

/// A session's state (RFC 5880 §4.1, `Sta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    AdminDown,
    Down,
    Init,
    Up,
}

impl State {
    const ALL: [State; 4] = [State::AdminDown, State::Down, State::Init, State::Up];

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> State {
        State::ALL[usize::from(code & 0b11)]
    }
}

/// Why the local system last changed state (RFC 5880 §4.1, `Diag`); unknown codes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diag {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    Other(u8),
}

impl Diag {
    fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Other(code) => code & 0x1f,
        }
    }

    fn from_code(code: u8) -> Diag {
        match code & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            other => Diag::Other(other),
        }
    }
}

/// A Control packet's fields. Intervals are microseconds on the wire; here they are
/// [`Duration`]s, whole microseconds up to `u32::MAX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPacket {
    pub diag: Diag,
    pub state: State,
    pub poll: bool,
    pub final_: bool,
    pub control_plane_independent: bool,
    pub authentication_present: bool,
    pub demand: bool,
    pub multipoint: bool,
    pub detect_mult: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub required_min_echo_rx: Duration,
}

/// The length of a Control packet without authentication.
pub const LEN: usize = 24;

/// Why a received datagram is not a Control packet this implementation accepts (RFC 5880
/// §6.8.6, the checks that need no session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than a BFD Control packet")]
    Short,
    #[error("BFD version {0}, not 1")]
    Version(u8),
    #[error("length field {field} is below 24 or beyond the {received} bytes received")]
    Length { field: u8, received: usize },
    #[error("detect multiplier 0")]
    ZeroDetectMult,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("my discriminator 0")]
    ZeroDiscriminator,
    #[error("authentication present, and this session uses none")]
    Authentication,
}

const POLL: u8 = 0x20;
const FINAL: u8 = 0x10;
const CPI: u8 = 0x08;
const AUTH: u8 = 0x04;
const DEMAND: u8 = 0x02;
const MULTIPOINT: u8 = 0x01;

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn flag(byte: u8, bit: u8) -> bool {
    byte & bit != 0
}

impl ControlPacket {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (1 << 5) | self.diag.code();
        b[1] = (self.state.code() << 6)
            | if self.poll { POLL } else { 0 }
            | if self.final_ { FINAL } else { 0 }
            | if self.control_plane_independent {
                CPI
            } else {
                0
            }
            | if self.authentication_present { AUTH } else { 0 }
            | if self.demand { DEMAND } else { 0 }
            | if self.multipoint { MULTIPOINT } else { 0 };
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        b[4..8].copy_from_slice(&self.my_discriminator.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discriminator.to_be_bytes());
        b[12..16].copy_from_slice(&micros(self.desired_min_tx).to_be_bytes());
        b[16..20].copy_from_slice(&micros(self.required_min_rx).to_be_bytes());
        b[20..24].copy_from_slice(&micros(self.required_min_echo_rx).to_be_bytes());
        b
    }

    /// Parses a datagram's payload and applies the checks of RFC 5880 §6.8.6 that need no
    /// session. Bytes past the length field are ignored.
    pub fn decode(payload: &[u8]) -> Result<ControlPacket, DecodeError> {
        if payload.len() < LEN {
            return Err(DecodeError::Short);
        }
        let version = payload[0] >> 5;
        if version != 1 {
            return Err(DecodeError::Version(version));
        }
        let flags = payload[1];
        let length = payload[3];
        if usize::from(length) < LEN || usize::from(length) > payload.len() {
            return Err(DecodeError::Length {
                field: length,
                received: payload.len(),
            });
        }
        if flag(flags, AUTH) {
            return Err(DecodeError::Authentication);
        }
        if payload[2] == 0 {
            return Err(DecodeError::ZeroDetectMult);
        }
        if flag(flags, MULTIPOINT) {
            return Err(DecodeError::Multipoint);
        }
        let word = |at: usize| {
            u32::from_be_bytes([
                payload[at],
                payload[at + 1],
                payload[at + 2],
                payload[at + 3],
            ])
        };
        if word(4) == 0 {
            return Err(DecodeError::ZeroDiscriminator);
        }
        let interval = |at: usize| Duration::from_micros(u64::from(word(at)));
        Ok(ControlPacket {
            diag: Diag::from_code(payload[0]),
            state: State::from_code(flags >> 6),
            poll: flag(flags, POLL),
            final_: flag(flags, FINAL),
            control_plane_independent: flag(flags, CPI),
            authentication_present: false,
            demand: flag(flags, DEMAND),
            multipoint: false,
            detect_mult: payload[2],
            my_discriminator: word(4),
            your_discriminator: word(8),
            desired_min_tx: interval(12),
            required_min_rx: interval(16),
            required_min_echo_rx: interval(20),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ControlPacket {
        ControlPacket {
            diag: Diag::ControlDetectionTimeExpired,
            state: State::Init,
            poll: true,
            final_: false,
            control_plane_independent: false,
            authentication_present: false,
            demand: false,
            multipoint: false,
            detect_mult: 3,
            my_discriminator: 0x0102_0304,
            your_discriminator: 0,
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            required_min_echo_rx: Duration::ZERO,
        }
    }

    #[test]
    fn encodes_the_rfc_layout() {
        let b = sample().encode();
        // Version 1, diag 1; state Init (2) with Poll.
        assert_eq!(b[0], 0x21);
        assert_eq!(b[1], 0x80 | 0x20);
        assert_eq!(b[2], 3);
        assert_eq!(b[3], 24);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(&b[8..12], &[0, 0, 0, 0]);
        // 300,000 µs.
        assert_eq!(&b[12..16], &[0x00, 0x04, 0x93, 0xe0]);
        assert_eq!(&b[16..20], &[0x00, 0x04, 0x93, 0xe0]);
        assert_eq!(ControlPacket::decode(&b), Ok(sample()));
    }

    #[test]
    fn refuses_what_rfc_5880_discards() {
        let good = sample().encode();
        let with = |i: usize, v: u8| {
            let mut b = good;
            b[i] = v;
            b
        };
        assert_eq!(ControlPacket::decode(&good[..23]), Err(DecodeError::Short));
        assert_eq!(
            ControlPacket::decode(&with(0, 0x41)),
            Err(DecodeError::Version(2))
        );
        assert_eq!(
            ControlPacket::decode(&with(3, 23)),
            Err(DecodeError::Length {
                field: 23,
                received: 24
            })
        );
        assert_eq!(
            ControlPacket::decode(&with(3, 25)),
            Err(DecodeError::Length {
                field: 25,
                received: 24
            })
        );
        assert_eq!(
            ControlPacket::decode(&with(2, 0)),
            Err(DecodeError::ZeroDetectMult)
        );
        assert_eq!(
            ControlPacket::decode(&with(1, good[1] | MULTIPOINT)),
            Err(DecodeError::Multipoint)
        );
        assert_eq!(
            ControlPacket::decode(&with(1, good[1] | AUTH)),
            Err(DecodeError::Authentication)
        );
        let mut zero = good;
        zero[4..8].fill(0);
        assert_eq!(
            ControlPacket::decode(&zero),
            Err(DecodeError::ZeroDiscriminator)
        );
        // A longer datagram with a longer length field: the rest is ignored.
        let mut long = good.to_vec();
        long.extend_from_slice(&[9, 9]);
        long[3] = 26;
        assert_eq!(ControlPacket::decode(&long), Ok(sample()));
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics_and_what_decodes_encodes_back(
            bytes in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            if let Ok(packet) = ControlPacket::decode(&bytes) {
                // Re-encoding normalises only the length (24) and drops what follows it.
                let mut expected = bytes[..LEN].to_vec();
                expected[3] = LEN as u8;
                prop_assert_eq!(packet.encode().to_vec(), expected);
            }
        }

        #[test]
        fn every_encoded_packet_decodes_to_itself(
            diag in 0u8..32, state in 0u8..4, flags in 0u8..16, mult in 1u8..=255,
            mine in 1u32.., yours in any::<u32>(), tx in any::<u32>(), rx in any::<u32>(), echo in any::<u32>(),
        ) {
            let packet = ControlPacket {
                diag: Diag::from_code(diag),
                state: State::from_code(state),
                poll: flags & 8 != 0,
                final_: flags & 4 != 0,
                control_plane_independent: flags & 2 != 0,
                authentication_present: false,
                demand: flags & 1 != 0,
                multipoint: false,
                detect_mult: mult,
                my_discriminator: mine,
                your_discriminator: yours,
                desired_min_tx: Duration::from_micros(tx.into()),
                required_min_rx: Duration::from_micros(rx.into()),
                required_min_echo_rx: Duration::from_micros(echo.into()),
            };
            prop_assert_eq!(ControlPacket::decode(&packet.encode()), Ok(packet));
        }
    }
}
