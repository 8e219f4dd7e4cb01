//! A client calls a counter agent's actions and pings it, then prints the
//! metrics the crate recorded (through the `metrics` facade).
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

#[agent(name = "counter")]
impl Counter {
    /// Adds `by`; the new count.
    #[action]
    fn increment(&mut self, by: i64) -> i64 {
        self.count += by;
        self.count
    }

    #[action]
    fn get(&self) -> i64 {
        self.count
    }
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    exchange: ExchangeArgs,
}

#[actix::main]
async fn main() {
    // The crate reports through the `metrics` facade; any exporter works
    // (Prometheus, StatsD...). This one keeps them, to print at the end.
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let metrics = recorder.snapshotter();
    recorder.install().or_exit("install the metrics recorder");
    let args = Args::parse();
    let exchange = args.exchange.connect().await;
    println!(
        "counter: a client calls an agent's actions, pings it, and prints the crate's metrics; on the {}",
        args.exchange.describe(&exchange)
    );

    let agent = Agent::start(Counter::default(), &exchange, Some("counter")).await.or_exit("start");
    let counter = exchange.get_handle(agent.id().clone()).bind_as_client(&exchange).await.or_exit("bind");

    for n in [1, 2, 3] {
        let total = counter.increment(n).await.or_exit("increment");
        println!("  increment({n}) -> {total}");
    }
    let total = counter.get().await.or_exit("get");
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

    println!("metrics:");
    let mut lines: Vec<String> = metrics
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            let value = match value {
                metrics_util::debugging::DebugValue::Counter(n) => n.to_string(),
                metrics_util::debugging::DebugValue::Gauge(g) => g.to_string(),
                metrics_util::debugging::DebugValue::Histogram(h) => format!("{} samples", h.len()),
            };
            format!("  {}{{{}}} {value}", key.name(), labels.join(","))
        })
        .collect();
    lines.sort();
    println!("{}", lines.join("\n"));
}
