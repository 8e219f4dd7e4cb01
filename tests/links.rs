//! Peer links under time: connections that stay up through idle and busy
//! stretches, readers that pause, behaviors that block their thread, peers
//! that stop reading, and payloads of many megabytes. Each test counts
//! what it can see from outside: connections accepted, messages received,
//! actions run.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_academy::wire::{Body, Envelope, Mailbox};
use actix_academy::{Agent, AgentId, ClientId, EntityId, Error, Exchange};
use serde::{Deserialize, Serialize};
use support::RedisServer;

/// Short, so that tests cross it several times.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);
/// For tests that count connections: long enough that a loaded machine's
/// stalls never pass for a dead peer.
const STEADY_PEER_TIMEOUT: Duration = Duration::from_secs(2);
const WAIT: Option<Duration> = Some(Duration::from_secs(20));

fn numbered(src: &ClientId, dest: &ClientId, seq: u32, len: usize) -> Envelope {
    let mut args = seq.to_be_bytes().to_vec();
    args.resize(len.max(4), 0xab);
    Envelope::new(
        src.clone().into(),
        dest.clone().into(),
        Body::ActionRequest { action: "n".into(), args: args.into() },
    )
}

fn seq_of(message: &Envelope) -> u32 {
    let Body::ActionRequest { args, .. } = &message.body else { panic!("unexpected body {:?}", message.body) };
    u32::from_be_bytes(args[..4].try_into().unwrap())
}

/// Receives messages `from..to` in order, each once.
async fn expect_in_order(inbox: &mut Mailbox, from: u32, to: u32) {
    for expected in from..to {
        let got = seq_of(&inbox.recv(WAIT).await.unwrap());
        assert_eq!(got, expected, "out of order or duplicated");
    }
}

async fn nothing_more(inbox: &mut Mailbox) {
    match inbox.recv(Some(Duration::from_millis(500))).await {
        Err(Error::Timeout(_)) => {}
        other => panic!("expected nothing more, got {other:?}"),
    }
}

/// How many times Redis ran `command`.
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut redis.client()).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// A TCP relay in front of a mailbox that counts the connections it accepts.
struct Relay {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Self { address, accepted }
    }

    /// Makes senders dial the relay instead of `id`'s mailbox.
    fn publish(&self, redis: &RedisServer, exchange: &Exchange, id: &ClientId) {
        let key = format!("{}:address:{}", exchange.namespace(), id.base32());
        redis::cmd("SET").arg(key).arg(self.address.to_string()).exec(&mut redis.client()).unwrap();
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

struct Pair {
    exchange: Exchange,
    me: ClientId,
    peer: ClientId,
    inbox: Mailbox,
    relay: Relay,
}

async fn pair(redis: &RedisServer, capacity: usize, peer_timeout: Duration) -> Pair {
    let builder = redis.builder().peer_timeout(peer_timeout).mailbox_capacity(capacity);
    let exchange = builder.start().await.unwrap();
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();
    let inbox = exchange.get_mailbox(&peer).await.unwrap();
    let relay = Relay::start(inbox.address().unwrap()).await;
    relay.publish(redis, &exchange, &peer);
    Pair { exchange, me, peer, inbox, relay }
}

#[actix::test]
async fn one_connection_carries_idle_and_busy_stretches_of_three_peer_timeouts() {
    let redis = RedisServer::start();
    let Pair { exchange, me, peer, mut inbox, relay } = pair(&redis, 10_000, STEADY_PEER_TIMEOUT).await;

    // Idle: one message, silence for 3.5 peer timeouts, another.
    exchange.send(numbered(&me, &peer, 0, 100)).await.unwrap();
    expect_in_order(&mut inbox, 0, 1).await;
    tokio::time::sleep(STEADY_PEER_TIMEOUT * 7 / 2).await;
    exchange.send(numbered(&me, &peer, 1, 100)).await.unwrap();
    expect_in_order(&mut inbox, 1, 2).await;

    // Busy: a steady stream for 3.5 peer timeouts, read as it comes.
    let sender = {
        let (exchange, me, peer) = (exchange.clone(), me.clone(), peer.clone());
        actix::spawn(async move {
            let started = Instant::now();
            let mut seq = 2;
            while started.elapsed() < STEADY_PEER_TIMEOUT * 7 / 2 {
                for _ in 0..20 {
                    exchange.send(numbered(&me, &peer, seq, 100)).await.unwrap();
                    seq += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seq
        })
    };
    let mut next = 2;
    while !sender.is_finished() {
        if let Ok(message) = inbox.recv(Some(Duration::from_millis(100))).await {
            assert_eq!(seq_of(&message), next, "out of order or duplicated");
            next += 1;
        }
    }
    let total = sender.await.unwrap();
    expect_in_order(&mut inbox, next, total).await;
    nothing_more(&mut inbox).await;
    eprintln!("{total} messages over one connection");
    assert_eq!(relay.accepted(), 1, "the link reconnected");
    // Whatever a mailbox takes from Redis it acknowledges with LTRIM.
    assert_eq!(calls(&redis, "ltrim"), 0, "a message went through Redis");
    exchange.close().await;
}

#[actix::test]
async fn a_reader_that_pauses_past_the_peer_timeout_gets_each_message_once() {
    let redis = RedisServer::start();
    // A small mailbox, so that the paused reader stops the mailbox reading its socket.
    let Pair { exchange, me, peer, mut inbox, relay } = pair(&redis, 100, STEADY_PEER_TIMEOUT).await;
    let sender = {
        let (exchange, me, peer) = (exchange.clone(), me.clone(), peer.clone());
        actix::spawn(async move {
            for seq in 0..1_000 {
                exchange.send(numbered(&me, &peer, seq, 100)).await.unwrap();
            }
        })
    };
    tokio::time::sleep(STEADY_PEER_TIMEOUT * 3).await;
    expect_in_order(&mut inbox, 0, 1_000).await;
    sender.await.unwrap();
    nothing_more(&mut inbox).await;
    assert_eq!(relay.accepted(), 1, "the link reconnected");
    exchange.close().await;
}

#[actix::test]
async fn megabytes_arrive_whole_over_tcp_and_through_redis() {
    let redis = RedisServer::start();
    for peer_to_peer in [true, false] {
        let exchange = redis.builder().peer_to_peer(peer_to_peer).start().await.unwrap();
        let me = exchange.register_client(None).await.unwrap();
        let peer = exchange.register_client(None).await.unwrap();
        let mut inbox = exchange.get_mailbox(&peer).await.unwrap();
        for len in [1 << 20, 10 << 20] {
            let mut message = numbered(&me, &peer, 7, len);
            if let Body::ActionRequest { args, .. } = &mut message.body {
                let mut varied = args.to_vec();
                for (i, byte) in varied.iter_mut().enumerate().skip(4) {
                    *byte = (i % 251) as u8;
                }
                *args = varied.into();
            }
            exchange.send(message.clone()).await.unwrap();
            let got = inbox.recv(WAIT).await.unwrap();
            assert!(got == message, "{len} bytes, peer to peer {peer_to_peer}: not the same message");
        }
        exchange.close().await;
    }
}

// ------------------------------------------------- a behavior that blocks

/// Blocks its thread (as CPU-bound work would) and counts how often it ran.
struct Busy {
    runs: Arc<AtomicUsize>,
}
impl Actor for Busy {
    type Context = Context<Self>;
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "usize")]
struct Block(u64);
impl Handler<Block> for Busy {
    type Result = usize;
    fn handle(&mut self, m: Block, _: &mut Context<Self>) -> usize {
        std::thread::sleep(Duration::from_millis(m.0));
        self.runs.fetch_add(1, Ordering::SeqCst) + 1
    }
}
actix_academy::behavior!(Busy { actions: [Block] });

/// Runs a `Busy` agent with its own exchange on another thread, as another
/// process would; returns once it serves.
async fn busy_agent_elsewhere(
    redis: &RedisServer,
    namespace: &str,
    id: AgentId<Busy>,
    runs: Arc<AtomicUsize>,
) -> Arbiter {
    let arbiter = Arbiter::new();
    let (ready, started) = tokio::sync::oneshot::channel();
    let (url, namespace) = (redis.url(), namespace.to_owned());
    arbiter.spawn_fn(move || {
        actix::spawn(async move {
            let builder = Exchange::builder(url).namespace(namespace).secret("test secret");
            let exchange = builder.peer_timeout(PEER_TIMEOUT).start().await.unwrap();
            let agent = Agent::launch(Busy { runs }, id, &exchange).await.unwrap();
            ready.send(()).unwrap();
            agent.wait().await;
            exchange.close().await;
        });
    });
    started.await.unwrap();
    arbiter
}

#[actix::test]
async fn a_behavior_that_blocks_its_thread_past_the_peer_timeout_runs_each_request_once() {
    let redis = RedisServer::start();
    let exchange = redis.builder().peer_timeout(PEER_TIMEOUT).start().await.unwrap();
    let id: AgentId<Busy> = exchange.register_agent(None).await.unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let arbiter = busy_agent_elsewhere(&redis, exchange.namespace(), id.clone(), runs.clone()).await;
    let busy = exchange.get_handle(id).bind_as_client(&exchange).await.unwrap().with_liveness_timeout(None);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let busy = busy.clone();
            actix::spawn(async move { busy.action(Block(PEER_TIMEOUT.as_millis() as u64 * 2)).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(tokio::time::timeout(Duration::from_secs(60), call).await.expect("a call hung").unwrap().unwrap());
    }
    answers.sort_unstable();
    assert_eq!(answers, [1, 2, 3]);
    // Copies re-routed through Redis would run late: give them the time.
    tokio::time::sleep(PEER_TIMEOUT * 2).await;
    assert_eq!(runs.load(Ordering::SeqCst), 3, "a request ran twice");
    busy.shutdown().await.unwrap();
    arbiter.stop();
}

#[actix::test]
async fn close_returns_within_its_bound_when_the_peer_stopped_reading() {
    let redis = RedisServer::start();
    let exchange = redis.builder().peer_timeout(PEER_TIMEOUT).start().await.unwrap();
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();
    // The receiver lives on another thread, which then freezes.
    let arbiter = Arbiter::new();
    let (ready, opened) = tokio::sync::oneshot::channel();
    let (url, namespace, id) = (redis.url(), exchange.namespace().to_owned(), EntityId::from(peer.clone()));
    arbiter.spawn_fn(move || {
        actix::spawn(async move {
            let exchange = Exchange::builder(url).namespace(namespace).secret("test secret");
            let exchange = exchange.peer_timeout(PEER_TIMEOUT).start().await.unwrap();
            let mut inbox = exchange.get_mailbox(&id).await.unwrap();
            ready.send(()).unwrap();
            // Take one message (so the link is up), acknowledge it, freeze.
            inbox.recv(None).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            std::thread::sleep(Duration::from_secs(30));
            drop(inbox);
        });
    });
    opened.await.unwrap();
    exchange.send(numbered(&me, &peer, 0, 100)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    for seq in 1..21 {
        let sent = tokio::time::timeout(Duration::from_secs(10), exchange.send(numbered(&me, &peer, seq, 1 << 20)));
        sent.await.expect("a send hung").unwrap();
    }
    let started = Instant::now();
    exchange.close().await;
    let took = started.elapsed();
    eprintln!("close took {took:?} (bound: twice the peer timeout plus 5 s)");
    assert!(took < PEER_TIMEOUT * 2 + Duration::from_secs(5) + Duration::from_secs(5), "close took {took:?}");
    // Nothing was confirmed, so everything went to the receiver's queue
    // (where the frozen receiver's pending BLPOP may have taken one).
    let queue = format!("{}:queue:{}", exchange.namespace(), peer.base32());
    let queued: usize = redis::Commands::llen(&mut redis.client(), &queue).unwrap();
    assert!((19..=20).contains(&queued), "{queued} of 20 messages queued");
    drop(arbiter);
}

#[actix::test]
async fn a_mailbox_that_takes_nothing_does_not_block_its_senders() {
    const TOTAL: u32 = 12_000; // more than a link's window and channel hold
    let redis = RedisServer::start();
    let Pair { exchange, me, peer, mut inbox, .. } = pair(&redis, 100, PEER_TIMEOUT).await;
    let started = Instant::now();
    for seq in 0..TOTAL {
        let send = exchange.send(numbered(&me, &peer, seq, 100));
        tokio::time::timeout(Duration::from_secs(30), send).await.expect("a send hung").unwrap();
    }
    eprintln!("{TOTAL} sends to a mailbox nobody reads took {:?}", started.elapsed());
    // Read late: each message once (order is not promised across the failover).
    let mut seen = std::collections::HashSet::new();
    for _ in 0..TOTAL {
        let seq = seq_of(&inbox.recv(WAIT).await.unwrap());
        assert!(seen.insert(seq), "{seq} delivered twice");
    }
    nothing_more(&mut inbox).await;
    exchange.close().await;
}

#[actix::test]
async fn a_message_over_the_frame_cap_is_refused_at_send() {
    let redis = RedisServer::start();
    let exchange = redis.builder().max_frame_len(64 << 10).start().await.unwrap();
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();
    let result = exchange.send(numbered(&me, &peer, 0, 100 << 10)).await;
    assert!(matches!(result, Err(Error::TooLarge { .. })), "{result:?}");
    exchange.send(numbered(&me, &peer, 1, 100)).await.unwrap();
    exchange.close().await;
}

#[actix::test]
async fn a_peer_with_another_secret_is_tried_once_and_its_messages_are_refused_on_both_paths() {
    let redis = RedisServer::start();
    let receiver = redis.builder().start().await.unwrap();
    let peer = receiver.register_client(None).await.unwrap();
    let mut inbox = receiver.get_mailbox(&peer).await.unwrap();
    let relay = Relay::start(inbox.address().unwrap()).await;
    relay.publish(&redis, &receiver, &peer);
    let sender = Exchange::builder(redis.url()).namespace(receiver.namespace()).secret("another secret");
    let sender = sender.start().await.unwrap();
    let me = sender.register_client(None).await.unwrap();
    for seq in 0..200 {
        sender.send(numbered(&me, &peer, seq, 100)).await.unwrap();
        if seq % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Through Redis, sealed with the wrong secret: dropped and counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while receiver.rejections().dropped_entries < 200 {
        assert!(std::time::Instant::now() < deadline, "{:?}", receiver.rejections());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nothing_more(&mut inbox).await;
    // One refused handshake, then Redis: not one connection per message.
    assert_eq!(relay.accepted(), 1, "the sender kept dialing a peer that refused it");
    sender.close().await;
    receiver.close().await;
}

/// Answers with as many bytes as asked.
struct Grow;
impl Actor for Grow {
    type Context = Context<Self>;
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "serde_bytes::ByteBuf")]
struct Bytes(usize);
impl Handler<Bytes> for Grow {
    type Result = MessageResult<Bytes>;
    fn handle(&mut self, m: Bytes, _: &mut Context<Self>) -> Self::Result {
        MessageResult(serde_bytes::ByteBuf::from(vec![1u8; m.0]))
    }
}
actix_academy::behavior!(Grow { actions: [Bytes] });

#[actix::test]
async fn a_result_over_the_frame_cap_answers_its_caller_with_an_error() {
    let redis = RedisServer::start();
    let exchange = redis.builder().max_frame_len(64 << 10).start().await.unwrap();
    let id: AgentId<Grow> = exchange.register_agent(None).await.unwrap();
    let _agent = Agent::launch(Grow, id.clone(), &exchange).await.unwrap();
    let grow = exchange.get_handle(id).bind_as_client(&exchange).await.unwrap().with_liveness_timeout(None);
    assert_eq!(grow.action(Bytes(10)).await.unwrap().len(), 10);
    let call = tokio::time::timeout(Duration::from_secs(20), grow.action(Bytes(100 << 10)));
    match call.await.expect("the caller was left waiting") {
        Err(Error::Remote(e)) => assert!(e.message.contains("over the"), "{e}"),
        other => panic!("expected a remote error, got {:?}", other.map(|b| b.len())),
    }
    grow.shutdown().await.unwrap();
    exchange.close().await;
}

#[actix::test]
async fn a_call_to_an_agent_that_refuses_our_secret_fails_at_once_saying_so() {
    let redis = RedisServer::start();
    let receiver = redis.exchange().await;
    let intruder =
        Exchange::builder(redis.url()).namespace(receiver.namespace()).secret("guess").start().await.unwrap();
    let agent = Agent::start(support::agents::Counter::default(), &receiver, Some("guarded")).await.unwrap();
    let handle = intruder.get_handle(agent.id().clone()).bind_as_client(&intruder).await.unwrap();
    // Not after the 10 s liveness timeout as a dead agent would: the call
    // ends with the handshake's refusal (a generous bound: the loaded
    // machine may be slow to connect, but not 10 s slow). In this binary, not
    // beside hosts.rs's log captures: the same log lines on another thread
    // can hide theirs.
    for call in ["first", "second"] {
        let asked = Instant::now();
        let answer = handle.action(support::agents::Increment(1)).await;
        assert!(matches!(answer, Err(Error::Rejected(actix_academy::Rejection::Secret))), "{call} call: {answer:?}");
        assert!(asked.elapsed() < Duration::from_secs(8), "{call} call took {:?}", asked.elapsed());
    }
    handle.close().await.unwrap();
    agent.shutdown().await;
    intruder.close().await;
    receiver.close().await;
}
