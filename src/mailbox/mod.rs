//! Mailboxes: the receiving end of an entity's messages.
//!
//! A [`Mailbox`] is the public face; behind it a `MailboxActor` supervises
//! two kinds of stream: one framed read stream per authenticated peer
//! connection (the exchange's one listener accepts them and hands each to
//! the mailbox its handshake names), and the batches the exchange's Redis
//! watcher pops from its queue. All of them feed one bounded FIFO that
//! [`Mailbox::recv`] reads. When that FIFO is full the actor pauses, so
//! backpressure reaches the peers (TCP) and the watcher (it stops popping
//! this queue) instead of growing memory.
//!
//! Messages that arrived over TCP are acknowledged to their sender only when
//! `recv` takes them; if the mailbox closes first they are not acknowledged
//! and the sender re-routes them to Redis. Messages from Redis sit in the
//! mailbox's taken list until `recv` takes them; they are acknowledged there
//! (in coalesced batches), and on close the rest go back to the front of the
//! queue, so neither a close nor a crash loses them. An action request from
//! Redis is handed out only once its acknowledgement is written: a crash
//! never delivers a request twice.

mod seen;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures::{stream, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use crate::error::Error;
use crate::exchange::{
    AcademyExchange, Bad, Delivery, Exchange, Feeder, HybridExchange, LocalExchange, Origin, Taken, TakenAcks,
    Unsealed, Watched, SEAL_LEN,
};
use crate::identifier::EntityId;
use crate::message::{Body, Entry, Envelope, ENTRY_MARKS_LEN};
use crate::peer::{AckState, InboundLane};
use seen::Seen;

/// How long a closing mailbox waits for its watcher before stopping anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

impl Exchange {
    /// Opens the receiving end of `id`'s mailbox. Messages sent while it was
    /// closed are delivered first. Unknown id: [`Error::BadEntityId`];
    /// terminated: [`Error::MailboxClosed`].
    pub async fn get_mailbox(&self, id: &EntityId) -> Result<Mailbox, Error> {
        if let Some(local) = self.as_local() {
            return Ok(Mailbox::local(local.clone(), id.clone(), local.open_inbox(id)?));
        }
        if let Some(academy) = self.as_academy() {
            let (rx, feeder) = academy.open_inbox(id).await?;
            let backend = Backend::Academy(academy.clone(), feeder);
            return Ok(Mailbox::fed(backend, id.clone(), rx));
        }
        let hybrid = self.as_hybrid().expect("an exchange is local, hybrid or Academy 1.0");
        Mailbox::open(hybrid.clone(), id.clone()).await
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
    backend: Backend,
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

/// Who feeds the FIFO, and so who must be told when the mailbox closes.
#[derive(Clone, Debug)]
enum Backend {
    Hybrid(Addr<MailboxActor>, HybridExchange, uuid::Uuid, Arc<TakenAcks>),
    /// An Academy 1.0 queue, fed by a task.
    Academy(AcademyExchange, Feeder),
    Local(LocalExchange),
}

impl Mailbox {
    /// Opens the receiving end of `id`: publishes the exchange's address
    /// for it and starts the actor that feeds this mailbox.
    pub(crate) async fn open(exchange: HybridExchange, id: EntityId) -> Result<Self, Error> {
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
        let backend = Backend::Hybrid(actor, exchange, opening, acks);
        Ok(Self { id, rx: Some(rx), backend, seen: Seen::default(), claim: None })
    }

    /// A mailbox fed directly by a [`LocalExchange`].
    pub(crate) fn local(exchange: LocalExchange, id: EntityId, rx: mpsc::Receiver<Box<Delivery>>) -> Self {
        Self::fed(Backend::Local(exchange), id, rx)
    }

    /// A mailbox without a listener, fed through `rx`.
    fn fed(backend: Backend, id: EntityId, rx: mpsc::Receiver<Box<Delivery>>) -> Self {
        Self { id, rx: Some(rx), backend, seen: Seen::default(), claim: None }
    }

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
        let _waiting = Waiting(self.taken_acks().cloned());
        let next = std::future::poll_fn(|cx| self.poll_take(cx));
        let next = match timeout {
            Some(t) => tokio::time::timeout(t, next).await.map_err(|_| Error::Timeout(t))?,
            None => next.await,
        };
        next.ok_or_else(|| Error::MailboxClosed(self.id.clone()))
    }

    /// Where a hybrid mailbox's exchange listens, and the address it publishes.
    fn listening(&self) -> Option<(SocketAddr, &str)> {
        match &self.backend {
            Backend::Hybrid(_, exchange, ..) => exchange.listening(),
            _ => None,
        }
    }

    /// The acknowledgements of what a hybrid mailbox takes from Redis.
    fn taken_acks(&self) -> Option<&Arc<TakenAcks>> {
        match &self.backend {
            Backend::Hybrid(.., acks) => Some(acks),
            _ => None,
        }
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
            if let Some(acks) = self.taken_acks() {
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
                shutdown(self.backend.clone(), rx, self.id.clone(), claim).await
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
        let claim = self.claim.take().map(|c| (c.position, c.raw));
        let task = shutdown(self.backend.clone(), rx, self.id.clone(), claim);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let task = async move {
                    if let Err(e) = task.await {
                        error!("closing a dropped mailbox failed: {e}");
                    }
                };
                // The exchange's close waits for a hybrid mailbox's hand-back.
                match &self.backend {
                    Backend::Hybrid(_, exchange, ..) => exchange.track(task),
                    Backend::Academy(exchange, _) => exchange.track(task),
                    Backend::Local(_) => drop(runtime.spawn(task)),
                }
            }
            Err(_) => {
                if let Backend::Hybrid(actor, ..) = &self.backend {
                    actor.do_send(Close);
                }
            }
        }
    }
}

/// Closes the feeding side, then returns what was received but not taken:
/// Redis entries go back to the front of the queue (the taken list holds
/// them), local messages to the front of the local queue; peer messages stay
/// unacknowledged, so their senders re-route them.
async fn shutdown(
    backend: Backend,
    mut rx: mpsc::Receiver<Box<Delivery>>,
    id: EntityId,
    claim: Option<(u64, Bytes)>,
) -> Result<(), Error> {
    match backend {
        Backend::Hybrid(actor, exchange, opening, acks) => {
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
        }
        Backend::Academy(exchange, feeder) => {
            // What the channel holds is still in the taken list: all of it
            // goes back, with a request whose acknowledgement was under way.
            rx.close();
            while rx.try_recv().is_ok() {}
            exchange.close_inbox(&id, &feeder, claim.map(|(_, raw)| raw)).await
        }
        Backend::Local(exchange) => {
            rx.close();
            let mut left = Vec::new();
            while let Ok(delivery) = rx.try_recv() {
                left.push(delivery.envelope);
            }
            exchange.detach(&id, left);
            Ok(())
        }
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
    fn handle(&mut self, InboundLane { messages, ack, peer }: InboundLane, ctx: &mut Context<Self>) {
        if self.closing {
            // Nothing it sends will be taken: its sender re-routes it
            // through Redis as not taken (not re-sent).
            return ack.close();
        }
        if self.conns.len() >= self.exchange.config().max_connections {
            let reports = &self.exchange.config().link.reports;
            let what = format_args!("mailbox {}: peer {peer}: it has its maximum of connections open", self.id);
            reports.bad(Bad::Connection, what);
            return ack.close();
        }
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
        if raw.len() > link.max_frame_len + SEAL_LEN + ENTRY_MARKS_LEN {
            return Err(format!("an entry of {} bytes is over the {}-byte cap", raw.len(), link.max_frame_len));
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
