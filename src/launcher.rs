//! A launcher for many agents in one process: it spreads them over a few
//! arbiters (threads), hands back handles bound to one shared client,
//! restarts an agent whose behavior stops on its own (up to a limit), waits
//! for them all, and shuts them all down.

use std::fmt;
use std::sync::Arc;

use actix::{Arbiter, ArbiterHandle};
use futures::future::{join_all, BoxFuture};
use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::agent::{Agent, AgentExit, DEFAULT_MAX_CONCURRENCY};
use crate::behavior::Behavior;
use crate::caller::{AgentContext, Client};
use crate::error::Error;
use crate::exchange::Exchange;
use crate::handle::RemoteHandle;
use crate::identifier::{AgentId, EntityId};

/// How one supervised agent ended, and how often it was restarted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The agent.
    pub id: EntityId,
    /// How it ended the last time.
    pub exit: AgentExit,
    /// How many times it was restarted.
    pub restarts: usize,
}

struct Supervised {
    id: EntityId,
    outcome: oneshot::Receiver<Outcome>,
    shutdown: Box<dyn FnOnce() -> BoxFuture<'static, Result<(), Error>> + Send>,
}

/// Starts agents on a pool of arbiters and supervises them.
///
/// ```no_run
/// # use actix_academy::{Exchange, Launcher};
/// # async fn demo<B: actix_academy::Behavior + Default>(exchange: Exchange) -> Result<(), actix_academy::Error> {
/// let mut launcher = Launcher::new(&exchange).await?.max_restarts(2);
/// let handle = launcher.launch(None, |_| B::default()).await?;
/// // ... call it ...
/// let outcomes = launcher.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Launcher {
    exchange: Exchange,
    client: Arc<Client>,
    arbiters: Vec<Arbiter>,
    size: usize,
    next: usize,
    max_restarts: usize,
    agents: Vec<Supervised>,
}

impl fmt::Debug for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Launcher({} agents on {} arbiters)", self.agents.len(), self.arbiters.len())
    }
}

impl Launcher {
    /// A launcher on `exchange`, with one arbiter per CPU and no restarts.
    pub async fn new(exchange: &Exchange) -> Result<Self, Error> {
        Ok(Self {
            exchange: exchange.clone(),
            client: Client::connect(exchange, Some("launcher")).await?,
            arbiters: Vec::new(),
            size: std::thread::available_parallelism().map_or(1, |n| n.get()),
            next: 0,
            max_restarts: 0,
            agents: Vec::new(),
        })
    }

    /// Number of arbiters (threads) agents are spread over.
    #[must_use]
    pub fn arbiters(mut self, count: usize) -> Self {
        self.size = count.max(1);
        self
    }

    /// How many times an agent whose behavior stops on its own is restarted.
    #[must_use]
    pub fn max_restarts(mut self, restarts: usize) -> Self {
        self.max_restarts = restarts;
        self
    }

    fn arbiter(&mut self) -> ArbiterHandle {
        if self.arbiters.len() < self.size {
            self.arbiters.push(Arbiter::new());
        }
        let arbiter = self.arbiters[self.next % self.arbiters.len()].handle();
        self.next += 1;
        arbiter
    }

    /// Registers a new agent, starts it on one of the arbiters (building the
    /// behavior there with `make`, again on each restart), and returns a
    /// handle to it once it serves.
    pub async fn launch<B, F>(&mut self, name: Option<&str>, make: F) -> Result<RemoteHandle<B>, Error>
    where
        B: Behavior,
        F: Fn(&AgentContext<B>) -> B + Send + Sync + 'static,
    {
        let id: AgentId<B> = self.exchange.register_agent(name).await?;
        let (started_tx, started_rx) = oneshot::channel();
        let (outcome_tx, outcome_rx) = oneshot::channel();
        let (exchange, agent, max_restarts) = (self.exchange.clone(), id.clone(), self.max_restarts);
        let spawned = self.arbiter().spawn(async move {
            let outcome = supervise(agent, exchange, max_restarts, make, started_tx).await;
            let _ = outcome_tx.send(outcome);
        });
        if !spawned {
            return Err(Error::ExchangeClosed);
        }
        started_rx.await.map_err(|_| Error::ExchangeClosed)??;
        let handle = self.client.bind(self.exchange.get_handle(id.clone()));
        let stopper = handle.clone();
        self.agents.push(Supervised {
            id: id.into(),
            outcome: outcome_rx,
            shutdown: Box::new(move || Box::pin(async move { stopper.shutdown().await })),
        });
        Ok(handle)
    }

    /// Waits until every agent has ended on its own or been shut down.
    pub async fn wait(&mut self) -> Vec<Outcome> {
        let agents = std::mem::take(&mut self.agents);
        join_all(agents.into_iter().map(|agent| async move {
            agent.outcome.await.unwrap_or(Outcome { id: agent.id, exit: AgentExit::Failed, restarts: 0 })
        }))
        .await
    }

    /// Shuts every agent down, waits for them, and stops the arbiters.
    pub async fn shutdown(mut self) -> Vec<Outcome> {
        let mut stops = Vec::new();
        for agent in &mut self.agents {
            let stop = std::mem::replace(&mut agent.shutdown, Box::new(|| Box::pin(async { Ok(()) })));
            stops.push(stop());
        }
        for result in join_all(stops).await {
            if let Err(e) = result {
                warn!("an agent did not shut down cleanly: {e}");
            }
        }
        let outcomes = self.wait().await;
        if let Err(e) = self.client.close().await {
            warn!("could not terminate the launcher's client: {e}");
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        outcomes
    }
}

async fn supervise<B, F>(
    id: AgentId<B>,
    exchange: Exchange,
    max_restarts: usize,
    make: F,
    started: oneshot::Sender<Result<(), Error>>,
) -> Outcome
where
    B: Behavior,
    F: Fn(&AgentContext<B>) -> B,
{
    let mut started = Some(started);
    let mut restarts = 0;
    loop {
        let agent = match Agent::launch_with(id.clone(), &exchange, DEFAULT_MAX_CONCURRENCY, &make).await {
            Ok(agent) => agent,
            Err(e) => {
                error!(agent = %id, "could not launch: {e}");
                if let Some(started) = started.take() {
                    let _ = started.send(Err(e));
                }
                return Outcome { id: id.into(), exit: AgentExit::Failed, restarts };
            }
        };
        if let Some(started) = started.take() {
            let _ = started.send(Ok(()));
        }
        match agent.wait().await {
            AgentExit::Failed if restarts < max_restarts => {
                restarts += 1;
                warn!(agent = %id, restarts, "behavior stopped on its own; restarting");
            }
            exit => return Outcome { id: id.into(), exit, restarts },
        }
    }
}
