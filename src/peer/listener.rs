//! The one listener of an exchange: every peer process's session to any of
//! its mailboxes comes in on it, and once authenticated is served by the
//! [inbound](super::inbound) side, which hands each lane to the mailbox it
//! names (and refuses a lane for any other, so a stale address never reaches
//! the wrong mailbox). A process therefore holds one listening socket and one
//! port, however many agents it hosts, and one connection per peer process.
//!
//! Handshakes are bounded in number (past the bound a connection is closed
//! at once, unread) and in time, so idle or slow connections cannot lock
//! others out.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::warn;
use uuid::Uuid;

use super::inbound::Routes;
use super::{Security, Sessions};
use crate::error::Error;

/// How many handshakes may be under way at once, and for how long each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) handshakes: usize,
    pub(crate) handshake_time: Duration,
}

/// Accepts sessions on `listener` (served by `sessions`, for the mailboxes
/// `routes` knows), until `routes` is gone.
pub(crate) async fn serve<R: Routes>(
    listener: TcpListener,
    security: Security,
    limits: Limits,
    routes: Weak<R>,
    sessions: Arc<Sessions>,
) {
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
        let (security, routes, sessions) = (security.clone(), routes.clone(), sessions.clone());
        tokio::spawn(async move {
            // A session names no mailbox at the handshake (its lanes do).
            let serves = |dest: Uuid| dest.is_nil();
            let limit = limits.handshake_time;
            let accepted = match tokio::time::timeout(limit, security.accept(stream, serves)).await {
                Ok(accepted) => accepted,
                Err(_) => Err(Error::Timeout(limit)),
            };
            drop(permit);
            match accepted {
                Ok((_, read, write)) => sessions.accept(read, write, peer).await,
                Err(e) => {
                    if let Some(routes) = routes.upgrade() {
                        routes.refused(peer, e);
                    }
                }
            }
        });
    }
}
