//! Outbound links: one task per destination mailbox owns the TCP connection,
//! so frames never interleave and one sender's messages keep their order.
//! Messages wait in the link's channel, are written in batches (one flush per
//! batch), and stay in an unacknowledged list until the receiver confirms it
//! has taken them. When the link fails (refused or timed-out connect, failed
//! handshake, reset, silent peer), everything unacknowledged or still waiting
//! is pushed to the destination's Redis queue, in order: nothing is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix::Addr;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::{debug, error, warn};
use uuid::Uuid;

use super::actor::{Call, ExchangeActor, Request};
use crate::error::Error;
use crate::frame::{client_handshake, codec, ACK_LEN};
use crate::identifier::EntityId;

/// Messages a link buffers before `send` waits for room.
const LINK_CAPACITY: usize = 4096;
/// Bytes written before a flush, when many messages are waiting.
const MAX_BATCH_BYTES: usize = 256 << 10;
/// Messages per RPUSH when a failed link hands its messages to Redis.
const REQUEUE_CHUNK: usize = 1000;

static NEXT_LINK: AtomicU64 = AtomicU64::new(0);

/// The live links of one exchange, by destination UUID.
pub(crate) type Links = Mutex<HashMap<Uuid, Link>>;

/// Settings every link of an exchange shares.
#[derive(Debug)]
pub(crate) struct LinkConfig {
    pub(crate) secret: Arc<[u8]>,
    pub(crate) connect_timeout: Duration,
    pub(crate) peer_timeout: Duration,
    pub(crate) max_frame_len: usize,
}

/// The sending end of a link to one mailbox.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    id: u64,
    pub(crate) address: String,
    tx: mpsc::Sender<Bytes>,
}

impl Link {
    /// Starts a link task to `dest` at `address`.
    pub(crate) fn spawn(
        dest: EntityId,
        address: String,
        queue_key: String,
        config: Arc<LinkConfig>,
        actor: Addr<ExchangeActor>,
        links: Weak<Links>,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Link {
        let (tx, rx) = mpsc::channel(LINK_CAPACITY);
        let link = Link {
            id: NEXT_LINK.fetch_add(1, Ordering::Relaxed),
            address,
            tx,
        };
        let task = LinkTask {
            id: link.id,
            dest,
            address: link.address.clone(),
            queue_key,
            config,
            actor,
            links,
        };
        tasks.spawn(task.run(rx));
        link
    }

    /// Hands a frame to the link; gives it back if the link has failed.
    pub(crate) async fn send(&self, frame: Bytes) -> Result<(), Bytes> {
        self.tx.send(frame).await.map_err(|e| e.0)
    }
}

struct LinkTask {
    id: u64,
    dest: EntityId,
    address: String,
    queue_key: String,
    config: Arc<LinkConfig>,
    actor: Addr<ExchangeActor>,
    links: Weak<Links>,
}

impl LinkTask {
    #[tracing::instrument(name = "link", skip_all, fields(dest = %self.dest, address = %self.address))]
    async fn run(self, mut rx: mpsc::Receiver<Bytes>) {
        let mut unacked = VecDeque::new();
        match self.serve(&mut rx, &mut unacked).await {
            Ok(()) => debug!("link closed"),
            Err(e) => warn!("link failed, falling back to Redis: {e}"),
        }
        // Leave the cache first, then refuse new frames: a sender that finds
        // the channel closed takes the slow path and sees the new state.
        if let Some(links) = self.links.upgrade() {
            let mut links = links.lock().unwrap_or_else(|e| e.into_inner());
            if links.get(&self.dest.uid()).is_some_and(|l| l.id == self.id) {
                links.remove(&self.dest.uid());
            }
        }
        rx.close();
        while let Ok(frame) = rx.try_recv() {
            unacked.push_back(frame);
        }
        self.requeue(unacked).await;
    }

    /// Runs the connection until the channel closes (then waits for the
    /// last acknowledgements) or the connection fails.
    async fn serve(
        &self,
        rx: &mut mpsc::Receiver<Bytes>,
        unacked: &mut VecDeque<Bytes>,
    ) -> Result<(), Error> {
        let config = &self.config;
        let connect = async {
            let mut stream = TcpStream::connect(&self.address).await?;
            stream.set_nodelay(true)?;
            client_handshake(&mut stream, &config.secret, self.dest.uid()).await?;
            Ok::<_, Error>(stream)
        };
        let stream = timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| Error::Timeout(config.connect_timeout))??;
        let (read, write) = stream.into_split();
        let mut acks = FramedRead::new(read, codec(ACK_LEN));
        let mut out = FramedWrite::new(write, codec(config.max_frame_len));
        let (mut acked, mut sent) = (0u64, 0u64);
        let mut last_heard = Instant::now();
        let mut open = true;
        while open || !unacked.is_empty() {
            tokio::select! {
                biased;
                ack = acks.next() => {
                    let frame = ack.ok_or(Error::Peer("closed by the mailbox"))??;
                    let count = <[u8; ACK_LEN]>::try_from(&frame[..])
                        .map(u64::from_be_bytes)
                        .map_err(|_| Error::Peer("malformed acknowledgement"))?;
                    if count < acked || count > sent {
                        return Err(Error::Peer("acknowledgement out of range"));
                    }
                    unacked.drain(..(count - acked) as usize);
                    acked = count;
                    last_heard = Instant::now();
                }
                frame = rx.recv(), if open => {
                    let Some(frame) = frame else {
                        open = false;
                        continue;
                    };
                    if unacked.is_empty() {
                        last_heard = Instant::now();
                    }
                    let mut batch = frame.len();
                    unacked.push_back(frame.clone());
                    out.feed(frame).await?;
                    sent += 1;
                    while batch < MAX_BATCH_BYTES {
                        let Ok(frame) = rx.try_recv() else { break };
                        batch += frame.len();
                        unacked.push_back(frame.clone());
                        out.feed(frame).await?;
                        sent += 1;
                    }
                    SinkExt::<Bytes>::flush(&mut out).await?;
                }
                _ = tokio::time::sleep_until(last_heard + config.peer_timeout), if !unacked.is_empty() => {
                    return Err(Error::Timeout(config.peer_timeout));
                }
            }
        }
        Ok(())
    }

    /// Pushes frames the peer never confirmed onto the destination's queue.
    async fn requeue(&self, frames: VecDeque<Bytes>) {
        if frames.is_empty() {
            return;
        }
        let total = frames.len();
        let frames = Vec::from(frames);
        for (i, chunk) in frames.chunks(REQUEUE_CHUNK).enumerate() {
            let mut cmd = redis::cmd("RPUSH");
            cmd.arg(&self.queue_key);
            for frame in chunk {
                cmd.arg(&frame[..]);
            }
            if let Err(e) = self
                .actor
                .send(Call::<()>::new(Request::Cmd(cmd)))
                .await
                .map_err(Error::from)
                .and_then(|r| r)
            {
                let lost = total - i * REQUEUE_CHUNK;
                error!(
                    lost,
                    "could not hand undelivered messages to the Redis queue: {e}"
                );
                return;
            }
        }
        debug!(total, "handed undelivered messages to the Redis queue");
    }
}
