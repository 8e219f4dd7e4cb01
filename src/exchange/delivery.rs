//! What an exchange hands a mailbox: a message, with what is owed to where
//! it came from (an acknowledgement to a peer, or to the mailbox's taken
//! list in Redis).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tracing::warn;

use super::{HybridExchange, Listed};
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
    /// Re-sent after its connection to an earlier opening of this mailbox
    /// failed: that opening may have taken it (and run it).
    pub(crate) doubtful: bool,
}

impl Delivery {
    /// A message handed over with nothing owed: in process by a
    /// [`LocalExchange`](super::LocalExchange), or popped outright.
    pub(crate) fn local(envelope: Envelope) -> Self {
        Self { envelope, stamp: None, origin: Origin::Local, doubtful: false }
    }

    pub(crate) fn into_envelope(self) -> Envelope {
        self.envelope
    }
}

#[derive(Debug)]
pub(crate) enum Origin {
    /// Nothing owed.
    Local,
    /// Taken from the Redis queue into the mailbox's taken list, at this
    /// position (counted from 1 in the opening), as these bytes: acknowledge
    /// it there when the consumer takes it (or hand the bytes back).
    Redis(Arc<TakenAcks>, u64, Bytes),
    /// Read from a peer connection: acknowledge it when taken.
    Peer(Arc<AckState>),
    /// Moved from an Academy 1.0 queue into the mailbox's taken list:
    /// removed from there when taken.
    Listed(Listed),
    /// A copy of an answer that rode with its doorbell ring: nothing owed
    /// (its queue entry follows, and is dropped as a second copy).
    Early,
}

/// Once taken, how long until the message is the consumer's for good.
pub(crate) enum Taken {
    /// Now: a peer's or a local message.
    Now,
    /// Once the taken list's first `n` entries are acknowledged in Redis
    /// (the entry's bytes, to hand back if it is not handed out).
    After(Arc<TakenAcks>, u64, Bytes),
    /// Once removed from an Academy 1.0 mailbox's taken list.
    Listed(Listed),
}

impl Delivery {
    /// The message, acknowledged to where it came from; `None` if its
    /// connection's last acknowledgement went out without it (its sender
    /// re-sends it).
    pub(crate) fn take(self) -> Option<(Envelope, Taken)> {
        let taken = match &self.origin {
            Origin::Peer(ack) if !ack.take() => return None,
            Origin::Peer(_) => Taken::Now,
            Origin::Redis(acks, _, raw) => Taken::After(acks.clone(), acks.take(), raw.clone()),
            Origin::Listed(listed) => Taken::Listed(listed.clone()),
            Origin::Local | Origin::Early => Taken::Now,
        };
        Some((self.envelope, taken))
    }
}

/// How long closing a mailbox waits for its last acknowledgements (Redis
/// may be down); what is not acknowledged is delivered again.
const FINISH_WAIT: Duration = Duration::from_secs(5);
/// How long an acknowledgement nobody waits for (a client's: it runs no
/// requests) waits for company, so that a caller taking one answer after
/// another trims its taken list once for many; a crash meanwhile only
/// leaves those answers in Redis, for nobody.
const ACK_DELAY: Duration = Duration::from_millis(1);
/// Plain acknowledgements that go at once, without waiting for more.
const ACK_BATCH: u64 = 512;

/// The acknowledgements of one mailbox opening's taken list: how many of its
/// entries (oldest first, the order they are delivered in) the consumer has
/// taken, written to Redis by a background task in coalesced, idempotent
/// trims ([`ACK`](super::actor::ACK)).
#[derive(Debug)]
pub(crate) struct TakenAcks {
    /// Entries the watcher moved into the taken list (some may not have
    /// reached the mailbox yet).
    moved: AtomicU64,
    /// Entries handed to the mailbox, in order.
    delivered: AtomicU64,
    /// Entries the mailbox has looked at (handed on or discarded): when it
    /// equals `moved`, no batch is on its way to the mailbox.
    handled: AtomicU64,
    taken: AtomicU64,
    /// Entries the consumer wants acknowledged at once: a request it is
    /// taking is claimed before it is handed out (at most once), and
    /// never one further (what only the mailbox's memory holds would be
    /// lost with the process). A take may have claimed it already
    /// ([`claimable`](Self::claimable)): then `written` covers it.
    claimed: AtomicU64,
    /// Undecodable entries to delete from the taken list (by value), each
    /// with the position of a claim of the watcher's it voids (0 for none):
    /// they never reach the consumer, so they are not counted.
    discards: Mutex<Vec<(Vec<u8>, u64)>>,
    /// Entries the mailbox found undecodable (they have no position).
    discarded: AtomicU64,
    /// The consumer is waiting for its next message (and has taken every
    /// one delivered): the next take may claim its first entry itself.
    waiting: AtomicBool,
    /// Takes may claim for this mailbox's consumer: an agent's, whose
    /// requests need a claim (any other message is taken without one, so
    /// a claim ahead of the consumer would only risk it).
    claims: bool,
    /// How many are acknowledged in Redis.
    written: watch::Sender<u64>,
    /// The writer gave up (the exchange closed, or another opening took the
    /// mailbox over): nothing more will be acknowledged.
    gave_up: AtomicBool,
    notify: Notify,
    /// Someone waits for what is acknowledged (a claim, a discard, the
    /// close): the writer writes at once.
    urgent: Notify,
    closed: AtomicBool,
    /// What the writer needs, until it starts: only a mailbox that takes
    /// from Redis runs one (most never do, and a task costs memory).
    unstarted: Mutex<Option<(HybridExchange, EntityId, uuid::Uuid)>>,
}

impl TakenAcks {
    /// The acknowledgements of the taken list of `id`'s opening `opening`;
    /// their writer starts with the first thing to write.
    pub(crate) fn start(exchange: HybridExchange, id: EntityId, opening: uuid::Uuid) -> Arc<Self> {
        Arc::new(Self {
            moved: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            discards: Mutex::default(),
            discarded: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            claims: id.role() == crate::identifier::Role::Agent,
            written: watch::Sender::new(0),
            gave_up: AtomicBool::new(false),
            notify: Notify::new(),
            urgent: Notify::new(),
            closed: AtomicBool::new(false),
            unstarted: Mutex::new(Some((exchange, id, opening))),
        })
    }

    /// Tells the writer there is something to write, starting it first if
    /// it has not run yet.
    fn wake_writer(self: &Arc<Self>) {
        if let Some((exchange, id, opening)) = self.unstarted.lock().unwrap_or_else(|e| e.into_inner()).take() {
            tokio::spawn(write(self.clone(), exchange, id, opening));
        }
        self.notify.notify_one();
    }

    /// Tells the writer someone waits for what it writes next.
    fn hurry_writer(self: &Arc<Self>) {
        self.wake_writer();
        self.urgent.notify_one();
    }

    /// Counts one more entry handed to the mailbox; returns its position.
    pub(crate) fn deliver(&self) -> u64 {
        self.delivered.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Counts entries the mailbox looked at (handed on or discarded).
    pub(crate) fn handled(&self, count: usize) {
        self.handled.fetch_add(count as u64, Ordering::AcqRel);
    }

    /// Counts entries the watcher moved into the taken list.
    pub(crate) fn moved(&self, count: usize) {
        self.moved.fetch_add(count as u64, Ordering::AcqRel);
    }

    /// Entries moved into the taken list so far.
    pub(crate) fn moved_so_far(&self) -> u64 {
        self.moved.load(Ordering::Acquire)
    }

    /// The positions of what was moved so far (undecodable entries, which
    /// have none, left out; those still on their way to the mailbox count).
    pub(crate) fn positions_moved(&self) -> u64 {
        self.moved_so_far().saturating_sub(self.discarded.load(Ordering::Acquire))
    }

    /// An undecodable entry: deleted from the taken list, never counted. If
    /// the watcher claimed it (`claim`, its position), the claim is void:
    /// that position is the next decodable entry's, which is claimed as
    /// usual when it is taken.
    pub(crate) fn discard(self: &Arc<Self>, entry: Vec<u8>, claim: Option<u64>) {
        self.discarded.fetch_add(1, Ordering::AcqRel);
        self.discards.lock().unwrap_or_else(|e| e.into_inner()).push((entry, claim.unwrap_or(0)));
        self.hurry_writer();
    }

    /// Says whether the consumer waits for its next message.
    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Release);
    }

    /// The position the next take may claim in the same round trip as it
    /// moves the entry (see [`CLAIM`](super::actor::CLAIM)): only while the
    /// consumer waits with nothing delivered and untaken, everything it
    /// took is acknowledged, and no discard is pending, so the entry is
    /// handed out as soon as it arrives and the positions in Redis are the
    /// ones counted here: no batch on its way (the mailbox looked at
    /// everything moved), so before the take's moves the taken list holds
    /// only acknowledged entries, and its first move is position
    /// `delivered + 1`.
    pub(crate) fn claimable(&self) -> Option<u64> {
        // Nothing on its way first: then `delivered` cannot move while it
        // is read (only this take's batch would move it).
        let moved = self.moved.load(Ordering::Acquire);
        if !self.claims || self.handled.load(Ordering::Acquire) != moved {
            return None;
        }
        let delivered = self.delivered.load(Ordering::Acquire);
        let caught_up = self.waiting.load(Ordering::Acquire)
            && self.taken.load(Ordering::Acquire) == delivered
            && self.written() == delivered
            && self.discards.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        caught_up.then_some(delivered + 1)
    }

    /// The watcher's claim of entry `position` holds (it was written with
    /// the take that moved the entry): the entry counts as acknowledged.
    pub(crate) fn claimed_by_take(&self, position: u64) {
        self.acknowledged_upto(position);
    }

    /// The first `n` entries are acknowledged in Redis (never lowered: an
    /// acknowledgement and a take's claim may land in either order).
    fn acknowledged_upto(&self, n: u64) {
        self.written.send_if_modified(|written| {
            let raise = *written < n;
            *written = (*written).max(n);
            raise
        });
    }

    /// Counts one more entry taken by the consumer; returns how many are.
    pub(crate) fn take(self: &Arc<Self>) -> u64 {
        let n = self.taken.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake_writer();
        n
    }

    /// How many entries are acknowledged in Redis (taken or claimed).
    pub(crate) fn written(&self) -> u64 {
        *self.written.borrow()
    }

    /// Waits until the first `n` entries are acknowledged in Redis: `false`
    /// if they never will be (the exchange closed first).
    pub(crate) async fn acknowledged(self: Arc<Self>, n: u64) -> bool {
        self.claimed.fetch_max(n, Ordering::AcqRel);
        self.hurry_writer();
        self.durable(n).await
    }

    async fn durable(&self, n: u64) -> bool {
        let mut rx = self.written.subscribe();
        let _ = rx.wait_for(|&w| w >= n || self.gave_up.load(Ordering::Acquire)).await;
        self.written() >= n
    }

    /// Writes the last acknowledgements (waiting at most [`FINISH_WAIT`])
    /// and ends the writer.
    pub(crate) async fn finish(self: Arc<Self>) {
        self.closed.store(true, Ordering::Release);
        // A writer that never started has nothing to write.
        if self.unstarted.lock().unwrap_or_else(|e| e.into_inner()).take().is_some() {
            return;
        }
        self.notify.notify_one();
        self.urgent.notify_one();
        let n = self.taken.load(Ordering::Acquire).max(self.claimed.load(Ordering::Acquire));
        let _ = tokio::time::timeout(FINISH_WAIT, self.durable(n)).await;
    }
}

async fn write(acks: Arc<TakenAcks>, exchange: HybridExchange, id: EntityId, opening: uuid::Uuid) {
    let mut backoff = Duration::from_millis(50);
    // A plain acknowledgement has had its moment of waiting.
    let mut waited = false;
    loop {
        let closed = acks.closed.load(Ordering::Acquire);
        // Discards first: they were delivered before whatever is taken next.
        let discard = acks.discards.lock().unwrap_or_else(|e| e.into_inner()).first().cloned();
        if let Some((entry, claim)) = discard {
            match exchange.discard_taken(&id, opening, entry, claim).await {
                Ok(()) => drop(acks.discards.lock().unwrap_or_else(|e| e.into_inner()).remove(0)),
                Err(Error::ExchangeClosed) => break,
                Err(e) => {
                    warn!(mailbox = %id, "could not delete an undecodable entry from the taken list, retrying: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            continue;
        }
        let claimed = acks.claimed.load(Ordering::Acquire);
        let taken = acks.taken.load(Ordering::Acquire).max(claimed);
        if taken > acks.written() {
            // An agent's takes claim only once everything is acknowledged,
            // so its acknowledgements never wait.
            let plain = !acks.claims && claimed <= acks.written() && !closed;
            if plain && !waited && taken - acks.written() < ACK_BATCH {
                // Nobody waits for it: it waits a moment for company.
                waited = true;
                let _ = tokio::time::timeout(ACK_DELAY, acks.urgent.notified()).await;
                continue;
            }
            waited = false;
            match exchange.acknowledge_taken(&id, opening, taken).await {
                Ok(()) => {
                    acks.acknowledged_upto(taken);
                    backoff = Duration::from_millis(50);
                }
                // Closed, or another opening took the mailbox over (it put
                // what this one had not acknowledged back in the queue).
                Err(Error::ExchangeClosed | Error::MailboxInUse(_)) => break,
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
    acks.gave_up.store(true, Ordering::Release);
    acks.written.send_modify(|_| {});
}
