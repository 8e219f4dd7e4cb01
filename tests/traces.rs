//! A request followed across processes: the caller's `academy.call` span
//! and the agent's `academy.dispatch` span, in two processes, record the
//! same trace id, which the envelope carried.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix_academy::prelude::*;
use support::agents::{Counter, Increment};
use support::{Captured, RedisServer};
use tracing_subscriber::fmt::format::FmtSpan;

const CHILD: &str = "ACADEMY_TRACES_CHILD";

/// The child: serves a counter, logging spans as they open, on stderr.
#[actix::test]
#[ignore = "run by the other tests in a child process"]
async fn child() {
    let Ok(config) = std::env::var(CHILD) else {
        panic!("a child process entry point, started by the other tests of this file with {CHILD} set; it fails when run alone")
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter("actix_academy=debug")
        .with_span_events(FmtSpan::NEW)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    let (url, namespace) = config.split_once(' ').unwrap();
    let exchange = Exchange::builder(url).namespace(namespace).secret("test secret").start().await.unwrap();
    let agent = Agent::start(Counter::default(), &exchange, Some("traced")).await.unwrap();
    agent.wait().await;
    exchange.close().await;
}

/// The trace ids of the spans named `span` in a log.
fn trace_ids(log: &str, span: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains(&format!("{span}{{")))
        .filter_map(|line| line.split("trace_id=").nth(1))
        .map(|rest| rest.chars().take_while(char::is_ascii_hexdigit).collect())
        .collect()
}

#[actix::test]
async fn a_request_carries_its_trace_id_into_the_agent_process() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_env_filter("actix_academy=debug")
        .with_span_events(FmtSpan::NEW)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let stderr = std::env::temp_dir().join(format!("academy-traces-{}.log", std::process::id()));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{} {}", redis.url(), exchange.namespace()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let id: AgentId<Counter> = loop {
        if let Some(id) = exchange.discover::<Counter>().await.unwrap().pop() {
            break id;
        }
        assert!(Instant::now() < deadline, "the agent process never showed up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let counter = exchange.get_handle(id).bind_as_client(&exchange).await.unwrap();
    assert_eq!(counter.action(Increment(5)).await.unwrap(), 5);
    counter.shutdown().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the agent process did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let here = trace_ids(&logs.text(), "academy.call");
    assert_eq!(here.len(), 1, "one call, one span here: {}", logs.text());
    let trace_id = &here[0];
    assert_eq!(trace_id.len(), 32, "a W3C trace id: {trace_id}");
    let there = std::fs::read_to_string(&stderr).unwrap();
    let _ = std::fs::remove_file(&stderr);
    let dispatched = trace_ids(&there, "academy.dispatch");
    assert_eq!(
        dispatched,
        std::slice::from_ref(trace_id),
        "the agent's dispatch span has the caller's trace id:\n{there}"
    );
    assert!(
        there.lines().any(|l| l.contains("action answered") && l.contains(trace_id.as_str())),
        "the answer is logged with it too:\n{there}"
    );
    exchange.close().await;
}
