//! The Redis watcher: one task per exchange takes from the queues of all its
//! open mailboxes, on one connection, and feeds each mailbox a stream of
//! batches.
//!
//! It waits on the exchange's doorbell (`BLPOP ns:bell:<token>`, no
//! timeout, on its own connection whose response timeout is disabled). A
//! sender that pushes onto an empty queue rings the bell of the process that
//! owns the mailbox, with the mailbox's id, in the same script: so a wake-up
//! costs O(1) whatever the number of open mailboxes, and an idle mailbox
//! costs Redis nothing. A rung mailbox (or one opened on a queue that holds
//! entries) is *pending* until a take finds its queue empty; one opened on an
//! empty queue waits for its first ring, and a ring that comes before the
//! watcher has read the new watch is kept for it. Commands reach the task
//! through a channel; while it blocks on the doorbell, the first command
//! rings it (once per wait, so opening 10,000 mailboxes rings it a few
//! times, not 10,000).
//!
//! A take moves a batch from the queue to the mailbox's taken list with
//! plain `LMOVE`s (one pipeline, one round trip, no script: Lua copies large
//! entries slowly) and returns it: until the mailbox's consumer takes an
//! entry and the mailbox acknowledges it, the entry stays in Redis, and a
//! crash of this process loses nothing (the next opening puts the taken list
//! back). Only this process takes from the queues of mailboxes it has open. A mailbox whose stream is full is skipped until it reads again
//! (backpressure); pending mailboxes take turns.
//!
//! Every write this crate makes to a queue rings the process whose opening
//! takes from it (a send to an empty queue, a termination, a takeover by
//! another opening), and the process that terminates one of its own
//! mailboxes looks at it without a ring. Writers that do not ring (an
//! operator's `RPUSH`) and rings lost with a failed Redis are found by a
//! sweep: every [`SWEEP_EVERY`] one script looks at the next
//! [`SWEEP_SLICE`] watched queues in turn, so an idle process costs Redis
//! O(1) commands whatever its number of mailboxes.
//!
//! A take whose reply is lost (Redis failed mid-pipeline) may still have
//! moved entries, if Redis kept them (AOF): before its next take, the
//! mailbox reads back the taken list's tail it never saw ([`RESYNC`]).
//!
//! When an agent's consumer waits and nothing is on its way to its mailbox,
//! the take also claims the first entry it moves ([`CLAIM`], in the same
//! pipeline): a request then runs without an acknowledgement round trip of
//! its own.
//!
//! An answer (which needs no claim) rings with a copy of itself: the
//! watcher hands the copy over at once ([`Watched::Early`]), without waiting
//! for the take of its queue entry (which still makes it durable, and which
//! the mailbox drops as a second copy).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix::Addr;
use futures::Stream;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::mpsc;
use tracing::{error, warn};
use uuid::Uuid;

use super::actor::{Call, ExchangeActor, Request, CLAIM, HAND_BACK, NEEDS_A_LOOK, RESYNC};
use super::keys::Keys;
use super::source::Source;
use super::TakenAcks;
use crate::error::Error;
use crate::identifier::{base32_to_uuid, uuid_to_base32};

/// Most messages taken from one queue in one round trip.
pub(crate) const BATCH: usize = 512;
/// Bytes after which a take stops (one entry may exceed it alone).
const BATCH_BYTES: usize = 8 << 20;
/// Rings of the doorbell read with one take.
const RINGS: usize = 1024;
/// Entries a terminated mailbox is handed at the end, at most.
const LAST: usize = 10_000;
/// Batches a mailbox's stream holds.
const STREAM_CAPACITY: usize = 4;
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long the watcher waits before trying again while Redis is full.
const FULL_PAUSE: Duration = Duration::from_secs(1);
/// How often the sweep looks at the next [`SWEEP_SLICE`] watched queues,
/// rung or not.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Watched queues one sweep looks at.
pub(crate) const SWEEP_SLICE: usize = 16;
/// How long a ring for a mailbox not yet watched is kept for it, and how
/// many such rings at most (past that the sweep finds what they announced).
const EARLY_FOR: Duration = Duration::from_secs(60);
const EARLY_MAX: usize = 65_536;

/// What the watcher saw for one mailbox.
#[derive(Debug)]
pub(crate) enum Watched {
    /// Queue entries, oldest first, now in the mailbox's taken list; the
    /// first is claimed for the consumer at this position, if `claimed`.
    Batch { entries: Vec<Vec<u8>>, claimed: Option<u64> },
    /// A copy of an answer that rang: its queue entry is taken later.
    Early(Vec<u8>),
    /// The mailbox was terminated: its last entries (popped outright), after
    /// which it ends.
    Terminated(Vec<Vec<u8>>),
    /// The mailbox is no longer watched: its stream ends.
    Woken,
    /// Another opening took the mailbox over (a restart elsewhere): this
    /// one ends, and what it took and did not hand out goes back.
    TakenOver,
}

enum Command {
    Watch {
        /// Whether its queue needs a look at once (it holds entries).
        look: bool,
        uid: Uuid,
        opening: Uuid,
        acks: Arc<TakenAcks>,
        id: u64,
        tx: mpsc::Sender<Watched>,
        paused: Arc<AtomicBool>,
    },
    Unwatch {
        uid: Uuid,
        id: u64,
    },
    /// Look at the pending mailboxes again (a paused one has room).
    Rearm,
    /// Look at one mailbox's queue (this process changed it).
    Look(Uuid),
    /// The exchange is closing: end every stream and take nothing more.
    Stop,
}

static NEXT_WATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The handle mailboxes use to be watched.
#[derive(Clone, Debug)]
pub(crate) struct Watcher {
    commands: mpsc::UnboundedSender<Command>,
    /// Set while the task blocks on the doorbell: the first command sent
    /// meanwhile rings it, the others find the task awake.
    blocked: Arc<AtomicBool>,
    bell: Arc<str>,
    actor: Addr<ExchangeActor>,
}

impl Watcher {
    /// Starts the watcher task of one exchange, waiting on its doorbell.
    /// `lost_state` is notified each time it connects again after a failure
    /// (Redis may have restarted and lost the exchange's state).
    pub(crate) fn start(
        source: Source,
        keys: Keys,
        bell: String,
        actor: Addr<ExchangeActor>,
        lost_state: Arc<tokio::sync::Notify>,
    ) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let blocked = Arc::new(AtomicBool::new(false));
        let task = Task {
            stopped: false,
            blocked: blocked.clone(),
            early: HashMap::new(),
            rings_lost: None,
            source,
            keys,
            bell: bell.clone(),
            commands: rx,
            lost_state,
            queues: HashMap::new(),
            pending: VecDeque::new(),
            swept: tokio::time::Instant::now(),
            sweep_order: VecDeque::new(),
            conn: None,
            backoff: Duration::ZERO,
        };
        tokio::spawn(task.run());
        Self { commands, blocked, bell: bell.into(), actor }
    }

    /// Starts watching the queue of mailbox `uid` for its opening `opening`
    /// (superseding an earlier watch of it), looking at it at once if `look`
    /// (it holds entries; an empty one waits for its ring); the stream ends
    /// after [`unwatch`](Self::unwatch) with the returned id.
    pub(crate) fn watch(&self, uid: Uuid, opening: Uuid, acks: Arc<TakenAcks>, look: bool) -> (u64, WatchStream) {
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let paused = Arc::new(AtomicBool::new(false));
        let id = NEXT_WATCH.fetch_add(1, Ordering::Relaxed);
        let _ = self.commands.send(Command::Watch { look, uid, opening, acks, id, tx, paused: paused.clone() });
        // A quiet watch is read whenever the task next wakes: a ring for it
        // before then is kept for it (see `Task::early`).
        if look {
            self.rearm();
        }
        (id, WatchStream { rx, paused, watcher: self.clone() })
    }

    /// Stops watch `id` of `uid`; its stream gets [`Watched::Woken`] and ends.
    pub(crate) fn unwatch(&self, uid: Uuid, id: u64) {
        let _ = self.commands.send(Command::Unwatch { uid, id });
        self.rearm();
    }

    /// Looks at `uid`'s queue soon, rung or not (this process terminated it).
    pub(crate) fn look(&self, uid: Uuid) {
        let _ = self.commands.send(Command::Look(uid));
        self.rearm();
    }

    /// Ends every watch and the task: nothing is taken after this.
    pub(crate) fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
        self.rearm();
    }

    /// Makes the task read its commands: through the channel when it is
    /// busy, through an empty ring of the doorbell when it blocks in Redis
    /// (once per wait, however many commands are sent meanwhile).
    fn rearm(&self) {
        let _ = self.commands.send(Command::Rearm);
        // Pairs with the task's store, then look at the channel.
        std::sync::atomic::fence(Ordering::SeqCst);
        if !self.blocked.swap(false, Ordering::SeqCst) {
            return;
        }
        // With an expiry, so one that lands after the exchange closed (and
        // deleted its bell) does not stay.
        let mut pipe = redis::pipe();
        pipe.cmd("RPUSH").arg(&*self.bell).arg("").ignore();
        pipe.cmd("PEXPIRE").arg(&*self.bell).arg(60_000).ignore();
        self.actor.do_send(Call::<()>::new(Request::Pipeline(pipe)));
    }
}

/// One mailbox's batches. Reading from a paused stream re-arms the watcher.
#[derive(Debug)]
pub(crate) struct WatchStream {
    rx: mpsc::Receiver<Watched>,
    paused: Arc<AtomicBool>,
    watcher: Watcher,
}

impl Stream for WatchStream {
    type Item = Watched;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Watched>> {
        let next = self.rx.poll_recv(cx);
        if next.is_ready() && self.paused.swap(false, Ordering::AcqRel) {
            self.watcher.rearm();
        }
        next
    }
}

struct Registration {
    id: u64,
    opening: Uuid,
    /// Counts what is moved into the opening's taken list.
    acks: Arc<TakenAcks>,
    tx: mpsc::Sender<Watched>,
    paused: Arc<AtomicBool>,
    /// In the pending list: its queue may hold entries.
    pending: bool,
    /// A take's reply was lost: the taken list may hold entries it moved
    /// (and the position it may have claimed, 0 for none).
    resync: Option<u64>,
    /// Entries its queue held at the last take, and their mean size: how
    /// many the next take moves.
    left: usize,
    entry_len: usize,
}

impl Registration {
    /// How many entries the next take moves: what is left, at most
    /// [`BATCH`] and about [`BATCH_BYTES`].
    fn batch(&self) -> usize {
        let by_size = BATCH_BYTES / self.entry_len.max(1);
        self.left.clamp(1, by_size.clamp(1, BATCH))
    }
}

struct Task {
    stopped: bool,
    /// Set before it blocks on the doorbell (see [`Watcher::rearm`]).
    blocked: Arc<AtomicBool>,
    /// Rings for mailboxes not (yet) watched, and when: a mailbox opened
    /// in Redis may be rung before its watch is read, and finds its ring
    /// here. Forgotten after [`EARLY_FOR`].
    early: HashMap<Uuid, tokio::time::Instant>,
    /// When rings were last lost (a failed take or reconnection): a watch
    /// read within [`EARLY_FOR`] of it gets a look, since its ring may be
    /// among them.
    rings_lost: Option<tokio::time::Instant>,
    /// Where Redis is (behind Sentinels, asked again at each reconnection).
    source: Source,
    keys: Keys,
    bell: String,
    lost_state: Arc<tokio::sync::Notify>,
    commands: mpsc::UnboundedReceiver<Command>,
    queues: HashMap<Uuid, Registration>,
    /// Mailboxes whose queue may hold entries, in turn order.
    pending: VecDeque<Uuid>,
    /// When the last sweep ran.
    swept: tokio::time::Instant,
    /// Watches in the order the sweep visits them, by mailbox and watch id
    /// (ended watches are dropped as it reaches them).
    sweep_order: VecDeque<(Uuid, u64)>,
    conn: Option<MultiplexedConnection>,
    backoff: Duration,
}

/// Ends a stream (in the background: its reader may be slow).
fn wake(registration: Registration) {
    tokio::spawn(async move { registration.tx.send(Watched::Woken).await });
}

impl Task {
    async fn run(mut self) {
        loop {
            while let Ok(command) = self.commands.try_recv() {
                self.apply(command);
            }
            if self.stopped {
                return;
            }
            // The sweep is looked at first: a mailbox taken off the pending
            // list must get its take.
            let result = if self.swept.elapsed() >= SWEEP_EVERY {
                self.sweep().await
            } else {
                match self.next_ready() {
                    Some(uid) => self.take(uid).await,
                    None => self.wait_for_ring().await,
                }
            };
            if let Err(e) = result {
                self.fail(e).await;
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Watch { look, uid, opening, acks, id, tx, paused } => {
                let registration =
                    Registration { id, opening, acks, tx, paused, pending: false, resync: None, left: 1, entry_len: 0 };
                if let Some(old) = self.queues.insert(uid, registration) {
                    wake(old);
                }
                self.sweep_order.push_back((uid, id));
                let rings_lost = self.rings_lost.is_some_and(|at| at.elapsed() < EARLY_FOR);
                if self.early.remove(&uid).is_some() || look || rings_lost {
                    self.mark_pending(uid);
                }
            }
            Command::Unwatch { uid, id } => {
                if self.queues.get(&uid).is_some_and(|r| r.id == id) {
                    if let Some(registration) = self.queues.remove(&uid) {
                        wake(registration);
                    }
                }
            }
            Command::Rearm => {}
            Command::Look(uid) => self.mark_pending(uid),
            Command::Stop => {
                self.stopped = true;
                self.pending.clear();
                for (_, registration) in self.queues.drain() {
                    wake(registration);
                }
            }
        }
    }

    /// Every watched queue gets a look (rings may have been lost).
    fn mark_all_pending(&mut self) {
        // A watch not read yet may have lost its ring too.
        self.rings_lost = Some(tokio::time::Instant::now());
        let all: Vec<Uuid> = self.queues.keys().copied().collect();
        for uid in all {
            self.mark_pending(uid);
        }
    }

    fn mark_pending(&mut self, uid: Uuid) {
        if let Some(registration) = self.queues.get_mut(&uid) {
            if !registration.pending {
                registration.pending = true;
                self.pending.push_back(uid);
            }
        }
    }

    /// The first pending mailbox whose stream has room; full ones are marked
    /// paused (reading re-arms the watcher) and keep their turn.
    fn next_ready(&mut self) -> Option<Uuid> {
        for _ in 0..self.pending.len() {
            let uid = self.pending.pop_front()?;
            let Some(registration) = self.queues.get_mut(&uid) else { continue };
            if registration.tx.capacity() > 0 {
                registration.pending = false;
                return Some(uid);
            }
            registration.paused.store(true, Ordering::Release);
            self.pending.push_back(uid);
        }
        None
    }

    async fn connection(&mut self) -> Result<&mut MultiplexedConnection, Error> {
        if self.conn.is_none() {
            if !self.backoff.is_zero() {
                tokio::time::sleep(self.backoff).await;
            }
            let config = AsyncConnectionConfig::new()
                .set_response_timeout(None)
                .set_connection_timeout(Some(Duration::from_secs(1)));
            let client = self.source.client().await?;
            let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
            // Takes run it in their pipelines, by hash only.
            CLAIM.prepare_invoke().load_async(&mut conn).await?;
            if !self.backoff.is_zero() {
                // Redis may have restarted empty: the exchange re-registers,
                // and rings may have been lost, so every queue gets a look.
                self.lost_state.notify_one();
                self.backoff = Duration::ZERO;
                self.mark_all_pending();
            }
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Marks pending those of the next [`SWEEP_SLICE`] watched queues that
    /// hold anything or lost their opening. In the common case (all empty,
    /// all openings recorded) that is two commands in one round trip, an
    /// `EXISTS` of the queues and one of the takers (Redis deletes an empty
    /// list); otherwise a script looks at each.
    async fn sweep(&mut self) -> Result<(), Error> {
        self.swept = tokio::time::Instant::now();
        self.early.retain(|_, at| at.elapsed() < EARLY_FOR);
        let mut script = NEEDS_A_LOOK.prepare_invoke();
        script.arg(self.keys.namespace());
        let (mut queues, mut takers) = (redis::cmd("EXISTS"), redis::cmd("EXISTS"));
        let mut looked = 0;
        for _ in 0..self.sweep_order.len() {
            if looked == SWEEP_SLICE {
                break;
            }
            let Some((uid, id)) = self.sweep_order.pop_front() else { break };
            let Some(registration) = self.queues.get(&uid).filter(|r| r.id == id) else { continue };
            script.arg(uuid_to_base32(uid)).arg(registration.opening.to_string());
            queues.arg(self.keys.queue(uid));
            takers.arg(self.keys.taker(uid));
            self.sweep_order.push_back((uid, id));
            looked += 1;
        }
        if looked == 0 {
            return Ok(());
        }
        let conn = self.connection().await?;
        let (held, recorded): (usize, usize) =
            redis::pipe().add_command(queues).add_command(takers).query_async(conn).await?;
        // A recorded opening that is another's is not looked for here: a
        // takeover rings this process in the script that records it (so
        // Redis keeps both or neither), and a reconnection looks at every
        // queue.
        if held == 0 && recorded == looked {
            return Ok(());
        }
        let found: Vec<String> = script.invoke_async(conn).await?;
        for ring in found {
            self.rung(ring.as_bytes(), None);
        }
        Ok(())
    }

    /// Blocks on the doorbell until a queue (or a command) needs a look, or
    /// the next sweep is due.
    async fn wait_for_ring(&mut self) -> Result<(), Error> {
        let bell = self.bell.clone();
        let wait = SWEEP_EVERY.saturating_sub(self.swept.elapsed()).as_secs_f64().max(0.01);
        self.connection().await?;
        // From here a command rings the bell; one sent before is read now.
        self.blocked.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if !self.commands.is_empty() {
            self.blocked.store(false, Ordering::SeqCst);
            return Ok(());
        }
        let conn = self.conn.as_mut().expect("connected above");
        let rung: Result<Option<(String, Vec<u8>)>, _> =
            redis::cmd("BLPOP").arg(&bell).arg(wait).query_async(conn).await;
        self.blocked.store(false, Ordering::SeqCst);
        if let Some((_, ring)) = rung? {
            // A watch sent before the ring was rung is known first.
            while let Ok(command) = self.commands.try_recv() {
                self.apply(command);
            }
            self.rung(&ring, None);
        }
        Ok(())
    }

    /// A ring: a mailbox's id, then a copy of the entry that rang (if any),
    /// read while taking from `taking`'s queue (whose batch the copy must
    /// not overtake: it is taken as usual).
    fn rung(&mut self, ring: &[u8], taking: Option<Uuid>) {
        let (id, copy) = match ring.iter().position(|&b| b == b':') {
            Some(at) => (&ring[..at], Some(&ring[at + 1..])),
            None => (ring, None),
        };
        // An empty ring only wakes the task (see `Watcher::rearm`).
        let Some(uid) = std::str::from_utf8(id).ok().and_then(|id| base32_to_uuid(id).ok()) else { return };
        match self.queues.get(&uid) {
            Some(registration) => {
                // Handed over now if its stream has room; its queued entry
                // is taken as usual.
                if let Some(copy) = copy.filter(|_| taking != Some(uid)) {
                    let _ = registration.tx.try_send(Watched::Early(copy.to_vec()));
                }
                self.mark_pending(uid);
            }
            None => {
                let now = tokio::time::Instant::now();
                if self.early.len() >= EARLY_MAX {
                    self.early.retain(|_, at| now.duration_since(*at) < EARLY_FOR);
                }
                if self.early.len() < EARLY_MAX {
                    self.early.insert(uid, now);
                }
            }
        }
    }

    /// Takes a batch from `uid`'s queue (and reads the doorbell meanwhile).
    async fn take(&mut self, uid: Uuid) -> Result<(), Error> {
        let Some((count, opening, resync, claim)) =
            self.queues.get(&uid).map(|r| (r.batch(), r.opening, r.resync, r.acks.claimable()))
        else {
            return Ok(());
        };
        let (queue, taken) = (self.keys.queue(uid), self.keys.taken(uid, opening));
        if let Some(claim) = resync {
            return self.resync(uid, opening, &taken, claim).await;
        }
        // Who takes from this queue is read after the moves: a new opening
        // that started before the read is seen (and what was moved goes
        // back to it), one that starts after it restores this list itself.
        // A consumer that waits gets the first entry claimed in the same
        // step (no round trip of its own before it runs a request).
        let mut pipe = redis::pipe();
        pipe.cmd("LPOP").arg(&self.bell).arg(RINGS);
        for _ in 0..count {
            pipe.cmd("LMOVE").arg(&queue).arg(&taken).arg("LEFT").arg("RIGHT");
        }
        match claim {
            Some(position) => {
                let mut script = CLAIM.prepare_invoke();
                script.key(self.keys.taker(uid)).key(&taken).arg(opening.to_string()).arg(position);
                pipe.invoke_script(&script)
            }
            None => pipe.cmd("HGET").arg(self.keys.taker(uid)).arg("opening"),
        };
        pipe.cmd("GET").arg(self.keys.status(uid));
        pipe.cmd("LLEN").arg(&queue);
        let conn = self.connection().await?;
        let mut replies: Vec<redis::Value> = match pipe.query_async(conn).await {
            Ok(replies) => replies,
            Err(e) => {
                // Its turn comes again once Redis answers, after a look at
                // what this take may have moved.
                if let Some(registration) = self.queues.get_mut(&uid) {
                    registration.resync = Some(claim.unwrap_or(0));
                }
                self.mark_pending(uid);
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) {
                    // Redis forgot the script (SCRIPT FLUSH): the moves ran,
                    // the claim did not; load it and look again.
                    let conn = self.connection().await?;
                    CLAIM.prepare_invoke().load_async(conn).await?;
                    // The rings it read went with its reply.
                    self.mark_all_pending();
                    return Ok(());
                }
                return Err(e.into());
            }
        };
        fn parse<T: redis::FromRedisValue>(value: Option<redis::Value>) -> Result<T, Error> {
            Ok(redis::from_redis_value(value.unwrap_or(redis::Value::Nil)).map_err(redis::RedisError::from)?)
        }
        let left: usize = parse(replies.pop())?;
        let status: Option<String> = parse(replies.pop())?;
        let (taker, claimed): (Option<String>, bool) = match claim {
            Some(_) => parse::<(Option<String>, bool)>(replies.pop())?,
            None => (parse(replies.pop())?, false),
        };
        let claimed = claim.filter(|_| claimed);
        let mut replies = replies.into_iter();
        let rings: Option<Vec<Vec<u8>>> = parse(replies.next())?;
        // An LMOVE from an empty queue answers nil (not an empty entry).
        let entries: Vec<Vec<u8>> =
            replies.filter(|v| !matches!(v, redis::Value::Nil)).map(|v| parse(Some(v))).collect::<Result<_, _>>()?;
        for ring in rings.unwrap_or_default() {
            self.rung(&ring, Some(uid));
        }
        let mut entries = entries;
        if taker.is_some_and(|taker| taker != opening.to_string()) {
            // Another opening serves the mailbox: what this take moved goes
            // back to the front of the queue, for it, and this one ends.
            if !entries.is_empty() {
                let mut back = HAND_BACK.prepare_invoke();
                back.arg(self.keys.namespace()).arg(0).arg(uuid_to_base32(uid)).arg(opening.to_string());
                back.arg(entries.len());
                let conn = self.connection().await?;
                back.invoke_async::<()>(conn).await?;
            }
            if let Some(registration) = self.queues.get(&uid) {
                let _ = registration.tx.try_send(Watched::TakenOver);
            }
            return Ok(());
        }
        let terminated = status.as_deref() == Some("INACTIVE");
        if terminated {
            // Terminated: what is left (up to LAST entries; the rest expires
            // with the queue) is delivered now, to be refused; nothing is
            // kept for it.
            let conn = self.connection().await?;
            let (rest,): (Vec<Vec<u8>>,) = redis::pipe()
                .cmd("LRANGE")
                .arg(&queue)
                .arg(0)
                .arg(LAST - 1)
                .cmd("LTRIM")
                .arg(&queue)
                .arg(LAST)
                .arg(-1)
                .ignore()
                .cmd("DEL")
                .arg(&taken)
                .ignore()
                .query_async(conn)
                .await?;
            entries.extend(rest);
        }
        let Some(registration) = self.queues.get_mut(&uid) else {
            // Closed meanwhile: what was taken waits in its taken list,
            // which the closing mailbox puts back.
            return Ok(());
        };
        registration.left = left;
        registration.acks.moved(entries.len());
        if !entries.is_empty() {
            registration.entry_len = entries.iter().map(Vec::len).sum::<usize>() / entries.len();
        }
        let watched = match terminated {
            true => Watched::Terminated(entries),
            false if entries.is_empty() => return Ok(()),
            false => Watched::Batch { entries, claimed },
        };
        // The stream had room (only this task sends to it before unwatch).
        let _ = registration.tx.try_send(watched);
        if !terminated && left > 0 {
            self.mark_pending(uid);
        }
        Ok(())
    }

    /// Hands the mailbox what a take whose reply was lost moved into its
    /// taken list (see [`RESYNC`]); its next turn takes as usual.
    async fn resync(&mut self, uid: Uuid, opening: Uuid, taken: &str, claim: u64) -> Result<(), Error> {
        let Some(moved) = self.queues.get(&uid).map(|r| r.acks.moved_so_far()) else { return Ok(()) };
        let mut script = RESYNC.prepare_invoke();
        script.key(self.keys.taker(uid)).key(taken).arg(opening.to_string()).arg(moved).arg(claim);
        let conn = self.connection().await?;
        let orphans: Vec<Vec<u8>> = match script.invoke_async(conn).await {
            Ok(orphans) => orphans,
            Err(e) => {
                self.mark_pending(uid);
                return Err(e.into());
            }
        };
        let Some(registration) = self.queues.get_mut(&uid) else { return Ok(()) };
        registration.resync = None;
        if !orphans.is_empty() {
            tracing::info!(entries = orphans.len(), "a take whose reply Redis lost had moved entries: delivering them");
            registration.acks.moved(orphans.len());
            // The stream had room (next_ready checked).
            let _ = registration.tx.try_send(Watched::Batch { entries: orphans, claimed: None });
        }
        self.mark_pending(uid);
        Ok(())
    }

    async fn fail(&mut self, error: Error) {
        if let Error::RedisFull(_) = error {
            // Redis is up and lost nothing; it refuses writes until memory
            // frees: retry on the same connection, without re-registering.
            warn!(mailboxes = self.queues.len(), "Redis is full; the watcher retries in {FULL_PAUSE:?}: {error}");
            return tokio::time::sleep(FULL_PAUSE).await;
        }
        error!(mailboxes = self.queues.len(), "redis watcher failed, retrying: {error}");
        self.conn = None;
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF);
    }
}
