//! What an exchange hands a mailbox: a message, with what is owed to where
//! it came from (an acknowledgement to a peer, a place in a Redis queue).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::message::{Envelope, Stamp};
use crate::peer::AckState;

/// A message in the local FIFO, with what is owed to where it came from.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) envelope: Envelope,
    /// The sender's stamp, if it has one.
    pub(crate) stamp: Option<Stamp>,
    pub(crate) origin: Origin,
}

impl Delivery {
    /// A message handed over in process by a [`LocalExchange`].
    pub(crate) fn local(envelope: Envelope) -> Self {
        Self { envelope, stamp: None, origin: Origin::Local }
    }

    pub(crate) fn into_envelope(self) -> Envelope {
        self.envelope
    }
}

#[derive(Debug)]
pub(crate) enum Origin {
    /// Handed over in process.
    Local,
    /// Popped from the Redis queue: the raw entry, to push back on close.
    Redis(Bytes),
    /// Read from a peer connection: acknowledge it when taken.
    Peer(Arc<AckState>),
}

impl Delivery {
    /// The message, acknowledged to its sender if it came directly.
    pub(crate) fn take(self) -> Envelope {
        if let Origin::Peer(ack) = &self.origin {
            ack.taken.fetch_add(1, Ordering::Release);
            ack.notify.notify_one();
        }
        self.envelope
    }
}
