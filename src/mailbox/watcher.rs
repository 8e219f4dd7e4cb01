//! The Redis watcher: a stream of batches popped from one mailbox's queue.
//!
//! It blocks (`BLPOP`, no timeout) on its own connection, whose response
//! timeout is disabled, so an idle mailbox costs Redis nothing. Under load it
//! drains the queue in batches with `LPOP key count` before blocking again.
//! It also blocks on a private wake key, so closing the mailbox stops it
//! cleanly without abandoning a pop in flight. Failures are yielded (for the
//! mailbox to log) and retried with backoff on a fresh connection.

use std::time::Duration;

use futures::Stream;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use crate::error::Error;

/// Most messages taken from Redis in one round trip.
pub(crate) const BATCH: usize = 512;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the watcher saw.
#[derive(Debug)]
pub(crate) enum Watched {
    /// Raw queue entries, oldest first.
    Batch(Vec<Vec<u8>>),
    /// A Redis failure; the watcher retries after a pause.
    Failed(Error),
    /// The wake key was pushed: the mailbox is closing, the stream ends.
    Woken,
    /// Connected again after a failure: Redis may have lost its state.
    Reconnected,
}

struct State {
    client: redis::Client,
    queue: String,
    wake: String,
    conn: Option<MultiplexedConnection>,
    backoff: Duration,
    done: bool,
}

/// Watches `queue` until `wake` is pushed.
pub(crate) fn watch(client: redis::Client, queue: String, wake: String) -> impl Stream<Item = Watched> {
    let state = State { client, queue, wake, conn: None, backoff: Duration::ZERO, done: false };
    futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let event = state.next().await;
        match &event {
            Watched::Failed(_) => {
                state.conn = None;
                state.backoff = (state.backoff * 2).clamp(Duration::from_millis(50), MAX_BACKOFF);
            }
            Watched::Woken => state.done = true,
            Watched::Batch(_) | Watched::Reconnected => state.backoff = Duration::ZERO,
        }
        Some((event, state))
    })
}

impl State {
    async fn next(&mut self) -> Watched {
        if !self.backoff.is_zero() {
            tokio::time::sleep(self.backoff).await;
        }
        match self.pop().await {
            Ok(event) => event,
            Err(e) => Watched::Failed(e),
        }
    }

    async fn pop(&mut self) -> Result<Watched, Error> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_response_timeout(None)
                    .set_connection_timeout(Some(Duration::from_secs(1)));
                let conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
                let conn = self.conn.insert(conn);
                if !self.backoff.is_zero() {
                    return Ok(Watched::Reconnected);
                }
                conn
            }
        };
        loop {
            let batch: Option<Vec<Vec<u8>>> = redis::cmd("LPOP").arg(&self.queue).arg(BATCH).query_async(conn).await?;
            if let Some(batch) = batch.filter(|b| !b.is_empty()) {
                return Ok(Watched::Batch(batch));
            }
            let popped: Option<(String, Vec<u8>)> =
                redis::cmd("BLPOP").arg(&self.queue).arg(&self.wake).arg(0).query_async(conn).await?;
            match popped {
                Some((key, _)) if key == self.wake => return Ok(Watched::Woken),
                Some((_, value)) => return Ok(Watched::Batch(vec![value])),
                None => continue,
            }
        }
    }
}
