//! The bench program: every measurement of the performance issue, beside the
//! floors of the same run, printed as a table and as one JSON object a line.
//!
//! `cargo bench --bench exchange` (both modes), `-- --quick` (under a minute
//! a mode), `-- --mode pinned|unpinned` (one mode). "pinned" re-runs this
//! program under `taskset -c 0`, so it and its redis-server share CPU 0.

use std::io::{Read, Write};
use std::net::TcpListener as StdListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix_academy::prelude::*;
use actix_academy::wire::{Body, Envelope};
use actix_academy::{Client, Exchange};
use clap::{Parser, ValueEnum};
use futures::{stream, StreamExt};

// ------------------------------------------------------------- behaviors

struct Echo;
impl Actor for Echo {
    type Context = Context<Self>;
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "serde_bytes::ByteBuf")]
struct Bounce(#[serde(with = "serde_bytes")] Vec<u8>);

impl Handler<Bounce> for Echo {
    type Result = MessageResult<Bounce>;
    fn handle(&mut self, m: Bounce, _: &mut Context<Self>) -> Self::Result {
        MessageResult(serde_bytes::ByteBuf::from(m.0))
    }
}

behavior!(Echo { actions: [Bounce] });

/// Echoes text: what Academy 1.0's JSON carries as is.
struct TextEcho;
impl Actor for TextEcho {
    type Context = Context<Self>;
}

#[agent]
impl TextEcho {
    #[action]
    fn echo(&self, text: String) -> String {
        text
    }
}

struct Filler;
impl Actor for Filler {
    type Context = Context<Self>;
}
behavior!(Filler { actions: [] });

struct Target;
impl Actor for Target {
    type Context = Context<Self>;
}
behavior!(Target { actions: [] });

// ------------------------------------------------------------- plumbing

#[path = "support/redis.rs"]
mod redis_server;
use redis_server::Redis;

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Mode {
    Both,
    Pinned,
    Unpinned,
}

#[derive(Parser, Clone)]
struct Args {
    /// A short run: fewer samples and messages.
    #[arg(long)]
    quick: bool,
    #[arg(long, value_enum, default_value = "both")]
    mode: Mode,
    /// Run only the sections whose name contains this (floors, round trips,
    /// academy 1.0, pipelined, one-way, discover, startup, academy 0.1).
    #[arg(long)]
    only: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: run the TCP floor's echo server for messages of this size.
    #[arg(long, hide = true)]
    tcp_echo: Option<usize>,
}

struct Row {
    implementation: &'static str,
    bench: String,
    variant: String,
    latency: Option<(f64, f64, f64)>,
    rate: Option<f64>,
}

struct Report {
    mode: &'static str,
    rows: Vec<Row>,
}

impl Report {
    fn latency(&mut self, implementation: &'static str, bench: &str, variant: &str, mut samples: Vec<Duration>) {
        samples.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let p = |q: f64| us(samples[((samples.len() - 1) as f64 * q).round() as usize]);
        let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64;
        let row = Row {
            implementation,
            bench: bench.into(),
            variant: variant.into(),
            latency: Some((p(0.5), p(0.99), mean)),
            rate: Some(1e6 / mean),
        };
        self.emit(row);
    }

    fn rate(&mut self, implementation: &'static str, bench: &str, variant: &str, count: u64, elapsed: Duration) {
        let rate = count as f64 / elapsed.as_secs_f64();
        self.emit(Row {
            implementation,
            bench: bench.into(),
            variant: variant.into(),
            latency: None,
            rate: Some(rate),
        });
    }

    /// A row measured elsewhere (the C floor): its p50 and p99 only.
    fn percentiles(&mut self, implementation: &'static str, bench: &str, variant: &str, p50: f64, p99: f64) {
        let row = Row {
            implementation,
            bench: bench.into(),
            variant: variant.into(),
            latency: Some((p50, p99, p50)),
            rate: None,
        };
        self.emit(row);
    }

    fn value(&mut self, bench: &str, variant: &str, value: f64) {
        self.emit(Row {
            implementation: "actix-academy",
            bench: bench.into(),
            variant: variant.into(),
            latency: None,
            rate: Some(value),
        });
    }

    fn emit(&mut self, row: Row) {
        let num = |v: Option<f64>| v.map_or("null".to_owned(), |v| format!("{v:.1}"));
        let (p50, p99, mean) = match row.latency {
            Some((a, b, c)) => (Some(a), Some(b), Some(c)),
            None => (None, None, None),
        };
        println!(
            "{{\"impl\": \"{}\", \"mode\": \"{}\", \"bench\": \"{}\", \"variant\": \"{}\", \"p50_us\": {}, \"p99_us\": {}, \"mean_us\": {}, \"msgs_per_s\": {}}}",
            row.implementation, self.mode, row.bench, row.variant, num(p50), num(p99), num(mean), num(row.rate)
        );
        self.rows.push(row);
    }

    fn find(&self, bench: &str, variant: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.bench == bench && r.variant == variant)
    }

    fn print_table(&self) {
        println!();
        println!(
            "## {} (CPU placement: {})",
            self.mode,
            if self.mode == "pinned" { "everything on CPU 0" } else { "free" }
        );
        println!("| impl | bench | variant | p50 us | p99 us | mean us | per s |");
        println!("|---|---|---|---:|---:|---:|---:|");
        for row in &self.rows {
            let (p50, p99, mean) = match row.latency {
                Some((a, b, c)) => (format!("{a:.1}"), format!("{b:.1}"), format!("{c:.1}")),
                None => ("".into(), "".into(), "".into()),
            };
            let rate = row.rate.map_or(String::new(), |r| format!("{r:.0}"));
            println!("| {} | {} | {} | {p50} | {p99} | {mean} | {rate} |", row.implementation, row.bench, row.variant);
        }
        let ratio = |a: (&str, &str), b: (&str, &str)| {
            let (Some(x), Some(y)) = (self.find(a.0, a.1), self.find(b.0, b.1)) else {
                return None;
            };
            Some(x.latency?.0 / y.latency?.0)
        };
        println!();
        for (label, _) in SIZES {
            // The direct path's floor is the C ping-pong when there is one;
            // the bench's own (Rust, std::net) must agree with it, or
            // something else was busy on the core and no ratio is printed.
            let c = ("floor", format!("c tcp ping-pong {label}"));
            let rust = ("floor", format!("tcp ping-pong {label}"));
            let floor = match ratio((rust.0, &rust.1), (c.0, &c.1)) {
                Some(r) if !(0.5..=2.0).contains(&r) => {
                    println!(
                        "- tcp ping-pong {label}: the bench's floor is {r:.2}x the C ping-pong's: implausible, so no \
                         direct ratio at {label}"
                    );
                    None
                }
                Some(_) => Some(c),
                None => Some(rust),
            };
            let direct = ("action round trip", format!("echo {label} direct"));
            if let Some((floor, r)) =
                floor.and_then(|f| Some((f.1.clone(), ratio((direct.0, &direct.1), (f.0, &f.1))?)))
            {
                println!("- echo {label} direct / {floor} (p50): {r:.2}x (target <= 2x)");
            }
            let floor = ("floor", format!("rpush+blpop ping-pong {label}"));
            if let Some(r) = ratio(("action round trip", &format!("echo {label} redis")), (floor.0, &floor.1)) {
                println!("- echo {label} via Redis / RPUSH+BLPOP ping-pong {label} (p50): {r:.2}x (target <= 2x)");
            }
            if let Some(r) = ratio(("action round trip", &format!("echo {label} academy-1.0")), (floor.0, &floor.1)) {
                println!(
                    "- echo {label} in Academy 1.0 mode / RPUSH+BLPOP ping-pong {label} (p50): {r:.2}x (target <= 2x)"
                );
            }
        }
        // Python Academy 0.1.0 in the same run: how many times faster.
        let ours = |bench: &str, variant: &str| self.find(bench, variant).and_then(|r| r.latency.map(|l| l.0));
        let mut pairs: Vec<(String, String, String)> = SIZES
            .iter()
            .flat_map(|(label, _)| {
                ["direct", "redis"].map(|path| {
                    let variant = format!("echo {label} {path}");
                    ("action round trip".to_owned(), variant.clone(), variant)
                })
            })
            .collect();
        pairs.push(("startup".into(), "launch to first action (each of 1000)".into(), "launch to first action".into()));
        for (bench, variant, theirs) in pairs {
            let found = self.rows.iter().find(|r| r.implementation == ACADEMY_0_1 && r.variant.starts_with(&theirs));
            if let (Some(us), Some(them)) = (ours(&bench, &variant), found.and_then(|r| r.latency.map(|l| l.0))) {
                println!(
                    "- {variant}: {:.1}x faster than Academy 0.1.0 ({them:.0} us / {us:.0} us p50; target >= 10x)",
                    them / us
                );
            }
        }

        for (bench, variant, target) in [
            ("pipelined actions", "echo 100B, window 1000", "target >= 300,000/s"),
            ("one-way 100B", "direct, 1 sender(s)", "target >= 1,000,000/s"),
            ("one-way 100B", "direct, 8 sender(s)", "target: more than 1 sender"),
            ("one-way 100B", "redis, 1 sender(s), 64 sends in flight", "target >= 300,000/s"),
        ] {
            if let Some(rate) = self.find(bench, variant).and_then(|r| r.rate) {
                println!("- {bench}, {variant}: {rate:.0}/s ({target})");
            }
        }
    }
}

fn samples(args: &Args, full: usize) -> usize {
    if args.quick {
        (full / 5).max(200)
    } else {
        full
    }
}

// ------------------------------------------------------------- floors

/// Sizes the floors and the echo round trips are measured at.
const SIZES: [(&str, usize); 4] = [("100B", 100), ("10KB", 10_000), ("1MB", 1 << 20), ("10MB", 10 << 20)];

/// Samples for a payload size: fewer for the large ones.
fn samples_for(args: &Args, size: usize) -> usize {
    match size {
        s if s >= 10 << 20 => {
            if args.quick {
                20
            } else {
                100
            }
        }
        s if s >= 1 << 20 => {
            if args.quick {
                50
            } else {
                300
            }
        }
        _ => samples(args, 5000),
    }
}

/// The echo end of the TCP floor, run as a child process: a blocking echo of
/// `size`-byte messages on one connection, as a C ping-pong would do.
fn tcp_echo_server(size: usize) {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    let (mut s, _) = listener.accept().unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; size];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            break;
        }
    }
}

/// Two-process blocking `std::net` ping-pong of `size` bytes: the direct path's floor.
fn tcp_floor(n: usize, size: usize) -> Vec<Duration> {
    let mut server = Command::new(std::env::current_exe().unwrap())
        .args(["--tcp-echo", &size.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    let mut s = std::net::TcpStream::connect(line.trim()).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = vec![7u8; size];
    let warm = (n / 10).max(2);
    let mut times = Vec::with_capacity(n);
    for i in 0..n + warm {
        let t = Instant::now();
        s.write_all(&buf).unwrap();
        s.read_exact(&mut buf).unwrap();
        if i >= warm {
            times.push(t.elapsed());
        }
    }
    drop(s);
    let _ = server.wait();
    times
}

/// The C ping-pong (`benches/pingpong.c`), built with `cc` into the
/// target directory; `None` without a C compiler.
fn c_pingpong() -> Option<std::path::PathBuf> {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pingpong.c");
    let out = std::env::current_exe().ok()?.with_file_name("academy-pingpong");
    let built = Command::new("cc").args(["-O2", "-o"]).arg(&out).arg(&source).status();
    match built {
        Ok(status) if status.success() => Some(out),
        other => {
            eprintln!("no C ping-pong floor (cc -O2 benches/pingpong.c: {other:?})");
            None
        }
    }
}

/// The direct path's floors, measured before Redis or any runtime of the
/// bench exists (so nothing else of it shares the core): the C ping-pong
/// and the bench's own two-process `std::net` one, at every size.
fn tcp_floors(args: &Args, report: &mut Report) {
    let c = c_pingpong();
    for (label, size) in SIZES {
        let n = samples_for(args, size);
        if let Some(c) = &c {
            let out = Command::new(c).args([size.to_string(), n.to_string()]).output();
            let line = out.as_ref().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            let ns: Vec<f64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            match ns[..] {
                [_, p50, p99] => {
                    report.percentiles("floor", "floor", &format!("c tcp ping-pong {label}"), p50 / 1e3, p99 / 1e3)
                }
                _ => eprintln!("the C ping-pong printed {line:?}"),
            }
        }
        let times = tcp_floor(n, size);
        report.latency("floor", "floor", &format!("tcp ping-pong {label}"), times);
    }
}

async fn floors(args: &Args, redis: &Redis, report: &mut Report) {
    // Raw Redis PING on one connection.
    let n = samples(args, 5000);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let mut times = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
        if i >= n / 10 {
            times.push(t.elapsed());
        }
    }
    report.latency("floor", "floor", "redis PING", times);

    // RPUSH + BLPOP ping-pong through Redis (an echo task on its own
    // connection): what one echo through the queues costs at the least.
    for (label, size) in SIZES {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let mut echo = client.get_multiplexed_async_connection_with_config(&config).await.unwrap();
        let echo_task = tokio::spawn(async move {
            loop {
                let (_, v): (String, Vec<u8>) =
                    redis::cmd("BLPOP").arg("bench:ping").arg(0).query_async(&mut echo).await.unwrap();
                if v.is_empty() {
                    break;
                }
                let _: () = redis::cmd("RPUSH").arg("bench:pong").arg(v).query_async(&mut echo).await.unwrap();
            }
        });
        let mut con = client.get_multiplexed_async_connection_with_config(&config).await.unwrap();
        let n = samples_for(args, size);
        let payload = vec![1u8; size];
        let warm = (n / 10).max(2);
        let mut times = Vec::with_capacity(n);
        for i in 0..n + warm {
            let t = Instant::now();
            let _: () = redis::cmd("RPUSH").arg("bench:ping").arg(&payload[..]).query_async(&mut con).await.unwrap();
            let _: (String, Vec<u8>) =
                redis::cmd("BLPOP").arg("bench:pong").arg(0).query_async(&mut con).await.unwrap();
            if i >= warm {
                times.push(t.elapsed());
            }
        }
        let _: () = redis::cmd("RPUSH").arg("bench:ping").arg(&b""[..]).query_async(&mut con).await.unwrap();
        let _ = echo_task.await;
        report.latency("floor", "floor", &format!("rpush+blpop ping-pong {label}"), times);
    }
}

// ------------------------------------------------------------- the crate

async fn exchange(redis: &Redis, peer_to_peer: bool) -> Exchange {
    Exchange::builder(redis.url()).random_namespace().peer_to_peer(peer_to_peer).start().await.unwrap()
}

/// Another exchange in `x`'s namespace, for callers: a call between
/// exchanges crosses TCP (or Redis), where one within an exchange goes in
/// memory.
async fn beside(redis: &Redis, x: &Exchange, peer_to_peer: bool) -> Exchange {
    let builder = Exchange::builder(redis.url()).namespace(x.namespace()).peer_to_peer(peer_to_peer);
    builder.start().await.unwrap()
}

/// Encrypted peer links (built with `--features encryption`).
#[cfg(feature = "encryption")]
async fn encrypted_exchange(redis: &Redis) -> Exchange {
    let builder = Exchange::builder(redis.url()).random_namespace().secret("bench").encrypt(true);
    builder.start().await.unwrap()
}

async fn round_trips(args: &Args, redis: &Redis, report: &mut Report) {
    #[allow(unused_mut)]
    let mut paths = vec![("direct", true), ("redis", false)];
    #[cfg(feature = "encryption")]
    paths.push(("encrypted", true));
    for (path, p2p) in paths {
        #[cfg(feature = "encryption")]
        let x = match path {
            "encrypted" => encrypted_exchange(redis).await,
            _ => exchange(redis, p2p).await,
        };
        #[cfg(not(feature = "encryption"))]
        let x = exchange(redis, p2p).await;
        #[cfg(feature = "encryption")]
        let caller = match path {
            "encrypted" => {
                let builder = Exchange::builder(redis.url()).namespace(x.namespace()).secret("bench").encrypt(true);
                builder.start().await.unwrap()
            }
            _ => beside(redis, &x, p2p).await,
        };
        #[cfg(not(feature = "encryption"))]
        let caller = beside(redis, &x, p2p).await;
        let id: AgentId<Echo> = x.register_agent(None).await.unwrap();
        let _agent = Agent::launch(Echo, id.clone(), &x).await.unwrap();
        if path == "direct" {
            // A caller of the agent's own exchange: in memory.
            let echo = x.get_handle(id.clone()).bind_as_client(&x).await.unwrap();
            let n = samples(args, 5000);
            let mut times = Vec::with_capacity(n);
            for i in 0..n + n / 10 {
                let t = Instant::now();
                echo.action(Bounce(vec![0x5a; 100])).await.unwrap();
                if i >= n / 10 {
                    times.push(t.elapsed());
                }
            }
            report.latency("actix-academy", "action round trip", "echo 100B in process", times);
            echo.close().await.unwrap();
        }
        let echo = x.get_handle(id).bind_as_client(&caller).await.unwrap();
        let n = samples(args, 5000);
        let mut times = Vec::with_capacity(n);
        for i in 0..n + n / 10 {
            let rtt = echo.ping().await.unwrap();
            if i >= n / 10 {
                times.push(rtt);
            }
        }
        report.latency("actix-academy", "action round trip", &format!("ping {path}"), times);
        for (label, size) in SIZES {
            let n = samples_for(args, size);
            let payload = vec![0x5au8; size];
            let mut times = Vec::with_capacity(n);
            for i in 0..n + (n / 10).max(2) {
                let t = Instant::now();
                let back = echo.action(Bounce(payload.clone())).await.unwrap();
                let elapsed = t.elapsed();
                assert_eq!(back.len(), size);
                if i >= (n / 10).max(2) {
                    times.push(elapsed);
                }
            }
            report.latency("actix-academy", "action round trip", &format!("echo {label} {path}"), times);
        }
        echo.close().await.unwrap();
        caller.close().await;
        x.close().await;
    }
}

/// Round trips in Academy 1.0's protocol (JSON through the Redis queues,
/// as a Python peer would send them), against the rpush+blpop floor.
async fn academy_1_0(args: &Args, redis: &Redis, report: &mut Report) {
    let builder = Exchange::builder(redis.url()).random_namespace();
    let x = builder.protocol(actix_academy::Protocol::Academy1).start().await.unwrap();
    let agent = Agent::start(TextEcho, &x, None).await.unwrap();
    let echo = x.get_handle(agent.id().clone()).bind_as_client(&x).await.unwrap();
    for (label, size) in SIZES {
        let n = samples_for(args, size);
        let text = "a".repeat(size);
        let warm = (n / 10).max(2);
        let mut times = Vec::with_capacity(n);
        for i in 0..n + warm {
            let t = Instant::now();
            let back = echo.echo(text.clone()).await.unwrap();
            let elapsed = t.elapsed();
            assert_eq!(back.len(), size);
            if i >= warm {
                times.push(elapsed);
            }
        }
        report.latency("actix-academy", "action round trip", &format!("echo {label} academy-1.0"), times);
    }
    echo.close().await.unwrap();
    agent.shutdown().await;
    x.close().await;
}

/// How Python Academy 0.1.0's rows are named.
const ACADEMY_0_1: &str = "academy-0.1.0";

/// Python Academy 0.1.0's `HybridExchange` with the same payloads
/// (`benches/academy-0.1`, in a venv of its own), on this bench's Redis
/// and pinned as this program is: the anchor users compare with. Run while
/// nothing of this program's own is alive.
fn academy_0_1(args: &Args, redis: &Redis, report: &mut Report) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/academy-0.1");
    let mut command = Command::new("bash");
    command.arg(&script).args(["--redis-url", &redis.url()]);
    if args.quick {
        command.arg("--quick");
    }
    let out = match command.stderr(Stdio::inherit()).output() {
        Ok(out) if out.status.success() => out,
        other => return eprintln!("no Academy 0.1.0 rows ({} failed: {other:?})", script.display()),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(row) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let text = |key: &str| row[key].as_str().map(str::to_owned);
        let (Some(bench), Some(variant), Some(p50), Some(p99)) =
            (text("bench"), text("variant"), row["p50_us"].as_f64(), row["p99_us"].as_f64())
        else {
            continue;
        };
        report.percentiles(ACADEMY_0_1, &bench, &variant, p50, p99);
    }
}

async fn pipelined(args: &Args, redis: &Redis, report: &mut Report) {
    let x = exchange(redis, true).await;
    let id: AgentId<Echo> = x.register_agent(None).await.unwrap();
    let _agent = Agent::launch_with(id.clone(), &x, 1024, |_| Echo).await.unwrap();
    let caller = beside(redis, &x, true).await;
    let echo = x.get_handle(id).bind_as_client(&caller).await.unwrap();
    let total = if args.quick { 20_000 } else { 50_000 };
    let t = Instant::now();
    let done = stream::iter(0..total)
        .map(|_| echo.action(Bounce(vec![1; 100])))
        .buffer_unordered(1000)
        .filter(|r| futures::future::ready(r.is_ok()))
        .count()
        .await;
    assert_eq!(done, total);
    report.rate("actix-academy", "pipelined actions", "echo 100B, window 1000", total as u64, t.elapsed());
    echo.close().await.unwrap();
    caller.close().await;
    x.close().await;
}

async fn one_way(args: &Args, redis: &Redis, report: &mut Report) {
    let total: u64 = if args.quick { 50_000 } else { 200_000 };
    // (path, peer to peer, senders, sends each keeps in flight)
    let runs = [
        ("direct", true, 1u64, 1usize),
        ("direct", true, 8, 1),
        ("redis", false, 1, 1),
        ("redis", false, 8, 1),
        ("redis", false, 1, 64),
    ];
    for (path, p2p, senders, in_flight) in runs {
        {
            let receiver = exchange(redis, p2p).await;
            let me = receiver.register_client(None).await.unwrap();
            let mut inbox = receiver.get_mailbox(&me).await.unwrap();
            let mut exchanges = Vec::new();
            for _ in 0..senders {
                let x = Exchange::builder(redis.url())
                    .namespace(receiver.namespace())
                    .peer_to_peer(p2p)
                    .start()
                    .await
                    .unwrap();
                let src = x.register_client(None).await.unwrap();
                exchanges.push((x, src));
            }
            let t = Instant::now();
            for (x, src) in exchanges.clone() {
                let dest = me.clone();
                actix::spawn(async move {
                    use futures::StreamExt;
                    futures::stream::iter(0..total / senders)
                        .for_each_concurrent(in_flight, |_| {
                            let body = Body::ActionRequest { action: "n".into(), args: vec![0; 100].into() };
                            let envelope = Envelope::new(src.clone().into(), dest.clone().into(), body);
                            let x = &x;
                            async move { x.send(envelope).await.unwrap() }
                        })
                        .await;
                });
            }
            for _ in 0..total {
                inbox.recv(Some(Duration::from_secs(60))).await.expect("a one-way message was lost");
            }
            let elapsed = t.elapsed();
            let variant = match in_flight {
                1 => format!("{path}, {senders} sender(s)"),
                n => format!("{path}, {senders} sender(s), {n} sends in flight"),
            };
            report.rate("actix-academy", "one-way 100B", &variant, total, elapsed);
            for (x, _) in exchanges {
                x.close().await;
            }
            inbox.close().await.unwrap();
            receiver.close().await;
        }
    }
}

async fn discover(args: &Args, redis: &Redis, report: &mut Report) {
    let x = exchange(redis, true).await;
    for _ in 0..10 {
        x.register_agent::<Target>(None).await.unwrap();
    }
    let mut registered = 10;
    for size in [10usize, 100, 1000, 10_000] {
        let more = size.saturating_sub(registered);
        stream::iter(0..more)
            .for_each_concurrent(64, |_| async { x.register_agent::<Filler>(None).await.map(drop).unwrap() })
            .await;
        registered = registered.max(size);
        let n = samples(args, 2000);
        let mut times = Vec::with_capacity(n);
        for i in 0..n + n / 10 {
            let t = Instant::now();
            let found = x.discover_with::<Target>(actix_academy::Discovery::new().exact()).await.unwrap();
            if i >= n / 10 {
                times.push(t.elapsed());
            }
            assert_eq!(found.len(), 10);
        }
        report.latency("actix-academy", "discover", &format!("{size} agents, 10 match"), times);
    }
    x.close().await;
}

fn rss_peak_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn startup(args: &Args, redis: &Redis, report: &mut Report) {
    let x = exchange(redis, true).await;
    // The first action crosses TCP: the client is another exchange's.
    let caller = beside(redis, &x, true).await;
    let client = Client::connect(&caller, None).await.unwrap();
    let count = 1000;
    let mut agents = Vec::with_capacity(count);
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let id: AgentId<Echo> = x.register_agent(None).await.unwrap();
        let agent = Agent::launch(Echo, id.clone(), &x).await.unwrap();
        let handle = client.bind(caller.get_handle(id));
        handle.action(Bounce(vec![1])).await.unwrap();
        times.push(t.elapsed());
        agents.push((agent, handle));
    }
    report.latency("actix-academy", "startup", "launch to first action (each of 1000)", times);
    report.value("startup", "peak RSS MB (1000 agents)", rss_peak_mb());
    let connections = {
        let mut con = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
        list.lines().count() as f64 - 1.0 // minus this one
    };
    report.value("startup", "redis connections (1000 agents)", connections);
    let window = Duration::from_secs(if args.quick { 2 } else { 5 });
    let before = redis.info("stats", "total_commands_processed");
    tokio::time::sleep(window).await;
    let after = redis.info("stats", "total_commands_processed");
    let own = 2.0; // the two INFO calls
    let idle = (after.saturating_sub(before) as f64 - own).max(0.0) / window.as_secs_f64();
    report.value("startup", "redis commands/s, 1000 idle agents", idle);
    for (_, handle) in &agents {
        let _ = handle.shutdown().await;
    }
    client.close().await.unwrap();
    caller.close().await;
    x.close().await;
}

fn run_mode(args: &Args, mode: &'static str) {
    let mut report = Report { mode, rows: Vec::new() };
    let run = |section: &str| args.only.as_deref().is_none_or(|only| section.contains(only));
    if run("floors") {
        tcp_floors(args, &mut report);
    }
    actix::System::new().block_on(async move {
        let redis = Redis::start();
        if run("floors") {
            floors(args, &redis, &mut report).await;
        }
        if run("round trips") {
            round_trips(args, &redis, &mut report).await;
        }
        if run("academy 1.0") {
            academy_1_0(args, &redis, &mut report).await;
        }
        if run("pipelined") {
            pipelined(args, &redis, &mut report).await;
        }
        if run("one-way") {
            one_way(args, &redis, &mut report).await;
        }
        if run("discover") {
            discover(args, &redis, &mut report).await;
        }
        if run("startup") {
            startup(args, &redis, &mut report).await;
        }
        if run("academy 0.1") {
            academy_0_1(args, &redis, &mut report);
        }
        report.print_table();
    });
}

fn main() {
    let args = Args::parse();
    if let Some(size) = args.tcp_echo {
        return tcp_echo_server(size);
    }
    match args.mode {
        Mode::Pinned => run_mode(&args, "pinned"),
        Mode::Unpinned => run_mode(&args, "unpinned"),
        Mode::Both => {
            let me = std::env::current_exe().unwrap();
            let mut quick: Vec<&str> = if args.quick { vec!["--quick"] } else { vec![] };
            if let Some(only) = &args.only {
                quick.extend(["--only", only]);
            }
            let pinned =
                Command::new("taskset").arg("-c").arg("0").arg(&me).args(["--mode", "pinned"]).args(&quick).status();
            match pinned {
                Ok(status) if status.success() => {}
                other => eprintln!("pinned run failed ({other:?}); is taskset installed?"),
            }
            let status = Command::new(&me).args(["--mode", "unpinned"]).args(&quick).status().unwrap();
            std::process::exit(status.code().unwrap_or(1));
        }
    }
}
