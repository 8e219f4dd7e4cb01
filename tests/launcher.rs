//! The launcher: many agents on arbiters, restarts, wait, shutdown.

mod support;

use actix_academy::{AgentExit, Launcher, MailboxStatus};
use support::agents::{Counter, Crash, Increment};
use support::RedisServer;

#[actix::test]
async fn launches_restarts_and_shuts_down_agents() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let mut launcher = Launcher::new(&exchange).await.unwrap().arbiters(2).max_restarts(1);
    let mut counters = Vec::new();
    for i in 0..4 {
        counters.push(launcher.launch(Some(&format!("counter-{i}")), |_| Counter::default()).await.unwrap());
    }
    for (i, counter) in counters.iter().enumerate() {
        assert_eq!(counter.action(Increment(i as i64)).await.unwrap(), i as i64);
    }

    // The first counter crashes once: restarted with fresh state, same id.
    let flaky = &counters[0];
    let _ = flaky.action(Crash).await;
    assert_eq!(flaky.action(Increment(7)).await.unwrap(), 7);

    let outcomes = launcher.shutdown().await;
    assert_eq!(outcomes.len(), 4);
    for outcome in &outcomes {
        assert_eq!(outcome.exit, AgentExit::Shutdown);
        assert_eq!(exchange.status(&outcome.id).await.unwrap(), MailboxStatus::Terminated);
    }
    let restarts: Vec<_> = outcomes.iter().map(|o| o.restarts).collect();
    assert_eq!(restarts, [1, 0, 0, 0]);
}

#[actix::test]
async fn an_agent_past_its_restart_limit_ends_as_failed() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let mut launcher = Launcher::new(&exchange).await.unwrap().max_restarts(1);
    let counter = launcher.launch(None, |_| Counter::default()).await.unwrap();
    let counter = counter.with_liveness_timeout(Some(std::time::Duration::from_millis(500)));
    let _ = counter.action(Crash).await;
    assert_eq!(counter.action(Increment(1)).await.unwrap(), 1);
    let _ = counter.action(Crash).await;
    let outcomes = launcher.wait().await;
    assert_eq!(outcomes[0].exit, AgentExit::Failed);
    assert_eq!(outcomes[0].restarts, 1);
}
