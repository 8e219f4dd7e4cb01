//! The crate's error type: one enum, each variant naming the entity or the
//! operation involved, so callers branch on meaning rather than on strings.

use std::time::Duration;

use crate::identifier::EntityId;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No mailbox was ever registered for this id.
    #[error("unknown entity {0}: no mailbox is registered for it")]
    BadEntityId(EntityId),
    /// The mailbox was terminated: it accepts no more messages.
    #[error("mailbox of {0} is closed")]
    MailboxClosed(EntityId),
    /// The entity's process is gone (it stopped renewing its lease): the
    /// message was not queued. It may come back under the same id.
    #[error("{0} is inactive: its process is gone")]
    Inactive(EntityId),
    /// The agent's actor has stopped (it failed, or was shut down): its
    /// state can no longer be changed.
    #[error("the actor of {0} has stopped")]
    AgentStopped(EntityId),
    /// The mailbox is open elsewhere: still open in this process (its
    /// earlier opening did not close in time), or taken over by an opening
    /// in another process.
    #[error("the mailbox of {0} is open elsewhere")]
    MailboxInUse(EntityId),
    /// An id that does not parse, or an agent id that names a client.
    #[error(transparent)]
    Id(#[from] crate::identifier::IdError),
    /// Nothing arrived within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Redis could not be reached or refused a command.
    #[error("redis: {0}")]
    Redis(redis::RedisError),
    /// Redis is out of memory (its `maxmemory`, with no eviction) and refused
    /// to store the message: nothing of it was kept. Retry later, or give
    /// Redis more memory (`CONFIG SET maxmemory`).
    #[error("Redis is full (maxmemory reached) and refused the write: {0}")]
    RedisFull(redis::RedisError),
    /// Redis holds a mailbox state this version does not know (written by
    /// a newer version, or by hand): nothing is routed on a guess.
    #[error("Redis holds an unknown mailbox state {0:?}")]
    UnknownStatus(String),
    /// The exchange could not connect to Redis when it started.
    #[error("cannot reach Redis at {url}: {source}")]
    RedisUnreachable {
        /// The URL tried, its credentials hidden.
        url: String,
        /// What the connection attempt said.
        source: redis::RedisError,
    },
    /// A socket operation failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A message (or a value in it) that does not encode or decode.
    #[error(transparent)]
    Wire(#[from] crate::message::WireError),
    /// A peer connection failed its handshake: not an academy peer, or it
    /// hung up.
    #[error("peer handshake failed: {0}")]
    Handshake(&'static str),
    /// A peer and this process do not agree on how to talk: a
    /// misconfiguration, reported once per peer.
    #[error("peer refused: {0}")]
    Rejected(Rejection),
    /// The exchange's configuration cannot work (an address that cannot be
    /// bound or published, an interface that does not exist...).
    #[error("configuration: {0}")]
    Config(String),
    /// A peer connection broke the protocol or went away.
    #[error("peer connection: {0}")]
    Peer(&'static str),
    /// A message larger than the frame cap (`max_frame_len`): it is not sent.
    #[error("a message of {len} bytes is over the {max}-byte cap")]
    TooLarge {
        /// Its encoded size.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The handle was closed: pending and new calls fail.
    #[error("the handle was closed")]
    HandleClosed,
    /// The agent answered with an error of the runtime (unknown action,
    /// undecodable arguments, agent stopped before answering).
    #[error("remote error: {0}")]
    Remote(#[from] crate::message::RemoteError),
    /// The agent did not answer pings for too long: presumed dead.
    #[error("{agent} has not answered for {silent:?}; presumed dead")]
    Unresponsive {
        /// The silent agent.
        agent: EntityId,
        /// How long it has been silent.
        silent: Duration,
    },
    /// A reply whose body does not answer the request.
    #[error("unexpected reply to a request: {0}")]
    UnexpectedReply(String),
    /// The exchange (or the actor behind it) was closed.
    #[error("the exchange is closed")]
    ExchangeClosed,
}

/// Why a peer and this process refused each other at the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The two ends do not share the secret.
    #[error("the two ends do not share the secret")]
    Secret,
    /// The peer speaks another protocol version (this one's is in the message).
    #[error("the peer speaks protocol version {0}, this process {v}", v = crate::message::PROTOCOL_VERSION)]
    Version(u8),
    /// The process at the address reached does not serve that mailbox (it
    /// closed or moved, or the advertised address is wrong).
    #[error("the process at that address does not serve the mailbox (it closed or moved, or the address is wrong)")]
    Destination,
    /// One end encrypts and the other does not, or they encrypt differently
    /// (Noise or TLS).
    #[error("the two ends protect peer links differently (plain, Noise or TLS)")]
    Protection,
    /// A TLS peer's certificate was refused, or it refused this process's
    /// (another CA, a name that does not match, none presented).
    #[error("a TLS certificate was refused (another CA, or a name that does not match)")]
    Certificate,
}

impl From<redis::RedisError> for Error {
    /// A script's refusal to act on a state it does not know (its error
    /// code `UNKNOWNSTATUS`) becomes [`Error::UnknownStatus`]; Redis out of
    /// memory (`OOM`) [`Error::RedisFull`].
    fn from(e: redis::RedisError) -> Self {
        match e.code() {
            Some("OOM") => {
                metrics::counter!("academy_redis_full_total").increment(1);
                Error::RedisFull(e)
            }
            Some("UNKNOWNSTATUS") => {
                let word = e.detail().unwrap_or_default().split_whitespace().next().unwrap_or_default();
                Error::UnknownStatus(word.to_owned())
            }
            _ => Error::Redis(e),
        }
    }
}

impl From<Rejection> for Error {
    fn from(rejection: Rejection) -> Self {
        Error::Rejected(rejection)
    }
}

impl From<rmp_serde::decode::Error> for Error {
    fn from(e: rmp_serde::decode::Error) -> Self {
        Error::Wire(e.into())
    }
}

impl From<rmp_serde::encode::Error> for Error {
    fn from(e: rmp_serde::encode::Error) -> Self {
        Error::Wire(e.into())
    }
}

/// How a call to an action whose result is `Result<T, E>` fails: the
/// action returned its own error, or the call did not get an answer.
///
/// ```
/// use actix_academy::{ActionError, Error};
/// let e: ActionError<String> = ActionError::Action("out of stock".into());
/// assert_eq!(e.to_string(), "the action failed: out of stock");
/// let e: ActionError<String> = Error::HandleClosed.into();
/// assert!(matches!(e, ActionError::Call(Error::HandleClosed)));
/// ```
#[derive(Debug)]
pub enum ActionError<E> {
    /// The action ran and returned `Err(E)`.
    Action(E),
    /// The call failed: the agent could not be reached, did not answer,
    /// refused the request...
    Call(Error),
}

impl<E> From<Error> for ActionError<E> {
    fn from(e: Error) -> Self {
        ActionError::Call(e)
    }
}

impl<E: std::fmt::Display> std::fmt::Display for ActionError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionError::Action(e) => write!(f, "the action failed: {e}"),
            ActionError::Call(e) => write!(f, "the call failed: {e}"),
        }
    }
}

/// So an action whose error type is `String` can `?` a failed call to
/// another agent: `let price = market.quote().await?;`.
impl<E: std::fmt::Display> From<ActionError<E>> for String {
    fn from(e: ActionError<E>) -> Self {
        e.to_string()
    }
}

/// So an action whose error type is `String` can `?` a failed call or a
/// failed `ctx.update(..)`.
impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.to_string()
    }
}

/// Any displayable action error will do (a `String`, say), so `?` turns an
/// `ActionError` into a `Box<dyn Error>`.
impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for ActionError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ActionError::Action(_) => None,
            ActionError::Call(e) => Some(e),
        }
    }
}
