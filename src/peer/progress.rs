//! When a connection last brought bytes, so that a peer in the middle of a
//! long frame on a slow network is not taken for a silent one.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::FramedRead;

use super::{Frame, FrameCodec};
use crate::error::Error;

/// The last time bytes arrived on one connection.
#[derive(Debug)]
pub(crate) struct Heard {
    epoch: Instant,
    /// Milliseconds after `epoch`.
    last: AtomicU64,
}

impl Heard {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self { epoch: Instant::now(), last: AtomicU64::new(0) })
    }

    fn note(&self) {
        self.last.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// When bytes last arrived (or the connection opened).
    pub(crate) fn at(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// A reader that notes in [`Heard`] every read that brings bytes.
#[derive(Debug)]
pub(crate) struct NoteProgress<R> {
    inner: R,
    heard: Arc<Heard>,
}

impl<R> NoteProgress<R> {
    pub(crate) fn new(inner: R, heard: Arc<Heard>) -> Self {
        Self { inner, heard }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for NoteProgress<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.heard.note();
        }
        polled
    }
}

/// The next frame of `frames`, which note their bytes in `heard`; fails with
/// [`Error::Timeout`] once the peer has sent nothing, not even a byte of a
/// frame under way, for `silence`. `None` at the end of the connection.
pub(crate) async fn next_frame<R: AsyncRead + Unpin>(
    frames: &mut FramedRead<NoteProgress<R>, FrameCodec>,
    heard: &Heard,
    silence: Duration,
) -> Result<Option<Frame>, Error> {
    loop {
        let deadline = tokio::time::Instant::from_std(heard.at() + silence);
        match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(frame) => return frame.transpose().map_err(Error::from),
            Err(_) if heard.at().elapsed() >= silence => return Err(Error::Timeout(silence)),
            Err(_) => {}
        }
    }
}
