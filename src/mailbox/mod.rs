//! Mailboxes: the receiving end of an entity's messages.
//!
//! A [`Mailbox`] reads the FIFO its backend feeds (through the
//! [`Feed`] seam: a peer lanes and Redis watcher actor for the hybrid
//! exchange, a task for Academy 1.0's queues, senders themselves for a local
//! exchange), drops a second copy of a message it took already (by the
//! sender's stamp), and hands out an action request from Redis only once its
//! claim is written there, so a crash never delivers a request twice. When it
//! closes, what it received and did not take goes back where it came from.

mod seen;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use crate::error::Error;
use crate::exchange::{Delivery, Exchange, Feed, Origin, Taken, TakenAcks};
use crate::identifier::EntityId;
use crate::message::{Body, Envelope};
use seen::Seen;

impl Exchange {
    /// Opens the receiving end of `id`'s mailbox. Messages sent while it was
    /// closed are delivered first. Unknown id: [`Error::BadEntityId`];
    /// terminated: [`Error::MailboxClosed`].
    pub async fn get_mailbox(&self, id: &EntityId) -> Result<Mailbox, Error> {
        let inbox = self.inbox(id).await?;
        Ok(Mailbox { id: id.clone(), rx: Some(inbox.rx), feed: inbox.feed, seen: Seen::default(), claim: None })
    }
}

/// The receiving end of one entity's messages.
///
/// Obtained from [`Exchange::get_mailbox`](crate::Exchange::get_mailbox).
/// Dropping it closes it (in the background); [`Mailbox::close`] does the
/// same and waits.
#[derive(Debug)]
pub struct Mailbox {
    id: EntityId,
    rx: Option<mpsc::Receiver<Box<Delivery>>>,
    feed: Arc<dyn Feed>,
    /// Stamps taken since it opened: a second copy of one is dropped.
    seen: Seen,
    /// A request taken from Redis, handed out once acknowledged there.
    claim: Option<Claim>,
}

/// A request waiting for its acknowledgement in Redis.
struct Claim {
    envelope: Envelope,
    /// Re-sent after an earlier opening may have taken it.
    doubtful: bool,
    /// Its place in the taken list, and its bytes there.
    position: u64,
    raw: Bytes,
    acknowledged: futures::future::BoxFuture<'static, bool>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Claim({})", self.envelope.tag)
    }
}

impl Mailbox {
    /// The entity this mailbox belongs to.
    pub fn id(&self) -> &EntityId {
        &self.id
    }

    /// The address the exchange's TCP listener is bound to, which every
    /// mailbox of the exchange shares (none for a local exchange or without
    /// peer-to-peer).
    pub fn address(&self) -> Option<SocketAddr> {
        self.listening().map(|(address, _)| address)
    }

    /// The address published in Redis, which peers dial: the advertised
    /// host and the exchange listener's port.
    pub fn advertised_address(&self) -> Option<&str> {
        self.listening().map(|(_, published)| published)
    }

    /// The next message, waiting at most `timeout` (forever if `None`).
    ///
    /// Fails with [`Error::Timeout`] when nothing came in time, and with
    /// [`Error::MailboxClosed`] once the mailbox was terminated or closed.
    /// Cancel-safe: a message is taken only when `recv` returns it.
    pub async fn recv(&mut self, timeout: Option<Duration>) -> Result<Envelope, Error> {
        self.recv_taken(timeout).await.map(|taken| taken.0)
    }

    /// [`recv`](Self::recv), also saying whether the message was re-sent
    /// after an earlier opening of this mailbox may have taken it (for an
    /// agent: may have run it).
    pub(crate) async fn recv_taken(&mut self, timeout: Option<Duration>) -> Result<(Envelope, bool), Error> {
        /// A read given up (timed out, cancelled) no longer waits.
        struct Waiting(Option<Arc<TakenAcks>>);
        impl Drop for Waiting {
            fn drop(&mut self) {
                if let Some(acks) = &self.0 {
                    acks.set_waiting(false);
                }
            }
        }
        let _waiting = Waiting(self.feed.taken_acks().cloned());
        let next = std::future::poll_fn(|cx| self.poll_take(cx));
        let next = match timeout {
            Some(t) => tokio::time::timeout(t, next).await.map_err(|_| Error::Timeout(t))?,
            None => next.await,
        };
        next.ok_or_else(|| Error::MailboxClosed(self.id.clone()))
    }

    /// Where the exchange listens for peers, and the address it publishes.
    fn listening(&self) -> Option<(SocketAddr, &str)> {
        self.feed.listening()
    }

    /// The next message (and whether it is doubtful), or `None` once the
    /// mailbox is closed.
    fn poll_take(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<(Envelope, bool)>> {
        use std::task::Poll;
        loop {
            if let Some(claim) = &mut self.claim {
                let acknowledged = std::task::ready!(claim.acknowledged.as_mut().poll(cx));
                let Claim { envelope, doubtful, .. } = self.claim.take().expect("polled above");
                if acknowledged {
                    return Poll::Ready(Some((envelope, doubtful)));
                }
                // It stays in the taken list, for the next opening.
                warn!(mailbox = %self.id, tag = %envelope.tag, "a request could not be acknowledged in Redis; not run");
                continue;
            }
            let Some(rx) = self.rx.as_mut() else { return Poll::Ready(None) };
            let next = rx.poll_recv(cx);
            if let Some(acks) = self.feed.taken_acks() {
                // While it waits, a take may claim the next request for it.
                acks.set_waiting(next.is_pending());
            }
            let Some(delivery) = std::task::ready!(next) else { return Poll::Ready(None) };
            if let Some(taken) = self.accept(delivery) {
                return Poll::Ready(Some(taken));
            }
        }
    }

    /// Takes a delivery (acknowledging it to where it came from), unless it
    /// is a second copy of a message already taken. A request from Redis
    /// becomes a claim, handed out once acknowledged.
    fn accept(&mut self, delivery: Box<Delivery>) -> Option<(Envelope, bool)> {
        let delivery = *delivery;
        let (stamp, doubtful) = (delivery.stamp, delivery.doubtful);
        let early = matches!(delivery.origin, Origin::Early);
        let (envelope, taken) = delivery.take()?;
        if let Some(stamp) = stamp {
            if !self.seen.first_time(stamp) {
                // The queue entry of an answer handed on early is expected.
                if !self.seen.followed(stamp) {
                    debug!(mailbox = %self.id, tag = %envelope.tag, "dropped a second copy of a message");
                    metrics::counter!("academy_duplicates_dropped_total").increment(1);
                }
                return None;
            }
            if early {
                self.seen.early(stamp);
            }
        }
        match taken {
            Taken::After(acks, n, raw) if matches!(envelope.body, Body::ActionRequest { .. }) => {
                let acknowledged = Box::pin(acks.acknowledged(n));
                self.claim = Some(Claim { envelope, doubtful, position: n, raw, acknowledged });
                None
            }
            Taken::Listed(listed) => {
                let raw = listed.raw.clone();
                let acknowledged = Box::pin(listed.acknowledge());
                self.claim = Some(Claim { envelope, doubtful, position: 0, raw, acknowledged });
                None
            }
            _ => Some((envelope, doubtful)),
        }
    }

    /// Stops listening and deletes the published address. The mailbox is not
    /// terminated: senders queue in Redis until it is opened again. Messages
    /// received but not yet taken go back to Redis (or to their sender).
    pub async fn close(mut self) -> Result<(), Error> {
        match self.rx.take() {
            Some(rx) => {
                let claim = self.claim.take().map(|c| (c.position, c.raw));
                self.feed.close(rx, claim).await
            }
            None => Ok(()),
        }
    }
}

/// A mailbox is also a stream of its messages, ending when it is closed or
/// terminated; an actor can read it with `ctx.add_stream(mailbox)`.
impl futures::Stream for Mailbox {
    type Item = Envelope;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Envelope>> {
        self.poll_take(cx).map(|taken| taken.map(|taken| taken.0))
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let Some(rx) = self.rx.take() else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            return self.feed.stop_now();
        }
        let claim = self.claim.take().map(|c| (c.position, c.raw));
        let close = self.feed.close(rx, claim);
        self.feed.close_later(Box::pin(async move {
            if let Err(e) = close.await {
                error!("closing a dropped mailbox failed: {e}");
            }
        }));
    }
}
