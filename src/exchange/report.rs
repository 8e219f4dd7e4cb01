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

fn summarise(kind: Bad, flood: &mut Flood) {
    let (count, latest) = (std::mem::take(&mut flood.unreported), std::mem::take(&mut flood.latest));
    flood.reported_at = Some(Instant::now());
    match kind {
        Bad::Connection => warn!(count, "bad peer connections closed (latest: {latest}); summarised each minute"),
        Bad::Entry => error!(count, "queue entries dropped (latest: {latest}); summarised each minute"),
        Bad::Link => warn!(
            count,
            "peer links failed, their messages re-routed through Redis (latest: {latest}); summarised each minute"
        ),
        Bad::Background => warn!(
            count,
            "messages sent in the background (replies, cancels) could not be delivered (latest: {latest}); \
             summarised each minute"
        ),
    }
}

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
    /// Links to peers that failed (refused or timed-out connection, reset,
    /// silent peer): their messages went through Redis instead.
    pub failed_links: u64,
}

/// What a flood is made of.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bad {
    /// An inbound connection closed: garbage, a hang-up, silence.
    Connection,
    /// A queue entry dropped.
    Entry,
    /// An outbound link that failed (its messages went through Redis).
    Link,
    /// A message sent in the background (a reply, a cancel) that could not
    /// be delivered: its destination is gone or inactive.
    Background,
}

/// The reports of one exchange, shared by its links and mailboxes.
#[derive(Debug, Default)]
struct Flood {
    unreported: u64,
    reported_at: Option<Instant>,
    latest: String,
}

#[derive(Debug, Default)]
pub(crate) struct Reports {
    refused_by_peers: AtomicU64,
    peers_refused: AtomicU64,
    bad_connections: AtomicU64,
    dropped_entries: AtomicU64,
    failed_links: AtomicU64,
    undelivered: AtomicU64,
    /// Peers already reported as misconfigured.
    named: Mutex<HashSet<String>>,
    /// Per kind of flood: events since the last summary, when that was,
    /// and the latest event.
    floods: Mutex<[Flood; 4]>,
}

impl Reports {
    /// A peer and this process refused each other: reported once per peer
    /// host and cause (past [`MAX_NAMED`] of them, summarised instead).
    pub(crate) fn rejected(&self, host: &str, inbound: bool, what: impl Display) {
        let counter = if inbound { &self.peers_refused } else { &self.refused_by_peers };
        counter.fetch_add(1, Ordering::Relaxed);
        let direction = if inbound { "inbound" } else { "outbound" };
        metrics::counter!("academy_handshake_rejections_total", "direction" => direction).increment(1);
        let key = format!("{}{host} {what}", if inbound { "<" } else { ">" });
        let first = {
            let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
            if named.len() >= MAX_NAMED && !named.contains(&key) {
                drop(named);
                return self.flood(Bad::Connection, format_args!("peer {host} refused: {what}"));
            }
            named.insert(key)
        };
        match (first, inbound) {
            (false, _) => debug!(peer = %host, "peer refused again: {what}"),
            (true, true) => {
                error!(peer = %host, "refused a peer: {what}; every process must share the secret, version and encryption setting")
            }
            (true, false) => {
                error!(peer = %host, "could not connect to a peer: {what}; messages to it go through Redis")
            }
        }
    }

    /// A bad connection, entry or link: counted, and summarised once a minute.
    pub(crate) fn bad(&self, kind: Bad, what: impl Display) {
        let counter = match kind {
            Bad::Connection => &self.bad_connections,
            Bad::Entry => &self.dropped_entries,
            Bad::Link => &self.failed_links,
            Bad::Background => &self.undelivered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match kind {
            Bad::Connection => metrics::counter!("academy_bad_connections_total").increment(1),
            Bad::Entry => metrics::counter!("academy_dropped_entries_total").increment(1),
            // Counted by cause where the link fails.
            Bad::Link => {}
            Bad::Background => metrics::counter!("academy_background_undelivered_total").increment(1),
        }
        self.flood(kind, what);
    }

    fn flood(&self, kind: Bad, what: impl Display) {
        let mut floods = self.floods.lock().unwrap_or_else(|e| e.into_inner());
        let flood = &mut floods[kind as usize];
        flood.unreported += 1;
        flood.latest = what.to_string();
        if flood.reported_at.is_some_and(|at| at.elapsed() < SUMMARY_EVERY) {
            return debug!("{what}");
        }
        summarise(kind, flood);
    }

    /// Summarises what came in since the last summary, if a minute has
    /// passed (called periodically, so the end of a burst is told too).
    pub(crate) fn flush(&self) {
        let mut floods = self.floods.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, flood) in
            [Bad::Connection, Bad::Entry, Bad::Link, Bad::Background].into_iter().zip(floods.iter_mut())
        {
            if flood.unreported > 0 && flood.reported_at.is_none_or(|at| at.elapsed() >= SUMMARY_EVERY) {
                summarise(kind, flood);
            }
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
            failed_links: load(&self.failed_links),
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
        let expected = Rejections {
            refused_by_peers: 1,
            peers_refused: 3,
            bad_connections: 1000,
            dropped_entries: 1,
            failed_links: 0,
        };
        assert_eq!(counts, expected);
        assert_eq!(reports.named.lock().unwrap().len(), 2);
    }
}
