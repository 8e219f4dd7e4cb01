//! What an exchange hands a mailbox: a message, with what is owed to where
//! it came from (an acknowledgement to a peer, or to the mailbox's taken
//! list in Redis).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::warn;

use super::HybridExchange;
use crate::error::Error;
use crate::identifier::EntityId;
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
    /// A message handed over with nothing owed: in process by a
    /// [`LocalExchange`](super::LocalExchange), or popped outright.
    pub(crate) fn local(envelope: Envelope) -> Self {
        Self { envelope, stamp: None, origin: Origin::Local }
    }

    pub(crate) fn into_envelope(self) -> Envelope {
        self.envelope
    }
}

#[derive(Debug)]
pub(crate) enum Origin {
    /// Nothing owed.
    Local,
    /// Taken from the Redis queue into the mailbox's taken list: acknowledge
    /// it there when the consumer takes it.
    Redis(Arc<TakenAcks>),
    /// Read from a peer connection: acknowledge it when taken.
    Peer(Arc<AckState>),
}

/// Once taken, how long until the message is the consumer's for good.
pub(crate) enum Taken {
    /// Now: a peer's or a local message.
    Now,
    /// Once the taken list's first `n` entries are acknowledged in Redis.
    After(Arc<TakenAcks>, u64),
}

impl Delivery {
    /// The message, acknowledged to where it came from.
    pub(crate) fn take(self) -> (Envelope, Taken) {
        let taken = match &self.origin {
            Origin::Peer(ack) => {
                ack.taken.fetch_add(1, Ordering::Release);
                ack.notify.notify_one();
                Taken::Now
            }
            Origin::Redis(acks) => Taken::After(acks.clone(), acks.take()),
            Origin::Local => Taken::Now,
        };
        (self.envelope, taken)
    }
}

/// The acknowledgements of one mailbox opening's taken list: how many of its
/// entries (oldest first, the order they are delivered in) the consumer has
/// taken, written to Redis by a background task in coalesced `LPOP`s.
#[derive(Debug)]
pub(crate) struct TakenAcks {
    taken: AtomicU64,
    /// How many are acknowledged in Redis; `None` once the writer gave up
    /// (the exchange closed).
    written: watch::Sender<Option<u64>>,
    notify: Notify,
    closed: AtomicBool,
}

impl TakenAcks {
    /// Starts the writer for `id`'s taken list.
    pub(crate) fn start(exchange: HybridExchange, id: EntityId) -> Arc<Self> {
        let acks = Arc::new(Self {
            taken: AtomicU64::new(0),
            written: watch::Sender::new(Some(0)),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(write(acks.clone(), exchange, id));
        acks
    }

    /// Counts one more entry taken (or discarded); returns how many are.
    pub(crate) fn take(&self) -> u64 {
        let n = self.taken.fetch_add(1, Ordering::AcqRel) + 1;
        self.notify.notify_one();
        n
    }

    /// Waits until the first `n` entries are acknowledged in Redis: `false`
    /// if they never will be (the exchange closed first).
    pub(crate) async fn acknowledged(self: Arc<Self>, n: u64) -> bool {
        let mut rx = self.written.subscribe();
        matches!(rx.wait_for(|w| w.is_none_or(|w| w >= n)).await.map(|w| *w), Ok(Some(_)))
    }

    /// Writes the last acknowledgements and ends the writer.
    pub(crate) async fn finish(self: Arc<Self>) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
        let n = self.taken.load(Ordering::Acquire);
        self.acknowledged(n).await;
    }
}

async fn write(acks: Arc<TakenAcks>, exchange: HybridExchange, id: EntityId) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let closed = acks.closed.load(Ordering::Acquire);
        let taken = acks.taken.load(Ordering::Acquire);
        let written = acks.written.borrow().unwrap_or(taken);
        if taken > written {
            match exchange.acknowledge_taken(&id, taken - written).await {
                Ok(()) => {
                    acks.written.send_replace(Some(taken));
                    backoff = Duration::from_millis(50);
                }
                Err(Error::ExchangeClosed) => break,
                Err(e) => {
                    warn!(mailbox = %id, "could not acknowledge taken messages in Redis, retrying: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            continue;
        }
        if closed {
            return;
        }
        acks.notify.notified().await;
    }
    acks.written.send_replace(None);
}
