//! The one listener of an exchange: every peer connection to any of its
//! mailboxes comes in on it. The handshake names the destination; a
//! connection for a mailbox this process serves goes, authenticated, to that
//! mailbox, and one for any other is refused
//! ([`Rejection::Destination`](crate::error::Rejection::Destination)), so a
//! stale address never reaches the wrong mailbox. A process therefore holds
//! one listening socket and one port, however many agents it hosts.
//!
//! Handshakes are bounded in number (past the bound a connection is closed
//! at once, unread) and in time, so idle or slow connections cannot lock
//! others out.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::warn;
use uuid::Uuid;

use super::{PeerRead, PeerWrite, Security};
use crate::error::Error;

/// An authenticated connection for one mailbox.
pub(crate) struct Connection {
    pub(crate) read: PeerRead,
    pub(crate) write: PeerWrite,
    /// Who connected.
    pub(crate) peer: SocketAddr,
}

/// Where the connections for one mailbox go.
pub(crate) type Connections = futures::channel::mpsc::UnboundedSender<Connection>;

/// Where a listener sends what it accepts.
pub(crate) trait Routes: Send + Sync + 'static {
    /// The mailbox that takes connections for `dest`, if this process
    /// serves it.
    fn route(&self, dest: Uuid) -> Option<Connections>;
    /// A connection refused before it reached a mailbox.
    fn refused(&self, peer: SocketAddr, error: Error);
}

/// How many handshakes may be under way at once, and for how long each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) handshakes: usize,
    pub(crate) handshake_time: Duration,
}

/// Accepts connections on `listener` for the mailboxes `routes` knows, until
/// `routes` is gone.
pub(crate) async fn serve<R: Routes>(listener: TcpListener, security: Security, limits: Limits, routes: Weak<R>) {
    let handshakes = Arc::new(Semaphore::new(limits.handshakes));
    loop {
        let accepted = listener.accept().await;
        let Some(live) = routes.upgrade() else { return };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            live.refused(peer, Error::Peer("this process has its maximum of handshakes under way"));
            continue;
        };
        drop(live);
        let (security, routes) = (security.clone(), routes.clone());
        tokio::spawn(async move {
            let serves = |dest| routes.upgrade().is_some_and(|routes| routes.route(dest).is_some());
            let limit = limits.handshake_time;
            let accepted = match tokio::time::timeout(limit, security.accept(stream, serves)).await {
                Ok(accepted) => accepted,
                Err(_) => Err(Error::Timeout(limit)),
            };
            drop(permit);
            let Some(routes) = routes.upgrade() else { return };
            match accepted {
                // A mailbox that closed meanwhile is not there: the connection
                // closes unacknowledged and the sender re-routes.
                Ok((dest, read, write)) => {
                    if let Some(mailbox) = routes.route(dest) {
                        let _ = mailbox.unbounded_send(Connection { read, write, peer });
                    }
                }
                Err(e) => routes.refused(peer, e),
            }
        });
    }
}
