//! The sending end of a session: one connection from this process to one
//! peer process (one address), however many of its mailboxes this process
//! sends to. Each sender-to-mailbox stream is a lane of it, with its own
//! acknowledgements: the session only carries frames.
//!
//! A session dials (or, to this process's own address, opens an in-memory
//! pipe to its own inbound side) and authenticates once; lanes opened
//! meanwhile queue their frames. One writer drains every lane's frames in the
//! order they were queued (many frames per vectored write) and sends a
//! keepalive when it has written nothing for a third of the peer timeout; one
//! reader hands each acknowledgement, closing or refusal to its lane. A
//! failure (refused connection, failed handshake, reset, a peer silent for
//! the peer timeout) fails every lane, and the next lane opened dials again.
//! A session whose last lane ends closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::codec::FramedRead;
use tracing::debug;
use uuid::Uuid;

use super::inbound::{self, InboundLimits, Routes};
use super::{next_frame, Addresses, Frame, FrameCodec, Heard, NoteProgress, Outbox, PeerRead, PeerWrite, Security};
use crate::error::Error;
use crate::message::Parts;

/// Bytes an in-memory session buffers each way.
const PIPE_BYTES: usize = 256 << 10;

/// What the sessions of one process share, and its live sessions by address.
pub(crate) struct Sessions {
    pub(crate) security: Security,
    /// Where this process dials from.
    pub(crate) addresses: Addresses,
    pub(crate) connect_timeout: Duration,
    pub(crate) peer_timeout: Duration,
    /// This process's own listener (where bound, and the address it
    /// publishes): a session to that address runs in memory, served by
    /// `local`.
    pub(crate) own: Option<(SocketAddr, String)>,
    pub(crate) local: OnceLock<Weak<dyn Routes>>,
    pub(crate) max_frame_len: usize,
    live: Mutex<HashMap<String, Arc<Session>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("own", &self.own).finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions with these settings, none open yet.
    pub(crate) fn new(
        security: Security,
        addresses: Addresses,
        timeouts: (Duration, Duration),
        own: Option<(SocketAddr, String)>,
        max_frame_len: usize,
    ) -> Self {
        let (connect_timeout, peer_timeout) = timeouts;
        Sessions {
            security,
            addresses,
            connect_timeout,
            peer_timeout,
            own,
            local: OnceLock::new(),
            max_frame_len,
            live: Mutex::default(),
        }
    }

    /// Opens a lane to mailbox `dest` of the process at `address`, on the
    /// session to it (dialed now if there is none).
    pub(crate) fn lane(self: &Arc<Self>, address: &str, dest: Uuid) -> Lane {
        let mut live = lock(&self.live);
        if let Some(lane) = live.get(address).and_then(|session| session.open_lane(dest)) {
            return lane;
        }
        let session = Arc::new(Session {
            address: address.to_owned(),
            shared: Mutex::new(Shared {
                outbox: Outbox::default(),
                queued: 0,
                lanes: HashMap::new(),
                next: 1,
                over: false,
            }),
            wake: Notify::new(),
            written: AtomicU64::new(0),
            sessions: Arc::downgrade(self),
        });
        let lane = session.open_lane(dest).expect("a new session takes lanes");
        live.insert(address.to_owned(), session.clone());
        drop(live);
        tokio::spawn(session.run(self.clone()));
        lane
    }

    /// An authenticated connection to `address`: an in-memory pipe to this
    /// process's own inbound side if the address is its own.
    async fn connect(&self, address: &str) -> Result<(PeerRead, PeerWrite), Error> {
        if let Some((bound, _)) = self.own.as_ref().filter(|(_, published)| published == address) {
            let routes = self.local.get().cloned().ok_or(Error::Peer("this process serves no mailbox yet"))?;
            let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
            let (read, write) = tokio::io::split(theirs);
            let limits = InboundLimits { max_frame_len: self.max_frame_len, peer_timeout: self.peer_timeout };
            tokio::spawn(inbound::serve(Box::new(read), Box::new(write), *bound, routes, limits));
            debug!(address, "in-memory session to this process");
            let (read, write) = tokio::io::split(ours);
            return Ok((Box::new(read), Box::new(write)));
        }
        let connect = async {
            let stream = self.addresses.dial(address).await?;
            self.security.connect(stream, address, Uuid::nil()).await
        };
        tokio::time::timeout(self.connect_timeout, connect).await.map_err(|_| Error::Timeout(self.connect_timeout))?
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a lane hears from the mailbox's side.
#[derive(Debug)]
pub(crate) enum LaneEvent {
    /// The mailbox has taken this many of the lane's messages so far.
    Ack(u64),
    /// The mailbox closed the lane on purpose: what it has not acknowledged
    /// it did not take.
    Closing,
    /// The process there does not serve the mailbox: it took nothing.
    Refused,
    /// The session failed: the mailbox may have taken what it has not
    /// acknowledged.
    Failed(Error),
}

struct Session {
    address: String,
    shared: Mutex<Shared>,
    /// Wakes the writer.
    wake: Notify,
    /// Bytes written so far.
    written: AtomicU64,
    sessions: Weak<Sessions>,
}

struct Shared {
    outbox: Outbox,
    /// Bytes queued so far.
    queued: u64,
    lanes: HashMap<u32, mpsc::UnboundedSender<LaneEvent>>,
    next: u32,
    /// No lane joins any more: the session failed or closes.
    over: bool,
}

impl Shared {
    /// Queues a control frame (counted, so that `queued` and `written` agree).
    fn push(&mut self, frame: Frame) {
        self.queued += self.outbox.push(frame) as u64;
    }
}

/// One sender's stream of messages to one mailbox, on a session.
pub(crate) struct Lane {
    id: u32,
    session: Arc<Session>,
    events: mpsc::UnboundedReceiver<LaneEvent>,
    /// Where in the session's bytes this lane's last frame ends.
    end: u64,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lane({} to {})", self.id, self.session.address)
    }
}

impl Lane {
    /// Queues `messages` on the lane, in order, and wakes the writer.
    pub(crate) fn push<'a>(&mut self, messages: impl IntoIterator<Item = &'a Parts>) {
        let mut shared = lock(&self.session.shared);
        for parts in messages {
            shared.queued += shared.outbox.push_message(self.id, parts) as u64;
        }
        self.end = shared.queued;
        drop(shared);
        self.session.wake.notify_one();
    }

    /// What the mailbox's side says next.
    pub(crate) async fn event(&mut self) -> LaneEvent {
        self.events.recv().await.unwrap_or(LaneEvent::Failed(Error::Peer("the session ended")))
    }

    /// Every byte of the lane's frames has been written.
    pub(crate) fn flushed(&self) -> bool {
        self.session.written.load(Ordering::Acquire) >= self.end
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let mut shared = lock(&self.session.shared);
        if shared.lanes.remove(&self.id).is_some() && !shared.over {
            shared.push(Frame::End(self.id));
            drop(shared);
            self.session.wake.notify_one();
        }
    }
}

impl Session {
    /// A new lane to `dest`, unless the session no longer takes lanes.
    fn open_lane(self: &Arc<Self>, dest: Uuid) -> Option<Lane> {
        let mut shared = lock(&self.shared);
        if shared.over || shared.next == u32::MAX {
            return None;
        }
        let id = shared.next;
        shared.next += 1;
        let (tx, events) = mpsc::unbounded_channel();
        shared.lanes.insert(id, tx);
        shared.push(Frame::Open(id, dest));
        drop(shared);
        self.wake.notify_one();
        Some(Lane { id, session: self.clone(), events, end: 0 })
    }

    /// Connects, then carries frames until the session fails or its last
    /// lane ends.
    async fn run(self: Arc<Self>, sessions: Arc<Sessions>) {
        let peer_timeout = sessions.peer_timeout;
        let connected = sessions.connect(&self.address).await;
        drop(sessions);
        let ended = match connected {
            Ok((read, write)) => {
                tokio::select! {
                    read = self.read(read, peer_timeout) => read,
                    written = self.write(write, peer_timeout / 3) => written,
                }
            }
            Err(e) => Err(e),
        };
        self.end(ended);
    }

    /// Hands what the mailboxes' side says to the lanes.
    async fn read(&self, read: PeerRead, silence: Duration) -> Result<(), Error> {
        let heard = Heard::new();
        // Only control frames come back: no message payload is accepted.
        let mut frames = FramedRead::new(NoteProgress::new(read, heard.clone()), FrameCodec::new(0));
        loop {
            let (lane, event) = match next_frame(&mut frames, &heard, silence).await? {
                None => return Err(Error::Peer("closed by the peer")),
                Some(Frame::Keepalive) => continue,
                Some(Frame::Ack(lane, count)) => (lane, LaneEvent::Ack(count)),
                Some(Frame::Closing(lane)) => (lane, LaneEvent::Closing),
                Some(Frame::Refused(lane)) => (lane, LaneEvent::Refused),
                Some(Frame::Open(..) | Frame::Message(..) | Frame::End(_)) => {
                    return Err(Error::Peer("a mailbox's process sent a sender's frame"))
                }
            };
            // A lane that ended hears nothing more.
            if let Some(tx) = lock(&self.shared).lanes.get(&lane) {
                let _ = tx.send(event);
            }
        }
    }

    /// Writes what the lanes queue, in order, and keepalives; returns once
    /// the last lane has ended and everything is written.
    async fn write(&self, mut write: PeerWrite, keepalive: Duration) -> Result<(), Error> {
        loop {
            let mut batch = {
                let mut shared = lock(&self.shared);
                if shared.outbox.is_empty() && shared.lanes.is_empty() {
                    // No lane joins a session that closes.
                    shared.over = true;
                    break;
                }
                std::mem::take(&mut shared.outbox)
            };
            if batch.is_empty() {
                if tokio::time::timeout(keepalive, self.wake.notified()).await.is_err() {
                    lock(&self.shared).push(Frame::Keepalive);
                }
                continue;
            }
            while !batch.is_empty() {
                let written = batch.write_to(&mut write).await?;
                self.written.fetch_add(written as u64, Ordering::AcqRel);
            }
        }
        // A clean end for the peer (TLS sends its close_notify).
        let _ = tokio::time::timeout(keepalive, tokio::io::AsyncWriteExt::shutdown(&mut write)).await;
        Ok(())
    }

    /// The session is over: it leaves the live sessions, and every lane
    /// still on it fails.
    fn end(self: &Arc<Self>, ended: Result<(), Error>) {
        let lanes: Vec<_> = {
            let mut shared = lock(&self.shared);
            shared.over = true;
            shared.lanes.drain().map(|(_, tx)| tx).collect()
        };
        if let Some(sessions) = self.sessions.upgrade() {
            let mut live = lock(&sessions.live);
            if live.get(&self.address).is_some_and(|live| Arc::ptr_eq(live, self)) {
                live.remove(&self.address);
            }
        }
        match ended {
            Ok(()) => debug!(address = %self.address, "session closed"),
            Err(e) => {
                debug!(address = %self.address, lanes = lanes.len(), "session failed: {e}");
                for tx in lanes {
                    let _ = tx.send(LaneEvent::Failed(again(&e)));
                }
            }
        }
    }
}

/// The same failure, for one more lane.
fn again(e: &Error) -> Error {
    match e {
        Error::Rejected(why) => Error::Rejected(*why),
        Error::Handshake(what) => Error::Handshake(what),
        Error::Timeout(after) => Error::Timeout(*after),
        Error::Peer(what) => Error::Peer(what),
        Error::Io(e) => Error::Io(std::io::Error::new(e.kind(), e.to_string())),
        _ => Error::Peer("the session failed"),
    }
}
