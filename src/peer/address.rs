//! Where mailboxes listen, what they tell peers to dial, and where
//! connections to peers leave from.
//!
//! With nothing configured, mailboxes listen on the address this host uses
//! to reach Redis (found without sending a packet): `127.0.0.1` when Redis
//! runs on the same host, the address of the right network otherwise, so
//! every process that shares the Redis server can dial it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;

use tokio::net::{lookup_host, TcpListener, TcpSocket, TcpStream};
use tracing::debug;

use crate::error::Error;

/// What the builder was told.
#[derive(Clone, Debug, Default)]
pub(crate) struct AddressSettings {
    pub(crate) bind: Option<Bind>,
    pub(crate) advertise: Option<String>,
    pub(crate) ports: Option<RangeInclusive<u16>>,
}

/// How the listening address was chosen.
#[derive(Clone, Debug)]
pub(crate) enum Bind {
    /// An IP address, as written.
    Ip(String),
    Interface(String),
}

/// The addresses of one exchange, resolved when it starts.
#[derive(Clone, Debug)]
pub(crate) struct Addresses {
    /// What listeners bind.
    bind: IpAddr,
    /// The host peers dial: an IP address or a name.
    advertise: String,
    /// Ports listeners may take (`0..=0`: any).
    ports: RangeInclusive<u16>,
    /// Where connections to peers leave from: the bound address, when one
    /// was chosen explicitly.
    source: Option<IpAddr>,
}

impl AddressSettings {
    /// Resolves interface names, unspecified addresses and the default
    /// against `redis`, the server every peer shares.
    pub(crate) async fn resolve(self, redis: &redis::ConnectionAddr) -> Result<Addresses, Error> {
        let (bind, explicit) = match &self.bind {
            Some(Bind::Ip(ip)) => match ip.parse::<IpAddr>() {
                Ok(ip) => (ip, true),
                Err(_) => return Err(Error::Config(format!("cannot bind {ip:?}: not an IP address"))),
            },
            Some(Bind::Interface(name)) => (interface_address(name)?, true),
            None => (route_to(redis).await, false),
        };
        let advertise = match self.advertise {
            Some(host) if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) => {
                return Err(Error::Config(format!(
                    "cannot advertise {host}: peers cannot dial an unspecified address"
                )));
            }
            Some(host) if host.is_empty() => return Err(Error::Config("the advertised host is empty".into())),
            Some(host) => host,
            None if bind.is_unspecified() => {
                let route = route_to(redis).await;
                if route.is_unspecified() {
                    return Err(Error::Config(format!("bound to {bind}, and no address to advertise: set one")));
                }
                route.to_string()
            }
            None => bind.to_string(),
        };
        let ports = self.ports.unwrap_or(0..=0);
        if ports.is_empty() || (*ports.start() == 0 && *ports.end() != 0) {
            return Err(Error::Config(format!("the port range {ports:?} is empty or includes port 0")));
        }
        let source = (explicit && !bind.is_unspecified()).then_some(bind);
        Ok(Addresses { bind, advertise, ports, source })
    }
}

impl Addresses {
    /// Whether only this host can reach the listeners.
    pub(crate) fn loopback_only(&self) -> bool {
        self.bind.is_loopback()
    }

    /// Binds a listener (on a free port of the range) and returns it with
    /// the address to publish.
    pub(crate) async fn listen(&self) -> Result<(TcpListener, String), Error> {
        let listener = match (*self.ports.start(), *self.ports.end()) {
            (0, 0) => TcpListener::bind((self.bind, 0)).await?,
            (first, last) => {
                // Start at a random port, so processes sharing a range do not
                // all race for its first ports.
                let span = u32::from(last - first) + 1;
                let offset = rand::random::<u32>() % span;
                let mut found = None;
                for i in 0..span {
                    let port = first + ((offset + i) % span) as u16;
                    match TcpListener::bind((self.bind, port)).await {
                        Ok(listener) => {
                            found = Some(listener);
                            break;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                found.ok_or_else(|| Error::Config(format!("no free port in {first}-{last} on {}", self.bind)))?
            }
        };
        let port = listener.local_addr()?.port();
        let published = match self.advertise.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port).to_string(),
            Err(_) => format!("{}:{port}", self.advertise),
        };
        Ok((listener, published))
    }

    /// Connects to a peer's published `address`, from the bound address if
    /// one was chosen.
    pub(crate) async fn dial(&self, address: &str) -> std::io::Result<TcpStream> {
        let Some(source) = self.source else {
            return TcpStream::connect(address).await;
        };
        let mut last = None;
        for target in lookup_host(address).await? {
            let socket = match target {
                SocketAddr::V4(_) if source.is_ipv4() => TcpSocket::new_v4()?,
                SocketAddr::V6(_) if source.is_ipv6() => TcpSocket::new_v6()?,
                _ => continue,
            };
            socket.bind(SocketAddr::new(source, 0))?;
            match socket.connect(target).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e),
            // No address of the source's family: let the system choose.
            None => TcpStream::connect(address).await,
        }
    }
}

impl fmt::Display for Addresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listening on {}, advertised as {}", self.bind, self.advertise)
    }
}

/// The first address of network interface `name` (IPv4 first).
fn interface_address(name: &str) -> Result<IpAddr, Error> {
    let interfaces = if_addrs::get_if_addrs().map_err(|e| Error::Config(format!("listing interfaces: {e}")))?;
    let mine: Vec<IpAddr> = interfaces.iter().filter(|i| i.name == name).map(|i| i.ip()).collect();
    if let Some(ip) = mine.iter().find(|ip| ip.is_ipv4()).or(mine.first()) {
        return Ok(*ip);
    }
    let mut names: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    Err(Error::Config(format!("no network interface named {name:?} with an address (there are: {})", names.join(", "))))
}

/// The local address this host would use to reach `redis` (a UDP socket
/// connected to it: the kernel picks the route, no packet is sent);
/// `127.0.0.1` for a Unix socket or when nothing resolves.
async fn route_to(redis: &redis::ConnectionAddr) -> IpAddr {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (host, port) = match redis {
        redis::ConnectionAddr::Tcp(host, port) => (host.as_str(), *port),
        redis::ConnectionAddr::TcpTls { host, port, .. } => (host.as_str(), *port),
        _ => return loopback,
    };
    let route = async {
        let target = lookup_host((host, port)).await?.next().ok_or(std::io::ErrorKind::NotFound)?;
        let unspecified: IpAddr = if target.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { [0u16; 8].into() };
        let socket = std::net::UdpSocket::bind((unspecified, 0))?;
        socket.connect(target)?;
        Ok::<_, std::io::Error>(socket.local_addr()?.ip())
    };
    route.await.unwrap_or_else(|e| {
        debug!("no route to Redis at {host}:{port} ({e}): listening on {loopback}");
        loopback
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_at(host: &str) -> redis::ConnectionAddr {
        redis::ConnectionAddr::Tcp(host.into(), 6379)
    }

    #[tokio::test]
    async fn by_default_mailboxes_listen_where_redis_is_reached() {
        let resolved = AddressSettings::default().resolve(&redis_at("127.0.0.1")).await.unwrap();
        assert_eq!((resolved.bind.to_string(), resolved.advertise.as_str()), ("127.0.0.1".into(), "127.0.0.1"));
        assert_eq!(resolved.source, None);
        let resolved = AddressSettings::default().resolve(&redis_at("127.0.0.7")).await.unwrap();
        assert!(resolved.bind.is_loopback());
    }

    #[tokio::test]
    async fn an_unspecified_bind_advertises_a_dialable_address_and_never_publishes_itself() {
        let settings = AddressSettings { bind: Some(Bind::Ip("0.0.0.0".into())), ..Default::default() };
        let resolved = settings.resolve(&redis_at("127.0.0.1")).await.unwrap();
        assert_eq!(resolved.advertise, "127.0.0.1");
        assert_eq!(resolved.source, None);
        let (_listener, published) = resolved.listen().await.unwrap();
        assert!(published.starts_with("127.0.0.1:"), "{published}");
        for host in ["0.0.0.0", "::", ""] {
            let settings = AddressSettings { advertise: Some(host.into()), ..Default::default() };
            assert!(matches!(settings.resolve(&redis_at("127.0.0.1")).await, Err(Error::Config(_))), "{host:?}");
        }
    }

    #[tokio::test]
    async fn interfaces_resolve_by_name_and_unknown_ones_are_named_in_the_error() {
        let settings = AddressSettings { bind: Some(Bind::Interface("lo".into())), ..Default::default() };
        let resolved = settings.resolve(&redis_at("127.0.0.1")).await.unwrap();
        assert!(resolved.bind.is_loopback());
        let settings = AddressSettings { bind: Some(Bind::Interface("nope0".into())), ..Default::default() };
        let Err(Error::Config(message)) = settings.resolve(&redis_at("127.0.0.1")).await else {
            panic!("an unknown interface must be a configuration error");
        };
        assert!(message.contains("nope0") && message.contains("lo"), "{message}");
    }

    #[tokio::test]
    async fn listeners_take_a_free_port_of_the_range_and_say_when_there_is_none() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let settings = AddressSettings { ports: Some(port..=port), ..Default::default() };
        let resolved = settings.resolve(&redis_at("127.0.0.1")).await.unwrap();
        assert!(matches!(resolved.listen().await, Err(Error::Config(_))));
        drop(taken);
        let (listener, published) = resolved.listen().await.unwrap();
        assert_eq!(listener.local_addr().unwrap().port(), port);
        assert_eq!(published, format!("127.0.0.1:{port}"));
    }
}
