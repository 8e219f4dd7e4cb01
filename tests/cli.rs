//! The `academy` command-line tool against a live exchange: agents of two
//! behaviors, one of them in a process that is killed.
#![cfg(feature = "cli")]

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use actix_academy::prelude::*;
use actix_academy::wire::{Body, Envelope};
use actix_academy::{MailboxStatus, WhenInactive};
use support::agents::{Counter, Increment};
use support::RedisServer;

const CHILD: &str = "ACADEMY_CLI_CHILD";

/// A second behavior, served by this process.
struct Greeter;

impl Actor for Greeter {
    type Context = Context<Self>;
}

#[agent(name = "greeter")]
impl Greeter {
    /// Says hello.
    #[action]
    fn greet(&self, name: String) -> String {
        format!("hello {name}")
    }
}

/// The child: serves a counter named "victim" until it is killed.
#[actix::test]
#[ignore = "run by the other tests in a child process"]
async fn child() {
    let Ok(config) = std::env::var(CHILD) else {
        panic!("a child process entry point, started by the other tests of this file with {CHILD} set; it fails when run alone")
    };
    let (url, namespace) = config.split_once(' ').unwrap();
    let exchange = Exchange::builder(url)
        .namespace(namespace)
        .secret("test secret")
        .heartbeat(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let agent = Agent::start(Counter::default(), &exchange, Some("victim")).await.unwrap();
    agent.wait().await;
}

/// Runs the tool without blocking this thread: the live agent it calls
/// runs on it.
async fn academy(redis: &RedisServer, namespace: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_academy"))
        .args(args)
        .env("ACADEMY_REDIS_URL", redis.url())
        .env("ACADEMY_NAMESPACE", namespace)
        .env("ACADEMY_SECRET", "test secret")
        .output()
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "academy failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(output)).expect("--json prints JSON")
}

#[actix::test]
async fn the_cli_shows_a_dead_agent_its_queue_and_a_live_one() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let ns = exchange.namespace().to_owned();
    let greeter = Agent::start(Greeter, &exchange, Some("greeter-1")).await.unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{} {ns}", redis.url()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim: AgentId<Counter> = loop {
        if let Some(id) = exchange.discover::<Counter>().await.unwrap().pop() {
            break id;
        }
        assert!(Instant::now() < deadline, "the agent process never showed up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while exchange.status(&victim).await.unwrap() != MailboxStatus::Inactive {
        assert!(Instant::now() < deadline, "the killed agent never turned inactive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Three requests wait for it.
    let me = exchange.register_client(Some("sender")).await.unwrap();
    for _ in 0..3 {
        let args = rmp_serde::to_vec(&Increment(1)).unwrap().into();
        let request = Body::ActionRequest { action: "Increment".into(), args };
        let envelope = Envelope::new(me.clone().into(), victim.entity().clone(), request);
        exchange.send_with(envelope, WhenInactive::Queue).await.unwrap();
    }

    // ls: the dead agent, inactive, its owner dead, 3 queued; the live one.
    let table = stdout(&academy(&redis, &ns, &["ls"]).await);
    println!("{table}");
    let line = |name: &str| table.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name} in {table}"));
    let dead = line("victim");
    assert!(dead.contains("Counter") && dead.contains("inactive") && dead.contains("dead"), "{dead}");
    assert!(dead.trim_end().ends_with(" 3"), "{dead}");
    let live = line("greeter-1");
    assert!(live.contains("greeter") && live.contains("listening") && live.contains("alive"), "{live}");

    // A reader that has gone (`| head`): the tool ends quietly, no panic.
    let mut closed = tokio::process::Command::new(env!("CARGO_BIN_EXE_academy"))
        .args(["ls", "--json", "--all"])
        .env("ACADEMY_REDIS_URL", redis.url())
        .env("ACADEMY_NAMESPACE", &ns)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(closed.stdout.take());
    let out = closed.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("panicked"), "{:?}: {stderr}", out.status);

    let rows = json(&academy(&redis, &ns, &["ls", "--json", "--status", "inactive"]).await);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"]["name"], "victim");
    assert_eq!(rows[0]["queued"], 3);
    assert_eq!(rows[0]["owner_alive"], false);
    assert_eq!(rows[0]["behavior"], "Counter");
    let greeters = json(&academy(&redis, &ns, &["ls", "--json", "--behavior", "greeter"]).await);
    assert_eq!(greeters.as_array().unwrap().len(), 1);

    // discover, by the behavior's name.
    let found = json(&academy(&redis, &ns, &["discover", "greeter", "--json"]).await);
    assert_eq!(found[0]["name"], "greeter-1");
    let none = stdout(&academy(&redis, &ns, &["discover", "Counter"]).await);
    assert!(none.contains("no agent"), "an inactive agent is left out: {none}");

    // ping: a time for the live agent, a clear error for the dead one.
    let pinged = stdout(&academy(&redis, &ns, &["ping", "greeter-1"]).await);
    assert!(pinged.contains("ms"), "{pinged}");
    let pinged = json(&academy(&redis, &ns, &["ping", "--json", &greeter.id().uid().to_string()]).await);
    assert!(pinged["rtt_us"].as_u64().is_some(), "{pinged}");
    let dead_ping = academy(&redis, &ns, &["ping", "AgentId<victim>"]).await;
    assert!(!dead_ping.status.success());
    let said = String::from_utf8_lossy(&dead_ping.stderr);
    assert!(said.contains("inactive"), "{said}");

    // describe: the live agent's actions.
    let described = stdout(&academy(&redis, &ns, &["describe", "greeter-1"]).await);
    assert!(described.contains("greet(name: String) -> String") && described.contains("Says hello."), "{described}");

    // peek: decoded, and not consumed.
    for _ in 0..2 {
        let peeked = stdout(&academy(&redis, &ns, &["peek", "victim", "10"]).await);
        assert_eq!(peeked.lines().filter(|l| l.contains("action request \"Increment\"")).count(), 3, "{peeked}");
    }
    let peeked = json(&academy(&redis, &ns, &["peek", "--json", &victim.base32()]).await);
    assert_eq!(peeked.as_array().unwrap().len(), 3);
    assert_eq!(peeked[0]["from"]["name"], "sender");

    // stats.
    println!("{}", stdout(&academy(&redis, &ns, &["stats"]).await));
    println!("{}", stdout(&academy(&redis, &ns, &["peek", "victim", "2"]).await));
    let stats = json(&academy(&redis, &ns, &["stats", "--json"]).await);
    assert_eq!(stats["queued"], 3);
    assert_eq!(stats["inactive"], 1);
    assert_eq!(stats["deepest"]["id"]["name"], "victim");
    assert_eq!(stats["oldest"]["id"]["name"], "victim");
    assert!(stats["oldest"]["age_s"].as_f64().unwrap() >= 0.0, "{stats}");

    // terminate: ls leaves it out, unless asked.
    stdout(&academy(&redis, &ns, &["terminate", "victim"]).await);
    assert_eq!(exchange.status(&victim).await.unwrap(), MailboxStatus::Terminated);
    assert!(!stdout(&academy(&redis, &ns, &["ls"]).await).contains("victim"));
    let terminated = json(&academy(&redis, &ns, &["ls", "--json", "--status", "terminated"]).await);
    assert!(terminated.as_array().unwrap().iter().any(|m| m["id"]["name"] == "victim"), "{terminated}");
    // The name used again, by a live agent: that is the one meant.
    let successor = Agent::start(Greeter, &exchange, Some("victim")).await.unwrap();
    let pinged = json(&academy(&redis, &ns, &["ping", "--json", "victim"]).await);
    assert_eq!(pinged["id"]["uuid"], successor.id().uid().to_string());
    successor.shutdown().await;

    // Clear errors: an unknown id, a Redis that is not there.
    let unknown = academy(&redis, &ns, &["ping", "nobody"]).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no mailbox"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = Command::new(env!("CARGO_BIN_EXE_academy"))
        .args(["--redis", &format!("redis://127.0.0.1:{port}"), "ls"])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot use the exchange"));
    let bad = Command::new(env!("CARGO_BIN_EXE_academy")).args(["--redis", "not a url", "ls"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot use the exchange"));

    greeter.shutdown().await;
    exchange.close().await;
}
