//! The agent runtime: a behavior's actor bound to its mailbox.
//!
//! [`Agent::launch`] opens the agent's mailbox and starts two actors on the
//! current arbiter: the behavior itself, and a runtime actor that reads the
//! mailbox as a stream. The runtime dispatches each action request by name
//! (decode, `addr.send`, encode, reply), up to a bound of concurrent actions,
//! answers pings, routes responses to handles the behavior bound to this
//! mailbox, and carries out shutdown: it stops the behavior, terminates the
//! mailbox and answers every request still pending with an error.

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

use crate::behavior::Behavior;
use crate::error::Error;
use crate::exchange::Exchange;
use crate::handle::{Endpoint, RemoteHandle, Router, UnboundRemoteHandle};
use crate::identifier::{AgentId, EntityId};
use crate::mailbox::Mailbox;
use crate::message::{Body, Envelope, RemoteError, RemoteErrorKind};

/// Default number of actions one agent runs at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 256;

/// What an agent gets to call its peers: its id, the exchange, and a way to
/// bind handles to its own mailbox.
#[derive(Clone, Debug)]
pub struct AgentContext {
    endpoint: Endpoint,
}

impl AgentContext {
    /// The agent's id.
    pub fn id(&self) -> &EntityId {
        &self.endpoint.me
    }

    /// The exchange the agent is registered with.
    pub fn exchange(&self) -> &Exchange {
        &self.endpoint.exchange
    }

    /// Binds a peer's handle to this agent's mailbox: responses come back
    /// through the agent's own mailbox, routed by label.
    pub fn bind<P>(&self, handle: UnboundRemoteHandle<P>) -> RemoteHandle<P> {
        self.endpoint.bind(handle, None)
    }
}

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
    addr: Addr<B>,
    exit: Shared<oneshot::Receiver<AgentExit>>,
}

impl<B: Behavior> fmt::Debug for Agent<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Agent({})", self.id)
    }
}

impl<B: Behavior> Agent<B> {
    /// Runs `behavior` as agent `id`: opens its mailbox and starts serving.
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
        F: FnOnce(&AgentContext) -> B,
    {
        let mailbox = exchange.get_mailbox(&id).await?;
        let context = AgentContext {
            endpoint: Endpoint {
                exchange: exchange.clone(),
                me: id.entity().clone(),
                router: Arc::new(Router::default()),
            },
        };
        let addr = make(&context).start();
        let (exit_tx, exit_rx) = oneshot::channel();
        Runtime {
            context,
            behavior: addr.clone(),
            mailbox: Some(mailbox),
            max_concurrency: max_concurrency.max(1),
            in_flight: HashMap::new(),
            waiting: VecDeque::new(),
            shutdown: None,
            mailbox_done: false,
            exit: Some(exit_tx),
        }
        .start();
        debug!(agent = %id, behavior = B::name(), "agent launched");
        Ok(Self { id, addr, exit: exit_rx.shared() })
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
}

/// Why the runtime is winding down.
enum Ending {
    /// Asked to: the requests to answer once done.
    Shutdown(Vec<Envelope>),
    /// The behavior stopped by itself.
    Failed,
}

struct Runtime<B: Behavior> {
    context: AgentContext,
    behavior: Addr<B>,
    mailbox: Option<Mailbox>,
    max_concurrency: usize,
    /// Requests being served, by tag.
    in_flight: HashMap<Uuid, Envelope>,
    waiting: VecDeque<Envelope>,
    shutdown: Option<Ending>,
    /// The mailbox stream has ended (after terminate, or a close).
    mailbox_done: bool,
    exit: Option<oneshot::Sender<AgentExit>>,
}

impl<B: Behavior> Actor for Runtime<B> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(mailbox) = self.mailbox.take() {
            ctx.add_stream(mailbox);
        }
        ctx.run_interval(Duration::from_millis(100), |act, ctx| {
            if !act.behavior.connected() {
                act.fail(Vec::new(), ctx);
            }
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
        let id = self.context.id().clone();
        self.context.endpoint.router.fail_all(|| Error::MailboxClosed(id.clone()));
    }
}

impl<B: Behavior> StreamHandler<Envelope> for Runtime<B> {
    fn handle(&mut self, envelope: Envelope, ctx: &mut Context<Self>) {
        match &envelope.body {
            Body::ActionRequest { .. } if matches!(self.shutdown, Some(Ending::Failed)) => self.requeue(vec![envelope]),
            Body::ActionRequest { .. } if self.shutdown.is_some() => self.refuse(&envelope),
            Body::ActionRequest { .. } if self.in_flight.len() >= self.max_concurrency => {
                self.waiting.push_back(envelope)
            }
            Body::ActionRequest { .. } => self.dispatch(envelope, ctx),
            Body::PingRequest => self.reply(envelope.reply(Body::PingResponse)),
            Body::ShutdownRequest => self.begin_shutdown(envelope, ctx),
            _ => self.context.endpoint.router.route(envelope),
        }
    }

    /// The mailbox ended (terminated or closed): once the actions in flight
    /// are answered, the runtime stops.
    fn finished(&mut self, ctx: &mut Context<Self>) {
        if self.shutdown.is_none() {
            // Terminated by someone else: a shutdown nobody waits for.
            self.shutdown = Some(Ending::Shutdown(Vec::new()));
            self.stop_behavior_and_refuse(ctx);
        }
        self.mailbox_done = true;
        self.finish_if_idle(ctx);
    }
}

impl<B: Behavior> Runtime<B> {
    #[tracing::instrument(name = "dispatch", level = "trace", skip_all, fields(tag = %envelope.tag, agent = %self.context.id()))]
    fn dispatch(&mut self, envelope: Envelope, ctx: &mut Context<Self>) {
        let Body::ActionRequest { action, args } = &envelope.body else {
            return;
        };
        if !self.behavior.connected() {
            return self.fail(vec![envelope], ctx);
        }
        let Some(running) = B::dispatch(&self.behavior, action, args) else {
            let error = RemoteError {
                kind: RemoteErrorKind::UnknownAction,
                message: format!("{} has no action {action:?}", B::name()),
            };
            return self.answer(&envelope, Err(error));
        };
        let tag = envelope.tag;
        self.in_flight.insert(tag, envelope);
        ctx.spawn(running.into_actor(self).map(move |result, act, ctx| {
            // Gone if a shutdown already answered it.
            let Some(envelope) = act.in_flight.remove(&tag) else {
                return;
            };
            act.answer(&envelope, result);
            if act.shutdown.is_none() {
                if let Some(next) = act.waiting.pop_front() {
                    act.dispatch(next, ctx);
                }
            }
            act.finish_if_idle(ctx);
        }));
    }

    fn answer(&self, request: &Envelope, result: Result<bytes::Bytes, RemoteError>) {
        let Body::ActionRequest { action, .. } = &request.body else {
            return;
        };
        self.reply(request.reply(Body::ActionResponse { action: action.clone(), result }));
    }

    fn refuse(&self, request: &Envelope) {
        let error = RemoteError {
            kind: RemoteErrorKind::AgentStopped,
            message: format!("{} is shutting down", self.context.id()),
        };
        self.answer(request, Err(error));
    }

    /// The behavior stopped on its own: requests it took but did not answer
    /// go back to the front of the Redis queue, for a restarted agent.
    fn fail(&mut self, mut orphans: Vec<Envelope>, ctx: &mut Context<Self>) {
        if self.shutdown.is_none() {
            warn!(agent = %self.context.id(), "the behavior stopped on its own");
            self.shutdown = Some(Ending::Failed);
        }
        orphans.extend(self.in_flight.drain().map(|(_, request)| request));
        orphans.extend(self.waiting.drain(..));
        self.requeue(orphans);
        self.finish_if_idle(ctx);
    }

    fn requeue(&self, requests: Vec<Envelope>) {
        if requests.is_empty() {
            return;
        }
        let (exchange, id) = (self.context.exchange().clone(), self.context.id().clone());
        tokio::spawn(async move {
            if let Err(e) = exchange.push_front(&id, requests).await {
                warn!(agent = %id, "could not return unanswered requests to Redis: {e}");
            }
        });
    }

    /// Sends a reply in the background; it must not die with this actor,
    /// and the exchange's `close` waits for it.
    fn reply(&self, envelope: Envelope) {
        self.context.exchange().post(envelope);
    }

    fn begin_shutdown(&mut self, request: Envelope, ctx: &mut Context<Self>) {
        match &mut self.shutdown {
            Some(Ending::Shutdown(requests)) => return requests.push(request),
            Some(Ending::Failed) => {
                return self.reply(request.reply(Body::ShutdownResponse { result: Ok(()) }));
            }
            None => self.shutdown = Some(Ending::Shutdown(vec![request])),
        }
        debug!(agent = %self.context.id(), "shutting down");
        self.stop_behavior_and_refuse(ctx);
        // Terminating wakes the mailbox: it delivers what it holds (refused
        // above), then ends, and `finished` completes the shutdown.
        let (exchange, id) = (self.context.exchange().clone(), self.context.id().clone());
        ctx.spawn(async move { exchange.terminate(&id).await }.into_actor(self).map(|result, act, ctx| {
            if let Err(e) = result {
                warn!(agent = %act.context.id(), "could not terminate the mailbox: {e}");
                ctx.stop();
            }
        }));
    }

    /// Stops the behavior and answers everything it will not serve:
    /// actions in flight are abandoned, not awaited.
    fn stop_behavior_and_refuse(&mut self, _: &mut Context<Self>) {
        self.behavior.do_send(crate::behavior::StopAgent);
        let abandoned: Vec<_> = self.in_flight.drain().map(|(_, request)| request).collect();
        for request in abandoned.iter().chain(&std::mem::take(&mut self.waiting)) {
            self.refuse(request);
        }
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
