//! The handshake that opens every peer connection before a single frame is
//! read (fixed sizes, no framing):
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
use uuid::Uuid;

use crate::error::Error;
use crate::message::{WireError, PROTOCOL_VERSION};

/// The shared secret of the handshake. Its `Debug` form never shows it.
#[derive(Clone, Default)]
pub(crate) struct Secret(std::sync::Arc<[u8]>);

impl Secret {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }
}

impl std::ops::Deref for Secret {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(empty)" } else { "Secret(<redacted>)" })
    }
}

/// Magic bytes that open every peer connection.
pub(crate) const MAGIC: [u8; 4] = *b"ACAD";

const NONCE_LEN: usize = 16;
const PROOF_LEN: usize = 32;
const CLIENT_HELLO_LEN: usize = 4 + 1 + 16 + NONCE_LEN;
const SERVER_HELLO_LEN: usize = 4 + 1 + NONCE_LEN + PROOF_LEN;

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
        return Err(WireError::UnsupportedVersion(hello[4]).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_never_printed() {
        assert_eq!(format!("{:?}", Secret::new(b"hunter2")), "Secret(<redacted>)");
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
