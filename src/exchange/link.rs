//! Outbound links: one task per destination mailbox that listens, so one
//! sender's messages keep their order. The task owns a lane of the
//! [session](crate::peer::session) to the mailbox's process (one connection
//! per peer process, however many of its mailboxes this process sends to; in
//! memory when the mailbox is served by this very exchange). Messages are
//! queued in batches and kept until the receiver acknowledges taking them.
//! When the lane fails (refused or timed-out connect, failed handshake,
//! reset, silent peer, a mailbox that takes nothing), everything
//! unacknowledged or still waiting goes to the Redis queue, in order.
//!
//! A failed link leaves the cache first, so new sends take the slow path
//! (and see errors, such as Redis being down or the mailbox terminated,
//! themselves); what it already holds it keeps pushing to Redis, retrying
//! while Redis is down.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix::Addr;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, error, warn};
use uuid::Uuid;

use super::actor::{Call, ExchangeActor, Request, PUSHED, SEND};
use super::keys::Keys;
use super::{Bad, Reports, Seal, WhenInactive};
use crate::error::{Error, Rejection};
use crate::identifier::EntityId;
use crate::message::Parts;
use crate::peer::{LaneEvent, Sessions};

/// Messages a link buffers before `send` waits for room.
const LINK_CAPACITY: usize = 4096;
/// Bytes queued at once, when many messages are waiting.
const MAX_BATCH_BYTES: usize = 256 << 10;
/// Messages in flight (queued, not yet acknowledged) on one lane.
const WINDOW: usize = 4096;
/// Bytes in flight on one lane (one message may exceed it alone).
const WINDOW_BYTES: usize = 64 << 20;
/// Messages per Redis round trip (well under Lua's argument limit).
const QUEUE_BATCH: usize = 1000;
/// A link with nothing to send or confirm for this long (or ten peer
/// timeouts, if longer) closes; the next message opens another.
const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// How long held messages are retried while Redis is unreachable.
const REDIS_PATIENCE: Duration = Duration::from_secs(60);

static NEXT_LINK: AtomicU64 = AtomicU64::new(0);

/// The live links of one exchange, by destination UUID.
pub(crate) type Links = Mutex<HashMap<Uuid, Arc<Link>>>;

/// How long a peer that refused our handshake is not tried again.
pub(crate) const REFUSED_FOR: Duration = Duration::from_secs(30);

/// What every link of an exchange shares.
#[derive(Debug)]
pub(crate) struct LinkEnv {
    /// Addresses (and mailboxes) that refused our handshake (another secret
    /// or protocol version), when, and why if they said: messages to them
    /// go through Redis.
    pub(crate) refused: Mutex<HashMap<String, (Instant, Option<Rejection>)>>,
    /// Counts refusals, so calls waiting on a refused agent look at once.
    pub(crate) refusals: tokio::sync::watch::Sender<u64>,
    /// The sessions to peer processes the links' lanes run on.
    pub(crate) sessions: Arc<Sessions>,
    /// Seals what goes through the queues (and opens what comes back).
    pub(crate) seal: Seal,
    pub(crate) reports: Reports,
    /// How long Redis keeps what belongs to a gone entity.
    pub(crate) expiry: Duration,
    pub(crate) keys: Keys,
    pub(crate) actor: Addr<ExchangeActor>,
    pub(crate) links: Weak<Links>,
}

/// The sending end of a link to one mailbox.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    id: u64,
    /// The mailbox's listener.
    pub(crate) address: String,
    tx: mpsc::Sender<Parts>,
}

impl Link {
    /// Starts a link task to `dest`, listening at `address` in `opening`.
    pub(crate) fn spawn(
        dest: EntityId,
        address: String,
        opening: Option<Uuid>,
        env: Arc<LinkEnv>,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Link {
        let (tx, rx) = mpsc::channel(LINK_CAPACITY);
        let link = Link { id: NEXT_LINK.fetch_add(1, Ordering::Relaxed), address, tx };
        let task = LinkTask { id: link.id, dest, address: link.address.clone(), opening, env };
        tasks.spawn(task.run(rx));
        link
    }

    /// Hands a frame to the link; gives it back if the link has retired.
    pub(crate) async fn send(&self, frame: Parts) -> Result<(), Parts> {
        self.tx.send(frame).await.map_err(|e| e.0)
    }

    /// [`send`](Self::send) without waiting: gives the frame back if the
    /// link is full or has retired.
    pub(crate) fn try_send(&self, frame: Parts) -> Result<(), Parts> {
        self.tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(frame) | mpsc::error::TrySendError::Closed(frame) => frame,
        })
    }
}

/// Whether the mailbox `dest` at `address` refused a handshake within
/// [`REFUSED_FOR`], or the process there said lately that it does not
/// serve this opening of it.
pub(crate) fn refused_recently(env: &LinkEnv, address: &str, dest: &EntityId, opening: Option<Uuid>) -> bool {
    let mut refused = env.refused.lock().unwrap_or_else(|e| e.into_inner());
    refused.retain(|_, (at, why)| {
        at.elapsed() < if *why == Some(Rejection::Destination) { NOT_HERE_FOR } else { REFUSED_FOR }
    });
    refused.contains_key(&refusal_key(address, dest)) || refused.contains_key(&not_here_key(address, dest, opening))
}

/// How long a process that does not serve an opening is not dialed for it
/// again (an address left in Redis by a mailbox that closed uncleanly).
const NOT_HERE_FOR: Duration = Duration::from_secs(5);

/// "Not served here" is remembered per opening: a mailbox opened again at
/// the same address (a new opening) is dialed at once.
fn not_here_key(address: &str, dest: &EntityId, opening: Option<Uuid>) -> String {
    let opening = opening.map_or_else(|| "-".to_owned(), |o| o.to_string());
    format!("{address} {} {opening}", dest.uid())
}

/// A recent refusal by `dest` that Redis cannot route around: the two ends
/// do not share the secret (a sealed queue entry is refused too), or speak
/// another protocol version. Calls to it fail with this at once.
pub(crate) fn fatal_refusal(env: &LinkEnv, dest: &EntityId) -> Option<Rejection> {
    let refused = env.refused.lock().unwrap_or_else(|e| e.into_inner());
    // Asked after every call's send: nothing to build when nobody refused.
    if refused.is_empty() {
        return None;
    }
    let suffix = format!(" {}", dest.uid());
    refused
        .iter()
        .filter(|(key, (at, _))| key.ends_with(&suffix) && at.elapsed() < REFUSED_FOR)
        .find_map(|(_, (_, why))| why.filter(|why| matches!(why, Rejection::Secret | Rejection::Version(_))))
}

/// Forgets every refusal by `dest`: it listens elsewhere now, or accepted
/// this process.
pub(crate) fn forget_refusals(env: &LinkEnv, dest: &EntityId) {
    let suffix = format!(" {}", dest.uid());
    env.refused.lock().unwrap_or_else(|e| e.into_inner()).retain(|key, _| !key.ends_with(&suffix));
}

/// Refusals are remembered per address and destination: after a crash,
/// another mailbox may listen at a stale address, and it is not refused.
fn refusal_key(address: &str, dest: &EntityId) -> String {
    format!("{address} {}", dest.uid())
}

/// What [`enqueue`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// Nothing: asked only to route, the mailbox listens at this address
    /// (in the opening named, if Redis records it).
    Listening(String, Option<Uuid>),
    /// Pushed onto the queue.
    Pushed,
}

/// Bytes past which entries are pushed with a plain `RPUSH` rather than
/// through a script (Lua copies large arguments slowly).
const LARGE: usize = 64 << 10;

/// How a push onto an empty queue rings the watcher that reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ring {
    /// With the mailbox's id: the watcher takes from the queue.
    Plain,
    /// With a copy of the one entry pushed, too (an answer, which needs no
    /// claim): the watcher hands it over at once, and the queued entry,
    /// taken as usual, is dropped as a second copy.
    WithCopy,
}

/// Entries up to this size ride with their ring ([`Ring::WithCopy`]).
const COPY_MAX: usize = 16 << 10;

/// In one Redis round trip: checks the destination's status and either
/// pushes `frames` onto its queue or (with `route_only_if_offline`, when the
/// mailbox listens) returns its address instead. Large frames take two: a
/// check, then a transaction of a plain push and a second check. A push
/// onto an empty queue rings its watcher as `ring` says.
pub(crate) async fn enqueue(
    env: &LinkEnv,
    dest: &EntityId,
    frames: &[Parts],
    route_only_if_offline: bool,
    when_inactive: WhenInactive,
    ring: Ring,
) -> Result<Enqueued, Error> {
    // Sealed only when they may be pushed (a large frame routed to a peer
    // is not hashed for nothing).
    let sealed = || frames.iter().map(|frame| env.seal.seal(dest.uid(), frame)).collect::<Vec<Parts>>();
    let large = frames.iter().map(Parts::len).sum::<usize>() > LARGE;
    let mut script = SEND.prepare_invoke();
    let mode = if route_only_if_offline { "route" } else { "push" };
    let policy = match when_inactive {
        WhenInactive::Fail => "fail",
        WhenInactive::Queue => "queue",
    };
    script.arg(env.keys.namespace()).arg(env.expiry.as_millis() as u64).arg(dest.base32()).arg(mode).arg(policy);
    script.arg(match ring {
        Ring::WithCopy if frames.len() == 1 && frames[0].len() <= COPY_MAX => "copy",
        _ => "",
    });
    if !large {
        for frame in sealed() {
            script.arg(frame);
        }
    }
    let reply: redis::Value =
        env.actor.send(Call::new(Request::Script(script))).await.map_err(|_| Error::ExchangeClosed)??;
    let reply = match reply {
        redis::Value::Int(state) if large && state >= 0 => {
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("RPUSH").arg(env.keys.queue(dest.uid())).arg(sealed()).ignore();
            pipe.cmd("EVAL")
                .arg(&**PUSHED)
                .arg(0)
                .arg(env.keys.namespace())
                .arg(env.expiry.as_millis() as u64)
                .arg(dest.base32())
                .arg(policy)
                .arg(frames.len());
            let (reply,): (redis::Value,) =
                env.actor.send(Call::new(Request::Pipeline(pipe))).await.map_err(|_| Error::ExchangeClosed)??;
            reply
        }
        reply => reply,
    };
    match reply {
        redis::Value::Int(-1) => Err(Error::BadEntityId(dest.clone())),
        redis::Value::Int(-2) => Err(Error::MailboxClosed(dest.clone())),
        redis::Value::Int(-3) => Err(Error::Inactive(dest.clone())),
        redis::Value::Int(_) => Ok(Enqueued::Pushed),
        redis::Value::Array(parts) => {
            let (address, opening): (String, String) =
                redis::from_redis_value(redis::Value::Array(parts)).map_err(redis::RedisError::from)?;
            Ok(Enqueued::Listening(address, opening.parse().ok()))
        }
        other => Err(Error::UnexpectedReply(format!("from the send script: {other:?}"))),
    }
}

struct LinkTask {
    id: u64,
    dest: EntityId,
    address: String,
    /// The mailbox opening the address belongs to, if Redis said.
    opening: Option<Uuid>,
    env: Arc<LinkEnv>,
}

impl LinkTask {
    #[tracing::instrument(name = "link", skip_all, fields(dest = %self.dest, address = %self.address))]
    async fn run(self, mut rx: mpsc::Receiver<Parts>) {
        let mut held = VecDeque::new();
        let address = &self.address;
        let mut said_closing = false;
        match self.serve(address, &mut rx, &mut held, &mut said_closing).await {
            Ok(()) => debug!("link closed"),
            // The process there no longer serves this mailbox (it closed,
            // or moved): not a misconfiguration, so not held against the
            // mailbox; only that opening at that address is skipped a while.
            Err(Error::Rejected(Rejection::Destination)) => {
                debug!(held = held.len(), "the mailbox is not served there any more; messages go through Redis");
                let key = not_here_key(address, &self.dest, self.opening);
                let mut refused = self.env.refused.lock().unwrap_or_else(|e| e.into_inner());
                refused.insert(key, (Instant::now(), Some(Rejection::Destination)));
                metrics::counter!("academy_link_failures_total", "cause" => "gone").increment(1);
            }
            Err(e @ (Error::Rejected(_) | Error::Handshake(_))) => {
                let why = if let Error::Rejected(why) = &e { Some(*why) } else { None };
                let mut refused = self.env.refused.lock().unwrap_or_else(|e| e.into_inner());
                refused.insert(refusal_key(address, &self.dest), (Instant::now(), why));
                drop(refused);
                self.env.refusals.send_modify(|n| *n += 1);
                let host = address.rsplit_once(':').map_or(address.as_str(), |(host, _)| host);
                self.env.reports.rejected(host, false, e);
                metrics::counter!("academy_link_failures_total", "cause" => "refused").increment(1);
            }
            // It closed on purpose (its agent stopped): not a failure.
            Err(e) if said_closing => {
                debug!(held = held.len(), "the mailbox closed ({e}); the rest goes through Redis")
            }
            // Nobody listens there any more: the mailbox closed or its process is gone.
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                debug!(held = held.len(), "connection refused: the mailbox is gone; messages go through Redis");
                metrics::counter!("academy_link_failures_total", "cause" => "gone").increment(1);
            }
            Err(e) => {
                let what = format_args!("{address} ({}): {e}; {} messages re-routed", self.dest, held.len());
                self.env.reports.bad(Bad::Link, what);
                let cause = match e {
                    Error::Timeout(_) => "timeout",
                    Error::Io(_) => "io",
                    _ => "protocol",
                };
                metrics::counter!("academy_link_failures_total", "cause" => cause).increment(1);
            }
        }
        // Written but unacknowledged: unless the mailbox said it was closing
        // (so it took none of them), its process may have taken some before
        // it died. They are re-sent marked, so that another opening does not
        // run a request twice.
        if !said_closing {
            if let Some(opening) = self.opening {
                for frame in held.iter_mut() {
                    crate::message::mark_resent(frame, opening);
                }
            }
        }
        self.retire(&mut rx, &mut held);
        self.push_to_redis(held).await;
    }

    /// Leaves the cache, then refuses new frames and takes what is waiting:
    /// a sender that finds the channel closed takes the slow path.
    fn retire(&self, rx: &mut mpsc::Receiver<Parts>, held: &mut VecDeque<Parts>) {
        self.uncache();
        rx.close();
        while let Ok(frame) = rx.try_recv() {
            held.push_back(frame);
        }
    }

    /// Leaves the cache: new sends take the slow path.
    fn uncache(&self) {
        if let Some(links) = self.env.links.upgrade() {
            let mut links = links.lock().unwrap_or_else(|e| e.into_inner());
            if links.get(&self.dest.uid()).is_some_and(|l| l.id == self.id) {
                links.remove(&self.dest.uid());
            }
        }
    }

    /// Runs the lane until the channel closes (then waits, at most the peer
    /// timeout, for the last acknowledgements) or the lane fails. What the
    /// peer has not acknowledged stays in `unacked`.
    ///
    /// Nothing here waits for the socket: the session writes. Callers wait
    /// only while the window of unacknowledged messages is full, and a window
    /// full for the peer timeout, every byte of it written, with no
    /// acknowledgement fails the lane, as a silent peer fails its session.
    async fn serve(
        &self,
        address: &str,
        rx: &mut mpsc::Receiver<Parts>,
        unacked: &mut VecDeque<Parts>,
        said_closing: &mut bool,
    ) -> Result<(), Error> {
        let env = &self.env;
        let mut lane = env.sessions.lane(address, self.dest.uid());
        let (mut acked, mut sent, mut unacked_bytes) = (0u64, 0u64, 0usize);
        let mut last_sent = Instant::now();
        let mut tick = tokio::time::interval(env.sessions.peer_timeout / 6);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut closing: Option<Instant> = None;
        // Since when the window has been full, all of it written, with no
        // acknowledgement.
        let mut stalled_since: Option<Instant> = None;
        let mut batch = Vec::new();
        loop {
            if closing.is_some() && unacked.is_empty() {
                // The lane ends when it is dropped.
                return Ok(());
            }
            let room = unacked.len() < WINDOW && unacked_bytes < WINDOW_BYTES;
            tokio::select! {
                biased;
                event = lane.event() => match event {
                    LaneEvent::Ack(count) => {
                        if count < acked || count > sent {
                            return Err(Error::Peer("acknowledgement out of range"));
                        }
                        if acked == 0 {
                            // It accepts us now: earlier refusals (another
                            // address, another process) no longer fail calls to it.
                            forget_refusals(env, &self.dest);
                        }
                        for frame in unacked.drain(..(count - acked) as usize) {
                            unacked_bytes -= frame.len();
                        }
                        acked = count;
                        stalled_since = None;
                    }
                    // What it did not acknowledge it did not take.
                    LaneEvent::Closing => {
                        *said_closing = true;
                        return match unacked.is_empty() {
                            true => Ok(()),
                            false => Err(Error::Peer("closed by the mailbox")),
                        };
                    }
                    LaneEvent::Refused => {
                        *said_closing = true;
                        return Err(Rejection::Destination.into());
                    }
                    LaneEvent::Failed(e) => return Err(e),
                },
                frame = rx.recv(), if closing.is_none() && room => {
                    let Some(frame) = frame else {
                        closing = Some(Instant::now());
                        continue;
                    };
                    let mut next = Some(frame);
                    let mut bytes = 0;
                    while let Some(frame) = next.take() {
                        unacked_bytes += frame.len();
                        bytes += frame.len();
                        batch.push(frame);
                        sent += 1;
                        if unacked.len() + batch.len() < WINDOW && unacked_bytes < WINDOW_BYTES && bytes < MAX_BATCH_BYTES {
                            next = rx.try_recv().ok();
                        }
                    }
                    lane.push(&batch);
                    unacked.extend(batch.drain(..));
                    last_sent = Instant::now();
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    // Idle: it leaves the cache, so no sender is left with a
                    // link about to close; one that raced in is still sent.
                    let idle = unacked.is_empty() && closing.is_none();
                    if idle && now.duration_since(last_sent) > IDLE_CLOSE.max(env.sessions.peer_timeout * 10) {
                        self.uncache();
                        closing = Some(now);
                        continue;
                    }
                    // Alive but taking nothing: its messages wait in Redis
                    // instead of blocking every caller. Bytes still leaving
                    // (a large message on a slow network) are no stall.
                    stalled_since = match room || !lane.flushed() {
                        true => None,
                        false => stalled_since.or(Some(now)),
                    };
                    if stalled_since.is_some_and(|since| now.duration_since(since) > env.sessions.peer_timeout) {
                        return Err(Error::Peer("the mailbox took nothing for the peer timeout"));
                    }
                    if closing.is_some_and(|since| now.duration_since(since) > env.sessions.peer_timeout) {
                        return Err(Error::Peer("not acknowledged within the peer timeout of a close"));
                    }
                }
            }
        }
    }

    /// Pushes what the link held onto the destination's queue, in batches,
    /// retrying while Redis is unreachable. These messages were accepted,
    /// so they are queued even for an inactive mailbox.
    async fn push_to_redis(&self, mut held: VecDeque<Parts>) {
        let mut failing_since: Option<Instant> = None;
        while !held.is_empty() {
            let count = held.len().min(QUEUE_BATCH);
            let batch: Vec<Parts> = held.iter().take(count).cloned().collect();
            match enqueue(&self.env, &self.dest, &batch, false, WhenInactive::Queue, Ring::Plain).await {
                Ok(_) => {
                    metrics::counter!("academy_messages_rerouted_total").increment(count as u64);
                    held.drain(..count);
                    failing_since = None;
                }
                Err(e @ (Error::BadEntityId(_) | Error::MailboxClosed(_))) => {
                    lost(held.len(), "terminated");
                    return error!(lost = held.len(), "messages accepted for a mailbox that was then terminated: {e}");
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > REDIS_PATIENCE || matches!(e, Error::ExchangeClosed) {
                        let cause = match e {
                            Error::ExchangeClosed => "closed",
                            Error::RedisFull(_) => "redis_full",
                            _ => "redis_unreachable",
                        };
                        lost(held.len(), cause);
                        return error!(lost = held.len(), "could not hand undelivered messages to Redis: {e}");
                    }
                    warn!(held = held.len(), "Redis unreachable, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Counts messages `send` accepted that are dropped: their mailbox was
/// terminated, or neither the peer nor Redis took them in time.
fn lost(count: usize, cause: &'static str) {
    metrics::counter!("academy_messages_lost_total", "cause" => cause).increment(count as u64);
}
