//! The peer-to-peer wire, exercised byte by byte against a live mailbox:
//! framing edge cases, bad input, and proof that the mailbox keeps serving.

mod support;

use std::time::Duration;

use actix_academy::wire::{Body, Envelope, Mailbox};
use actix_academy::{ClientId, Error};
use support::raw::{closed_by_server, connect, frame};
use support::RedisServer;
use tokio::io::AsyncWriteExt;

const SECRET: &[u8] = b"test secret";
const WAIT: Option<Duration> = Some(Duration::from_secs(5));

struct Fixture {
    redis: RedisServer,
    exchange: actix_academy::Exchange,
    me: ClientId,
    peer: ClientId,
    inbox: Mailbox,
}

async fn fixture(max_frame_len: usize) -> Fixture {
    fixture_with(max_frame_len, Duration::from_secs(10)).await
}

async fn fixture_with(max_frame_len: usize, peer_timeout: Duration) -> Fixture {
    let redis = RedisServer::start();
    let builder = redis.builder().max_frame_len(max_frame_len).peer_timeout(peer_timeout);
    let exchange = builder.start().await.unwrap();
    let me = exchange.register_client(None).await.unwrap();
    let peer = exchange.register_client(None).await.unwrap();
    let inbox = exchange.get_mailbox(&peer).await.unwrap();
    Fixture { redis, exchange, me, peer, inbox }
}

impl Fixture {
    fn message(&self) -> Envelope {
        Envelope::new(self.me.clone().into(), self.peer.clone().into(), Body::PingRequest)
    }

    /// A well-behaved peer still gets a message through.
    async fn still_serves(&mut self) {
        let message = self.message();
        let mut stream = connect(self.inbox.address().unwrap(), SECRET, self.peer.uid()).await.unwrap();
        stream.write_all(&frame(&message.encode().unwrap())).await.unwrap();
        assert_eq!(self.inbox.recv(WAIT).await.unwrap(), message);
    }
}

#[actix::test]
async fn several_frames_in_one_write() {
    let mut f = fixture(1 << 20).await;
    let messages: Vec<_> = (0..5).map(|_| f.message()).collect();
    let bytes: Vec<u8> = messages.iter().flat_map(|m| frame(&m.encode().unwrap())).collect();
    let mut stream = connect(f.inbox.address().unwrap(), SECRET, f.peer.uid()).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    for message in &messages {
        assert_eq!(&f.inbox.recv(WAIT).await.unwrap(), message);
    }
}

#[actix::test]
async fn a_frame_split_down_to_single_bytes() {
    let mut f = fixture(1 << 20).await;
    let messages: Vec<_> = (0..3).map(|_| f.message()).collect();
    let mut stream = connect(f.inbox.address().unwrap(), SECRET, f.peer.uid()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for (i, message) in messages.iter().enumerate() {
        let bytes = frame(&message.encode().unwrap());
        // One byte at a time, then in chunks of 2 and 3 (headers split too).
        for piece in bytes.chunks(i + 1) {
            stream.write_all(piece).await.unwrap();
            stream.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(&f.inbox.recv(WAIT).await.unwrap(), message);
    }
}

#[actix::test]
async fn a_client_that_leaves_early() {
    let mut f = fixture(1 << 20).await;
    // Connects and leaves before the handshake, halfway through it, and right after it.
    drop(tokio::net::TcpStream::connect(f.inbox.address().unwrap()).await.unwrap());
    let mut half = tokio::net::TcpStream::connect(f.inbox.address().unwrap()).await.unwrap();
    half.write_all(b"ACAD\x07").await.unwrap();
    drop(half);
    drop(connect(f.inbox.address().unwrap(), SECRET, f.peer.uid()).await.unwrap());
    f.still_serves().await;
}

#[actix::test]
async fn a_frame_over_the_cap_is_refused() {
    let mut f = fixture(1024).await;
    let mut stream = connect(f.inbox.address().unwrap(), SECRET, f.peer.uid()).await.unwrap();
    // Claims 4 GiB - 1; the mailbox must refuse it from the header alone.
    stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    stream.write_all(&[0u8; 64]).await.unwrap();
    assert!(closed_by_server(&mut stream, Duration::from_secs(5)).await);
    // Just over the cap, with the payload actually sent.
    let mut stream = connect(f.inbox.address().unwrap(), SECRET, f.peer.uid()).await.unwrap();
    let _ = stream.write_all(&frame(&[0u8; 1025])).await;
    assert!(closed_by_server(&mut stream, Duration::from_secs(5)).await);
    assert!(matches!(f.inbox.recv(Some(Duration::from_millis(50))).await, Err(Error::Timeout(_))));
    f.still_serves().await;
}

#[actix::test]
async fn garbage_and_hang_ups_close_only_that_connection() {
    let mut f = fixture(1 << 20).await;
    // A valid header with garbage inside.
    let mut stream = connect(f.inbox.address().unwrap(), SECRET, f.peer.uid()).await.unwrap();
    stream.write_all(&frame(b"definitely not messagepack")).await.unwrap();
    assert!(closed_by_server(&mut stream, Duration::from_secs(5)).await);
    // Random bytes instead of a handshake.
    let mut stream = tokio::net::TcpStream::connect(f.inbox.address().unwrap()).await.unwrap();
    stream.write_all(&[0x5a; 200]).await.unwrap();
    assert!(closed_by_server(&mut stream, Duration::from_secs(5)).await);
    // Half a frame, then a hang-up.
    let mut stream = connect(f.inbox.address().unwrap(), SECRET, f.peer.uid()).await.unwrap();
    let whole = frame(&f.message().encode().unwrap());
    stream.write_all(&whole[..whole.len() / 2]).await.unwrap();
    drop(stream);
    f.still_serves().await;
    assert!(matches!(f.inbox.recv(Some(Duration::from_millis(50))).await, Err(Error::Timeout(_))));
}

#[actix::test]
async fn a_wrong_secret_or_destination_is_refused() {
    let f = fixture(1 << 20).await;
    let wrong_secret = connect(f.inbox.address().unwrap(), b"guess", f.peer.uid());
    assert!(tokio::time::timeout(Duration::from_secs(5), wrong_secret).await.unwrap().is_err());
    // A lane to a mailbox this process does not serve is refused.
    let mut wrong_dest = connect(f.inbox.address().unwrap(), SECRET, uuid::Uuid::new_v4()).await.unwrap();
    assert!(closed_by_server(&mut wrong_dest, Duration::from_secs(5)).await);
    // A handshake that names a mailbox (as version 6 did) is refused.
    let mut stream = tokio::net::TcpStream::connect(f.inbox.address().unwrap()).await.unwrap();
    let mut hello = b"ACAD\x07\x00".to_vec();
    hello.extend_from_slice(f.peer.uid().as_bytes());
    hello.extend_from_slice(&[1u8; 16]);
    stream.write_all(&hello).await.unwrap();
    let mut reply = [0u8; 54];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut reply).await.unwrap();
    assert_eq!(&reply[..6], b"ACAD\x07\x01", "refused as a wrong destination");
    // A client that ignores the server's proof and bluffs its own: the lane
    // it opens and the frame it sends after the bluff are never delivered.
    let mut stream = tokio::net::TcpStream::connect(f.inbox.address().unwrap()).await.unwrap();
    let mut hello = b"ACAD\x07\x00".to_vec();
    hello.extend_from_slice(uuid::Uuid::nil().as_bytes());
    hello.extend_from_slice(&[1u8; 16]);
    stream.write_all(&hello).await.unwrap();
    let mut reply = [0u8; 54];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut reply).await.unwrap();
    stream.write_all(&[0u8; 32]).await.unwrap();
    let _ = stream.write_all(&support::raw::header(4, 1, 16)).await;
    let _ = stream.write_all(f.peer.uid().as_bytes()).await;
    let _ = stream.write_all(&frame(&f.message().encode().unwrap())).await;
    assert!(closed_by_server(&mut stream, Duration::from_secs(5)).await);
    let mut f = f;
    assert!(matches!(f.inbox.recv(Some(Duration::from_millis(100))).await, Err(Error::Timeout(_))));
    // A wrong protocol version or magic.
    for hello in [&b"ACAD\x09\x00"[..], b"HTTP/1"] {
        let mut stream = tokio::net::TcpStream::connect(f.inbox.address().unwrap()).await.unwrap();
        let mut bytes = hello.to_vec();
        bytes.extend_from_slice(&[0u8; 32]);
        stream.write_all(&bytes).await.unwrap();
        assert!(closed_by_server(&mut stream, Duration::from_secs(5)).await);
    }
    f.still_serves().await;
}

/// CPU time this thread (the test's actix system, where the mailbox runs) has used.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[actix::test]
async fn a_peer_gone_mid_frame_does_not_make_the_mailbox_spin() {
    let mut f = fixture(1 << 20).await;
    let mut silent = connect(f.inbox.address().unwrap(), SECRET, f.peer.uid()).await.unwrap();
    silent.write_all(&[0, 0, 1]).await.unwrap(); // three bytes of a header, then silence
    let mut gone = connect(f.inbox.address().unwrap(), SECRET, f.peer.uid()).await.unwrap();
    gone.write_all(&[0, 0, 0, 50, 0, 1, 2]).await.unwrap(); // a header and part of a payload
    drop(gone);
    let before = cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_time() - before;
    assert!(used < Duration::from_millis(300), "used {used:?} of CPU while idle");
    f.still_serves().await;
    drop(silent);
}

#[actix::test]
async fn half_a_frame_then_silence_times_out() {
    let mut f = fixture_with(1 << 20, Duration::from_millis(400)).await;
    let mut stream = connect(f.inbox.address().unwrap(), SECRET, f.peer.uid()).await.unwrap();
    stream.write_all(&[0, 0, 0, 100, 0, 1, 2, 3]).await.unwrap();
    // Closed by the mailbox once silent for the peer timeout, not left open.
    assert!(closed_by_server(&mut stream, Duration::from_secs(5)).await);
    f.still_serves().await;
}

#[actix::test]
async fn a_half_sent_frame_holds_a_connection_for_the_peer_timeout_not_longer() {
    // Connections whose last byte came at different moments: each is
    // closed one peer timeout after its own last byte (a check every
    // quarter of the timeout would leave some open up to 25% longer).
    const TIMEOUT: Duration = Duration::from_secs(8);
    let f = fixture_with(1 << 20, TIMEOUT).await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        let mut stream = connect(f.inbox.address().unwrap(), SECRET, f.peer.uid()).await.unwrap();
        stream.write_all(&[0, 0, 0, 100, 0, 1, 2, 3]).await.unwrap();
        silent.push((stream, std::time::Instant::now()));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    for (mut stream, since) in silent {
        assert!(closed_by_server(&mut stream, TIMEOUT * 2).await, "left open");
        let after = since.elapsed();
        assert!(after >= TIMEOUT - Duration::from_millis(100), "closed early, after {after:?}");
        // A bound with room for a loaded machine, under the 25% (2 s) of old.
        assert!(after < TIMEOUT + Duration::from_millis(1500), "closed after {after:?}");
    }
}

#[actix::test]
async fn an_idle_link_stays_up_through_keepalives() {
    // Idle for 2.5 peer timeouts, twice: only keepalives keep the link up.
    let mut f = fixture_with(1 << 20, Duration::from_secs(1)).await;
    for _ in 0..2 {
        let message = f.message();
        f.exchange.send(message.clone()).await.unwrap();
        assert_eq!(f.inbox.recv(WAIT).await.unwrap(), message);
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut f.redis.client()).unwrap();
    // A fallback would have pushed the message to the queue, and the mailbox
    // would have acknowledged taking it with LTRIM.
    assert!(!info.contains("cmdstat_ltrim"), "the link fell back to Redis: {info}");
}

#[actix::test]
async fn a_thousand_idle_connections_do_not_lock_others_out() {
    let mut f = fixture(1 << 20).await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(tokio::net::TcpStream::connect(f.inbox.address().unwrap()).await.unwrap());
    }
    f.still_serves().await;
    // Past the cap (1,024 by default), connections are refused at once.
    let mut extra = Vec::new();
    for _ in 0..30 {
        extra.push(tokio::net::TcpStream::connect(f.inbox.address().unwrap()).await.unwrap());
    }
    assert!(closed_by_server(extra.last_mut().unwrap(), Duration::from_secs(5)).await);
    drop(idle);
    drop(extra);
    tokio::time::sleep(Duration::from_millis(200)).await;
    f.still_serves().await;
}

#[actix::test]
async fn a_frame_that_trickles_in_longer_than_the_peer_timeout_is_delivered() {
    // A large message on a slow network: bytes keep coming, so the
    // connection is not silent even though no frame completes for a while.
    let mut f = fixture_with(1 << 20, Duration::from_secs(1)).await;
    let mut message = f.message();
    message.body = Body::ActionRequest { action: "big".into(), args: vec![7u8; 20_000].into() };
    let bytes = frame(&message.encode().unwrap());
    let mut stream = connect(f.inbox.address().unwrap(), SECRET, f.peer.uid()).await.unwrap();
    for piece in bytes.chunks(bytes.len() / 30 + 1) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await; // 3 s in all, three peer timeouts
    }
    assert_eq!(f.inbox.recv(WAIT).await.unwrap(), message);
}
