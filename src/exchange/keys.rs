//! The Redis key layout, in one place. It is the reference's, so an operator
//! can read it with `redis-cli`, plus one set per behavior name for discovery.
//!
//! | key | value |
//! |---|---|
//! | `ns:status:<b32>` | `ACTIVE` or `INACTIVE` |
//! | `ns:behavior:<b32>` | comma-joined lineage, most specific first |
//! | `ns:name:<b32>` | the name an agent was registered with, if any |
//! | `ns:address:<b32>` | `host:port` of the mailbox's listener |
//! | `ns:queue:<b32>` | list of sealed entries (see `seal.rs`), FIFO |
//! | `ns:taken:<b32>:<opening>` | entries an opening of the mailbox popped and its consumer has not yet taken |
//! | `ns:taker:<b32>` | hash: the mailbox's current opening, its process token, how much of its taken list is acknowledged |
//! | `ns:index:<behavior>` | set of `<b32>` of agents whose lineage names `<behavior>` |
//! | `ns:owner:<b32>` | token of the exchange (process) the entity belongs to: where it was registered, then where its mailbox was last opened |
//! | `ns:alive:<token>` | present while that exchange renews its lease (heartbeat) |
//! | `ns:bell:<token>` | `<b32>` of that exchange's queues that became non-empty (its watcher blocks on it) |
//!
//! An entity whose owner's lease is gone is INACTIVE; the first script that
//! notices sets its keys to expire (the exchange's `expiry`), and a
//! terminated entity's keys expire the same way.

use std::sync::Arc;

use uuid::Uuid;

use crate::identifier::uuid_to_base32;

/// Builds the keys of one namespace.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    namespace: Arc<str>,
}

impl Keys {
    pub(crate) fn new(namespace: &str) -> Self {
        Self { namespace: namespace.into() }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `ns:<kind>:<b32>`.
    pub(crate) fn key(&self, kind: &str, uid: Uuid) -> String {
        format!("{}:{kind}:{}", self.namespace, uuid_to_base32(uid))
    }

    pub(crate) fn status(&self, uid: Uuid) -> String {
        self.key("status", uid)
    }

    pub(crate) fn queue(&self, uid: Uuid) -> String {
        self.key("queue", uid)
    }

    /// The taken list of one opening of `uid`'s mailbox.
    pub(crate) fn taken(&self, uid: Uuid, opening: Uuid) -> String {
        format!("{}:{opening}", self.key("taken", uid))
    }

    pub(crate) fn taker(&self, uid: Uuid) -> String {
        self.key("taker", uid)
    }

    /// The doorbell of the exchange whose token this is.
    pub(crate) fn bell(&self, token: &str) -> String {
        format!("{}:bell:{token}", self.namespace)
    }

    pub(crate) fn alive(&self, token: &str) -> String {
        format!("{}:alive:{token}", self.namespace)
    }

    pub(crate) fn index(&self, behavior: &str) -> String {
        format!("{}:index:{behavior}", self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_namespace_and_base32_id() {
        let keys = Keys::new("ns");
        let uid = Uuid::new_v4();
        let b32 = uuid_to_base32(uid);
        assert_eq!(keys.index("m::A"), "ns:index:m::A");
        assert_eq!(keys.taken(uid, Uuid::nil()), format!("ns:taken:{b32}:{}", Uuid::nil()));
        assert_eq!(keys.bell("T"), "ns:bell:T");
    }
}
