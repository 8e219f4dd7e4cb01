//! The agent runtime: a behavior's actor bound to its mailbox.
//!
//! [`Agent::launch`] opens the agent's mailbox and starts two actors on the
//! current arbiter: the behavior itself, and a runtime actor that reads the
//! mailbox. The runtime dispatches each action request by name (decode,
//! `addr.send`, encode, reply), answers pings, cancels actions on request,
//! routes responses to handles the behavior bound to this mailbox, and
//! carries out shutdown: it stops the behavior, terminates (or keeps) the
//! mailbox and answers every request still pending with an error.
//!
//! Each request runs at most once. The runtime does not start one whose
//! deadline has passed, remembers (over a bounded window) the requests it
//! started and answered, by sender and tag, so a copy delivered again after
//! a failover is not run again (an answered one gets its answer again).
//! While it runs `max_concurrency` actions it holds up to [`MAX_WAITING`]
//! requests more (or `max_concurrency`, if larger), then reads nothing, so
//! what it has not started stays in the mailbox (in Redis, for a restart)
//! instead of in memory; until then pings, cancels and shutdowns are read
//! and served at once.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::future::Shared;
use futures::FutureExt;
use tokio::sync::oneshot;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::behavior::{Behavior, Invocation};
use crate::caller::{AgentContext, Endpoint, Router};
use crate::description::{Description, DESCRIBE};
use crate::error::Error;
use crate::exchange::Exchange;
use crate::identifier::{AgentId, EntityId, Role};
use crate::mailbox::Mailbox;
use crate::message::{deadline_passed, Body, Envelope, RemoteError, RemoteErrorKind};

/// Requests an agent holds, not started, while it runs its maximum of
/// actions (at least `max_concurrency`).
pub const MAX_WAITING: usize = 1024;

/// Default number of actions one agent runs at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 256;

/// How an agent ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentExit {
    /// It was asked to shut down: its mailbox is terminated.
    Shutdown,
    /// Its actor stopped on its own (or its runtime did); its mailbox is
    /// still registered, so messages wait in Redis for a restart.
    Failed,
}

/// A running agent.
pub struct Agent<B: Behavior> {
    id: AgentId<B>,
    exchange: Exchange,
    addr: Addr<B>,
    runtime: Addr<Runtime<B>>,
    exit: Shared<oneshot::Receiver<AgentExit>>,
}

impl<B: Behavior> fmt::Debug for Agent<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Agent({})", self.id)
    }
}

impl<B: Behavior> Agent<B> {
    /// Registers a new agent of behavior `B` (named `name`, for display and
    /// discovery) and runs `behavior` as it.
    pub async fn start(behavior: B, exchange: &Exchange, name: Option<&str>) -> Result<Self, Error> {
        let id = exchange.register_agent(name).await?;
        Self::launch(behavior, id, exchange).await
    }

    /// Runs `behavior` as agent `id` (registered already: a restart under
    /// the same id, say): opens its mailbox and starts serving.
    pub async fn launch(behavior: B, id: AgentId<B>, exchange: &Exchange) -> Result<Self, Error> {
        Self::launch_with(id, exchange, DEFAULT_MAX_CONCURRENCY, |_| behavior).await
    }

    /// Like [`launch`](Self::launch), building the behavior from the agent's
    /// context (to keep it for calling peers) and bounding concurrent actions.
    pub async fn launch_with<F>(
        id: AgentId<B>,
        exchange: &Exchange,
        max_concurrency: usize,
        make: F,
    ) -> Result<Self, Error>
    where
        F: FnOnce(&AgentContext<B>) -> B,
    {
        // An id parsed from its UUID (a restart elsewhere) has no name: it
        // gets the one it was registered with, so it prints as before.
        let id = match id.name() {
            None => match exchange.registered_name(&id).await {
                Ok(Some(name)) => AgentId::from_entity(EntityId::from_parts(id.uid(), Role::Agent, Some(&name)))?,
                _ => id,
            },
            Some(_) => id,
        };
        let mailbox = exchange.get_mailbox(&id).await?;
        let context = AgentContext {
            endpoint: Endpoint {
                exchange: exchange.clone(),
                me: id.entity().clone(),
                router: Arc::new(Router::default()),
            },
            id: id.clone(),
            actor: Arc::default(),
        };
        let addr = make(&context).start();
        let _ = context.actor.set(Box::new(addr.clone()));
        let (exit_tx, exit_rx) = oneshot::channel();
        let runtime = Runtime {
            context,
            behavior: addr.clone(),
            mailbox: Some(mailbox),
            reading: None,
            waiting: VecDeque::new(),
            max_concurrency: max_concurrency.max(1),
            in_flight: HashMap::new(),
            recent: Recent::default(),
            shutdown: None,
            mailbox_done: false,
            exit: Some(exit_tx),
        }
        .start();
        debug!(agent = %id, behavior = B::name(), "agent launched");
        Ok(Self { id, exchange: exchange.clone(), addr, runtime, exit: exit_rx.shared() })
    }

    /// The agent's id.
    pub fn id(&self) -> &AgentId<B> {
        &self.id
    }

    /// The behavior's actor, for local messages.
    pub fn addr(&self) -> &Addr<B> {
        &self.addr
    }

    /// Waits until the agent ends.
    pub async fn wait(&self) -> AgentExit {
        self.exit.clone().await.unwrap_or(AgentExit::Failed)
    }

    /// Shuts the agent down as a remote `shutdown` would (its actor
    /// stopped, its mailbox terminated, its pending requests answered with
    /// errors) and waits until it has ended.
    pub async fn shutdown(&self) -> AgentExit {
        self.shutdown_with(true).await
    }

    /// [`shutdown`](Self::shutdown); with `terminate: false` the mailbox
    /// stays registered, with its queue, for the agent launched again.
    pub async fn shutdown_with(&self, terminate: bool) -> AgentExit {
        // A runtime that has ended already ignores it.
        let _ = self.runtime.send(Shutdown { terminate }).await;
        let exit = self.wait().await;
        if exit == AgentExit::Failed && terminate {
            // It had failed on its own, leaving its mailbox for a restart.
            if let Err(e) = self.exchange.terminate(self.id.entity()).await {
                warn!(agent = %self.id, "could not terminate the mailbox of a failed agent: {e}");
            }
        }
        exit
    }
}

/// Asks an agent's runtime to shut down, from its own process.
#[derive(Message)]
#[rtype(result = "()")]
struct Shutdown {
    terminate: bool,
}

impl<B: Behavior> Handler<Shutdown> for Runtime<B> {
    type Result = ();

    fn handle(&mut self, shutdown: Shutdown, ctx: &mut Context<Self>) {
        self.begin_shutdown(None, shutdown.terminate, ctx);
    }
}

/// Why the runtime is winding down.
enum Ending {
    /// Asked to: the requests to answer once done.
    Shutdown(Vec<Envelope>),
    /// The behavior stopped by itself.
    Failed,
}

/// A request by its sender and tag.
type RequestKey = (Uuid, Uuid);

fn request_key(envelope: &Envelope) -> RequestKey {
    (envelope.src.uid(), envelope.tag)
}

/// What the runtime remembers of a request it answered (or that was
/// cancelled before it came).
enum Remembered {
    /// Its answer, sent again to a copy.
    Answer(Box<Envelope>),
    /// Nobody waits for an answer (one-way, or cancelled first).
    Unanswered,
    /// Answered, but the answer was too large to keep (or was evicted to
    /// bound memory): a copy is told so, not run.
    Forgotten,
}

/// Requests answered lately, by sender and tag: a copy delivered again is
/// not run. Every request is remembered for the whole window, whatever the
/// size of its answer; only the answers kept are bounded in bytes.
#[derive(Default)]
struct Recent {
    answers: HashMap<RequestKey, Remembered>,
    /// Every remembered request, oldest first.
    order: VecDeque<RequestKey>,
    /// The requests whose answer is kept, oldest first.
    kept: VecDeque<RequestKey>,
    bytes: usize,
}

impl Recent {
    /// Requests remembered.
    const CAPACITY: usize = 16_384;
    /// Bytes of answers kept.
    const MAX_BYTES: usize = 16 << 20;
    /// The largest answer kept.
    const MAX_ANSWER: usize = 64 << 10;

    fn size(answer: &Envelope) -> usize {
        match &answer.body {
            Body::ActionResponse { result: Ok(bytes), .. } => bytes.len(),
            Body::ActionResponse { result: Err(e), .. } => e.message.len(),
            _ => 0,
        }
    }

    fn get(&self, key: &RequestKey) -> Option<&Remembered> {
        self.answers.get(key)
    }

    fn insert(&mut self, key: RequestKey, answer: Option<Envelope>) {
        let remembered = match answer {
            None => Remembered::Unanswered,
            Some(answer) if Self::size(&answer) > Self::MAX_ANSWER => Remembered::Forgotten,
            Some(answer) => {
                self.bytes += Self::size(&answer);
                self.kept.push_back(key);
                Remembered::Answer(Box::new(answer))
            }
        };
        match self.answers.insert(key, remembered) {
            Some(Remembered::Answer(old)) => self.bytes -= Self::size(&old),
            Some(_) => {}
            None => self.order.push_back(key),
        }
        while self.order.len() > Self::CAPACITY {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(Remembered::Answer(old)) = self.answers.remove(&oldest) {
                self.bytes -= Self::size(&old);
            }
        }
        // Over the byte bound, the oldest answers go; their requests stay.
        while self.bytes > Self::MAX_BYTES {
            let Some(oldest) = self.kept.pop_front() else { break };
            if let Some(entry @ Remembered::Answer(_)) = self.answers.get_mut(&oldest) {
                if let Remembered::Answer(old) = std::mem::replace(entry, Remembered::Forgotten) {
                    self.bytes -= Self::size(&old);
                }
            }
        }
        // `kept` may hold keys whose answers went another way; keep it short.
        if self.kept.len() > 2 * Self::CAPACITY {
            let answers = &self.answers;
            self.kept.retain(|key| matches!(answers.get(key), Some(Remembered::Answer(_))));
        }
    }
}

struct Runtime<B: Behavior> {
    context: AgentContext<B>,
    behavior: Addr<B>,
    /// The mailbox, unless a read holds it (or it is closed).
    mailbox: Option<Mailbox>,
    /// The read in progress.
    reading: Option<SpawnHandle>,
    /// Requests read while `max_concurrency` actions run; reading stops
    /// while [`MAX_WAITING`] (or `max_concurrency`) of them wait.
    waiting: VecDeque<Envelope>,
    max_concurrency: usize,
    /// Requests being served, by sender and tag.
    in_flight: HashMap<RequestKey, (SpawnHandle, Envelope)>,
    recent: Recent,
    shutdown: Option<Ending>,
    /// The mailbox has ended (terminated or closed).
    mailbox_done: bool,
    exit: Option<oneshot::Sender<AgentExit>>,
}

impl<B: Behavior> Actor for Runtime<B> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.read_next(ctx);
        ctx.run_interval(Duration::from_millis(100), |act, ctx| {
            if !act.behavior.connected() {
                return act.fail(ctx);
            }
            act.expire_waiting(ctx);
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.behavior.do_send(crate::behavior::StopAgent);
        let exit = match self.shutdown {
            Some(Ending::Shutdown(_)) => AgentExit::Shutdown,
            _ => AgentExit::Failed,
        };
        if let Some(tx) = self.exit.take() {
            let _ = tx.send(exit);
        }
        let id = self.context.me().clone();
        self.context.endpoint.router.fail_all(|| Error::MailboxClosed(id.clone()));
    }
}

impl<B: Behavior> Runtime<B> {
    /// Reads the next message, unless a read is under way, the mailbox is
    /// done, or too many requests wait for a free slot (then what is not
    /// read waits in the mailbox, and in Redis).
    fn read_next(&mut self, ctx: &mut Context<Self>) {
        let full = self.waiting.len() >= self.max_concurrency.max(MAX_WAITING);
        if self.reading.is_some() || full || matches!(self.shutdown, Some(Ending::Failed)) {
            return;
        }
        let Some(mut mailbox) = self.mailbox.take() else { return };
        let read = async move {
            let next = mailbox.recv_taken(None).await;
            (mailbox, next)
        };
        self.reading = Some(ctx.spawn(read.into_actor(self).map(|(mailbox, next), act, ctx| {
            act.reading = None;
            match next {
                Ok((envelope, doubtful)) => {
                    act.mailbox = Some(mailbox);
                    act.on_message(envelope, doubtful, ctx);
                }
                // Terminated (or the exchange closed): closing it hands
                // back what it holds.
                Err(_) => act.mailbox_ended(ctx),
            }
            act.read_next(ctx);
        })));
    }

    /// Closes the mailbox: what was not read stays queued for a restart.
    fn close_mailbox(&mut self, ctx: &mut Context<Self>) {
        if let Some(reading) = self.reading.take() {
            // Dropping the read drops (and so closes) the mailbox it holds.
            ctx.cancel_future(reading);
        }
        self.mailbox = None;
        self.mailbox_done = true;
    }

    /// Serves one message; `doubtful` if an earlier opening of the mailbox
    /// may have taken it.
    fn on_message(&mut self, envelope: Envelope, doubtful: bool, ctx: &mut Context<Self>) {
        match &envelope.body {
            Body::ActionRequest { .. } => self.on_request(envelope, doubtful, ctx),
            Body::PingRequest => self.reply(envelope.reply(Body::PingResponse)),
            Body::CancelRequest { target } => self.cancel((envelope.src.uid(), *target), ctx),
            Body::ShutdownRequest { terminate } => {
                let terminate = *terminate;
                self.begin_shutdown(Some(envelope), terminate, ctx)
            }
            _ => self.context.endpoint.router.route(envelope),
        }
    }

    /// Runs a request, unless it runs already, was answered (its answer is
    /// sent again), is `doubtful` (re-sent after an earlier opening of the
    /// mailbox, in a process that failed, may have run it: answered, not
    /// run), is past its deadline, or the agent is stopping.
    fn on_request(&mut self, envelope: Envelope, doubtful: bool, ctx: &mut Context<Self>) {
        let key = request_key(&envelope);
        if self.in_flight.contains_key(&key) {
            return debug!(tag = %envelope.tag, "a second copy of a running request; not run again");
        }
        match self.recent.get(&key) {
            Some(Remembered::Answer(answer)) => {
                debug!(tag = %envelope.tag, "a second copy of an answered request; answered again, not run again");
                return self.reply((**answer).clone());
            }
            Some(Remembered::Unanswered) => {
                return debug!(tag = %envelope.tag, "a second copy of a request nobody waits for; not run again")
            }
            Some(Remembered::Forgotten) => {
                debug!(tag = %envelope.tag, "a second copy of an answered request whose answer is gone; not run again");
                let error = RemoteError {
                    kind: RemoteErrorKind::AlreadyAnswered,
                    message: format!(
                        "{} ran this request and answered it already; the answer is no longer kept (too large), and the request is not run again",
                        self.context.id()
                    ),
                };
                let reply = envelope.reply(Body::ActionResponse { action: action_of(&envelope), result: Err(error) });
                return self.reply(reply);
            }
            None => {}
        }
        if doubtful {
            warn!(agent = %self.context.id(), tag = %envelope.tag, "refused a request an earlier process may have run");
            let error = RemoteError {
                kind: RemoteErrorKind::AgentStopped,
                message: format!(
                    "{} stopped (its process failed?) before confirming this request; not run again, in case it ran",
                    self.context.id()
                ),
            };
            return self.answer(&envelope, Err(error));
        }
        match self.shutdown {
            Some(Ending::Shutdown(_)) => return self.refuse(&envelope),
            // Never started: it goes back for a restarted agent.
            Some(Ending::Failed) => return self.requeue(vec![envelope]),
            None if !self.behavior.connected() => {
                self.waiting.push_front(envelope);
                return self.fail(ctx);
            }
            None => {}
        }
        if envelope.deadline.is_some_and(deadline_passed) {
            let error = RemoteError {
                kind: RemoteErrorKind::DeadlinePassed,
                message: format!("the request reached {} after its deadline; not started", self.context.id()),
            };
            return self.answer(&envelope, Err(error));
        }
        if matches!(&envelope.body, Body::ActionRequest { action, .. } if action == DESCRIBE) {
            // Answered at once, like a ping, however busy the agent is.
            let description = self.context.exchange().codec().encode_result(DESCRIBE, &Description::of::<B>());
            return self.answer(&envelope, description);
        }
        if self.in_flight.len() >= self.max_concurrency {
            return self.waiting.push_back(envelope);
        }
        self.dispatch(envelope, ctx);
    }

    /// Answers the waiting requests whose deadline has passed: their callers
    /// have given up (or will), and they must not start later. Without it,
    /// actions that all wait for calls to their own agent would hold every
    /// slot, with those calls waiting behind them, for ever.
    fn expire_waiting(&mut self, ctx: &mut Context<Self>) {
        let late = |request: &Envelope| request.deadline.is_some_and(deadline_passed);
        if !self.waiting.iter().any(late) {
            return;
        }
        let (expired, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.waiting).into_iter().partition(late);
        self.waiting = kept;
        for request in expired {
            let error = RemoteError {
                kind: RemoteErrorKind::DeadlinePassed,
                message: format!("the request waited in {} past its deadline; not started", self.context.id()),
            };
            self.answer(&request, Err(error));
        }
        self.read_next(ctx);
    }

    /// A slot freed: the next waiting request (if any) starts, and reading
    /// resumes.
    fn slot_freed(&mut self, ctx: &mut Context<Self>) {
        if let Some(next) = self.waiting.pop_front() {
            self.on_request(next, false, ctx);
        }
        self.read_next(ctx);
        self.finish_if_idle(ctx);
    }

    #[tracing::instrument(name = "academy.dispatch", level = "debug", skip_all, fields(
        trace_id = %envelope.trace.map(|t| t.trace_id_hex()).unwrap_or_default(),
        agent = %self.context.id(),
        tag = %envelope.tag,
    ))]
    fn dispatch(&mut self, envelope: Envelope, ctx: &mut Context<Self>) {
        let Body::ActionRequest { action, args } = &envelope.body else {
            return;
        };
        let call = Invocation { caller: envelope.src.clone(), context: self.context.clone() };
        // Keyword arguments (Academy 1.0's `kargs`) go in parameter order.
        let arranged = match self.context.exchange().codec().arrange(action, args, B::actions()) {
            Ok(arranged) => arranged,
            Err(e) => return self.answer(&envelope, Err(e)),
        };
        let args = arranged.as_deref().unwrap_or(args);
        let Some(running) = B::dispatch(&self.behavior, action, args, call) else {
            let error = RemoteError {
                kind: RemoteErrorKind::UnknownAction,
                message: format!("{} has no action {action:?}", B::name()),
            };
            return self.answer(&envelope, Err(error));
        };
        let key = request_key(&envelope);
        let (started, name) = (std::time::Instant::now(), action.clone());
        let handle = ctx.spawn(running.into_actor(self).map(move |result, act, ctx| {
            // Gone if cancelled, or abandoned by a shutdown.
            let Some((_, envelope)) = act.in_flight.remove(&key) else {
                return;
            };
            let outcome = if result.is_ok() { "ok" } else { "error" };
            let trace_id = envelope.trace.map(|t| t.trace_id);
            debug!(trace_id = %format_args!("{:032x}", trace_id.unwrap_or_default()), action = %name, outcome, took = ?started.elapsed(), "action answered");
            metrics::histogram!("academy_action_seconds", "action" => name.clone()).record(started.elapsed());
            metrics::counter!("academy_actions_total", "action" => name, "outcome" => outcome).increment(1);
            act.answer(&envelope, result);
            act.slot_freed(ctx);
        }));
        self.in_flight.insert(key, (handle, envelope));
    }

    /// Cancels a running action (answering it so), or marks a request not
    /// yet arrived as not to be run.
    fn cancel(&mut self, key: RequestKey, ctx: &mut Context<Self>) {
        let cancelled = || RemoteError { kind: RemoteErrorKind::Cancelled, message: "cancelled by the caller".into() };
        if let Some((running, request)) = self.in_flight.remove(&key) {
            ctx.cancel_future(running);
            debug!(tag = %request.tag, "action cancelled by its caller");
            self.answer(&request, Err(cancelled()));
            return self.slot_freed(ctx);
        }
        if let Some(at) = self.waiting.iter().position(|waiting| request_key(waiting) == key) {
            let request = self.waiting.remove(at).expect("found above");
            self.answer(&request, Err(cancelled()));
            return self.read_next(ctx);
        }
        if self.recent.get(&key).is_none() {
            self.recent.insert(key, None);
        }
    }

    /// Answers a request, and remembers the answer.
    fn answer(&mut self, request: &Envelope, result: Result<bytes::Bytes, RemoteError>) {
        let Body::ActionRequest { action, .. } = &request.body else {
            return;
        };
        if request.label.is_none() && B::actions().iter().any(|info| info.one_way && info.name == *action) {
            // Sent one-way (no label) to a one-way action: nobody waits.
            if let Err(e) = &result {
                warn!(agent = %self.context.id(), action = %action, "a one-way action failed: {e}");
            }
            return self.recent.insert(request_key(request), None);
        }
        let result = result.and_then(|bytes| self.context.exchange().codec().answer(action, B::actions(), bytes));
        let reply = request.reply(Body::ActionResponse { action: action.clone(), result });
        self.recent.insert(request_key(request), Some(reply.clone()));
        self.reply(reply);
    }

    fn refuse(&mut self, request: &Envelope) {
        let error = RemoteError {
            kind: RemoteErrorKind::AgentStopped,
            message: format!("{} is shutting down; the request was not run", self.context.id()),
        };
        self.answer(request, Err(error));
    }

    /// The behavior stopped on its own: the actions it was running are
    /// answered with an error (they may have run in part, so they are not
    /// run again), and the mailbox closes, so what was not read waits in
    /// Redis for a restarted agent.
    fn fail(&mut self, ctx: &mut Context<Self>) {
        if self.shutdown.is_none() {
            warn!(agent = %self.context.id(), "the behavior stopped on its own");
            self.shutdown = Some(Ending::Failed);
            // Never started: back to the queue, in order, for a restart.
            let unstarted: Vec<Envelope> = std::mem::take(&mut self.waiting).into();
            self.requeue(unstarted);
            self.abandon_in_flight(ctx, "the behavior stopped while running it");
            self.close_mailbox(ctx);
            // Nobody serves it now: callers and discovery see it inactive at
            // once, not when a heartbeat lapses.
            let (exchange, id) = (self.context.exchange().clone(), self.context.me().clone());
            tokio::spawn(async move {
                if let Err(e) = exchange.mark_failed(&id).await {
                    warn!(agent = %id, "could not mark the mailbox of a failed agent inactive: {e}");
                }
            });
        }
        self.finish_if_idle(ctx);
    }

    /// Returns a request that was never started to the front of the queue.
    fn requeue(&self, requests: Vec<Envelope>) {
        if requests.is_empty() {
            return;
        }
        let (exchange, id) = (self.context.exchange().clone(), self.context.me().clone());
        tokio::spawn(async move {
            if let Err(e) = exchange.push_front(&id, requests).await {
                warn!(agent = %id, "could not return unstarted requests to the queue: {e}");
            }
        });
    }

    /// Sends a reply in the background; it must not die with this actor,
    /// and the exchange's `close` waits for it.
    fn reply(&self, envelope: Envelope) {
        self.context.exchange().post(envelope, crate::exchange::WhenInactive::Fail);
    }

    /// Shuts down, answering `request` (if it came as a message) once done.
    fn begin_shutdown(&mut self, request: Option<Envelope>, terminate: bool, ctx: &mut Context<Self>) {
        match &mut self.shutdown {
            Some(Ending::Shutdown(requests)) => return requests.extend(request),
            Some(Ending::Failed) => {
                if let Some(request) = request {
                    self.reply(request.reply(Body::ShutdownResponse { result: Ok(()) }));
                }
                return;
            }
            None => self.shutdown = Some(Ending::Shutdown(request.into_iter().collect())),
        }
        debug!(agent = %self.context.id(), terminate, "shutting down");
        self.behavior.do_send(crate::behavior::StopAgent);
        self.abandon_in_flight(ctx, "the agent shut down while running it");
        if !terminate {
            self.close_mailbox(ctx);
            return self.finish_if_idle(ctx);
        }
        // Terminating wakes the mailbox: it delivers what it holds (refused
        // as it is read), then ends, and the shutdown completes.
        let (exchange, id) = (self.context.exchange().clone(), self.context.me().clone());
        ctx.spawn(async move { exchange.terminate(&id).await }.into_actor(self).map(|result, act, ctx| {
            if let Err(e) = result {
                warn!(agent = %act.context.id(), "could not terminate the mailbox: {e}");
                ctx.stop();
            }
        }));
    }

    /// Stops waiting for the actions in flight and answers them with an error.
    fn abandon_in_flight(&mut self, ctx: &mut Context<Self>, why: &str) {
        let abandoned: Vec<_> = self.in_flight.drain().map(|(_, running)| running).collect();
        for (running, request) in abandoned {
            ctx.cancel_future(running);
            let error = RemoteError { kind: RemoteErrorKind::AgentStopped, message: why.to_owned() };
            self.answer(&request, Err(error));
        }
        for request in std::mem::take(&mut self.waiting) {
            self.refuse(&request);
        }
        self.read_next(ctx);
    }

    /// The mailbox ended: terminated by someone else, a shutdown nobody
    /// waits for; else the shutdown under way completes.
    fn mailbox_ended(&mut self, ctx: &mut Context<Self>) {
        self.mailbox_done = true;
        if self.shutdown.is_none() {
            self.shutdown = Some(Ending::Shutdown(Vec::new()));
            self.behavior.do_send(crate::behavior::StopAgent);
            self.abandon_in_flight(ctx, "the agent's mailbox was terminated while running it");
        }
        self.finish_if_idle(ctx);
    }

    fn finish_if_idle(&mut self, ctx: &mut Context<Self>) {
        let ready = self.in_flight.is_empty()
            && match self.shutdown {
                None => false,
                Some(Ending::Failed) => true,
                Some(Ending::Shutdown(_)) => self.mailbox_done,
            };
        if !ready {
            return;
        }
        if let Some(Ending::Shutdown(requests)) = &self.shutdown {
            for request in requests {
                self.reply(request.reply(Body::ShutdownResponse { result: Ok(()) }));
            }
        }
        ctx.stop();
    }
}

/// The action a request names ("" for another kind of request).
fn action_of(request: &Envelope) -> String {
    match &request.body {
        Body::ActionRequest { action, .. } => action.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifier::{ClientId, EntityId};

    fn answer(to: &Envelope, len: usize) -> Envelope {
        let result = Ok(bytes::Bytes::from(vec![0u8; len]));
        to.reply(Body::ActionResponse { action: "a".into(), result })
    }

    #[test]
    fn every_request_is_remembered_for_the_window_whatever_its_answer_size() {
        let (a, b): (EntityId, EntityId) = (ClientId::new(None).into(), ClientId::new(None).into());
        let mut recent = Recent::default();
        let requests: Vec<Envelope> = (0..Recent::CAPACITY)
            .map(|_| {
                Envelope::new(a.clone(), b.clone(), Body::ActionRequest { action: "a".into(), args: vec![].into() })
            })
            .collect();
        // 64 KiB answers: 16 MiB holds 256 of them, yet every request stays known.
        for request in &requests {
            recent.insert(request_key(request), Some(answer(request, Recent::MAX_ANSWER)));
        }
        assert!(recent.bytes <= Recent::MAX_BYTES);
        assert!(matches!(recent.get(&request_key(&requests[0])), Some(Remembered::Forgotten)));
        let last = &requests[Recent::CAPACITY - 1];
        assert!(matches!(recent.get(&request_key(last)), Some(Remembered::Answer(_))));
        // An answer too large to keep: the request is still remembered.
        let big = Envelope::new(a.clone(), b.clone(), Body::PingRequest);
        recent.insert(request_key(&big), Some(answer(&big, Recent::MAX_ANSWER + 1)));
        assert!(matches!(recent.get(&request_key(&big)), Some(Remembered::Forgotten)));
        // The window is a count: one more pushes the oldest out.
        assert!(recent.get(&request_key(&requests[0])).is_none());
        assert!(recent.get(&request_key(&requests[1])).is_some());
        assert_eq!(recent.order.len(), Recent::CAPACITY);
    }
}
