//! Agents in separate OS processes, over Redis. The driver registers worker
//! agents, sends them work before they exist (it waits in Redis), starts
//! each worker as a child process (this same binary, `--role worker`),
//! discovers them by behavior, collects the results, and shuts them down.
//! With `RUST_LOG=actix_academy=debug`, each call is traced across the
//! processes (the same `trace_id` in the driver's and the worker's spans).
//!
//! `cargo run --example distributed -- --redis redis://127.0.0.1:6379`

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use actix_academy::prelude::*;
use actix_academy::{Client, Role as EntityRole};
use clap::{Parser, ValueEnum};
use common::{fail, ExchangeArgs, OrExit};

struct Worker;

impl Actor for Worker {
    type Context = Context<Self>;
}

#[agent(name = "worker")]
impl Worker {
    /// Squares a number and says which process did it.
    #[action]
    fn square(&mut self, n: i64) -> (i64, u32) {
        (n * n, std::process::id())
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Role {
    Driver,
    Worker,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    exchange: ExchangeArgs,
    #[arg(long, value_enum, default_value = "driver")]
    role: Role,
    /// The agent id a worker process serves (set by the driver).
    #[arg(long)]
    agent: Option<uuid::Uuid>,
    /// Worker processes to start.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Tasks to hand out.
    #[arg(long, default_value_t = 12)]
    tasks: i64,
}

#[actix::main]
async fn main() {
    // `RUST_LOG=actix_academy=debug` follows each call from the driver into
    // the worker process that runs it: the driver's `academy.call` span and
    // the worker's `academy.dispatch` span print the same `trace_id`.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW)
        .with_writer(std::io::stderr)
        .init();
    let mut args = Args::parse();
    let Some(url) = args.exchange.redis.clone() else {
        fail("the distributed example needs Redis: run it with --redis redis://127.0.0.1:6379");
    };
    if args.exchange.namespace.is_none() {
        args.exchange.namespace = Some(actix_academy::wire::uuid_to_base32(uuid::Uuid::new_v4()));
    }
    let exchange = args.exchange.connect().await;
    match args.role {
        Role::Worker => worker(&args, &exchange).await,
        Role::Driver => driver(&args, &url, &exchange).await,
    }
    exchange.close().await;
}

async fn worker(args: &Args, exchange: &Exchange) {
    let uid = args.agent.unwrap_or_else(|| fail("--role worker needs --agent"));
    let id = AgentId::<Worker>::from_entity(EntityId::from_parts(uid, EntityRole::Agent, None)).or_exit("agent id");
    let agent = Agent::launch(Worker, id, exchange).await.or_exit("launch");
    agent.wait().await;
}

async fn driver(args: &Args, url: &str, exchange: &Exchange) {
    let namespace = exchange.namespace().to_owned();
    println!(
        "distributed: worker agents in separate OS processes, sent work before they exist, found by discovery; \
         on the {}",
        args.exchange.describe(exchange)
    );
    let client = Client::connect(exchange, Some("driver")).await.or_exit("client");
    let mut ids = Vec::new();
    for i in 0..args.workers {
        ids.push(exchange.register_agent::<Worker>(Some(&format!("worker-{i}"))).await.or_exit("register"));
    }
    let handles: Vec<_> = ids.iter().map(|id| client.bind(exchange.get_handle(id.clone()))).collect();

    // Work sent now waits in Redis: no worker process exists yet.
    let calls: Vec<_> = (0..args.tasks)
        .map(|n| {
            let handle = handles[n as usize % handles.len()].clone().with_liveness_timeout(None);
            actix::spawn(async move { (n, handle.square(n).await) })
        })
        .collect();
    println!("sent {} tasks to {} workers that are not running yet", args.tasks, args.workers);

    let exe = std::env::current_exe().or_exit("own path");
    let mut children = Vec::new();
    for id in &ids {
        let child = Command::new(&exe)
            .args(["--redis", url, "--namespace", &namespace, "--role", "worker"])
            .args(["--agent", &id.uid().to_string()])
            .stdout(Stdio::null())
            .spawn()
            .or_exit("start a worker process");
        println!("  started worker process {} for {id}", child.id());
        children.push(child);
    }

    let all = actix_academy::Discovery::new().exact().wait_for(args.workers, Duration::from_secs(30));
    let found = exchange.discover_with::<Worker>(all).await.or_exit("the workers never registered");
    println!("discovered {} Worker agents", found.len());

    // Results as they come, in whatever order the workers finish.
    let mut progress = common::Progress::new("tasks done", args.tasks as u64);
    let mut pending: futures::stream::FuturesUnordered<_> = calls.into_iter().collect();
    let mut results = Vec::new();
    while let Some(done) = futures::StreamExt::next(&mut pending).await {
        let (n, result) = done.or_exit("a task");
        results.push((n, result.or_exit("task")));
        progress.tick();
    }
    results.sort();
    println!("{:>6} {:>8} {:>8}", "task", "result", "pid");
    for (n, (square, pid)) in results {
        println!("{n:>6} {square:>8} {pid:>8}");
        if square != n * n {
            fail(&format!("task {n} returned {square}"));
        }
    }

    for handle in &handles {
        handle.shutdown().await.or_exit("shutdown");
    }
    for mut child in children {
        let status = child.wait().or_exit("wait for a worker");
        if !status.success() {
            fail(&format!("worker process {} exited with {status}", child.id()));
        }
    }
    println!("all {} worker processes exited cleanly", args.workers);
    client.close().await.or_exit("close");
}
