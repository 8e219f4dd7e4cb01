//! An agent in a separate OS process: discovered by behavior, called from
//! this one, fed messages sent before it started, and killed mid-call.
//!
//! The child is this same test binary, re-run with `--ignored child_agent`.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_academy::{Agent, AgentId, Error, Exchange};
use support::agents::{Counter, Increment, Sleep};
use support::RedisServer;

const CHILD: &str = "ACADEMY_TEST_CHILD";

/// A child process running a Counter agent; killed when dropped.
struct AgentProcess(Child);

impl AgentProcess {
    fn spawn(redis: &RedisServer, namespace: &str, agent: Option<&AgentId<Counter>>) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["child_agent", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD, format!("{} {namespace}", redis.url()))
            .stdout(Stdio::null());
        if let Some(agent) = agent {
            command.env("ACADEMY_TEST_AGENT", agent.uid().to_string());
        }
        Self(command.spawn().unwrap())
    }

    /// Waits (without blocking the runtime: this process's exchange still
    /// acknowledges what the child sends it) for a successful exit.
    async fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child: runs one Counter agent until it is shut down.
#[actix::test]
#[ignore = "run by the other tests in a child process"]
async fn child_agent() {
    let Ok(config) = std::env::var(CHILD) else {
        panic!("a child process entry point, started by the other tests of this file with {CHILD} set; it fails when run alone")
    };
    let (url, namespace) = config.split_once(' ').unwrap();
    let exchange = Exchange::builder(url).namespace(namespace).secret("test secret").start().await.unwrap();
    let id = match std::env::var("ACADEMY_TEST_AGENT") {
        Ok(uid) => {
            let id = actix_academy::EntityId::from_parts(uid.parse().unwrap(), actix_academy::Role::Agent, None);
            AgentId::from_entity(id).unwrap()
        }
        Err(_) => exchange.register_agent::<Counter>(Some("child")).await.unwrap(),
    };
    let agent = Agent::launch(Counter::default(), id, &exchange).await.unwrap();
    agent.wait().await;
    exchange.close().await;
}

#[actix::test]
async fn an_agent_in_another_process_is_discovered_and_called() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let mut child = AgentProcess::spawn(&redis, exchange.namespace(), None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        if let Some(id) =
            exchange.discover_with::<Counter>(actix_academy::Discovery::new().exact()).await.unwrap().pop()
        {
            break id;
        }
        assert!(Instant::now() < deadline, "the child agent never showed up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let counter = exchange.get_handle(id).bind_as_client(&exchange).await.unwrap();
    assert_eq!(counter.action(Increment(5)).await.unwrap(), 5);
    assert_eq!(counter.action(Increment(5)).await.unwrap(), 10);
    // The child exits with `agent.wait()` then `exchange.close()`: its answer
    // to the shutdown still goes out.
    let shutdown = tokio::time::timeout(Duration::from_secs(30), counter.shutdown());
    shutdown.await.expect("the shutdown answer never came").unwrap();
    assert!(child.wait_exit(Duration::from_secs(10)).await, "the child did not exit cleanly");
    assert!(exchange.discover_with::<Counter>(actix_academy::Discovery::new().exact()).await.unwrap().is_empty());
}

#[actix::test]
async fn messages_sent_before_the_agent_process_starts_are_handled() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let id: AgentId<Counter> = exchange.register_agent(None).await.unwrap();
    let counter = exchange.get_handle(id.clone()).bind_as_client(&exchange).await.unwrap().with_liveness_timeout(None);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let counter = counter.clone();
            actix::spawn(async move { counter.action(Increment(1)).await })
        })
        .collect();
    let queue = format!("{}:queue:{}", exchange.namespace(), id.base32());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let queued: usize = redis::Commands::llen(&mut redis.client(), &queue).unwrap();
        if queued == 3 {
            break;
        }
        assert!(queued < 3 && std::time::Instant::now() < deadline, "{queued} calls wait in Redis, not 3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut child = AgentProcess::spawn(&redis, exchange.namespace(), Some(&id));
    let mut results = Vec::new();
    for call in calls {
        results.push(tokio::time::timeout(Duration::from_secs(20), call).await.unwrap().unwrap().unwrap());
    }
    results.sort_unstable();
    assert_eq!(results, [1, 2, 3]);
    counter.shutdown().await.unwrap();
    assert!(child.wait_exit(Duration::from_secs(10)).await);
}

#[actix::test]
async fn killing_the_agent_process_mid_call_fails_the_caller_within_the_bound() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let id: AgentId<Counter> = exchange.register_agent(None).await.unwrap();
    let mut child = AgentProcess::spawn(&redis, exchange.namespace(), Some(&id));
    let bound = Duration::from_secs(1);
    let counter = exchange.get_handle(id).bind_as_client(&exchange).await.unwrap().with_liveness_timeout(Some(bound));
    tokio::time::timeout(Duration::from_secs(20), counter.ping()).await.unwrap().unwrap();

    let call = {
        let counter = counter.clone();
        actix::spawn(async move { counter.action(Sleep(60_000)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.0.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), call).await.expect("the caller hung").unwrap();
    let waited = killed.elapsed();
    assert!(matches!(result, Err(Error::Unresponsive { .. })), "{result:?}");
    eprintln!("the caller failed {waited:?} after the kill (liveness bound {bound:?})");
    assert!(waited < bound * 3, "took {waited:?}");
}
