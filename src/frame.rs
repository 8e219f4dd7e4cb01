//! Peer-to-peer framing: a 4-byte big-endian length, then the payload, with a
//! size cap checked before anything is allocated; and the handshake that opens
//! every connection before a single message is decoded.
//!
//! Handshake (fixed sizes, no framing):
//! 1. client -> server: `ACAD`, version, destination UUID, client nonce (37 bytes);
//! 2. server -> client: `ACAD`, version, server nonce, server proof (53 bytes);
//! 3. client -> server: client proof (32 bytes).
//!
//! A proof is HMAC-SHA256 of both nonces and the destination under the shared
//! secret, so the secret never crosses the wire and a stale address that now
//! belongs to another mailbox is refused.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::LengthDelimitedCodec;
use uuid::Uuid;

use crate::error::Error;
use crate::message::PROTOCOL_VERSION;

/// Default cap on one frame's payload: 64 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 << 20;

/// Magic bytes that open every peer connection.
pub(crate) const MAGIC: [u8; 4] = *b"ACAD";

const NONCE_LEN: usize = 16;
const PROOF_LEN: usize = 32;
const CLIENT_HELLO_LEN: usize = 4 + 1 + 16 + NONCE_LEN;
const SERVER_HELLO_LEN: usize = 4 + 1 + NONCE_LEN + PROOF_LEN;

/// The length-delimited codec with the given payload cap. It reads the header,
/// compares it with the cap, and only then reserves room for the payload;
/// partial headers and payloads simply wait for more bytes.
pub(crate) fn codec(max_frame_len: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_type::<u32>().max_frame_length(max_frame_len).new_codec()
}

/// Acknowledgement frames (receiver -> sender) carry one big-endian `u64`:
/// how many messages of this connection the mailbox has taken so far.
pub(crate) const ACK_LEN: usize = 8;

fn proof(secret: &[u8], side: &[u8], dest: Uuid, client: &[u8], server: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    for part in [side, dest.as_bytes(), client, server] {
        mac.update(part);
    }
    mac
}

/// Opens a connection to mailbox `dest` and proves knowledge of `secret`.
pub(crate) async fn client_handshake<S>(stream: &mut S, secret: &[u8], dest: Uuid) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut hello = Vec::with_capacity(CLIENT_HELLO_LEN);
    hello.extend_from_slice(&MAGIC);
    hello.push(PROTOCOL_VERSION);
    hello.extend_from_slice(dest.as_bytes());
    hello.extend_from_slice(&nonce);
    stream.write_all(&hello).await?;

    let mut reply = [0u8; SERVER_HELLO_LEN];
    stream.read_exact(&mut reply).await?;
    check_magic_and_version(&reply)?;
    let server_nonce = &reply[5..5 + NONCE_LEN];
    proof(secret, b"server", dest, &nonce, server_nonce)
        .verify_slice(&reply[5 + NONCE_LEN..])
        .map_err(|_| Error::Handshake("the peer does not know the shared secret"))?;

    let ours = proof(secret, b"client", dest, &nonce, server_nonce).finalize().into_bytes();
    stream.write_all(&ours).await?;
    Ok(())
}

/// Accepts a connection for mailbox `me` if the peer proves knowledge of `secret`.
pub(crate) async fn server_handshake<S>(stream: &mut S, secret: &[u8], me: Uuid) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = [0u8; CLIENT_HELLO_LEN];
    stream.read_exact(&mut hello).await?;
    check_magic_and_version(&hello)?;
    if hello[5..21] != me.as_bytes()[..] {
        return Err(Error::Handshake("the connection is for another mailbox"));
    }
    let client_nonce = &hello[21..];

    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut reply = Vec::with_capacity(SERVER_HELLO_LEN);
    reply.extend_from_slice(&MAGIC);
    reply.push(PROTOCOL_VERSION);
    reply.extend_from_slice(&nonce);
    reply.extend_from_slice(&proof(secret, b"server", me, client_nonce, &nonce).finalize().into_bytes());
    stream.write_all(&reply).await?;

    let mut theirs = [0u8; PROOF_LEN];
    stream.read_exact(&mut theirs).await?;
    proof(secret, b"client", me, client_nonce, &nonce)
        .verify_slice(&theirs)
        .map_err(|_| Error::Handshake("the peer does not know the shared secret"))
}

fn check_magic_and_version(hello: &[u8]) -> Result<(), Error> {
    if hello[..4] != MAGIC {
        return Err(Error::Handshake("wrong magic bytes"));
    }
    if hello[4] != PROTOCOL_VERSION {
        return Err(Error::UnsupportedVersion(hello[4]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use tokio_util::codec::{Decoder, Encoder};

    fn framed(payloads: &[&[u8]]) -> BytesMut {
        let mut buf = BytesMut::new();
        for p in payloads {
            codec(1024).encode(bytes::Bytes::copy_from_slice(p), &mut buf).unwrap();
        }
        buf
    }

    #[test]
    fn many_frames_in_one_read() {
        let mut buf = framed(&[b"one", b"", b"three"]);
        let mut c = codec(1024);
        let got: Vec<_> = std::iter::from_fn(|| c.decode(&mut buf).unwrap()).collect();
        assert_eq!(got, [&b"one"[..], b"", b"three"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_frame_fed_one_byte_at_a_time() {
        let whole = framed(&[b"hello world"]);
        let mut c = codec(1024);
        let mut buf = BytesMut::new();
        for (i, byte) in whole.iter().enumerate() {
            assert!(c.decode(&mut buf).unwrap().is_none());
            buf.put_u8(*byte);
            if i + 1 < whole.len() {
                assert!(c.decode(&mut buf).unwrap().is_none(), "byte {i}");
            }
        }
        assert_eq!(c.decode(&mut buf).unwrap().unwrap(), &b"hello world"[..]);
    }

    #[test]
    fn oversized_header_is_refused_before_allocating() {
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        buf.put_slice(b"xx");
        let before = buf.capacity();
        assert!(codec(1024).decode(&mut buf).is_err());
        assert!(buf.capacity() <= before.max(64), "capacity grew to {}", buf.capacity());
    }

    #[test]
    fn hanging_up_mid_frame_is_an_error() {
        let whole = framed(&[b"hello"]);
        let mut buf = BytesMut::from(&whole[..6]);
        let mut c = codec(1024);
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert!(c.decode_eof(&mut buf).is_err());
    }

    #[tokio::test]
    async fn handshake_needs_the_same_secret_and_destination() {
        async fn run(client_secret: &'static [u8], dest: Uuid, me: Uuid) -> (Result<(), Error>, Result<(), Error>) {
            let (mut a, mut b) = tokio::io::duplex(1024);
            let server = tokio::spawn(async move { server_handshake(&mut b, b"s3cret", me).await });
            let client = client_handshake(&mut a, client_secret, dest).await;
            drop(a);
            (client, server.await.unwrap())
        }
        let me = Uuid::new_v4();
        let (c, s) = run(b"s3cret", me, me).await;
        assert!(c.is_ok() && s.is_ok());
        let (c, s) = run(b"wrong", me, me).await;
        assert!(c.is_err() && s.is_err());
        let (c, s) = run(b"s3cret", Uuid::new_v4(), me).await;
        assert!(c.is_err() && s.is_err());
    }
}

#[cfg(test)]
mod fuzz {
    use super::codec;
    use bytes::BytesMut;
    use proptest::prelude::*;
    use tokio_util::codec::{Decoder, Encoder};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// Any bytes, cut anywhere: the decoder yields frames or an error, never panics,
        /// and never holds more than the cap plus what it was given.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), cuts in proptest::collection::vec(0usize..512, 0..8)) {
            let mut c = codec(256);
            let mut buf = BytesMut::new();
            let mut last = 0;
            let mut cuts = cuts;
            cuts.push(bytes.len());
            cuts.sort_unstable();
            for cut in cuts.into_iter().map(|c| c.min(bytes.len())) {
                buf.extend_from_slice(&bytes[last..cut]);
                last = cut;
                loop {
                    match c.decode(&mut buf) {
                        Ok(Some(frame)) => prop_assert!(frame.len() <= 256),
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
                prop_assert!(buf.capacity() <= 8192 + 512);
            }
        }

        /// Valid frames, delivered in arbitrary pieces, come out whole and in order.
        #[test]
        fn frames_survive_any_split(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8), step in 1usize..40) {
            let mut wire = BytesMut::new();
            for p in &payloads {
                codec(256).encode(bytes::Bytes::from(p.clone()), &mut wire).unwrap();
            }
            let mut c = codec(256);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some(frame) = c.decode(&mut buf).unwrap() {
                    out.push(frame.to_vec());
                }
            }
            prop_assert_eq!(out, payloads);
        }
    }
}
