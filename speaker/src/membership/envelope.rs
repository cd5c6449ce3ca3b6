//! The wire envelope of every gossip datagram: `nonce (12 random bytes) || ChaCha20-Poly1305
//! (key, nonce, payload, aad = "ferrolb-gossip-v1")`. Pure: bytes in, bytes or a drop reason
//! out.
//!
//! Random 96-bit nonces stay far below the collision bound at gossip rates (a 100-node
//! cluster sends some 10^4 datagrams a second; 2^32 of them take days, and even then a
//! repeat is a 2^-33 chance). Replays are not rejected here: SWIM already ignores stale
//! incarnations and probe numbers, and a replayed "alive" cannot revive an identity that was
//! declared down.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use super::key::GossipKey;

/// The largest datagram we send or accept: below any LAN MTU with IPv6 and UDP headers
/// (rfc8085), so gossip never fragments.
pub const MAX_DATAGRAM: usize = 1400;

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Bytes the envelope adds to a payload.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// What a sealed payload is. The kind is bound into the seal as its associated data, so the
/// gossip itself stays byte for byte what speakers before the MAC records sent and accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A SWIM message for foca.
    Gossip,
    /// A speaker's [`super::macs::MacRecord`].
    Macs,
}

impl Kind {
    fn aad(self) -> &'static [u8] {
        match self {
            Kind::Gossip => b"ferrolb-gossip-v1",
            Kind::Macs => b"ferrolb-macs-v1",
        }
    }
}

/// Why a datagram was dropped before it reached the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Shorter than a nonce and a tag: cannot be ours.
    TooShort,
    /// Longer than we ever send: not worth decrypting.
    TooLong,
    /// The tag does not verify: another key, corruption, or not gossip at all.
    NotAuthentic,
}

pub struct Envelope {
    cipher: ChaCha20Poly1305,
}

impl Envelope {
    pub fn new(key: &GossipKey) -> Envelope {
        Envelope {
            cipher: ChaCha20Poly1305::new(&Key::from(*key.bytes())),
        }
    }

    /// Seals one payload into a datagram. `None` only if the payload exceeds what the cipher
    /// can take (gigabytes), which foca's packet limit rules out.
    pub fn seal(&self, kind: Kind, payload: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce[..]);
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: payload,
                    aad: kind.aad(),
                },
            )
            .ok()?;
        let mut datagram = Vec::with_capacity(NONCE_LEN + sealed.len());
        datagram.extend_from_slice(&nonce);
        datagram.extend_from_slice(&sealed);
        Some(datagram)
    }

    /// Opens a datagram: its kind and payload if it was sealed with our key, else why not.
    pub fn open(&self, datagram: &[u8]) -> Result<(Kind, Vec<u8>), Rejected> {
        if datagram.len() < OVERHEAD {
            return Err(Rejected::TooShort);
        }
        if datagram.len() > MAX_DATAGRAM {
            return Err(Rejected::TooLong);
        }
        let (nonce, sealed) = datagram.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Rejected::TooShort)?;
        [Kind::Gossip, Kind::Macs]
            .into_iter()
            .find_map(|kind| {
                let payload = Payload {
                    msg: sealed,
                    aad: kind.aad(),
                };
                let opened = self.cipher.decrypt(&Nonce::from(nonce), payload).ok()?;
                Some((kind, opened))
            })
            .ok_or(Rejected::NotAuthentic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(content: &[u8]) -> Envelope {
        Envelope::new(&GossipKey::from_bytes(content).unwrap())
    }

    #[test]
    fn round_trip_and_fresh_nonces() {
        let e = envelope(b"0123456789abcdef0123");
        let a = e.seal(Kind::Gossip, b"hello").unwrap();
        let b = e.seal(Kind::Gossip, b"hello").unwrap();
        assert_eq!(a.len(), 5 + OVERHEAD);
        assert_ne!(a, b, "nonces repeat");
        assert_eq!(e.open(&a).unwrap(), (Kind::Gossip, b"hello".to_vec()));
        assert_eq!(
            e.open(&e.seal(Kind::Gossip, b"").unwrap()).unwrap(),
            (Kind::Gossip, vec![])
        );
        let record = e.seal(Kind::Macs, b"hello").unwrap();
        assert_eq!(e.open(&record).unwrap(), (Kind::Macs, b"hello".to_vec()));
    }

    /// A speaker from before the MAC records opens only gossip: a record never reaches its
    /// foca as a malformed message.
    #[test]
    fn kinds_do_not_open_as_each_other() {
        let e = envelope(b"0123456789abcdef0123");
        let record = e.seal(Kind::Macs, b"payload").unwrap();
        let (nonce, sealed) = record.split_at(NONCE_LEN);
        let as_gossip = e.cipher.decrypt(
            &Nonce::from(<[u8; NONCE_LEN]>::try_from(nonce).unwrap()),
            Payload {
                msg: sealed,
                aad: Kind::Gossip.aad(),
            },
        );
        assert!(as_gossip.is_err());
    }

    #[test]
    fn other_key_truncation_and_tampering_are_rejected() {
        let e = envelope(b"0123456789abcdef0123");
        let other = envelope(b"0123456789abcdef0124");
        let datagram = e.seal(Kind::Gossip, b"some gossip payload").unwrap();

        assert_eq!(other.open(&datagram), Err(Rejected::NotAuthentic));
        assert_eq!(
            e.open(&datagram[..datagram.len() - 1]),
            Err(Rejected::NotAuthentic)
        );
        assert_eq!(e.open(&datagram[..OVERHEAD - 1]), Err(Rejected::TooShort));
        assert_eq!(e.open(&[]), Err(Rejected::TooShort));
        let largest = e.seal(Kind::Gossip, &[7; MAX_DATAGRAM - OVERHEAD]).unwrap();
        assert_eq!(e.open(&largest).unwrap().1.len(), MAX_DATAGRAM - OVERHEAD);
        assert_eq!(e.open(&[0; MAX_DATAGRAM + 1]), Err(Rejected::TooLong));
        for i in [0, NONCE_LEN, datagram.len() - 1] {
            let mut tampered = datagram.clone();
            tampered[i] ^= 0x01;
            assert_eq!(e.open(&tampered), Err(Rejected::NotAuthentic), "byte {i}");
        }
    }
}
