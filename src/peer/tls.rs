//! TLS on peer links (the `tls` feature), for deployments with a PKI: each
//! process presents a certificate chain, and accepts peers whose chain ends
//! at the given CA (mutual TLS). It runs after the academy handshake, which
//! still proves the shared secret and names the destination; a client checks
//! the mailbox's certificate against the host it dialed. The server then
//! sends one byte, so the client learns whether its own certificate was
//! accepted before it sends anything.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::transport::{PeerRead, PeerWrite};
use crate::error::{Error, Rejection};

/// The TLS settings of one exchange, built once.
#[derive(Clone)]
pub(crate) struct PeerTls {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls(<certificates>)")
    }
}

/// PEM certificates and key, as given to the builder.
#[derive(Clone)]
pub(crate) struct TlsFiles {
    pub(crate) chain: Vec<u8>,
    pub(crate) key: Vec<u8>,
    pub(crate) ca: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsFiles(<redacted>)")
    }
}

fn config(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("peer TLS: {what}: {e}"))
}

impl PeerTls {
    pub(crate) fn new(files: &TlsFiles) -> Result<Self, Error> {
        let chain = CertificateDer::pem_slice_iter(&files.chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| config("the certificate chain", e))?;
        if chain.is_empty() {
            return Err(config("the certificate chain", "no certificate in the PEM"));
        }
        let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| config("the private key", e))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&files.ca) {
            roots.add(ca.map_err(|e| config("the CA", e))?).map_err(|e| config("the CA", e))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| config("the CA", e))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| config("protocol versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| config("the certificate", e))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config("protocol versions", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| config("the certificate", e))?;
        Ok(Self { client: Arc::new(client), server: Arc::new(server) })
    }

    /// The client side, to the mailbox dialed at `address` (`host:port`).
    pub(crate) async fn connect(&self, stream: TcpStream, address: &str) -> Result<(PeerRead, PeerWrite), Error> {
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).map_err(|e| config("the peer's host name", e))?;
        let mut tls = TlsConnector::from(self.client.clone()).connect(name, stream).await.map_err(refused)?;
        // In TLS 1.3 the client finishes before the server has checked its
        // certificate: wait for the server's word, so that a refusal of
        // this process's certificate is seen here, as a refusal.
        let mut accepted = [0u8; 1];
        tls.read_exact(&mut accepted).await.map_err(refused)?;
        if accepted != [ACCEPTED] {
            return Err(Error::Handshake("unexpected byte after the TLS handshake"));
        }
        let (read, write) = tokio::io::split(tls);
        Ok((Box::new(read), Box::new(write)))
    }

    /// The server side.
    pub(crate) async fn accept(&self, stream: TcpStream) -> Result<(PeerRead, PeerWrite), Error> {
        let mut tls = TlsAcceptor::from(self.server.clone()).accept(stream).await.map_err(refused)?;
        tls.write_all(&[ACCEPTED]).await?;
        tls.flush().await?;
        let (read, write) = tokio::io::split(tls);
        Ok((Box::new(read), Box::new(write)))
    }
}

/// A TLS handshake that fails on a certificate is a misconfiguration (or
/// an impostor); anything else is a broken connection.
fn refused(e: std::io::Error) -> Error {
    use rustls::AlertDescription::*;
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
            Rejection::Certificate.into()
        }
        Some(rustls::Error::AlertReceived(
            BadCertificate
            | UnsupportedCertificate
            | CertificateRevoked
            | CertificateExpired
            | CertificateUnknown
            | UnknownCA
            | AccessDenied
            | CertificateRequired,
        )) => Rejection::Certificate.into(),
        _ => Error::Io(e),
    }
}

/// What the server sends once it has accepted the client's certificate.
const ACCEPTED: u8 = 1;
