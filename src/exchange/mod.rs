//! Exchanges: where mailboxes are registered, found, and sent to.
//!
//! [`Exchange`] is the one public type, cheap to clone, over three
//! backends: the hybrid exchange (`hybrid.rs`: Redis state and queues,
//! peer-to-peer TCP), the same in Academy 1.0's protocol (`academy.rs`),
//! and the local one (`local.rs`: everything in one process, for tests and
//! simulations). [`Exchange::builder`] starts one on Redis,
//! [`Exchange::local`] a local one; agents, handles and the launcher work
//! unchanged on any.

mod academy;
mod actor;
mod delivery;
mod hybrid;
mod inbox;
mod inspect;
pub(crate) mod keys;
mod link;
mod local;
mod report;
mod seal;
mod source;
mod watcher;

pub use crate::codec::Protocol;
pub(crate) use academy::{AcademyExchange, Listed};
pub(crate) use delivery::{Delivery, Origin, Taken, TakenAcks};
pub(crate) use hybrid::HybridExchange;
pub use hybrid::{ExchangeBuilder, SECRET_ENV};
pub(crate) use inbox::{Feed, Inbox};
pub use inspect::{MailboxInfo, Peeked};
pub(crate) use local::LocalExchange;
pub use report::Rejections;
pub(crate) use report::{Bad, Reports};
pub(crate) use seal::{Seal, Unsealed, SEAL_LEN};

use std::time::Duration;

use crate::error::Error;
use crate::identifier::{ClientId, EntityId};
use crate::message::Envelope;

/// Which agents a discovery lists: by default those whose lineage names the
/// behavior (it, or one that implements it) and whose process is alive.
///
/// ```
/// use actix_academy::Discovery;
/// # use std::time::Duration;
/// let everyone = Discovery::new().include_inactive();
/// let only_this_type = Discovery::new().exact();
/// let three_within_a_minute = Discovery::new().wait_for(3, Duration::from_secs(60));
/// # let _ = (everyone, only_this_type, three_within_a_minute);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    exact: bool,
    include_inactive: bool,
    wait: Option<(usize, Duration)>,
}

impl Discovery {
    /// Agents of the behavior or of one that implements it, alive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only agents whose behavior is exactly this one.
    pub fn exact(mut self) -> Self {
        self.exact = true;
        self
    }

    /// Also agents whose process is gone (inactive): they may come back.
    pub fn include_inactive(mut self) -> Self {
        self.include_inactive = true;
        self
    }

    /// Until at least `count` agents are found, looks again (other
    /// processes may still be starting); after `within`, fails with
    /// [`Error::Timeout`].
    pub fn wait_for(mut self, count: usize, within: Duration) -> Self {
        self.wait = Some((count, within));
        self
    }
}

/// The state of a mailbox as the exchange records it: Academy 1.0's
/// MISSING, ACTIVE (listening or offline), INACTIVE and TERMINATED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MailboxStatus {
    /// Never registered (or registered in another namespace), or expired.
    Missing,
    /// Active, and its mailbox listens for peers: messages go to it directly.
    Listening,
    /// Active, its mailbox not listening (closed, not open yet, or reading
    /// Redis only): messages wait in its queue.
    Offline,
    /// Registered, but the process it belongs to stopped renewing its lease
    /// (crashed, or closed): sends fail with [`Error::Inactive`] unless the
    /// sender asks to queue, and its keys expire unless its mailbox is
    /// opened again.
    Inactive,
    /// Terminated: sends fail with [`Error::MailboxClosed`].
    Terminated,
}

impl MailboxStatus {
    /// From the word the Redis scripts' `state()` returns. A word this
    /// version does not know is an error, never a guess at a route.
    pub(crate) fn from_state(state: &str) -> Result<Self, Error> {
        Ok(match state {
            "missing" => MailboxStatus::Missing,
            "terminated" => MailboxStatus::Terminated,
            "inactive" => MailboxStatus::Inactive,
            "listening" => MailboxStatus::Listening,
            "offline" => MailboxStatus::Offline,
            other => return Err(Error::UnknownStatus(other.to_owned())),
        })
    }

    /// Registered, not terminated, and its process alive (listening or not).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Listening | Self::Offline)
    }
}

/// What a send does when its destination is [inactive](MailboxStatus::Inactive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenInactive {
    /// Fail at once with [`Error::Inactive`].
    #[default]
    Fail,
    /// Queue the message for a restart of the entity, in its queue (which
    /// expires with it if nobody opens it).
    Queue,
}

/// How long opening a mailbox waits for an earlier opening of it in this
/// process to finish closing.
pub(crate) const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Reserves `id`'s slot among a backend's openings (`slot()` fills it), so
/// that no other opening here starts meanwhile: an earlier one is given
/// [`REOPEN_WAIT`] to close, else [`Error::MailboxInUse`].
pub(crate) async fn reserve_opening<V>(
    openings: &std::sync::Mutex<std::collections::HashMap<uuid::Uuid, V>>,
    id: &EntityId,
    slot: impl Fn() -> V,
) -> Result<(), Error> {
    let waited = tokio::time::Instant::now();
    loop {
        {
            let mut openings = openings.lock().unwrap_or_else(|e| e.into_inner());
            if let std::collections::hash_map::Entry::Vacant(vacant) = openings.entry(id.uid()) {
                vacant.insert(slot());
                return Ok(());
            }
        }
        if waited.elapsed() > REOPEN_WAIT {
            return Err(Error::MailboxInUse(id.clone()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// An exchange: hybrid (Redis + TCP) or local (one process).
///
/// ```
/// # #[actix::main] async fn main() -> Result<(), actix_academy::Error> {
/// use actix_academy::wire::{Body, Envelope};
/// use actix_academy::Exchange;
/// let exchange = Exchange::local(); // or Exchange::builder(url).start().await?
/// let alice = exchange.register_client(Some("alice")).await?;
/// let bob = exchange.register_client(Some("bob")).await?;
/// exchange.send(Envelope::new(alice.into(), bob.clone().into(), Body::PingRequest)).await?;
/// let mut inbox = exchange.get_mailbox(&bob).await?; // messages sent earlier wait for it
/// assert_eq!(inbox.recv(None).await?.body, Body::PingRequest);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Exchange(Kind);

#[derive(Clone, Debug)]
enum Kind {
    Hybrid(HybridExchange),
    Academy(AcademyExchange),
    Local(LocalExchange),
}

impl From<HybridExchange> for Exchange {
    fn from(exchange: HybridExchange) -> Self {
        Self(Kind::Hybrid(exchange))
    }
}

impl From<AcademyExchange> for Exchange {
    fn from(exchange: AcademyExchange) -> Self {
        Self(Kind::Academy(exchange))
    }
}

impl From<LocalExchange> for Exchange {
    fn from(exchange: LocalExchange) -> Self {
        Self(Kind::Local(exchange))
    }
}

/// Runs the same call on whichever backend this is.
macro_rules! on_backend {
    ($exchange:expr, $backend:ident => $call:expr) => {
        match &$exchange.0 {
            Kind::Hybrid($backend) => $call,
            Kind::Academy($backend) => $call,
            Kind::Local($backend) => $call,
        }
    };
}

impl Exchange {
    /// A new in-process exchange.
    pub fn local() -> Self {
        LocalExchange::default().into()
    }

    /// The hybrid backend in this crate's protocol, if this is one.
    fn as_hybrid(&self) -> Option<&HybridExchange> {
        match &self.0 {
            Kind::Hybrid(exchange) => Some(exchange),
            _ => None,
        }
    }

    /// Opens the receiving end of `id`'s mailbox on whichever backend this is.
    pub(crate) async fn inbox(&self, id: &EntityId) -> Result<Inbox, Error> {
        on_backend!(self, backend => backend.inbox(id).await)
    }

    /// The protocol this exchange speaks (a local exchange: [`Protocol::Native`]).
    pub fn protocol(&self) -> Protocol {
        match &self.0 {
            Kind::Academy(_) => Protocol::Academy1,
            _ => Protocol::Native,
        }
    }

    /// How this exchange's protocol writes action payloads.
    pub(crate) fn codec(&self) -> crate::codec::Codec {
        crate::codec::Codec::new(self.protocol())
    }

    /// The key namespace (`local` for a local exchange).
    pub fn namespace(&self) -> &str {
        on_backend!(self, backend => backend.namespace())
    }

    /// Registers (or re-registers) entity `id` with `lineage` (most specific
    /// first; empty for a client): status ACTIVE, indexed for discovery.
    pub(crate) async fn register(&self, id: &EntityId, lineage: &[&str]) -> Result<(), Error> {
        on_backend!(self, backend => backend.register(id, lineage).await)
    }

    /// Registers a new client (status ACTIVE).
    pub async fn register_client(&self, name: Option<&str>) -> Result<ClientId, Error> {
        let id = ClientId::new(name);
        on_backend!(self, backend => backend.register(&id, &[]).await)?;
        Ok(id)
    }

    /// Terminates a mailbox: status INACTIVE, a blocked `recv` fails with
    /// [`Error::MailboxClosed`], later sends fail too, and an agent leaves
    /// discovery. Terminating an unknown id is not an error.
    pub async fn terminate(&self, id: &EntityId) -> Result<(), Error> {
        on_backend!(self, backend => backend.terminate(id).await)
    }

    /// The recorded state of `id`'s mailbox.
    pub async fn status(&self, id: &EntityId) -> Result<MailboxStatus, Error> {
        on_backend!(self, backend => backend.status(id).await)
    }

    /// [`discover_with`](Self::discover_with) by behavior name, for callers
    /// without the type.
    pub async fn discover_by_name(&self, behavior: &str, which: Discovery) -> Result<Vec<EntityId>, Error> {
        let (subclasses, inactive) = (!which.exact, which.include_inactive);
        let (count, within) = which.wait.unwrap_or_default();
        let deadline = tokio::time::Instant::now() + within;
        let mut pause = Duration::from_millis(10);
        loop {
            let found = on_backend!(self, backend => backend.discover_by_name(behavior, subclasses, inactive).await)?;
            if found.len() >= count {
                return Ok(found);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(within));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Sends a message to `envelope.dest`. On the hybrid exchange: directly
    /// over TCP when the mailbox listens, else through its Redis queue.
    /// Unknown destination: [`Error::BadEntityId`]; terminated:
    /// [`Error::MailboxClosed`]; inactive (its process is gone):
    /// [`Error::Inactive`]. `Ok` means the exchange owns the message: it is
    /// in Redis, or held by a link until the receiver takes it.
    pub async fn send(&self, envelope: Envelope) -> Result<(), Error> {
        self.send_with(envelope, WhenInactive::Fail).await
    }

    /// [`send`](Self::send), choosing what happens when the destination is inactive.
    pub async fn send_with(&self, envelope: Envelope, when_inactive: WhenInactive) -> Result<(), Error> {
        on_backend!(self, backend => backend.send(envelope, when_inactive).await)
    }

    /// Sends in the background, logging a failure; [`close`](Self::close)
    /// waits for such sends (an agent's replies go out this way).
    pub(crate) fn post(&self, envelope: Envelope, when_inactive: WhenInactive) {
        match &self.0 {
            Kind::Hybrid(backend) => backend.post(envelope, when_inactive),
            Kind::Academy(backend) => backend.post(envelope, when_inactive),
            Kind::Local(backend) => {
                let backend = backend.clone();
                tokio::spawn(async move {
                    let dest = envelope.dest.clone();
                    if let Err(e) = backend.send(envelope, when_inactive).await {
                        tracing::warn!(%dest, "could not deliver a message sent in the background: {e}");
                    }
                });
            }
        }
    }

    /// What this exchange refused or was refused since it started: peers
    /// with another secret, bad connections, forged queue entries (all zero
    /// for a local exchange).
    pub fn rejections(&self) -> Rejections {
        self.as_hybrid().map(HybridExchange::rejections).unwrap_or_default()
    }

    /// Releases the exchange's resources. The hybrid exchange first finishes
    /// the replies its agents sent and flushes its peer links, waiting for
    /// their acknowledgements; it returns within twice the peer timeout plus
    /// 5 s, having handed to Redis what peers did not confirm. Later calls
    /// fail with [`Error::ExchangeClosed`].
    pub async fn close(&self) {
        on_backend!(self, backend => backend.close().await)
    }
}

impl Exchange {
    /// Marks `id`, whose agent failed in this process, inactive at once
    /// (a local exchange has no one else to tell).
    pub(crate) async fn mark_failed(&self, id: &EntityId) -> Result<(), Error> {
        match &self.0 {
            Kind::Hybrid(backend) => backend.mark_failed(id).await,
            Kind::Academy(backend) => backend.mark_failed(id).await,
            Kind::Local(_) => Ok(()),
        }
    }

    /// The name `id` was registered with, as Redis keeps it (a local
    /// exchange keeps the ids it was given, names included: `None`).
    pub(crate) async fn registered_name(&self, id: &EntityId) -> Result<Option<String>, Error> {
        match &self.0 {
            Kind::Hybrid(backend) => backend.registered_name(id).await,
            Kind::Academy(backend) => backend.registered_name(id).await,
            Kind::Local(_) => Ok(None),
        }
    }

    /// Counts this exchange's peer refusals (none for other backends).
    pub(crate) fn refusals(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.as_hybrid().map(|h| h.config().link.refusals.subscribe())
    }

    /// Why `dest` refused this process, if Redis cannot route around it
    /// (see [`link::fatal_refusal`]).
    pub(crate) fn fatal_refusal(&self, dest: &EntityId) -> Option<crate::error::Rejection> {
        self.as_hybrid().and_then(|h| link::fatal_refusal(&h.config().link, dest))
    }

    /// Returns messages taken but never started to the front of `id`'s queue.
    pub(crate) async fn push_front(&self, id: &EntityId, envelopes: Vec<Envelope>) -> Result<(), Error> {
        match &self.0 {
            Kind::Hybrid(backend) => backend.push_front(id, &envelopes).await,
            Kind::Academy(backend) => backend.push_front(id, &envelopes).await,
            Kind::Local(backend) => {
                backend.detach(id, envelopes);
                Ok(())
            }
        }
    }
}
