//! The gossip key: read from the `ferrolb-gossip` Secret (mounted as a file) and stretched into
//! the 32-byte ChaCha20-Poly1305 key every datagram is sealed with.

use std::fmt;
use std::path::Path;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// Fewer non-whitespace bytes than this is a typo or an empty Secret, not a key.
pub const MIN_KEY_CONTENT: usize = 16;

/// Domain separation: the same Secret used for anything else yields an unrelated key.
const KEY_CONTEXT: &[u8] = b"ferrolb gossip v1\0";

/// The AEAD key shared by every speaker of a cluster. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey([u8; 32]);

impl GossipKey {
    /// Reads the key file: any text of at least [`MIN_KEY_CONTENT`] non-whitespace bytes
    /// (the README's base64, the lab's hex, Helm's random letters); see
    /// [`GossipKey::from_bytes`].
    pub fn from_file(path: &Path) -> anyhow::Result<GossipKey> {
        let content = std::fs::read(path)
            .with_context(|| format!("cannot read the gossip key file {}", path.display()))?;
        GossipKey::from_bytes(&content)
            .with_context(|| format!("bad gossip key in {}", path.display()))
    }

    /// The key for the content of a key file: surrounding whitespace (the trailing newline
    /// of `echo`) is trimmed, then key = SHA-256("ferrolb gossip v1\0" || content). The
    /// content is hashed as written, not decoded, so every speaker only has to read the same
    /// bytes.
    pub fn from_bytes(content: &[u8]) -> anyhow::Result<GossipKey> {
        let content = content.trim_ascii();
        let significant = content
            .iter()
            .filter(|byte| !byte.is_ascii_whitespace())
            .count();
        if significant < MIN_KEY_CONTENT {
            bail!(
                "the gossip key is too short: {significant} non-whitespace bytes, need at least \
                 {MIN_KEY_CONTENT} (e.g. `head -c 32 /dev/urandom | base64`)"
            );
        }
        let mut hasher = Sha256::new();
        hasher.update(KEY_CONTEXT);
        hasher.update(content);
        Ok(GossipKey(hasher.finalize().into()))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GossipKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_content_is_rejected_with_the_reason() {
        for content in [
            &b""[..],
            b"   \n",
            b"0123456789abcde",
            b"  0123456789abcde \n",
        ] {
            let error = GossipKey::from_bytes(content).unwrap_err().to_string();
            assert!(error.contains("too short"), "{content:?}: {error}");
        }
        // Inner whitespace does not count towards the minimum.
        assert!(GossipKey::from_bytes(b"01234567 89abcde").is_err());
        assert!(GossipKey::from_bytes(b"0123456789abcdef").is_ok());
    }

    #[test]
    fn readme_base64_and_lab_hex_both_work() {
        // `head -c 32 /dev/urandom | base64`, as `kubectl create secret --from-literal` stores it
        let base64 =
            GossipKey::from_bytes(b"q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=").unwrap();
        // the lab's 64 hex digits, with the newline a shell leaves
        let hex = GossipKey::from_bytes(
            b"abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\n",
        )
        .unwrap();
        assert_ne!(base64, hex);
    }

    #[test]
    fn same_content_same_key_and_whitespace_around_it_does_not_matter() {
        let a = GossipKey::from_bytes(b"q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=").unwrap();
        let b =
            GossipKey::from_bytes(b"\n  q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=\r\n").unwrap();
        let c = GossipKey::from_bytes(b"q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4K=").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn the_key_is_the_documented_hash() {
        let content = b"0123456789abcdef0123456789abcdef";
        let mut hasher = Sha256::new();
        hasher.update(b"ferrolb gossip v1\0");
        hasher.update(content);
        let expected: [u8; 32] = hasher.finalize().into();
        assert_eq!(GossipKey::from_bytes(content).unwrap().bytes(), &expected);
    }

    #[test]
    fn from_file_names_the_file_in_errors() {
        let dir = std::env::temp_dir().join(format!("ferrolb-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "tiny\n").unwrap();
        let error = format!("{:#}", GossipKey::from_file(&short).unwrap_err());
        assert!(
            error.contains("short") && error.contains("too short"),
            "{error}"
        );

        let missing = dir.join("missing");
        let error = format!("{:#}", GossipKey::from_file(&missing).unwrap_err());
        assert!(error.contains("missing"), "{error}");

        let good = dir.join("good");
        std::fs::write(&good, "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=\n").unwrap();
        assert_eq!(
            GossipKey::from_file(&good).unwrap(),
            GossipKey::from_bytes(b"q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=").unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
