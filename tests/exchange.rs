//! The reference's exchange suite, as behavior, against a real Redis.

mod support;

use std::time::Duration;

use actix_academy::wire::{base32_to_uuid, uuid_to_base32, Body, Envelope};
use actix_academy::{AgentId, Behavior, ClientId, EntityId, Error, Exchange, MailboxStatus};
use redis::Commands;
use support::{RedisServer, A, B, C};

fn ping(src: &ClientId, dest: &EntityId) -> Envelope {
    Envelope::new((*src).clone().into(), dest.clone(), Body::PingRequest)
}

/// Calls of one Redis command so far, from `INFO commandstats`.
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut redis.client()).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

#[actix::test]
async fn open_and_close() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let id = exchange.register_client(None).await.unwrap();
    assert_eq!(exchange.status(&id).await.unwrap(), MailboxStatus::Offline);
    exchange.close().await;
    assert!(matches!(exchange.register_client(None).await, Err(Error::ExchangeClosed)));
    assert!(matches!(exchange.send(ping(&id, &id)).await, Err(Error::ExchangeClosed)));
}

#[actix::test]
async fn bad_redis_url_and_unreachable_redis_are_errors() {
    assert!(matches!(Exchange::builder("not a url").start().await, Err(Error::Redis(_))));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = Exchange::builder(format!("redis://user:hunter2@127.0.0.1:{port}")).start().await;
    // The error names the URL tried, without its password.
    let text = unreachable.as_ref().map(|_| ()).unwrap_err().to_string();
    assert!(matches!(unreachable, Err(Error::RedisUnreachable { .. })), "{unreachable:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")) && !text.contains("hunter2"), "{text}");
}

#[actix::test]
async fn keys_carry_the_namespace_and_base32_ids() {
    let redis = RedisServer::start();
    let exchange = redis.builder().namespace("myns").start().await.unwrap();
    let agent: AgentId<C> = exchange.register_agent(Some("c")).await.unwrap();
    let client = exchange.register_client(None).await.unwrap();
    let mut con = redis.client();
    let (a, c) = (uuid_to_base32(agent.uid()), uuid_to_base32(client.uid()));
    let status: String = con.get(format!("myns:status:{a}")).unwrap();
    assert_eq!(status, "ACTIVE");
    let status: String = con.get(format!("myns:status:{c}")).unwrap();
    assert_eq!(status, "ACTIVE");
    let lineage: String = con.get(format!("myns:behavior:{a}")).unwrap();
    assert_eq!(lineage, format!("{},{}", C::name(), B::name()));
    // The type's name: moving the code does not change it.
    assert_eq!(C::name(), "C");
    let name: String = con.get(format!("myns:name:{a}")).unwrap();
    assert_eq!(name, "c");
    let keys: Vec<String> = con.keys("*").unwrap();
    assert!(keys.iter().all(|k| k.starts_with("myns:")), "{keys:?}");

    let mut inbox = exchange.get_mailbox(&agent).await.unwrap();
    let address: String = con.get(format!("myns:address:{a}")).unwrap();
    assert_eq!(address, inbox.address().unwrap().to_string());
    exchange.terminate(&agent).await.unwrap();
    assert!(matches!(inbox.recv(Some(Duration::from_secs(5))).await, Err(Error::MailboxClosed(_))));
    let status: String = con.get(format!("myns:status:{a}")).unwrap();
    assert_eq!(status, "INACTIVE");
    // Out of discovery; its lineage and name expire with it.
    let index: Vec<String> = con.smembers(format!("myns:index:{}", C::name())).unwrap();
    assert!(index.is_empty(), "{index:?}");
    for kind in ["behavior", "name"] {
        let ttl: i64 = con.pttl(format!("myns:{kind}:{a}")).unwrap();
        assert!(ttl > 0, "{kind} expires: {ttl}");
    }
    // The terminated mailbox deletes its address once it stops.
    for _ in 0..100 {
        let address: Option<String> = con.get(format!("myns:address:{a}")).unwrap();
        if address.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the address of a terminated mailbox stayed in Redis");
}

#[actix::test]
async fn default_namespace_is_default_and_random_ones_differ() {
    let redis = RedisServer::start();
    let plain = Exchange::builder(redis.url()).start().await.unwrap();
    assert_eq!(plain.namespace(), "default");
    let (x, y) = (redis.builder().start().await.unwrap(), redis.builder().start().await.unwrap());
    assert_ne!(x.namespace(), y.namespace());
    assert_eq!(x.namespace().len(), 26);
}

#[actix::test]
async fn send_to_unknown_id_is_bad_entity_id() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let me = exchange.register_client(None).await.unwrap();
    let stranger = ClientId::new(None);
    match exchange.send(ping(&me, &stranger)).await {
        Err(Error::BadEntityId(id)) => assert_eq!(id, *stranger),
        other => panic!("expected BadEntityId, got {other:?}"),
    }
    assert!(matches!(exchange.get_mailbox(&stranger).await, Err(Error::BadEntityId(_))));
    assert_eq!(exchange.status(&stranger).await.unwrap(), MailboxStatus::Missing);
    // Terminating an unknown id is not an error, and does not create it.
    exchange.terminate(&stranger).await.unwrap();
    assert_eq!(exchange.status(&stranger).await.unwrap(), MailboxStatus::Missing);
}

#[actix::test]
async fn send_after_terminate_is_mailbox_closed() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let me = exchange.register_client(None).await.unwrap();
    let agent: AgentId<A> = exchange.register_agent(None).await.unwrap();
    exchange.terminate(&agent).await.unwrap();
    assert!(matches!(exchange.send(ping(&me, &agent)).await, Err(Error::MailboxClosed(_))));
    assert!(matches!(exchange.get_mailbox(&agent).await, Err(Error::MailboxClosed(_))));
    assert_eq!(exchange.status(&agent).await.unwrap(), MailboxStatus::Terminated);
    // Nothing was queued for the terminated mailbox (and no close sentinel).
    let queued: Vec<Vec<u8>> =
        redis.client().lrange(format!("{}:queue:{}", exchange.namespace(), agent.base32()), 0, -1).unwrap();
    assert!(queued.is_empty());
}

#[actix::test]
async fn send_after_terminate_through_a_cached_link_is_mailbox_closed() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();
    let mut inbox = exchange.get_mailbox(&peer).await.unwrap();
    exchange.send(ping(&me, &peer)).await.unwrap();
    inbox.recv(Some(Duration::from_secs(5))).await.unwrap();
    exchange.terminate(&peer).await.unwrap();
    assert!(matches!(exchange.send(ping(&me, &peer)).await, Err(Error::MailboxClosed(_))));
}

#[actix::test]
async fn messages_to_an_open_mailbox_go_direct() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();
    let mut inbox = exchange.get_mailbox(&peer).await.unwrap();
    // The watcher's first look at the new mailbox's queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let moves = calls(&redis, "lmove");
    let sent: Vec<_> = (0..3).map(|_| ping(&me, &peer)).collect();
    for message in &sent {
        exchange.send(message.clone()).await.unwrap();
    }
    for message in &sent {
        assert_eq!(&inbox.recv(Some(Duration::from_secs(5))).await.unwrap(), message);
    }
    // Had anything gone through a queue, the watcher would have moved it to
    // the taken list with LMOVE.
    assert_eq!(calls(&redis, "lmove"), moves, "nothing should have gone through the Redis queue");
    inbox.close().await.unwrap();
    exchange.close().await;
}

#[actix::test]
async fn messages_sent_before_the_mailbox_opens_wait_in_redis() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();
    let sent: Vec<_> = (0..3).map(|_| ping(&me, &peer)).collect();
    for message in &sent {
        exchange.send(message.clone()).await.unwrap();
    }
    // The first is pushed before `send` returns; the rest are batched by the
    // destination's queue link right after.
    let queue = format!("{}:queue:{}", exchange.namespace(), peer.base32());
    for _ in 0..200 {
        if redis.client().llen::<_, usize>(&queue).unwrap() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(redis.client().llen::<_, usize>(&queue).unwrap(), 3);
    let mut inbox = exchange.get_mailbox(&peer).await.unwrap();
    for message in &sent {
        assert_eq!(&inbox.recv(Some(Duration::from_secs(5))).await.unwrap(), message);
    }
    assert_eq!(redis.client().llen::<_, usize>(&queue).unwrap(), 0);
}

#[actix::test]
async fn recv_times_out() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let peer = exchange.register_client(None).await.unwrap();
    let mut inbox = exchange.get_mailbox(&peer).await.unwrap();
    let t = Duration::from_millis(50);
    assert!(matches!(inbox.recv(Some(t)).await, Err(Error::Timeout(d)) if d == t));
}

#[actix::test]
async fn terminate_wakes_a_blocked_recv() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let agent: AgentId<A> = exchange.register_agent(None).await.unwrap();
    let mut inbox = exchange.get_mailbox(&agent).await.unwrap();
    let waiting = actix::spawn(async move { inbox.recv(None).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    exchange.terminate(&agent).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("recv must wake").unwrap();
    assert!(matches!(result, Err(Error::MailboxClosed(id)) if id == *agent));
}

#[actix::test]
async fn a_failing_redis_watcher_is_logged_and_recovers() {
    let logs = support::Captured::default();
    let _guard = logs.install(tracing::Level::INFO);

    let mut redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();
    let mut inbox = exchange.get_mailbox(&peer).await.unwrap();
    support::wait_for_blocked_clients(&redis, 1).await;
    redis.restart();
    for _ in 0..200 {
        if logs.text().contains("redis watcher failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = logs.text();
    assert!(text.contains("ERROR") && text.contains("redis watcher failed"), "{text}");

    // The restarted Redis lost every key (no persistence); once the entity is
    // registered again, a message queued in Redis reaches the same mailbox.
    redis::cmd("SET")
        .arg(format!("{}:status:{}", exchange.namespace(), peer.base32()))
        .arg("ACTIVE")
        .query::<()>(&mut redis.client())
        .unwrap();
    redis::cmd("SET")
        .arg(format!("{}:status:{}", exchange.namespace(), me.base32()))
        .arg("ACTIVE")
        .query::<()>(&mut redis.client())
        .unwrap();
    let message = ping(&me, &peer);
    let queue = format!("{}:queue:{}", exchange.namespace(), peer.base32());
    let entry = support::raw::seal(b"test secret", peer.uid(), &message.encode().unwrap());
    let _: () = redis.client().rpush(&queue, entry).unwrap();
    assert_eq!(inbox.recv(Some(Duration::from_secs(10))).await.unwrap(), message);
}

#[actix::test]
async fn a_stale_cached_address_falls_back_to_redis_and_a_reopened_mailbox_receives() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();

    let mut inbox = exchange.get_mailbox(&peer).await.unwrap();
    let first_port = inbox.address().unwrap().port();
    let first = ping(&me, &peer);
    exchange.send(first.clone()).await.unwrap();
    assert_eq!(inbox.recv(Some(Duration::from_secs(5))).await.unwrap(), first);
    inbox.close().await.unwrap();

    // The cached link's connection was closed; the process there now
    // refuses this mailbox.
    let second = ping(&me, &peer);
    exchange.send(second.clone()).await.unwrap();

    // The exchange's one listener serves it again, at the same port.
    let mut inbox = exchange.get_mailbox(&peer).await.unwrap();
    assert_eq!(inbox.address().unwrap().port(), first_port);
    let third = ping(&me, &peer);
    exchange.send(third.clone()).await.unwrap();
    let mut got = vec![
        inbox.recv(Some(Duration::from_secs(5))).await.unwrap(),
        inbox.recv(Some(Duration::from_secs(5))).await.unwrap(),
    ];
    got.sort_by_key(|m| m.tag);
    let mut want = vec![second, third];
    want.sort_by_key(|m| m.tag);
    assert_eq!(got, want);
    assert!(matches!(inbox.recv(Some(Duration::from_millis(100))).await, Err(Error::Timeout(_))));
}

#[actix::test]
async fn a_stale_address_in_redis_falls_back_to_the_queue() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();
    // A crashed peer left its address behind; nothing listens there now.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let address_key = format!("{}:address:{}", exchange.namespace(), peer.base32());
    let _: () = redis.client().set(&address_key, dead.to_string()).unwrap();
    let message = ping(&me, &peer);
    exchange.send(message.clone()).await.unwrap();
    let _: () = redis.client().del(&address_key).unwrap();
    let mut inbox = exchange.get_mailbox(&peer).await.unwrap();
    assert_eq!(inbox.recv(Some(Duration::from_secs(5))).await.unwrap(), message);
}

#[actix::test]
async fn discover_by_behavior_and_lineage() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let b: AgentId<B> = exchange.register_agent(Some("b")).await.unwrap();
    let c_live: AgentId<C> = exchange.register_agent(Some("c1")).await.unwrap();
    let c_dead: AgentId<C> = exchange.register_agent(Some("c2")).await.unwrap();
    exchange.terminate(&c_dead).await.unwrap();

    assert!(exchange.discover::<A>().await.unwrap().is_empty());
    assert!(exchange.discover_with::<A>(actix_academy::Discovery::new().exact()).await.unwrap().is_empty());
    let exact: Vec<EntityId> = exchange
        .discover_with::<B>(actix_academy::Discovery::new().exact())
        .await
        .unwrap()
        .into_iter()
        .map(Into::into)
        .collect();
    assert_eq!(exact, vec![EntityId::from(b.clone())]);
    let mut all: Vec<EntityId> = exchange.discover::<B>().await.unwrap().into_iter().map(Into::into).collect();
    all.sort_by_key(|id| id.uid());
    let mut want = vec![EntityId::from(b), EntityId::from(c_live.clone())];
    want.sort_by_key(|id| id.uid());
    assert_eq!(all, want);
    let cs: Vec<EntityId> = exchange
        .discover_with::<C>(actix_academy::Discovery::new().exact())
        .await
        .unwrap()
        .into_iter()
        .map(Into::into)
        .collect();
    assert_eq!(cs, vec![EntityId::from(c_live)]);
}

/// Thousands of agents are discovered in steps (a script per thousand or
/// so, so Redis is never held for long): each once, none missing, the
/// terminated ones left out.
#[actix::test]
async fn a_large_discovery_finds_every_agent_once() {
    const AGENTS: usize = 2_500;
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let registered: Vec<AgentId<A>> =
        futures::future::try_join_all((0..AGENTS).map(|_| exchange.register_agent(None))).await.unwrap();
    for gone in &registered[..10] {
        exchange.terminate(gone).await.unwrap();
    }
    let found = exchange.discover::<A>().await.unwrap();
    let uids: std::collections::HashSet<_> = found.iter().map(|id| id.uid()).collect();
    assert_eq!(found.len(), AGENTS - 10, "each agent once");
    let want: std::collections::HashSet<_> = registered[10..].iter().map(|id| id.uid()).collect();
    assert_eq!(uids, want);
}

#[actix::test]
async fn discovery_can_wait_for_agents_that_register_later() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let other = exchange.clone();
    let registering = actix::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let first: AgentId<B> = other.register_agent(Some("late-1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second: AgentId<B> = other.register_agent(Some("late-2")).await.unwrap();
        (other, first, second)
    });
    let both = actix_academy::Discovery::new().exact().wait_for(2, Duration::from_secs(60));
    let mut found: Vec<EntityId> =
        exchange.discover_with::<B>(both).await.unwrap().into_iter().map(Into::into).collect();
    let (_other, first, second) = registering.await.unwrap();
    found.sort_by_key(|id| id.uid());
    let mut want = vec![EntityId::from(first), EntityId::from(second)];
    want.sort_by_key(|id| id.uid());
    assert_eq!(found, want);
    // No agent of A's type ever registers: the wait ends in a timeout.
    let none = actix_academy::Discovery::new().wait_for(1, Duration::from_millis(300));
    assert!(matches!(exchange.discover_with::<A>(none).await, Err(Error::Timeout(_))));
}

#[test]
fn base32_round_trip() {
    let uid = uuid::Uuid::new_v4();
    assert_eq!(base32_to_uuid(&uuid_to_base32(uid)).unwrap(), uid);
    assert!(matches!(base32_to_uuid("not base32"), Err(actix_academy::IdError::InvalidBase32(_))));
}

#[actix::test]
async fn many_open_mailboxes_share_one_watcher_connection() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let me = exchange.register_client(None).await.unwrap();
    let mut inboxes = Vec::new();
    for _ in 0..48 {
        let id = exchange.register_client(None).await.unwrap();
        inboxes.push((id.clone(), exchange.get_mailbox(&id).await.unwrap()));
    }
    // Every mailbox still gets what waits in its queue.
    for (id, _) in &inboxes {
        let _: () = redis::Commands::rpush(
            &mut redis.client(),
            format!("{}:queue:{}", exchange.namespace(), id.base32()),
            support::raw::seal(b"test secret", id.uid(), &ping(&me, id).encode().unwrap()),
        )
        .unwrap();
    }
    // Pushed without ringing a doorbell: the watcher's sweep finds them,
    // 16 queues every 5 s.
    let found = inboxes.iter_mut().map(|(_, inbox)| inbox.recv(Some(Duration::from_secs(90))));
    for found in futures::future::join_all(found).await {
        found.unwrap();
    }
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut redis.client()).unwrap();
    // The command connection, the watcher's, and this query's.
    assert!(list.lines().count() <= 4, "{list}");
}

#[actix::test]
async fn a_full_mailbox_resumes_popping_its_queue() {
    // A tiny FIFO, everything through Redis, and a reader that starts late:
    // the watcher must leave the queue out while the mailbox is full and come
    // back to it once the mailbox reads again.
    let redis = RedisServer::start();
    let exchange = redis.builder().mailbox_capacity(4).peer_to_peer(false).start().await.unwrap();
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();
    let mut inbox = exchange.get_mailbox(&peer).await.unwrap();
    let sent: Vec<_> = (0..5000).map(|_| ping(&me, &peer)).collect();
    for message in &sent {
        exchange.send(message.clone()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for message in &sent {
        assert_eq!(&inbox.recv(Some(Duration::from_secs(10))).await.unwrap(), message);
    }
}

#[test]
fn debug_output_hides_the_secret_and_the_redis_password() {
    let builder = Exchange::builder("redis://:hunter2@127.0.0.1:6379/0").secret("s3cret");
    let printed = format!("{builder:?}");
    assert!(!printed.contains("hunter2") && !printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("127.0.0.1:6379"), "{printed}");
}

#[actix::test]
async fn a_status_word_this_version_does_not_know_is_an_error_not_a_route() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let me = exchange.register_client(None).await.unwrap();
    let other = exchange.register_client(None).await.unwrap();
    let key = format!("{}:status:{}", exchange.namespace(), other.base32());
    let _: () = redis.client().set(&key, "RETIRED").unwrap();
    assert!(matches!(exchange.status(&other).await, Err(Error::UnknownStatus(w)) if w == "RETIRED"));
    let sent = exchange.send(ping(&me, &other.clone().into())).await;
    assert!(matches!(&sent, Err(Error::UnknownStatus(w)) if w == "RETIRED"), "{sent:?}");
    let queued: i64 = redis.client().llen(format!("{}:queue:{}", exchange.namespace(), other.base32())).unwrap();
    assert_eq!(queued, 0, "nothing is queued on a guess");
}

#[actix::test]
async fn a_mailbox_terminated_without_a_ring_still_ends() {
    // As if the doorbell's ring were lost: the status says terminated and
    // the opening is gone, and nothing rang. The sweep must notice.
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let id = exchange.register_client(None).await.unwrap();
    let mut inbox = exchange.get_mailbox(&id).await.unwrap();
    let ns = exchange.namespace();
    let mut con = redis.client();
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(format!("{ns}:status:{}", id.base32()))
        .arg("INACTIVE")
        .ignore()
        .cmd("DEL")
        .arg(format!("{ns}:taker:{}", id.base32()))
        .ignore()
        .query(&mut con)
        .unwrap();
    let ended = inbox.recv(Some(Duration::from_secs(60))).await;
    assert!(matches!(ended, Err(Error::MailboxClosed(_))), "{ended:?}");
}

/// Every command Redis ran so far (scripts' commands included).
fn all_calls(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut redis.client()).unwrap();
    info.lines()
        .filter_map(|l| {
            l.split_once(":calls=").map(|(_, rest)| rest.split(',').next().unwrap().parse::<u64>().unwrap())
        })
        .sum()
}

#[actix::test]
async fn idle_mailboxes_cost_redis_the_same_whatever_their_number() {
    const MAILBOXES: usize = 400;
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let mut inboxes = Vec::new();
    for _ in 0..MAILBOXES {
        let id = exchange.register_client(None).await.unwrap();
        inboxes.push(exchange.get_mailbox(&id).await.unwrap());
    }
    // Past the first look at every queue.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (before, since) = (all_calls(&redis), std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(12)).await;
    let per_second = (all_calls(&redis) - before) as f64 / since.elapsed().as_secs_f64();
    eprintln!("{MAILBOXES} idle mailboxes: {per_second:.1} Redis commands per second");
    // A sweep of every queue each 5 s would be 2 x 400 / 5 = 160 per second;
    // the process's own cost is a sweep's two EXISTS and a doorbell wait
    // every 5 s and a lease renewal every 10 s: 0.7 per second.
    assert!(per_second < 2.0, "{MAILBOXES} idle mailboxes cost {per_second:.1} Redis commands per second");
    drop(inboxes);
    exchange.close().await;
}

fn calls_of(redis: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut redis.client()).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|rest| rest.split(',').next().unwrap().parse::<u64>().unwrap()))
        .unwrap_or(0)
}

/// A mailbox opened on an empty queue takes nothing and wakes nobody: its
/// queue is looked at when a sender rings, and what is sent right after the
/// opening (before the watcher has read the new watch) still arrives, well
/// before a sweep would find it.
#[actix::test]
async fn mailboxes_opened_on_empty_queues_cost_no_take_and_still_get_what_is_sent_at_once() {
    const MAILBOXES: usize = 300;
    let redis = RedisServer::start();
    let receiver = redis.builder().peer_to_peer(false).start().await.unwrap();
    let sender = redis.builder().namespace(receiver.namespace()).peer_to_peer(false).start().await.unwrap();
    let me = sender.register_client(None).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..MAILBOXES {
        ids.push(receiver.register_client(None).await.unwrap());
    }
    let (moves, pushes) = (calls_of(&redis, "lmove"), calls_of(&redis, "rpush"));
    let mut inboxes = Vec::new();
    for id in &ids {
        inboxes.push(receiver.get_mailbox(id).await.unwrap());
        // Sent the moment the mailbox is open.
        sender.send(ping(&me, id)).await.unwrap();
    }
    for inbox in &mut inboxes {
        inbox.recv(Some(Duration::from_secs(30))).await.unwrap();
    }
    // One take per mailbox that was sent something; before, every opening
    // took too (and rang its own doorbell to say so).
    let takes = calls_of(&redis, "lmove") - moves;
    assert!(takes <= MAILBOXES as u64 * 3 / 2, "{takes} moves for {MAILBOXES} messages");
    let rings = calls_of(&redis, "rpush") - pushes;
    // Each message is pushed and rings its owner: two pushes.
    assert!(rings <= MAILBOXES as u64 * 5 / 2, "{rings} pushes for {MAILBOXES} messages");
    drop(inboxes);
    receiver.close().await;
    sender.close().await;
}

/// A Redis that is out of memory (`maxmemory`, no eviction) refuses pushes:
/// `send` says so with `Error::RedisFull`, and every message it accepted is
/// delivered once there is room again.
#[actix::test]
async fn a_full_redis_is_a_clear_error_to_send_and_loses_nothing_accepted() {
    let redis = RedisServer::start();
    let exchange = redis.builder().peer_to_peer(false).start().await.unwrap();
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();
    let used: String = redis::cmd("INFO").arg("memory").query(&mut redis.client()).unwrap();
    let used: u64 = used.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap();
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used + (2 << 20)).query(&mut redis.client()).unwrap();
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").query(&mut redis.client()).unwrap();
    let mut accepted = Vec::new();
    let refused = loop {
        let mut message = ping(&me, &peer);
        message.body = Body::ActionRequest { action: "fill".into(), args: vec![7u8; 50_000].into() };
        match exchange.send(message.clone()).await {
            Ok(()) => accepted.push(message),
            Err(e) => break e,
        }
        assert!(accepted.len() < 1000, "Redis never filled up");
    };
    assert!(matches!(refused, Error::RedisFull(_)), "{refused:?}");
    assert!(refused.to_string().contains("maxmemory"), "{refused}");
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query(&mut redis.client()).unwrap();
    let mut inbox = exchange.get_mailbox(&peer).await.unwrap();
    for message in &accepted {
        assert_eq!(&inbox.recv(Some(Duration::from_secs(20))).await.unwrap(), message);
    }
    assert!(matches!(inbox.recv(Some(Duration::from_millis(200))).await, Err(Error::Timeout(_))));
}
