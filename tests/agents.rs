//! Agents as actors and typed remote handles, against a real Redis.

mod support;

use std::time::Duration;

use actix_academy::wire::{Body, Envelope};
use actix_academy::{
    Agent, AgentExit, AgentId, Error, Exchange, MailboxStatus, RemoteErrorKind, RemoteHandle, DEFAULT_MAX_CONCURRENCY,
};
use support::agents::{Counter, CounterError, Crash, Divide, Forward, Increment, Relay, Sleep};
use support::RedisServer;

async fn counter(exchange: &Exchange) -> (Agent<Counter>, RemoteHandle<Counter>) {
    let id: AgentId<Counter> = exchange.register_agent(Some("counter")).await.unwrap();
    let agent = Agent::launch(Counter::default(), id.clone(), exchange).await.unwrap();
    let handle = exchange.get_handle(id).bind_as_client(exchange).await.unwrap();
    (agent, handle)
}

#[actix::test]
async fn client_calls_an_agent_pings_it_and_shuts_it_down() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let (agent, handle) = counter(&exchange).await;

    assert_eq!(handle.action(Increment(2)).await.unwrap(), 2);
    assert_eq!(handle.action(Increment(3)).await.unwrap(), 5);
    assert!(handle.ping().await.unwrap() < Duration::from_secs(5));

    handle.shutdown().await.unwrap();
    assert_eq!(agent.wait().await, AgentExit::Shutdown);
    assert!(!agent.addr().connected(), "the behavior's actor must stop");
    assert_eq!(exchange.status(agent.id()).await.unwrap(), MailboxStatus::Terminated);
    assert!(matches!(handle.action(Increment(1)).await, Err(Error::MailboxClosed(_))));
    handle.close().await.unwrap();
    assert!(matches!(handle.action(Increment(1)).await, Err(Error::HandleClosed)));
}

#[actix::test]
async fn an_agent_calls_another_through_a_handle_passed_as_an_argument() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let (_counter, counter_handle) = counter(&exchange).await;
    let relay_id: AgentId<Relay> = exchange.register_agent(Some("relay")).await.unwrap();
    let _relay = Agent::launch_with(relay_id.clone(), &exchange, DEFAULT_MAX_CONCURRENCY, |agent| Relay {
        agent: agent.clone(),
    })
    .await
    .unwrap();
    let relay = exchange.get_handle(relay_id).bind_as_client(&exchange).await.unwrap();

    let forward = |n| Forward { to: counter_handle.unbound(), n };
    assert_eq!(relay.action(forward(4)).await.unwrap(), Ok(4));
    assert_eq!(relay.action(forward(6)).await.unwrap(), Ok(10));
    assert_eq!(counter_handle.action(Increment(0)).await.unwrap(), 10);
}

#[actix::test]
async fn an_action_error_reaches_the_caller_typed() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let (_agent, handle) = counter(&exchange).await;
    handle.action(Increment(9)).await.unwrap();
    assert_eq!(handle.action(Divide(0)).await.unwrap(), Err(CounterError::DivideByZero));
    assert_eq!(handle.action(Divide(3)).await.unwrap(), Ok(3));
}

#[actix::test]
async fn unknown_actions_and_garbage_arguments_get_error_responses() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let (_agent, handle) = counter(&exchange).await;
    let me = exchange.register_client(None).await.unwrap();
    let mut inbox = exchange.get_mailbox(&me).await.unwrap();
    let agent = handle.agent_id().entity().clone();

    for (action, args, kind) in [
        ("Explode", vec![0x90], RemoteErrorKind::UnknownAction),
        ("Increment", b"\xc1garbage".to_vec(), RemoteErrorKind::BadPayload),
        ("Increment", Vec::new(), RemoteErrorKind::BadPayload),
    ] {
        let request = Envelope::new(
            me.clone().into(),
            agent.clone(),
            Body::ActionRequest { action: action.into(), args: args.into() },
        );
        exchange.send(request.clone()).await.unwrap();
        let reply = inbox.recv(Some(Duration::from_secs(5))).await.unwrap();
        assert_eq!(reply.tag, request.tag);
        match reply.body {
            Body::ActionResponse { result: Err(e), .. } => assert_eq!(e.kind, kind, "{e}"),
            other => panic!("expected an error response, got {other:?}"),
        }
    }
    // Still serving.
    assert_eq!(handle.action(Increment(1)).await.unwrap(), 1);
}

#[actix::test]
async fn a_request_pending_during_shutdown_gets_an_error() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let (agent, handle) = counter(&exchange).await;
    let other = exchange.get_handle(agent.id().clone()).bind_as_client(&exchange).await.unwrap();

    let slow = actix::spawn(async move { other.action(Sleep(60_000)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.shutdown().await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), slow).await.expect("must not hang").unwrap();
    match result {
        Err(Error::Remote(e)) => assert_eq!(e.kind, RemoteErrorKind::AgentStopped),
        other => panic!("expected AgentStopped, got {other:?}"),
    }
    assert_eq!(agent.wait().await, AgentExit::Shutdown);
}

#[actix::test]
async fn close_fails_pending_calls_and_refuses_new_ones() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let (_agent, handle) = counter(&exchange).await;
    let closer = handle.clone();
    let slow = actix::spawn(async move { handle.action(Sleep(60_000)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    closer.close().await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), slow).await.expect("must not hang").unwrap();
    assert!(matches!(result, Err(Error::HandleClosed)), "{result:?}");
    assert!(matches!(closer.ping().await, Err(Error::HandleClosed)));
    // The handle's own client mailbox is terminated.
    assert_eq!(exchange.status(closer.mailbox_id()).await.unwrap(), MailboxStatus::Terminated);
}

#[actix::test]
async fn per_call_timeout() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let (_agent, handle) = counter(&exchange).await;
    let t = Duration::from_millis(100);
    assert!(matches!(handle.action_timeout(Sleep(5_000), t).await, Err(Error::Timeout(d)) if d == t));
    assert_eq!(handle.action_timeout(Sleep(1), Duration::from_secs(5)).await.unwrap(), 1);
}

#[actix::test]
async fn a_behavior_that_stops_on_its_own_ends_the_agent_as_failed() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let (agent, handle) = counter(&exchange).await;
    let _ = handle.action(Crash).await;
    assert_eq!(agent.wait().await, AgentExit::Failed);
    // Still registered, but nobody serves it: inactive at once (not after a
    // lease lapses), out of discovery; a call fails at once.
    wait_for_status(&exchange, agent.id().entity(), MailboxStatus::Inactive).await;
    assert!(exchange.discover::<Counter>().await.unwrap().is_empty());
    let result = handle.action(Increment(1)).await;
    assert!(matches!(result, Err(Error::Inactive(_))), "{result:?}");
    // Launched again under its id, it serves again.
    let again = Agent::launch(Counter::default(), agent.id().clone(), &exchange).await.unwrap();
    assert_eq!(handle.action(Increment(1)).await.unwrap(), 1);
    again.shutdown().await;
}

/// Waits (up to 30 s) until `id`'s mailbox reads `want`.
async fn wait_for_status(exchange: &Exchange, id: &actix_academy::EntityId, want: MailboxStatus) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = exchange.status(id).await.unwrap();
        if status == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{id} stayed {status:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Fragile;

impl actix::Actor for Fragile {
    type Context = actix::Context<Self>;
}

#[actix_academy::agent]
impl Fragile {
    #[action]
    fn fine(&self) -> u32 {
        7
    }

    #[action]
    fn boom(&mut self) -> u32 {
        panic!("sync boom")
    }

    #[action]
    async fn later() -> u32 {
        tokio::task::yield_now().await;
        panic!("async boom")
    }
}

#[actix::test]
async fn a_panicking_action_is_answered_with_its_panic_sync_or_async() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let agent = Agent::start(Fragile, &exchange, Some("fragile")).await.unwrap();
    // No liveness timeout, a long call timeout: an unanswered call would
    // show as a timeout here, not as the answer.
    let handle = exchange
        .get_handle(agent.id().clone())
        .bind_as_client(&exchange)
        .await
        .unwrap()
        .with_liveness_timeout(None)
        .with_timeout(Some(Duration::from_secs(60)));
    let panicked = |result: Result<u32, Error>, text: &str| match result {
        Err(Error::Remote(e)) => assert!(e.kind == RemoteErrorKind::Panicked && e.message.contains(text), "{e:?}"),
        other => panic!("expected the panic {text:?}, got {other:?}"),
    };
    // An async action's panic is caught where it runs: the agent lives on.
    panicked(handle.later().await, "async boom");
    assert_eq!(handle.fine().await.unwrap(), 7);
    // A sync action's panic ends the behavior's actor: answered, and the
    // agent is failed and inactive at once.
    panicked(handle.boom().await, "sync boom");
    assert_eq!(agent.wait().await, AgentExit::Failed);
    wait_for_status(&exchange, agent.id().entity(), MailboxStatus::Inactive).await;
    let result = handle.fine().await;
    assert!(matches!(result, Err(Error::Inactive(_))), "{result:?}");
    handle.close().await.unwrap();
    exchange.close().await;
}

#[actix::test]
async fn a_thousand_concurrent_actions_from_ten_handles() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let (agent, _) = counter(&exchange).await;
    let mut handles = Vec::new();
    for _ in 0..10 {
        handles.push(exchange.get_handle(agent.id().clone()).bind_as_client(&exchange).await.unwrap());
    }
    let calls = (0..1000).map(|i| {
        let handle = handles[i % 10].clone();
        async move { (i, handle.action(Sleep(i as u64 % 7)).await.unwrap()) }
    });
    let results = futures::future::join_all(calls).await;
    for (i, slept) in results {
        assert_eq!(slept, i as u64 % 7);
    }
    // Increments are applied exactly once each.
    let total = futures::future::join_all((0..1000).map(|i| handles[i % 10].action(Increment(1)))).await;
    let mut seen: Vec<i64> = total.into_iter().map(Result::unwrap).collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=1000).collect::<Vec<_>>());
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<RemoteHandle<Counter>>();
    check::<actix_academy::UnboundRemoteHandle<Counter>>();
    check::<Exchange>();
    check::<AgentId<Counter>>();
}
