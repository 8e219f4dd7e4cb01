//! One test per defect of the reference system (SPEC.md, "Known defects")
//! that this crate must not have. Discovery and send-after-terminate against
//! a real server (defect 6) are in `exchange.rs`; framing (3, 4) in `wire.rs`.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use actix_academy::wire::{Body, Envelope};
use actix_academy::{ClientId, Exchange};
use redis::Commands;
use support::RedisServer;

const SENDERS: usize = 8;
const PER_SENDER: u32 = 10_000;

fn numbered(src: &ClientId, dest: &ClientId, sender: usize, seq: u32) -> Envelope {
    let mut args = vec![sender as u8];
    args.extend_from_slice(&seq.to_be_bytes());
    args.resize(100, 0xab);
    Envelope::new(
        src.clone().into(),
        dest.clone().into(),
        Body::ActionRequest { action: "n".into(), args: args.into() },
    )
}

/// Defects 1 and 2: concurrent senders corrupted frames, lost messages and
/// reordered them. Here 8 senders (four sharing one exchange, and so one
/// connection; four with an exchange each) send 10,000 messages each at once.
#[actix::test]
async fn concurrent_senders_lose_nothing_and_keep_order() {
    let redis = RedisServer::start();
    let receiver = redis.exchange().await;
    let me = receiver.register_client(Some("receiver")).await.unwrap();
    let mut inbox = receiver.get_mailbox(&me).await.unwrap();
    let shared = redis.builder().namespace(receiver.namespace()).start().await.unwrap();

    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        let exchange = if sender < 4 {
            shared.clone()
        } else {
            redis.builder().namespace(receiver.namespace()).start().await.unwrap()
        };
        let (src, dest) = (exchange.register_client(None).await.unwrap(), me.clone());
        tasks.push(actix::spawn(async move {
            for seq in 0..PER_SENDER {
                exchange.send(numbered(&src, &dest, sender, seq)).await.unwrap();
            }
            exchange
        }));
    }

    let mut next: HashMap<u8, u32> = HashMap::new();
    for _ in 0..SENDERS as u32 * PER_SENDER {
        let message = inbox.recv(Some(Duration::from_secs(30))).await.expect("a message was lost");
        let Body::ActionRequest { args, .. } = message.body else { panic!("corrupted body") };
        assert_eq!(args.len(), 100, "corrupted payload");
        assert!(args[5..].iter().all(|b| *b == 0xab), "corrupted payload");
        let seq = u32::from_be_bytes(args[1..5].try_into().unwrap());
        let expected = next.entry(args[0]).or_default();
        assert_eq!(seq, *expected, "sender {} out of order or duplicated", args[0]);
        *expected += 1;
    }
    assert!(next.values().all(|n| *n == PER_SENDER));
    assert!(inbox.recv(Some(Duration::from_millis(200))).await.is_err(), "a message was duplicated");
    for task in tasks {
        task.await.unwrap().close().await;
    }
}

/// Defect 7 (in part): a mailbox closed with messages it received but nobody
/// took loses none of them: they are back in Redis for the next opening.
#[actix::test]
async fn closing_a_mailbox_loses_nothing_it_held() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();
    // Half of the messages queued in Redis while offline, half sent direct.
    for seq in 0..50 {
        exchange.send(numbered(&me, &peer, 0, seq)).await.unwrap();
    }
    let inbox = exchange.get_mailbox(&peer).await.unwrap();
    for seq in 50..100 {
        exchange.send(numbered(&me, &peer, 0, seq)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    inbox.close().await.unwrap();

    let mut inbox = exchange.get_mailbox(&peer).await.unwrap();
    let mut seen = Vec::new();
    while let Ok(message) = inbox.recv(Some(Duration::from_millis(500))).await {
        let Body::ActionRequest { args, .. } = message.body else { unreachable!() };
        seen.push(u32::from_be_bytes(args[1..5].try_into().unwrap()));
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<_>>(), "lost or duplicated across a close");
}

/// Defect 8: a peer that never answers (its accept queue is full, so the
/// connection hangs) stalls a send for at most the connect timeout; then
/// the message goes to Redis.
#[actix::test]
async fn a_dead_host_costs_at_most_the_connect_timeout() {
    let redis = RedisServer::start();
    let connect_timeout = Duration::from_secs(3);
    let exchange = redis.builder().connect_timeout(connect_timeout).start().await.unwrap();
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();

    // A listener that never accepts and never answers.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let address = listener.local_addr().unwrap();
    let queue = format!("{}:queue:{}", exchange.namespace(), peer.base32());
    let address_key = format!("{}:address:{}", exchange.namespace(), peer.base32());
    let _: () = redis.client().set(&address_key, address.to_string()).unwrap();

    let started = std::time::Instant::now();
    exchange.send(numbered(&me, &peer, 0, 0)).await.unwrap();
    // Well under the connect timeout, however loaded the machine: send does
    // not wait for the connection.
    assert!(started.elapsed() < connect_timeout / 2, "send waited for the connection");
    for _ in 0..3000 {
        if redis.client().llen::<_, usize>(&queue).unwrap() == 1 {
            drop(listener);
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the message never reached the Redis queue");
}

/// Defect 10: a port chosen by bind-close-rebind could be taken in between.
/// Now an exchange binds one listener, held for its life, which serves every
/// mailbox it opens: many opened at once all publish its port, and all
/// receive, without a file descriptor each.
#[actix::test]
async fn many_mailboxes_opened_at_once_share_the_exchanges_one_listener() {
    let redis = RedisServer::start();
    let exchange: Exchange = redis.exchange().await;
    let me = exchange.register_client(None).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..500 {
        ids.push(exchange.register_client(None).await.unwrap());
    }
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    let mut inboxes = futures::future::try_join_all(ids.iter().map(|id| exchange.get_mailbox(id))).await.unwrap();
    let opened = fds();
    let ports: std::collections::HashSet<_> = inboxes.iter().map(|m| m.address().unwrap().port()).collect();
    assert_eq!(ports.len(), 1, "every mailbox is served by the exchange's listener");
    // Other tests of this binary run meanwhile: a generous bound, far below one each.
    assert!(opened < before + 100, "500 mailboxes took {} file descriptors", opened.saturating_sub(before));
    let mut con = redis.client();
    for (id, inbox) in ids.iter().zip(&inboxes) {
        let published: String = con.get(format!("{}:address:{}", exchange.namespace(), id.base32())).unwrap();
        assert_eq!(published, inbox.address().unwrap().to_string());
        exchange.send(numbered(&me, id, 0, 0)).await.unwrap();
    }
    for inbox in &mut inboxes {
        inbox.recv(Some(Duration::from_secs(10))).await.unwrap();
    }
}
