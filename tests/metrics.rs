//! Metrics through the `metrics` facade move as a small scenario says:
//! actions called directly, messages queued for a mailbox that is not
//! open, an entry dropped because it was forged.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use actix_academy::prelude::*;
use actix_academy::wire::{Body, Envelope};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::RedisServer;

struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

#[agent]
impl Echo {
    #[action]
    fn echo(&self, text: String) -> String {
        text
    }

    #[action]
    fn fail(&self) -> Result<(), String> {
        Err("no".into())
    }
}

/// Everything recorded so far: a snapshot drains what it reads, so the
/// totals are kept here, by metric name and labels.
#[derive(Default)]
struct Totals(HashMap<(String, Vec<(String, String)>), u64>);

impl Totals {
    fn read(&mut self, snapshotter: &Snapshotter) -> &Self {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let labels = key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
            let n = match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(values) => values.len() as u64,
                DebugValue::Gauge(_) => 0,
            };
            *self.0.entry((key.name().to_owned(), labels)).or_default() += n;
        }
        self
    }

    /// A counter's total (or a histogram's count) over the metrics whose
    /// labels include these.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .iter()
            .filter(|((n, have), _)| {
                n == name && labels.iter().all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
            })
            .map(|(_, n)| n)
            .sum()
    }
}

#[actix::test]
async fn counters_move_with_sends_actions_and_dropped_entries() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this test binary");

    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let agent = Agent::start(Echo, &exchange, Some("echo")).await.unwrap();
    let echo = exchange.get_handle(agent.id().clone()).bind_as_client(&exchange).await.unwrap();
    for i in 0..5 {
        assert_eq!(echo.echo(format!("{i}")).await.unwrap(), i.to_string());
    }
    assert!(echo.fail().await.is_err());
    let mut totals = Totals::default();
    let seen = totals.read(&snapshotter);
    // Requests and answers went directly, every one of them.
    assert!(seen.get("academy_messages_sent_total", &[("path", "direct")]) >= 12);
    assert_eq!(seen.get("academy_messages_sent_total", &[("path", "queued")]), 0);
    assert_eq!(seen.get("academy_actions_total", &[("action", "echo"), ("outcome", "ok")]), 5);
    // An action's own error is still an answer: the call succeeded.
    assert_eq!(seen.get("academy_actions_total", &[("action", "fail"), ("outcome", "ok")]), 1);
    assert_eq!(seen.get("academy_action_seconds", &[]), 6);

    // A registered mailbox nobody has opened: messages are queued.
    let offline = exchange.register_client(Some("offline")).await.unwrap();
    for _ in 0..3 {
        let ping = Envelope::new(agent.id().entity().clone(), offline.clone().into(), Body::PingRequest);
        exchange.send(ping).await.unwrap();
    }
    assert_eq!(totals.read(&snapshotter).get("academy_messages_sent_total", &[("path", "queued")]), 3);

    // A forged entry in its queue is dropped when the mailbox opens.
    let key = format!("{}:queue:{}", exchange.namespace(), offline.base32());
    let _: i64 = redis::Commands::rpush(&mut redis.client(), &key, b"\xc3 not sealed by anyone".to_vec()).unwrap();
    let mut inbox = exchange.get_mailbox(&offline).await.unwrap();
    for _ in 0..3 {
        inbox.recv(Some(Duration::from_secs(30))).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while totals.read(&snapshotter).get("academy_dropped_entries_total", &[]) < 1 {
        assert!(std::time::Instant::now() < deadline, "the forged entry was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(totals.get("academy_dropped_entries_total", &[]), 1);

    // Through Redis only: answers ride with their doorbell ring, and their
    // queue entries, taken after them, are not counted as duplicates.
    let served =
        Exchange::builder(redis.url()).namespace(exchange.namespace()).peer_to_peer(false).start().await.unwrap();
    let caller =
        Exchange::builder(redis.url()).namespace(exchange.namespace()).peer_to_peer(false).start().await.unwrap();
    let slow = Agent::start(Echo, &served, Some("queued")).await.unwrap();
    let handle = served.get_handle(slow.id().clone()).bind_as_client(&caller).await.unwrap();
    let before = totals.read(&snapshotter).get("academy_duplicates_dropped_total", &[]);
    for i in 0..20 {
        assert_eq!(handle.echo(format!("{i}")).await.unwrap(), i.to_string());
    }
    let seen = totals.read(&snapshotter);
    assert!(seen.get("academy_answers_early_total", &[]) >= 1, "no answer came with its ring");
    assert_eq!(seen.get("academy_duplicates_dropped_total", &[]), before, "queue entries of early answers counted");
    // Each answer's queue entry was taken and acknowledged all the same:
    // no queue or taken list holds anything (but the agents' last claimed
    // requests, trimmed by their next claim).
    let agents = [agent.id().entity().base32(), slow.id().entity().base32()];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut con = redis.client();
        let mut held = Vec::new();
        for pattern in ["queue", "taken"] {
            let lists: Vec<String> =
                redis::Commands::keys(&mut con, format!("{}:{pattern}:*", exchange.namespace())).unwrap();
            for list in lists {
                let n: i64 = redis::Commands::llen(&mut con, &list).unwrap();
                let claimed = pattern == "taken" && agents.iter().any(|id| list.contains(&format!(":{id}:")));
                if n > i64::from(claimed) {
                    held.push(format!("{list}: {n}"));
                }
            }
        }
        if held.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "entries left in Redis: {held:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.close().await.unwrap();
    slow.shutdown().await;
    caller.close().await;
    served.close().await;

    inbox.close().await.unwrap();
    agent.shutdown().await;
    echo.close().await.unwrap();
    exchange.close().await;
}
