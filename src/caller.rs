//! The untyped call machinery under typed handles: the mailbox answers
//! come back to ([`Endpoint`], a [`Client`]'s or an agent's own), the
//! routing of answers to the handle that asked, and a [`Caller`]: one
//! binding's requests, liveness pings, timeouts, cancels and refusals. It
//! knows nothing of behaviors; [`handle`](crate::handle) types it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, Instrument};
use uuid::Uuid;

use crate::error::{ActionError, Error};
use crate::exchange::{Exchange, WhenInactive};
use crate::identifier::{AgentId, ClientId, EntityId};
use crate::message::{deadline_in, Body, Envelope, RemoteErrorKind, TraceContext};

/// Default time an agent may stay silent (no reply, no pong) while a call to
/// it is pending, before the call fails with [`Error::Unresponsive`].
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(10);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Routes responses arriving at one mailbox to the handles bound to it.
#[derive(Debug, Default)]
pub(crate) struct Router {
    handles: Mutex<HashMap<Uuid, Weak<HandleState>>>,
}

impl Router {
    fn register(&self, state: &Arc<HandleState>) {
        lock(&self.handles).insert(state.label, Arc::downgrade(state));
    }

    fn unregister(&self, label: Uuid) {
        lock(&self.handles).remove(&label);
    }

    /// Hands a response to the handle that asked; drops strays with a note.
    pub(crate) fn route(&self, envelope: Envelope) {
        let state = envelope.label.and_then(|label| lock(&self.handles).get(&label).and_then(Weak::upgrade));
        match state {
            Some(state) => state.deliver(envelope),
            None => debug!(tag = %envelope.tag, "response for a handle that is gone"),
        }
    }

    /// Fails every pending call of every handle (the mailbox has closed).
    pub(crate) fn fail_all(&self, error: impl Fn() -> Error) {
        let states: Vec<_> = lock(&self.handles).values().filter_map(Weak::upgrade).collect();
        for state in states {
            state.fail_all(&error);
        }
    }
}

/// One handle's calls in flight.
#[derive(Debug)]
pub(crate) struct HandleState {
    label: Uuid,
    pending: Mutex<HashMap<Uuid, oneshot::Sender<Result<Envelope, Error>>>>,
    last_heard: Mutex<Instant>,
    pub(crate) closed: AtomicBool,
}

impl HandleState {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            label: Uuid::new_v4(),
            pending: Mutex::default(),
            last_heard: Mutex::new(Instant::now()),
            closed: AtomicBool::new(false),
        })
    }

    fn deliver(&self, envelope: Envelope) {
        *lock(&self.last_heard) = Instant::now();
        if let Some(waiter) = lock(&self.pending).remove(&envelope.tag) {
            let _ = waiter.send(Ok(envelope));
        }
    }

    pub(crate) fn fail_all(&self, error: impl Fn() -> Error) {
        for (_, waiter) in lock(&self.pending).drain() {
            let _ = waiter.send(Err(error()));
        }
    }
}

/// A mailbox that handles can be bound to: a client's, or an agent's own.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub(crate) exchange: Exchange,
    pub(crate) me: EntityId,
    pub(crate) router: Arc<Router>,
}

impl Endpoint {
    /// A caller of `agent` whose answers come back here (with `owner`, the
    /// client it created for itself, closed with it).
    pub(crate) fn caller<B>(&self, agent: AgentId<B>, owner: Option<Arc<Client>>) -> Caller<B> {
        let state = HandleState::new();
        self.router.register(&state);
        Caller {
            agent,
            shared: Arc::new(Shared { endpoint: self.clone(), state, owner }),
            liveness: Some(DEFAULT_LIVENESS_TIMEOUT),
            timeout: None,
            when_inactive: WhenInactive::Fail,
        }
    }
}

/// A registered client with its own mailbox, to which handles can be bound.
/// Responses are read by a background task. Closing (or dropping the last
/// handle that owns it) terminates the client's mailbox.
#[derive(Debug)]
pub struct Client {
    pub(crate) endpoint: Endpoint,
    closed: AtomicBool,
}

impl Client {
    /// Registers a client and opens its mailbox.
    pub async fn connect(exchange: &Exchange, name: Option<&str>) -> Result<Arc<Self>, Error> {
        let id: ClientId = exchange.register_client(name).await?;
        let mut mailbox = exchange.get_mailbox(&id).await?;
        let router = Arc::new(Router::default());
        let reader = router.clone();
        tokio::spawn(async move {
            loop {
                match mailbox.recv(None).await {
                    Ok(envelope) => reader.route(envelope),
                    Err(e) => {
                        let id = mailbox.id().clone();
                        reader.fail_all(|| Error::MailboxClosed(id.clone()));
                        debug!(client = %id, "client mailbox ended: {e}");
                        break;
                    }
                }
            }
        });
        Ok(Arc::new(Self {
            endpoint: Endpoint { exchange: exchange.clone(), me: id.into(), router },
            closed: AtomicBool::new(false),
        }))
    }

    /// The client's id.
    pub fn id(&self) -> &EntityId {
        &self.endpoint.me
    }

    /// Fails the pending calls of every handle bound here with
    /// [`Error::HandleClosed`] and terminates the client's mailbox.
    pub async fn close(&self) -> Result<(), Error> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.endpoint.router.fail_all(|| Error::HandleClosed);
        self.endpoint.exchange.terminate(&self.endpoint.me).await
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let (exchange, me) = (self.endpoint.exchange.clone(), self.endpoint.me.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { exchange.terminate(&me).await });
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) endpoint: Endpoint,
    pub(crate) state: Arc<HandleState>,
    /// The client this handle created for itself, if any.
    pub(crate) owner: Option<Arc<Client>>,
}

impl Shared {
    /// A message from the bound mailbox to `agent`, labelled so that its
    /// answer comes back to this handle.
    fn envelope(&self, agent: &EntityId, body: Body) -> Envelope {
        let mut envelope = Envelope::new(self.endpoint.me.clone(), agent.clone(), body);
        envelope.label = Some(self.state.label);
        envelope
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.endpoint.router.unregister(self.state.label);
    }
}

/// The binding behind a [`RemoteHandle`]: the generated call methods of a
/// behavior wrap one.
#[doc(hidden)]
pub struct Caller<B> {
    pub(crate) agent: AgentId<B>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) liveness: Option<Duration>,
    /// The timeout of calls made without one.
    pub(crate) timeout: Option<Duration>,
    pub(crate) when_inactive: WhenInactive,
}

impl<B> Clone for Caller<B> {
    fn clone(&self) -> Self {
        Self {
            agent: self.agent.clone(),
            shared: self.shared.clone(),
            liveness: self.liveness,
            timeout: self.timeout,
            when_inactive: self.when_inactive,
        }
    }
}

impl<B> fmt::Debug for Caller<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteHandle({} from {})", self.agent, self.shared.endpoint.me)
    }
}

/// A behavior's call methods: a [`Caller`] with one method per action.
#[doc(hidden)]
pub trait Calls<B>: Clone + fmt::Debug + Send + Sync + 'static {
    /// Wraps a binding.
    fn from_caller(caller: Caller<B>) -> Self;
    /// The binding.
    fn caller(&self) -> &Caller<B>;
    /// The binding, to configure.
    fn caller_mut(&mut self) -> &mut Caller<B>;
}

impl<B: 'static> Calls<B> for Caller<B> {
    fn from_caller(caller: Caller<B>) -> Self {
        caller
    }
    fn caller(&self) -> &Caller<B> {
        self
    }
    fn caller_mut(&mut self) -> &mut Caller<B> {
        self
    }
}

impl<B> Caller<B> {
    /// Calls `action` with `args` and decodes its result (for generated
    /// call methods).
    pub async fn __call<A, R>(&self, action: &str, args: &A) -> Result<R, Error>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.call_within(action, args, self.timeout).await
    }

    /// [`__call`](Self::__call) for an action whose result is `Result<T, E>`.
    pub async fn __call_fallible<A, T, E>(&self, action: &str, error_type: &str, args: &A) -> Result<T, ActionError<E>>
    where
        A: Serialize + ?Sized,
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let codec = self.shared.endpoint.exchange.codec();
        if !codec.typed_errors() {
            // The value comes alone, and the error as the text of a raised
            // exception, which names its type and holds the error if a Rust
            // agent raised it.
            return match self.__call::<A, T>(action, args).await {
                Ok(value) => Ok(value),
                Err(Error::Remote(e)) if e.kind == RemoteErrorKind::Raised => {
                    match codec.raised(error_type, &e.message) {
                        Some(error) => Err(ActionError::Action(error)),
                        None => Err(ActionError::Call(Error::Remote(e))),
                    }
                }
                Err(e) => Err(ActionError::Call(e)),
            };
        }
        match self.__call::<A, Result<T, E>>(action, args).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ActionError::Action(e)),
            Err(e) => Err(ActionError::Call(e)),
        }
    }

    /// Sends a one-way action: returns once the exchange has it (sent, or
    /// queued), without waiting for the agent.
    pub async fn __tell<A>(&self, action: &str, args: &A) -> Result<(), Error>
    where
        A: Serialize + ?Sized,
    {
        if self.shared.state.closed.load(Ordering::Acquire) {
            return Err(Error::HandleClosed);
        }
        let body = Body::ActionRequest { action: action.to_owned(), args: self.encode(args)? };
        // No label: nobody waits for an answer (an agent that does not
        // know the action as one-way answers, and the answer is dropped).
        let mut envelope = Envelope::new(self.shared.endpoint.me.clone(), self.agent.entity().clone(), body);
        let trace = TraceContext::new();
        envelope.trace = Some(trace);
        let span = tracing::debug_span!("academy.call", trace_id = %trace.trace_id_hex(), agent = %self.agent, action = %action);
        self.shared.endpoint.exchange.send_with(envelope, self.when_inactive).instrument(span).await
    }

    /// Arguments as MessagePack for this handle's exchange.
    fn encode<A: Serialize + ?Sized>(&self, args: &A) -> Result<bytes::Bytes, Error> {
        Ok(self.shared.endpoint.exchange.codec().encode(args)?)
    }

    pub(crate) async fn call_within<A, R>(&self, action: &str, args: &A, timeout: Option<Duration>) -> Result<R, Error>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let body = Body::ActionRequest { action: action.to_owned(), args: self.encode(args)? };
        match self.request(body, timeout).await?.body {
            Body::ActionResponse { result: Ok(bytes), .. } => {
                Ok(self.shared.endpoint.exchange.codec().decode(&bytes)?)
            }
            Body::ActionResponse { result: Err(e), .. } => Err(Error::Remote(e)),
            other => Err(Error::UnexpectedReply(format!("{other:?}"))),
        }
    }

    /// Sends a request and waits for its answer; an action request starts
    /// a trace, and runs in an `academy.call` span that records its id.
    pub(crate) async fn request(&self, body: Body, timeout: Option<Duration>) -> Result<Envelope, Error> {
        let Body::ActionRequest { action, .. } = &body else {
            return self.request_traced(body, timeout, None).await;
        };
        let trace = TraceContext::new();
        let span = tracing::debug_span!("academy.call", trace_id = %trace.trace_id_hex(), agent = %self.agent, action = %action);
        self.request_traced(body, timeout, Some(trace)).instrument(span).await
    }

    async fn request_traced(
        &self,
        body: Body,
        timeout: Option<Duration>,
        trace: Option<TraceContext>,
    ) -> Result<Envelope, Error> {
        let state = &self.shared.state;
        if state.closed.load(Ordering::Acquire) {
            return Err(Error::HandleClosed);
        }
        let endpoint = &self.shared.endpoint;
        let is_action = matches!(body, Body::ActionRequest { .. });
        let mut envelope = self.shared.envelope(self.agent.entity(), body);
        envelope.trace = trace;
        if is_action {
            envelope.deadline = timeout.or(self.liveness).map(deadline_in);
        }
        let tag = envelope.tag;
        let (tx, rx) = oneshot::channel();
        lock(&state.pending).insert(tag, tx);
        let mut pending = Pending {
            handle: self.shared.as_ref(),
            agent: self.agent.entity(),
            tag,
            cancel: false,
            when_inactive: self.when_inactive,
        };
        // Subscribed before sending: a refusal that comes meanwhile is seen.
        let refusals = endpoint.exchange.refusals();
        endpoint.exchange.send_with(envelope, self.when_inactive).await?;
        if let Some(why) = endpoint.exchange.fatal_refusal(self.agent.entity()) {
            // Its link was refused, and Redis cannot deliver it either.
            return Err(Error::Rejected(why));
        }
        // From here, a call that ends without its answer cancels the action.
        pending.cancel = is_action;
        let reply = self.wait(rx, refusals);
        let reply = match timeout {
            Some(t) => tokio::time::timeout(t, reply).await.unwrap_or(Err(Error::Timeout(t))),
            None => reply.await,
        };
        if matches!(reply, Err(Error::Timeout(_) | Error::Unresponsive { .. })) && is_action {
            // Sent before the caller hears of the failure, so it reaches the
            // agent before anything the caller sends next.
            pending.cancel = false;
            let cancel = self.shared.envelope(self.agent.entity(), Body::CancelRequest { target: tag });
            if let Err(e) = endpoint.exchange.send_with(cancel, self.when_inactive).await {
                debug!(agent = %self.agent, "could not send a cancel: {e}");
            }
        }
        if matches!(reply, Ok(_) | Err(Error::Rejected(_))) {
            // Answered, or a cancel could not arrive either.
            pending.cancel = false;
        }
        reply
    }

    /// Waits for a reply; while it is missing, pings the agent now and then
    /// and gives up once it has been silent for the liveness timeout, or at
    /// once when its link is refused for a reason Redis cannot route around.
    async fn wait(
        &self,
        mut rx: oneshot::Receiver<Result<Envelope, Error>>,
        mut refusals: Option<tokio::sync::watch::Receiver<u64>>,
    ) -> Result<Envelope, Error> {
        let closed = || Error::HandleClosed;
        let exchange = &self.shared.endpoint.exchange;
        let refused = refused_now(refusals.as_mut(), exchange, self.agent.entity());
        tokio::pin!(refused);
        let Some(liveness) = self.liveness else {
            return tokio::select! {
                reply = &mut rx => reply.unwrap_or_else(|_| Err(closed())),
                why = &mut refused => Err(Error::Rejected(why)),
            };
        };
        let state = &self.shared.state;
        let asked = Instant::now();
        let check = (liveness / 5).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                reply = &mut rx => return reply.unwrap_or_else(|_| Err(closed())),
                why = &mut refused => return Err(Error::Rejected(why)),
                _ = tokio::time::sleep(check) => {
                    let silent = lock(&state.last_heard).max(asked).elapsed();
                    if silent >= liveness {
                        return Err(Error::Unresponsive { agent: self.agent.entity().clone(), silent });
                    }
                    if silent >= check {
                        let endpoint = &self.shared.endpoint;
                        let ping = self.shared.envelope(self.agent.entity(), Body::PingRequest);
                        // A caller that queues for an inactive agent waits
                        // for its restart; pings are not queued.
                        match endpoint.exchange.send(ping).await {
                            Err(Error::Inactive(_)) if self.when_inactive == WhenInactive::Queue => {}
                            sent => sent?,
                        }
                    }
                }
            }
        }
    }
}

/// Resolves once `agent` refused this process for a reason Redis cannot
/// route around (another secret or protocol version); never without a
/// hybrid exchange.
async fn refused_now(
    refusals: Option<&mut tokio::sync::watch::Receiver<u64>>,
    exchange: &Exchange,
    agent: &EntityId,
) -> crate::error::Rejection {
    let Some(refusals) = refusals else { return std::future::pending().await };
    loop {
        if refusals.changed().await.is_err() {
            return std::future::pending().await;
        }
        if let Some(why) = exchange.fatal_refusal(agent) {
            return why;
        }
    }
}

/// A call in flight: when it ends, however it ends, its entry goes, and if
/// it ended without an answer, the agent is sent a cancel.
struct Pending<'a> {
    handle: &'a Shared,
    agent: &'a EntityId,
    tag: Uuid,
    cancel: bool,
    /// A cancel follows its request into an inactive agent's queue.
    when_inactive: WhenInactive,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        lock(&self.handle.state.pending).remove(&self.tag);
        if self.cancel {
            let cancel = self.handle.envelope(self.agent, Body::CancelRequest { target: self.tag });
            self.handle.endpoint.exchange.post(cancel, self.when_inactive);
        }
    }
}

/// What an agent of behavior `B` knows of itself: its id, its exchange, its
/// own handle, and a way to bind peers' handles to its mailbox. An action
/// gets it by taking a `ctx: &AgentContext<Self>` parameter; a behavior
/// built by [`Agent::launch_with`](crate::Agent::launch_with) can keep it.
pub struct AgentContext<B> {
    pub(crate) endpoint: Endpoint,
    pub(crate) id: AgentId<B>,
    /// The behavior's actor (its `Addr<B>`), once started: what
    /// `update` sends its changes to.
    pub(crate) actor: Arc<std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>>,
}

impl<B> Clone for AgentContext<B> {
    fn clone(&self) -> Self {
        Self { endpoint: self.endpoint.clone(), id: self.id.clone(), actor: self.actor.clone() }
    }
}

impl<B> fmt::Debug for AgentContext<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentContext({})", self.id)
    }
}
