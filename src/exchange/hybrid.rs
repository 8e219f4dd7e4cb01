//! The hybrid exchange: Redis holds each mailbox's state, address, lineage and
//! offline queue; messages go peer to peer over TCP when the receiver listens.
//!
//! The Redis connection belongs to an actor behind `HybridExchange`;
//! outbound links are tasks it tracks. The routing of a message lives in one
//! function, `HybridExchange::send`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr};
use redis::aio::ConnectionManagerConfig;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use uuid::Uuid;

use super::actor::{
    self, Call, ExchangeActor, Failover, Lease, Request, ACK, CLOSE, DISCARD, DISCOVER, DISOWNED, FAILED, OPEN,
    PUSH_FRONT, REASSERT, REGISTER, STATUS, TERMINATE,
};
use super::keys::Keys;
use super::link::{enqueue, forget_refusals, refused_recently, Enqueued, Link, LinkEnv, Links, Ring};
use super::source::Source;
use super::watcher::Watcher;
use super::{
    reserve_opening, Bad, Exchange, MailboxStatus, Protocol, Rejections, Reports, Seal, TakenAcks, WhenInactive,
};
use crate::error::Error;
use crate::identifier::{base32_to_uuid, uuid_to_base32, EntityId, Role};
use crate::message::{Body, Envelope, Parts, RemoteError, RemoteErrorKind, Stamp};
use crate::peer::{
    AddressSettings, Bind, Lanes, Limits, Protection, Routes, Secret, Security, Sessions, DEFAULT_MAX_FRAME_LEN,
};

/// Destinations whose stream an exchange remembers; past that it starts
/// new streams for all (a bound on memory, at no cost to correctness).
const MAX_STREAMS: usize = 65_536;
/// How long a reply sent in the background waits for a lost Redis.
const BACKGROUND_PATIENCE: Duration = Duration::from_secs(10);
/// The least time a peer gets to finish its handshake.
const HANDSHAKE_TIME: Duration = Duration::from_secs(5);

/// Environment variable read for the peer secret when none is configured.
pub const SECRET_ENV: &str = "ACADEMY_SECRET";

/// Configures and starts an [`Exchange`] on Redis (peer-to-peer TCP
/// links beside it, in the native protocol): [`Exchange::builder`].
///
/// ```no_run
/// # async fn demo() -> Result<(), actix_academy::Error> {
/// use actix_academy::Exchange;
/// let exchange = Exchange::builder("redis://127.0.0.1:6379")
///     .namespace("demo")
///     .secret("shared secret")
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct ExchangeBuilder {
    url: RedisUrl,
    namespace: Option<String>,
    addresses: AddressSettings,
    secret: Option<Secret>,
    protection: Protection,
    /// PEM root certificates that Redis's TLS certificate must chain to.
    #[cfg(feature = "tls")]
    redis_root_certificates: Option<Vec<u8>>,
    /// Certificates for TLS on peer links.
    #[cfg(feature = "tls")]
    tls_files: Option<crate::peer::TlsFiles>,
    connect_timeout: Duration,
    peer_timeout: Duration,
    max_frame_len: usize,
    mailbox_capacity: usize,
    max_connections: usize,
    peer_to_peer: bool,
    /// `None`: the protocol's default (10 s; Academy 1.0's 30 s).
    heartbeat: Option<Duration>,
    expiry: Duration,
    protocol: Protocol,
    /// The options set that only this crate's own protocol can honour
    /// (peer links and their security), refused in Academy 1.0 mode.
    native_only: Vec<&'static str>,
}

impl ExchangeBuilder {
    /// Redis key namespace (default `default`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// A fresh random namespace, as the reference does for `namespace=None`.
    pub fn random_namespace(mut self) -> Self {
        self.namespace = Some(uuid_to_base32(uuid::Uuid::new_v4()));
        self
    }

    /// The IP address the exchange's one listener (which serves all its
    /// mailboxes) binds (`0.0.0.0` for every interface).
    /// By default, the address this host uses to reach Redis: `127.0.0.1`
    /// when Redis runs on the same host. Connections to peers leave from it
    /// too, unless it is unspecified.
    pub fn bind(mut self, ip: impl Into<String>) -> Self {
        self.native_only.push("bind");
        self.addresses.bind = Some(Bind::Ip(ip.into()));
        self
    }

    /// Listen on (and advertise) the address of network interface `name`,
    /// such as `eth0`, as Python Academy's `interface=` does.
    pub fn interface(mut self, name: impl Into<String>) -> Self {
        self.native_only.push("interface");
        self.addresses.bind = Some(Bind::Interface(name.into()));
        self
    }

    /// The host name or IP address peers dial to reach this process's
    /// mailboxes, when it differs from the bound one (behind NAT, in a
    /// container): by default the bound address, or for `0.0.0.0` the
    /// address this host uses to reach Redis. The port is the listener's
    /// own, so forward the same port. An unspecified address is refused.
    pub fn advertise(mut self, host: impl Into<String>) -> Self {
        self.native_only.push("advertise");
        self.addresses.advertise = Some(host.into());
        self
    }

    /// Ports the exchange may listen on, for firewalls: its one listener,
    /// which serves every mailbox it opens, takes a free one of the range
    /// (default: any port).
    pub fn ports(mut self, ports: std::ops::RangeInclusive<u16>) -> Self {
        self.native_only.push("ports");
        self.addresses.ports = Some(ports);
        self
    }

    /// Encrypt peer links (the `encryption` feature): after the handshake,
    /// a Noise session keyed from the shared secret (no certificates)
    /// encrypts and authenticates every byte, with fresh keys per
    /// connection. Every process of a deployment must choose the same;
    /// a peer that does not is refused, and its messages go through Redis.
    /// Needs a secret. Replaces `tls_certificates`.
    #[cfg(feature = "encryption")]
    pub fn encrypt(mut self, encrypt: bool) -> Self {
        if encrypt {
            self.native_only.push("encrypt");
        }
        self.protection = if encrypt { Protection::Noise } else { Protection::Plain };
        self
    }

    /// Shared secret that peers prove they know before any message is read.
    /// Defaults to the `ACADEMY_SECRET` environment variable, else empty.
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        if !secret.as_ref().is_empty() {
            self.native_only.push("secret");
        }
        self.secret = Some(Secret::new(secret.as_ref()));
        self
    }

    /// Longest wait to connect to a peer (and to Redis) before falling back (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a peer with unacknowledged messages may stay silent before
    /// its link is declared dead and the messages go to Redis (default 10 s).
    pub fn peer_timeout(mut self, timeout: Duration) -> Self {
        self.native_only.push("peer_timeout");
        self.peer_timeout = timeout.max(Duration::from_millis(30));
        self
    }

    /// Largest message this exchange sends and its mailboxes accept
    /// (default 64 MiB, at most 4 GiB); a larger `send` fails with
    /// [`Error::TooLarge`].
    pub fn max_frame_len(mut self, len: usize) -> Self {
        self.native_only.push("max_frame_len");
        self.max_frame_len = len.min(u32::MAX as usize);
        self
    }

    /// Messages a mailbox holds before it stops reading (default 10,000).
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = capacity.max(1);
        self
    }

    /// Whether the exchange listens for peers (default `true`). With `false`,
    /// every message goes through the Redis queues: for networks where peers
    /// cannot reach each other, and to measure the Redis path.
    pub fn peer_to_peer(mut self, enabled: bool) -> Self {
        self.peer_to_peer = enabled;
        self
    }

    /// How often this exchange renews its lease in Redis (default 10 s;
    /// with [`Protocol::Academy1`], how often it writes its entities'
    /// heartbeats, default 30 s as in Python). If the process dies, its
    /// entities are inactive once three periods pass without renewal, so
    /// senders queue in Redis instead of trying a dead peer.
    pub fn heartbeat(mut self, period: Duration) -> Self {
        self.heartbeat = Some(period.max(Duration::from_millis(10)));
        self
    }

    /// Which protocol to speak (default: this crate's own,
    /// [`Protocol::Native`]). [`Protocol::Academy1`] joins a Python Academy
    /// 1.0 deployment: its Redis keys, its JSON messages, Redis queues only
    /// (no peer links, no secret: see [`Protocol::Academy1`]).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// How long Redis keeps an entity that is gone (default 24 h): one
    /// terminated, or one whose process stopped renewing its lease (an
    /// INACTIVE entity). Its status, lineage and queue expire after this,
    /// counted from when an exchange first noticed; opening its mailbox
    /// again (or registering it again) before then keeps everything.
    pub fn expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry.max(Duration::from_millis(100));
        self
    }

    /// For `rediss://` URLs (the `tls` feature): trust only these PEM root
    /// certificates (your own CA) for Redis's certificate, instead of the
    /// public web roots.
    #[cfg(feature = "tls")]
    pub fn redis_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.redis_root_certificates = Some(pem.into());
        self
    }

    /// TLS on peer links with certificates, for a PKI (the `tls` feature):
    /// this process's certificate chain and private key, and the CA whose
    /// certificates peers must present (mutual TLS; a mailbox's certificate
    /// must name the host it advertises). Every process must choose the
    /// same; a peer that does not is refused. Still needs the shared secret,
    /// which guards the Redis path. Replaces `encrypt`.
    #[cfg(feature = "tls")]
    pub fn tls_certificates(
        mut self,
        chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
        ca_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.native_only.push("tls_certificates");
        self.protection = Protection::Tls;
        let files = crate::peer::TlsFiles { chain: chain_pem.into(), key: key_pem.into(), ca: ca_pem.into() };
        self.tls_files = Some(files);
        self
    }

    /// Concurrent inbound connections one mailbox accepts, and handshakes
    /// the exchange's listener runs at once (default 1,024 each).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.native_only.push("max_connections");
        self.max_connections = max;
        self
    }

    /// Connects to Redis and starts the exchange actor on the current arbiter.
    pub async fn start(self) -> Result<Exchange, Error> {
        let source = match Source::sentinels(&self.url.0) {
            Some(_) if self.protocol == Protocol::Academy1 => {
                return Err(Error::Config("Academy 1.0 mode takes one Redis server, not Sentinels".into()));
            }
            Some(sentinels) => sentinels?,
            None => Source::Server(Box::new(self.redis_client()?)),
        };
        let client = source.client().await.map_err(|e| match e {
            Error::Redis(source) => Error::RedisUnreachable { url: self.url.redacted(), source },
            e => e,
        })?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_max_delay(Duration::from_secs(2))
            // Fail fast when Redis is unreachable; later commands reconnect again.
            .set_number_of_retries(2);
        if self.protocol == Protocol::Academy1 && !self.native_only.is_empty() {
            return Err(Error::Config(format!(
                "Academy 1.0 mode has no peer links, no secret and no encryption (academy-py has none), so it \
                 cannot honour {}: remove them, or use Protocol::Native",
                self.native_only.iter().map(|name| format!("`.{name}(..)`")).collect::<Vec<_>>().join(", ")
            )));
        }
        let redis = client
            .get_connection_manager_with_config(manager.clone())
            .await
            .map_err(|source| Error::RedisUnreachable { url: self.url.redacted(), source })?;
        if self.protocol == Protocol::Academy1 {
            if std::env::var_os(SECRET_ENV).is_some() {
                warn!("{SECRET_ENV} is set, but Academy 1.0 mode authenticates nothing (academy-py has no secret)");
            }
            let settings = super::academy::Settings {
                namespace: self.namespace.unwrap_or_else(|| "default".to_owned()),
                heartbeat: self.heartbeat.unwrap_or(super::academy::DEFAULT_HEARTBEAT),
                expiry: self.expiry,
                mailbox_capacity: self.mailbox_capacity,
            };
            return Ok(super::AcademyExchange::start(client, redis, settings).into());
        }
        let secret = self
            .secret
            .or_else(|| std::env::var(SECRET_ENV).ok().map(|s| Secret::new(s.as_bytes())))
            .unwrap_or_default();
        if self.protection != Protection::Plain && secret.is_empty() {
            return Err(Error::Config("encrypted peer links need a shared secret".into()));
        }
        #[allow(unused_mut)]
        let mut security = Security::new(secret.clone(), self.protection);
        #[cfg(feature = "tls")]
        if let (Protection::Tls, Some(files)) = (self.protection, &self.tls_files) {
            security.tls = Some(crate::peer::PeerTls::new(files)?);
        }
        let addresses = self.addresses.resolve(client.get_connection_info().addr()).await?;
        debug!("peer addresses: {addresses}");
        if secret.is_empty() && self.peer_to_peer && !addresses.loopback_only() {
            return Err(Error::Config(format!(
                "mailboxes would be reachable from other hosts ({addresses}) with no secret, so anyone could \
                 send to them: set the same secret on every process (`.secret(..)` or {SECRET_ENV}), or \
                 `.bind(\"127.0.0.1\")` to stay on this host"
            )));
        }
        let listener = match self.peer_to_peer {
            true => {
                let (listener, published) = addresses.listen().await?;
                Some((listener.local_addr()?, published, listener))
            }
            false => None,
        };
        let namespace = self.namespace.unwrap_or_else(|| "default".to_owned());
        let keys = Keys::new(&namespace);
        let token = uuid_to_base32(Uuid::new_v4());
        let lease = Lease { key: keys.alive(&token), period: self.heartbeat.unwrap_or(Duration::from_secs(10)) };
        let mut first = redis.clone();
        lease.renewal().query_async::<()>(&mut first).await?;
        // Notified when Redis may have lost this exchange's state: the
        // watcher reconnected, or the lease was found missing.
        let lost_state = Arc::new(tokio::sync::Notify::new());
        let failover = source.follows_failovers().then(|| Failover {
            source: source.clone(),
            config: manager,
            master: client.get_connection_info().addr().to_string(),
            looking: false,
        });
        let actor = ExchangeActor::new(redis, lease.clone(), lost_state.clone(), failover).start();
        let watcher = Watcher::start(source, keys.clone(), keys.bell(&token), actor.clone(), lost_state.clone());
        let links = Arc::new(Mutex::new(HashMap::new()));
        let limits =
            Limits { handshakes: self.max_connections, handshake_time: self.connect_timeout.max(HANDSHAKE_TIME) };
        let own = listener.as_ref().map(|(local, published, _)| (*local, published.clone()));
        let timeouts = (self.connect_timeout, self.peer_timeout);
        let sessions = Arc::new(Sessions::new(security.clone(), addresses, timeouts, own, self.max_frame_len));
        let env = Arc::new(LinkEnv {
            refused: Mutex::default(),
            refusals: tokio::sync::watch::Sender::new(0),
            seal: Seal::new(&secret),
            reports: Reports::default(),
            sessions,
            expiry: self.expiry,
            keys: keys.clone(),
            actor: actor.clone(),
            links: Arc::downgrade(&links),
        });
        let exchange = HybridExchange {
            inner: Arc::new(Inner {
                actor,
                keys,
                config: Config {
                    mailbox_capacity: self.mailbox_capacity,
                    max_connections: self.max_connections,
                    link: env,
                },
                links,
                listener_task: std::sync::OnceLock::new(),
                token,
                sequences: Mutex::default(),
                lease,
                watcher,
                owned: Mutex::default(),
                serving: Mutex::default(),
                tasks: TaskTracker::new(),
                background: TaskTracker::new(),
                closed: AtomicBool::new(false),
            }),
        };
        let routes: std::sync::Weak<dyn Routes> = Arc::downgrade(&exchange.inner) as _;
        let _ = exchange.inner.config.link.sessions.local.set(routes);
        if let Some((_, _, listener)) = listener {
            let sessions = exchange.inner.config.link.sessions.clone();
            let serve = crate::peer::serve(listener, security, limits, Arc::downgrade(&exchange.inner), sessions);
            let _ = exchange.inner.listener_task.set(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(serve)));
        }
        tokio::spawn(maintain(Arc::downgrade(&exchange.inner), lost_state));
        Ok(Exchange::from(exchange))
    }
}

impl ExchangeBuilder {
    #[cfg(feature = "tls")]
    fn redis_client(&self) -> Result<redis::Client, Error> {
        // rustls needs one cryptography provider for the process; a
        // provider installed by the application first is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(match &self.redis_root_certificates {
            Some(pem) => redis::Client::build_with_tls(
                self.url.0.as_str(),
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
            )?,
            None => redis::Client::open(self.url.0.as_str())?,
        })
    }

    #[cfg(not(feature = "tls"))]
    fn redis_client(&self) -> Result<redis::Client, Error> {
        Ok(redis::Client::open(self.url.0.as_str())?)
    }
}

/// A Redis URL whose `Debug` form hides the password.
struct RedisUrl(String);

impl RedisUrl {
    /// The URL with any password or user name in it hidden.
    fn redacted(&self) -> String {
        let url = &self.0;
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => format!("{}<redacted>{}", &url[..scheme + 3], &url[at..]),
            _ => url.clone(),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// Settings shared by the exchange, its mailboxes and its links.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) mailbox_capacity: usize,
    pub(crate) max_connections: usize,
    pub(crate) link: Arc<LinkEnv>,
}

struct Inner {
    actor: Addr<ExchangeActor>,
    keys: Keys,
    config: Config,
    links: Arc<Links>,
    /// Accepts peer connections for every open mailbox; stops with the exchange.
    listener_task: std::sync::OnceLock<tokio_util::task::AbortOnDropHandle<()>>,
    /// Pops the queues of all this exchange's open mailboxes.
    watcher: Watcher,
    /// Names this exchange (process) as the owner of what it registers and serves.
    token: String,
    /// Per destination, the stream that stamps what this exchange sends it
    /// and the last number used, so that a mailbox drops a copy it took
    /// already. An entry forgotten (terminated, or too many) starts a new
    /// stream next time, never a reused number.
    sequences: Mutex<HashMap<Uuid, Stamp>>,
    lease: Lease,
    /// Entities registered through this exchange that it still owns (no
    /// other process opened their mailbox, nobody terminated them).
    owned: Mutex<HashMap<Uuid, (EntityId, Vec<String>)>>,
    /// This exchange's open mailboxes.
    serving: Mutex<HashMap<Uuid, Serving>>,
    /// Link tasks.
    tasks: TaskTracker,
    /// Work done in the background (an agent's replies, a dropped mailbox
    /// handing back what it held), which `close` awaits.
    background: TaskTracker,
    closed: AtomicBool,
}

/// One open mailbox of this exchange.
#[derive(Clone)]
struct Serving {
    /// Its published address ('' for none).
    address: String,
    /// Names this opening in Redis (`ns:taker:<id>`).
    opening: Uuid,
    /// Its acknowledgements (none while the opening is being made).
    acks: Option<Arc<TakenAcks>>,
    /// Takes the lanes peer sessions open to it.
    inbound: Option<Lanes>,
}

/// Sessions hand each lane to the mailbox it names.
impl Routes for Inner {
    fn route(&self, dest: Uuid) -> Option<Lanes> {
        let serving = lock(&self.serving);
        serving.get(&dest).and_then(|serving| serving.inbound.clone()).filter(|mailbox| !mailbox.is_closed())
    }

    fn refused(&self, peer: std::net::SocketAddr, error: Error) {
        let reports = &self.config.link.reports;
        match error {
            // A sender with a stale address (the mailbox closed, or moved): it re-routes.
            Error::Rejected(crate::error::Rejection::Destination) => debug!("peer {peer}: {error}"),
            Error::Rejected(_) => reports.rejected(&peer.ip().to_string(), true, error),
            error => reports.bad(Bad::Connection, format_args!("peer {peer}: {error}")),
        }
    }
}

/// The hybrid exchange (Redis + peer-to-peer TCP); clones share one Redis
/// connection and one set of peer links. Used through [`Exchange`].
#[derive(Clone)]
pub(crate) struct HybridExchange {
    inner: Arc<Inner>,
}

impl fmt::Debug for HybridExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HybridExchange").field("namespace", &self.namespace()).finish_non_exhaustive()
    }
}

impl Exchange {
    /// Starts configuring an exchange on the Redis server at `url`
    /// (`redis://[:password@]host:port[/db]`; `rediss://` with the `tls` feature),
    /// or on the master that Redis Sentinels name
    /// (`redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]`,
    /// the credentials and database being the master's), followed across a
    /// failover. [`Exchange::local`] makes one that lives in this process only.
    pub fn builder(url: impl Into<String>) -> ExchangeBuilder {
        ExchangeBuilder {
            url: RedisUrl(url.into()),
            namespace: None,
            addresses: AddressSettings::default(),
            secret: None,
            protection: Protection::Plain,
            #[cfg(feature = "tls")]
            redis_root_certificates: None,
            #[cfg(feature = "tls")]
            tls_files: None,
            connect_timeout: Duration::from_secs(1),
            peer_timeout: Duration::from_secs(10),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            mailbox_capacity: 10_000,
            max_connections: 1024,
            peer_to_peer: true,
            heartbeat: None,
            expiry: Duration::from_secs(24 * 3600),
            protocol: Protocol::Native,
            native_only: Vec::new(),
        }
    }
}

impl HybridExchange {
    pub(crate) fn namespace(&self) -> &str {
        self.inner.keys.namespace()
    }

    /// What this exchange refused or was refused since it started (also
    /// reported in the log: misconfigured peers once each, floods of bad
    /// connections or queue entries once a minute).
    pub(crate) fn rejections(&self) -> Rejections {
        self.inner.config.link.reports.snapshot()
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) async fn call<T: redis::FromRedisValue + Send + 'static>(&self, request: Request) -> Result<T, Error> {
        self.inner.actor.send(Call::new(request)).await.map_err(|_| Error::ExchangeClosed)?
    }

    async fn cmd<T: redis::FromRedisValue + Send + 'static>(&self, cmd: &mut redis::Cmd) -> Result<T, Error> {
        self.call(Request::Cmd(std::mem::take(cmd))).await
    }

    /// An entity script with its common arguments: namespace, expiry, id.
    pub(crate) fn entity(&self, script: &'static redis::Script, id: &str) -> redis::ScriptInvocation<'static> {
        let mut invocation = script.prepare_invoke();
        invocation.arg(self.namespace()).arg(self.inner.config.link.expiry.as_millis() as u64).arg(id);
        invocation
    }

    /// Registers `id` as ACTIVE, owned by this process (unless a live one
    /// serves it); an agent's lineage is stored and indexed.
    pub(crate) async fn register(&self, id: &EntityId, lineage: &[&str]) -> Result<(), Error> {
        let lineage: Vec<String> = match id.role() {
            Role::Agent => lineage.iter().map(|name| name.to_string()).collect(),
            Role::Client => Vec::new(),
        };
        let mut script = self.entity(&REGISTER, &id.base32());
        script.arg(&self.inner.token).arg(lineage.join(",")).arg(id.name().unwrap_or(""));
        self.call::<i64>(Request::Script(script)).await?;
        lock(&self.inner.owned).insert(id.uid(), (id.clone(), lineage));
        Ok(())
    }

    /// Writes again what this exchange owns and serves, after Redis lost it
    /// (a restart without persistence, or a lease that lapsed while this
    /// process stalled). Terminated ids stay so, and an entity another live
    /// process serves is left to it (and forgotten here).
    pub(crate) async fn reassert(&self) -> Result<(), Error> {
        let mut entities: HashMap<Uuid, (String, String, String)> = lock(&self.inner.owned)
            .iter()
            .map(|(uid, (id, lineage))| (*uid, (id.base32(), lineage.join(","), id.name().unwrap_or("").to_owned())))
            .collect();
        let serving = lock(&self.inner.serving).clone();
        for uid in serving.keys() {
            entities.entry(*uid).or_insert_with(|| (uuid_to_base32(*uid), String::new(), String::new()));
        }
        self.call::<()>(Request::Cmd(self.inner.lease.renewal())).await?;
        // One script per entity, all in flight at once on the one connection.
        let scripts = entities.into_iter().map(|(uid, (base32, lineage, name))| {
            let mut script = self.entity(&REASSERT, &base32);
            // What the watcher moved before Redis lost the taken list counts
            // as acknowledged.
            let (address, opening, moved) = match serving.get(&uid) {
                Some(Serving { address, opening, acks: Some(acks), .. }) => {
                    (address.as_str(), opening.to_string(), acks.positions_moved())
                }
                _ => ("", String::new(), 0),
            };
            script.arg(&self.inner.token).arg(lineage).arg(address).arg(opening).arg(moved).arg(name);
            async move { self.call::<i64>(Request::Script(script)).await.map(|kept| (uid, kept)) }
        });
        let results = futures::future::try_join_all(scripts).await?;
        let gone: std::collections::HashSet<Uuid> =
            results.into_iter().filter(|(_, kept)| *kept != 1).map(|(uid, _)| uid).collect();
        lock(&self.inner.owned).retain(|uid, _| !gone.contains(uid));
        // Terminated, or opened elsewhere meanwhile: a mailbox of it open
        // here looks at once, and ends.
        let serving = lock(&self.inner.serving);
        for uid in gone.iter().filter(|uid| serving.contains_key(uid)) {
            self.inner.watcher.look(*uid);
        }
        drop(serving);
        warn!(namespace = self.namespace(), "re-registered this exchange's entities after Redis lost them");
        Ok(())
    }

    /// Forgets the registered entities another process has taken over or
    /// terminated, so a later re-registration does not revive them.
    async fn forget_disowned(&self) -> Result<(), Error> {
        let ids: Vec<String> = {
            let serving = lock(&self.inner.serving);
            lock(&self.inner.owned)
                .keys()
                .filter(|uid| !serving.contains_key(uid))
                .map(|uid| uuid_to_base32(*uid))
                .collect()
        };
        if ids.is_empty() {
            return Ok(());
        }
        // The id slot holds this exchange's token.
        let mut script = self.entity(&DISOWNED, &self.inner.token);
        for id in &ids {
            script.arg(id);
        }
        let gone: Vec<String> = self.call(Request::Script(script)).await?;
        let mut owned = lock(&self.inner.owned);
        for id in gone {
            owned.remove(&base32_to_uuid(&id)?);
        }
        Ok(())
    }

    /// Forgets an entity terminated elsewhere: it is not re-registered.
    pub(crate) fn disown(&self, id: &EntityId) {
        lock(&self.inner.owned).remove(&id.uid());
    }

    pub(crate) async fn terminate(&self, id: &EntityId) -> Result<(), Error> {
        let script = self.entity(&TERMINATE, &id.base32());
        self.call::<i64>(Request::Script(script)).await?;
        // A mailbox of it open here ends without waiting for the ring.
        if lock(&self.inner.serving).contains_key(&id.uid()) {
            self.inner.watcher.look(id.uid());
        }
        lock(&self.inner.owned).remove(&id.uid());
        lock(&self.inner.sequences).remove(&id.uid());
        let link = self.inner.links.lock().unwrap_or_else(|e| e.into_inner()).remove(&id.uid());
        drop(link);
        debug!(entity = %id, "terminated");
        Ok(())
    }

    /// The name `id` was registered with, if any.
    pub(crate) async fn registered_name(&self, id: &EntityId) -> Result<Option<String>, Error> {
        self.cmd(redis::cmd("GET").arg(self.keys().key("name", id.uid()))).await
    }

    /// Marks `id`, whose agent failed here, inactive at once (see [`FAILED`]).
    pub(crate) async fn mark_failed(&self, id: &EntityId) -> Result<(), Error> {
        let mut script = self.entity(&FAILED, &id.base32());
        script.arg(&self.inner.token);
        self.call::<i64>(Request::Script(script)).await?;
        lock(&self.inner.owned).remove(&id.uid());
        Ok(())
    }

    pub(crate) async fn status(&self, id: &EntityId) -> Result<MailboxStatus, Error> {
        let status: String = self.call(Request::Script(self.entity(&STATUS, &id.base32()))).await?;
        MailboxStatus::from_state(&status)
    }

    /// Discovery through the behavior's index set: O(members), not a scan.
    pub(crate) async fn discover_by_name(
        &self,
        behavior: &str,
        allow_subclasses: bool,
        include_inactive: bool,
    ) -> Result<Vec<EntityId>, Error> {
        let flag = |yes: bool| if yes { "1" } else { "0" };
        let (mut cursor, mut found, mut met) = ("0".to_owned(), Vec::new(), std::collections::HashSet::new());
        loop {
            let mut script = self.entity(&DISCOVER, behavior);
            script.key(self.keys().index(behavior)).arg(flag(!allow_subclasses)).arg(flag(include_inactive));
            script.arg(&cursor).arg(DISCOVER_STEP);
            let step: Vec<String> = self.call(Request::Script(script)).await?;
            let Some((next, pairs)) = step.split_first() else {
                return Err(Error::UnexpectedReply("an empty discovery step".into()));
            };
            for pair in pairs.chunks_exact(2) {
                let uid = base32_to_uuid(&pair[0])?;
                // A scan may meet a member twice.
                if met.insert(uid) {
                    let name = Some(pair[1].as_str()).filter(|name| !name.is_empty());
                    found.push(EntityId::from_parts(uid, Role::Agent, name));
                }
            }
            if next == "0" {
                return Ok(found);
            }
            cursor = next.clone();
        }
    }

    /// Where this exchange's listener is bound, and the address peers dial
    /// (none without peer-to-peer).
    pub(crate) fn listening(&self) -> Option<(std::net::SocketAddr, &str)> {
        self.inner.config.link.sessions.own.as_ref().map(|(local, published)| (*local, published.as_str()))
    }

    /// Opens `id`'s mailbox in Redis: this process owns it and (with an
    /// `inbound`) publishes this exchange's address for it, peer
    /// connections for it going to `inbound`; entries an earlier opening
    /// popped and did not hand back (it crashed, or is being taken over) are
    /// back in the queue. An earlier opening in this process is first given
    /// [`REOPEN_WAIT`](super::REOPEN_WAIT) to finish closing, else
    /// [`Error::MailboxInUse`]; one in another process is taken over.
    /// Returns the opening's id, its acknowledgements, and whether its
    /// queue holds anything.
    pub(crate) async fn open_mailbox(
        &self,
        id: &EntityId,
        inbound: Option<Lanes>,
    ) -> Result<(Uuid, Arc<TakenAcks>, bool), Error> {
        let opening = Uuid::new_v4();
        let address = self.listening().filter(|_| inbound.is_some()).map(|(_, published)| published);
        let reserved = || Serving { address: String::new(), opening, acks: None, inbound: inbound.clone() };
        reserve_opening(&self.inner.serving, id, reserved).await?;
        let mut script = self.entity(&OPEN, &id.base32());
        script.arg(&self.inner.token).arg(address.unwrap_or("")).arg(opening.to_string());
        let refused = match self.call::<i64>(Request::Script(script)).await {
            Ok(-1) => Error::BadEntityId(id.clone()),
            Ok(-2) => Error::MailboxClosed(id.clone()),
            Err(e) => e,
            Ok(queued) => {
                let acks = TakenAcks::start(self.clone(), id.clone(), opening);
                let address = address.unwrap_or("").to_owned();
                let serving = Serving { address, opening, acks: Some(acks.clone()), inbound };
                lock(&self.inner.serving).insert(id.uid(), serving);
                return Ok((opening, acks, queued > 0));
            }
        };
        self.release(id, opening);
        Err(refused)
    }

    /// Stops handing peer lanes to `id`'s opening `opening` (it is
    /// closing): lanes opened to it are refused from now on.
    pub(crate) fn stop_routing(&self, id: &EntityId, opening: Uuid) {
        if let Some(serving) = lock(&self.inner.serving).get_mut(&id.uid()).filter(|s| s.opening == opening) {
            serving.inbound = None;
        }
        // This process's own link to it leaves the cache at once (it still
        // hands on what it holds): the next send asks Redis, and so fails
        // once the mailbox is marked inactive instead of waiting in its queue.
        lock(&self.inner.links).remove(&id.uid());
    }

    /// Frees `id`'s slot in `serving`, if `opening` still holds it.
    fn release(&self, id: &EntityId, opening: Uuid) {
        let mut serving = lock(&self.inner.serving);
        if serving.get(&id.uid()).is_some_and(|s| s.opening == opening) {
            serving.remove(&id.uid());
        }
    }

    /// Closes an opening of `id`'s mailbox in Redis: its address goes, and
    /// what it popped but did not hand out goes back to the front of the
    /// queue.
    pub(crate) async fn close_mailbox(
        &self,
        id: &EntityId,
        opening: Uuid,
        address: Option<&str>,
        acknowledged: u64,
    ) -> Result<(), Error> {
        let mut script = self.entity(&CLOSE, &id.base32());
        script.arg(opening.to_string()).arg(address.unwrap_or("")).arg(acknowledged);
        let closed = self.call::<i64>(Request::Script(script)).await.map(drop);
        self.release(id, opening);
        closed
    }

    /// Returns messages that were taken but never started to the front of
    /// `id`'s queue, keeping their order.
    pub(crate) async fn push_front(&self, id: &EntityId, envelopes: &[Envelope]) -> Result<(), Error> {
        let seal = &self.inner.config.link.seal;
        let entries = envelopes
            .iter()
            .map(|envelope| Ok(seal.seal(id.uid(), &envelope.encode_parts(None)?).concat()))
            .collect::<Result<Vec<_>, Error>>()?;
        self.push_front_raw(id, &entries).await
    }

    /// [`push_front`](Self::push_front) of queue entries as they were taken.
    pub(crate) async fn push_front_raw(&self, id: &EntityId, entries: &[bytes::Bytes]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut script = self.entity(&PUSH_FRONT, &id.base32());
        for entry in entries.iter().rev() {
            script.arg(&entry[..]);
        }
        self.call::<i64>(Request::Script(script)).await.map(drop)
    }

    /// Deletes one (undecodable) entry from the taken list of `id`'s opening.
    pub(crate) async fn discard_taken(
        &self,
        id: &EntityId,
        opening: Uuid,
        entry: Vec<u8>,
        claim: u64,
    ) -> Result<(), Error> {
        let mut script = DISCARD.prepare_invoke();
        script
            .key(self.keys().taken(id.uid(), opening))
            .key(self.keys().taker(id.uid()))
            .arg(entry)
            .arg(opening.to_string())
            .arg(claim);
        self.call::<i64>(Request::Script(script)).await.map(drop)
    }

    /// Acknowledges the first `upto` entries an opening of `id` took: its
    /// consumer has them, so a crash from now on does not re-deliver them.
    /// Idempotent (a retry trims nothing twice).
    pub(crate) async fn acknowledge_taken(&self, id: &EntityId, opening: Uuid, upto: u64) -> Result<(), Error> {
        let mut script = self.entity(&ACK, &id.base32());
        script.arg(opening.to_string()).arg(upto);
        match self.call::<i64>(Request::Script(script)).await? {
            -1 => Err(Error::MailboxInUse(id.clone())),
            -3 => Err(Error::UnexpectedReply(format!("Redis lost the opening of {id}'s mailbox; retrying"))),
            _ => Ok(()),
        }
    }

    /// Sends a message to `envelope.dest`.
    ///
    /// Route: a live link to the destination (cached) takes it at once.
    /// Otherwise one Redis round trip reads status and address together:
    /// unknown -> [`Error::BadEntityId`], terminated -> [`Error::MailboxClosed`],
    /// inactive (its process is gone) -> [`Error::Inactive`] unless
    /// `when_inactive` says to queue, listening -> a new link (connect and handshake happen in the link, which
    /// hands everything to Redis if they fail), offline -> the Redis queue.
    ///
    /// `Ok` means the message is owned by the exchange: written to Redis, or
    /// held by a link until the receiver acknowledges it (and pushed to Redis
    /// if the link fails first).
    #[tracing::instrument(name = "send", level = "trace", skip_all, fields(tag = %envelope.tag, dest = %envelope.dest))]
    pub(crate) async fn send(&self, envelope: Envelope, when_inactive: WhenInactive) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::ExchangeClosed);
        }
        let frame = self.encode(&envelope)?;
        let ring = ring_for(&envelope);
        self.route(envelope.dest, frame, when_inactive, ring).await
    }

    /// The envelope's bytes, stamped; [`Error::TooLarge`] over the frame cap.
    fn encode(&self, envelope: &Envelope) -> Result<Parts, Error> {
        let frame = envelope.encode_parts(Some(self.next_stamp(&envelope.dest)))?;
        let max = self.inner.config.link.sessions.max_frame_len;
        match frame.len() > max {
            true => Err(Error::TooLarge { len: frame.len(), max }),
            false => Ok(frame),
        }
    }

    /// Hands an encoded message to the link to `dest`, or to its queue
    /// (ringing its watcher as `ring` says).
    async fn route(
        &self,
        dest: EntityId,
        mut frame: Parts,
        when_inactive: WhenInactive,
        ring: Ring,
    ) -> Result<(), Error> {
        let direct = || metrics::counter!("academy_messages_sent_total", "path" => "direct").increment(1);
        if let Some(link) = self.link(&dest, None) {
            match link.send(frame).await {
                Ok(()) => {
                    direct();
                    return Ok(());
                }
                Err(back) => frame = back,
            }
        }
        let env = &self.inner.config.link;
        if let Enqueued::Listening(address, opening) =
            enqueue(env, &dest, std::slice::from_ref(&frame), true, when_inactive, ring).await?
        {
            // A peer that refused our handshake lately is not dialed again;
            // refusals from addresses it no longer listens at are stale.
            if !refused_recently(env, &address, &dest, opening) {
                forget_refusals(env, &dest);
                if let Some(link) = self.link(&dest, Some((address, opening))) {
                    match link.send(frame).await {
                        Ok(()) => {
                            direct();
                            return Ok(());
                        }
                        Err(back) => frame = back,
                    }
                }
            }
            enqueue(env, &dest, &[frame], false, when_inactive, ring).await?;
        }
        debug!("queued in Redis");
        metrics::counter!("academy_messages_sent_total", "path" => "queued").increment(1);
        Ok(())
    }

    /// The stamp of the next message to `dest` (numbers may be skipped).
    fn next_stamp(&self, dest: &EntityId) -> Stamp {
        let mut sequences = lock(&self.inner.sequences);
        if sequences.len() >= MAX_STREAMS && !sequences.contains_key(&dest.uid()) {
            sequences.clear();
        }
        let (stream, last) = sequences.entry(dest.uid()).or_insert_with(|| (Uuid::new_v4(), 0));
        *last += 1;
        (*stream, *last)
    }

    /// The cached link to `dest`; given an address, a new link unless the
    /// cached one already goes there.
    fn link(&self, dest: &EntityId, route: Option<(String, Option<Uuid>)>) -> Option<Arc<Link>> {
        let mut links = self.inner.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(link) = links.get(&dest.uid()) {
            if route.as_ref().is_none_or(|(a, _)| *a == link.address) {
                return Some(link.clone());
            }
        }
        let (address, opening) = route?;
        if self.inner.closed.load(Ordering::Acquire) {
            return None;
        }
        let env = self.inner.config.link.clone();
        let link = Arc::new(Link::spawn(dest.clone(), address, opening, env, &self.inner.tasks));
        links.insert(dest.uid(), link.clone());
        Some(link)
    }

    pub(crate) fn watcher(&self) -> &Watcher {
        &self.inner.watcher
    }

    /// Sends in the background; [`close`](Self::close) waits for it.
    pub(crate) fn post(&self, mut envelope: Envelope, when_inactive: WhenInactive) {
        let mut frame = self.encode(&envelope);
        // A result too large to send still answers its caller, with an error.
        if let (Err(e @ Error::TooLarge { .. }), Body::ActionResponse { action, .. }) = (&frame, &envelope.body) {
            let error =
                RemoteError { kind: RemoteErrorKind::Internal, message: format!("the result of {action}: {e}") };
            envelope.body = Body::ActionResponse { action: action.clone(), result: Err(error) };
            frame = self.encode(&envelope);
        }
        // The common case needs no task: a live link with room, and no
        // earlier post still on its way (so they keep their order).
        if let Ok(ready) = frame {
            let link = match self.inner.background.is_empty() && !self.inner.closed.load(Ordering::Acquire) {
                true => self.link(&envelope.dest, None),
                false => None,
            };
            frame = match link {
                Some(link) => match link.try_send(ready) {
                    Ok(()) => {
                        metrics::counter!("academy_messages_sent_total", "path" => "direct").increment(1);
                        return;
                    }
                    Err(back) => Ok(back),
                },
                None => Ok(ready),
            };
        }
        let exchange = self.clone();
        let ring = ring_for(&envelope);
        self.inner.background.spawn(async move {
            let dest = envelope.dest;
            let started = tokio::time::Instant::now();
            let sent = loop {
                let sent = match &frame {
                    Ok(frame) if !exchange.inner.closed.load(Ordering::Acquire) => {
                        exchange.route(dest.clone(), frame.clone(), when_inactive, ring).await
                    }
                    Ok(_) => Err(Error::ExchangeClosed),
                    Err(_) => break frame.map(drop),
                };
                // Redis lost for a moment (restarting, failing over): a
                // reply is worth waiting for, its action ran.
                match sent {
                    Err(Error::Redis(e)) if actor::server_lost(&e) && started.elapsed() < BACKGROUND_PATIENCE => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    sent => break sent,
                }
            };
            if let Err(e) = sent {
                // Expected in bursts while a caller is gone: summarised.
                exchange.inner.config.link.reports.bad(Bad::Background, format_args!("to {dest}: {e}"));
            }
        });
    }

    /// How long [`close`](Self::close) may take: background sends and the
    /// last acknowledgements each get the peer timeout, handing what is left
    /// to Redis gets 5 s.
    pub(crate) fn close_bound(&self) -> Duration {
        self.inner.config.link.sessions.peer_timeout * 2 + Duration::from_secs(5)
    }

    /// Finishes background sends, flushes every outbound link (waiting for
    /// acknowledgements, handing what is unconfirmed to Redis) and releases
    /// the Redis connection, within [`close_bound`](Self::close_bound).
    pub(crate) async fn close(&self) {
        let inner = &self.inner;
        let peer_timeout = inner.config.link.sessions.peer_timeout;
        let deadline = tokio::time::Instant::now() + self.close_bound();
        // Replies and mailbox hand-backs in flight get the peer timeout.
        inner.background.close();
        if tokio::time::timeout(peer_timeout, inner.background.wait()).await.is_err() {
            warn!("background sends did not finish within {peer_timeout:?}; closing the links meanwhile");
        }
        // Nothing is popped from Redis after this; no link is created.
        inner.watcher.stop();
        inner.closed.store(true, Ordering::Release);
        let links: Vec<_> = inner.links.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        drop(links);
        inner.tasks.close();
        if tokio::time::timeout_at(deadline, inner.tasks.wait()).await.is_err() {
            warn!("links did not finish within the close bound; messages not yet confirmed may be lost");
        }
        // Mailboxes dropped meanwhile hand back what they popped, while Redis
        // is still reachable.
        let _ = tokio::time::timeout_at(deadline, inner.background.wait()).await;
        // What this process owns is inactive from now on, and addresses it
        // still publishes are stale.
        let _ = self.cmd::<()>(redis::cmd("DEL").arg(&inner.lease.key).arg(self.keys().bell(&inner.token))).await;
        if let Some(listener) = inner.listener_task.get() {
            listener.abort();
        }
        inner.actor.do_send(actor::Stop);
        debug!(namespace = self.namespace(), "exchange closed");
    }

    /// Runs `task` in the background; [`close`](Self::close) waits for it.
    pub(crate) fn track(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.background.spawn(task);
    }
}

/// Index members one discovery step looks at (about).
const DISCOVER_STEP: usize = 1_000;

/// An answer rides with its ring: its reader needs no claim to take it.
fn ring_for(envelope: &Envelope) -> Ring {
    match envelope.body.is_request() {
        true => Ring::Plain,
        false => Ring::WithCopy,
    }
}

/// Keeps Redis right about this exchange, until it closes: each time Redis
/// may have lost its state (the watcher reconnected, or the lease was found
/// missing) it writes again what this exchange owns, retrying until that
/// succeeds; every lease period it forgets the entities other processes
/// have taken over.
async fn maintain(inner: std::sync::Weak<Inner>, lost_state: Arc<tokio::sync::Notify>) {
    let period = match inner.upgrade() {
        Some(inner) => inner.lease.period,
        None => return,
    };
    loop {
        let lost = tokio::time::timeout(period, lost_state.notified()).await.is_ok();
        let exchange = match inner.upgrade() {
            Some(inner) if !inner.closed.load(Ordering::Acquire) => HybridExchange { inner },
            _ => return,
        };
        exchange.inner.config.link.reports.flush();
        if !lost {
            if let Err(e) = exchange.forget_disowned().await {
                debug!("could not check which registrations are still this process's: {e}");
            }
            continue;
        }
        drop(exchange);
        let mut delay = Duration::from_millis(100);
        loop {
            let Some(inner) = inner.upgrade() else { return };
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            match (HybridExchange { inner }).reassert().await {
                Ok(()) => break,
                Err(e) => warn!("could not re-register after a Redis failure, retrying in {delay:?}: {e}"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
