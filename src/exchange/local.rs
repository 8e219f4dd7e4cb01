//! The local exchange: every mailbox in one process, no Redis, no sockets.
//! Same behavior as the hybrid exchange (registration, status, discovery,
//! offline queueing until a mailbox opens, termination), so tests and
//! single-process simulations run the same code.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::delivery::Delivery;
use super::inbox::{drain, Feed, Inbox};
use super::MailboxStatus;
use crate::error::Error;
use crate::identifier::EntityId;
use crate::message::Envelope;

/// Messages an open local mailbox holds before senders wait.
const CAPACITY: usize = 10_000;

/// The in-process backend of an [`Exchange`](super::Exchange); create one
/// with [`Exchange::local`](super::Exchange::local).
#[derive(Clone, Debug, Default)]
pub struct LocalExchange {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Mutex<HashMap<Uuid, Entry>>,
    closed: AtomicBool,
}

#[derive(Debug)]
struct Entry {
    id: EntityId,
    active: bool,
    lineage: Vec<String>,
    /// Messages waiting for the mailbox to open.
    queue: VecDeque<Envelope>,
    /// The open mailbox's FIFO.
    inbox: Option<mpsc::Sender<Box<Delivery>>>,
}

impl LocalExchange {
    fn entries(&self) -> Result<MutexGuard<'_, HashMap<Uuid, Entry>>, Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::ExchangeClosed);
        }
        Ok(self.inner.entries.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn namespace(&self) -> &str {
        "local"
    }

    pub(crate) async fn register(&self, id: &EntityId, lineage: &[&str]) -> Result<(), Error> {
        let mut entries = self.entries()?;
        let entry = entries.entry(id.uid()).or_insert_with(|| Entry {
            id: id.clone(),
            active: true,
            lineage: Vec::new(),
            queue: VecDeque::new(),
            inbox: None,
        });
        entry.active = true;
        if id.role() == crate::identifier::Role::Agent {
            entry.lineage = lineage.iter().map(|name| name.to_string()).collect();
        }
        Ok(())
    }

    pub(crate) async fn terminate(&self, id: &EntityId) -> Result<(), Error> {
        if let Some(entry) = self.entries()?.get_mut(&id.uid()) {
            entry.active = false;
            entry.lineage.clear();
            entry.queue.clear();
            entry.inbox = None; // the mailbox drains what it holds, then ends
        }
        Ok(())
    }

    pub(crate) async fn status(&self, id: &EntityId) -> Result<MailboxStatus, Error> {
        Ok(match self.entries()?.get(&id.uid()) {
            None => MailboxStatus::Missing,
            Some(entry) if entry.active && entry.inbox.as_ref().is_some_and(|tx| !tx.is_closed()) => {
                MailboxStatus::Listening
            }
            Some(entry) if entry.active => MailboxStatus::Offline,
            Some(_) => MailboxStatus::Terminated,
        })
    }

    pub(crate) async fn discover_by_name(
        &self,
        behavior: &str,
        allow_subclasses: bool,
        _include_inactive: bool,
    ) -> Result<Vec<EntityId>, Error> {
        let entries = self.entries()?;
        let matches = |lineage: &[String]| match allow_subclasses {
            true => lineage.iter().any(|name| name == behavior),
            false => lineage.first().is_some_and(|name| name == behavior),
        };
        Ok(entries
            .values()
            .filter(|entry| entry.active && matches(&entry.lineage))
            .map(|entry| entry.id.clone())
            .collect())
    }

    /// Opens `id`'s inbox: the receiving end of what is sent to it, the
    /// backlog first.
    pub(crate) async fn inbox(&self, id: &EntityId) -> Result<Inbox, Error> {
        let mut entries = self.entries()?;
        let entry = entries.get_mut(&id.uid()).ok_or_else(|| Error::BadEntityId(id.clone()))?;
        if !entry.active {
            return Err(Error::MailboxClosed(id.clone()));
        }
        // Room for the backlog, so it moves in at once and in order.
        let (tx, rx) = mpsc::channel(CAPACITY + entry.queue.len());
        for envelope in entry.queue.drain(..) {
            tx.try_send(Box::new(Delivery::local(envelope))).expect("the channel has room for the backlog");
        }
        entry.inbox = Some(tx);
        Ok(Inbox { rx, feed: Arc::new(LocalFeed { exchange: self.clone(), id: id.clone() }) })
    }

    /// Sends in process; an entity here is never inactive (its process is this one).
    pub(crate) async fn send(&self, envelope: Envelope, _: super::WhenInactive) -> Result<(), Error> {
        let inbox = {
            let mut entries = self.entries()?;
            let entry = Self::accepting(&mut entries, &envelope.dest)?;
            match &entry.inbox {
                Some(inbox) => inbox.clone(),
                None => {
                    entry.queue.push_back(envelope);
                    return Ok(());
                }
            }
        };
        if let Err(refused) = inbox.send(Box::new(Delivery::local(envelope))).await {
            // The mailbox closed meanwhile: the message waits for the next one.
            let envelope = refused.0.into_envelope();
            let mut entries = self.entries()?;
            Self::accepting(&mut entries, &envelope.dest)?.queue.push_back(envelope);
        }
        Ok(())
    }

    fn accepting<'a>(entries: &'a mut HashMap<Uuid, Entry>, dest: &EntityId) -> Result<&'a mut Entry, Error> {
        match entries.get_mut(&dest.uid()) {
            None => Err(Error::BadEntityId(dest.clone())),
            Some(entry) if !entry.active => Err(Error::MailboxClosed(dest.clone())),
            Some(entry) => Ok(entry),
        }
    }

    /// A mailbox closed: messages it held go back to the front of the queue.
    pub(crate) fn detach(&self, id: &EntityId, held: Vec<Envelope>) {
        let Ok(mut entries) = self.entries() else {
            return;
        };
        let Some(entry) = entries.get_mut(&id.uid()) else {
            return;
        };
        if entry.inbox.as_ref().is_some_and(mpsc::Sender::is_closed) {
            entry.inbox = None;
        }
        if entry.active {
            for envelope in held.into_iter().rev() {
                entry.queue.push_front(envelope);
            }
        }
    }

    pub(crate) async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }
}

/// A local mailbox's feed: senders put messages straight into its FIFO.
#[derive(Debug)]
struct LocalFeed {
    exchange: LocalExchange,
    id: EntityId,
}

impl Feed for LocalFeed {
    /// What the FIFO holds goes back to the front of the local queue.
    fn close(
        &self,
        rx: mpsc::Receiver<Box<Delivery>>,
        _: Option<(u64, Bytes)>,
    ) -> BoxFuture<'static, Result<(), Error>> {
        let left = drain(rx).into_iter().map(|delivery| delivery.envelope).collect();
        self.exchange.detach(&self.id, left);
        Box::pin(async { Ok(()) })
    }
}
