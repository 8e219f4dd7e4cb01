//! The Redis key layout, in one place. It is the reference's, so an operator
//! can read it with `redis-cli`, plus one set per behavior name for discovery.
//!
//! | key | value |
//! |---|---|
//! | `ns:status:<b32>` | `ACTIVE` or `INACTIVE` |
//! | `ns:behavior:<b32>` | comma-joined lineage, most specific first |
//! | `ns:address:<b32>` | `host:port` of the mailbox's listener |
//! | `ns:queue:<b32>` | list of encoded envelopes, FIFO; the close sentinel marks termination |
//! | `ns:index:<behavior>` | set of `<b32>` of agents whose lineage names `<behavior>` |
//! | `ns:wake:<b32>` | private list that wakes a mailbox's watcher when it closes |
//! | `ns:owner:<b32>` | token of the exchange (process) that published the address |
//! | `ns:alive:<token>` | present while that exchange renews its lease (heartbeat) |

use std::sync::Arc;

use uuid::Uuid;

use crate::identifier::uuid_to_base32;

/// Pushed onto a queue by `terminate` to wake and stop its reader.
pub(crate) const CLOSE_SENTINEL: &[u8] = b"<CLOSED>";
pub(crate) const ACTIVE: &str = "ACTIVE";

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

    fn key(&self, kind: &str, uid: Uuid) -> String {
        format!("{}:{kind}:{}", self.namespace, uuid_to_base32(uid))
    }

    pub(crate) fn status(&self, uid: Uuid) -> String {
        self.key("status", uid)
    }

    pub(crate) fn behavior(&self, uid: Uuid) -> String {
        self.key("behavior", uid)
    }

    pub(crate) fn address(&self, uid: Uuid) -> String {
        self.key("address", uid)
    }

    pub(crate) fn queue(&self, uid: Uuid) -> String {
        self.key("queue", uid)
    }

    /// A fresh key on which a watcher also blocks, so closing can wake it.
    pub(crate) fn wake(&self) -> String {
        self.key("wake", Uuid::new_v4())
    }

    pub(crate) fn owner(&self, uid: Uuid) -> String {
        self.key("owner", uid)
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
        assert_eq!(keys.status(uid), format!("ns:status:{b32}"));
        assert_eq!(keys.behavior(uid), format!("ns:behavior:{b32}"));
        assert_eq!(keys.address(uid), format!("ns:address:{b32}"));
        assert_eq!(keys.queue(uid), format!("ns:queue:{b32}"));
        assert_eq!(keys.index("m::A"), "ns:index:m::A");
        assert!(keys.wake().starts_with("ns:wake:"));
    }
}
