//! The receiving side's acknowledgement state of one peer connection.

use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::sync::Notify;

/// Per connection: how many of its messages were taken, for acknowledgement.
#[derive(Debug, Default)]
pub(crate) struct AckState {
    /// Messages of the connection taken so far.
    pub(crate) taken: AtomicU64,
    /// The connection is closing: send a last acknowledgement.
    pub(crate) closed: AtomicBool,
    /// Wakes the acknowledgement writer.
    pub(crate) notify: Notify,
}
