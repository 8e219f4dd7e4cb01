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
        #[cfg(feature = "tls")]
        if let (Protection::Tls, Some(tls)) = (self.protection, &self.tls) {
            return tls.connect(stream, address).await;
        }
        let _ = address;
        self.wrap(stream, &transcript, true).await
    }

    /// The server side: accepts `stream` for mailbox `me`.
    pub(crate) async fn accept(&self, mut stream: TcpStream, me: Uuid) -> Result<(PeerRead, PeerWrite), Error> {
        stream.set_nodelay(true)?;
        let transcript = server_handshake(&mut stream, &self.secret, self.protection, me).await?;
        #[cfg(feature = "tls")]
        if let (Protection::Tls, Some(tls)) = (self.protection, &self.tls) {
            return tls.accept(stream).await;
        }
        self.wrap(stream, &transcript, false).await
    }

    #[cfg_attr(not(feature = "encryption"), allow(clippy::unused_async, unused_variables))]
    async fn wrap(
        &self,
        stream: TcpStream,
        transcript: &[u8],
        initiator: bool,
    ) -> Result<(PeerRead, PeerWrite), Error> {
        match self.protection {
            Protection::Plain => {
                let (read, write) = stream.into_split();
                Ok((Box::new(read), Box::new(write)))
            }
            #[cfg(feature = "encryption")]
            Protection::Noise => super::noise::session(stream, &self.secret, transcript, initiator).await,
            #[cfg(not(feature = "encryption"))]
            Protection::Noise => unreachable!("encryption is configured only with the `encryption` feature"),
            Protection::Tls => unreachable!("TLS is configured only with the `tls` feature, and handled above"),
        }
    }
}
