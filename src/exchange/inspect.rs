//! What an operator sees: every mailbox of a namespace with its state, and
//! what waits in a queue, read without taking anything.

use uuid::Uuid;

use super::actor::{Request, INSPECT};
use super::{HybridExchange, MailboxStatus, Unsealed};
use crate::error::Error;
use crate::identifier::{base32_to_uuid, EntityId, Role};
use crate::message::Envelope;

/// One mailbox of the namespace, as [`Exchange::mailboxes`](super::Exchange::mailboxes) lists it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MailboxInfo {
    /// Its id, with the name it was registered with.
    pub id: EntityId,
    /// Its lineage, most specific first: the behavior is the first (empty
    /// for a client).
    pub lineage: Vec<String>,
    /// Its state.
    pub status: MailboxStatus,
    /// The address its mailbox listens on, while it does.
    pub address: Option<String>,
    /// Whether the process that owns it renews its lease (`None`: no owner
    /// recorded, as for a terminated mailbox).
    pub owner_alive: Option<bool>,
    /// Messages waiting in its Redis queue.
    pub queued: u64,
}

/// One entry of a queue, read by [`Exchange::peek`](super::Exchange::peek).
#[derive(Clone, Debug)]
pub enum Peeked {
    /// A message this exchange's secret opens.
    Message(Box<Envelope>),
    /// An entry that is not: unsealed, sealed with another secret, or
    /// undecodable; the reason.
    Unreadable(String),
}

impl HybridExchange {
    /// Every mailbox of this namespace (registered, not yet expired), in
    /// no particular order. It scans the namespace's status keys, then
    /// reads each entity in one script: an operator's view, not for hot
    /// paths.
    pub(crate) async fn mailboxes(&self) -> Result<Vec<MailboxInfo>, Error> {
        let pattern = format!("{}:status:*", self.namespace());
        let prefix_len = pattern.len() - 1;
        let mut cursor = 0u64;
        let mut ids = Vec::new();
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
            let (next, keys): (u64, Vec<String>) = self.call(Request::Cmd(scan)).await?;
            ids.extend(keys.into_iter().map(|key| key[prefix_len..].to_owned()));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        ids.sort();
        ids.dedup();
        let reads = ids.into_iter().map(|base32| async move {
            let script = self.entity(&INSPECT, &base32);
            let read: (String, String, String, String, String, String, u64) =
                self.call(Request::Script(script)).await?;
            Ok::<_, Error>((base32, read))
        });
        let mut found = Vec::new();
        for result in futures::future::join_all(reads).await {
            let (base32, (state, _owner, living, address, lineage, name, queued)) = result?;
            let status = MailboxStatus::from_state(&state)?;
            if status == MailboxStatus::Missing {
                continue; // expired between the scan and the read
            }
            let lineage: Vec<String> = lineage.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
            let role = if lineage.is_empty() { Role::Client } else { Role::Agent };
            let name = Some(name.as_str()).filter(|name| !name.is_empty());
            found.push(MailboxInfo {
                id: EntityId::from_parts(base32_to_uuid(&base32)?, role, name),
                lineage,
                status,
                address: Some(address).filter(|a| !a.is_empty()),
                owner_alive: match living.as_str() {
                    "1" => Some(true),
                    "0" => Some(false),
                    _ => None,
                },
                queued,
            });
        }
        Ok(found)
    }

    /// The first `count` entries of `id`'s Redis queue, oldest first,
    /// opened and decoded, without taking them: they stay for the mailbox.
    pub(crate) async fn peek(&self, id: Uuid, count: usize) -> Result<Vec<Peeked>, Error> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut range = redis::cmd("LRANGE");
        range.arg(self.keys().queue(id)).arg(0).arg(count as i64 - 1);
        let entries: Vec<Vec<u8>> = self.call(Request::Cmd(range)).await?;
        let seal = &self.config().link.seal;
        Ok(entries
            .into_iter()
            .map(|raw| match seal.open(id, &bytes::Bytes::from(raw)) {
                Err(Unsealed::Missing) => Peeked::Unreadable("an unsealed entry (not written by an exchange)".into()),
                Err(Unsealed::Forged) => Peeked::Unreadable("a forged entry (another secret, or tampered with)".into()),
                Ok(entry) => match Envelope::decode_entry(entry) {
                    Ok(entry) => Peeked::Message(Box::new(entry.envelope)),
                    Err(e) => Peeked::Unreadable(format!("an undecodable entry: {e}")),
                },
            })
            .collect())
    }
}

/// An operator's view of the namespace (what `academy ls` and `academy
/// peek` show), on an exchange in the native protocol.
impl super::Exchange {
    /// Every mailbox of this namespace (registered, not yet expired), in
    /// no particular order: a scan of the namespace, not for hot paths.
    /// [`Error::Config`] on a local or Academy 1.0 exchange.
    pub async fn mailboxes(&self) -> Result<Vec<MailboxInfo>, Error> {
        self.inspected()?.mailboxes().await
    }

    /// The first `count` entries of `id`'s Redis queue, oldest first,
    /// opened and decoded, without taking them.
    /// [`Error::Config`] on a local or Academy 1.0 exchange.
    pub async fn peek(&self, id: Uuid, count: usize) -> Result<Vec<Peeked>, Error> {
        self.inspected()?.peek(id, count).await
    }

    fn inspected(&self) -> Result<&HybridExchange, Error> {
        self.as_hybrid()
            .ok_or_else(|| Error::Config("only an exchange in the native protocol on Redis can be inspected".into()))
    }
}
