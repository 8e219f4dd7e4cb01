//! Test support: a private `redis-server` per test, on a free loopback port,
//! killed when dropped; and small helpers shared by the test files.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_academy::{Exchange, ExchangeBuilder};

/// A `redis-server` child process that keeps nothing on disk (or, started
/// [`persistent`](Self::start_persistent), an append-only file).
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// The directory of its append-only file, if it keeps one.
    aof: Option<std::path::PathBuf>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// With an append-only file fsynced on every write
    /// (`--appendonly yes --appendfsync always`): a restart keeps what it
    /// acknowledged.
    pub fn start_persistent() -> Self {
        let dir = std::env::temp_dir().join(format!("academy-aof-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_with(Some(dir))
    }

    fn start_with(aof: Option<std::path::PathBuf>) -> Self {
        for _ in 0..20 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut server = Self { child: None, port, aof: aof.clone() };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server: is it installed?");
    }

    fn spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
        match &self.aof {
            Some(dir) => command.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"]).arg(dir),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command
            .args(["--daemonize", "no"])
            .args(["--loglevel", "warning", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port: empty, unless persistent.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server did not restart on port {}", self.port);
    }

    /// A plain synchronous client, to look at the keys as an operator would.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }

    /// An exchange builder on this server, in a fresh namespace.
    pub fn builder(&self) -> ExchangeBuilder {
        Exchange::builder(self.url()).random_namespace().secret("test secret")
    }

    pub async fn exchange(&self) -> Exchange {
        self.builder().start().await.expect("exchange starts")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.aof {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(Instant::now().elapsed().as_nanos() as u64);
    hasher.finish()
}

/// Waits until `n` clients are blocked in Redis (watchers parked in `BLPOP`).
pub async fn wait_for_blocked_clients(redis: &RedisServer, n: usize) {
    for _ in 0..500 {
        let info: String = redis::cmd("INFO").arg("clients").query(&mut redis.client()).unwrap();
        let blocked =
            info.lines().find_map(|l| l.strip_prefix("blocked_clients:")).and_then(|v| v.trim().parse::<usize>().ok());
        if blocked == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} clients never blocked");
}

/// A `MakeWriter` that keeps everything logged, for assertions.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Captures this thread's logs (an actix test runs on one thread) at
    /// `level` and above until the guard drops.
    pub fn install(&self, level: tracing::Level) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(level)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

/// Logs to the test's captured output; `RUST_LOG` filters.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

macro_rules! empty_behavior {
    ($($name:ident),*) => {$(
        pub struct $name;
        impl actix::Actor for $name {
            type Context = actix::Context<Self>;
        }
    )*};
}
empty_behavior!(A, B, C);
actix_academy::behavior!(A { actions: [] });
actix_academy::behavior!(B { actions: [] });
// Declares B in its lineage, like a Python subclass of B.
actix_academy::behavior!(C { actions: [], implements: [B] });

/// The behaviors the agent tests call.
/// Skips the calling test, saying so: on stderr, and in
/// `target/tmp/skipped-tests.txt`, which `.ci/run` lists. Under CI (`CI`
/// set) nothing may skip: it panics instead.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test} cannot run here, and CI skips nothing: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    note_skipped(test, why);
}

/// Records a skipped test in `target/tmp/skipped-tests.txt` (listed by `.ci/run`).
pub fn note_skipped(test: &str, why: &str) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt");
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        use std::io::Write;
        let _ = writeln!(file, "{} {test}: {why}", env!("CARGO_CRATE_NAME"));
    }
}

pub mod agents {
    use actix::prelude::*;
    use actix_academy::{AgentContext, UnboundRemoteHandle};
    use serde::{Deserialize, Serialize};
    use std::time::Duration;

    #[derive(Default)]
    pub struct Counter {
        pub count: i64,
    }
    impl Actor for Counter {
        type Context = Context<Self>;
    }

    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "i64")]
    pub struct Increment(pub i64);
    impl Handler<Increment> for Counter {
        type Result = i64;
        fn handle(&mut self, m: Increment, _: &mut Context<Self>) -> i64 {
            self.count += m.0;
            self.count
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub enum CounterError {
        DivideByZero,
    }

    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "Result<i64, CounterError>")]
    pub struct Divide(pub i64);
    impl Handler<Divide> for Counter {
        type Result = Result<i64, CounterError>;
        fn handle(&mut self, m: Divide, _: &mut Context<Self>) -> Self::Result {
            if m.0 == 0 {
                return Err(CounterError::DivideByZero);
            }
            self.count /= m.0;
            Ok(self.count)
        }
    }

    /// Sleeps (without blocking the thread) for the given milliseconds.
    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "u64")]
    pub struct Sleep(pub u64);
    impl Handler<Sleep> for Counter {
        type Result = ResponseFuture<u64>;
        fn handle(&mut self, m: Sleep, _: &mut Context<Self>) -> Self::Result {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(m.0)).await;
                m.0
            })
        }
    }

    /// Stops the actor on its own, as a crash of the behavior would.
    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "()")]
    pub struct Crash;
    impl Handler<Crash> for Counter {
        type Result = ();
        fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }

    /// Never answers (a handler stuck forever, unless cancelled).
    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "()")]
    pub struct Hang;
    impl Handler<Hang> for Counter {
        type Result = ResponseFuture<()>;
        fn handle(&mut self, _: Hang, _: &mut Context<Self>) -> Self::Result {
            Box::pin(futures::future::pending())
        }
    }

    actix_academy::behavior!(Counter { actions: [Increment, Divide, Sleep, Crash, Hang] });

    /// Forwards increments to a counter it is handed.
    pub struct Relay {
        pub agent: AgentContext<Relay>,
    }
    impl Actor for Relay {
        type Context = Context<Self>;
    }

    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "Result<i64, String>")]
    pub struct Forward {
        pub to: UnboundRemoteHandle<Counter>,
        pub n: i64,
    }
    impl Handler<Forward> for Relay {
        type Result = ResponseFuture<Result<i64, String>>;
        fn handle(&mut self, m: Forward, _: &mut Context<Self>) -> Self::Result {
            let counter = self.agent.bind(m.to);
            Box::pin(async move { counter.action(Increment(m.n)).await.map_err(|e| e.to_string()) })
        }
    }

    actix_academy::behavior!(Relay { actions: [Forward] });
}

/// A hand-rolled peer: the client side of the handshake, written from the
/// protocol description, so the tests check the wire format itself.
pub mod raw {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use uuid::Uuid;

    fn proof(secret: &[u8], side: &[u8], dest: Uuid, client: &[u8], server: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        for part in [side, dest.as_bytes(), client, server] {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// Connects and authenticates (a session names no mailbox: the nil
    /// UUID), then opens lane 1 to mailbox `dest`; fails if the server does
    /// not answer the handshake properly.
    pub async fn connect(address: std::net::SocketAddr, secret: &[u8], dest: Uuid) -> std::io::Result<TcpStream> {
        let mut stream = TcpStream::connect(address).await?;
        let nonce = [7u8; 16];
        let session = Uuid::nil();
        // Magic, version 7, protection 0 (plain), the nil UUID, nonce.
        let mut hello = b"ACAD\x07\x00".to_vec();
        hello.extend_from_slice(session.as_bytes());
        hello.extend_from_slice(&nonce);
        stream.write_all(&hello).await?;
        // Magic, version, status 0 (accepted), nonce, proof.
        let mut reply = [0u8; 54];
        stream.read_exact(&mut reply).await?;
        let server_nonce = &reply[6..22];
        if &reply[..6] != b"ACAD\x07\x00" || reply[22..] != proof(secret, b"server", session, &nonce, server_nonce)[..]
        {
            return Err(std::io::Error::other("the server's proof is wrong"));
        }
        stream.write_all(&proof(secret, b"client", session, &nonce, server_nonce)).await?;
        stream.write_all(&header(4, 1, 16)).await?;
        stream.write_all(dest.as_bytes()).await?;
        Ok(stream)
    }

    /// A frame header: payload length (4 bytes, big-endian), kind, lane (4 bytes, big-endian).
    pub fn header(kind: u8, lane: u32, len: usize) -> Vec<u8> {
        let mut out = (len as u32).to_be_bytes().to_vec();
        out.push(kind);
        out.extend_from_slice(&lane.to_be_bytes());
        out
    }

    /// `entry` sealed for the queue of `dest`, as an exchange with `secret`
    /// seals what it pushes: `0xC3`, keyed BLAKE3 of the destination's UUID
    /// and the entry, the entry.
    pub fn seal(secret: &[u8], dest: Uuid, entry: &[u8]) -> Vec<u8> {
        let key = blake3::derive_key("actix-academy queue entry 1", secret);
        let mut hasher = blake3::Hasher::new_keyed(&key);
        hasher.update(dest.as_bytes());
        hasher.update(entry);
        let mut out = vec![0xC3];
        out.extend_from_slice(hasher.finalize().as_bytes());
        out.extend_from_slice(entry);
        out
    }

    /// A message frame on lane 1: header (kind 0), payload.
    pub fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = header(0, 1, payload.len());
        out.extend_from_slice(payload);
        out
    }

    /// True once the server has closed the connection (EOF or reset) or
    /// lane 1 (a `Closing` or `Refused` frame); acknowledgements and
    /// keepalives it sends meanwhile are skipped.
    pub async fn closed_by_server(stream: &mut TcpStream, within: std::time::Duration) -> bool {
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
            while got.len() >= 9 {
                let len = u32::from_be_bytes([got[0], got[1], got[2], got[3]]) as usize;
                if got.len() < 9 + len {
                    break;
                }
                if matches!(got[4], 3 | 5) && got[5..9] == 1u32.to_be_bytes() {
                    return true;
                }
                got.drain(..9 + len);
            }
        }
    }
}
