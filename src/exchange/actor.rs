//! The exchange actor: sole owner of the exchange's Redis command connection.
//! Every Redis command the exchange, its mailboxes and its links issue goes
//! through it as a [`Call`]; commands from many callers are pipelined on the
//! one multiplexed connection, which reconnects by itself after a failure.

use std::marker::PhantomData;
use std::sync::LazyLock;

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Script};

use crate::error::Error;

/// Marks an agent or client terminated: status INACTIVE, close sentinel
/// pushed, lineage and index entries removed. Unknown ids are left alone.
/// KEYS: status, queue, behavior. ARGV: namespace, base32 id, sentinel.
pub(crate) static TERMINATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('GET', KEYS[1])
if not status then return 0 end
if status == 'INACTIVE' then return 1 end
redis.call('SET', KEYS[1], 'INACTIVE')
redis.call('RPUSH', KEYS[2], ARGV[3])
local lineage = redis.call('GET', KEYS[3])
if lineage then
  for name in string.gmatch(lineage, '[^,]+') do
    redis.call('SREM', ARGV[1] .. ':index:' .. name, ARGV[2])
  end
  redis.call('DEL', KEYS[3])
end
return 1
",
    )
});

/// Active agents in a behavior's index; with ARGV[3] = '1', only those whose
/// lineage starts with the behavior. Costs O(members of that index).
/// KEYS: index. ARGV: namespace, behavior name, exact flag.
pub(crate) static DISCOVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local found = {}
local prefix = ARGV[2] .. ','
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('GET', ARGV[1] .. ':status:' .. id) == 'ACTIVE' then
    local keep = true
    if ARGV[3] == '1' then
      local lineage = redis.call('GET', ARGV[1] .. ':behavior:' .. id)
      keep = lineage == ARGV[2] or (lineage and string.sub(lineage, 1, #prefix) == prefix)
    end
    if keep then table.insert(found, id) end
  end
end
return found
",
    )
});

/// The live address of a mailbox: its address key, unless the process that
/// published it has let its lease lapse (crashed), in which case the stale
/// address (and its owner key) are deleted. KEYS[2]: address, KEYS[4]: owner;
/// ARGV[2]: namespace.
const LIVE_ADDRESS: &str = r"
local function live_address()
  local address = redis.call('GET', KEYS[2])
  if not address then return nil end
  local owner = redis.call('GET', KEYS[4])
  if owner and redis.call('EXISTS', ARGV[2] .. ':alive:' .. owner) == 1 then return address end
  redis.call('DEL', KEYS[2], KEYS[4])
  return nil
end
";

/// Routes or queues messages in one round trip: unknown -> -1, terminated
/// -> -2; with ARGV[1] = 'route' and a live address, that address;
/// otherwise pushes ARGV[3..] onto the queue and returns 1 if the mailbox
/// listens, else 0. KEYS: status, address, queue, owner. ARGV[2]: namespace.
pub(crate) static SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{LIVE_ADDRESS}
local status = redis.call('GET', KEYS[1])
if not status then return -1 end
if status == 'INACTIVE' then return -2 end
local address = live_address()
if address and ARGV[1] == 'route' then return address end
redis.call('RPUSH', KEYS[3], unpack(ARGV, 3))
if address then return 1 end
return 0
"
    ))
});

/// A mailbox's state: MISSING, INACTIVE, LISTENING (live address) or OFFLINE.
/// KEYS: status, address, unused, owner. ARGV: unused, namespace.
pub(crate) static STATUS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{LIVE_ADDRESS}
local status = redis.call('GET', KEYS[1])
if not status then return 'MISSING' end
if status == 'INACTIVE' then return 'INACTIVE' end
if live_address() then return 'LISTENING' end
return 'OFFLINE'
"
    ))
});

/// Deletes an address (and its owner key) only if it still holds the given
/// value, so a mailbox that closes late never removes the address a newer
/// mailbox published. KEYS: address, owner. ARGV: address.
pub(crate) static DELETE_IF_EQUAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1], KEYS[2]) end
return 0
",
    )
});

/// Writes an entity's registration again after Redis lost it, without
/// undoing anything newer: a terminated entity stays terminated, existing
/// keys are kept, and an address is restored only if no other process has
/// claimed it since. KEYS: status, behavior, address, owner. ARGV: namespace,
/// base32 id, lineage (comma-joined, empty for none), address (empty for
/// none), owner token.
pub(crate) static REASSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('GET', KEYS[1])
if status == 'INACTIVE' then return 0 end
if not status then redis.call('SET', KEYS[1], 'ACTIVE') end
if ARGV[3] ~= '' and not redis.call('GET', KEYS[2]) then
  redis.call('SET', KEYS[2], ARGV[3])
  for name in string.gmatch(ARGV[3], '[^,]+') do
    redis.call('SADD', ARGV[1] .. ':index:' .. name, ARGV[2])
  end
end
if ARGV[4] ~= '' then
  local owner = redis.call('GET', KEYS[4])
  if not owner or owner == ARGV[5] then
    redis.call('SET', KEYS[3], ARGV[4])
    redis.call('SET', KEYS[4], ARGV[5])
  end
end
return 1
",
    )
});

/// A Redis request the actor runs for a caller.
pub(crate) enum Request {
    Cmd(redis::Cmd),
    Pipeline(redis::Pipeline),
    Script(redis::ScriptInvocation<'static>),
}

/// Ask the actor to run a request and decode its reply as `T`.
pub(crate) struct Call<T>(pub(crate) Request, PhantomData<fn() -> T>);

impl<T> Call<T> {
    pub(crate) fn new(request: Request) -> Self {
        Self(request, PhantomData)
    }
}

impl<T: 'static> Message for Call<T> {
    type Result = Result<T, Error>;
}

/// Stop the actor (the exchange is closing).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Stop;

/// Owns the Redis connection of one exchange, and renews the exchange's
/// lease: the key whose presence says this process (and so the addresses it
/// published) is alive.
pub(crate) struct ExchangeActor {
    redis: ConnectionManager,
    lease: Lease,
    /// Notified when the lease is found missing: the exchange re-registers.
    lost_state: std::sync::Arc<tokio::sync::Notify>,
}

/// The exchange's liveness key and how often it is renewed (it expires after
/// three periods without renewal).
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    pub(crate) key: String,
    pub(crate) period: std::time::Duration,
}

impl Lease {
    pub(crate) fn renewal(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(&self.key).arg(1).arg("PX").arg((self.period * 3).as_millis() as u64);
        cmd
    }

    /// Renews the lease only if it is still there: a nil reply means Redis
    /// lost it (restarted empty, or this process stalled past the expiry).
    fn refresh(&self) -> redis::Cmd {
        let mut cmd = self.renewal();
        cmd.arg("XX");
        cmd
    }
}

impl ExchangeActor {
    pub(crate) fn new(redis: ConnectionManager, lease: Lease, lost_state: std::sync::Arc<tokio::sync::Notify>) -> Self {
        Self { redis, lease, lost_state }
    }
}

impl Actor for ExchangeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        use actix::{AsyncContext, WrapFuture};
        ctx.run_interval(self.lease.period, |act, ctx| {
            let (mut redis, refresh, lost_state) = (act.redis.clone(), act.lease.refresh(), act.lost_state.clone());
            ctx.spawn(
                async move {
                    match refresh.query_async::<Option<String>>(&mut redis).await {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            tracing::warn!("the exchange's lease is gone from Redis; registering again");
                            lost_state.notify_one();
                        }
                        Err(e) => tracing::warn!("could not renew the exchange's lease: {e}"),
                    }
                }
                .into_actor(act),
            );
        });
    }
}

impl<T: FromRedisValue + Send + 'static> Handler<Call<T>> for ExchangeActor {
    type Result = ResponseFuture<Result<T, Error>>;

    fn handle(&mut self, Call(request, _): Call<T>, _: &mut Context<Self>) -> Self::Result {
        let mut redis = self.redis.clone();
        Box::pin(async move {
            Ok(match request {
                Request::Cmd(cmd) => cmd.query_async(&mut redis).await?,
                Request::Pipeline(pipe) => pipe.query_async(&mut redis).await?,
                Request::Script(script) => script.invoke_async(&mut redis).await?,
            })
        })
    }
}

impl Handler<Stop> for ExchangeActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        actix::ActorContext::stop(ctx);
    }
}
