//! Encrypted peer links (the `encryption` feature). Once the academy
//! handshake has authenticated both ends, a Noise
//! `NNpsk0_25519_ChaChaPoly_BLAKE2s` handshake runs: fresh ephemeral keys on
//! both sides (forward secrecy), a pre-shared key derived from the shared
//! secret, and both academy hellos as the prologue, so the two handshakes
//! cannot be mixed. After it, every byte travels in Noise transport
//! messages: a 2-byte big-endian length, then ciphertext and a 16-byte tag.
//!
//! Each half keeps its own nonce (Noise's stateless transport mode), so the
//! reading and the writing half never share a lock.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use sha2::{Digest, Sha256};
use snow::StatelessTransportState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::transport::{PeerRead, PeerWrite};
use crate::error::Error;

const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// The largest Noise message, and the authentication tag each one ends with.
const MAX_MESSAGE: usize = 65_535;
const TAG: usize = 16;
/// The most plaintext one message carries.
const MAX_PLAIN: usize = MAX_MESSAGE - TAG;

fn noise_failed(_: snow::Error) -> Error {
    Error::Handshake("the encrypted session could not be set up (tampered with?)")
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Runs the Noise handshake over `stream` and returns its encrypted halves.
pub(crate) async fn session(
    mut stream: TcpStream,
    secret: &[u8],
    transcript: &[u8],
    initiator: bool,
) -> Result<(PeerRead, PeerWrite), Error> {
    let psk: [u8; 32] = Sha256::new().chain_update(b"actix-academy noise psk 1").chain_update(secret).finalize().into();
    let builder = snow::Builder::new(PATTERN.parse().expect("a valid Noise pattern")).psk(0, &psk).prologue(transcript);
    let mut state = match initiator {
        true => builder.build_initiator(),
        false => builder.build_responder(),
    }
    .map_err(noise_failed)?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    for turn in 0..2 {
        if (turn == 0) == initiator {
            let len = state.write_message(&[], &mut buf).map_err(noise_failed)?;
            stream.write_all(&(len as u16).to_be_bytes()).await?;
            stream.write_all(&buf[..len]).await?;
        } else {
            let len = stream.read_u16().await? as usize;
            let mut message = vec![0u8; len];
            stream.read_exact(&mut message).await?;
            state.read_message(&message, &mut buf).map_err(noise_failed)?;
        }
    }
    let state = Arc::new(state.into_stateless_transport_mode().map_err(noise_failed)?);
    let (read, write) = stream.into_split();
    let read = NoiseRead {
        inner: read,
        state: state.clone(),
        nonce: 0,
        cipher: BytesMut::new(),
        plain: BytesMut::new(),
        failed: false,
    };
    let write = NoiseWrite { inner: write, state, nonce: 0, out: Vec::new(), sent: 0, pending: Vec::new() };
    Ok((Box::new(read), Box::new(write)))
}

/// Decrypts what arrives, one Noise message at a time.
struct NoiseRead<R> {
    inner: R,
    state: Arc<StatelessTransportState>,
    nonce: u64,
    /// Ciphertext received, not yet a whole message.
    cipher: BytesMut,
    /// Plaintext decrypted, not yet read.
    plain: BytesMut,
    /// A message failed: nothing after it is read.
    failed: bool,
}

impl<R: AsyncRead + Unpin> AsyncRead for NoiseRead<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Err(invalid("the encrypted session failed")));
        }
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain[..n]);
                this.plain.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.cipher.len() >= 2 {
                let len = u16::from_be_bytes([this.cipher[0], this.cipher[1]]) as usize;
                if len < TAG {
                    this.failed = true;
                    return Poll::Ready(Err(invalid("an encrypted message shorter than its tag")));
                }
                if this.cipher.len() >= 2 + len {
                    let message = this.cipher.split_to(2 + len);
                    this.plain.resize(len - TAG, 0);
                    if this.state.read_message(this.nonce, &message[2..], &mut this.plain).is_err() {
                        this.plain.clear();
                        this.failed = true;
                        return Poll::Ready(Err(invalid("an encrypted message failed authentication")));
                    }
                    this.nonce += 1;
                    continue;
                }
            }
            this.cipher.reserve(MAX_MESSAGE + 2);
            if ready!(tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.cipher))? == 0 {
                return Poll::Ready(match this.cipher.is_empty() {
                    true => Ok(()),
                    false => Err(io::ErrorKind::UnexpectedEof.into()),
                });
            }
        }
    }
}

/// Encrypts what is written, one Noise message per write.
///
/// A write returns only once its message is on the socket; one interrupted
/// by `Pending` keeps its ciphertext and must be retried with the same bytes
/// (as every caller of `AsyncWrite` in this crate does; other bytes are an
/// error, never silently replaced). A flush covers what writes returned.
struct NoiseWrite<W> {
    inner: W,
    state: Arc<StatelessTransportState>,
    nonce: u64,
    /// The current message (length prefix and ciphertext) and how much of it is written.
    out: Vec<u8>,
    sent: usize,
    /// The plaintext the current message carries, until reported written.
    pending: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> NoiseWrite<W> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for NoiseWrite<W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let n = buf.len().min(MAX_PLAIN);
            this.out.resize(2 + n + TAG, 0);
            this.out[..2].copy_from_slice(&((n + TAG) as u16).to_be_bytes());
            this.state
                .write_message(this.nonce, &buf[..n], &mut this.out[2..])
                .map_err(|_| io::Error::other("encryption failed"))?;
            this.nonce += 1;
            this.sent = 0;
            this.pending.extend_from_slice(&buf[..n]);
        } else if !buf.starts_with(&this.pending) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidInput, "a write retried with other bytes")));
        }
        ready!(this.poll_drain(cx))?;
        let n = this.pending.len();
        this.pending.clear();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // What writes returned is on the socket already; a message whose
        // write was interrupted is not owed yet.
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::handshake::Protection;
    use crate::peer::transport::Security;
    use crate::peer::Secret;

    async fn pair(
        client_secret: &[u8],
    ) -> (Result<(PeerRead, PeerWrite), Error>, Result<(PeerRead, PeerWrite), Error>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let me = uuid::Uuid::new_v4();
        let server = tokio::spawn(async move {
            let security = Security::new(Secret::new(b"s3cret"), Protection::Noise);
            let (_, read, write) = security.accept(listener.accept().await.unwrap().0, |dest| dest == me).await?;
            Ok((read, write))
        });
        let security = Security::new(Secret::new(client_secret), Protection::Noise);
        let client = security.connect(TcpStream::connect(address).await.unwrap(), &address.to_string(), me).await;
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn bytes_cross_encrypted_in_both_directions_and_in_large_pieces() {
        let (client, server) = pair(b"s3cret").await;
        let ((mut c_read, mut c_write), (mut s_read, mut s_write)) = (client.unwrap(), server.unwrap());
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            c_write.write_all(&sent).await.unwrap();
            c_write.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        s_read.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, big);
        s_write.write_all(b"ack").await.unwrap();
        let mut back = [0u8; 3];
        c_read.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ack");
    }

    #[tokio::test]
    async fn another_secret_never_gets_a_session() {
        let (client, server) = pair(b"guess").await;
        assert!(client.is_err() && server.is_err());
    }
}
