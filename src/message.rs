//! The wire format: one [`Envelope`] (routing header and a [`Body`]) encoded
//! as MessagePack. The same bytes travel in a TCP frame or sit in a Redis list.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;
use crate::identifier::EntityId;

/// The protocol version written in every envelope and in the peer handshake.
pub const PROTOCOL_VERSION: u8 = 2;

/// A message with its routing header.
///
/// ```
/// use actix_academy::{Body, ClientId, Envelope};
/// let (a, b) = (ClientId::new(None), ClientId::new(None));
/// let ping = Envelope::new(a.into(), b.into(), Body::PingRequest);
/// let bytes = ping.encode().unwrap();
/// assert_eq!(Envelope::decode(&bytes).unwrap(), ping);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version of the sender.
    pub version: u8,
    /// Pairs a request with its response.
    pub tag: Uuid,
    /// Sender's mailbox.
    pub src: EntityId,
    /// Receiver's mailbox.
    pub dest: EntityId,
    /// Which of several handles sharing a mailbox should get the response.
    pub label: Option<Uuid>,
    /// What the message says.
    pub body: Body,
}

/// The content of a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Body {
    /// Invoke `action` with MessagePack-encoded `args`.
    ActionRequest {
        /// Action name, as the behavior declares it.
        action: String,
        /// The action message, MessagePack-encoded.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
    },
    /// The outcome of an action: the encoded result, or why there is none.
    ActionResponse {
        /// Action name, echoed from the request.
        action: String,
        /// The encoded result, or a runtime error.
        result: Result<serde_bytes::ByteBuf, RemoteError>,
    },
    /// Are you there?
    PingRequest,
    /// Yes.
    PingResponse,
    /// Please stop.
    ShutdownRequest,
    /// Stopping (or why not).
    ShutdownResponse {
        /// Empty on success.
        result: Result<(), RemoteError>,
    },
}

/// An error raised on the far side of a request, carried back to the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct RemoteError {
    /// What kind of failure.
    pub kind: RemoteErrorKind,
    /// Human-readable detail.
    pub message: String,
}

/// The kinds of [`RemoteError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// The behavior does not declare this action.
    UnknownAction,
    /// The arguments did not decode as the action's message.
    BadPayload,
    /// The agent stopped before answering.
    AgentStopped,
    /// Anything else.
    Internal,
}

impl Envelope {
    /// A new message with a fresh tag and no label.
    pub fn new(src: EntityId, dest: EntityId, body: Body) -> Self {
        Self { version: PROTOCOL_VERSION, tag: fresh_tag(), src, dest, label: None, body }
    }

    /// The response to this message: same tag and label, ends swapped.
    pub fn reply(&self, body: Body) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            tag: self.tag,
            src: self.dest.clone(),
            dest: self.src.clone(),
            label: self.label,
            body,
        }
    }

    /// MessagePack bytes of this envelope.
    pub fn encode(&self) -> Result<Bytes, Error> {
        Ok(rmp_serde::to_vec(self)?.into())
    }

    /// Parses bytes written by [`Envelope::encode`]. Garbage is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let envelope: Self = rmp_serde::from_slice(bytes)?;
        if envelope.version != PROTOCOL_VERSION {
            return Err(Error::UnsupportedVersion(envelope.version));
        }
        Ok(envelope)
    }
}

/// Opens an entry that a hybrid exchange stamped with its sender stream and
/// a sequence number (0xC1 is never the first byte of MessagePack, so no
/// plain envelope starts with it).
const SEQUENCED: u8 = 0xC1;
const SEQUENCED_HEADER_LEN: usize = 1 + 16 + 8;

/// Where a message came from, in order: the sending exchange's stream and
/// the message's number among those it sent to one mailbox. A mailbox that
/// took a number already drops the copy.
pub(crate) type Stamp = (Uuid, u64);

impl Envelope {
    /// The bytes of this envelope that travel in a peer frame or a Redis
    /// queue entry: `0xC1`, stream, sequence number, then the envelope.
    pub(crate) fn encode_stamped(&self, (stream, seq): Stamp) -> Result<Bytes, Error> {
        let mut out = Vec::with_capacity(SEQUENCED_HEADER_LEN + 64);
        out.push(SEQUENCED);
        out.extend_from_slice(stream.as_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        rmp_serde::encode::write(&mut out, self)?;
        Ok(out.into())
    }

    /// Parses a frame payload or queue entry: a stamped or a plain envelope.
    pub(crate) fn decode_entry(bytes: &[u8]) -> Result<(Self, Option<Stamp>), Error> {
        match bytes.split_first() {
            Some((&SEQUENCED, rest)) if rest.len() >= SEQUENCED_HEADER_LEN - 1 => {
                let stream = Uuid::from_slice(&rest[..16]).expect("16 bytes");
                let seq = u64::from_be_bytes(rest[16..24].try_into().expect("8 bytes"));
                Ok((Self::decode(&rest[24..])?, Some((stream, seq))))
            }
            _ => Ok((Self::decode(bytes)?, None)),
        }
    }
}

/// A random (v4) UUID from the thread's generator: no system call per
/// message, as `Uuid::new_v4` would make.
fn fresh_tag() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifier::{ClientId, Role};

    fn sample(body: Body) -> Envelope {
        Envelope::new(ClientId::new(Some("a")).into(), EntityId::new(Role::Agent, None), body)
    }

    #[test]
    fn every_body_round_trips() {
        let bodies = [
            Body::ActionRequest { action: "add".into(), args: vec![1, 2, 3] },
            Body::ActionResponse { action: "add".into(), result: Ok(serde_bytes::ByteBuf::from(vec![9])) },
            Body::ActionResponse {
                action: "add".into(),
                result: Err(RemoteError { kind: RemoteErrorKind::UnknownAction, message: "no".into() }),
            },
            Body::PingRequest,
            Body::PingResponse,
            Body::ShutdownRequest,
            Body::ShutdownResponse { result: Ok(()) },
        ];
        for body in bodies {
            let env = sample(body);
            assert_eq!(Envelope::decode(&env.encode().unwrap()).unwrap(), env);
        }
    }

    #[test]
    fn reply_swaps_ends_and_keeps_tag_and_label() {
        let mut req = sample(Body::PingRequest);
        req.label = Some(Uuid::new_v4());
        let resp = req.reply(Body::PingResponse);
        assert_eq!((resp.src, resp.dest), (req.dest.clone(), req.src.clone()));
        assert_eq!((resp.tag, resp.label), (req.tag, req.label));
    }

    #[test]
    fn stamped_entries_round_trip_and_plain_ones_have_no_stamp() {
        let env = sample(Body::PingRequest);
        let stamp = (Uuid::new_v4(), 42);
        assert_eq!(Envelope::decode_entry(&env.encode_stamped(stamp).unwrap()).unwrap(), (env.clone(), Some(stamp)));
        assert_eq!(Envelope::decode_entry(&env.encode().unwrap()).unwrap(), (env, None));
        for bad in [&[SEQUENCED][..], &[SEQUENCED; 30], &[SEQUENCED, 1, 2, 3]] {
            assert!(Envelope::decode_entry(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_and_other_versions_are_errors() {
        for bad in [&b""[..], b"\x00", b"<CLOSED>", &[0xff; 64], &[0x96, 0x01]] {
            assert!(Envelope::decode(bad).is_err(), "{bad:?}");
        }
        let mut env = sample(Body::PingRequest);
        env.version = 99;
        let bytes = rmp_serde::to_vec(&env).unwrap();
        assert!(matches!(Envelope::decode(&bytes), Err(Error::UnsupportedVersion(99))));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::identifier::{ClientId, Role};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100_000))]

        /// Arbitrary bytes decode to an envelope or an error; never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Envelope::decode(&bytes);
        }

        /// A valid envelope with bytes flipped, cut or extended: never a panic.
        #[test]
        fn mutated_envelopes_never_panic(flips in proptest::collection::vec((0usize..512, any::<u8>()), 1..6), cut in 0usize..600) {
            let body = Body::ActionRequest { action: "Increment".into(), args: vec![7; 40] };
            let env = Envelope::new(ClientId::new(Some("x")).into(), EntityId::new(Role::Agent, None), body);
            let mut bytes = env.encode().unwrap().to_vec();
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] ^= value;
            }
            bytes.truncate(cut);
            let _ = Envelope::decode(&bytes);
        }
    }
}
