//! The scale bench: what many agents cost a process and Redis, printed as a
//! table and as one JSON object a line. Not a timed test: figures to read
//! beside the targets of the issue on the core's design.
//!
//! `cargo bench --bench scale` hosts 10,000 agents in this process;
//! `-- --agents 100000 --processes 10` spreads them over child processes
//! (each reports its own figures) and calls them from here.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix_academy::prelude::*;
use actix_academy::{Client, Exchange};
use clap::Parser;
use futures::{stream, StreamExt};

#[path = "support/redis.rs"]
#[allow(dead_code)]
mod redis_server;
use redis_server::Redis;

/// Registered, never launched: what discovery of a rare behavior finds.
struct Rare;
impl Actor for Rare {
    type Context = Context<Self>;
}
behavior!(Rare { actions: [] });

struct Echo;
impl Actor for Echo {
    type Context = Context<Self>;
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Bounce(u64);

impl Handler<Bounce> for Echo {
    type Result = u64;
    fn handle(&mut self, m: Bounce, _: &mut Context<Self>) -> u64 {
        m.0
    }
}

behavior!(Echo { actions: [Bounce] });

#[derive(Parser, Clone)]
struct Args {
    /// Agents in all.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Processes hosting them (1: this one).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Random calls made once all are up.
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// How long idle Redis load is measured, in seconds.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Agents launched at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: host agents for a parent on this Redis and namespace.
    #[arg(long, hide = true)]
    child: Option<String>,
    #[arg(long, hide = true, default_value = "scale")]
    namespace: String,
}

fn emit(scope: &str, what: &str, value: f64, unit: &str) {
    println!("{{\"bench\": \"scale\", \"scope\": \"{scope}\", \"what\": \"{what}\", \"value\": {value:.1}, \"unit\": \"{unit}\"}}");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn p50_us(mut samples: Vec<Duration>) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}

/// Launches `count` agents on `x`; returns them with the time it took.
async fn launch(x: &Exchange, count: usize, concurrency: usize) -> (Vec<Agent<Echo>>, Duration) {
    let started = Instant::now();
    let agents: Vec<Agent<Echo>> = stream::iter(0..count)
        .map(|_| async { Agent::start(Echo, x, None).await.expect("an agent launches") })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    (agents, started.elapsed())
}

/// What hosting `count` agents costs this process: printed, and returned
/// as (scope, what, value, unit) for a parent.
async fn host(x: &Exchange, count: usize, concurrency: usize, scope: &str) -> Vec<Agent<Echo>> {
    let (fds, rss) = (open_fds(), rss_mb());
    let (agents, took) = launch(x, count, concurrency).await;
    emit(scope, "launch, all", took.as_secs_f64(), "s");
    emit(scope, "launch, each", took.as_secs_f64() * 1e6 / count as f64, "us");
    emit(scope, "file descriptors opened by the agents", open_fds().saturating_sub(fds) as f64, "fds");
    emit(scope, "file descriptors in all", open_fds() as f64, "fds");
    emit(scope, "RSS", rss_mb(), "MB");
    emit(scope, "RSS added by the agents, each", (rss_mb() - rss) * 1024.0 / count as f64, "KB");
    agents
}

fn redis_connections(redis_url: &str) -> f64 {
    let mut con = redis::Client::open(redis_url).unwrap().get_connection().unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
    list.lines().count() as f64 - 1.0
}

/// Redis commands per second while nothing is sent (minus this count's
/// own `INFO`, on a connection opened before).
async fn idle_load(redis_url: &str, window: Duration) -> f64 {
    let mut con = redis::Client::open(redis_url).unwrap().get_connection().unwrap();
    let mut processed = || {
        let info: String = redis::cmd("INFO").arg("stats").query(&mut con).unwrap();
        let field = info.lines().find_map(|l| l.strip_prefix("total_commands_processed:"));
        field.and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    let before = processed();
    tokio::time::sleep(window).await;
    (processed() - before - 1.0).max(0.0) / window.as_secs_f64()
}

async fn child(args: Args, url: String) {
    let x = Exchange::builder(&url).namespace(&args.namespace).start().await.unwrap();
    let agents = host(&x, args.agents, args.concurrency, &format!("process {}", std::process::id())).await;
    println!("READY");
    std::io::stdout().flush().unwrap();
    // The parent closes our stdin when it is done.
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await;
    for agent in &agents {
        let _ = agent.shutdown().await;
    }
    x.close().await;
}

/// A child process hosting agents: killed if this process panics first.
struct Hosting(std::process::Child);

impl Drop for Hosting {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn parent(args: Args) {
    let redis = Redis::start();
    let x = Exchange::builder(redis.url()).namespace(&args.namespace).start().await.unwrap();
    let mut children = Vec::new();
    let mut here = Vec::new();
    let started = Instant::now();
    if args.processes <= 1 {
        here = host(&x, args.agents, args.concurrency, "this process").await;
    } else {
        let me = std::env::current_exe().unwrap();
        for _ in 0..args.processes {
            let mut child = Command::new(&me)
                .args(["--child", &redis.url(), "--namespace", &args.namespace])
                .args(["--agents", &(args.agents / args.processes).to_string()])
                .args(["--concurrency", &args.concurrency.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let out = BufReader::new(child.stdout.take().unwrap());
            children.push((Hosting(child), out));
        }
        for (_, out) in &mut children {
            let mut line = String::new();
            while out.read_line(&mut line).unwrap() > 0 && line.trim_end() != "READY" {
                print!("{line}");
                line.clear();
            }
        }
        emit("all", "launch, all processes", started.elapsed().as_secs_f64(), "s");
    }
    emit("all", "redis connections", redis_connections(&redis.url()), "connections");
    emit(
        "all",
        "idle redis commands/s",
        idle_load(&redis.url(), Duration::from_secs(args.idle_secs)).await,
        "commands/s",
    );
    if std::env::var_os("SCALE_DEBUG").is_some() {
        let mut con = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut con).unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut con).unwrap();
        eprintln!("{info}");
    }

    let t = Instant::now();
    let found = x.discover::<Echo>().await.unwrap();
    emit("all", "discover all", t.elapsed().as_secs_f64() * 1e3, "ms");
    assert_eq!(found.len(), args.agents / args.processes.max(1) * args.processes.max(1), "every agent is found");

    for _ in 0..10 {
        x.register_agent::<Rare>(None).await.unwrap();
    }
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        assert_eq!(x.discover::<Rare>().await.unwrap().len(), 10);
        times.push(t.elapsed());
    }
    emit("all", &format!("discover, 10 matches among {}, p50", found.len()), p50_us(times) / 1e3, "ms");

    let client = Client::connect(&x, None).await.unwrap();
    let mut times = Vec::with_capacity(args.calls);
    for i in 0..args.calls {
        let id = found[(i * 7919 + 13) % found.len()].clone();
        let handle = client.bind(x.get_handle(id));
        let t = Instant::now();
        assert_eq!(handle.action(Bounce(i as u64)).await.unwrap(), i as u64);
        times.push(t.elapsed());
    }
    emit("all", &format!("{} random calls answered, p50", args.calls), p50_us(times), "us");
    emit("all", "file descriptors of the calling process", open_fds() as f64, "fds");

    for (mut child, _) in children {
        drop(child.0.stdin.take());
        let _ = child.0.wait();
    }
    for agent in &here {
        let _ = agent.shutdown().await;
    }
    client.close().await.unwrap();
    x.close().await;
}

fn main() {
    let args = Args::parse();
    actix::System::new().block_on(async move {
        match args.child.clone() {
            Some(url) => child(args, url).await,
            None => parent(args).await,
        }
    });
}
