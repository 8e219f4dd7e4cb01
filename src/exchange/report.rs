//! What went wrong with peers and queue entries, told to an operator
//! without drowning the log: a misconfigured peer once, at error level; a
//! flood of bad connections or entries as one summary line a minute; every
//! case counted in [`Rejections`].

use std::collections::HashSet;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, error, warn};

/// How often a flood is summarised.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// Peers remembered as reported (past that, reports start over).
const MAX_NAMED: usize = 4096;

/// Counts of what an exchange refused or was refused since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejections {
    /// Connections to peers that refused this process: another secret,
    /// protocol version, encryption setting, or a stale address.
    pub refused_by_peers: u64,
    /// Connections from peers this process refused, for the same reasons.
    pub peers_refused: u64,
    /// Inbound connections that were not academy peers, hung up or stalled
    /// during the handshake, sent a bad frame, or went silent.
    pub bad_connections: u64,
    /// Entries taken from Redis queues and dropped: unsealed or forged
    /// (another secret, tampering), over the size cap, or undecodable.
    pub dropped_entries: u64,
}

/// What a flood is made of.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bad {
    Connection,
    Entry,
}

/// The reports of one exchange, shared by its links and mailboxes.
#[derive(Debug, Default)]
pub(crate) struct Reports {
    refused_by_peers: AtomicU64,
    peers_refused: AtomicU64,
    bad_connections: AtomicU64,
    dropped_entries: AtomicU64,
    /// Peers already reported as misconfigured.
    named: Mutex<HashSet<String>>,
    /// Per kind of flood: events since the last summary, and when that was.
    floods: Mutex<[(u64, Option<Instant>); 2]>,
}

impl Reports {
    /// A peer and this process refused each other: reported once per peer.
    pub(crate) fn rejected(&self, peer: &str, inbound: bool, what: impl Display) {
        let counter = if inbound { &self.peers_refused } else { &self.refused_by_peers };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        if named.len() >= MAX_NAMED {
            named.clear();
        }
        let key = format!("{}{peer}", if inbound { "<" } else { ">" });
        if !named.insert(key) {
            return debug!(%peer, "peer refused again: {what}");
        }
        match inbound {
            true => {
                error!(%peer, "refused a peer: {what}; check that every process shares the secret, version and encryption setting")
            }
            false => error!(%peer, "a peer refused this process: {what}; messages to it go through Redis"),
        }
    }

    /// A bad connection or entry: counted, and summarised once a minute.
    pub(crate) fn bad(&self, kind: Bad, what: impl Display) {
        let counter = match kind {
            Bad::Connection => &self.bad_connections,
            Bad::Entry => &self.dropped_entries,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut floods = self.floods.lock().unwrap_or_else(|e| e.into_inner());
        let (count, last) = &mut floods[kind as usize];
        *count += 1;
        if last.is_some_and(|at| at.elapsed() < SUMMARY_EVERY) {
            return debug!("{what}");
        }
        let n = std::mem::take(count);
        *last = Some(Instant::now());
        match kind {
            Bad::Connection => {
                warn!(count = n, "bad peer connections closed (latest: {what}); more are summarised each minute")
            }
            Bad::Entry => error!(count = n, "queue entries dropped (latest: {what}); more are summarised each minute"),
        }
    }

    /// The counts so far.
    pub(crate) fn snapshot(&self) -> Rejections {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Rejections {
            refused_by_peers: load(&self.refused_by_peers),
            peers_refused: load(&self.peers_refused),
            bad_connections: load(&self.bad_connections),
            dropped_entries: load(&self.dropped_entries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_counted_every_time_and_floods_too() {
        let reports = Reports::default();
        for _ in 0..3 {
            reports.rejected("127.0.0.2", true, "secret");
        }
        reports.rejected("127.0.0.2:4000", false, "secret");
        for _ in 0..1000 {
            reports.bad(Bad::Connection, "garbage");
        }
        reports.bad(Bad::Entry, "forged");
        let counts = reports.snapshot();
        assert_eq!(
            counts,
            Rejections { refused_by_peers: 1, peers_refused: 3, bad_connections: 1000, dropped_entries: 1 }
        );
        assert_eq!(reports.named.lock().unwrap().len(), 2);
    }
}
