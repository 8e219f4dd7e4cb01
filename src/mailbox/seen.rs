//! What a mailbox took, so that the second copy of a message that reached it
//! twice is dropped.
//!
//! A sender re-routes through Redis every message its peer did not
//! acknowledge before the connection failed; some of them may have been
//! taken already (the acknowledgement was lost with the connection) or still
//! sit in the receiver's socket (a receiver frozen longer than the peer
//! timeout). Both copies then reach the mailbox. Every message a hybrid
//! exchange sends is stamped with a stream (one per sender and destination)
//! and a number counted in it; the mailbox keeps, per stream, the numbers taken
//! as ranges, so a stream taken in order costs one range however long it
//! runs, and the check is exact. Unstamped messages (requests an agent put
//! back in its queue on purpose) are always delivered. At most
//! [`MAX_STREAMS`] streams are kept (the oldest go first): a mailbox read by
//! many short-lived senders does not grow without bound, and a request that
//! still comes twice is caught by its agent's runtime.

use std::collections::{HashMap, HashSet, VecDeque};

use rangemap::RangeInclusiveSet;

use crate::message::Stamp;

/// Streams a mailbox remembers.
const MAX_STREAMS: usize = 16_384;
/// Answers handed on early whose queue entries a mailbox waits for, at most
/// (past that they are forgotten, and a queue entry that still comes counts
/// as a duplicate).
const MAX_EARLY: usize = 4_096;

/// The stamps a mailbox has taken since it opened.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    streams: HashMap<uuid::Uuid, RangeInclusiveSet<u64>>,
    /// Streams, oldest first.
    order: VecDeque<uuid::Uuid>,
    /// Stamps of answers handed on ahead of their queue entries.
    early: HashSet<Stamp>,
}

impl Seen {
    /// Records `stamp`; false if it was taken already (a second copy).
    pub(crate) fn first_time(&mut self, (stream, seq): Stamp) -> bool {
        if !self.streams.contains_key(&stream) {
            if self.order.len() >= MAX_STREAMS {
                let oldest = self.order.pop_front().expect("full");
                self.streams.remove(&oldest);
            }
            self.order.push_back(stream);
        }
        let taken = self.streams.entry(stream).or_default();
        if taken.contains(&seq) {
            return false;
        }
        taken.insert(seq..=seq);
        true
    }

    /// `stamp` was taken from a copy ahead of its queue entry, which will
    /// follow.
    pub(crate) fn early(&mut self, stamp: Stamp) {
        if self.early.len() >= MAX_EARLY {
            self.early.clear();
        }
        self.early.insert(stamp);
    }

    /// Whether `stamp`, seen before, is the queue entry of a copy taken
    /// early (expected, then forgotten).
    pub(crate) fn followed(&mut self, stamp: Stamp) -> bool {
        self.early.remove(&stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_new_once_in_any_order_and_a_stream_in_order_is_one_range() {
        let (mut seen, stream, other) = (Seen::default(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        for seq in [1, 2, 5, 3, 4] {
            assert!(seen.first_time((stream, seq)));
        }
        for seq in 1..=5 {
            assert!(!seen.first_time((stream, seq)));
        }
        assert!(seen.first_time((other, 1)));
        for seq in 6..100_000 {
            assert!(seen.first_time((stream, seq)));
        }
        assert_eq!(seen.streams[&stream].iter().count(), 1);
    }
}
