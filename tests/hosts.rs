//! Across hosts, modelled on one machine with loopback addresses only:
//! each host is its own `127.x.y.z` address, a network namespace gives an
//! interface of its own, and a packet filter cuts the network. Then what a
//! shared network needs: the secret guards both paths, forged queue entries
//! are dropped, encryption hides payloads, and Redis speaks TLS.
//!
//! Children are this same test binary, re-run with `--ignored`.

mod support;

use redis::Commands;
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix_academy::wire::{Body, Envelope};
use actix_academy::{Agent, AgentId, ClientId, Error, Exchange, Rejection};
use support::agents::{Counter, Increment};
use support::{Captured, RedisServer};

const CHILD: &str = "ACADEMY_HOSTS_CHILD";

/// Waits (up to `within`) for `check` to hold, polling.
async fn wait_until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Established TCP connections (IPv4) as `(local, remote)`, read from
/// `/proc/net/tcp` of this process's network namespace.
fn established() -> Vec<(std::net::SocketAddr, std::net::SocketAddr)> {
    let parse = |field: &str| {
        let (ip, port) = field.split_once(':').unwrap();
        let ip = u32::from_str_radix(ip, 16).unwrap();
        let ip = std::net::Ipv4Addr::from(ip.swap_bytes());
        std::net::SocketAddr::from((ip, u16::from_str_radix(port, 16).unwrap()))
    };
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[3] == "01").then(|| (parse(fields[1]), parse(fields[2])))
        })
        .collect()
}

fn ping(from: &ClientId, to: &ClientId) -> Envelope {
    Envelope::new(from.clone().into(), to.clone().into(), Body::PingRequest)
}

/// The children: an agent process on its own loopback address, and the
/// partition scenario inside a network namespace.
#[actix::test]
#[ignore = "run by the other tests in a child process"]
async fn child() {
    let Ok(config) = std::env::var(CHILD) else {
        panic!("a child process entry point, started by the other tests of this file with {CHILD} set; it fails when run alone")
    };
    let args: Vec<&str> = config.split(' ').collect();
    // What a deployment would log: warnings and errors, on stderr.
    let _ = tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_ansi(false).try_init();
    match args[0] {
        "agent" => {
            let (url, namespace, bind) = (args[1], args[2], args[3]);
            let exchange = Exchange::builder(url)
                .namespace(namespace)
                .secret("test secret")
                .bind(bind)
                .connect_timeout(Duration::from_secs(10))
                .start()
                .await
                .unwrap();
            let id = exchange.register_agent::<Counter>(Some("far")).await.unwrap();
            let agent = Agent::launch(Counter::default(), id, &exchange).await.unwrap();
            agent.wait().await;
            exchange.close().await;
        }
        "partition" => partition_in_this_namespace(args[1]).await,
        mode => panic!("unknown child mode {mode}"),
    }
}

#[actix::test]
async fn an_agent_on_one_loopback_address_is_called_from_a_process_on_another_and_both_close_quietly() {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::WARN);
    let redis = RedisServer::start();
    // Generous timeouts: a slow handshake on a loaded machine is not a failure.
    let exchange = redis.builder().bind("127.0.0.3").connect_timeout(Duration::from_secs(10)).start().await.unwrap();
    let stderr = tempfile_path("agent-stderr");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("agent {} {} 127.0.0.2", redis.url(), exchange.namespace()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let id: AgentId<Counter> = loop {
        if let Some(id) =
            exchange.discover_with::<Counter>(actix_academy::Discovery::new().exact()).await.unwrap().pop()
        {
            break id;
        }
        assert!(Instant::now() < deadline, "the agent process never showed up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Discoverable once registered; its address is published once its
    // mailbox opens, a moment later.
    let key = format!("{}:address:{}", exchange.namespace(), id.base32());
    let published: String = loop {
        let published: Option<String> = redis::Commands::get(&mut redis.client(), &key).unwrap();
        if let Some(published) = published {
            break published;
        }
        assert!(Instant::now() < deadline, "the agent never published its address");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(published.starts_with("127.0.0.2:"), "published {published}");
    let agent_address: std::net::SocketAddr = published.parse().unwrap();

    let counter = exchange.get_handle(id).bind_as_client(&exchange).await.unwrap();
    for i in 1..=20 {
        assert_eq!(counter.action(Increment(1)).await.unwrap(), i);
    }
    // Directly: a connection from this process's address to the agent's.
    let direct =
        established().iter().any(|(local, remote)| *remote == agent_address && local.ip().to_string() == "127.0.0.3");
    assert!(direct, "no connection from 127.0.0.3 to {agent_address}: {:?}", established());

    counter.shutdown().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the agent process did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
    exchange.close().await;
    // A clean shutdown on both sides is not a problem: nothing at WARN or above.
    let child_logs = std::fs::read_to_string(&stderr).unwrap();
    // (this crate's lines: a dependency's warning is not ours to judge)
    let bad = |line: &&str| line.contains("actix_academy") && (line.contains("WARN") || line.contains("ERROR"));
    assert!(!child_logs.lines().any(|line| bad(&line)), "agent process logged:\n{child_logs}");
    let ours = logs.text();
    assert!(ours.is_empty(), "this process logged:\n{ours}");
}

fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("academy-hosts-{}-{name}", std::process::id()))
}

#[actix::test]
async fn binding_every_interface_publishes_an_address_peers_can_dial() {
    let redis = RedisServer::start();
    let receiver = redis.builder().bind("0.0.0.0").start().await.unwrap();
    let sender = Exchange::builder(redis.url())
        .namespace(receiver.namespace())
        .secret("test secret")
        .connect_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    let me = sender.register_client(None).await.unwrap();
    let peer = receiver.register_client(None).await.unwrap();
    let mut inbox = receiver.get_mailbox(&peer).await.unwrap();
    let advertised = inbox.advertised_address().unwrap().to_owned();
    assert!(advertised.starts_with("127.0.0.1:"), "advertised {advertised}");
    assert!(inbox.address().unwrap().ip().is_unspecified());
    sender.send(ping(&me, &peer)).await.unwrap();
    inbox.recv(Some(Duration::from_secs(10))).await.unwrap();
    let port: u16 = advertised.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(established().iter().any(|(_, remote)| remote.port() == port), "not sent directly");
    // Publishing an unspecified address is refused up front, and so is
    // listening beyond this host without a secret.
    let refused = Exchange::builder(redis.url()).secret("s").advertise("0.0.0.0").start().await;
    assert!(matches!(refused, Err(Error::Config(_))), "{refused:?}");
    let refused = Exchange::builder(redis.url()).bind("0.0.0.0").start().await;
    assert!(matches!(&refused, Err(Error::Config(e)) if e.contains("secret")), "{refused:?}");
    inbox.close().await.unwrap();
    sender.close().await;
    receiver.close().await;
}

#[actix::test]
async fn a_wrong_secret_delivers_nothing_on_either_path_and_is_reported_once_per_peer() {
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::WARN);
    let redis = RedisServer::start();
    let receiver = redis.exchange().await;
    let intruder =
        Exchange::builder(redis.url()).namespace(receiver.namespace()).secret("guess").start().await.unwrap();
    let peer = receiver.register_client(None).await.unwrap();
    let me = intruder.register_client(None).await.unwrap();
    let mut inbox = receiver.get_mailbox(&peer).await.unwrap();
    for _ in 0..20 {
        // Accepted: the intruder cannot tell; the receiver drops them.
        intruder.send(ping(&me, &peer)).await.unwrap();
    }
    wait_until(Duration::from_secs(30), "the forged entries to be dropped", || {
        receiver.rejections().dropped_entries == 20
    })
    .await;
    wait_until(Duration::from_secs(30), "both ends to count the refusal", || {
        intruder.rejections().refused_by_peers >= 1 && receiver.rejections().peers_refused >= 1
    })
    .await;
    assert!(matches!(inbox.recv(Some(Duration::from_millis(300))).await, Err(Error::Timeout(_))));

    // Pushed by hand with redis-cli: unsealed, and sealed with another secret.
    let queue = format!("{}:queue:{}", receiver.namespace(), peer.base32());
    let unsealed = ping(&me, &peer).encode().unwrap().to_vec();
    let forged = support::raw::seal(b"guess", peer.uid(), &unsealed);
    for entry in [unsealed, forged] {
        let mut cli = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "-x", "RPUSH", &queue])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-cli comes with redis-server");
        std::io::Write::write_all(cli.stdin.as_mut().unwrap(), &entry).unwrap();
        drop(cli.stdin.take());
        assert!(cli.wait().unwrap().success());
    }
    wait_until(Duration::from_secs(30), "the hand-pushed entries to be dropped", || {
        receiver.rejections().dropped_entries == 22
    })
    .await;
    assert!(matches!(inbox.recv(Some(Duration::from_millis(300))).await, Err(Error::Timeout(_))));

    let text = logs.text();
    let count = |what: &str| text.lines().filter(|l| l.contains("ERROR") && l.contains(what)).count();
    assert_eq!(count("could not connect to a peer"), 1, "{text}");
    assert_eq!(count("refused a peer"), 1, "{text}");
    assert_eq!(count("queue entries dropped"), 1, "one summary, not one line each:\n{text}");
    inbox.close().await.unwrap();
    intruder.close().await;
    receiver.close().await;
}

#[cfg(any(feature = "encryption", feature = "tls"))]
/// Copies bytes both ways between a client and `target`, keeping what the
/// client sent.
async fn recording_proxy(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(target).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                    recorded.lock().unwrap().extend_from_slice(&buf[..n]);
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
        }
    });
    (address, seen)
}

#[cfg(any(feature = "encryption", feature = "tls"))]
/// Sends one message with a recognisable payload from `sender` to a mailbox
/// of `receiver` through a recording proxy; returns what crossed it.
async fn through_a_proxy(
    redis: &RedisServer,
    sender: &actix_academy::Exchange,
    receiver: &actix_academy::Exchange,
) -> Vec<u8> {
    let me = sender.register_client(None).await.unwrap();
    let peer = receiver.register_client(None).await.unwrap();
    let mut inbox: actix_academy::wire::Mailbox = receiver.get_mailbox(&peer).await.unwrap();
    let (proxy, seen) = recording_proxy(inbox.address().unwrap()).await;
    // Peers dial what Redis says: the proxy.
    let key = format!("{}:address:{}", receiver.namespace(), peer.base32());
    let _: () = redis::Commands::set(&mut redis.client(), &key, proxy.to_string()).unwrap();
    let secret_payload = bytes::Bytes::from_static(b"PLAINTEXT-MARKER-0123456789");
    let body = Body::ActionRequest { action: "anything".into(), args: secret_payload.clone() };
    let message = Envelope::new(me.clone().into(), peer.clone().into(), body);
    sender.send(message.clone()).await.unwrap();
    assert_eq!(inbox.recv(Some(Duration::from_secs(10))).await.unwrap(), message);
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the message did not go through the proxy");
    inbox.close().await.unwrap();
    seen
}

#[cfg(any(feature = "encryption", feature = "tls"))]
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(feature = "encryption")]
#[actix::test]
async fn encrypted_links_show_no_plaintext_on_the_wire_and_need_the_same_keys() {
    let redis = RedisServer::start();
    let marker = b"PLAINTEXT-MARKER";
    // Plain links, as a control: the proxy sees the payload.
    let plain = || redis.builder().namespace("plain").start();
    let (a, b) = (plain().await.unwrap(), plain().await.unwrap());
    assert!(contains(&through_a_proxy(&redis, &a, &b).await, marker));
    a.close().await;
    b.close().await;
    // Encrypted: it does not.
    let encrypted = || redis.builder().namespace("encrypted").encrypt(true).start();
    let (a, b) = (encrypted().await.unwrap(), encrypted().await.unwrap());
    let seen = through_a_proxy(&redis, &a, &b).await;
    assert!(!contains(&seen, marker), "plaintext on an encrypted link");
    assert_eq!(a.rejections(), Default::default());
    a.close().await;
    b.close().await;
    // Another key (secret) fails the handshake; so does one end not encrypting.
    let b = encrypted().await.unwrap();
    for other in [redis.builder().secret("guess").encrypt(true), redis.builder().encrypt(false)] {
        let a = other.namespace(b.namespace()).start().await.unwrap();
        let me = a.register_client(None).await.unwrap();
        let peer = b.register_client(None).await.unwrap();
        let inbox = b.get_mailbox(&peer).await.unwrap();
        let _ = a.send(ping(&me, &peer)).await;
        wait_until(Duration::from_secs(20), "the handshake to be refused", || a.rejections().refused_by_peers >= 1)
            .await;
        inbox.close().await.unwrap();
        a.close().await;
    }
    // Encryption without a secret is refused up front.
    let no_secret = Exchange::builder(redis.url()).encrypt(true).start().await;
    assert!(matches!(no_secret, Err(Error::Config(_))), "{no_secret:?}");
    b.close().await;
}

#[test]
fn rejections_name_their_cause() {
    let text = Error::Rejected(Rejection::Secret).to_string();
    assert!(text.contains("secret"), "{text}");
}

/// Needs root, `ip` and `nft`: `.ci/run` provides them.
fn namespace_tools() -> Result<(), String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").map(|v| v.split_whitespace().next().unwrap().to_owned()))
        .unwrap();
    if uid != "0" {
        return Err("not root".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if found.is_err() {
            return Err(format!("`{tool}` is not installed"));
        }
    }
    Ok(())
}

fn run(command: &str, args: &[&str]) {
    let out = Command::new(command).args(args).output().unwrap();
    assert!(out.status.success(), "{command} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A network namespace with loopback up and an interface `acad0` (one end
/// of a veth pair) carrying 127.0.9.1; deleted when dropped.
struct Namespace(String);

impl Namespace {
    fn create() -> Self {
        let name = format!("academy-test-{}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Self(name);
        run("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
        run("ip", &["-n", &ns.0, "link", "add", "acad0", "type", "veth", "peer", "name", "acad1"]);
        run("ip", &["-n", &ns.0, "addr", "add", "127.0.9.1/32", "dev", "acad0"]);
        run("ip", &["-n", &ns.0, "link", "set", "acad0", "up"]);
        run("ip", &["-n", &ns.0, "link", "set", "acad1", "up"]);
        ns
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[actix::test]
async fn in_a_network_namespace_an_interface_is_bound_by_name_and_a_partition_loses_nothing() {
    if let Err(why) = namespace_tools() {
        return support::skip("the network namespace test", &format!("{why} (needs root, iproute2 and nftables)"));
    }
    let ns = Namespace::create();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("partition {}", ns.0))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(out.status.success(), "the scenario in the namespace failed");
    assert!(text.contains("partition scenario passed"), "the scenario did not run");
}

/// Inside the namespace: a receiver bound to `acad0` by name, a sender
/// streaming to it, the link cut by a packet filter mid-stream and restored.
async fn partition_in_this_namespace(ns: &str) {
    // Long enough that a loaded machine does not drop a healthy link, short
    // enough that the partition outlasts it.
    let peer_timeout = Duration::from_secs(3);
    let redis = RedisServer::start();
    let receiver = redis.builder().interface("acad0").peer_timeout(peer_timeout).start().await.unwrap();
    let sender = redis.builder().namespace(receiver.namespace()).peer_timeout(peer_timeout).start().await.unwrap();
    let peer = receiver.register_client(None).await.unwrap();
    let me = sender.register_client(None).await.unwrap();
    let mut inbox = receiver.get_mailbox(&peer).await.unwrap();
    let advertised = inbox.advertised_address().unwrap().to_owned();
    assert!(advertised.starts_with("127.0.9.1:"), "advertised {advertised}");
    let target: std::net::SocketAddr = advertised.parse().unwrap();
    let port = target.port().to_string();
    println!("[{ns}] receiver on acad0 at {advertised}");

    let collector = actix::spawn(async move {
        let mut tags = Vec::new();
        while tags.len() < 300 {
            match inbox.recv(Some(Duration::from_secs(60))).await {
                Ok(envelope) => tags.push(envelope.tag),
                Err(e) => panic!("after {} messages: {e}", tags.len()),
            }
        }
        (tags, inbox)
    });
    run("nft", &["add", "table", "inet", "academy"]);
    run("nft", &["add", "chain", "inet", "academy", "out", "{ type filter hook output priority 0; }"]);
    let connections_to_target = || {
        established()
            .into_iter()
            .filter(|(_, remote)| *remote == target)
            .map(|(local, _)| local)
            .collect::<HashSet<_>>()
    };
    let mut sent = Vec::new();
    let mut before = HashSet::new();
    for i in 0..300 {
        if i == 100 {
            wait_until(Duration::from_secs(30), "a direct connection before the partition", || {
                !connections_to_target().is_empty()
            })
            .await;
            before = connections_to_target();
            run(
                "nft",
                &["add", "rule", "inet", "academy", "out", "ip", "daddr", "127.0.9.1", "tcp", "dport", &port, "drop"],
            );
            println!("[{ns}] partitioned after 100 messages");
        }
        if i == 200 {
            run("nft", &["flush", "chain", "inet", "academy", "out"]);
            println!("[{ns}] partition lifted after 200 messages");
        }
        let message = ping(&me, &peer);
        sent.push(message.tag);
        sender.send(message).await.unwrap();
        // The partition lasts about 5 s, past the peer timeout.
        tokio::time::sleep(Duration::from_millis(if (100..200).contains(&i) { 50 } else { 5 })).await;
    }
    let (got, inbox) = collector.await.unwrap();
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a message was delivered twice");
    assert_eq!(unique, sent.iter().collect::<HashSet<_>>(), "a message was lost");
    println!("[{ns}] all 300 messages arrived once");
    // Direct traffic resumes: a new connection to the receiver, once a dial
    // made after the lift succeeds (the session being dialed when it was
    // lifted may still time out, and its lanes' messages go through Redis).
    let deadline = Instant::now() + Duration::from_secs(30);
    while connections_to_target().difference(&before).next().is_none() {
        assert!(Instant::now() < deadline, "timed out waiting for a new direct connection");
        sender.send(ping(&me, &peer)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    inbox.close().await.unwrap();
    sender.close().await;
    receiver.close().await;
    run("nft", &["delete", "table", "inet", "academy"]);
    println!("partition scenario passed");
}

/// A `redis-server` that speaks only TLS, with a certificate from a CA made
/// for the test (by `openssl`); killed when dropped.
#[cfg(feature = "tls")]
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    ca: TestCa,
}

#[cfg(feature = "tls")]
impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
#[cfg(feature = "tls")]
struct TempDir(std::path::PathBuf);

#[cfg(feature = "tls")]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority made for a test with `openssl`, in a directory
/// removed when dropped.
#[cfg(feature = "tls")]
struct TestCa {
    dir: TempDir,
    pem: Vec<u8>,
}

#[cfg(feature = "tls")]
impl TestCa {
    fn new(name: &str) -> Result<Self, String> {
        let dir = TempDir(tempfile_path(name));
        std::fs::create_dir_all(&dir.0).unwrap();
        let mut ca = Self { dir, pem: Vec::new() };
        let (key, crt) = (ca.path("ca.key"), ca.path("ca.crt"));
        let subject = format!("/CN=academy test CA {name}");
        ca.openssl(
            &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
            &["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subject],
        )?;
        ca.pem = std::fs::read(&crt).unwrap();
        Ok(ca)
    }

    fn path(&self, name: &str) -> String {
        self.dir.0.join(name).to_str().unwrap().to_owned()
    }

    fn openssl(&self, first: &[&str], rest: &[&str]) -> Result<(), String> {
        let out = Command::new("openssl").args(first).args(rest).output().map_err(|e| format!("openssl: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!("openssl {first:?}: {}", String::from_utf8_lossy(&out.stderr))),
        }
    }

    /// A certificate for 127.0.0.1 signed by this CA: (chain, key) as PEM,
    /// and their paths.
    fn leaf(&self, name: &str) -> Result<(Vec<u8>, Vec<u8>, String, String), String> {
        let (key, csr, crt, ext) = (
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.csr")),
            self.path(&format!("{name}.crt")),
            self.path("ext"),
        );
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
        self.openssl(
            &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
            &["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"],
        )?;
        let (ca_crt, ca_key) = (self.path("ca.crt"), self.path("ca.key"));
        self.openssl(
            &["x509", "-req", "-in", &csr, "-CA", &ca_crt, "-CAkey", &ca_key],
            &["-CAcreateserial", "-out", &crt, "-days", "2", "-extfile", &ext],
        )?;
        Ok((std::fs::read(&crt).unwrap(), std::fs::read(&key).unwrap(), crt, key))
    }
}

#[cfg(feature = "tls")]
fn tls_redis() -> Result<TlsRedis, String> {
    let ca = TestCa::new("redis")?;
    let (_, _, server_crt, server_key) = ca.leaf("server")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--tls-cert-file", &server_crt, "--tls-key-file", &server_key])
        .args(["--tls-ca-cert-file", &ca.path("ca.crt"), "--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the TLS redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(TlsRedis { child, port, ca })
}

#[cfg(feature = "tls")]
#[actix::test]
async fn an_exchange_on_rediss_trusts_the_given_root_and_refuses_an_unknown_one() {
    let redis = match tls_redis() {
        Ok(redis) => redis,
        Err(why) => return support::skip("the TLS Redis test", &why.to_string()),
    };
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    for peer_to_peer in [false, true] {
        let exchange = Exchange::builder(&url)
            .redis_root_certificates(redis.ca.pem.clone())
            .random_namespace()
            .peer_to_peer(peer_to_peer)
            .start()
            .await
            .unwrap();
        let me = exchange.register_client(None).await.unwrap();
        let peer = exchange.register_client(None).await.unwrap();
        let message = ping(&me, &peer);
        // Queued in Redis before the mailbox opens, then taken through TLS.
        exchange.send(message.clone()).await.unwrap();
        let mut inbox = exchange.get_mailbox(&peer).await.unwrap();
        assert_eq!(inbox.recv(Some(Duration::from_secs(10))).await.unwrap(), message);
        inbox.close().await.unwrap();
        exchange.close().await;
    }
    // Without the test CA, Redis's certificate is not trusted: a clear error, not a hang.
    let refused = tokio::time::timeout(Duration::from_secs(20), Exchange::builder(&url).start()).await;
    let refused = refused.expect("an untrusted certificate must fail, not hang");
    assert!(matches!(refused, Err(Error::RedisUnreachable { .. })), "{refused:?}");
}

#[cfg(feature = "tls")]
#[actix::test]
async fn tls_links_show_no_plaintext_and_refuse_a_certificate_from_another_ca() {
    let (ca, other_ca) = match (TestCa::new("peers"), TestCa::new("other")) {
        (Ok(ca), Ok(other)) => (ca, other),
        (Err(why), _) | (_, Err(why)) => return support::skip("the peer TLS test", &why.to_string()),
    };
    let redis = RedisServer::start();
    let with_certs = |ca: &TestCa, name: &str| {
        let (chain, key, _, _) = ca.leaf(name).unwrap();
        redis.builder().namespace("tls").tls_certificates(chain, key, ca.pem.clone())
    };
    let a = with_certs(&ca, "a").start().await.unwrap();
    let b = with_certs(&ca, "b").start().await.unwrap();
    let seen = through_a_proxy(&redis, &a, &b).await;
    assert!(!contains(&seen, b"PLAINTEXT-MARKER"), "plaintext on a TLS link");
    // The academy handshake (38 + 32 bytes from the client), then TLS records.
    assert_eq!(&seen[70..72], &[0x16, 0x03], "no TLS handshake record after the academy handshake");
    assert_eq!((a.rejections(), b.rejections()), Default::default(), "the message did not go directly");
    // A certificate from another CA is refused, whichever end holds it:
    // named as a certificate refusal on the end that tried to connect.
    let logs = Captured::default();
    let _guard = logs.install(tracing::Level::ERROR);
    let peer = b.register_client(None).await.unwrap();
    let inbox = b.get_mailbox(&peer).await.unwrap();
    let (chain, key, _, _) = other_ca.leaf("impostor").unwrap();
    let strangers = [
        with_certs(&other_ca, "stranger").start().await.unwrap(),
        // Trusts b's CA, but holds a certificate b does not trust.
        redis.builder().namespace("tls").tls_certificates(chain, key, ca.pem.clone()).start().await.unwrap(),
    ];
    for stranger in &strangers {
        let me = stranger.register_client(None).await.unwrap();
        let _ = stranger.send(ping(&me, &peer)).await;
        wait_until(Duration::from_secs(20), "the certificate to be refused", || {
            stranger.rejections().refused_by_peers >= 1
        })
        .await;
    }
    let text = logs.text();
    let refusals = text.lines().filter(|l| l.contains("could not connect") && l.contains("certificate")).count();
    assert_eq!(refusals, 2, "{text}");
    // Bad PEM is a clear configuration error.
    let bad = redis.builder().tls_certificates(b"nope".to_vec(), b"nope".to_vec(), ca.pem.clone()).start().await;
    assert!(matches!(bad, Err(Error::Config(_))), "{bad:?}");
    inbox.close().await.unwrap();
    for x in strangers.into_iter().chain([a]) {
        x.close().await;
    }
    // Refused certificates are refusals, not bad connections.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.rejections().bad_connections, 0, "{:?}", b.rejections());
    b.close().await;
}

/// A receiver serving one mailbox (returned), a sender in its namespace
/// (and its client), and a client of the receiver's open nowhere.
async fn one_mailbox_served_one_not(
) -> (RedisServer, Exchange, Exchange, ClientId, ClientId, actix_academy::wire::Mailbox) {
    let redis = RedisServer::start();
    let receiver = redis.exchange().await;
    let sender = redis.builder().namespace(receiver.namespace()).start().await.unwrap();
    let me = sender.register_client(None).await.unwrap();
    let other = receiver.register_client(None).await.unwrap();
    let peer = receiver.register_client(None).await.unwrap();
    let served = receiver.get_mailbox(&other).await.unwrap();
    (redis, receiver, sender, me, peer, served)
}

/// One listener serves every mailbox of a process, so a stale address can
/// lead to a live process that no longer serves the mailbox: it refuses
/// the handshake, the message is queued, and once the mailbox opens there
/// the next message goes directly (a refusal for a mailbox that is not
/// served is not held against it).
#[actix::test]
async fn a_process_that_no_longer_serves_a_mailbox_refuses_it_and_serves_it_once_open() {
    let (redis, receiver, sender, me, peer, _served) = one_mailbox_served_one_not().await;
    let address = _served.advertised_address().unwrap().to_owned();
    let port: u16 = address.rsplit_once(':').unwrap().1.parse().unwrap();
    // `peer` is not open anywhere, but Redis says it listens at the receiver.
    let address_key = format!("{}:address:{}", receiver.namespace(), peer.base32());
    let _: () = redis.client().set(&address_key, &address).unwrap();
    let first = ping(&me, &peer);
    sender.send(first.clone()).await.unwrap();
    let queue = format!("{}:queue:{}", receiver.namespace(), peer.base32());
    wait_until(Duration::from_secs(20), "the refused message to be queued", || {
        redis.client().llen::<_, usize>(&queue).unwrap() == 1
    })
    .await;
    let _: () = redis.client().del(&address_key).unwrap();
    let mut inbox = receiver.get_mailbox(&peer).await.unwrap();
    assert_eq!(inbox.recv(Some(Duration::from_secs(10))).await.unwrap(), first);
    let second = ping(&me, &peer);
    sender.send(second.clone()).await.unwrap();
    assert_eq!(inbox.recv(Some(Duration::from_secs(10))).await.unwrap(), second);
    assert!(established().iter().any(|(_, remote)| remote.port() == port), "the second message was not sent directly");
    assert_eq!(sender.rejections(), Default::default(), "the refusal was reported as a misconfiguration");
}

/// A mailbox served by the sending exchange itself is reached in memory
/// (the same frames and acknowledgements as over TCP): no socket, no
/// descriptor per link, and nothing through Redis.
#[actix::test]
async fn messages_to_mailboxes_of_the_same_exchange_go_in_memory() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let me = exchange.register_client(None).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(exchange.register_client(None).await.unwrap());
    }
    let mut inboxes = futures::future::try_join_all(ids.iter().map(|id| exchange.get_mailbox(id))).await.unwrap();
    let port = inboxes[0].address().unwrap().port();
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    for id in &ids {
        exchange.send(ping(&me, id)).await.unwrap();
    }
    for inbox in &mut inboxes {
        inbox.recv(Some(Duration::from_secs(10))).await.unwrap();
    }
    let sockets = established().into_iter().filter(|(a, b)| a.port() == port || b.port() == port).count();
    assert_eq!(sockets, 0, "a link to this exchange's own mailbox used TCP");
    // Other tests of this binary open sockets meanwhile: a bound far below 2 per link.
    assert!(fds() < before + 100, "100 links took {} descriptors", fds().saturating_sub(before));
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut redis.client()).unwrap();
    assert!(!info.contains("cmdstat_lmove"), "messages went through Redis: {info}");
}

/// One connection per pair of processes, not per pair of mailboxes: a
/// sender that reaches 200 mailboxes of another exchange holds one TCP
/// connection to it (each mailbox is a lane of it), and every message
/// arrives directly.
#[actix::test]
async fn messages_to_many_mailboxes_of_one_process_share_one_connection() {
    let redis = RedisServer::start();
    let receiver = redis.exchange().await;
    let sender = redis.builder().namespace(receiver.namespace()).start().await.unwrap();
    let me = sender.register_client(None).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(receiver.register_client(None).await.unwrap());
    }
    let mut inboxes = futures::future::try_join_all(ids.iter().map(|id| receiver.get_mailbox(id))).await.unwrap();
    let port = inboxes[0].address().unwrap().port();
    for round in 0..2 {
        for id in &ids {
            sender.send(ping(&me, id)).await.unwrap();
        }
        for inbox in &mut inboxes {
            inbox.recv(Some(Duration::from_secs(30))).await.unwrap();
        }
        // Each connection shows twice in this process's table: both ends.
        let to_receiver = established().into_iter().filter(|(_, remote)| remote.port() == port).count();
        assert_eq!(to_receiver, 1, "round {round}: {to_receiver} connections to the receiving process");
    }
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut redis.client()).unwrap();
    assert!(!info.contains("cmdstat_lmove"), "messages went through Redis: {info}");
}

/// A connection carries lanes both ways: calls to 20 agents of another
/// process and their answers all travel on one connection, which the caller
/// dialed (the host sends its answers on it rather than dialing back).
#[actix::test]
async fn calls_and_their_answers_share_one_connection() {
    let redis = RedisServer::start();
    let host = redis.exchange().await;
    let caller = redis.builder().namespace(host.namespace()).start().await.unwrap();
    let mut agents = Vec::new();
    for _ in 0..20 {
        let id = host.register_agent::<Counter>(None).await.unwrap();
        agents.push(Agent::launch(Counter::default(), id, &host).await.unwrap());
    }
    let mut handles = Vec::new();
    for agent in &agents {
        handles.push(caller.get_handle(agent.id().clone()).bind_as_client(&caller).await.unwrap());
    }
    let listening = |exchange: &Exchange| {
        let exchange = exchange.clone();
        async move {
            let probe = exchange.register_client(None).await.unwrap();
            let inbox = exchange.get_mailbox(&probe).await.unwrap();
            (inbox.address().unwrap().port(), inbox)
        }
    };
    let ((host_port, _host_probe), (caller_port, _caller_probe)) = (listening(&host).await, listening(&caller).await);
    let ports = [host_port, caller_port];
    for round in 1..=2 {
        for handle in &handles {
            assert_eq!(handle.action(Increment(1)).await.unwrap(), round);
        }
    }
    // One connection shows twice in this process's table (both ends); count
    // the ends whose remote is a listener.
    let dialed = established().into_iter().filter(|(_, remote)| ports.contains(&remote.port())).count();
    assert_eq!(dialed, 1, "{dialed} connections between the two processes");
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut redis.client()).unwrap();
    assert!(!info.contains("cmdstat_lmove"), "messages went through Redis: {info}");
    for handle in handles {
        handle.close().await.unwrap();
    }
    for agent in agents {
        agent.shutdown().await;
    }
}

/// A mailbox that takes nothing stalls only its own lane: messages to
/// another mailbox of the same process, on the same connection, keep
/// arriving while the first one's lane is full.
#[actix::test]
async fn a_mailbox_that_takes_nothing_does_not_stall_its_neighbours() {
    let redis = RedisServer::start();
    // A stalled lane fails (to Redis) only after the peer timeout: longer
    // than the wait below, so a stall shared with the neighbour would show.
    let patient = Duration::from_secs(60);
    let receiver = redis.builder().mailbox_capacity(16).peer_timeout(patient).start().await.unwrap();
    let sender = redis.builder().namespace(receiver.namespace()).peer_timeout(patient).start().await.unwrap();
    let me = sender.register_client(None).await.unwrap();
    let (stuck, moving) =
        (receiver.register_client(None).await.unwrap(), receiver.register_client(None).await.unwrap());
    let _stuck_inbox = receiver.get_mailbox(&stuck).await.unwrap();
    let mut moving_inbox = receiver.get_mailbox(&moving).await.unwrap();
    // Far more than the stuck mailbox holds, and than a lane keeps in flight.
    for _ in 0..6000 {
        sender.send(ping(&me, &stuck)).await.unwrap();
    }
    for n in 0..200 {
        sender.send(ping(&me, &moving)).await.unwrap();
        let got = moving_inbox.recv(Some(Duration::from_secs(20))).await;
        assert!(got.is_ok(), "message {n} to the mailbox that takes: {got:?}");
    }
}

/// A mailbox with its maximum of lanes open turns a new one away
/// when it opens (with a `Closing` frame, so the caller re-routes its
/// request through Redis as never taken): the request is still run, once.
#[actix::test]
async fn a_caller_past_a_mailboxs_connection_cap_is_still_answered_once() {
    let redis = RedisServer::start();
    let host = redis.builder().max_connections(1).start().await.unwrap();
    let id = host.register_agent::<Counter>(Some("full")).await.unwrap();
    let _agent = Agent::launch(Counter::default(), id.clone(), &host).await.unwrap();
    let first = redis.builder().namespace(host.namespace()).start().await.unwrap();
    let second = redis.builder().namespace(host.namespace()).start().await.unwrap();
    let one = first.get_handle(id.clone()).bind_as_client(&first).await.unwrap();
    assert_eq!(one.action(Increment(1)).await.unwrap(), 1);
    // The first caller's link holds the one connection; the second's is turned away.
    let two = second.get_handle(id).bind_as_client(&second).await.unwrap();
    assert_eq!(two.action(Increment(1)).await.unwrap(), 2);
    assert_eq!(one.action(Increment(1)).await.unwrap(), 3);
}

/// An address left in Redis that leads to a live process which does not
/// serve the mailbox (it closed uncleanly) is not dialed for every message:
/// "not served here" is remembered for that opening a few seconds.
#[cfg(any(feature = "encryption", feature = "tls"))]
#[actix::test]
async fn a_stale_address_of_a_live_process_is_not_dialed_for_every_message() {
    let (redis, receiver, sender, me, peer, served) = one_mailbox_served_one_not().await;
    let (proxy, seen) = recording_proxy(served.address().unwrap()).await;
    let address_key = format!("{}:address:{}", receiver.namespace(), peer.base32());
    let _: () = redis.client().set(&address_key, proxy.to_string()).unwrap();
    let queue = format!("{}:queue:{}", receiver.namespace(), peer.base32());
    for n in 1..=10 {
        sender.send(ping(&me, &peer)).await.unwrap();
        wait_until(Duration::from_secs(20), "the message to be queued", || {
            redis.client().llen::<_, usize>(&queue).unwrap() == n
        })
        .await;
    }
    let seen = seen.lock().unwrap().clone();
    let hellos = seen.windows(4).filter(|w| w == b"ACAD").count();
    // One, or a few on a machine slow enough to outlast the memory.
    assert!((1..=3).contains(&hellos), "{hellos} handshakes for 10 messages to a stale address");
}
