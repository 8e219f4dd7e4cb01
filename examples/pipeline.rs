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

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "i64")]
struct Apply(i64);

impl Handler<Apply> for Worker {
    type Result = i64;
    fn handle(&mut self, m: Apply, _: &mut Context<Self>) -> i64 {
        self.done += 1;
        m.0 * self.scale + self.offset
    }
}

behavior!(Worker { actions: [Apply] });

/// Chains the workers it is given.
struct Coordinator {
    agent: AgentContext<Coordinator>,
}

impl Actor for Coordinator {
    type Context = Context<Self>;
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<Vec<i64>, String>")]
struct Run {
    inputs: Vec<i64>,
    first: UnboundRemoteHandle<Worker>,
    second: UnboundRemoteHandle<Worker>,
}

impl Handler<Run> for Coordinator {
    type Result = ResponseFuture<Result<Vec<i64>, String>>;
    fn handle(&mut self, run: Run, _: &mut Context<Self>) -> Self::Result {
        // Bound to the coordinator's own mailbox: replies come back to it.
        let first = self.agent.bind(run.first);
        let second = self.agent.bind(run.second);
        Box::pin(async move {
            let stages = run.inputs.into_iter().map(|x| {
                let (first, second) = (first.clone(), second.clone());
                async move {
                    let y = first.action(Apply(x)).await?;
                    second.action(Apply(y)).await
                }
            });
            join_all(stages).await.into_iter().collect::<Result<_, _>>().map_err(|e| e.to_string())
        })
    }
}

behavior!(Coordinator { actions: [Run] });

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
    println!("pipeline on the {}", args.exchange.describe(&exchange));

    let mut launcher = Launcher::new(&exchange).await.or_exit("launcher");
    let doubler = launcher.launch(Some("doubler"), |_| Worker { scale: 2, offset: 0, done: 0 }).await.or_exit("launch");
    let adder = launcher.launch(Some("adder"), |_| Worker { scale: 1, offset: 1, done: 0 }).await.or_exit("launch");
    let coordinator =
        launcher.launch(Some("coordinator"), |agent| Coordinator { agent: agent.clone() }).await.or_exit("launch");

    let inputs: Vec<i64> = (1..=args.values).collect();
    let run = Run { inputs: inputs.clone(), first: doubler.unbound(), second: adder.unbound() };
    let outputs = coordinator.action(run).await.or_exit("run").unwrap_or_else(|e| common::fail(&e));
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
