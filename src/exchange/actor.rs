//! The exchange actor: sole owner of the exchange's Redis command connection.
//! Every Redis command the exchange, its mailboxes and its links issue goes
//! through it as a [`Call`]; commands from many callers are pipelined on the
//! one multiplexed connection, which reconnects by itself after a failure.
//! Behind Sentinels, a failure that looks like a lost server makes it ask
//! them for the master again, and move to it if it changed.

use std::marker::PhantomData;
use std::sync::LazyLock;

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Script};

use crate::error::Error;

/// What every entity script starts with. ARGV[1]: namespace, ARGV[2]: the
/// expiry in milliseconds; ids are base32.
const PRELUDE: &str = r"
local ns, expiry = ARGV[1], tonumber(ARGV[2])
local function key(kind, id) return ns .. ':' .. kind .. ':' .. id end
-- The taken list of one opening of `id`'s mailbox.
local function taken(id, opening) return key('taken', id) .. ':' .. opening end
local function alive(owner) return redis.call('EXISTS', ns .. ':alive:' .. owner) == 1 end
local kept = {'status', 'behavior', 'name', 'queue', 'owner', 'taker'}
-- The state of `id`: missing, terminated, inactive (its process is gone),
-- listening or offline; with its owner and address. The first look at an
-- inactive entity sets its keys to expire and deletes its stale address.
local function state(id)
  local status = redis.call('GET', key('status', id))
  if not status then return 'missing' end
  if status == 'INACTIVE' then
    -- A name left by a process that predates names expires with the status.
    if redis.call('PTTL', key('name', id)) == -1 then redis.call('PEXPIRE', key('name', id), expiry) end
    return 'terminated'
  end
  -- A word this version does not know (a newer one's, or an operator's):
  -- fail closed rather than route on a guess.
  if status ~= 'ACTIVE' then error({err = 'UNKNOWNSTATUS ' .. status}) end
  local owner = redis.call('GET', key('owner', id))
  if owner and not alive(owner) then
    if redis.call('PTTL', key('status', id)) == -1 then
      for _, kind in ipairs(kept) do redis.call('PEXPIRE', key(kind, id), expiry) end
      local opening = redis.call('HGET', key('taker', id), 'opening')
      if opening then redis.call('PEXPIRE', taken(id, opening), expiry) end
    end
    redis.call('DEL', key('address', id))
    return 'inactive', owner
  end
  local address = redis.call('GET', key('address', id))
  if address then return 'listening', owner, address end
  return 'offline', owner
end
local function persist(id)
  for _, kind in ipairs(kept) do redis.call('PERSIST', key(kind, id)) end
end
-- Tells the watcher of process `token` that `id` needs a look, with a
-- copy of the entry that rang (if any) for it to deliver at once. A bell
-- lives a minute past its last ring: a live watcher reads it at once, and
-- one of a dead process does not stay.
local function ring(token, id, copy)
  if token and token ~= '' then
    local bell = ns .. ':bell:' .. token
    redis.call('RPUSH', bell, copy and (id .. ':' .. copy) or id)
    redis.call('PEXPIRE', bell, 60000)
  end
end
-- The process that watches `id`'s queue: its opening's, else its owner.
local function consumer(id, owner)
  local token = redis.call('HGET', key('taker', id), 'token')
  if token and token ~= '' then return token end
  return owner
end
-- Entries an opening popped but did not hand out go back to the front of
-- the queue, in order. Those acknowledged up to position `upto` (default:
-- what its takes claimed) but not yet trimmed are its consumer's: dropped.
local function restore(id, opening, upto)
  local taker = key('taker', id)
  if redis.call('HGET', taker, 'opening') == opening then
    local kept = (upto or tonumber(redis.call('HGET', taker, 'claimed') or '0'))
      - tonumber(redis.call('HGET', taker, 'trimmed') or '0')
    if kept > 0 then redis.call('LTRIM', taken(id, opening), kept, -1) end
  end
  local moved = 0
  while redis.call('LMOVE', taken(id, opening), key('queue', id), 'RIGHT', 'LEFT') do moved = moved + 1 end
  return moved
end
-- After `n` entries were pushed onto `id`'s queue (now `len` long): an
-- inactive entity's queue expires with it; an empty queue that got them
-- rings its owner (with `copy`, the one entry, if given).
local function pushed(id, s, owner, len, n, copy)
  local queue = key('queue', id)
  if s == 'inactive' then
    redis.call('PEXPIRE', queue, math.max(redis.call('PTTL', key('status', id)), 1))
  elseif len == n then
    ring(consumer(id, owner), id, copy)
  end
end
local function index(id, lineage, op)
  for name in string.gmatch(lineage, '[^,]+') do redis.call(op, ns .. ':index:' .. name, id) end
end
";

fn entity_script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// Registers (or re-registers) an entity: ACTIVE, lineage indexed, owned by
/// this process unless a live one serves it, its name (if any) kept for
/// discovery. After a termination, a fresh start: the old queue is
/// dropped. ARGV: id, token, lineage, name.
pub(crate) static REGISTER: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
local id, token, lineage, name = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('GET', key('status', id)) == 'INACTIVE' then
  redis.call('DEL', key('queue', id), key('name', id), key('behavior', id))
end
redis.call('SET', key('status', id), 'ACTIVE')
if name ~= '' then redis.call('SET', key('name', id), name) end
if lineage ~= '' then
  redis.call('SET', key('behavior', id), lineage)
  index(id, lineage, 'SADD')
end
local owner = redis.call('GET', key('owner', id))
if not owner or not alive(owner) then
  redis.call('SET', key('owner', id), token)
  redis.call('DEL', key('address', id))
end
persist(id)
return 1
",
    )
});

/// Terminates an entity: status INACTIVE (the stored word for terminated),
/// out of discovery, address gone, its owner's watcher rung so an open
/// mailbox ends; status, queue, lineage and name expire. Unknown ids are
/// left alone.
/// ARGV: id.
pub(crate) static TERMINATE: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
local id = ARGV[3]
local status = redis.call('GET', key('status', id))
if not status then return 0 end
if status == 'INACTIVE' then return 1 end
redis.call('SET', key('status', id), 'INACTIVE', 'PX', expiry)
local lineage = redis.call('GET', key('behavior', id))
if lineage then index(id, lineage, 'SREM') end
-- What is left is delivered to an open mailbox as it ends, or expires.
redis.call('PEXPIRE', key('queue', id), expiry)
local opening = redis.call('HGET', key('taker', id), 'opening')
if opening then redis.call('PEXPIRE', taken(id, opening), expiry) end
local watcher = consumer(id, redis.call('GET', key('owner', id)))
-- Its lineage and name stay, expiring with the status, for operators.
redis.call('PEXPIRE', key('behavior', id), expiry)
redis.call('PEXPIRE', key('name', id), expiry)
redis.call('DEL', key('address', id), key('owner', id), key('taker', id))
ring(watcher, id)
return 1
",
    )
});

/// Puts entries back at the front of a queue (ARGV[4..], last first),
/// ringing the owner's watcher if the queue was empty; not for an entity
/// that is gone (-1) or terminated (-2). ARGV: id, entries.
pub(crate) static PUSH_FRONT: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
local id = ARGV[3]
local status = redis.call('GET', key('status', id))
if not status then return -1 end
if status == 'INACTIVE' then return -2 end
if status ~= 'ACTIVE' then error({err = 'UNKNOWNSTATUS ' .. status}) end
local len = redis.call('LPUSH', key('queue', id), unpack(ARGV, 4))
if len == #ARGV - 3 then ring(consumer(id, redis.call('GET', key('owner', id))), id) end
return len
",
    )
});

/// What an operator sees of an entity: its state, owner, whether that
/// owner is alive ('1', '0' or '' for none), address, lineage, name and
/// queue length. ARGV: id.
pub(crate) static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
local id = ARGV[3]
local s, owner, address = state(id)
local living = ''
if owner then living = alive(owner) and '1' or '0' end
return {s, owner or '', living, address or '', redis.call('GET', key('behavior', id)) or '',
  redis.call('GET', key('name', id)) or '', redis.call('LLEN', key('queue', id))}
",
    )
});

/// The state of an entity (see the prelude). ARGV: id.
pub(crate) static STATUS: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
return state(ARGV[3])
",
    )
});

/// One step of a scan of a behavior's index from cursor ARGV[6]: the next
/// cursor ('0' at the end), then the agents met (id, then name or ''),
/// with ARGV[4] = '1' only those whose lineage starts with it, with
/// ARGV[5] = '1' inactive ones too. Members that are gone (expired,
/// terminated) leave the index. A step costs O(ARGV[7]) members, so a
/// discovery of many agents never holds Redis for long; all of it is
/// O(members). KEYS: index. ARGV: behavior, exact, include inactive,
/// cursor, count.
pub(crate) static DISCOVER: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
local found = {}
local prefix = ARGV[3] .. ','
local step = redis.call('SSCAN', KEYS[1], ARGV[6], 'COUNT', ARGV[7])
table.insert(found, step[1])
for _, id in ipairs(step[2]) do
  -- One entity in a state this version does not know is left out, not
  -- the whole discovery failed.
  local known, s = pcall(state, id)
  if not known then
  elseif s == 'missing' or s == 'terminated' then
    redis.call('SREM', KEYS[1], id)
  elseif s ~= 'inactive' or ARGV[5] == '1' then
    local keep = true
    if ARGV[4] == '1' then
      local lineage = redis.call('GET', key('behavior', id))
      keep = lineage == ARGV[3] or (lineage and string.sub(lineage, 1, #prefix) == prefix)
    end
    if keep then
      table.insert(found, id)
      table.insert(found, redis.call('GET', key('name', id)) or '')
    end
  end
end
return found
",
    )
});

/// Routes or queues messages in one round trip: unknown -> -1, terminated
/// -> -2, inactive -> -3 (unless ARGV[5] = 'queue'); with ARGV[4] = 'route'
/// and a live address, that address and the mailbox's opening; otherwise
/// pushes ARGV[7..] (if any) onto the queue (ringing the owner's watcher if
/// it was empty, with a copy of the one entry if ARGV[6] = 'copy') and
/// returns 1 if the mailbox listens, else 0. ARGV: id, mode, policy, copy,
/// entries...
pub(crate) static SEND: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
local id, n = ARGV[3], #ARGV - 6
local s, owner, address = state(id)
if s == 'missing' then return -1 end
if s == 'terminated' then return -2 end
if s == 'inactive' and ARGV[5] ~= 'queue' then return -3 end
if address and ARGV[4] == 'route' then return {address, redis.call('HGET', key('taker', id), 'opening') or ''} end
local copy = ARGV[6] == 'copy' and n == 1 and ARGV[7]
if n > 0 then pushed(id, s, owner, redis.call('RPUSH', key('queue', id), unpack(ARGV, 7)), n, copy) end
if address then return 1 end
return 0
",
    )
});

/// Run (in the same transaction) after a plain `RPUSH` of ARGV[5] entries
/// too large to pass through a script: checks the destination as [`SEND`]
/// does, and takes the entries back off the queue if it refuses them.
/// ARGV: id, policy, count.
pub(crate) static PUSHED: LazyLock<String> = LazyLock::new(|| {
    format!(
        r"{PRELUDE}
local id, n = ARGV[3], tonumber(ARGV[5])
local s, owner, address = state(id)
local refused = (s == 'missing' and -1) or (s == 'terminated' and -2) or (s == 'inactive' and ARGV[4] ~= 'queue' and -3)
if refused then
  redis.call('LTRIM', key('queue', id), 0, -(n + 1))
  return refused
end
pushed(id, s, owner, redis.call('LLEN', key('queue', id)), n)
if address then return 1 end
return 0
"
    )
});

/// Opens a mailbox: this process owns the entity, its keys stop expiring,
/// its address (if any) is published, and what the previous opening popped
/// and did not hand back (it crashed, or is being taken over) goes back to
/// the queue. The opening is recorded in `ns:taker:<id>` (process token,
/// opening id, entries of its taken list acknowledged so far); a previous
/// opening still alive sees that and ends. Missing -> -1, terminated -> -2,
/// else the queue's length. ARGV: id, token, address ('' for none), opening.
pub(crate) static OPEN: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
local id, token, address, opening = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local s = state(id)
if s == 'missing' then return -1 end
if s == 'terminated' then return -2 end
redis.call('SET', key('owner', id), token)
if address ~= '' then redis.call('SET', key('address', id), address) else redis.call('DEL', key('address', id)) end
local previous = redis.call('HGET', key('taker', id), 'opening')
if previous and previous ~= '' then restore(id, previous) end
-- The previous opening's process looks at once, and sees it was taken over.
ring(redis.call('HGET', key('taker', id), 'token'), id)
redis.call('DEL', key('taker', id))
redis.call('HSET', key('taker', id), 'token', token, 'opening', opening, 'trimmed', 0, 'discarded', 0)
persist(id)
return redis.call('LLEN', key('queue', id))
",
    )
});

/// Acknowledges the taken list of an opening up to entry ARGV[5] (counted
/// from its start), idempotently: a retried acknowledgement trims nothing
/// twice. A terminated mailbox's entries count as acknowledged (they are
/// refused as they are read). -1 if another opening took the mailbox over;
/// -3 if no opening is recorded (Redis lost it: retry once it is written
/// again). ARGV: id, opening, count.
pub(crate) static ACK: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
local id, opening, upto = ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('GET', key('status', id)) == 'INACTIVE' then return upto end
local taker = key('taker', id)
local current = redis.call('HGET', taker, 'opening')
if not current then return -3 end
if current ~= opening then return -1 end
local trimmed = tonumber(redis.call('HGET', taker, 'trimmed'))
if upto > trimmed then
  redis.call('LTRIM', taken(id, opening), upto - trimmed, -1)
  redis.call('HSET', taker, 'trimmed', upto)
end
return upto
",
    )
});

/// Hands the last ARGV[5] entries of opening ARGV[4]'s taken list back to
/// the front of the queue (a take that found the mailbox taken over), and
/// rings the process that reads the queue now. ARGV: id, opening, count.
pub(crate) static HAND_BACK: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
local id, opening = ARGV[3], ARGV[4]
for _ = 1, tonumber(ARGV[5]) do
  if not redis.call('LMOVE', taken(id, opening), key('queue', id), 'RIGHT', 'LEFT') then break end
end
ring(consumer(id, redis.call('GET', key('owner', id))), id)
return 1
",
    )
});

/// Deletes an (undecodable) entry from an opening's taken list and counts it,
/// so [`RESYNC`] knows where the list's unseen tail starts (counted only
/// while that opening is the recorded one). That opening's [`CLAIM`] of
/// position ARGV[3] (the entry's, if not 0) is void: the position becomes
/// the next entry's.
/// KEYS: taken list, taker. ARGV: entry, opening, claim.
pub(crate) static DISCARD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('LREM', KEYS[1], 1, ARGV[1])
if n > 0 and redis.call('HGET', KEYS[2], 'opening') == ARGV[2] then
  redis.call('HINCRBY', KEYS[2], 'discarded', n)
  if ARGV[3] ~= '0' and redis.call('HGET', KEYS[2], 'claimed') == ARGV[3] then
    redis.call('HSET', KEYS[2], 'claimed', tonumber(ARGV[3]) - 1)
  end
end
return n
",
    )
});

/// Run in a take's pipeline right after its moves, when the mailbox's
/// consumer waits with everything before acknowledged: claims the entry at
/// position ARGV[2] (the first the take moved, if it moved one) for the
/// consumer, so it is handed out without a round trip of its own. What is
/// left of the earlier positions (a previous take's claim) is trimmed. The
/// claim itself is logical (`claimed` in the taker): the entry stays in the
/// taken list until an acknowledgement (or the next claim) trims it, and
/// `restore` drops it instead of putting it back, while a lost reply
/// ([`RESYNC`]) or an undecodable entry ([`DISCARD`]) voids it. Returns the
/// opening that takes from the queue now (the take's `HGET`), and 1 if it
/// claimed. KEYS: taker, taken list. ARGV: opening, position.
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('HGET', KEYS[1], 'opening')
if current ~= ARGV[1] then return {current or false, 0} end
local before = tonumber(ARGV[2]) - 1
local trimmed = tonumber(redis.call('HGET', KEYS[1], 'trimmed') or '0')
if before > trimmed then
  redis.call('LTRIM', KEYS[2], before - trimmed, -1)
  redis.call('HSET', KEYS[1], 'trimmed', before)
end
if redis.call('LLEN', KEYS[2]) == 0 then return {current, 0} end
redis.call('HSET', KEYS[1], 'claimed', ARGV[2])
return {current, 1}
",
    )
});

/// After a take whose reply was lost (Redis failed mid-pipeline; with a
/// persistent Redis its moves may have happened): the entries of the
/// opening's taken list past the ARGV[2] its watcher saw moved, less what
/// was acknowledged or discarded since. Empty if the opening is no longer
/// recorded. A [`CLAIM`] of position ARGV[3] that take made (if not 0) is
/// void: the watcher never handed that entry out. KEYS: taker, taken list.
/// ARGV: opening, moved, claim.
pub(crate) static RESYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'opening') ~= ARGV[1] then return {} end
if ARGV[3] ~= '0' and redis.call('HGET', KEYS[1], 'claimed') == ARGV[3] then
  redis.call('HSET', KEYS[1], 'claimed', tonumber(ARGV[3]) - 1)
end
local gone = tonumber(redis.call('HGET', KEYS[1], 'trimmed') or '0')
  + tonumber(redis.call('HGET', KEYS[1], 'discarded') or '0')
return redis.call('LRANGE', KEYS[2], tonumber(ARGV[2]) - gone, -1)
",
    )
});

/// Marks an entity whose agent failed in this process (ARGV[4]) inactive at
/// once, as if its process had died: it leaves discovery, sends fail with
/// `Inactive` (or queue, if asked), and its keys expire unless it is
/// launched again (which takes ownership back). ARGV: id, token.
pub(crate) static FAILED: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
local id, token = ARGV[3], ARGV[4]
if redis.call('GET', key('owner', id)) ~= token then return 0 end
redis.call('SET', key('owner', id), token .. ':failed')
state(id)
return 1
",
    )
});

/// Closes an opening of a mailbox: its address goes (if it is still this
/// one's), what it popped but did not hand out goes back to the queue (all
/// past position ARGV[6], the last its consumer took or was handed as
/// claimed), and it is no longer recorded (if it still was). ARGV: id,
/// opening, address, acknowledged.
pub(crate) static CLOSE: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
local id, opening, address = ARGV[3], ARGV[4], ARGV[5]
if address ~= '' and redis.call('GET', key('address', id)) == address then redis.call('DEL', key('address', id)) end
local status = redis.call('GET', key('status', id))
if status and status ~= 'INACTIVE' then
  -- Whoever reads the queue now (another opening) looks at what came back.
  if restore(id, opening, tonumber(ARGV[6])) > 0 then ring(consumer(id, redis.call('GET', key('owner', id))), id) end
  local ttl = redis.call('PTTL', key('status', id))
  if ttl > 0 then redis.call('PEXPIRE', key('queue', id), ttl) end
end
redis.call('DEL', taken(id, opening))
-- A tombstone, not a deletion: an older opening still running sees that
-- it was taken over.
if redis.call('HGET', key('taker', id), 'opening') == opening then
  redis.call('HSET', key('taker', id), 'opening', '', 'token', '')
end
return 1
",
    )
});

/// Writes an entity's registration again after Redis lost it, without
/// undoing anything newer: terminated -> 0; served by another live process
/// -> 2; else re-written, owned by this process -> 1. For an open mailbox,
/// its opening is recorded again, with the entries it took before the loss
/// counted as acknowledged. ARGV: id, token, lineage, address ('' for
/// none), opening ('' for none), entries taken so far, name ('' for none).
pub(crate) static REASSERT: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
local id, token, lineage, address = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local status = redis.call('GET', key('status', id))
if status == 'INACTIVE' then return 0 end
local owner = redis.call('GET', key('owner', id))
if owner and owner ~= token and alive(owner) then return 2 end
if not status then redis.call('SET', key('status', id), 'ACTIVE') end
if lineage ~= '' and not redis.call('GET', key('behavior', id)) then
  redis.call('SET', key('behavior', id), lineage)
  index(id, lineage, 'SADD')
end
redis.call('SET', key('owner', id), token)
if address ~= '' then redis.call('SET', key('address', id), address) end
if ARGV[7] ~= '' then
  if redis.call('EXISTS', key('taker', id)) == 0 then
    redis.call('HSET', key('taker', id), 'token', token, 'opening', ARGV[7], 'trimmed', ARGV[8], 'discarded', 0)
  end
  redis.call('PERSIST', taken(id, ARGV[7]))
end
if ARGV[9] ~= '' and not redis.call('GET', key('name', id)) then redis.call('SET', key('name', id), ARGV[9]) end
persist(id)
return 1
",
    )
});

/// Of the ids ARGV[4..], those this process (ARGV[3]) no longer owns:
/// terminated, or claimed by another process. Run with each lease renewal.
pub(crate) static DISOWNED: LazyLock<Script> = LazyLock::new(|| {
    entity_script(
        r"
local token, gone = ARGV[3], {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local owner = redis.call('GET', key('owner', id))
  if redis.call('GET', key('status', id)) == 'INACTIVE' or (owner and owner ~= token) then
    table.insert(gone, id)
  end
end
return gone
",
    )
});

/// Of the (id, opening) pairs ARGV[2..], the ids whose queue holds
/// anything or whose opening is no longer recorded (taken over, or
/// terminated). ARGV[1]: namespace.
pub(crate) static NEEDS_A_LOOK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local found = {}
for i = 2, #ARGV, 2 do
  local id, opening = ARGV[i], ARGV[i + 1]
  local taker = redis.call('HGET', ARGV[1] .. ':taker:' .. id, 'opening')
  if redis.call('LLEN', ARGV[1] .. ':queue:' .. id) > 0 or taker ~= opening then
    table.insert(found, id)
  end
end
return found
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
    /// Behind Sentinels: how to find the master again.
    failover: Option<Failover>,
}

/// What following a failover takes: the Sentinels, the connection settings,
/// the master in use, and whether it is being looked for.
pub(crate) struct Failover {
    pub(crate) source: super::source::Source,
    pub(crate) config: redis::aio::ConnectionManagerConfig,
    pub(crate) master: String,
    pub(crate) looking: bool,
}

/// A command failed as if the server were gone (or demoted): behind
/// Sentinels, look for the master.
#[derive(Message)]
#[rtype(result = "()")]
struct ServerLost;

/// Whether `e` says the server is gone or no longer the master.
pub(crate) fn server_lost(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
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
    pub(crate) fn new(
        redis: ConnectionManager,
        lease: Lease,
        lost_state: std::sync::Arc<tokio::sync::Notify>,
        failover: Option<Failover>,
    ) -> Self {
        Self { redis, lease, lost_state, failover }
    }
}

impl Actor for ExchangeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        use actix::{AsyncContext, WrapFuture};
        ctx.run_interval(self.lease.period, |act, ctx| {
            let (mut redis, refresh, lost_state) = (act.redis.clone(), act.lease.refresh(), act.lost_state.clone());
            let me = act.failover.as_ref().map(|_| ctx.address());
            ctx.spawn(
                async move {
                    match refresh.query_async::<Option<String>>(&mut redis).await {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            tracing::warn!("the exchange's lease is gone from Redis; registering again");
                            lost_state.notify_one();
                        }
                        Err(e) => {
                            tracing::warn!("could not renew the exchange's lease: {e}");
                            if let Some(me) = me.filter(|_| server_lost(&e)) {
                                me.do_send(ServerLost);
                            }
                        }
                    }
                }
                .into_actor(act),
            );
        });
    }
}

impl<T: FromRedisValue + Send + 'static> Handler<Call<T>> for ExchangeActor {
    type Result = ResponseFuture<Result<T, Error>>;

    fn handle(&mut self, Call(request, _): Call<T>, ctx: &mut Context<Self>) -> Self::Result {
        use actix::AsyncContext;
        let mut redis = self.redis.clone();
        let me = self.failover.as_ref().map(|_| ctx.address());
        Box::pin(async move {
            let result: redis::RedisResult<T> = match request {
                Request::Cmd(cmd) => cmd.query_async(&mut redis).await,
                Request::Pipeline(pipe) => pipe.query_async(&mut redis).await,
                Request::Script(script) => script.invoke_async(&mut redis).await,
            };
            if let (Err(e), Some(me)) = (&result, me) {
                if server_lost(e) {
                    me.do_send(ServerLost);
                }
            }
            Ok(result?)
        })
    }
}

/// Asks the Sentinels for the master (one look at a time); moves to it if
/// it changed, and has the exchange write its state again there (what the
/// old master had not yet passed on is gone).
impl Handler<ServerLost> for ExchangeActor {
    type Result = ();

    fn handle(&mut self, _: ServerLost, ctx: &mut Context<Self>) {
        use actix::{ActorFutureExt, AsyncContext, WrapFuture};
        let Some(failover) = self.failover.as_mut().filter(|f| !f.looking) else { return };
        failover.looking = true;
        let (source, config, master) = (failover.source.clone(), failover.config.clone(), failover.master.clone());
        let look = async move {
            let client = source.client().await?;
            let found = client.get_connection_info().addr().to_string();
            if found == master {
                // Not failed over (yet): the next failure looks again.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                return Ok::<_, Error>(None);
            }
            let redis = client.get_connection_manager_with_config(config).await?;
            Ok(Some((found, redis)))
        };
        ctx.spawn(look.into_actor(self).map(|found, act, _| {
            let Some(failover) = act.failover.as_mut() else { return };
            failover.looking = false;
            match found {
                Ok(Some((master, redis))) => {
                    tracing::warn!(from = %failover.master, to = %master, "Redis failed over; using the new master");
                    failover.master = master;
                    act.redis = redis;
                    act.lost_state.notify_one();
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("could not find the Redis master from the Sentinels: {e}"),
            }
        }));
    }
}

impl Handler<Stop> for ExchangeActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        actix::ActorContext::stop(ctx);
    }
}
