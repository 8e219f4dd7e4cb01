//! A peer connection from the socket up to the frames: the handshake, then
//! (with encryption) a Noise session, then the two halves the frame reader
//! and writer use.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use uuid::Uuid;

use super::handshake::{client_handshake, server_handshake, Protection, Secret};
use crate::error::Error;

/// The half of a peer connection frames are read from.
pub(crate) type PeerRead = Box<dyn AsyncRead + Send + Unpin>;
/// The half of a peer connection frames are written to.
pub(crate) type PeerWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// How this exchange's peer connections are protected: the shared secret
/// (proved at every handshake) and whether frames are encrypted.
#[derive(Clone, Debug, Default)]
pub(crate) struct Security {
    pub(crate) secret: Secret,
    pub(crate) protection: Protection,
    /// With [`Protection::Tls`]: the certificates.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<super::tls::PeerTls>,
}

impl Security {
    /// Security without certificates.
    pub(crate) fn new(secret: Secret, protection: Protection) -> Self {
        Self {
            secret,
            protection,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The client side: authenticates to mailbox `dest`, dialed at `address`, over `stream`.
    pub(crate) async fn connect(
        &self,
        mut stream: TcpStream,
        address: &str,
        dest: Uuid,
    ) -> Result<(PeerRead, PeerWrite), Error> {
        stream.set_nodelay(true)?;
        let transcript = client_handshake(&mut stream, &self.secret, self.protection, dest).await?;
        self.wrap(stream, &transcript, Some(address)).await
    }

    /// The server side: accepts `stream` for the mailbox it names, if
    /// `serves` it; returns that mailbox with the halves.
    pub(crate) async fn accept(
        &self,
        mut stream: TcpStream,
        serves: impl Fn(Uuid) -> bool,
    ) -> Result<(Uuid, PeerRead, PeerWrite), Error> {
        stream.set_nodelay(true)?;
        let (dest, transcript) = server_handshake(&mut stream, &self.secret, self.protection, serves).await?;
        let (read, write) = self.wrap(stream, &transcript, None).await?;
        Ok((dest, read, write))
    }

    /// Protects an authenticated connection; `dialed` is the address a
    /// client dialed (`None` on the server side).
    #[cfg_attr(not(all(feature = "encryption", feature = "tls")), allow(unused_variables))]
    #[cfg_attr(not(any(feature = "encryption", feature = "tls")), allow(clippy::unused_async))]
    async fn wrap(
        &self,
        stream: TcpStream,
        transcript: &[u8],
        dialed: Option<&str>,
    ) -> Result<(PeerRead, PeerWrite), Error> {
        match self.protection {
            Protection::Plain => {
                let (read, write) = stream.into_split();
                Ok((Box::new(read), Box::new(write)))
            }
            #[cfg(feature = "encryption")]
            Protection::Noise => super::noise::session(stream, &self.secret, transcript, dialed.is_some()).await,
            #[cfg(not(feature = "encryption"))]
            Protection::Noise => unreachable!("encryption is configured only with the `encryption` feature"),
            #[cfg(feature = "tls")]
            Protection::Tls => {
                let tls = self.tls.as_ref().expect("TLS protection is configured with its certificates");
                match dialed {
                    Some(address) => tls.connect(stream, address).await,
                    None => tls.accept(stream).await,
                }
            }
            #[cfg(not(feature = "tls"))]
            Protection::Tls => unreachable!("TLS is configured only with the `tls` feature"),
        }
    }
}
