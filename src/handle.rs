//! Typed remote handles. An [`UnboundRemoteHandle<B>`] is just an agent's id:
//! cheap, serializable, safe to pass inside messages, and unable to call
//! anything. Binding it (to a [`Client`] or, inside an agent, to the agent's
//! own mailbox through [`AgentContext`](crate::AgentContext)) gives a
//! [`RemoteHandle<B>`], which offers `B`'s actions as methods (through
//! `Deref` to `B::Calls`, which `#[agent]` writes) and `action(M)` for the
//! messages a hand-written behavior handles. Responses come back to the
//! bound mailbox and are routed by the handle's label and the request's tag.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Message};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::behavior::{Behavior, Handles, Update};
use crate::caller::{AgentContext, Caller, Calls, Client, Endpoint};
use crate::description::{Description, DESCRIBE};
use crate::error::Error;
use crate::exchange::{Exchange, WhenInactive};
use crate::identifier::{AgentId, EntityId};
use crate::message::{Body, RemoteErrorKind};
/// An agent's id as a handle that is not bound to any mailbox yet: it can be
/// stored and sent to other agents, but not used until bound.
///
/// ```
/// use actix_academy::{AgentId, UnboundRemoteHandle};
/// struct Counter;
/// let handle = UnboundRemoteHandle::new(AgentId::<Counter>::new(None));
/// let bytes = rmp_serde::to_vec(&handle).unwrap();
/// let back: UnboundRemoteHandle<Counter> = rmp_serde::from_slice(&bytes).unwrap();
/// assert_eq!(back.agent_id(), handle.agent_id());
/// ```
pub struct UnboundRemoteHandle<B> {
    agent: AgentId<B>,
}

impl<B> UnboundRemoteHandle<B> {
    /// A handle to `agent`.
    pub fn new(agent: AgentId<B>) -> Self {
        Self { agent }
    }

    /// The agent this handle calls.
    pub fn agent_id(&self) -> &AgentId<B> {
        &self.agent
    }

    /// Binds the handle to a new client of its own (registered, with its own
    /// mailbox); closing the handle terminates that client.
    pub async fn bind_as_client(self, exchange: &Exchange) -> Result<RemoteHandle<B>, Error>
    where
        B: Behavior,
    {
        let client = Client::connect(exchange, None).await?;
        Ok(client.endpoint.bind(self, Some(client.clone())))
    }

    /// Not callable: an unbound handle must be bound before it calls.
    #[doc(hidden)]
    pub async fn action<M>(&self, _message: M) -> Result<std::convert::Infallible, Error>
    where
        Self: Bound,
    {
        unreachable!("an unbound handle is never `Bound`")
    }

    /// Not callable: an unbound handle must be bound before it pings.
    #[doc(hidden)]
    pub async fn ping(&self) -> Result<Duration, Error>
    where
        Self: Bound,
    {
        unreachable!("an unbound handle is never `Bound`")
    }

    /// Not callable: an unbound handle must be bound before it asks.
    #[doc(hidden)]
    pub async fn shutdown(&self) -> Result<(), Error>
    where
        Self: Bound,
    {
        unreachable!("an unbound handle is never `Bound`")
    }
}

/// Only bound handles call agents; an unbound one says how to bind it.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "an unbound handle cannot call an agent",
    label = "bind this handle first",
    note = "in a client: `let handle = handle.bind_as_client(&exchange).await?;`",
    note = "inside an agent: `let handle = ctx.bind(handle);` (with `ctx: &AgentContext<Self>`)"
)]
pub trait Bound {}

impl<B: Behavior> Bound for RemoteHandle<B> {}

impl<B> Clone for UnboundRemoteHandle<B> {
    fn clone(&self) -> Self {
        Self::new(self.agent.clone())
    }
}

impl<B> fmt::Debug for UnboundRemoteHandle<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnboundRemoteHandle({})", self.agent)
    }
}

impl<B> Serialize for UnboundRemoteHandle<B> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.agent.serialize(s)
    }
}

impl<'de, B> Deserialize<'de> for UnboundRemoteHandle<B> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AgentId::deserialize(d).map(Self::new)
    }
}

impl Exchange {
    /// An unbound handle to agent `id`: bind it to call the agent.
    /// (Only agent ids have handles: a `ClientId` does not type-check.)
    pub fn get_handle<B: Behavior>(&self, id: AgentId<B>) -> UnboundRemoteHandle<B> {
        UnboundRemoteHandle::new(id)
    }
}

impl Endpoint {
    /// Binds `handle` here (see [`caller`](Self::caller)).
    pub(crate) fn bind<B: Behavior>(
        &self,
        handle: UnboundRemoteHandle<B>,
        owner: Option<Arc<Client>>,
    ) -> RemoteHandle<B> {
        RemoteHandle { calls: B::Calls::from_caller(self.caller(handle.agent, owner)) }
    }
}

impl Client {
    /// Binds a handle to this client's mailbox.
    pub fn bind<B: Behavior>(self: &Arc<Self>, handle: UnboundRemoteHandle<B>) -> RemoteHandle<B> {
        self.endpoint.bind(handle, None)
    }
}

/// A handle bound to a mailbox: calls the actions of agent `B`.
///
/// The actions of a behavior written with [`#[agent]`](crate::agent) are
/// methods of the handle (`market.place(order).await?`); the messages of a
/// hand-written one are sent with [`action`](Self::action). Clones share the
/// binding; [`close`](Self::close) closes it for all.
pub struct RemoteHandle<B: Behavior> {
    calls: B::Calls,
}

impl<B: Behavior> Clone for RemoteHandle<B> {
    fn clone(&self) -> Self {
        Self { calls: self.calls.clone() }
    }
}

impl<B: Behavior> fmt::Debug for RemoteHandle<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.caller(), f)
    }
}

impl<B: Behavior> std::ops::Deref for RemoteHandle<B> {
    type Target = B::Calls;

    fn deref(&self) -> &B::Calls {
        &self.calls
    }
}

impl<B: Behavior> RemoteHandle<B> {
    pub(crate) fn caller(&self) -> &Caller<B> {
        self.calls.caller()
    }

    /// The agent this handle calls.
    pub fn agent_id(&self) -> &AgentId<B> {
        &self.caller().agent
    }

    /// The mailbox responses come back to.
    pub fn mailbox_id(&self) -> &EntityId {
        &self.caller().shared.endpoint.me
    }

    /// The same binding, unbound again (to pass to another agent).
    pub fn unbound(&self) -> UnboundRemoteHandle<B> {
        UnboundRemoteHandle::new(self.caller().agent.clone())
    }

    /// How long the agent may stay silent while a call is pending before the
    /// call fails with [`Error::Unresponsive`] (`None`: wait forever). While
    /// waiting, the handle pings the agent, which answers even when busy.
    ///
    /// It is also the deadline of a call without a timeout: a request the
    /// agent has not *started* within it is never started (the caller gets
    /// [`RemoteErrorKind::DeadlinePassed`](crate::RemoteErrorKind) if it
    /// still waits), so a call that failed with `Unresponsive` never runs
    /// later. A backlog longer than this needs a longer timeout, or `None`.
    pub fn with_liveness_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.calls.caller_mut().liveness = timeout;
        self
    }

    /// A timeout for every call made through this handle (default none: a
    /// call waits as long as the agent answers pings, so a handler that
    /// never finishes, or an answer lost on the way, is only bounded by a
    /// timeout).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.calls.caller_mut().timeout = timeout;
        self
    }

    /// Whether calls to an agent whose process is gone ([inactive](crate::MailboxStatus::Inactive))
    /// wait in its queue for a restart (`true`) or fail at once with
    /// [`Error::Inactive`] (`false`, the default).
    pub fn queue_when_inactive(mut self, queue: bool) -> Self {
        self.calls.caller_mut().when_inactive = if queue { WhenInactive::Queue } else { WhenInactive::Fail };
        self
    }

    /// Sends the hand-written action message `M` and waits for its result.
    ///
    /// Compiles only if `B` handles `M`. An `M` whose result is
    /// `Result<T, E>` gives the agent's `Err(e)` back, typed. Dropping the
    /// returned future (or the call failing with `Unresponsive`) sends the
    /// agent a cancel: the action stops if it has not finished. The
    /// handle's [`with_timeout`](Self::with_timeout), if set, bounds it.
    pub async fn action<M>(&self, message: M) -> Result<M::Result, Error>
    where
        B: Handles<M>,
        M: Message + Send + Serialize + DeserializeOwned + 'static,
        M::Result: Send + Serialize + DeserializeOwned,
    {
        let caller = self.caller();
        caller.call_within(<B as Handles<M>>::action_name(), &message, caller.timeout).await
    }

    /// [`action`](Self::action), failing with [`Error::Timeout`] after
    /// `timeout`, which travels with the request as its deadline: the agent
    /// does not start it later, and cancels it if it runs by then.
    pub async fn action_timeout<M>(&self, message: M, timeout: Duration) -> Result<M::Result, Error>
    where
        B: Handles<M>,
        M: Message + Send + Serialize + DeserializeOwned + 'static,
        M::Result: Send + Serialize + DeserializeOwned,
    {
        self.caller().call_within(<B as Handles<M>>::action_name(), &message, Some(timeout)).await
    }

    /// The agent's behavior and actions, as it describes itself.
    pub async fn describe(&self) -> Result<Description, Error> {
        self.caller().__call(DESCRIBE, &()).await
    }

    /// Round-trip time of a ping to the agent.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let started = Instant::now();
        match self.caller().request(Body::PingRequest, None).await?.body {
            Body::PingResponse => Ok(started.elapsed()),
            // Academy 1.0: a refusal (terminated mailbox, cancelled ping).
            Body::ActionResponse { result: Err(e), .. } => Err(Error::Remote(e)),
            other => Err(Error::UnexpectedReply(format!("{other:?}"))),
        }
    }

    /// Asks the agent to shut down and waits until it has: its actor stopped,
    /// its mailbox terminated, its pending requests answered with errors
    /// (and not run). An agent that is already terminated counts as shut down.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.shutdown_with(true).await
    }

    /// [`shutdown`](Self::shutdown); with `terminate: false` the mailbox is
    /// only closed: the agent stays registered and what was sent to it waits
    /// in its queue, for an agent launched again under the same id.
    pub async fn shutdown_with(&self, terminate: bool) -> Result<(), Error> {
        let caller = self.caller();
        match caller.request(Body::ShutdownRequest { terminate }, None).await.map(|reply| reply.body) {
            Ok(Body::ShutdownResponse { result }) => Ok(result?),
            // Academy 1.0 answers a shutdown with the success it answers a
            // ping with, or with an error.
            Ok(Body::PingResponse) => Ok(()),
            Ok(Body::ActionResponse { result: Err(e), .. }) if e.kind == RemoteErrorKind::Terminated => Ok(()),
            Ok(Body::ActionResponse { result: Err(e), .. }) => Err(Error::Remote(e)),
            Ok(other) => Err(Error::UnexpectedReply(format!("{other:?}"))),
            Err(Error::MailboxClosed(id)) if id == *caller.agent.entity() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Fails pending calls with [`Error::HandleClosed`] and refuses new ones.
    /// A handle bound with `bind_as_client` also terminates its client.
    pub async fn close(&self) -> Result<(), Error> {
        let shared = &self.caller().shared;
        if shared.state.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        shared.state.fail_all(|| Error::HandleClosed);
        match &shared.owner {
            Some(client) => client.close().await,
            None => Ok(()),
        }
    }
}

impl<B: Behavior> AgentContext<B> {
    /// The agent's id.
    pub fn id(&self) -> &AgentId<B> {
        &self.id
    }

    /// The exchange the agent is registered with.
    pub fn exchange(&self) -> &Exchange {
        &self.endpoint.exchange
    }

    /// A handle to this agent itself, bound to its own mailbox (calls go
    /// through its mailbox like anyone's, so a call awaited inside an
    /// action needs a free slot: see `max_concurrency`).
    pub fn handle(&self) -> RemoteHandle<B> {
        self.endpoint.bind(UnboundRemoteHandle::new(self.id.clone()), None)
    }

    /// Binds a peer's handle to this agent's mailbox: responses come back
    /// through the agent's own mailbox, routed by label.
    pub fn bind<P: Behavior>(&self, handle: UnboundRemoteHandle<P>) -> RemoteHandle<P> {
        self.endpoint.bind(handle, None)
    }

    /// Changes the agent's own state and returns what `change` returns: it
    /// runs on the agent's actor between the messages the actor handles, so
    /// it sees and leaves the state whole. This is how an `async fn` action
    /// (which runs beside the agent's other requests and holds no borrow of
    /// the actor) updates the agent after awaiting other agents:
    ///
    /// ```ignore
    /// #[action]
    /// async fn buy(ctx: AgentContext<Self>, market: UnboundRemoteHandle<Market>, qty: u32) -> Result<u32, String> {
    ///     let left = ctx.bind(market).place(qty).await.map_err(|e| e.to_string())?;
    ///     ctx.update(move |me| me.bought += qty).await.map_err(|e| e.to_string())?;
    ///     Ok(left)
    /// }
    /// ```
    ///
    /// Fails with [`Error::AgentStopped`] once the actor has stopped.
    pub async fn update<R: Send + 'static>(
        &self,
        change: impl FnOnce(&mut B) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let stopped = || Error::AgentStopped(self.id.entity().clone());
        let addr = self.actor.get().and_then(|actor| actor.downcast_ref::<Addr<B>>()).ok_or_else(stopped)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let update = Update(Box::new(move |actor: &mut B| {
            let _ = tx.send(change(actor));
        }));
        addr.send(update).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    pub(crate) fn me(&self) -> &EntityId {
        &self.endpoint.me
    }
}
