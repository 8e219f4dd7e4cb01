//! The peer protocol: what travels on a TCP connection between two
//! processes, in one place so both ends agree.
//!
//! A process holds at most one connection to each peer process (a
//! [session](session)), however many of its mailboxes it sends to: each
//! sender-to-mailbox stream is a *lane* of it, opened by a frame that names
//! the mailbox, acknowledged and closed on its own. Every connection comes in
//! on the process's one [listener](listener) and is served by its
//! [inbound](inbound) side, which hands each lane to the mailbox it names.
//!
//! A connection opens with the [handshake](handshake) (no framing), then,
//! with the `encryption` feature on, a Noise session that encrypts every
//! byte after it (or TLS); it carries [`Frame`]s: a 4-byte big-endian payload
//! length, a kind byte, a 4-byte big-endian lane, the payload. Kinds are
//! explicit, so a keepalive or an acknowledgement can never be mistaken for a
//! message:
//!
//! | kind | direction | payload |
//! |---|---|---|
//! | `Message` (0) | sender -> mailbox | one encoded envelope |
//! | `Ack` (1) | mailbox -> sender | `u64`: messages of this lane taken so far |
//! | `Keepalive` (2) | both | none (lane 0) |
//! | `Closing` (3) | mailbox -> sender | none: the mailbox lets go of the lane; what it has not acknowledged it did not take |
//! | `Open` (4) | sender -> mailbox | the mailbox's UUID (16 bytes) |
//! | `Refused` (5) | mailbox -> sender | none: this process does not serve that mailbox; it took nothing |
//! | `End` (6) | sender -> mailbox | none: the lane is done with |
//!
//! Each side sends a keepalive when it has written nothing for a third of
//! the peer timeout, and measures silence from the last bytes it received
//! (a long frame on a slow network is progress): a peer silent for the peer
//! timeout is dead (frozen, crashed, or cut off), and every lane of its
//! session fails.

mod address;
mod frame;
pub(crate) mod handshake;
pub(crate) mod inbound;
pub(crate) mod listener;
#[cfg(feature = "encryption")]
mod noise;
mod progress;
pub(crate) mod session;
#[cfg(feature = "tls")]
mod tls;
mod transport;

pub(crate) use address::{AddressSettings, Addresses, Bind};
pub use frame::DEFAULT_MAX_FRAME_LEN;
pub(crate) use frame::{Frame, FrameCodec, Outbox};
pub(crate) use handshake::{Protection, Secret};
pub(crate) use inbound::{AckState, InboundLane, InboundLimits, Lanes, Routes};
pub(crate) use listener::{serve, Limits};
pub(crate) use progress::{next_frame, Heard, NoteProgress};
pub(crate) use session::{LaneEvent, Sessions};
#[cfg(feature = "tls")]
pub(crate) use tls::{PeerTls, TlsFiles};
pub(crate) use transport::{PeerRead, PeerWrite, Security};
