//! An agent that does periodic work in its own context (a "loop") and stops
//! cleanly, with its loop, when it is shut down.
//!
//! `cargo run --example loop [-- --redis redis://127.0.0.1:6379]`

mod common;

use std::time::Duration;

use actix_academy::prelude::*;
use clap::Parser;
use common::{ExchangeArgs, OrExit};

/// Samples a (simulated) sensor every `period` and keeps a running mean.
struct Sensor {
    period: Duration,
    samples: u64,
    sum: f64,
}

impl Actor for Sensor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The loop: runs in the actor's own context, stops with the actor.
        ctx.run_interval(self.period, |sensor, _| {
            sensor.samples += 1;
            sensor.sum += (sensor.samples as f64 * 0.7).sin() * 10.0 + 20.0;
        });
        println!("  sensor: loop started (every {:?})", self.period);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        println!("  sensor: loop stopped after {} samples", self.samples);
    }
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "(u64, f64)")]
struct Reading;

impl Handler<Reading> for Sensor {
    type Result = MessageResult<Reading>;
    fn handle(&mut self, _: Reading, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.samples, self.sum / self.samples.max(1) as f64))
    }
}

behavior!(Sensor { actions: [Reading] });

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    exchange: ExchangeArgs,
    /// Sampling period in milliseconds.
    #[arg(long, default_value_t = 20)]
    period_ms: u64,
}

#[actix::main]
async fn main() {
    let args = Args::parse();
    let exchange = args.exchange.connect().await;
    println!(
        "loop: an agent samples a sensor in a loop of its own, which stops with it; on the {}",
        args.exchange.describe(&exchange)
    );

    let id: AgentId<Sensor> = exchange.register_agent(Some("sensor")).await.or_exit("register");
    let sensor = Sensor { period: Duration::from_millis(args.period_ms), samples: 0, sum: 0.0 };
    let agent = Agent::launch(sensor, id.clone(), &exchange).await.or_exit("launch");
    let handle = exchange.get_handle(id).bind_as_client(&exchange).await.or_exit("bind");

    let mut last = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(args.period_ms * 5)).await;
        let (samples, mean) = handle.action(Reading).await.or_exit("reading");
        println!("  reading: {samples} samples, mean {mean:.2}");
        if samples <= last {
            common::fail("the loop is not running");
        }
        last = samples;
    }

    handle.shutdown().await.or_exit("shutdown");
    let exit = agent.wait().await;
    println!("agent ended: {exit:?}");
    handle.close().await.or_exit("close");
    exchange.close().await;
}
