//! The peer protocol: what travels on a TCP connection between two
//! processes, in one place so both ends agree.
//!
//! Two processes hold one connection between them (a [session](session)),
//! however many of each other's mailboxes they send to: each
//! sender-to-mailbox stream is a *lane* of it, opened by a frame that names
//! the mailbox, acknowledged and closed on its own. The dialing side names
//! the address it publishes, so lanes flow both ways on the one connection.
//! Every connection comes in on the process's one [listener](listener); the
//! [inbound](inbound) role of a session hands each lane the peer opens to the
//! mailbox it names.
//!
//! A connection opens with the [handshake](handshake) (no framing), then,
//! with the `encryption` feature on, a Noise session that encrypts every
//! byte after it (or TLS); it carries [`Frame`]s: a 4-byte big-endian payload
//! length, a kind byte, a 4-byte big-endian lane, the payload. Kinds are
//! explicit, so a keepalive or an acknowledgement can never be mistaken for a
//! message. "Sender" is whoever opened the lane; either process may be one:
//!
//! | kind | from | payload |
//! |---|---|---|
//! | `Message` (0) | sender | one encoded envelope |
//! | `Ack` (1) | mailbox's process | `u64`: messages of this lane taken so far |
//! | `Keepalive` (2) | either | none (lane 0) |
//! | `Closing` (3) | mailbox's process | none: the mailbox lets go of the lane; what it has not acknowledged it did not take |
//! | `Open` (4) | sender | the mailbox's UUID (16 bytes) |
//! | `Refused` (5) | mailbox's process | none: this process does not serve that mailbox; it took nothing |
//! | `End` (6) | sender | none: the lane is done with |
//! | `Hello` (7) | dialing process, first | the address it publishes (UTF-8, at most 255 bytes) |
//! | `Bye` (8) | dialing process, last | none: no lane is open either way; the other side's lanes opened meanwhile were not taken |
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
pub(crate) use inbound::{AckState, InboundLane, Lanes, Routes};
pub(crate) use listener::{serve, Limits};
pub(crate) use progress::{next_frame, Heard, NoteProgress};
pub(crate) use session::{LaneEvent, Sessions};
#[cfg(feature = "tls")]
pub(crate) use tls::{PeerTls, TlsFiles};
pub(crate) use transport::{PeerRead, PeerWrite, Security};
