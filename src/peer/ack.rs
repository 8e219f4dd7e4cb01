//! The receiving side's acknowledgement state of one peer connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// Set in `taken` once the last acknowledgement is decided: nothing more of
/// the connection may be taken (the sender will re-send it).
const SEALED: u64 = 1 << 63;

/// Per connection: how many of its messages were taken, for acknowledgement.
#[derive(Debug, Default)]
pub(crate) struct AckState {
    /// Messages of the connection taken so far (and [`SEALED`]).
    taken: AtomicU64,
    /// The connection is closing: send a last acknowledgement.
    pub(crate) closed: AtomicBool,
    /// Wakes the acknowledgement writer.
    pub(crate) notify: Notify,
}

impl AckState {
    /// Takes one more message; false once sealed (it is not the consumer's:
    /// its sender is told it was not taken, and re-sends it).
    pub(crate) fn take(&self) -> bool {
        let taken = self.taken.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match n & SEALED {
            0 => Some(n + 1),
            _ => None,
        });
        self.notify.notify_one();
        taken.is_ok()
    }

    /// Messages taken so far.
    pub(crate) fn taken(&self) -> u64 {
        self.taken.load(Ordering::Acquire) & !SEALED
    }

    /// Decides the last acknowledgement: how many were taken, for good.
    pub(crate) fn seal(&self) -> u64 {
        self.taken.fetch_or(SEALED, Ordering::AcqRel) & !SEALED
    }
}
