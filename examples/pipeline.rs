//! A coordinator agent is handed handles to two worker agents, inside an
//! action's arguments, and chains them: each value goes through the first
//! worker, then the second.
//!
//! `cargo run --example pipeline [-- --redis redis://127.0.0.1:6379]`

mod common;

use actix_academy::prelude::*;
use clap::Parser;
use common::{ExchangeArgs, OrExit};
use futures::future::join_all;

/// Applies one arithmetic stage.
struct Worker {
    scale: i64,
    offset: i64,
    done: u64,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

#[agent(name = "worker")]
impl Worker {
    #[action]
    fn apply(&mut self, x: i64) -> i64 {
        self.done += 1;
        x * self.scale + self.offset
    }
}

/// Chains the workers it is given.
struct Coordinator;

impl Actor for Coordinator {
    type Context = Context<Self>;
}

#[agent(name = "coordinator")]
impl Coordinator {
    /// Pushes every input through `first`, then `second`.
    #[action]
    async fn run(
        ctx: AgentContext<Self>,
        inputs: Vec<i64>,
        first: UnboundRemoteHandle<Worker>,
        second: UnboundRemoteHandle<Worker>,
    ) -> Result<Vec<i64>, String> {
        // Bound to the coordinator's own mailbox: replies come back to it.
        let (first, second) = (ctx.bind(first), ctx.bind(second));
        let stages = inputs.into_iter().map(|x| {
            let (first, second) = (first.clone(), second.clone());
            async move { second.apply(first.apply(x).await?).await }
        });
        join_all(stages).await.into_iter().collect::<Result<_, _>>().map_err(|e| e.to_string())
    }
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    exchange: ExchangeArgs,
    /// How many values to push through the pipeline.
    #[arg(long, default_value_t = 10)]
    values: i64,
}

#[actix::main]
async fn main() {
    let args = Args::parse();
    let exchange = args.exchange.connect().await;
    println!(
        "pipeline: a coordinator chains two workers whose handles it receives as arguments; on the {}",
        args.exchange.describe(&exchange)
    );

    let mut launcher = Launcher::new(&exchange).await.or_exit("launcher");
    let doubler = launcher.launch(Some("doubler"), |_| Worker { scale: 2, offset: 0, done: 0 }).await.or_exit("launch");
    let adder = launcher.launch(Some("adder"), |_| Worker { scale: 1, offset: 1, done: 0 }).await.or_exit("launch");
    let coordinator = launcher.launch(Some("coordinator"), |_| Coordinator).await.or_exit("launch");

    let inputs: Vec<i64> = (1..=args.values).collect();
    let outputs = coordinator.run(inputs.clone(), doubler.unbound(), adder.unbound()).await.or_exit("run");
    for (x, y) in inputs.iter().zip(&outputs) {
        println!("  {x:>3} -> doubler -> adder -> {y:>3}");
        if *y != 2 * x + 1 {
            common::fail(&format!("{x} came out as {y}"));
        }
    }

    let outcomes = launcher.shutdown().await;
    println!("{} agents shut down: {:?}", outcomes.len(), outcomes.iter().map(|o| o.exit).collect::<Vec<_>>());
    exchange.close().await;
}
