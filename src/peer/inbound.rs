//! The receiving role of a session: the lanes a peer process opens to this
//! process's mailboxes, and what is owed back on them.
//!
//! The session's reader never waits for a mailbox: each lane's messages go to
//! its mailbox through a channel of their own, so a mailbox that takes
//! nothing stalls only its lane (its sender's window, counted in
//! unacknowledged messages, bounds what waits in that channel). The
//! session's writer sends every lane's acknowledgements (coalesced), refusals
//! and closings, collected from [`Replies`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::Bytes;
use futures::channel::mpsc;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Frame, Outbox};
use crate::error::Error;

/// One lane of a session, handed to the mailbox it opened: its messages, in
/// order, and what the mailbox has taken of them. Dropped before the mailbox
/// [accepts](Self::accept) it (the mailbox stopped first), it is closed to
/// its sender, nothing taken.
pub(crate) struct InboundLane {
    messages: Option<mpsc::UnboundedReceiver<Bytes>>,
    ack: Arc<AckState>,
    /// Who sends on it.
    pub(crate) peer: SocketAddr,
}

impl InboundLane {
    /// The mailbox takes the lane: its messages, and what it owes for them
    /// (it closes the acknowledgement state when it lets go of the lane).
    pub(crate) fn accept(mut self) -> (mpsc::UnboundedReceiver<Bytes>, Arc<AckState>) {
        (self.messages.take().expect("accepted once"), self.ack.clone())
    }
}

impl Drop for InboundLane {
    fn drop(&mut self) {
        if self.messages.is_some() {
            self.ack.close();
        }
    }
}

/// Where the lanes opened for one mailbox go.
pub(crate) type Lanes = mpsc::UnboundedSender<InboundLane>;

/// Where a session sends the lanes it is opened.
pub(crate) trait Routes: Send + Sync + 'static {
    /// The mailbox that takes lanes for `dest`, if this process serves it.
    fn route(&self, dest: Uuid) -> Option<Lanes>;
    /// A connection refused, or a session ended by a fault of its peer.
    fn refused(&self, peer: SocketAddr, error: Error);
}

/// Set in `taken` once the last acknowledgement is decided: nothing more of
/// the lane may be taken (the sender will re-send it).
const SEALED: u64 = 1 << 63;

/// Per lane: how many of its messages were taken, for acknowledgement.
#[derive(Debug)]
pub(crate) struct AckState {
    lane: u32,
    /// Messages of the lane taken so far (and [`SEALED`]).
    taken: AtomicU64,
    /// The mailbox lets go of the lane: send a last acknowledgement.
    closed: AtomicBool,
    /// Queued for the writer, which has not looked yet.
    queued: AtomicBool,
    out: Weak<Replies>,
}

impl AckState {
    /// Takes one more message; false once sealed (it is not the consumer's:
    /// its sender is told it was not taken, and re-sends it).
    pub(crate) fn take(&self) -> bool {
        let taken = self.taken.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match n & SEALED {
            0 => Some(n + 1),
            _ => None,
        });
        self.queue();
        taken.is_ok()
    }

    /// The mailbox lets go of the lane (it closes, or the lane misbehaved):
    /// what it took is acknowledged, then the lane is closed to its sender.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.queue();
    }

    fn queue(&self) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(out) = self.out.upgrade() {
            out.push(Reply::Ack(self.lane));
        }
    }
}

/// What the writer owes a sender, by lane.
enum Reply {
    /// An acknowledgement (and, once the lane is closed, its closing).
    Ack(u32),
    /// Not served here.
    Refused(u32),
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a session owes the senders of the lanes opened to it.
#[derive(Default)]
pub(crate) struct Replies {
    /// What is owed, and since when the oldest of it.
    queue: Mutex<(Vec<Reply>, Option<Instant>)>,
    states: Mutex<HashMap<u32, Arc<AckState>>>,
    /// Wakes the session's writer when something is owed.
    pub(crate) wake: Notify,
}

impl Replies {
    fn push(&self, reply: Reply) {
        let mut queue = lock(&self.queue);
        queue.0.push(reply);
        queue.1.get_or_insert_with(Instant::now);
        drop(queue);
        self.wake.notify_one();
    }

    /// Since when something is owed, if it is.
    pub(crate) fn owed_since(&self) -> Option<Instant> {
        lock(&self.queue).1
    }

    /// Something owed cannot wait for company: a refusal, or a lane's
    /// closing (its sender re-routes what the mailbox did not take, the
    /// sooner the better).
    pub(crate) fn urgent(&self) -> bool {
        let queue = lock(&self.queue);
        queue.0.iter().any(|reply| match reply {
            Reply::Refused(_) => true,
            Reply::Ack(lane) => lock(&self.states).get(lane).is_some_and(|state| state.closed.load(Ordering::Acquire)),
        })
    }

    /// Queues what is owed in `outbox`; `reported` is what each lane was told
    /// it had taken. Returns the bytes queued.
    pub(crate) fn collect(&self, reported: &mut HashMap<u32, u64>, outbox: &mut Outbox) -> usize {
        let mut bytes = 0;
        let queue = std::mem::take(&mut *lock(&self.queue)).0;
        for reply in queue {
            let lane = match reply {
                Reply::Refused(lane) => {
                    bytes += outbox.push(Frame::Refused(lane));
                    continue;
                }
                Reply::Ack(lane) => lane,
            };
            let Some(state) = lock(&self.states).get(&lane).cloned() else { continue };
            // A read-modify-write, ordered with the one in `queue`: a take or
            // close after it queues again, one before it is seen below.
            state.queued.swap(false, Ordering::AcqRel);
            let closed = state.closed.load(Ordering::Acquire);
            // Closing: what is taken now is all that will be.
            let taken = match closed {
                true => state.taken.fetch_or(SEALED, Ordering::AcqRel) & !SEALED,
                false => state.taken.load(Ordering::Acquire) & !SEALED,
            };
            let last = reported.entry(lane).or_insert(0);
            if taken != *last {
                bytes += outbox.push(Frame::Ack(lane, taken));
                *last = taken;
            }
            if closed {
                bytes += outbox.push(Frame::Closing(lane));
                reported.remove(&lane);
                lock(&self.states).remove(&lane);
            }
        }
        bytes
    }
}

/// A lane the peer opened.
enum Their {
    /// Its messages go to a mailbox.
    Open(mpsc::UnboundedSender<Bytes>),
    /// Refused (no such mailbox here): its messages are dropped.
    Refused,
    /// Opened after this side said it closes: dropped, and not counted.
    Ignored,
}

/// The lanes a peer opened on one session, as its reader sees them.
pub(crate) struct TheirLanes {
    lanes: HashMap<u32, Their>,
    replies: Arc<Replies>,
    peer: SocketAddr,
}

impl TheirLanes {
    pub(crate) fn new(replies: Arc<Replies>, peer: SocketAddr) -> Self {
        TheirLanes { lanes: HashMap::new(), replies, peer }
    }

    /// Lane `lane` opens to mailbox `dest`: handed to it if `routes` serves
    /// it, refused if not; ignored if `ignore` (this side closes).
    pub(crate) fn open(
        &mut self,
        lane: u32,
        dest: Uuid,
        routes: Option<&dyn Routes>,
        ignore: bool,
    ) -> Result<(), Error> {
        if self.lanes.contains_key(&lane) {
            return Err(Error::Peer("a lane opened twice"));
        }
        if ignore {
            self.lanes.insert(lane, Their::Ignored);
            return Ok(());
        }
        let (tx, messages) = mpsc::unbounded();
        let ack = Arc::new(AckState {
            lane,
            taken: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            queued: AtomicBool::new(false),
            out: Arc::downgrade(&self.replies),
        });
        lock(&self.replies.states).insert(lane, ack.clone());
        let opened = InboundLane { messages: Some(messages), ack, peer: self.peer };
        let mailbox = routes.and_then(|routes| routes.route(dest));
        if mailbox.is_some_and(|mailbox| mailbox.unbounded_send(opened).is_ok()) {
            self.lanes.insert(lane, Their::Open(tx));
        } else {
            lock(&self.replies.states).remove(&lane);
            self.replies.push(Reply::Refused(lane));
            self.lanes.insert(lane, Their::Refused);
        }
        Ok(())
    }

    /// A message on lane `lane`.
    pub(crate) fn message(&mut self, lane: u32, payload: Bytes) -> Result<(), Error> {
        match self.lanes.get(&lane) {
            // A mailbox that let go of the lane takes nothing more.
            Some(Their::Open(messages)) => drop(messages.unbounded_send(payload)),
            Some(Their::Refused | Their::Ignored) => {}
            None => return Err(Error::Peer("a message on a lane never opened")),
        }
        Ok(())
    }

    /// Lane `lane` ends (its mailbox sees the end of its messages); whether
    /// it was counted (not ignored).
    pub(crate) fn end(&mut self, lane: u32) -> bool {
        !matches!(self.lanes.remove(&lane), Some(Their::Ignored) | None)
    }
}
