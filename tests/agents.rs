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
    let handle = handle.with_liveness_timeout(Some(Duration::from_millis(500)));
    let _ = handle.action(Crash).await;
    assert_eq!(agent.wait().await, AgentExit::Failed);
    // Still registered: a call waits in Redis, and, with nobody answering
    // pings, fails once the liveness timeout passes.
    // (its mailbox closes in the background once the runtime stops)
    let mut status = exchange.status(agent.id()).await.unwrap();
    for _ in 0..100 {
        if status != MailboxStatus::Listening {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = exchange.status(agent.id()).await.unwrap();
    }
    assert_eq!(status, MailboxStatus::Offline);
    let result = handle.action(Increment(1)).await;
    assert!(matches!(result, Err(Error::Unresponsive { .. })), "{result:?}");
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
