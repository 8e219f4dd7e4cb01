//! The hybrid exchange in Academy 1.0's protocol ([`Protocol::Academy1`]):
//! academy-py 1.0.0's Redis keys and JSON messages, so that Rust and Python
//! agents discover and call each other on one Redis.
//!
//! | key | value |
//! |---|---|
//! | `ns:status:<b32>` | `ACTIVE`, or `INACTIVE` meaning terminated |
//! | `ns:agent:<b32>` | comma-joined lineage, most specific first, ending `academy.agent.Agent` |
//! | `ns:heartbeat:<b32>` | Redis `TIME` in seconds (`1764065400.123456`), rewritten every heartbeat period |
//! | `ns:queue:<b32>` | JSON messages, FIFO; `<CLOSED>` once terminated |
//! | `ns:name:<b32>` | this crate's: the name an agent was registered with |
//! | `ns:taker:<b32>` | this crate's: the opening that reads the queue (one at a time, across processes) |
//! | `ns:taken:<b32>:<opening>` | this crate's: entries that opening popped and its consumer has not yet taken |
//!
//! An entity is inactive when its heartbeat is older than three periods.
//! Messages always go through the queues: this mode publishes no address,
//! so Python senders queue too (academy-py sends over TCP to any peer with
//! an address, unauthenticated and unacknowledged: a frame written into a
//! connection that then fails is lost without a trace).
//!
//! [`Protocol::Academy1`]: super::Protocol::Academy1

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Script};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use uuid::Uuid;

use super::inbox::{drain, Feed, Inbox};
use super::keys::Keys;
use super::reserve_opening;
use super::{Bad, Delivery, MailboxStatus, Origin, Reports, WhenInactive};
use crate::error::Error;
use crate::identifier::{base32_to_uuid, EntityId, Role};
use crate::json::{self, Incoming};
use crate::message::{Body, Envelope, RemoteError, RemoteErrorKind};

/// Python's heartbeat period (`ExchangeClientConfig.heartbeat_interval`).
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

/// Every Python agent's lineage ends with this name; Rust agents' too, so
/// `discover('academy.agent.Agent')` lists both.
pub(crate) const BASE_BEHAVIOR: &str = "academy.agent.Agent";

/// How long one pop of a queue waits before it is made again.
const POP_WAIT: Duration = Duration::from_secs(10);

/// The task that reads one mailbox's queue: how to stop it, and the Redis
/// connection its blocking pop runs on (to release the pop when it stops).
#[derive(Clone, Debug)]
pub(crate) struct Feeder {
    /// This opening of the mailbox.
    opening: Uuid,
    stop: CancellationToken,
    connection: Arc<AtomicI64>,
}

/// What opening a mailbox found.
enum Opened {
    Active,
    Missing,
    Terminated,
}

/// What [`AcademyExchange::start`] needs from the builder.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) namespace: String,
    pub(crate) heartbeat: Duration,
    pub(crate) expiry: Duration,
    pub(crate) mailbox_capacity: usize,
}

/// `state(status key, heartbeat key, stale seconds)`: missing, terminated,
/// inactive (heartbeat missing or stale) or offline (active; this mode
/// never listens).
const STATE: &str = r"
local function state(status_key, heartbeat_key, stale)
  local status = redis.call('GET', status_key)
  if not status then return 'missing' end
  if status == 'INACTIVE' then return 'terminated' end
  -- A word this version does not know: fail closed, never route on a guess.
  if status ~= 'ACTIVE' then error({err = 'UNKNOWNSTATUS ' .. status}) end
  local beat = tonumber(redis.call('GET', heartbeat_key))
  if not beat then return 'inactive' end
  local t = redis.call('TIME')
  if tonumber(t[1]) + tonumber(t[2]) / 1000000 - beat < tonumber(stale) then return 'offline' end
  return 'inactive'
end
local function now()
  local t = redis.call('TIME')
  return string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{STATE}{body}"))
}

/// KEYS: status, agent, heartbeat, queue, name, taken (the prefix of its
/// lists), taker. ARGV: lineage ('' for a client), name (''). A terminated
/// entity registered again starts empty.
static REGISTER: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('GET', KEYS[1]) == 'INACTIVE' then
  local opening = redis.call('GET', KEYS[7])
  if opening then redis.call('DEL', KEYS[6] .. ':' .. opening) end
  redis.call('DEL', KEYS[4], KEYS[6], KEYS[7])
end
redis.call('SET', KEYS[1], 'ACTIVE')
redis.call('PERSIST', KEYS[5])
if ARGV[1] ~= '' then redis.call('SET', KEYS[2], ARGV[1]) end
if ARGV[2] ~= '' then redis.call('SET', KEYS[5], ARGV[2]) end
redis.call('SET', KEYS[3], now())
",
    )
});

/// Run in a transaction right after a plain `RPUSH` of an entry too large
/// to pass through a script (Lua copies large arguments slowly): refuses it
/// as [`SEND`] does, taking it back off the queue (the native backend's
/// `PUSHED` does the same for its own layout). KEYS: status, queue.
///
/// Sent as `EVAL` (a transaction cannot load a script it finds missing).
const PUSHED: &str = r"
local status = redis.call('GET', KEYS[1])
if status == 'ACTIVE' then return 'queued' end
redis.call('RPOP', KEYS[2])
if not status then return 'missing' end
if status == 'INACTIVE' then return 'terminated' end
return redis.error_reply('UNKNOWNSTATUS ' .. status)
";

/// Entries past this size are pushed and acknowledged with plain commands
/// in a transaction, not as a script's arguments.
const LARGE: usize = 64 << 10;

/// KEYS: status, heartbeat. ARGV: stale seconds.
static STATUS: LazyLock<Script> = LazyLock::new(|| script("return state(KEYS[1], KEYS[2], ARGV[1])"));

/// KEYS: status, queue. ARGV: entry. Queued unless the destination is
/// missing or terminated (as academy-py, whatever its heartbeat says).
static SEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local status = redis.call('GET', KEYS[1])
if not status then return 'missing' end
if status == 'INACTIVE' then return 'terminated' end
if status ~= 'ACTIVE' then error({err = 'UNKNOWNSTATUS ' .. status}) end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 'queued'
",
    )
});

/// KEYS: pairs of (status, heartbeat). Writes the heartbeat of each entity
/// still ACTIVE.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local t = now()
for i = 1, #KEYS, 2 do
  if redis.call('GET', KEYS[i]) == 'ACTIVE' then redis.call('SET', KEYS[i + 1], t) end
end
",
    )
});

/// KEYS: status, queue, agent, name, heartbeat. ARGV: expiry (ms). As
/// academy-py: INACTIVE, the queue replaced by the close sentinel, the
/// lineage deleted; returns what was queued (its requests are answered
/// MAILBOX_TERMINATED). Unlike academy-py, what is left expires.
static TERMINATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if not redis.call('GET', KEYS[1]) then return {} end
redis.call('SET', KEYS[1], 'INACTIVE')
local pending = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('RPUSH', KEYS[2], '<CLOSED>')
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[4], KEYS[5]}) do redis.call('PEXPIRE', key, ARGV[1]) end
return pending
",
    )
});

/// What opening and closing share: `back(list)` puts what an opening popped
/// and did not hand out back in front of the queue, in order; `left(list)`
/// takes it out (the mailbox is terminated: it is answered).
/// KEYS: status, queue, taker, taken (the prefix of the openings' lists).
const OPENINGS: &str = r"
local function list(opening) return KEYS[4] .. ':' .. opening end
local function back(l)
  while redis.call('LMOVE', l, KEYS[2], 'RIGHT', 'LEFT') do end
end
local function left(l, into)
  for _, e in ipairs(redis.call('LRANGE', l, 0, -1)) do table.insert(into, e) end
  redis.call('DEL', l)
end
local status = redis.call('GET', KEYS[1])
if status and status ~= 'ACTIVE' and status ~= 'INACTIVE' then error({err = 'UNKNOWNSTATUS ' .. status}) end
";

/// Opens a mailbox as opening ARGV[1], the only one that reads its queue
/// from now on: what the previous one (crashed, or still running
/// elsewhere, which then ends) popped goes back in front of the queue. Not
/// active: the status, then what was left (to be answered
/// MAILBOX_TERMINATED). KEYS: see [`OPENINGS`].
static OPEN: LazyLock<Script> = LazyLock::new(|| {
    script(&format!(
        r"{OPENINGS}
local previous = redis.call('GET', KEYS[3])
if status ~= 'ACTIVE' then
  local rest = {{}}
  if previous then left(list(previous), rest) end
  left(KEYS[4], rest)
  redis.call('DEL', KEYS[3])
  table.insert(rest, 1, status or 'missing')
  return rest
end
if previous then back(list(previous)) end
-- A list an earlier version kept for every opening.
back(KEYS[4])
redis.call('SET', KEYS[3], ARGV[1])
return {{'ok'}}
"
    ))
});

/// Closes opening ARGV[1]: what it popped and did not hand out goes back
/// (with ARGV[2], an entry being acknowledged as it closed, unless it is
/// in the queue already), and it is no longer recorded (if it still was).
/// Not active: as [`OPEN`]. KEYS: see [`OPENINGS`].
static CLOSE: LazyLock<Script> = LazyLock::new(|| {
    script(&format!(
        r"{OPENINGS}
local mine = redis.call('GET', KEYS[3]) == ARGV[1]
if status ~= 'ACTIVE' then
  local rest = {{}}
  left(list(ARGV[1]), rest)
  if mine then redis.call('DEL', KEYS[3]) end
  table.insert(rest, 1, status or 'missing')
  return rest
end
-- Taken over, what is still in this opening's list came after the new
-- opening put the rest back (a hand-back that failed): it goes back too.
back(list(ARGV[1]))
if ARGV[2] and not redis.call('LPOS', KEYS[2], ARGV[2]) then redis.call('LPUSH', KEYS[2], ARGV[2]) end
if mine then redis.call('DEL', KEYS[3]) end
return {{'ok'}}
"
    ))
});

/// Takes an entry off opening ARGV[1]'s list: 1 removed, 0 not there, -1
/// another opening reads the queue now. KEYS: taker, the opening's list.
/// ARGV: opening, entry.
static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
return redis.call('LREM', KEYS[2], 1, ARGV[2])
",
    )
});

/// ARGV: stale seconds, then base32 ids. For each: lineage, state, name.
static DISCOVER: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local ns, out = ARGV[1], {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local prefix = ns .. ':'
  table.insert(out, redis.call('GET', prefix .. 'agent:' .. id) or '')
  local known, s = pcall(state, prefix .. 'status:' .. id, prefix .. 'heartbeat:' .. id, ARGV[2])
  table.insert(out, known and s or 'unknown')
  table.insert(out, redis.call('GET', prefix .. 'name:' .. id) or '')
end
return out
",
    )
});

/// The Academy 1.0 backend of [`Exchange`](super::Exchange).
#[derive(Clone)]
pub(crate) struct AcademyExchange {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AcademyExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcademyExchange").field("namespace", &self.namespace()).finish_non_exhaustive()
    }
}

struct Inner {
    client: redis::Client,
    redis: ConnectionManager,
    keys: Keys,
    settings: Settings,
    /// Entities whose heartbeat this process writes.
    beating: Mutex<HashSet<Uuid>>,
    /// The open mailboxes here, by entity: their opening.
    openings: Mutex<HashMap<Uuid, Uuid>>,
    /// Sends in the background and mailboxes handing back what they held.
    background: TaskTracker,
    /// Background sends that failed, summarised once a minute.
    reports: Reports,
    stop: CancellationToken,
    closed: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl AcademyExchange {
    /// Starts the heartbeats; `redis` is the shared connection, `client`
    /// makes the blocking ones mailboxes pop their queues on.
    pub(crate) fn start(client: redis::Client, redis: ConnectionManager, settings: Settings) -> Self {
        let exchange = Self {
            inner: Arc::new(Inner {
                client,
                redis,
                keys: Keys::new(&settings.namespace),
                settings,
                beating: Mutex::default(),
                openings: Mutex::default(),
                background: TaskTracker::new(),
                reports: Reports::default(),
                stop: CancellationToken::new(),
                closed: AtomicBool::new(false),
            }),
        };
        tokio::spawn(beat(Arc::downgrade(&exchange.inner)));
        exchange
    }

    pub(crate) fn namespace(&self) -> &str {
        self.inner.keys.namespace()
    }

    fn key(&self, kind: &str, uid: Uuid) -> String {
        self.inner.keys.key(kind, uid)
    }

    /// Three heartbeat periods, in seconds, as Python judges staleness.
    fn stale(&self) -> f64 {
        (self.inner.settings.heartbeat * 3).as_secs_f64()
    }

    async fn run<T: redis::FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<T, Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::ExchangeClosed);
        }
        Ok(invocation.invoke_async(&mut self.inner.redis.clone()).await?)
    }

    pub(crate) async fn register(&self, id: &EntityId, lineage: &[&str]) -> Result<(), Error> {
        let uid = id.uid();
        let lineage = match id.role() {
            Role::Agent => {
                let mut names: Vec<&str> = lineage.to_vec();
                if !names.contains(&BASE_BEHAVIOR) {
                    names.push(BASE_BEHAVIOR);
                }
                names.join(",")
            }
            Role::Client => String::new(),
        };
        let mut invocation = REGISTER.prepare_invoke();
        for kind in ["status", "agent", "heartbeat", "queue", "name", "taken", "taker"] {
            invocation.key(self.key(kind, uid));
        }
        invocation.arg(lineage).arg(id.name().unwrap_or_default());
        self.run(&invocation).await
    }

    /// Terminates `id` as academy-py does, answering what waited in its
    /// queue with MAILBOX_TERMINATED.
    pub(crate) async fn terminate(&self, id: &EntityId) -> Result<(), Error> {
        let uid = id.uid();
        let mut invocation = TERMINATE.prepare_invoke();
        for kind in ["status", "queue", "agent", "name", "heartbeat"] {
            invocation.key(self.key(kind, uid));
        }
        invocation.arg(self.inner.settings.expiry.as_millis() as u64);
        let pending: Vec<Vec<u8>> = self.run(&invocation).await?;
        lock(&self.inner.beating).remove(&uid);
        self.answer_terminated(id, pending);
        debug!(entity = %id, "terminated");
        Ok(())
    }

    /// The name `id` was registered with, if any (this crate's own key).
    pub(crate) async fn registered_name(&self, id: &EntityId) -> Result<Option<String>, Error> {
        let mut redis = self.inner.redis.clone();
        Ok(redis::cmd("GET").arg(self.key("name", id.uid())).query_async(&mut redis).await?)
    }

    /// Marks `id`, whose agent failed here, inactive at once: its heartbeat
    /// stops and goes, so Python and Rust callers see it gone now, not
    /// three periods later. Launched again, it beats again.
    pub(crate) async fn mark_failed(&self, id: &EntityId) -> Result<(), Error> {
        self.stop_beating(id);
        let mut redis = self.inner.redis.clone();
        redis::cmd("DEL").arg(self.key("heartbeat", id.uid())).query_async::<()>(&mut redis).await?;
        Ok(())
    }

    /// Answers the requests among `entries` (left in a terminated mailbox)
    /// with MAILBOX_TERMINATED, as academy-py does.
    fn answer_terminated(&self, id: &EntityId, entries: Vec<Vec<u8>>) {
        for entry in entries {
            let Ok(Incoming::Message(request)) = json::decode(&entry) else { continue };
            if request.body.is_request() {
                let error = RemoteError { kind: RemoteErrorKind::Terminated, message: format!("{id} was terminated") };
                self.post(
                    request.reply(Body::ActionResponse { action: String::new(), result: Err(error) }),
                    WhenInactive::Queue,
                );
            }
        }
    }

    pub(crate) async fn status(&self, id: &EntityId) -> Result<MailboxStatus, Error> {
        let mut invocation = STATUS.prepare_invoke();
        invocation.key(self.key("status", id.uid())).key(self.key("heartbeat", id.uid())).arg(self.stale());
        let state: String = self.run(&invocation).await?;
        MailboxStatus::from_state(&state)
    }

    /// Discovery as academy-py's: a scan of the `agent` keys, matching the
    /// first name (or, with subclasses, any).
    pub(crate) async fn discover_by_name(
        &self,
        behavior: &str,
        allow_subclasses: bool,
        include_inactive: bool,
    ) -> Result<Vec<EntityId>, Error> {
        let prefix = format!("{}:agent:", self.namespace());
        let keys: Vec<String> = {
            use futures::StreamExt;
            let mut redis = self.inner.redis.clone();
            let iter = redis::AsyncCommands::scan_match::<_, String>(&mut redis, format!("{prefix}*")).await?;
            iter.collect::<Vec<_>>().await.into_iter().collect::<Result<_, _>>()?
        };
        let mut found = Vec::new();
        for chunk in keys.chunks(500) {
            let mut invocation = DISCOVER.prepare_invoke();
            invocation.arg(self.namespace()).arg(self.stale());
            for key in chunk {
                invocation.arg(&key[prefix.len()..]);
            }
            let rows: Vec<String> = self.run(&invocation).await?;
            for (key, row) in chunk.iter().zip(rows.chunks_exact(3)) {
                let (lineage, state, name) = (&row[0], row[1].as_str(), &row[2]);
                let mut names = lineage.split(',');
                let matches = names.next() == Some(behavior) || (allow_subclasses && names.any(|n| n == behavior));
                let alive = state == "offline" || (include_inactive && state == "inactive");
                if matches && alive {
                    let name = Some(name.as_str()).filter(|n| !n.is_empty());
                    found.push(EntityId::from_parts(base32_to_uuid(&key[prefix.len()..])?, Role::Agent, name));
                }
            }
        }
        Ok(found)
    }

    /// Queues `envelope` as JSON for its destination. An inactive one gets it
    /// too (`when_inactive` is not consulted), as from academy-py: its
    /// heartbeat may only be late, and a reply refused would be lost.
    pub(crate) async fn send(&self, envelope: Envelope, _when_inactive: WhenInactive) -> Result<(), Error> {
        let entry = json::encode(&envelope)?;
        self.send_entry(envelope.dest, entry).await
    }

    /// Queues `entry`, a message already written as JSON, for `dest`.
    async fn send_entry(&self, dest: EntityId, entry: Vec<u8>) -> Result<(), Error> {
        let uid = dest.uid();
        let (status, queue) = (self.key("status", uid), self.key("queue", uid));
        let state: String = match entry.len() > LARGE {
            false => {
                let mut invocation = SEND.prepare_invoke();
                invocation.key(status).key(queue).arg(entry);
                self.run(&invocation).await?
            }
            true => {
                if self.inner.closed.load(Ordering::Acquire) {
                    return Err(Error::ExchangeClosed);
                }
                let mut pipe = redis::pipe();
                pipe.atomic().cmd("RPUSH").arg(&queue).arg(entry).ignore();
                pipe.cmd("EVAL").arg(PUSHED).arg(2).arg(status).arg(queue);
                let (state,): (String,) = pipe.query_async(&mut self.inner.redis.clone()).await?;
                state
            }
        };
        match state.as_str() {
            "missing" => Err(Error::BadEntityId(dest)),
            "terminated" => Err(Error::MailboxClosed(dest)),
            _ => {
                metrics::counter!("academy_messages_sent_total", "path" => "queued").increment(1);
                Ok(())
            }
        }
    }

    /// Sends in the background; [`close`](Self::close) waits for it. A
    /// result that JSON cannot carry still answers its caller, with an error.
    pub(crate) fn post(&self, mut envelope: Envelope, _when_inactive: WhenInactive) {
        let mut entry = json::encode(&envelope);
        if let (Err(e), Body::ActionResponse { action, .. }) = (&entry, &envelope.body) {
            let error =
                RemoteError { kind: RemoteErrorKind::Internal, message: format!("the result of {action}: {e}") };
            envelope.body = Body::ActionResponse { action: action.clone(), result: Err(error) };
            entry = json::encode(&envelope);
        }
        let exchange = self.clone();
        self.inner.background.spawn(async move {
            let dest = envelope.dest;
            let sent = match entry {
                Ok(entry) => exchange.send_entry(dest.clone(), entry).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = sent {
                // Expected in bursts while a caller is gone: summarised.
                exchange.inner.reports.bad(Bad::Background, format_args!("to {dest}: {e}"));
            }
        });
    }

    /// Runs `task` in the background; [`close`](Self::close) waits for it.
    pub(crate) fn track(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.background.spawn(task);
    }

    /// Returns messages taken but never started to the front of `id`'s queue.
    pub(crate) async fn push_front(&self, id: &EntityId, envelopes: &[Envelope]) -> Result<(), Error> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("LPUSH");
        cmd.arg(self.key("queue", id.uid()));
        for envelope in envelopes.iter().rev() {
            match json::encode(envelope) {
                Ok(entry) => drop(cmd.arg(entry)),
                Err(e) => warn!(mailbox = %id, tag = %envelope.tag, "a message could not be queued again: {e}"),
            }
        }
        cmd.query_async::<()>(&mut self.inner.redis.clone()).await?;
        Ok(())
    }

    /// Opens `id`'s mailbox, one opening at a time as in the native mode:
    /// an earlier opening in this process is given [`REOPEN_WAIT`](super::REOPEN_WAIT) to
    /// close, else [`Error::MailboxInUse`]; one in another process is taken
    /// over (it ends), and what it popped and did not hand out goes back in
    /// front of the queue. A task moves entries from the queue to this
    /// opening's taken list and into the returned channel.
    pub(crate) async fn inbox(&self, id: &EntityId) -> Result<Inbox, Error> {
        let opening = Uuid::new_v4();
        reserve_opening(&self.inner.openings, id, || opening).await?;
        // Freed however this ends, unless the mailbox opens (a dropped
        // future included).
        let slot = Slot { exchange: self, id, opening };
        match self.openings_script(&OPEN, id, opening, None).await? {
            Opened::Active => {}
            Opened::Missing => return Err(Error::BadEntityId(id.clone())),
            Opened::Terminated => return Err(Error::MailboxClosed(id.clone())),
        }
        std::mem::forget(slot);
        // Active to Python from now on, while this mailbox is open (the
        // beat task writes it again every period if this one fails).
        lock(&self.inner.beating).insert(id.uid());
        if let Err(e) = self.beat(&[id.uid()]).await {
            debug!(mailbox = %id, "could not write the first heartbeat: {e}");
        }
        let (tx, rx) = mpsc::channel(self.inner.settings.mailbox_capacity);
        let feeder = Feeder { opening, stop: self.inner.stop.child_token(), connection: Arc::default() };
        tokio::spawn(feed(self.clone(), id.clone(), tx, feeder.clone()));
        debug!(mailbox = %id, "mailbox open (Academy 1.0 queue)");
        Ok(Inbox { rx, feed: Arc::new(AcademyFeed { exchange: self.clone(), id: id.clone(), feeder }) })
    }

    /// Writes the heartbeats of `uids` (those still ACTIVE).
    async fn beat(&self, uids: &[Uuid]) -> Result<(), Error> {
        let mut invocation = HEARTBEAT.prepare_invoke();
        for &uid in uids {
            invocation.key(self.key("status", uid)).key(self.key("heartbeat", uid));
        }
        self.run(&invocation).await
    }

    /// Stops `feeder` reading `id`'s queue: a pop it has under way is
    /// released in Redis (so it takes nothing more), and what it popped and
    /// did not hand out goes back in front of the queue (with `claimed`, an
    /// entry being acknowledged as the mailbox closed).
    async fn close_inbox(&self, id: &EntityId, feeder: &Feeder, claimed: Option<Bytes>) -> Result<(), Error> {
        feeder.stop.cancel();
        self.stop_beating(id);
        let connection = feeder.connection.load(Ordering::Acquire);
        if connection != 0 {
            let unblocked = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(connection)
                .query_async::<i64>(&mut self.inner.redis.clone())
                .await;
            if let Err(e) = unblocked {
                debug!(mailbox = %id, "could not release the queue's reader: {e}");
            }
        }
        let closed = self.openings_script(&CLOSE, id, feeder.opening, claimed).await.map(drop);
        self.release(id, feeder.opening);
        closed
    }

    /// Frees `id`'s slot in `openings`, if `opening` still holds it.
    /// (See [`Slot`].)
    fn release(&self, id: &EntityId, opening: Uuid) {
        let mut openings = lock(&self.inner.openings);
        if openings.get(&id.uid()) == Some(&opening) {
            openings.remove(&id.uid());
        }
    }

    /// Stops writing `id`'s heartbeat: its mailbox closed, so Python sees it
    /// inactive after three periods, as one of its own agents shut down
    /// without terminating.
    fn stop_beating(&self, id: &EntityId) {
        lock(&self.inner.beating).remove(&id.uid());
    }

    /// Runs [`OPEN`] or [`CLOSE`] for `opening` of `id` (with `claimed`, an
    /// entry whose acknowledgement may or may not have been written);
    /// returns the stored status, answering what a terminated mailbox left.
    async fn openings_script(
        &self,
        script: &Script,
        id: &EntityId,
        opening: Uuid,
        claimed: Option<Bytes>,
    ) -> Result<Opened, Error> {
        let uid = id.uid();
        let mut invocation = script.prepare_invoke();
        for kind in ["status", "queue", "taker", "taken"] {
            invocation.key(self.key(kind, uid));
        }
        invocation.arg(opening.to_string());
        if let Some(entry) = claimed {
            invocation.arg(entry.as_ref());
        }
        let mut reply: Vec<Vec<u8>> = self.run(&invocation).await?;
        let status = if reply.is_empty() { Vec::new() } else { reply.remove(0) };
        Ok(match status.as_slice() {
            b"ok" => Opened::Active,
            b"missing" => Opened::Missing,
            _ => {
                self.answer_terminated(id, reply);
                Opened::Terminated
            }
        })
    }

    /// Stops the heartbeats and waits (at most 5 s) for sends in the background.
    pub(crate) async fn close(&self) {
        let inner = &self.inner;
        inner.background.close();
        if tokio::time::timeout(Duration::from_secs(5), inner.background.wait()).await.is_err() {
            warn!("background sends did not finish within 5 s");
        }
        inner.stop.cancel();
        inner.closed.store(true, Ordering::Release);
        debug!(namespace = self.namespace(), "exchange closed");
    }
}

/// Rewrites the heartbeat of every entity this process serves, every period.
async fn beat(inner: Weak<Inner>) {
    loop {
        let Some(exchange) = inner.upgrade().map(|inner| AcademyExchange { inner }) else { return };
        let (period, stop) = (exchange.inner.settings.heartbeat, exchange.inner.stop.clone());
        exchange.inner.reports.flush();
        let uids: Vec<Uuid> = lock(&exchange.inner.beating).iter().copied().collect();
        if !uids.is_empty() {
            if let Err(e) = exchange.beat(&uids).await {
                debug!("could not write heartbeats: {e}");
            }
        }
        drop(exchange);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// An entry moved to a mailbox's taken list, acknowledged (removed from it)
/// when its consumer takes it.
#[derive(Clone, Debug)]
pub(crate) struct Listed {
    exchange: AcademyExchange,
    /// The mailbox's taker key, its opening, and that opening's list.
    taker: Arc<str>,
    opening: Uuid,
    taken: Arc<str>,
    /// The mailbox's queue, where a large entry goes back after a takeover.
    queue: Arc<str>,
    pub(crate) raw: Bytes,
}

impl Listed {
    /// One attempt at [`ACK`]: 1 removed, 0 not there, -1 another opening
    /// reads the queue now. A large entry is removed with a plain `LREM`
    /// beside a read of the taker, in one transaction, and handed back to
    /// the front of the queue if another opening took over.
    async fn remove(&self) -> Result<i64, redis::RedisError> {
        let mut redis = self.exchange.inner.redis.clone();
        if self.raw.len() <= LARGE {
            let mut invocation = ACK.prepare_invoke();
            invocation.key(&*self.taker).key(&*self.taken).arg(self.opening.to_string()).arg(self.raw.as_ref());
            return invocation.invoke_async(&mut redis).await;
        }
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("GET").arg(&*self.taker).cmd("LREM").arg(&*self.taken).arg(1).arg(self.raw.as_ref());
        let (taker, removed): (Option<String>, i64) = pipe.query_async(&mut redis).await?;
        if taker.as_deref() == Some(self.opening.to_string().as_str()) {
            return Ok(removed);
        }
        if removed > 0 {
            redis::cmd("LPUSH").arg(&*self.queue).arg(self.raw.as_ref()).query_async::<()>(&mut redis).await?;
        }
        Ok(-1)
    }

    /// Removes the entry from the taken list; `false` if that failed (it is
    /// then not handed out, and stays for the next opening).
    pub(crate) async fn acknowledge(self) -> bool {
        // Closing: nothing more is taken (its reply could not be sent).
        if self.exchange.inner.stop.is_cancelled() {
            return false;
        }
        let mut failed = false;
        for attempt in 0..3 {
            let removed = self.remove().await;
            match removed {
                Ok(1) => return true,
                // Another opening reads the queue: it has the entry.
                Ok(-1) => return false,
                // Gone after an attempt whose answer was lost: it removed it
                // (only a takeover touches this list otherwise, and that
                // changes the taker first).
                Ok(_) => return failed,
                Err(e) => {
                    debug!(attempt, "acknowledging a queue entry failed: {e}");
                    failed = true;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        false
    }
}

/// Moves entries from `id`'s queue to its taken list, one at a time, and
/// hands them to the mailbox; ends at the close sentinel (the mailbox was
/// terminated), when the mailbox closes, or when the exchange does.
async fn feed(exchange: AcademyExchange, id: EntityId, tx: mpsc::Sender<Box<Delivery>>, feeder: Feeder) {
    let stop = feeder.stop;
    let queue: Arc<str> = exchange.key("queue", id.uid()).into();
    let taker: Arc<str> = exchange.key("taker", id.uid()).into();
    let opening = feeder.opening;
    let opening_text = opening.to_string();
    let taken: Arc<str> = format!("{}:{opening}", exchange.key("taken", id.uid())).into();
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = Duration::ZERO;
    loop {
        let moved = async {
            if conn.is_none() {
                tokio::time::sleep(backoff).await;
                let config = AsyncConnectionConfig::new()
                    .set_response_timeout(Some(POP_WAIT * 2))
                    .set_connection_timeout(Some(Duration::from_secs(1)));
                let mut fresh = exchange.inner.client.get_multiplexed_async_connection_with_config(&config).await?;
                let connection: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut fresh).await?;
                feeder.connection.store(connection, Ordering::Release);
                conn = Some(fresh);
            }
            let conn = conn.as_mut().expect("connected above");
            // Bounded, so that a connection gone dead without a word is
            // noticed; who reads the queue is read right after the move, in
            // the same round trip (written again first if Redis lost it).
            let mut pipe = redis::pipe();
            pipe.cmd("BLMOVE").arg(&*queue).arg(&*taken).arg("LEFT").arg("RIGHT").arg(POP_WAIT.as_secs());
            pipe.cmd("SET").arg(&*taker).arg(&opening_text).arg("NX").ignore();
            pipe.cmd("GET").arg(&*taker);
            pipe.query_async::<(Option<Vec<u8>>, Option<String>)>(conn).await
        };
        let raw = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
            moved = moved => moved,
        };
        let raw = match raw {
            Ok((moved, taker)) if taker.as_deref() != Some(opening_text.as_str()) => {
                // Another opening (a restart elsewhere) reads the queue now:
                // what this one moved goes back to it, and this one ends.
                if moved.is_some() {
                    let back = redis::cmd("LMOVE").arg(&*taken).arg(&*queue).arg("RIGHT").arg("LEFT").clone();
                    if let Err(e) = back.query_async::<()>(&mut exchange.inner.redis.clone()).await {
                        warn!(mailbox = %id, "could not hand an entry back to the new opening (it returns at the next one): {e}");
                    }
                }
                warn!(mailbox = %id, "another process opened this mailbox: closing it here");
                return;
            }
            Ok((Some(raw), _)) => Bytes::from(raw),
            Ok((None, _)) => continue,
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(2));
                warn!(mailbox = %id, "reading the queue failed (retrying in {backoff:?}): {e}");
                conn = None;
                continue;
            }
        };
        backoff = Duration::ZERO;
        let listed = Listed {
            exchange: exchange.clone(),
            taker: taker.clone(),
            opening,
            taken: taken.clone(),
            queue: queue.clone(),
            raw: raw.clone(),
        };
        match json::decode(&raw) {
            Ok(Incoming::Message(envelope)) => {
                let delivery = Delivery { envelope, stamp: None, origin: Origin::Listed(listed), doubtful: false };
                if tx.send(Box::new(delivery)).await.is_err() {
                    return;
                }
            }
            Ok(Incoming::Closed) => {
                listed.acknowledge().await;
                debug!(mailbox = %id, "the queue is closed: the mailbox was terminated");
                return;
            }
            Ok(Incoming::Refused(answer, why)) => {
                debug!(mailbox = %id, "refused a message: {why}");
                // Answered once: only if this reader took it.
                if listed.acknowledge().await {
                    exchange.post(*answer, WhenInactive::Queue);
                }
            }
            Err(e) => {
                warn!(mailbox = %id, "dropped a queue entry that is not an Academy 1.0 message: {e}");
                metrics::counter!("academy_dropped_entries_total").increment(1);
                listed.acknowledge().await;
            }
        }
    }
}

/// A reserved opening slot that is freed when dropped: an open that fails
/// or is abandoned half-way leaves the mailbox free to open.
struct Slot<'a> {
    exchange: &'a AcademyExchange,
    id: &'a EntityId,
    opening: Uuid,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.exchange.release(self.id, self.opening);
    }
}

/// An Academy 1.0 queue's feed: a task that moves entries from the queue to
/// the opening's taken list and into the mailbox.
#[derive(Debug)]
struct AcademyFeed {
    exchange: AcademyExchange,
    id: EntityId,
    feeder: Feeder,
}

impl Feed for AcademyFeed {
    /// What the channel holds is still in the taken list: all of it goes
    /// back, with a request whose acknowledgement was under way.
    fn close(
        &self,
        rx: mpsc::Receiver<Box<Delivery>>,
        claim: Option<(u64, Bytes)>,
    ) -> BoxFuture<'static, Result<(), Error>> {
        let (exchange, id, feeder) = (self.exchange.clone(), self.id.clone(), self.feeder.clone());
        Box::pin(async move {
            drop(drain(rx));
            exchange.close_inbox(&id, &feeder, claim.map(|(_, raw)| raw)).await
        })
    }

    fn close_later(&self, close: BoxFuture<'static, ()>) {
        self.exchange.track(close);
    }
}
