//! Rust and Python Academy 1.0 agents on one exchange: Python calls a Rust
//! simulation agent, Rust calls a Python forecasting agent. Both sides speak
//! Academy 1.0's protocol (its Redis keys, JSON on the wire).
//!
//! ```text
//! python3 -m venv .venv-academy && .venv-academy/bin/pip install academy-py==1.0.0
//! cargo run --example interop -- --redis redis://127.0.0.1:6379 [--python .venv-academy/bin/python]
//! ```

#[path = "../common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use actix_academy::prelude::*;
use actix_academy::{AgentId, Discovery, Exchange, ForeignAgent, Protocol};
use clap::Parser;
use common::{fail, OrExit};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// An epidemic on a population, run in Rust and called from Python.
struct Simulator;

impl Actor for Simulator {
    type Context = Context<Self>;
}

/// What one simulation found.
#[derive(Debug, Serialize, Deserialize)]
struct Run {
    peak: u32,
    peak_step: u32,
    ever_infected: u32,
}

/// Why a simulation cannot run.
#[derive(Debug, Serialize, Deserialize)]
enum SimError {
    /// The infection rate must be in [0, 1].
    RateOutOfRange(f64),
}

#[agent(name = "rust.Simulator")]
impl Simulator {
    /// A discrete SIR epidemic: `people`, one infected, infection `rate`
    /// per contact and step, recovery 0.1 per step.
    #[action]
    fn simulate(&self, steps: u32, rate: f64, people: u32) -> Result<Run, SimError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(SimError::RateOutOfRange(rate));
        }
        let n = f64::from(people.max(1));
        let (mut s, mut i) = (n - 1.0, 1.0);
        let mut run = Run { peak: 1, peak_step: 0, ever_infected: 1 };
        for step in 1..=steps {
            let infected = rate * s * i / n;
            (s, i) = (s - infected, i + infected - 0.1 * i);
            if i.round() as u32 > run.peak {
                (run.peak, run.peak_step) = (i.round() as u32, step);
            }
        }
        run.ever_infected = (n - s).round() as u32;
        Ok(run)
    }
}

#[derive(Parser)]
struct Args {
    /// Redis URL, shared with the Python processes.
    #[arg(long)]
    redis: String,
    /// A Python with academy-py 1.0.0 (default: .venv-academy/bin/python if present, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
}

#[actix::main]
async fn main() {
    let args = Args::parse();
    let python = args.python.unwrap_or_else(|| {
        let venv = PathBuf::from(".venv-academy/bin/python");
        if venv.exists() {
            venv
        } else {
            "python3".into()
        }
    });
    let exchange = Exchange::builder(&args.redis)
        .random_namespace()
        .protocol(Protocol::Academy1)
        .start()
        .await
        .unwrap_or_else(|e| fail(&format!("cannot reach Redis at {}: {e}", args.redis)));
    let namespace = exchange.namespace().to_owned();
    // Python connects to the same Redis (host and port; no password or TLS here).
    let (host, port) = match redis::Client::open(args.redis.as_str()).map(|c| c.get_connection_info().addr().clone()) {
        Ok(redis::ConnectionAddr::Tcp(host, port)) => (host, port.to_string()),
        _ => fail("--redis must be a redis://host:port URL"),
    };
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/interop");
    let python_args = |script: &str| {
        let mut command = Command::new(&python);
        command.arg(here.join(script)).args(["--host", &host, "--port", &port, "--namespace", &namespace]);
        command.kill_on_drop(true);
        command
    };
    println!("interop: Python calls a Rust agent, Rust calls a Python agent (Academy 1.0, namespace {namespace})");

    // Python -> Rust.
    let simulator = Agent::start(Simulator, &exchange, Some("simulator")).await.or_exit("start the simulator");
    let caller = python_args("python_caller.py").output().await.or_exit("run python_caller.py");
    print!("{}", String::from_utf8_lossy(&caller.stdout));
    if !caller.status.success() {
        fail(&format!(
            "python_caller.py failed (is academy-py 1.0.0 installed for {}?):\n{}",
            python.display(),
            String::from_utf8_lossy(&caller.stderr)
        ));
    }

    // Rust -> Python.
    let mut agent = python_args("python_agent.py").stdout(Stdio::piped()).spawn().or_exit("start python_agent.py");
    let mut lines = BufReader::new(agent.stdout.take().expect("piped")).lines();
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("AGENT_ID ") {
                return true;
            }
        }
        false
    });
    if !started.await.unwrap_or(false) {
        fail("python_agent.py did not start");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let found = exchange.discover_by_name("forecast.Forecaster", Discovery::new()).await.or_exit("discover");
        if let Some(id) = found.into_iter().next() {
            break id;
        }
        if Instant::now() > deadline {
            fail("forecast.Forecaster was not discovered");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = AgentId::<ForeignAgent>::from_entity(found).or_exit("an agent id");
    // A Python agent that cannot encode its result never answers: set a deadline.
    let forecaster = exchange
        .get_handle(id)
        .bind_as_client(&exchange)
        .await
        .or_exit("bind")
        .with_timeout(Some(Duration::from_secs(30)));
    let next: Vec<f64> = forecaster.call("predict", (vec![1.0, 2.5, 4.0, 5.5], 3)).await.or_exit("predict");
    println!("rust caller: predict([1, 2.5, 4, 5.5], 3) -> {next:?}");
    match forecaster.call::<Vec<f64>>("predict", (vec![1.0], 3)).await {
        Err(e) => println!("rust caller: predict([1], 3) failed: {}", e.to_string().lines().last().unwrap_or_default()),
        Ok(v) => fail(&format!("predict with one point should fail, got {v:?}")),
    }
    forecaster.shutdown().await.or_exit("shut the Python agent down");
    let exited = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{line}");
        }
        agent.wait().await
    });
    if exited.await.is_err() {
        // academy-py 1.0.0 can hang closing its client after a shutdown.
        println!("python agent: shut down, but academy-py did not finish closing its client; stopping it");
        agent.kill().await.or_exit("stop python_agent.py");
    }

    simulator.shutdown().await;
    exchange.close().await;
    println!("interop: done");
}
