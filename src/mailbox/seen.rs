//! The tags a mailbox handed out last, so that the second copy of a message
//! that reached it twice is dropped.
//!
//! A sender re-routes through Redis every message its peer did not
//! acknowledge before the connection failed; some of them may have been
//! taken already (the acknowledgement was lost with the connection) or still
//! sit in the receiver's socket (a receiver frozen longer than the peer
//! timeout). Both copies then reach the mailbox; the tag tells them apart.
//! Only messages that came directly, or were re-routed after a direct
//! attempt, are remembered and checked: a request an agent returned to its
//! queue on purpose is delivered again.
//! A link re-routes at most its window of unacknowledged messages, so a
//! memory a few windows long catches every such copy; idle mailboxes
//! allocate nothing.

use std::collections::{HashSet, VecDeque};

use uuid::Uuid;

/// How many tags a mailbox remembers: four windows of one link.
const REMEMBERED: usize = 16_384;

/// A bounded memory of recently taken tags.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    tags: HashSet<Uuid>,
    order: VecDeque<Uuid>,
}

impl Seen {
    /// Records `tag`; false if it was already there (a duplicate).
    pub(crate) fn first_time(&mut self, tag: Uuid) -> bool {
        if !self.tags.insert(tag) {
            return false;
        }
        self.order.push_back(tag);
        if self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.tags.remove(&oldest);
            }
        }
        true
    }

    /// Whether `tag` was taken recently.
    pub(crate) fn contains(&self, tag: &Uuid) -> bool {
        self.tags.contains(tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_new_once_and_the_oldest_are_forgotten() {
        let mut seen = Seen::default();
        let first = Uuid::new_v4();
        assert!(seen.first_time(first));
        assert!(!seen.first_time(first));
        for _ in 0..REMEMBERED {
            assert!(seen.first_time(Uuid::new_v4()));
        }
        assert!(!seen.contains(&first));
        assert_eq!(seen.order.len(), REMEMBERED);
    }
}
