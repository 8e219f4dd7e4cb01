//! A client calls a counter agent's actions and pings it.
//!
//! `cargo run --example counter [-- --redis redis://127.0.0.1:6379]`

mod common;

use actix_academy::prelude::*;
use clap::Parser;
use common::{ExchangeArgs, OrExit};

#[derive(Default)]
struct Counter {
    count: i64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "i64")]
struct Increment(i64);

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "i64")]
struct Get;

impl Handler<Increment> for Counter {
    type Result = i64;
    fn handle(&mut self, m: Increment, _: &mut Context<Self>) -> i64 {
        self.count += m.0;
        self.count
    }
}

impl Handler<Get> for Counter {
    type Result = i64;
    fn handle(&mut self, _: Get, _: &mut Context<Self>) -> i64 {
        self.count
    }
}

behavior!(Counter { actions: [Increment, Get] });

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    exchange: ExchangeArgs,
}

#[actix::main]
async fn main() {
    let args = Args::parse();
    let exchange = args.exchange.connect().await;
    println!("counter on the {}", args.exchange.describe(&exchange));

    let id: AgentId<Counter> = exchange.register_agent(Some("counter")).await.or_exit("register");
    let agent = Agent::launch(Counter::default(), id.clone(), &exchange).await.or_exit("launch");
    let counter = exchange.get_handle(id).bind_as_client(&exchange).await.or_exit("bind");

    for n in [1, 2, 3] {
        let total = counter.action(Increment(n)).await.or_exit("increment");
        println!("  increment({n}) -> {total}");
    }
    let total = counter.action(Get).await.or_exit("get");
    println!("  get() -> {total}");
    let rtt = counter.ping().await.or_exit("ping");
    println!("  ping: {rtt:?}");
    if total != 6 {
        common::fail(&format!("expected 6, got {total}"));
    }

    counter.shutdown().await.or_exit("shutdown");
    println!("agent ended: {:?}", agent.wait().await);
    counter.close().await.or_exit("close");
    exchange.close().await;
}
