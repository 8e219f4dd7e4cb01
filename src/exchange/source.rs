//! Where an exchange finds its Redis: one server at a URL, or the master
//! that a set of Sentinels names (`redis+sentinel://`), asked again after a
//! failure so that the exchange follows a failover.

use std::sync::Arc;

use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

use crate::error::Error;

/// How long the Sentinels get to name the master.
const ASK_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The Redis an exchange uses.
#[derive(Clone)]
pub(crate) enum Source {
    /// One server.
    Server(Box<redis::Client>),
    /// The master of a service that Sentinels watch.
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Server(client) => write!(f, "Server({})", client.get_connection_info().addr()),
            Source::Sentinel(_) => f.write_str("Sentinel"),
        }
    }
}

impl Source {
    /// The Sentinels (and the service) a `redis+sentinel://` URL names:
    /// `redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]`,
    /// the credentials and database being the master's. `None` for any
    /// other URL.
    pub(crate) fn sentinels(url: &str) -> Option<Result<Self, Error>> {
        let rest = url.strip_prefix("redis+sentinel://")?;
        Some(parse(rest).map(|client| Source::Sentinel(Arc::new(tokio::sync::Mutex::new(client)))))
    }

    /// The server to talk to now: the one server, or the master the
    /// Sentinels name at this moment.
    pub(crate) async fn client(&self) -> Result<redis::Client, Error> {
        match self {
            Source::Server(client) => Ok((**client).clone()),
            Source::Sentinel(sentinels) => {
                // A Sentinel that does not answer (its host is gone) must
                // not hold up the exchange.
                let ask = async { sentinels.lock().await.async_get_client().await };
                match tokio::time::timeout(ASK_WITHIN, ask).await {
                    Ok(client) => Ok(client?),
                    Err(_) => Err(Error::Timeout(ASK_WITHIN)),
                }
            }
        }
    }

    /// Whether the server can change under the exchange (a failover).
    pub(crate) fn follows_failovers(&self) -> bool {
        matches!(self, Source::Sentinel(_))
    }
}

fn parse(rest: &str) -> Result<SentinelClient, Error> {
    let bad = |why: &str| {
        Error::Config(format!(
            "a redis+sentinel:// URL {why}: redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]"
        ))
    };
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((credentials, rest)) => (Some(credentials), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').ok_or_else(|| bad("names no service"))?;
    let (service, db) = match path.split_once('/') {
        Some((service, db)) => (service, db.parse::<i64>().map_err(|_| bad("has a database that is not a number"))?),
        None => (path, 0),
    };
    if service.is_empty() || hosts.is_empty() {
        return Err(bad("names no service or no Sentinel"));
    }
    let sentinels: Vec<String> = hosts.split(',').map(|host| format!("redis://{host}")).collect();
    let mut node = redis::RedisConnectionInfo::default().set_db(db);
    if let Some((user, password)) = credentials.map(|c| c.split_once(':').unwrap_or(("", c))) {
        if !user.is_empty() {
            node = node.set_username(user);
        }
        node = node.set_password(password);
    }
    let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(node);
    let service: String = service.into();
    Ok(SentinelClient::build(sentinels, service, Some(node), SentinelServerType::Master)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_their_sentinels_and_service_or_are_refused() {
        assert!(Source::sentinels("redis://127.0.0.1:6379").is_none());
        assert!(Source::sentinels("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/2").unwrap().is_ok());
        assert!(Source::sentinels("redis+sentinel://:pw@127.0.0.1:26379/mymaster").unwrap().is_ok());
        for bad in ["redis+sentinel://127.0.0.1:26379", "redis+sentinel://127.0.0.1:26379/", "redis+sentinel:///m"] {
            assert!(matches!(Source::sentinels(bad), Some(Err(Error::Config(_)))), "{bad}");
        }
    }
}
