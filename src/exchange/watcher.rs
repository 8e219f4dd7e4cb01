//! The Redis watcher: one task per exchange pops the queues of all its open
//! mailboxes, on one connection, and feeds each mailbox a stream of batches.
//!
//! It blocks (`BLPOP` over every watched queue plus a control key, no
//! timeout) on its own connection, whose response timeout is disabled, so
//! idle mailboxes cost Redis nothing and 1,000 mailboxes cost one connection.
//! When a queue yields, it takes up to a batch more with `LPOP key count`.
//! Opening or closing a mailbox pushes the control key to re-arm the pop.
//! A mailbox whose stream is full is left out of the pop until it reads
//! again (backpressure), and the key order rotates so no queue starves.
//! Failures are logged and retried with backoff on a fresh connection.

use std::collections::HashMap;
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
use tracing::error;

use super::actor::{Call, ExchangeActor, Request};
use crate::error::Error;

/// Most messages taken from one queue in one round trip.
pub(crate) const BATCH: usize = 512;
/// Batches a mailbox's stream holds; a queue is left out of the pop unless
/// its stream has room for the two batches one pop yields.
const STREAM_CAPACITY: usize = 4;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the watcher saw for one mailbox.
#[derive(Debug)]
pub(crate) enum Watched {
    /// Raw queue entries, oldest first.
    Batch(Vec<Vec<u8>>),
    /// The mailbox is no longer watched: its stream ends.
    Woken,
}

enum Command {
    Watch {
        queue: String,
        id: u64,
        tx: mpsc::Sender<Watched>,
        paused: Arc<AtomicBool>,
    },
    Unwatch {
        queue: String,
        id: u64,
    },
    /// Look at the watched set again (a paused mailbox has room).
    Rearm,
    /// The exchange is closing: end every stream and pop nothing more.
    Stop,
}

static NEXT_WATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The handle mailboxes use to be watched.
#[derive(Clone, Debug)]
pub(crate) struct Watcher {
    commands: mpsc::UnboundedSender<Command>,
    control: Arc<str>,
    actor: Addr<ExchangeActor>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Watch { queue, .. } => write!(f, "Watch({queue})"),
            Command::Unwatch { queue, .. } => write!(f, "Unwatch({queue})"),
            Command::Rearm => write!(f, "Rearm"),
            Command::Stop => write!(f, "Stop"),
        }
    }
}

impl Watcher {
    /// Starts the watcher task of one exchange; `control` is its private key.
    /// `lost_state` is notified each time it connects again after a failure
    /// (Redis may have restarted and lost the exchange's state).
    pub(crate) fn start(
        client: redis::Client,
        control: String,
        actor: Addr<ExchangeActor>,
        lost_state: Arc<tokio::sync::Notify>,
    ) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let task = Task {
            stopped: false,
            client,
            control: control.clone(),
            commands: rx,
            lost_state,
            queues: HashMap::new(),
            order: Vec::new(),
            turn: 0,
            conn: None,
            backoff: Duration::ZERO,
        };
        tokio::spawn(task.run());
        Self { commands, control: control.into(), actor }
    }

    /// Starts watching `queue` (superseding an earlier watch of it); the
    /// stream ends after [`unwatch`](Self::unwatch) with its id.
    pub(crate) fn watch(&self, queue: String) -> (u64, WatchStream) {
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let paused = Arc::new(AtomicBool::new(false));
        let id = NEXT_WATCH.fetch_add(1, Ordering::Relaxed);
        let _ = self.commands.send(Command::Watch { queue, id, tx, paused: paused.clone() });
        self.rearm();
        (id, WatchStream { rx, paused, watcher: self.clone() })
    }

    /// Stops watch `id` of `queue`; its stream gets [`Watched::Woken`] and ends.
    pub(crate) fn unwatch(&self, queue: String, id: u64) {
        let _ = self.commands.send(Command::Unwatch { queue, id });
        self.rearm();
    }

    /// Ends every watch and the task: nothing is popped after this.
    pub(crate) fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
        self.rearm();
    }

    /// Makes the task read the watched set again: through the channel when it
    /// waits for commands, through the control key when it blocks in Redis.
    fn rearm(&self) {
        let _ = self.commands.send(Command::Rearm);
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg(&*self.control).arg("rearm");
        self.actor.do_send(Call::<()>::new(Request::Cmd(cmd)));
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
    tx: mpsc::Sender<Watched>,
    paused: Arc<AtomicBool>,
}

struct Task {
    stopped: bool,
    client: redis::Client,
    lost_state: Arc<tokio::sync::Notify>,
    control: String,
    commands: mpsc::UnboundedReceiver<Command>,
    queues: HashMap<String, Registration>,
    /// Watched queues in registration order (rotated through for fairness).
    order: Vec<String>,
    turn: usize,
    conn: Option<MultiplexedConnection>,
    backoff: Duration,
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
            let ready: Vec<String> = self.ready();
            if ready.is_empty() {
                // Nothing to pop: wait for a mailbox (no Redis traffic at all).
                match self.commands.recv().await {
                    Some(command) => self.apply(command),
                    None => return,
                }
                if self.stopped {
                    return;
                }
                continue;
            }
            if let Err(e) = self.pop(ready).await {
                self.fail(e).await;
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Watch { queue, id, tx, paused } => {
                if !self.queues.contains_key(&queue) {
                    self.order.push(queue.clone());
                }
                if let Some(old) = self.queues.insert(queue, Registration { id, tx, paused }) {
                    tokio::spawn(async move { old.tx.send(Watched::Woken).await });
                }
            }
            Command::Rearm => {}
            Command::Stop => {
                self.stopped = true;
                self.order.clear();
                for (_, registration) in self.queues.drain() {
                    tokio::spawn(async move { registration.tx.send(Watched::Woken).await });
                }
            }
            Command::Unwatch { queue, id } => {
                if self.queues.get(&queue).is_some_and(|r| r.id == id) {
                    self.order.retain(|q| *q != queue);
                    if let Some(registration) = self.queues.remove(&queue) {
                        tokio::spawn(async move { registration.tx.send(Watched::Woken).await });
                    }
                }
            }
        }
    }

    /// Watched queues whose mailbox has room, starting at a rotating offset.
    fn ready(&mut self) -> Vec<String> {
        self.turn = self.turn.wrapping_add(1);
        let n = self.order.len().max(1);
        let start = self.turn % n;
        let (later, earlier) = self.order.split_at(start.min(self.order.len()));
        earlier
            .iter()
            .chain(later)
            .filter(|q| {
                let registration = &self.queues[*q];
                if registration.tx.capacity() < 2 {
                    registration.paused.store(true, Ordering::Release);
                    false
                } else {
                    true
                }
            })
            .cloned()
            .collect()
    }

    async fn connection(&mut self) -> Result<&mut MultiplexedConnection, Error> {
        if self.conn.is_none() {
            if !self.backoff.is_zero() {
                tokio::time::sleep(self.backoff).await;
            }
            let config = AsyncConnectionConfig::new()
                .set_response_timeout(None)
                .set_connection_timeout(Some(Duration::from_secs(1)));
            let conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
            if !self.backoff.is_zero() {
                // Redis may have restarted empty: the exchange re-registers.
                self.lost_state.notify_one();
                self.backoff = Duration::ZERO;
            }
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    async fn pop(&mut self, ready: Vec<String>) -> Result<(), Error> {
        let control = self.control.clone();
        let conn = self.connection().await?;
        let mut blpop = redis::cmd("BLPOP");
        blpop.arg(&control).arg(&ready).arg(0);
        let popped: Option<(String, Vec<u8>)> = blpop.query_async(conn).await?;
        let Some((queue, first)) = popped else { return Ok(()) };
        if queue == control {
            return Ok(());
        }
        // The first message goes out before the LPOP round trip, so a lone
        // request is handled while the watcher looks for more.
        self.deliver(&queue, vec![first]).await?;
        let conn = self.connection().await?;
        let more: Option<Vec<Vec<u8>>> = redis::cmd("LPOP").arg(&queue).arg(BATCH - 1).query_async(conn).await?;
        match more {
            Some(more) if !more.is_empty() => self.deliver(&queue, more).await,
            _ => Ok(()),
        }
    }

    /// Hands a batch to its mailbox; if the mailbox is gone, puts it back.
    async fn deliver(&mut self, queue: &str, batch: Vec<Vec<u8>>) -> Result<(), Error> {
        let undelivered = match self.queues.get(queue) {
            Some(registration) => match registration.tx.try_send(Watched::Batch(batch)) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(Watched::Batch(batch)))
                | Err(mpsc::error::TrySendError::Closed(Watched::Batch(batch))) => batch,
                Err(_) => return Ok(()),
            },
            None => batch,
        };
        let mut cmd = redis::cmd("LPUSH");
        cmd.arg(queue);
        for entry in undelivered.iter().rev() {
            cmd.arg(entry);
        }
        let conn = self.connection().await?;
        cmd.query_async::<()>(conn).await?;
        Ok(())
    }

    async fn fail(&mut self, error: Error) {
        error!(mailboxes = self.queues.len(), "redis watcher failed, retrying: {error}");
        self.conn = None;
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF);
    }
}
