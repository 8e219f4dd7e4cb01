//! Frames: a 4-byte big-endian payload length, a kind byte, a 4-byte
//! big-endian lane (which sender-to-mailbox stream of the connection it
//! belongs to; 0 for a keepalive), the payload.
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

/// Length (4 bytes), kind (1 byte) and lane (4 bytes).
pub(crate) const HEADER_LEN: usize = 9;

const MESSAGE: u8 = 0;
const ACK: u8 = 1;
const KEEPALIVE: u8 = 2;
const CLOSING: u8 = 3;
const OPEN: u8 = 4;
const REFUSED: u8 = 5;
const END: u8 = 6;
const HELLO: u8 = 7;
const BYE: u8 = 8;
const ACK_LEN: usize = 8;
const OPEN_LEN: usize = 16;
/// The longest address a `Hello` may name.
const HELLO_MAX: usize = 255;

/// Payloads shorter than this are copied into the outbox's buffer (one
/// write for many small frames); longer ones are written from where they are.
const COPY_BELOW: usize = 16 << 10;
/// Buffers handed to one vectored write.
const MAX_SLICES: usize = 64;

/// One unit of the peer protocol. A lane is one sender's stream of messages
/// to one mailbox; a connection carries many.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// Sender: lane `.0` carries messages for mailbox `.1` from now on.
    Open(u32, uuid::Uuid),
    /// Sender: an encoded envelope on a lane.
    Message(u32, Bytes),
    /// Sender: the lane is done with (everything on it acknowledged, or
    /// given up); its number is not used again.
    End(u32),
    /// Mailbox: how many messages of the lane it has taken so far.
    Ack(u32, u64),
    /// Mailbox: it closes the lane on purpose, having acknowledged everything
    /// it took: what is unacknowledged was not taken.
    Closing(u32),
    /// Mailbox's process: it does not serve the mailbox the lane opened
    /// (closed, or moved); nothing sent on the lane was taken.
    Refused(u32),
    /// Either side: nothing to say, but alive.
    Keepalive,
    /// The dialing side, first: the address it publishes, so that the other
    /// side sends to its mailboxes on this connection too.
    Hello(String),
    /// The dialing side, last: it has no lane open and saw none of the other
    /// side's: their lanes still open were not taken, and go elsewhere.
    Bye,
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
            (MESSAGE, _)
            | (ACK, ACK_LEN)
            | (OPEN, OPEN_LEN)
            | (KEEPALIVE | CLOSING | REFUSED | END | BYE, 0)
            | (HELLO, 1..=HELLO_MAX) => {}
            (ACK | OPEN | KEEPALIVE | CLOSING | REFUSED | END | BYE | HELLO, _) => {
                return Err(invalid("control frame of the wrong length"))
            }
            _ => return Err(invalid("unknown frame kind")),
        }
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        let kind = src[4];
        let lane = u32::from_be_bytes([src[5], src[6], src[7], src[8]]);
        src.advance(HEADER_LEN);
        let payload = src.split_to(len);
        Ok(Some(match kind {
            MESSAGE => Frame::Message(lane, payload.freeze()),
            ACK => Frame::Ack(lane, u64::from_be_bytes(payload[..].try_into().expect("length checked above"))),
            OPEN => Frame::Open(lane, uuid::Uuid::from_slice(&payload).expect("length checked above")),
            CLOSING => Frame::Closing(lane),
            REFUSED => Frame::Refused(lane),
            END => Frame::End(lane),
            HELLO => match String::from_utf8(payload.to_vec()) {
                Ok(address) => Frame::Hello(address),
                Err(_) => return Err(invalid("a hello whose address is not UTF-8")),
            },
            BYE => Frame::Bye,
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
        Frame::Open(lane, dest) => {
            put_header(dst, OPEN, *lane, OPEN_LEN);
            dst.extend_from_slice(dest.as_bytes());
        }
        Frame::Message(lane, payload) => {
            put_header(dst, MESSAGE, *lane, payload.len());
            dst.extend_from_slice(payload);
        }
        Frame::End(lane) => put_header(dst, END, *lane, 0),
        Frame::Ack(lane, count) => {
            put_header(dst, ACK, *lane, ACK_LEN);
            dst.put_u64(*count);
        }
        Frame::Closing(lane) => put_header(dst, CLOSING, *lane, 0),
        Frame::Refused(lane) => put_header(dst, REFUSED, *lane, 0),
        Frame::Keepalive => put_header(dst, KEEPALIVE, 0, 0),
        // Sessions name only addresses of 1 to HELLO_MAX bytes.
        Frame::Hello(address) => {
            put_header(dst, HELLO, 0, address.len());
            dst.extend_from_slice(address.as_bytes());
        }
        Frame::Bye => put_header(dst, BYE, 0, 0),
    }
}

fn put_header(dst: &mut BytesMut, kind: u8, lane: u32, len: usize) {
    let len = u32::try_from(len).expect("payloads are capped far below 4 GiB");
    dst.reserve(HEADER_LEN);
    dst.put_u32(len);
    dst.put_u8(kind);
    dst.put_u32(lane);
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

    /// Queues a control frame; returns the bytes it adds.
    pub(crate) fn push(&mut self, frame: Frame) -> usize {
        let before = self.tail.len();
        put(&frame, &mut self.tail);
        self.tail.len() - before
    }

    /// Queues a message frame on `lane` whose payload is `parts`, one after
    /// the other; returns the bytes it adds.
    pub(crate) fn push_message(&mut self, lane: u32, parts: &Parts) -> usize {
        put_header(&mut self.tail, MESSAGE, lane, parts.len());
        self.tail.extend_from_slice(&parts.head);
        if parts.payload.len() < COPY_BELOW {
            self.tail.extend_from_slice(&parts.payload);
        } else {
            self.seal();
            self.sealed.push_back(parts.payload.clone());
        }
        HEADER_LEN + parts.len()
    }

    fn seal(&mut self) {
        if !self.tail.is_empty() {
            self.sealed.push_back(self.tail.split().freeze());
        }
    }

    /// Writes as much as one vectored write takes; returns the bytes written.
    /// Cancel-safe: dropped before it completes, it has written nothing and
    /// lost nothing.
    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(&mut self, out: &mut W) -> io::Result<usize> {
        self.seal();
        let slices: Vec<IoSlice<'_>> = self.sealed.iter().take(MAX_SLICES).map(|b| IoSlice::new(b)).collect();
        let mut written = out.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let total = written;
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
        Ok(total)
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
            Frame::Open(1, uuid::Uuid::from_u128(42)),
            Frame::Message(1, Bytes::from_static(b"one")),
            Frame::Keepalive,
            Frame::Ack(1, 7),
            Frame::Message(2, Bytes::new()),
            Frame::Message(1, Bytes::from_static(b"three")),
            Frame::Closing(2),
            Frame::Refused(3),
            Frame::End(1),
            Frame::Hello("127.0.0.1:4000".into()),
            Frame::Bye,
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
        let whole = encoded(&[Frame::Message(9, Bytes::from_static(b"hello world"))]);
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        for byte in &whole[..whole.len() - 1] {
            buf.put_u8(*byte);
            assert!(codec.decode(&mut buf).unwrap().is_none());
        }
        buf.put_u8(whole[whole.len() - 1]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Message(9, Bytes::from_static(b"hello world"))));
    }

    #[test]
    fn oversized_unknown_and_malformed_headers_are_refused_before_allocating() {
        let headers = [
            [0xff, 0xff, 0xff, 0xff, MESSAGE],
            [0, 0, 0, 9, 9],
            [0, 0, 0, 4, ACK],
            [0, 0, 0, 1, KEEPALIVE],
            [0, 0, 0, 15, OPEN],
        ];
        for header in headers {
            let mut buf = BytesMut::from(&header[..]);
            buf.put_u32(1);
            buf.put_slice(b"xx");
            let before = buf.capacity();
            assert!(FrameCodec::new(1024).decode(&mut buf).is_err(), "{header:?}");
            assert!(buf.capacity() <= before.max(64), "capacity grew to {}", buf.capacity());
        }
    }

    #[test]
    fn hanging_up_mid_frame_is_an_error() {
        let whole = encoded(&[Frame::Message(1, Bytes::from_static(b"hello"))]);
        let mut buf = BytesMut::from(&whole[..11]);
        let mut codec = FrameCodec::new(1024);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(codec.decode_eof(&mut buf).is_err());
    }

    #[tokio::test]
    async fn the_outbox_writes_small_and_large_frames_in_order_through_a_narrow_pipe() {
        let big = Bytes::from(vec![9u8; 100_000]);
        let parts = |head: &'static [u8], payload: Bytes| Parts { head: Bytes::from_static(head), payload };
        let mut outbox = Outbox::default();
        outbox.push_message(1, &parts(b"a", Bytes::new()));
        outbox.push_message(2, &parts(b"head", big.clone()));
        outbox.push(Frame::Keepalive);
        outbox.push_message(1, &parts(b"b", Bytes::from_static(b"c")));
        let mut whole = b"head".to_vec();
        whole.extend_from_slice(&big);
        let frames = vec![
            Frame::Message(1, Bytes::from_static(b"a")),
            Frame::Message(2, whole.into()),
            Frame::Keepalive,
            Frame::Message(1, Bytes::from_static(b"bc")),
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
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(l, p)| Frame::Message(l, p.into())),
            (any::<u32>(), any::<u64>()).prop_map(|(l, n)| Frame::Ack(l, n)),
            (any::<u32>(), any::<u128>()).prop_map(|(l, d)| Frame::Open(l, uuid::Uuid::from_u128(d))),
            Just(Frame::Keepalive),
            any::<u32>().prop_map(Frame::Closing),
            any::<u32>().prop_map(Frame::Refused),
            any::<u32>().prop_map(Frame::End),
            "[a-z0-9.:]{1,40}".prop_map(Frame::Hello),
            Just(Frame::Bye),
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
                        Ok(Some(Frame::Message(_, payload))) => prop_assert!(payload.len() <= 256),
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
