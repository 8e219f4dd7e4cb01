//! The seam between a mailbox and its backend, and the native hybrid
//! backend's side of it.
//!
//! Every backend opens an [`Inbox`]: the FIFO of deliveries the public
//! [`Mailbox`](crate::wire::Mailbox) reads, and a [`Feed`] that says how it is
//! fed and how it closes. Above this seam nothing asks which backend it is.
//!
//! The hybrid backend feeds it from a `MailboxActor`, which supervises two
//! kinds of stream: one stream of messages per peer lane opened to the
//! mailbox (the exchange's sessions hand each to the mailbox it names), and
//! the batches the exchange's Redis watcher pops from its queue. All of them
//! feed one bounded FIFO. When that FIFO is full the actor pauses, so
//! backpressure reaches the peers (their lanes' windows fill) and the watcher
//! (it stops popping this queue) instead of growing memory.
//!
//! Messages that arrived over a lane are acknowledged to their sender only
//! when the mailbox takes them; if it closes first they are not acknowledged
//! and the sender re-routes them to Redis. Messages from Redis sit in the
//! mailbox's taken list until taken; they are acknowledged there (in
//! coalesced batches), and on close the rest go back to the front of the
//! queue, so neither a close nor a crash loses them.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{stream, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use super::watcher::Watched;
use super::{Bad, Delivery, HybridExchange, Origin, TakenAcks, Unsealed, SEAL_LEN};
use crate::error::Error;
use crate::identifier::EntityId;
use crate::message::{Entry, Envelope, ENTRY_MARKS_LEN};
use crate::peer::{AckState, InboundLane};

/// What a backend hands a mailbox when it opens.
pub(crate) struct Inbox {
    /// The mailbox's FIFO.
    pub(crate) rx: mpsc::Receiver<Box<Delivery>>,
    pub(crate) feed: Arc<dyn Feed>,
}

/// How a backend feeds a mailbox's FIFO, and how it stops.
pub(crate) trait Feed: Send + Sync + std::fmt::Debug {
    /// Where the exchange listens for peers, and the address it publishes
    /// (an exchange with peer-to-peer only).
    fn listening(&self) -> Option<(SocketAddr, &str)> {
        None
    }

    /// The acknowledgements of what the mailbox takes from Redis, for the
    /// backends that claim requests there as they are taken.
    fn taken_acks(&self) -> Option<&Arc<TakenAcks>> {
        None
    }

    /// Stops feeding, then gives back what `rx` holds and the mailbox did
    /// not take (and `claim`, a request whose acknowledgement was under way:
    /// its position and bytes), so that nothing is lost.
    fn close(
        &self,
        rx: mpsc::Receiver<Box<Delivery>>,
        claim: Option<(u64, Bytes)>,
    ) -> BoxFuture<'static, Result<(), Error>>;

    /// Runs a dropped mailbox's close in the background (the exchange's own
    /// close waits for it, where it can).
    fn close_later(&self, close: BoxFuture<'static, ()>) {
        drop(tokio::spawn(close));
    }

    /// A mailbox dropped outside any runtime: stop feeding it, without waiting.
    fn stop_now(&self) {}
}

/// Closes `rx` to its senders and takes what it holds.
pub(crate) fn drain(mut rx: mpsc::Receiver<Box<Delivery>>) -> Vec<Delivery> {
    rx.close();
    std::iter::from_fn(|| rx.try_recv().ok().map(|delivery| *delivery)).collect()
}

/// How long a closing mailbox waits for its watcher before stopping anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

impl HybridExchange {
    /// Opens the receiving end of `id`: publishes the exchange's address
    /// for it and starts the actor that feeds this mailbox.
    pub(crate) async fn inbox(&self, id: &EntityId) -> Result<Inbox, Error> {
        let (exchange, id) = (self.clone(), id.clone());
        let config = exchange.config();
        // A peer that connects as soon as the address is published waits
        // here until the actor runs.
        let (inbound, connections) = futures::channel::mpsc::unbounded();
        let inbound = exchange.listening().map(|_| inbound);
        let (opening, acks, queued) = exchange.open_mailbox(&id, inbound).await?;
        let (tx, rx) = mpsc::channel(config.mailbox_capacity);
        let actor = MailboxActor::create(|ctx| {
            ctx.add_stream(connections);
            // An empty queue waits for its first ring.
            let (watch, batches) = exchange.watcher().watch(id.uid(), opening, acks.clone(), queued);
            ctx.add_stream(batches);
            MailboxActor {
                id: id.clone(),
                opening,
                acks: acks.clone(),
                exchange: exchange.clone(),
                tx,
                overflow: VecDeque::new(),
                conns: HashMap::new(),
                next_conn: 0,
                closing: false,
                watch,
            }
        });
        debug!(mailbox = %id, listening = ?exchange.listening(), "mailbox open");
        Ok(Inbox { rx, feed: Arc::new(HybridFeed { actor, exchange, id, opening, acks }) })
    }
}

/// The hybrid backend's feed: a mailbox actor.
#[derive(Debug)]
struct HybridFeed {
    actor: Addr<MailboxActor>,
    exchange: HybridExchange,
    id: EntityId,
    opening: uuid::Uuid,
    acks: Arc<TakenAcks>,
}

impl Feed for HybridFeed {
    fn listening(&self) -> Option<(SocketAddr, &str)> {
        self.exchange.listening()
    }

    fn taken_acks(&self) -> Option<&Arc<TakenAcks>> {
        Some(&self.acks)
    }

    /// Redis entries go back to the front of the queue (the taken list holds
    /// them); peer messages stay unacknowledged, so their senders re-route
    /// them.
    fn close(
        &self,
        mut rx: mpsc::Receiver<Box<Delivery>>,
        claim: Option<(u64, Bytes)>,
    ) -> BoxFuture<'static, Result<(), Error>> {
        let HybridFeed { actor, exchange, id, opening, acks } = self;
        // At once, not when the actor gets to it: no new lane reaches it,
        // and this process's own sends to it ask Redis from now on.
        exchange.stop_routing(id, *opening);
        let (actor, exchange, id, opening, acks) =
            (actor.clone(), exchange.clone(), id.clone(), *opening, acks.clone());
        Box::pin(async move {
            actor.do_send(Close);
            // A request acknowledged but not handed out comes first.
            let mut left: Vec<(u64, Bytes)> = claim.into_iter().collect();
            while let Some(delivery) = rx.recv().await {
                if let Origin::Redis(_, position, raw) = delivery.origin {
                    left.push((position, raw));
                }
            }
            acks.clone().finish().await;
            // Acknowledged (the request being claimed) but never taken: back in front,
            // before what the taken list still holds goes back.
            let written = acks.written();
            // As they were (marks and stamps kept).
            let claimed: Vec<Bytes> =
                left.into_iter().filter(|(position, _)| *position <= written).map(|(_, raw)| raw).collect();
            let published = exchange.listening().map(|(_, published)| published);
            let closed = exchange.close_mailbox(&id, opening, published, written).await;
            exchange.push_front_raw(&id, &claimed).await?;
            closed
        })
    }

    fn close_later(&self, close: BoxFuture<'static, ()>) {
        self.exchange.track(close);
    }

    fn stop_now(&self) {
        self.actor.do_send(Close);
    }
}

/// One lane of a peer session, open to this mailbox.
struct Conn {
    stream: SpawnHandle,
    ack: Arc<AckState>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // What it took is acknowledged; then the lane is closed to its sender.
        self.ack.close();
    }
}

/// A message (or the end) of lane `.0`.
enum Inbound {
    Message(u64, Bytes),
    End(u64),
}

impl Message for Inbound {
    type Result = ();
}

/// Hang up on every peer, stop being watched, and stop.
#[derive(Message)]
#[rtype(result = "()")]
struct Close;

struct MailboxActor {
    id: EntityId,
    /// This opening of the mailbox.
    opening: uuid::Uuid,
    /// Acknowledgements of what is taken from Redis.
    acks: Arc<TakenAcks>,
    exchange: HybridExchange,
    tx: mpsc::Sender<Box<Delivery>>,
    /// Deliveries waiting for room in the FIFO while the actor is paused.
    overflow: VecDeque<Box<Delivery>>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    closing: bool,
    /// This mailbox's registration with the exchange's Redis watcher.
    watch: u64,
}

impl Actor for MailboxActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.unwatch();
    }
}

/// A lane a peer session opened to this mailbox.
impl StreamHandler<InboundLane> for MailboxActor {
    fn handle(&mut self, lane: InboundLane, ctx: &mut Context<Self>) {
        // A lane dropped unaccepted is closed to its sender: nothing it sends
        // is taken, and it re-routes that through Redis as not taken.
        if self.closing {
            return drop(lane);
        }
        if self.conns.len() >= self.exchange.config().max_connections {
            let reports = &self.exchange.config().link.reports;
            let what = format_args!("mailbox {}: peer {}: it has its maximum of lanes open", self.id, lane.peer);
            reports.bad(Bad::Connection, what);
            return drop(lane);
        }
        let (messages, ack) = lane.accept();
        let conn = self.next_conn;
        self.next_conn += 1;
        let messages = messages
            .map(move |message| Inbound::Message(conn, message))
            .chain(stream::once(async move { Inbound::End(conn) }));
        let stream = ctx.add_stream(messages);
        self.conns.insert(conn, Conn { stream, ack });
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl MailboxActor {
    fn unwatch(&self) {
        self.exchange.watcher().unwatch(self.id.uid(), self.watch);
    }

    fn drop_connection(&mut self, conn: u64, ctx: &mut Context<Self>) {
        if let Some(conn) = self.conns.remove(&conn) {
            ctx.cancel_future(conn.stream);
        }
    }

    /// Puts a message in the FIFO; if it is full, pauses the actor (and so
    /// every stream it reads) until there is room.
    fn deliver(&mut self, delivery: Delivery, ctx: &mut Context<Self>) {
        // Boxed: an empty FIFO's first block of slots is then small.
        let delivery = Box::new(delivery);
        if !self.overflow.is_empty() {
            return self.overflow.push_back(delivery);
        }
        match self.tx.try_send(delivery) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(delivery)) => {
                self.overflow.push_back(delivery);
                let drain = actix::fut::ready(()).then(|(), act: &mut Self, _| {
                    let waiting: Vec<_> = act.overflow.drain(..).collect();
                    let tx = act.tx.clone();
                    async move {
                        for delivery in waiting {
                            if tx.send(delivery).await.is_err() {
                                break;
                            }
                        }
                    }
                    .into_actor(act)
                });
                ctx.wait(drain);
            }
            Err(mpsc::error::TrySendError::Closed(delivery)) => {
                error!(mailbox = %self.id, tag = %delivery.envelope.tag, "mailbox reader is gone; message not delivered");
            }
        }
    }

    fn hang_up(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        // New connections for it are refused at the handshake from now on.
        self.exchange.stop_routing(&self.id, self.opening);
        for (_, conn) in self.conns.drain() {
            ctx.cancel_future(conn.stream);
        }
    }

    fn terminated(&mut self, ctx: &mut Context<Self>) {
        debug!(mailbox = %self.id, "mailbox terminated");
        self.exchange.disown(&self.id);
        self.hang_up(ctx);
        ctx.stop();
    }
}

impl StreamHandler<Inbound> for MailboxActor {
    fn handle(&mut self, item: Inbound, ctx: &mut Context<Self>) {
        let (conn, bytes) = match item {
            Inbound::End(conn) => return self.drop_connection(conn, ctx),
            Inbound::Message(conn, bytes) => (conn, bytes),
        };
        let Some(state) = self.conns.get(&conn) else {
            return;
        };
        let problem = match Envelope::decode_entry(bytes) {
            Ok(entry) if entry.envelope.dest == self.id => {
                let origin = Origin::Peer(state.ack.clone());
                let (envelope, stamp) = (entry.envelope, entry.stamp);
                return self.deliver(Delivery { envelope, stamp, origin, doubtful: false }, ctx);
            }
            Ok(entry) => format!("message for {} arrived at the wrong mailbox", entry.envelope.dest),
            Err(e) => e.to_string(),
        };
        // Nothing after a bad message of the lane is read; unacknowledged
        // messages go back to the sender, which re-routes them through Redis.
        let reports = &self.exchange.config().link.reports;
        reports.bad(Bad::Connection, format_args!("mailbox {}: {problem}", self.id));
        self.drop_connection(conn, ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl MailboxActor {
    /// Hands queue entries to the FIFO, in order; `taken` if they sit in
    /// this opening's taken list (else they were popped outright), with the
    /// position the take `claimed` for the first, if it did.
    fn deliver_entries(
        &mut self,
        entries: Vec<Vec<u8>>,
        taken: bool,
        mut claimed: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let link = self.exchange.config().link.clone();
        let count = entries.len();
        for raw in entries {
            let raw = Bytes::from(raw);
            let entry = match self.open_entry(&raw) {
                Ok(entry) => entry,
                Err(problem) => {
                    link.reports.bad(Bad::Entry, format_args!("mailbox {}: {problem}", self.id));
                    if taken {
                        self.acks.discard(raw.to_vec(), claimed.take());
                    }
                    continue;
                }
            };
            let origin = match taken {
                true => {
                    let position = self.acks.deliver();
                    // The claim was for this entry's position (the first).
                    if claimed.take() == Some(position) {
                        self.acks.claimed_by_take(position);
                    }
                    Origin::Redis(self.acks.clone(), position, raw)
                }
                false => Origin::Local,
            };
            let doubtful = entry.resent_to.is_some_and(|opening| opening != self.opening);
            self.deliver(Delivery { envelope: entry.envelope, stamp: entry.stamp, origin, doubtful }, ctx);
        }
        self.acks.handled(count);
    }
}

impl MailboxActor {
    /// An answer's copy that rang with it: handed on now, ahead of its queue
    /// entry (taken later, and dropped as a second copy). Anything else, or
    /// a copy that does not open (reported when its queue entry is taken),
    /// waits for the queue entry.
    fn deliver_early(&mut self, raw: Vec<u8>, ctx: &mut Context<Self>) {
        let Ok(entry) = self.open_entry(&Bytes::from(raw)) else { return };
        // Without a stamp its second copy could not be told from it.
        if entry.envelope.body.is_request() || entry.stamp.is_none() || entry.envelope.dest != self.id {
            return;
        }
        let (envelope, stamp) = (entry.envelope, entry.stamp);
        metrics::counter!("academy_answers_early_total").increment(1);
        self.deliver(Delivery { envelope, stamp, origin: Origin::Early, doubtful: false }, ctx);
    }

    /// Checks a queue entry's seal and size, then decodes it.
    fn open_entry(&self, raw: &Bytes) -> Result<Entry, String> {
        let link = &self.exchange.config().link;
        if raw.len() > link.sessions.max_frame_len + SEAL_LEN + ENTRY_MARKS_LEN {
            return Err(format!(
                "an entry of {} bytes is over the {}-byte cap",
                raw.len(),
                link.sessions.max_frame_len
            ));
        }
        let entry = link.seal.open(self.id.uid(), raw).map_err(|unsealed| match unsealed {
            Unsealed::Missing => "an unsealed entry (not written by an exchange)".to_owned(),
            Unsealed::Forged => "a forged entry (another secret, or tampered with)".to_owned(),
        })?;
        Envelope::decode_entry(entry).map_err(|e| format!("an undecodable entry: {e}"))
    }
}

impl StreamHandler<Watched> for MailboxActor {
    fn handle(&mut self, item: Watched, ctx: &mut Context<Self>) {
        match item {
            Watched::Batch { entries, claimed } => self.deliver_entries(entries, true, claimed, ctx),
            Watched::Early(raw) => self.deliver_early(raw, ctx),
            Watched::Terminated(last) => {
                self.deliver_entries(last, false, None, ctx);
                self.terminated(ctx);
            }
            Watched::Woken => ctx.stop(),
            Watched::TakenOver => {
                warn!(mailbox = %self.id, "another process opened this mailbox; closing it here");
                self.hang_up(ctx);
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Close> for MailboxActor {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.hang_up(ctx);
        // The watcher ends this mailbox's stream (Woken) once it no longer
        // takes from its queue; then the actor stops.
        self.unwatch();
        ctx.run_later(CLOSE_GRACE, |act, ctx| {
            warn!(mailbox = %act.id, "the Redis watcher did not stop in time");
            ctx.stop();
        });
    }
}
