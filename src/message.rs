//! The wire format of one message: an [`Envelope`] (routing header and a
//! [`Body`]). The same bytes travel in a TCP frame or sit in a Redis list:
//!
//! ```text
//! [0xC2, opening (16)]?              re-sent after a failed connection to that opening
//! [0xC1, stream (16), seq (8 BE)]?   the sender's stamp, if it has one
//! head length (4 BE)
//! MessagePack head                   version, tag, src, dest, label, deadline, body kind
//! payload                            the rest: action arguments or result
//! ```
//!
//! The payload (already MessagePack, written by whoever built the action) is
//! never re-encoded: the sender writes it after the head as it is, and the
//! receiver hands it on as a slice of the bytes it read.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identifier::EntityId;

/// Bytes that are not a message of this protocol, or a value that does not
/// encode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Bytes that do not decode as MessagePack of the expected shape.
    #[error("undecodable message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// A value that could not be encoded as MessagePack.
    #[error("unencodable message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// A message written by an incompatible protocol version.
    #[error("protocol version {0} is not supported (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// Well-formed parts that do not fit together.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// Bytes that are not an Academy 1.0 JSON message, or a value that
    /// cannot be written as one.
    #[error("not an Academy 1.0 message: {0}")]
    Json(String),
}

type Error = WireError;

/// The protocol version written in every envelope and in the peer handshake.
pub const PROTOCOL_VERSION: u8 = 7;

/// A message with its routing header.
///
/// ```
/// use actix_academy::wire::{Body, Envelope};
/// use actix_academy::ClientId;
/// let (a, b) = (ClientId::new(None), ClientId::new(None));
/// let ping = Envelope::new(a.into(), b.into(), Body::PingRequest);
/// let bytes = ping.encode().unwrap();
/// assert_eq!(Envelope::decode(&bytes).unwrap(), ping);
/// ```
#[derive(Clone, Debug, PartialEq)]
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
    /// For a request: the time after which it must not be started (its
    /// caller has given up), in milliseconds since the Unix epoch.
    pub deadline: Option<u64>,
    /// The trace a request belongs to (its response carries it back), so
    /// the spans of both processes can be joined.
    pub trace: Option<TraceContext>,
    /// What the message says.
    pub body: Body,
}

/// A request's trace: W3C trace-context ids (a 16-byte trace id, the
/// caller's 8-byte span id), so a log collector or an OpenTelemetry bridge
/// can join the caller's span (`academy.call`) and the agent's
/// (`academy.dispatch`), which both record `trace_id`.
///
/// ```
/// use actix_academy::wire::TraceContext;
/// let trace = TraceContext { trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736, span_id: 0x00f067aa0ba902b7 };
/// assert_eq!(trace.traceparent(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// The trace, shared by every span of the request.
    pub trace_id: u128,
    /// The caller's span.
    pub span_id: u64,
}

impl TraceContext {
    /// A new trace with random ids.
    pub fn new() -> Self {
        // The thread's generator: no system call per request.
        Self { trace_id: rand::random::<u128>() | 1, span_id: rand::random::<u64>() | 1 }
    }

    /// The trace id as 32 hex digits, as OpenTelemetry writes it.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The W3C `traceparent` header for this context (sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }
}

impl Default for TraceContext {
    fn default() -> Self {
        Self::new()
    }
}

/// The content of a message.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Body {
    /// Invoke `action` with MessagePack-encoded `args`.
    ActionRequest {
        /// Action name, as the behavior declares it.
        action: String,
        /// The action message, MessagePack-encoded.
        args: Bytes,
    },
    /// The outcome of an action: the encoded result, or why there is none.
    ActionResponse {
        /// Action name, echoed from the request.
        action: String,
        /// The encoded result, or a runtime error.
        result: Result<Bytes, RemoteError>,
    },
    /// Are you there?
    PingRequest,
    /// Yes.
    PingResponse,
    /// Stop running the action started by request `target` (from the same
    /// sender), or do not start it: its caller has given up.
    CancelRequest {
        /// The tag of the request to cancel.
        target: Uuid,
    },
    /// Please stop.
    ShutdownRequest {
        /// Also terminate the mailbox (else it stays, with its queue, for a
        /// restart of the agent under the same id).
        terminate: bool,
    },
    /// Stopping (or why not).
    ShutdownResponse {
        /// Empty on success.
        result: Result<(), RemoteError>,
    },
}

/// The envelope without its payload, as MessagePack writes it.
#[derive(Serialize, Deserialize)]
struct Head<'a> {
    version: u8,
    tag: Uuid,
    src: std::borrow::Cow<'a, EntityId>,
    dest: std::borrow::Cow<'a, EntityId>,
    label: Option<Uuid>,
    deadline: Option<u64>,
    kind: Kind<'a>,
    /// Trace id (high, low 64 bits) and span id. Defaulted, so that a head
    /// without it (an older version) decodes and is refused by its version.
    #[serde(default)]
    trace: Option<(u64, u64, u64)>,
}

/// A body without its payload.
#[derive(Serialize, Deserialize)]
enum Kind<'a> {
    ActionRequest { action: std::borrow::Cow<'a, str> },
    ActionResponse { action: std::borrow::Cow<'a, str>, error: Option<std::borrow::Cow<'a, RemoteError>> },
    PingRequest,
    PingResponse,
    CancelRequest { target: Uuid },
    ShutdownRequest { terminate: bool },
    ShutdownResponse { result: std::borrow::Cow<'a, Result<(), RemoteError>> },
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
    /// The request was cancelled by its caller.
    Cancelled,
    /// The request reached the agent after its deadline: it was not started.
    DeadlinePassed,
    /// Anything else.
    Internal,
    /// The action failed with its own error (in Python: raised an
    /// exception); the message is its text.
    Raised,
    /// The mailbox was terminated before the request was answered.
    Terminated,
    /// A cancel for an action that is not running (Academy 1.0's
    /// ACTION_INVALID_STATE).
    InvalidState,
    /// A request sent to a client, which serves none.
    InvalidClient,
    /// The two ends speak incompatible protocol versions.
    Incompatible,
    /// A copy of a request the agent ran and answered already, whose
    /// answer it no longer keeps: not run again.
    AlreadyAnswered,
    /// The action panicked; the message is the panic's. The agent's
    /// behavior may have stopped with it.
    Panicked,
}

impl Body {
    /// A request (action, ping, cancel, shutdown), which its receiver answers.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Body::ActionRequest { .. } | Body::PingRequest | Body::CancelRequest { .. } | Body::ShutdownRequest { .. }
        )
    }
}

impl Envelope {
    /// A new message with a fresh tag and no label.
    pub fn new(src: EntityId, dest: EntityId, body: Body) -> Self {
        Self { version: PROTOCOL_VERSION, tag: fresh_tag(), src, dest, label: None, deadline: None, trace: None, body }
    }

    /// When the message (or, for a response, its request) was made, read
    /// from its tag; `None` for a tag that is not time-ordered.
    pub fn made_at(&self) -> Option<std::time::SystemTime> {
        let (seconds, nanos) = self.tag.get_timestamp()?.to_unix();
        Some(std::time::UNIX_EPOCH + std::time::Duration::new(seconds, nanos))
    }

    /// The response to this message: same tag and label, ends swapped.
    pub fn reply(&self, body: Body) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            tag: self.tag,
            src: self.dest.clone(),
            dest: self.src.clone(),
            label: self.label,
            deadline: None,
            trace: self.trace,
            body,
        }
    }

    /// The bytes of this envelope, unstamped.
    pub fn encode(&self) -> Result<Bytes, Error> {
        Ok(self.encode_parts(None)?.concat())
    }

    /// Parses bytes written by [`Envelope::encode`]. Garbage is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        Self::decode_bytes(Bytes::copy_from_slice(bytes))
    }

    /// Head (with `stamp` first, if any) and payload, to be written one after the other.
    pub(crate) fn encode_parts(&self, stamp: Option<Stamp>) -> Result<Parts, Error> {
        use std::borrow::Cow;
        let (kind, payload) = match &self.body {
            Body::ActionRequest { action, args } => {
                (Kind::ActionRequest { action: Cow::Borrowed(action) }, args.clone())
            }
            Body::ActionResponse { action, result } => {
                let (error, payload) = match result {
                    Ok(bytes) => (None, bytes.clone()),
                    Err(e) => (Some(Cow::Borrowed(e)), Bytes::new()),
                };
                (Kind::ActionResponse { action: Cow::Borrowed(action), error }, payload)
            }
            Body::PingRequest => (Kind::PingRequest, Bytes::new()),
            Body::PingResponse => (Kind::PingResponse, Bytes::new()),
            Body::CancelRequest { target } => (Kind::CancelRequest { target: *target }, Bytes::new()),
            Body::ShutdownRequest { terminate } => (Kind::ShutdownRequest { terminate: *terminate }, Bytes::new()),
            Body::ShutdownResponse { result } => {
                (Kind::ShutdownResponse { result: Cow::Borrowed(result) }, Bytes::new())
            }
        };
        let head = Head {
            version: self.version,
            tag: self.tag,
            src: Cow::Borrowed(&self.src),
            dest: Cow::Borrowed(&self.dest),
            label: self.label,
            deadline: self.deadline,
            kind,
            trace: self.trace.map(|t| ((t.trace_id >> 64) as u64, t.trace_id as u64, t.span_id)),
        };
        let mut out = Vec::with_capacity(STAMP_LEN + 128);
        if let Some((stream, seq)) = stamp {
            out.push(STAMPED);
            out.extend_from_slice(stream.as_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
        }
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        rmp_serde::encode::write(&mut out, &head)?;
        let head_len = u32::try_from(out.len() - at - 4).map_err(|_| Error::Malformed("head over 4 GiB"))?;
        out[at..at + 4].copy_from_slice(&head_len.to_be_bytes());
        Ok(Parts { head: out.into(), payload })
    }

    /// Parses a frame payload or queue entry (marked re-sent or not, stamped
    /// or not); the body's payload is a slice of `bytes`, not a copy.
    pub(crate) fn decode_entry(bytes: Bytes) -> Result<Entry, Error> {
        let (resent_to, bytes) = match bytes.first() {
            Some(&RESENT) if bytes.len() >= 17 => {
                (Some(Uuid::from_slice(&bytes[1..17]).expect("16 bytes")), bytes.slice(17..))
            }
            Some(&RESENT) => return Err(Error::Malformed("truncated re-sent mark")),
            _ => (None, bytes),
        };
        let (envelope, stamp) = Self::decode_stamped(bytes)?;
        Ok(Entry { envelope, stamp, resent_to })
    }

    fn decode_stamped(bytes: Bytes) -> Result<(Self, Option<Stamp>), Error> {
        match bytes.first() {
            Some(&STAMPED) if bytes.len() >= STAMP_LEN => {
                let stream = Uuid::from_slice(&bytes[1..17]).expect("16 bytes");
                let seq = u64::from_be_bytes(bytes[17..STAMP_LEN].try_into().expect("8 bytes"));
                Ok((Self::decode_bytes(bytes.slice(STAMP_LEN..))?, Some((stream, seq))))
            }
            Some(&STAMPED) => Err(Error::Malformed("truncated stamp")),
            _ => Ok((Self::decode_bytes(bytes)?, None)),
        }
    }

    fn decode_bytes(bytes: Bytes) -> Result<Self, Error> {
        let (len, rest) = bytes.split_first_chunk::<4>().ok_or(Error::Malformed("no head length"))?;
        let head_len = u32::from_be_bytes(*len) as usize;
        let head_bytes = rest.get(..head_len).ok_or(Error::Malformed("head longer than the message"))?;
        let head: Head<'_> = rmp_serde::from_slice(head_bytes)?;
        if head.version != PROTOCOL_VERSION {
            return Err(Error::UnsupportedVersion(head.version));
        }
        let payload = bytes.slice(4 + head_len..);
        let unexpected = |kind| if payload.is_empty() { Ok(()) } else { Err(Error::Malformed(kind)) };
        let body = match head.kind {
            Kind::ActionRequest { action } => Body::ActionRequest { action: action.into_owned(), args: payload },
            Kind::ActionResponse { action, error } => {
                let result = match error {
                    None => Ok(payload),
                    Some(e) => {
                        unexpected("an error response with a payload")?;
                        Err(e.into_owned())
                    }
                };
                Body::ActionResponse { action: action.into_owned(), result }
            }
            kind => {
                unexpected("a payload after a body that has none")?;
                match kind {
                    Kind::PingRequest => Body::PingRequest,
                    Kind::PingResponse => Body::PingResponse,
                    Kind::CancelRequest { target } => Body::CancelRequest { target },
                    Kind::ShutdownRequest { terminate } => Body::ShutdownRequest { terminate },
                    Kind::ShutdownResponse { result } => Body::ShutdownResponse { result: result.into_owned() },
                    Kind::ActionRequest { .. } | Kind::ActionResponse { .. } => unreachable!("matched above"),
                }
            }
        };
        Ok(Self {
            version: head.version,
            tag: head.tag,
            src: head.src.into_owned(),
            dest: head.dest.into_owned(),
            label: head.label,
            deadline: head.deadline,
            trace: head.trace.map(|(high, low, span_id)| TraceContext {
                trace_id: (u128::from(high) << 64) | u128::from(low),
                span_id,
            }),
            body,
        })
    }
}

/// An encoded envelope in two pieces: the head, and the payload it carries
/// unchanged.
#[derive(Clone, Debug)]
pub(crate) struct Parts {
    pub(crate) head: Bytes,
    pub(crate) payload: Bytes,
}

/// A queue entry written as one Redis argument, without joining the pieces first.
impl redis::ToRedisArgs for Parts {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        let mut arg = out.writer_for_next_arg();
        arg.write_all(&self.head).expect("writing to memory");
        arg.write_all(&self.payload).expect("writing to memory");
    }
}

impl Parts {
    /// Total length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.payload.len()
    }

    /// Both pieces in one buffer (a copy of the payload, unless it is empty).
    pub(crate) fn concat(self) -> Bytes {
        if self.payload.is_empty() {
            return self.head;
        }
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.payload);
        out.into()
    }
}

/// A decoded frame payload or queue entry.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) envelope: Envelope,
    /// The sender's stamp, if any.
    pub(crate) stamp: Option<Stamp>,
    /// For an entry re-sent after a connection failed without the mailbox
    /// saying it was closing: the mailbox opening it was first sent to.
    pub(crate) resent_to: Option<Uuid>,
}

/// Marks an encoded entry as re-sent after its connection to mailbox
/// opening `opening` failed: that opening may have taken it.
pub(crate) fn mark_resent(parts: &mut Parts, opening: Uuid) {
    let mut head = Vec::with_capacity(17 + parts.head.len());
    head.push(RESENT);
    head.extend_from_slice(opening.as_bytes());
    head.extend_from_slice(&parts.head);
    parts.head = head.into();
}

/// Opens a re-sent entry (0xC2 is never the first byte of MessagePack).
const RESENT: u8 = 0xC2;

/// Opens a stamped entry (0xC1 is never the first byte of MessagePack, so
/// no unstamped envelope starts with it).
const STAMPED: u8 = 0xC1;
const STAMP_LEN: usize = 1 + 16 + 8;
/// The most bytes the marks (re-sent, stamped) add before an envelope.
pub(crate) const ENTRY_MARKS_LEN: usize = 17 + STAMP_LEN;

/// Where a message came from, in order: a stream of the sending exchange
/// (one per destination) and the message's number in it. A mailbox that
/// took a number already drops the copy.
pub(crate) type Stamp = (Uuid, u64);

/// `value` as MessagePack, in a buffer allocated once at its exact size (a
/// first pass counts the bytes without copying any), so a large payload is
/// not copied again and again as a growing buffer doubles.
pub(crate) fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, rmp_serde::encode::Error> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    rmp_serde::encode::write(&mut count, value)?;
    let mut out = Vec::with_capacity(count.0);
    rmp_serde::encode::write(&mut out, value)?;
    Ok(out.into())
}

/// Milliseconds since the Unix epoch, `at` from now (the unit of deadlines).
pub(crate) fn deadline_in(at: std::time::Duration) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (now + at).as_millis() as u64
}

/// Whether a deadline (milliseconds since the Unix epoch) has passed.
pub(crate) fn deadline_passed(deadline: u64) -> bool {
    deadline_in(std::time::Duration::ZERO) >= deadline
}

/// A time-ordered (version 7) UUID: unique, and it says when the message
/// was made (see [`Envelope::made_at`]).
/// Its random bits come from the thread's generator: no system call per
/// message, as `Uuid::now_v7` would make.
fn fresh_tag() -> Uuid {
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    uuid::Builder::from_unix_timestamp_millis(millis as u64, &rand::random()).into_uuid()
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
            Body::ActionRequest { action: "add".into(), args: vec![1, 2, 3].into() },
            Body::ActionRequest { action: "none".into(), args: Bytes::new() },
            Body::ActionResponse { action: "add".into(), result: Ok(vec![9].into()) },
            Body::ActionResponse {
                action: "add".into(),
                result: Err(RemoteError { kind: RemoteErrorKind::UnknownAction, message: "no".into() }),
            },
            Body::PingRequest,
            Body::PingResponse,
            Body::CancelRequest { target: Uuid::new_v4() },
            Body::ShutdownRequest { terminate: false },
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
        let env = sample(Body::ActionRequest { action: "add".into(), args: vec![5; 3000].into() });
        let stamp = (Uuid::new_v4(), 42);
        let stamped = env.encode_parts(Some(stamp)).unwrap().concat();
        let entry = Envelope::decode_entry(stamped).unwrap();
        assert_eq!((entry.envelope, entry.stamp, entry.resent_to), (env.clone(), Some(stamp), None));
        let mut parts = env.encode_parts(Some(stamp)).unwrap();
        let opening = Uuid::new_v4();
        mark_resent(&mut parts, opening);
        let entry = Envelope::decode_entry(parts.concat()).unwrap();
        assert_eq!((entry.envelope, entry.stamp, entry.resent_to), (env.clone(), Some(stamp), Some(opening)));
        let entry = Envelope::decode_entry(env.encode().unwrap()).unwrap();
        assert_eq!((entry.envelope, entry.stamp), (env, None));
        for bad in [&[STAMPED][..], &[STAMPED; 30], &[STAMPED, 1, 2, 3]] {
            assert!(Envelope::decode_entry(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_and_other_versions_are_errors() {
        for bad in [&b""[..], b"\x00", b"<CLOSED>", &[0xff; 64], &[0x96, 0x01]] {
            assert!(Envelope::decode(bad).is_err(), "{bad:?}");
        }
        let mut env = sample(Body::PingRequest);
        env.version = 99;
        let bytes = env.encode().unwrap();
        assert!(matches!(Envelope::decode(&bytes), Err(Error::UnsupportedVersion(99))));
        // Version 5's head had no trace: it decodes, and its version is named.
        let old = sample(Body::PingRequest);
        let head = (5u8, old.tag, &old.src, &old.dest, None::<Uuid>, None::<u64>, Kind::PingRequest);
        let head = rmp_serde::to_vec(&head).unwrap();
        let mut bytes = (head.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&head);
        assert!(
            matches!(Envelope::decode(&bytes), Err(Error::UnsupportedVersion(5))),
            "{:?}",
            Envelope::decode(&bytes)
        );
        // A payload after a body that has none.
        let mut bytes = sample(Body::PingRequest).encode().unwrap().to_vec();
        bytes.push(0);
        assert!(Envelope::decode(&bytes).is_err());
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
            let body = Body::ActionRequest { action: "Increment".into(), args: vec![7; 40].into() };
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
