//! The receiving end of a session: one authenticated connection from one
//! peer process, carrying lanes to any of this process's mailboxes.
//!
//! The reader never waits for a mailbox: each lane's messages go to its
//! mailbox through a channel of their own, so a mailbox that takes nothing
//! stalls only its lane (its sender's window, counted in unacknowledged
//! messages, bounds what waits in that channel). One writer sends every
//! lane's acknowledgements (coalesced), refusals and closings, and the
//! session's keepalives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use tokio::sync::Notify;
use tokio_util::codec::FramedRead;
use uuid::Uuid;

use super::{next_frame, Frame, FrameCodec, Heard, NoteProgress, Outbox, PeerRead, PeerWrite};
use crate::error::Error;

/// One lane of an inbound session, handed to the mailbox it opened: its
/// messages, in order, and what the mailbox has taken of them.
pub(crate) struct InboundLane {
    pub(crate) messages: mpsc::UnboundedReceiver<Bytes>,
    pub(crate) ack: Arc<AckState>,
    /// Who sends on it.
    pub(crate) peer: SocketAddr,
}

/// Where the lanes opened for one mailbox go.
pub(crate) type Lanes = mpsc::UnboundedSender<InboundLane>;

/// Where a session sends the lanes it opens.
pub(crate) trait Routes: Send + Sync + 'static {
    /// The mailbox that takes lanes for `dest`, if this process serves it.
    fn route(&self, dest: Uuid) -> Option<Lanes>;
    /// A connection refused, or a session ended by a fault of its peer.
    fn refused(&self, peer: SocketAddr, error: Error);
}

/// How an inbound session reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InboundLimits {
    pub(crate) max_frame_len: usize,
    /// A peer silent this long is dead.
    pub(crate) peer_timeout: Duration,
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

/// What the writer owes the sender, by lane.
enum Reply {
    /// An acknowledgement (and, once the lane is closed, its closing).
    Ack(u32),
    /// Not served here.
    Refused(u32),
}

/// The writer's queue.
#[derive(Default)]
struct Replies {
    queue: Mutex<(Vec<Reply>, bool)>,
    notify: Notify,
}

impl Replies {
    fn push(&self, reply: Reply) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).0.push(reply);
        self.notify.notify_one();
    }

    /// The session is over: the writer stops.
    fn end(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.notify.notify_one();
    }
}

/// Acknowledgements wait this long for company, so a call's round trip
/// (request, answer, next request) then costs one write each way, not two.
const ACK_DELAY: Duration = Duration::from_millis(1);

/// Serves one session until its peer ends it, fails, or `routes` is gone.
pub(crate) async fn serve<R: Routes + ?Sized>(
    read: PeerRead,
    write: PeerWrite,
    peer: SocketAddr,
    routes: Weak<R>,
    limits: InboundLimits,
) {
    let replies = Arc::new(Replies::default());
    let states: Arc<Mutex<HashMap<u32, Arc<AckState>>>> = Arc::default();
    let writer = tokio::spawn(write_replies(write, replies.clone(), states.clone(), limits.peer_timeout / 3));
    let heard = Heard::new();
    let mut frames = FramedRead::new(NoteProgress::new(read, heard.clone()), FrameCodec::new(limits.max_frame_len));
    // Lanes by number; `None` for one refused (its messages are dropped).
    let mut lanes: HashMap<u32, Option<mpsc::UnboundedSender<Bytes>>> = HashMap::new();
    let ended = loop {
        let frame = match next_frame(&mut frames, &heard, limits.peer_timeout).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let Some(live) = routes.upgrade() else { break Ok(()) };
        match frame {
            Frame::Message(lane, payload) => match lanes.get(&lane) {
                // A mailbox that let go of the lane takes nothing more.
                Some(Some(messages)) => drop(messages.unbounded_send(payload)),
                Some(None) => {}
                None => break Err(Error::Peer("a message on a lane never opened")),
            },
            Frame::Open(lane, _) if lanes.contains_key(&lane) => break Err(Error::Peer("a lane opened twice")),
            Frame::Open(lane, dest) => {
                let (tx, messages) = mpsc::unbounded();
                let ack = Arc::new(AckState {
                    lane,
                    taken: AtomicU64::new(0),
                    closed: AtomicBool::new(false),
                    queued: AtomicBool::new(false),
                    out: Arc::downgrade(&replies),
                });
                states.lock().unwrap_or_else(|e| e.into_inner()).insert(lane, ack.clone());
                let opened = InboundLane { messages, ack, peer };
                let taken = live.route(dest).is_some_and(|mailbox| mailbox.unbounded_send(opened).is_ok());
                if taken {
                    lanes.insert(lane, Some(tx));
                } else {
                    states.lock().unwrap_or_else(|e| e.into_inner()).remove(&lane);
                    replies.push(Reply::Refused(lane));
                    lanes.insert(lane, None);
                }
            }
            // Its mailbox sees the end of the lane's messages.
            Frame::End(lane) => drop(lanes.remove(&lane)),
            Frame::Keepalive => {}
            Frame::Ack(..) | Frame::Closing(_) | Frame::Refused(_) => {
                break Err(Error::Peer("a sender sent a mailbox's control frame"))
            }
        }
    };
    // Every mailbox sees the end of its lane.
    drop(lanes);
    match ended {
        // The writer says what is left to say, unless the peer does not read.
        Ok(()) => {
            replies.end();
            let writer = tokio_util::task::AbortOnDropHandle::new(writer);
            let _ = tokio::time::timeout(limits.peer_timeout, writer).await;
        }
        Err(e) => {
            writer.abort();
            if let Some(routes) = routes.upgrade() {
                routes.refused(peer, e);
            }
        }
    }
}

/// Whether a reply waiting cannot wait for company: a refusal, a lane's
/// closing (its sender re-routes what the mailbox did not take, the sooner
/// the better), or the end of the session.
fn urgent(replies: &Replies, states: &Mutex<HashMap<u32, Arc<AckState>>>) -> bool {
    let queue = replies.queue.lock().unwrap_or_else(|e| e.into_inner());
    queue.1
        || queue.0.iter().any(|reply| match reply {
            Reply::Refused(_) => true,
            Reply::Ack(lane) => states
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(lane)
                .is_some_and(|state| state.closed.load(Ordering::Acquire)),
        })
}

/// Writes acknowledgements as lanes' messages are taken (coalesced over
/// [`ACK_DELAY`]), a lane's last acknowledgement and its closing once its
/// mailbox lets go of it, refusals, and a keepalive when it has written
/// nothing for `keepalive`.
async fn write_replies(
    mut write: PeerWrite,
    replies: Arc<Replies>,
    states: Arc<Mutex<HashMap<u32, Arc<AckState>>>>,
    keepalive: Duration,
) {
    let mut reported: HashMap<u32, u64> = HashMap::new();
    let mut outbox = Outbox::default();
    loop {
        if tokio::time::timeout(keepalive, replies.notify.notified()).await.is_err() {
            outbox.push(Frame::Keepalive);
        } else if !urgent(&replies, &states) {
            // Wait for company.
            tokio::time::sleep(ACK_DELAY).await;
        }
        let (queue, ended) = {
            let mut queue = replies.queue.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut queue.0), queue.1)
        };
        for reply in queue {
            let lane = match reply {
                Reply::Refused(lane) => {
                    outbox.push(Frame::Refused(lane));
                    continue;
                }
                Reply::Ack(lane) => lane,
            };
            let Some(state) = states.lock().unwrap_or_else(|e| e.into_inner()).get(&lane).cloned() else { continue };
            state.queued.store(false, Ordering::Release);
            let closed = state.closed.load(Ordering::Acquire);
            // Closing: what is taken now is all that will be.
            let taken = match closed {
                true => state.taken.fetch_or(SEALED, Ordering::AcqRel) & !SEALED,
                false => state.taken.load(Ordering::Acquire) & !SEALED,
            };
            let last = reported.entry(lane).or_insert(0);
            if taken != *last {
                outbox.push(Frame::Ack(lane, taken));
                *last = taken;
            }
            if closed {
                outbox.push(Frame::Closing(lane));
                reported.remove(&lane);
                states.lock().unwrap_or_else(|e| e.into_inner()).remove(&lane);
            }
        }
        while !outbox.is_empty() {
            if outbox.write_to(&mut write).await.is_err() {
                return;
            }
        }
        if ended {
            break;
        }
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut write).await;
}
