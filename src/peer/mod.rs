//! The peer protocol: what travels on a TCP connection between a sending
//! link and a receiving mailbox, in one place so both ends agree.
//!
//! A connection opens with the [handshake](handshake) (no framing), then,
//! with the `encryption` feature on, a Noise session that encrypts every
//! byte after it; it carries [`Frame`]s: a 4-byte big-endian payload length, a kind byte, the
//! payload. Kinds are explicit, so a keepalive or an acknowledgement can
//! never be mistaken for a message:
//!
//! | kind | direction | payload |
//! |---|---|---|
//! | `Message` (0) | sender -> mailbox | one encoded envelope |
//! | `Ack` (1) | mailbox -> sender | `u64`: messages of this connection taken so far |
//! | `Keepalive` (2) | both | none |
//!
//! Each side sends a keepalive when it has written nothing for a third of
//! the peer timeout, and measures silence from the last bytes it received
//! (a long frame on a slow network is progress): a peer silent for the peer
//! timeout is dead (frozen, crashed, or cut off).

mod ack;
mod address;
mod frame;
pub(crate) mod handshake;
mod listener;
#[cfg(feature = "encryption")]
mod noise;
mod progress;
#[cfg(feature = "tls")]
mod tls;
mod transport;

pub(crate) use ack::AckState;
pub(crate) use address::{AddressSettings, Addresses, Bind};
pub use frame::DEFAULT_MAX_FRAME_LEN;
pub(crate) use frame::{Frame, FrameCodec, Outbox};
pub(crate) use handshake::{Protection, Secret};
pub(crate) use listener::{serve, Connection, Connections, Limits, Routes};
pub(crate) use progress::{Heard, NoteProgress};
#[cfg(feature = "tls")]
pub(crate) use tls::{PeerTls, TlsFiles};
pub(crate) use transport::{PeerRead, PeerWrite, Security};
