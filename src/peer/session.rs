//! Sessions: one connection between two processes, however many of each
//! other's mailboxes they send to. Each sender-to-mailbox stream is a lane
//! of it, with its own acknowledgements: the session only carries frames.
//! A connection carries lanes both ways: the dialing side names the address
//! it publishes (`Hello`), and the other side sends to that process's
//! mailboxes on it too.
//!
//! A session dials (or, to this process's own address, opens an in-memory
//! pipe to its own accepting side) and authenticates once; lanes opened
//! meanwhile queue their frames. One writer drains every lane's frames in the
//! order they were queued, with what is owed to the peer's lanes
//! (acknowledgements ride along), many frames per vectored write, and sends a
//! keepalive when it has written nothing for a third of the peer timeout; one
//! reader hands each acknowledgement, closing or refusal to its lane and each
//! of the peer's lanes to its mailbox ([inbound](super::inbound)). A failure
//! (refused connection, failed handshake, reset, a peer silent for the peer
//! timeout) fails every lane of this side, and the next lane opened dials
//! again. The dialing side closes the session once neither side has a lane
//! open on it, saying `Bye` so that a lane the other side opened meanwhile is
//! known not to have been taken.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::codec::FramedRead;
use tracing::debug;
use uuid::Uuid;

use super::inbound::{Replies, Routes, TheirLanes};
use super::{next_frame, Addresses, Frame, FrameCodec, Heard, NoteProgress, Outbox, PeerRead, PeerWrite, Security};
use crate::error::Error;
use crate::message::Parts;

/// Bytes an in-memory session buffers each way.
const PIPE_BYTES: usize = 256 << 10;

/// Acknowledgements wait this long for company, so a call's round trip
/// (request, answer, next request) then costs one write each way, not two.
const ACK_DELAY: Duration = Duration::from_millis(1);

/// What the sessions of one process share, and its live sessions by address.
pub(crate) struct Sessions {
    pub(crate) security: Security,
    /// Where this process dials from.
    pub(crate) addresses: Addresses,
    pub(crate) connect_timeout: Duration,
    pub(crate) peer_timeout: Duration,
    /// This process's own listener (where bound, and the address it
    /// publishes): a session to that address runs in memory.
    pub(crate) own: Option<(SocketAddr, String)>,
    /// This process's mailboxes, which the lanes peers open go to.
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
        let session = Session::new(self, Some(address.to_owned()), true);
        let lane = session.open_lane(dest).expect("a new session takes lanes");
        live.insert(address.to_owned(), session.clone());
        drop(live);
        let sessions = self.clone();
        let address = address.to_owned();
        tokio::spawn(async move {
            let connected = sessions.connect(&address).await;
            let peer_timeout = sessions.peer_timeout;
            drop(sessions);
            match connected {
                Ok((read, write, peer)) => session.run(read, write, peer, peer_timeout).await,
                Err(e) => session.end(Err(e)),
            }
        });
        lane
    }

    /// Serves a session a peer dialed (authenticated), until it ends.
    pub(crate) async fn accept(self: &Arc<Self>, read: PeerRead, write: PeerWrite, peer: SocketAddr) {
        let session = Session::new(self, None, false);
        session.run(read, write, peer, self.peer_timeout).await;
    }

    /// An authenticated connection to `address`: an in-memory pipe to this
    /// process's own accepting side if the address is its own.
    async fn connect(self: &Arc<Self>, address: &str) -> Result<(PeerRead, PeerWrite, SocketAddr), Error> {
        if let Some((bound, _)) = self.own.as_ref().filter(|(_, published)| published == address) {
            let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
            let (read, write) = tokio::io::split(theirs);
            let (sessions, bound) = (self.clone(), *bound);
            tokio::spawn(async move { sessions.accept(Box::new(read), Box::new(write), bound).await });
            debug!(address, "in-memory session to this process");
            let (read, write) = tokio::io::split(ours);
            return Ok((Box::new(read), Box::new(write), bound));
        }
        let connect = async {
            let stream = self.addresses.dial(address).await?;
            let peer = stream.peer_addr()?;
            let (read, write) = self.security.connect(stream, address, Uuid::nil()).await?;
            Ok::<_, Error>((read, write, peer))
        };
        tokio::time::timeout(self.connect_timeout, connect).await.map_err(|_| Error::Timeout(self.connect_timeout))?
    }

    /// A session the process at `address` dialed carries lanes to it too,
    /// unless this process has a session to it already. Not with TLS: a
    /// process dialed must show a certificate naming the host it publishes,
    /// which the dialing side's certificate was not checked for.
    fn adopt(&self, address: String, session: &Arc<Session>) {
        // Named once: a second Hello is not believed either.
        if self.security.protection == super::Protection::Tls || lock(&session.address).is_some() {
            return;
        }
        let mut live = lock(&self.live);
        if live.contains_key(&address) {
            return;
        }
        live.insert(address.clone(), session.clone());
        *lock(&session.address) = Some(address);
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
    /// The mailbox closed the lane on purpose, or the session closed before
    /// the lane was seen: what it has not acknowledged it did not take.
    Closing,
    /// The process there does not serve the mailbox: it took nothing.
    Refused,
    /// The session failed: the mailbox may have taken what it has not
    /// acknowledged.
    Failed(Error),
}

struct Session {
    /// Where the peer process listens, if known: the session is registered
    /// under it.
    address: Mutex<Option<String>>,
    /// Dialed by this process, which closes it.
    dialed: bool,
    shared: Mutex<Shared>,
    /// Wakes the writer for this side's frames (what is owed to the peer's
    /// lanes wakes it through `replies`).
    wake: Notify,
    /// Bytes written so far.
    written: AtomicU64,
    /// What is owed to the peer's lanes.
    replies: Arc<Replies>,
    sessions: Weak<Sessions>,
}

struct Shared {
    outbox: Outbox,
    /// Bytes queued so far.
    queued: u64,
    /// This side's lanes.
    lanes: HashMap<u32, mpsc::UnboundedSender<LaneEvent>>,
    next: u32,
    /// The peer's lanes open.
    theirs: usize,
    /// No lane joins any more, on either side: the session failed or closes.
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
        write!(f, "Lane({})", self.id)
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
    fn new(sessions: &Arc<Sessions>, address: Option<String>, dialed: bool) -> Arc<Self> {
        let mut shared =
            Shared { outbox: Outbox::default(), queued: 0, lanes: HashMap::new(), next: 1, theirs: 0, over: false };
        // An address a Hello cannot carry is not named: the other side then
        // dials this process for its own lanes.
        match &sessions.own {
            Some((_, published)) if dialed && (1..=255).contains(&published.len()) => {
                shared.push(Frame::Hello(published.clone()))
            }
            _ => {}
        }
        Arc::new(Session {
            address: Mutex::new(address),
            dialed,
            shared: Mutex::new(shared),
            replies: Arc::default(),
            wake: Notify::new(),
            written: AtomicU64::new(0),
            sessions: Arc::downgrade(sessions),
        })
    }

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

    /// Carries frames until the session fails, or closes.
    async fn run(self: Arc<Self>, read: PeerRead, write: PeerWrite, peer: SocketAddr, peer_timeout: Duration) {
        let ended = tokio::select! {
            read = self.read(read, peer, peer_timeout) => read,
            written = self.write(write, peer_timeout / 3) => written,
        };
        if let (Err(e), false) = (&ended, self.dialed) {
            if let Some(routes) = self.routes() {
                routes.refused(peer, again(e));
            }
        }
        self.end(ended);
    }

    fn routes(&self) -> Option<Arc<dyn Routes>> {
        self.sessions.upgrade()?.local.get()?.upgrade()
    }

    /// Hands what the peer says to this side's lanes, and its lanes to their
    /// mailboxes. `Ok` once the peer closed the session cleanly.
    async fn read(self: &Arc<Self>, read: PeerRead, peer: SocketAddr, silence: Duration) -> Result<(), Error> {
        let max_frame_len = self.sessions.upgrade().map_or(0, |sessions| sessions.max_frame_len);
        let heard = Heard::new();
        let mut frames = FramedRead::new(NoteProgress::new(read, heard.clone()), FrameCodec::new(max_frame_len));
        let mut theirs = TheirLanes::new(self.replies.clone(), peer);
        loop {
            let frame = match next_frame(&mut frames, &heard, silence).await? {
                Some(frame) => frame,
                None => return Err(Error::Peer("closed by the peer")),
            };
            let (lane, event) = match frame {
                Frame::Keepalive => continue,
                Frame::Ack(lane, count) => (lane, LaneEvent::Ack(count)),
                Frame::Closing(lane) => (lane, LaneEvent::Closing),
                Frame::Refused(lane) => (lane, LaneEvent::Refused),
                Frame::Open(lane, dest) => {
                    // A process whose exchange is gone refuses every lane.
                    let routes = self.routes();
                    let ignore = {
                        let mut shared = lock(&self.shared);
                        shared.theirs += usize::from(!shared.over);
                        shared.over
                    };
                    theirs.open(lane, dest, routes.as_deref(), ignore)?;
                    continue;
                }
                Frame::Message(lane, payload) => {
                    theirs.message(lane, payload)?;
                    continue;
                }
                Frame::End(lane) => {
                    if theirs.end(lane) {
                        lock(&self.shared).theirs -= 1;
                        // The writer may close the session now.
                        self.wake.notify_one();
                    }
                    continue;
                }
                Frame::Hello(address) => {
                    if let (false, Some(sessions)) = (self.dialed, self.sessions.upgrade()) {
                        sessions.adopt(address, self);
                    }
                    continue;
                }
                // Nothing more comes: what this side's lanes have not had
                // acknowledged was not taken.
                Frame::Bye => {
                    let lanes: Vec<_> = {
                        let mut shared = lock(&self.shared);
                        shared.over = true;
                        shared.lanes.drain().map(|(_, tx)| tx).collect()
                    };
                    for tx in lanes {
                        let _ = tx.send(LaneEvent::Closing);
                    }
                    return Ok(());
                }
            };
            // A lane that ended hears nothing more.
            if let Some(tx) = lock(&self.shared).lanes.get(&lane) {
                let _ = tx.send(event);
            }
        }
    }

    /// Writes what the lanes queue and what is owed to the peer's lanes, and
    /// keepalives; a dialing side returns once no lane is open on either
    /// side, having said `Bye`.
    async fn write(&self, mut write: PeerWrite, keepalive: Duration) -> Result<(), Error> {
        let mut reported = HashMap::new();
        loop {
            let (outbound, owed) = {
                let mut shared = lock(&self.shared);
                let owed = self.replies.owed_since();
                let outbound = !shared.outbox.is_empty();
                if !outbound && owed.is_none() && self.dialed && shared.lanes.is_empty() && shared.theirs == 0 {
                    // No lane joins a session that closes, on either side.
                    shared.over = true;
                    shared.push(Frame::Bye);
                    break;
                }
                (outbound, owed)
            };
            // What is owed waits for company (and does not ride with this
            // side's frames before then: each acknowledgement read wakes the
            // lane it is for), unless it cannot wait.
            let due = owed.is_some_and(|since| since.elapsed() >= ACK_DELAY || self.replies.urgent());
            if !outbound && !due {
                let until = owed.map(|since| since + ACK_DELAY);
                let wait = until.map_or(keepalive, |until| until.saturating_duration_since(std::time::Instant::now()));
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = self.replies.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {
                        if until.is_none() {
                            lock(&self.shared).push(Frame::Keepalive);
                        }
                    }
                }
                continue;
            }
            let mut batch = {
                let mut shared = lock(&self.shared);
                if due {
                    let owed = self.replies.collect(&mut reported, &mut shared.outbox);
                    shared.queued += owed as u64;
                }
                std::mem::take(&mut shared.outbox)
            };
            while !batch.is_empty() {
                let written = batch.write_to(&mut write).await?;
                self.written.fetch_add(written as u64, Ordering::AcqRel);
            }
        }
        let mut last = std::mem::take(&mut lock(&self.shared).outbox);
        while !last.is_empty() {
            last.write_to(&mut write).await?;
        }
        // A clean end for the peer (TLS sends its close_notify).
        let _ = tokio::time::timeout(keepalive, tokio::io::AsyncWriteExt::shutdown(&mut write)).await;
        Ok(())
    }

    /// The session is over: it leaves the live sessions, and every lane of
    /// this side still on it fails.
    fn end(self: &Arc<Self>, ended: Result<(), Error>) {
        let lanes: Vec<_> = {
            let mut shared = lock(&self.shared);
            shared.over = true;
            shared.lanes.drain().map(|(_, tx)| tx).collect()
        };
        let address = lock(&self.address).clone();
        if let (Some(sessions), Some(address)) = (self.sessions.upgrade(), &address) {
            let mut live = lock(&sessions.live);
            if live.get(address).is_some_and(|live| Arc::ptr_eq(live, self)) {
                live.remove(address);
            }
        }
        match ended {
            Ok(()) => debug!(address = ?address, "session closed"),
            Err(e) => {
                debug!(address = ?address, lanes = lanes.len(), "session failed: {e}");
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
