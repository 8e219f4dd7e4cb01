//! Frames: a 4-byte big-endian payload length, a kind byte, the payload.
//!
//! [`FrameCodec`] decodes them (checking the length against the cap and the
//! payload against its kind before anything is allocated) and encodes the
//! small ones; [`Outbox`] queues frames for a vectored write, copying small
//! payloads into one buffer and passing large ones through untouched.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::message::Parts;

/// Default cap on one message frame's payload: 64 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 << 20;

/// Length (4 bytes) and kind (1 byte).
const HEADER_LEN: usize = 5;

const MESSAGE: u8 = 0;
const ACK: u8 = 1;
const KEEPALIVE: u8 = 2;
const CLOSING: u8 = 3;
const ACK_LEN: usize = 8;

/// Payloads shorter than this are copied into the outbox's buffer (one
/// write for many small frames); longer ones are written from where they are.
const COPY_BELOW: usize = 16 << 10;
/// Buffers handed to one vectored write.
const MAX_SLICES: usize = 64;

/// One unit of the peer protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// An encoded envelope.
    Message(Bytes),
    /// How many messages of this connection the mailbox has taken so far.
    Ack(u64),
    /// Nothing to say, but alive.
    Keepalive,
    /// The mailbox closes this connection on purpose, having acknowledged
    /// everything it took: what is unacknowledged was not taken.
    Closing,
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Decodes frames whose message payloads are at most `max_frame_len` bytes;
/// encodes any frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameCodec {
    max_frame_len: usize,
}

impl FrameCodec {
    pub(crate) fn new(max_frame_len: usize) -> Self {
        Self { max_frame_len }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Frame>> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        match (src[4], len) {
            (MESSAGE, len) if len > self.max_frame_len => return Err(invalid("frame over the size cap")),
            (MESSAGE, _) | (ACK, ACK_LEN) | (KEEPALIVE | CLOSING, 0) => {}
            (ACK | KEEPALIVE | CLOSING, _) => return Err(invalid("control frame of the wrong length")),
            _ => return Err(invalid("unknown frame kind")),
        }
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        let kind = src[4];
        src.advance(HEADER_LEN);
        let payload = src.split_to(len);
        Ok(Some(match kind {
            MESSAGE => Frame::Message(payload.freeze()),
            ACK => Frame::Ack(u64::from_be_bytes(payload[..].try_into().expect("length checked above"))),
            CLOSING => Frame::Closing,
            _ => Frame::Keepalive,
        }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> io::Result<()> {
        put(&frame, dst);
        Ok(())
    }
}

/// Writes `frame` (header and payload) into `dst`.
fn put(frame: &Frame, dst: &mut BytesMut) {
    match frame {
        Frame::Message(payload) => {
            put_header(dst, MESSAGE, payload.len());
            dst.extend_from_slice(payload);
        }
        Frame::Ack(count) => {
            put_header(dst, ACK, ACK_LEN);
            dst.put_u64(*count);
        }
        Frame::Keepalive => put_header(dst, KEEPALIVE, 0),
        Frame::Closing => put_header(dst, CLOSING, 0),
    }
}

fn put_header(dst: &mut BytesMut, kind: u8, len: usize) {
    let len = u32::try_from(len).expect("payloads are capped far below 4 GiB");
    dst.reserve(HEADER_LEN);
    dst.put_u32(len);
    dst.put_u8(kind);
}

/// Frames waiting to be written, in order. Small frames share one buffer;
/// a large payload is queued as its own `Bytes`, so it is never copied.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    sealed: VecDeque<Bytes>,
    tail: BytesMut,
}

impl Outbox {
    /// Nothing left to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.tail.is_empty()
    }

    /// Bytes waiting to be written.
    pub(crate) fn len(&self) -> usize {
        self.sealed.iter().map(Bytes::len).sum::<usize>() + self.tail.len()
    }

    /// Queues a control frame.
    pub(crate) fn push(&mut self, frame: Frame) {
        put(&frame, &mut self.tail);
    }

    /// Queues a message frame whose payload is `parts`, one after the other.
    pub(crate) fn push_message(&mut self, parts: &Parts) {
        put_header(&mut self.tail, MESSAGE, parts.len());
        self.tail.extend_from_slice(&parts.head);
        if parts.payload.len() < COPY_BELOW {
            self.tail.extend_from_slice(&parts.payload);
        } else {
            self.seal();
            self.sealed.push_back(parts.payload.clone());
        }
    }

    fn seal(&mut self) {
        if !self.tail.is_empty() {
            self.sealed.push_back(self.tail.split().freeze());
        }
    }

    /// Writes as much as one vectored write takes. Cancel-safe: dropped
    /// before it completes, it has written nothing and lost nothing.
    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(&mut self, out: &mut W) -> io::Result<()> {
        self.seal();
        let slices: Vec<IoSlice<'_>> = self.sealed.iter().take(MAX_SLICES).map(|b| IoSlice::new(b)).collect();
        let mut written = out.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let front = self.sealed.front_mut().expect("written bytes were queued");
            if front.len() <= written {
                written -= front.len();
                self.sealed.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(frames: &[Frame]) -> BytesMut {
        let mut buf = BytesMut::new();
        for frame in frames {
            FrameCodec::new(1024).encode(frame.clone(), &mut buf).unwrap();
        }
        buf
    }

    fn all() -> Vec<Frame> {
        vec![
            Frame::Message(Bytes::from_static(b"one")),
            Frame::Keepalive,
            Frame::Ack(7),
            Frame::Message(Bytes::new()),
            Frame::Message(Bytes::from_static(b"three")),
        ]
    }

    #[test]
    fn every_kind_round_trips_and_many_fit_in_one_read() {
        let mut buf = encoded(&all());
        let mut codec = FrameCodec::new(1024);
        let got: Vec<_> = std::iter::from_fn(|| codec.decode(&mut buf).unwrap()).collect();
        assert_eq!(got, all());
        assert!(buf.is_empty());
    }

    #[test]
    fn a_frame_fed_one_byte_at_a_time() {
        let whole = encoded(&[Frame::Message(Bytes::from_static(b"hello world"))]);
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        for byte in &whole[..whole.len() - 1] {
            buf.put_u8(*byte);
            assert!(codec.decode(&mut buf).unwrap().is_none());
        }
        buf.put_u8(whole[whole.len() - 1]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Message(Bytes::from_static(b"hello world"))));
    }

    #[test]
    fn oversized_unknown_and_malformed_headers_are_refused_before_allocating() {
        for header in [[0xff, 0xff, 0xff, 0xff, MESSAGE], [0, 0, 0, 9, 7], [0, 0, 0, 4, ACK], [0, 0, 0, 1, KEEPALIVE]] {
            let mut buf = BytesMut::from(&header[..]);
            buf.put_slice(b"xx");
            let before = buf.capacity();
            assert!(FrameCodec::new(1024).decode(&mut buf).is_err(), "{header:?}");
            assert!(buf.capacity() <= before.max(64), "capacity grew to {}", buf.capacity());
        }
    }

    #[test]
    fn hanging_up_mid_frame_is_an_error() {
        let whole = encoded(&[Frame::Message(Bytes::from_static(b"hello"))]);
        let mut buf = BytesMut::from(&whole[..7]);
        let mut codec = FrameCodec::new(1024);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(codec.decode_eof(&mut buf).is_err());
    }

    #[tokio::test]
    async fn the_outbox_writes_small_and_large_frames_in_order_through_a_narrow_pipe() {
        let big = Bytes::from(vec![9u8; 100_000]);
        let parts = |head: &'static [u8], payload: Bytes| Parts { head: Bytes::from_static(head), payload };
        let mut outbox = Outbox::default();
        outbox.push_message(&parts(b"a", Bytes::new()));
        outbox.push_message(&parts(b"head", big.clone()));
        outbox.push(Frame::Keepalive);
        outbox.push_message(&parts(b"b", Bytes::from_static(b"c")));
        let mut whole = b"head".to_vec();
        whole.extend_from_slice(&big);
        let frames = vec![
            Frame::Message(Bytes::from_static(b"a")),
            Frame::Message(whole.into()),
            Frame::Keepalive,
            Frame::Message(Bytes::from_static(b"bc")),
        ];
        let (mut tx, mut rx) = tokio::io::duplex(1000);
        let writer = async move {
            while !outbox.is_empty() {
                outbox.write_to(&mut tx).await.unwrap();
            }
        };
        let reader = async move {
            let mut got = Vec::new();
            let mut framed = tokio_util::codec::FramedRead::new(&mut rx, FrameCodec::new(1 << 20));
            while got.len() < 4 {
                got.push(futures::StreamExt::next(&mut framed).await.unwrap().unwrap());
            }
            got
        };
        let ((), got) = tokio::join!(writer, reader);
        assert_eq!(got, frames);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|p| Frame::Message(p.into())),
            any::<u64>().prop_map(Frame::Ack),
            Just(Frame::Keepalive),
            Just(Frame::Closing),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// Any bytes, cut anywhere: the decoder yields frames or an error, never panics,
        /// and never holds more than the cap plus what it was given.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), cuts in proptest::collection::vec(0usize..512, 0..8)) {
            let mut codec = FrameCodec::new(256);
            let mut buf = BytesMut::new();
            let mut last = 0;
            let mut cuts = cuts;
            cuts.push(bytes.len());
            cuts.sort_unstable();
            for cut in cuts.into_iter().map(|c| c.min(bytes.len())) {
                buf.extend_from_slice(&bytes[last..cut]);
                last = cut;
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(Frame::Message(payload))) => prop_assert!(payload.len() <= 256),
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
                prop_assert!(buf.capacity() <= 8192 + 512);
            }
        }

        /// Valid frames, delivered in arbitrary pieces, come out whole and in order.
        #[test]
        fn frames_survive_any_split(frames in proptest::collection::vec(frame(), 1..8), step in 1usize..40) {
            let mut wire = BytesMut::new();
            for frame in &frames {
                put(frame, &mut wire);
            }
            let mut codec = FrameCodec::new(256);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some(frame) = codec.decode(&mut buf).unwrap() {
                    out.push(frame);
                }
            }
            prop_assert_eq!(out, frames);
        }
    }
}
