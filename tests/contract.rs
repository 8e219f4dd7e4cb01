//! One contract, two exchanges: every case runs against the local exchange
//! and against the hybrid exchange on a private Redis.

mod support;

use std::time::Duration;

use actix_academy::wire::{Body, Envelope};
use actix_academy::{Agent, AgentId, ClientId, EntityId, Error, Exchange, MailboxStatus, RemoteErrorKind};
use support::agents::{Counter, Increment, Sleep};
use support::{RedisServer, A, B, C};

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

/// An exchange under test, with the Redis it needs (if any).
struct Subject {
    exchange: Exchange,
    _redis: Option<RedisServer>,
}

impl Subject {
    fn local() -> Self {
        Self { exchange: Exchange::local(), _redis: None }
    }

    async fn hybrid() -> Self {
        let redis = RedisServer::start();
        Self { exchange: redis.exchange().await, _redis: Some(redis) }
    }
}

fn ping(src: &ClientId, dest: &EntityId) -> Envelope {
    Envelope::new(src.clone().into(), dest.clone(), Body::PingRequest)
}

async fn register_and_status(x: Exchange) {
    let client = x.register_client(Some("c")).await.unwrap();
    let agent: AgentId<A> = x.register_agent(Some("a")).await.unwrap();
    assert_eq!(x.status(&client).await.unwrap(), MailboxStatus::Offline);
    assert_eq!(x.status(&agent).await.unwrap(), MailboxStatus::Offline);
    let inbox = x.get_mailbox(&client).await.unwrap();
    assert_eq!(x.status(&client).await.unwrap(), MailboxStatus::Listening);
    inbox.close().await.unwrap();
    assert_eq!(x.status(&client).await.unwrap(), MailboxStatus::Offline);
    assert_eq!(x.status(&ClientId::new(None)).await.unwrap(), MailboxStatus::Missing);
    x.terminate(&agent).await.unwrap();
    assert_eq!(x.status(&agent).await.unwrap(), MailboxStatus::Terminated);
}

async fn send_and_recv(x: Exchange) {
    let (me, peer) = (x.register_client(None).await.unwrap(), x.register_client(None).await.unwrap());
    let mut inbox = x.get_mailbox(&peer).await.unwrap();
    let sent: Vec<_> = (0..10).map(|_| ping(&me, &peer)).collect();
    for message in &sent {
        x.send(message.clone()).await.unwrap();
    }
    for message in &sent {
        assert_eq!(&inbox.recv(WAIT).await.unwrap(), message);
    }
}

async fn send_to_unknown_is_bad_entity_id(x: Exchange) {
    let me = x.register_client(None).await.unwrap();
    let nobody = ClientId::new(None);
    assert!(matches!(x.send(ping(&me, &nobody)).await, Err(Error::BadEntityId(id)) if id == *nobody));
    assert!(matches!(x.get_mailbox(&nobody).await, Err(Error::BadEntityId(_))));
}

async fn send_after_terminate_is_mailbox_closed(x: Exchange) {
    let (me, peer) = (x.register_client(None).await.unwrap(), x.register_client(None).await.unwrap());
    x.terminate(&peer).await.unwrap();
    assert!(matches!(x.send(ping(&me, &peer)).await, Err(Error::MailboxClosed(_))));
    assert!(matches!(x.get_mailbox(&peer).await, Err(Error::MailboxClosed(_))));
}

async fn recv_times_out(x: Exchange) {
    let peer = x.register_client(None).await.unwrap();
    let mut inbox = x.get_mailbox(&peer).await.unwrap();
    let t = Duration::from_millis(30);
    assert!(matches!(inbox.recv(Some(t)).await, Err(Error::Timeout(d)) if d == t));
}

async fn terminate_ends_an_open_mailbox(x: Exchange) {
    let peer = x.register_client(None).await.unwrap();
    let mut inbox = x.get_mailbox(&peer).await.unwrap();
    x.terminate(&peer).await.unwrap();
    assert!(matches!(inbox.recv(WAIT).await, Err(Error::MailboxClosed(_))));
}

async fn terminate_of_an_unknown_id_is_ok(x: Exchange) {
    let nobody = ClientId::new(None);
    x.terminate(&nobody).await.unwrap();
    assert_eq!(x.status(&nobody).await.unwrap(), MailboxStatus::Missing);
}

async fn discover(x: Exchange) {
    let b: AgentId<B> = x.register_agent(None).await.unwrap();
    let c: AgentId<C> = x.register_agent(None).await.unwrap();
    let dead: AgentId<C> = x.register_agent(None).await.unwrap();
    x.terminate(&dead).await.unwrap();
    assert!(x.discover::<A>().await.unwrap().is_empty());
    assert_eq!(x.discover_with::<B>(actix_academy::Discovery::new().exact()).await.unwrap(), vec![b.clone()]);
    let mut all: Vec<EntityId> = x.discover::<B>().await.unwrap().into_iter().map(Into::into).collect();
    all.sort_by_key(EntityId::uid);
    let mut want = vec![EntityId::from(b), EntityId::from(c)];
    want.sort_by_key(EntityId::uid);
    assert_eq!(all, want);
}

async fn messages_wait_until_the_mailbox_opens(x: Exchange) {
    let (me, peer) = (x.register_client(None).await.unwrap(), x.register_client(None).await.unwrap());
    let sent: Vec<_> = (0..3).map(|_| ping(&me, &peer)).collect();
    for message in &sent {
        x.send(message.clone()).await.unwrap();
    }
    let mut inbox = x.get_mailbox(&peer).await.unwrap();
    for message in &sent {
        assert_eq!(&inbox.recv(WAIT).await.unwrap(), message);
    }
}

async fn closing_keeps_what_the_mailbox_held(x: Exchange) {
    let (me, peer) = (x.register_client(None).await.unwrap(), x.register_client(None).await.unwrap());
    let inbox = x.get_mailbox(&peer).await.unwrap();
    let sent: Vec<_> = (0..5).map(|_| ping(&me, &peer)).collect();
    for message in &sent {
        x.send(message.clone()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    inbox.close().await.unwrap();
    let mut inbox = x.get_mailbox(&peer).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(inbox.recv(WAIT).await.unwrap());
    }
    got.sort_by_key(|m| m.tag);
    let mut want = sent;
    want.sort_by_key(|m| m.tag);
    assert_eq!(got, want);
}

async fn agent_round_trip(x: Exchange) {
    let id: AgentId<Counter> = x.register_agent(None).await.unwrap();
    let _agent = Agent::launch(Counter::default(), id.clone(), &x).await.unwrap();
    let counter = x.get_handle(id).bind_as_client(&x).await.unwrap();
    assert_eq!(counter.action(Increment(3)).await.unwrap(), 3);
    assert_eq!(counter.action(Increment(4)).await.unwrap(), 7);
    counter.ping().await.unwrap();
}

async fn shutdown_answers_pending_requests(x: Exchange) {
    let id: AgentId<Counter> = x.register_agent(None).await.unwrap();
    let agent = Agent::launch(Counter::default(), id.clone(), &x).await.unwrap();
    let counter = x.get_handle(id).bind_as_client(&x).await.unwrap();
    let slow = {
        let counter = counter.clone();
        actix::spawn(async move { counter.action(Sleep(60_000)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    counter.shutdown().await.unwrap();
    agent.wait().await;
    match tokio::time::timeout(Duration::from_secs(10), slow).await.unwrap().unwrap() {
        Err(Error::Remote(e)) => assert_eq!(e.kind, RemoteErrorKind::AgentStopped),
        other => panic!("expected AgentStopped, got {other:?}"),
    }
    assert!(matches!(counter.action(Increment(1)).await, Err(Error::MailboxClosed(_))));
}

async fn closed_exchange_refuses_work(x: Exchange) {
    x.close().await;
    assert!(matches!(x.register_client(None).await, Err(Error::ExchangeClosed)));
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[actix::test]
                async fn $case() {
                    super::$case(super::Subject::local().exchange).await
                }
            )*
        }
        mod hybrid {
            $(
                #[actix::test]
                async fn $case() {
                    let subject = super::Subject::hybrid().await;
                    super::$case(subject.exchange.clone()).await
                }
            )*
        }
    };
}

contract!(
    register_and_status,
    send_and_recv,
    send_to_unknown_is_bad_entity_id,
    send_after_terminate_is_mailbox_closed,
    recv_times_out,
    terminate_ends_an_open_mailbox,
    terminate_of_an_unknown_id_is_ok,
    discover,
    messages_wait_until_the_mailbox_opens,
    closing_keeps_what_the_mailbox_held,
    agent_round_trip,
    shutdown_answers_pending_requests,
    closed_exchange_refuses_work,
);
