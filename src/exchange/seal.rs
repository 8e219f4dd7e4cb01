//! Queue entries are sealed: whatever travels through Redis carries a MAC
//! keyed by the shared secret, so a receiver drops (and reports) an entry
//! forged by someone who can write to Redis but does not know the secret,
//! one tampered with, or one moved from another mailbox's queue.
//!
//! Wire format: `0xC3`, then 32 bytes of keyed BLAKE3 over the destination's
//! UUID and the entry, then the entry as a peer frame would carry it.
//! The key is BLAKE3's `derive_key("actix-academy queue entry 1", secret)`.
//! Entries are authenticated, not encrypted: use `rediss://` and Redis ACLs
//! to keep them from being read.

use bytes::Bytes;
use uuid::Uuid;

use crate::message::Parts;

/// Opens a sealed entry (0xC3 is never the first byte of MessagePack, nor
/// one of the other marks).
const SEALED: u8 = 0xC3;
const TAG_LEN: usize = 32;
/// Bytes a seal adds to an entry.
pub(crate) const SEAL_LEN: usize = 1 + TAG_LEN;

/// Seals and opens queue entries with one secret.
#[derive(Clone)]
pub(crate) struct Seal {
    key: [u8; 32],
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seal(<redacted>)")
    }
}

/// Why an entry taken from a queue was not opened.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unsealed {
    /// No seal: written by something other than an exchange.
    Missing,
    /// The seal does not match: another secret, a forgery, or tampering.
    Forged,
}

impl Seal {
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self { key: blake3::derive_key("actix-academy queue entry 1", secret) }
    }

    fn tag(&self, dest: Uuid, head: &[u8], payload: &[u8]) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(dest.as_bytes());
        hasher.update(head);
        hasher.update(payload);
        hasher.finalize()
    }

    /// `parts` sealed for the queue of `dest` (the payload is not copied).
    pub(crate) fn seal(&self, dest: Uuid, parts: &Parts) -> Parts {
        let tag = self.tag(dest, &parts.head, &parts.payload);
        let mut head = Vec::with_capacity(SEAL_LEN + parts.head.len());
        head.push(SEALED);
        head.extend_from_slice(tag.as_bytes());
        head.extend_from_slice(&parts.head);
        Parts { head: head.into(), payload: parts.payload.clone() }
    }

    /// The entry inside `sealed`, if it was sealed with this secret for `dest`.
    pub(crate) fn open(&self, dest: Uuid, sealed: &Bytes) -> Result<Bytes, Unsealed> {
        if sealed.len() < SEAL_LEN || sealed[0] != SEALED {
            return Err(Unsealed::Missing);
        }
        let tag: [u8; TAG_LEN] = sealed[1..SEAL_LEN].try_into().expect("length checked");
        // `Hash` compares in constant time.
        if self.tag(dest, &sealed[SEAL_LEN..], &[]) != blake3::Hash::from(tag) {
            return Err(Unsealed::Forged);
        }
        Ok(sealed.slice(SEAL_LEN..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_entry_opens_only_for_its_destination_and_secret_and_untouched() {
        let seal = Seal::new(b"s3cret");
        let dest = Uuid::new_v4();
        let parts = Parts { head: Bytes::from_static(b"head"), payload: Bytes::from(vec![7u8; 200_000]) };
        let sealed = seal.seal(dest, &parts).concat();
        assert_eq!(seal.open(dest, &sealed).unwrap(), parts.clone().concat());
        assert_eq!(seal.open(Uuid::new_v4(), &sealed), Err(Unsealed::Forged));
        assert_eq!(Seal::new(b"guess").open(dest, &sealed), Err(Unsealed::Forged));
        let mut tampered = sealed.to_vec();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(seal.open(dest, &tampered.into()), Err(Unsealed::Forged));
        assert_eq!(seal.open(dest, &parts.concat()), Err(Unsealed::Missing));
        assert_eq!(seal.open(dest, &Bytes::new()), Err(Unsealed::Missing));
    }
}
