//! The handshake that opens every peer connection before a single frame is
//! read (fixed sizes, no framing):
//! 1. client -> server: `ACAD`, version, protection, destination UUID (the
//!    nil UUID: a session names its mailboxes in its lanes), client nonce (38 bytes);
//! 2. server -> client: `ACAD`, version, status, server nonce, server proof (54 bytes);
//! 3. client -> server: client proof (32 bytes).
//!
//! A proof is HMAC-SHA256 of both nonces and the destination under the shared
//! secret, so the secret never crosses the wire. A server that refuses the hello
//! (another version, destination or protection) says why in the status, and
//! a client that finds the server's proof wrong sends a proof of zeros, so
//! both ends of a misconfiguration can name it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use crate::error::{Error, Rejection};
use crate::message::PROTOCOL_VERSION;

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

/// What protects the frames after the handshake; both ends must agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Protection {
    /// Authenticated at the handshake, then plain TCP.
    #[default]
    Plain = 0,
    /// Encrypted and authenticated with Noise (`NNpsk0`) keyed from the secret.
    #[cfg_attr(not(feature = "encryption"), allow(dead_code))]
    Noise = 1,
    /// Encrypted with TLS, certificates checked against a CA (mutual).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Tls = 2,
}

/// Magic bytes that open every peer connection.
pub(crate) const MAGIC: [u8; 4] = *b"ACAD";

const NONCE_LEN: usize = 16;
const PROOF_LEN: usize = 32;
/// Magic, version, and protection (client) or status (server): the part of
/// the hellos no version may change.
const PREFIX_LEN: usize = 6;
const CLIENT_HELLO_LEN: usize = 4 + 1 + 1 + 16 + NONCE_LEN;
const SERVER_HELLO_LEN: usize = 4 + 1 + 1 + NONCE_LEN + PROOF_LEN;

/// Server statuses.
const ACCEPTED: u8 = 0;
const WRONG_DESTINATION: u8 = 1;
const WRONG_PROTECTION: u8 = 2;
const WRONG_VERSION: u8 = 3;

/// Both hellos, as sent: what a Noise handshake that follows binds to.
pub(crate) type Transcript = Vec<u8>;

fn proof(secret: &[u8], side: &[u8], dest: Uuid, client: &[u8], server: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    for part in [side, dest.as_bytes(), client, server] {
        mac.update(part);
    }
    mac
}

/// Opens a connection to mailbox `dest` and proves knowledge of `secret`.
pub(crate) async fn client_handshake<S>(
    stream: &mut S,
    secret: &[u8],
    protection: Protection,
    dest: Uuid,
) -> Result<Transcript, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut transcript = Vec::with_capacity(CLIENT_HELLO_LEN + SERVER_HELLO_LEN);
    transcript.extend_from_slice(&MAGIC);
    transcript.push(PROTOCOL_VERSION);
    transcript.push(protection as u8);
    transcript.extend_from_slice(dest.as_bytes());
    transcript.extend_from_slice(&nonce);
    stream.write_all(&transcript).await?;

    // The first six bytes (magic, version, status) are the same in every
    // version: a refusal can always be read.
    let mut reply = [0u8; SERVER_HELLO_LEN];
    stream.read_exact(&mut reply[..PREFIX_LEN]).await?;
    if reply[..4] != MAGIC {
        return Err(Error::Handshake("the peer is not an academy mailbox"));
    }
    match (reply[4], reply[5]) {
        (PROTOCOL_VERSION, ACCEPTED) => {}
        (PROTOCOL_VERSION, WRONG_DESTINATION) => return Err(Rejection::Destination.into()),
        (PROTOCOL_VERSION, WRONG_PROTECTION) => return Err(Rejection::Protection.into()),
        (PROTOCOL_VERSION, _) => return Err(Error::Handshake("unknown handshake status")),
        (theirs, _) => return Err(Rejection::Version(theirs).into()),
    }
    stream.read_exact(&mut reply[PREFIX_LEN..]).await?;
    let server_nonce = &reply[6..6 + NONCE_LEN];
    if proof(secret, b"server", dest, &nonce, server_nonce).verify_slice(&reply[6 + NONCE_LEN..]).is_err() {
        // Tell the server too, rather than hang up without a reason.
        let _ = stream.write_all(&[0u8; PROOF_LEN]).await;
        return Err(Rejection::Secret.into());
    }
    let ours = proof(secret, b"client", dest, &nonce, server_nonce).finalize().into_bytes();
    stream.write_all(&ours).await?;
    transcript.extend_from_slice(&reply);
    Ok(transcript)
}

/// Accepts a connection for the mailbox it names, if `serves` it, the peer
/// proves knowledge of `secret` and asks for the same `protection`; returns
/// that mailbox.
pub(crate) async fn server_handshake<S>(
    stream: &mut S,
    secret: &[u8],
    protection: Protection,
    serves: impl Fn(Uuid) -> bool,
) -> Result<(Uuid, Transcript), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut transcript = vec![0u8; CLIENT_HELLO_LEN];
    stream.read_exact(&mut transcript[..PREFIX_LEN]).await?;
    if transcript[..4] != MAGIC {
        return Err(Error::Handshake("not an academy peer (wrong magic bytes)"));
    }
    // Another version may send a hello of another length: answer its
    // prefix at once rather than wait for bytes that never come.
    if transcript[4] == PROTOCOL_VERSION {
        stream.read_exact(&mut transcript[PREFIX_LEN..]).await?;
    }
    let refusal = if transcript[4] != PROTOCOL_VERSION {
        Some((WRONG_VERSION, Rejection::Version(transcript[4])))
    } else if !serves(Uuid::from_slice(&transcript[6..22]).expect("16 bytes")) {
        Some((WRONG_DESTINATION, Rejection::Destination))
    } else if transcript[5] != protection as u8 {
        Some((WRONG_PROTECTION, Rejection::Protection))
    } else {
        None
    };
    let me = Uuid::from_slice(&transcript[6..22]).expect("16 bytes");
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut reply = Vec::with_capacity(SERVER_HELLO_LEN);
    reply.extend_from_slice(&MAGIC);
    reply.push(PROTOCOL_VERSION);
    reply.push(refusal.as_ref().map_or(ACCEPTED, |(status, _)| *status));
    reply.extend_from_slice(&nonce);
    match refusal {
        Some((_, rejection)) => {
            reply.extend_from_slice(&[0u8; PROOF_LEN]);
            let _ = stream.write_all(&reply).await;
            return Err(rejection.into());
        }
        None => {
            let client_nonce = &transcript[22..];
            reply.extend_from_slice(&proof(secret, b"server", me, client_nonce, &nonce).finalize().into_bytes());
        }
    }
    stream.write_all(&reply).await?;

    let mut theirs = [0u8; PROOF_LEN];
    stream.read_exact(&mut theirs).await?;
    proof(secret, b"client", me, &transcript[22..], &nonce).verify_slice(&theirs).map_err(|_| Rejection::Secret)?;
    transcript.extend_from_slice(&reply);
    Ok((me, transcript))
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
        type Outcome = (Result<Transcript, Error>, Result<(Uuid, Transcript), Error>);
        async fn run(secret: &'static [u8], protection: Protection, dest: Uuid, me: Uuid) -> Outcome {
            let (mut a, mut b) = tokio::io::duplex(1024);
            let server =
                tokio::spawn(
                    async move { server_handshake(&mut b, b"s3cret", Protection::Plain, |dest| dest == me).await },
                );
            let client = client_handshake(&mut a, secret, protection, dest).await;
            drop(a);
            (client, server.await.unwrap())
        }
        let me = Uuid::new_v4();
        let (c, s) = run(b"s3cret", Protection::Plain, me, me).await;
        let (dest, transcript) = s.unwrap();
        assert_eq!((c.unwrap(), dest), (transcript, me), "both ends saw the same transcript");
        // Each end names the cause.
        fn rejected<T: std::fmt::Debug>(r: Result<T, Error>) -> Rejection {
            match r {
                Err(Error::Rejected(rejection)) => rejection,
                other => panic!("expected a rejection, got {other:?}"),
            }
        }
        let (c, s) = run(b"wrong", Protection::Plain, me, me).await;
        assert_eq!((rejected(c), rejected(s)), (Rejection::Secret, Rejection::Secret));
        let (c, s) = run(b"s3cret", Protection::Plain, Uuid::new_v4(), me).await;
        assert_eq!((rejected(c), rejected(s)), (Rejection::Destination, Rejection::Destination));
        let (c, s) = run(b"s3cret", Protection::Noise, me, me).await;
        assert_eq!((rejected(c), rejected(s)), (Rejection::Protection, Rejection::Protection));
    }

    #[tokio::test]
    async fn another_version_is_named_at_once_whatever_its_hello_length() {
        // Version 4's hello was one byte shorter; its client waits for a reply.
        let (mut a, mut b) = tokio::io::duplex(1024);
        let mut old = b"ACAD\x04".to_vec();
        old.extend_from_slice(&[0u8; 32]);
        a.write_all(&old).await.unwrap();
        let refused = server_handshake(&mut b, b"s3cret", Protection::Plain, |_| true).await;
        assert!(matches!(refused, Err(Error::Rejected(Rejection::Version(4)))), "{refused:?}");
        let mut reply = [0u8; 6];
        a.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"ACAD\x07\x03", "the reply names this version and the refusal");
    }
}
